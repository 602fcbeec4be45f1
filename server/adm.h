/* adm — the admission gate: one global memory budget B for image work, a bounded FIFO
 * wait queue and the worker threads that run admitted jobs.
 *
 * Policy (strict FIFO, so no starvation): a job whose estimate E > B is refused at
 * once. Otherwise it starts when a worker is free, no job is waiting ahead of it and
 * in_use + E <= B; else it waits. A large job at the head blocks the smaller ones
 * behind it until enough budget drains for it: small jobs never overtake, so a large
 * job waits at most for the jobs already running. The queue is bounded by length and
 * by the sum of waiting estimates; each wait has a deadline. in_use only counts jobs
 * that are running, and is exact: every admitted job releases its E when run returns.
 * A job that can start at submit (fits, a worker free, nobody waiting) is admitted there
 * and then: it takes its budget and a worker at once and never waits, so queue_max 0 and
 * queue_timeout 0 both mean "never wait" and refuse only jobs that would have to.
 *
 * Naive mode (load harness only): no budget, no queue, every job starts at once on a
 * thread of its own — what the incident's service did. */
#ifndef THUMBGATE_ADM_H
#define THUMBGATE_ADM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct adm_gate adm_gate_t;
typedef struct adm_job adm_job_t;

enum {
    ADM_OK = 0,
    ADM_E_TOO_BIG = 1,    /**< E > B: can never run (413) */
    ADM_E_QUEUE_FULL = 2, /**< too many waiting jobs or waiting bytes (503) */
    ADM_E_EXPIRED = 3,    /**< waited past the deadline (503) */
    ADM_E_SHUTDOWN = 4,   /**< gate stopping (503) */
};

/** A unit of work. The caller owns the memory; the gate borrows it from adm_submit
 *  until it calls run or on_expire, or until adm_cancel returns true. */
struct adm_job {
    uint64_t estimate;           /**< E, bytes */
    void (*run)(adm_job_t *job); /**< on a worker thread, budget held */
    void (*on_expire)(
        adm_job_t *job); /**< on a worker thread, with the gate unlocked: the wait expired */
    /* private */
    uint64_t _deadline_ms, _enqueued_ms;
    adm_job_t *_next, *_prev;
    int _state;
};

typedef struct {
    uint64_t budget;           /**< B */
    uint32_t workers;          /**< worker threads */
    uint32_t queue_max;        /**< waiting jobs at most (0: never wait) */
    uint64_t queue_max_bytes;  /**< sum of waiting estimates at most */
    uint64_t queue_timeout_ms; /**< longest wait (0: a job that cannot start at once expires) */
    bool naive;
} adm_config_t;

typedef struct {
    uint64_t budget, in_use, in_use_highwater;
    uint32_t queue_len, running, workers;
    uint64_t queued_bytes;
    uint64_t admitted, queued, rejected_too_big, rejected_queue_full, expired, cancelled, completed;
    double drain_per_sec; /**< recent completions per second */
} adm_stats_t;

/** Starts the workers. NULL on failure. Caller frees with adm_destroy. */
adm_gate_t *adm_create(const adm_config_t *cfg);
/** Stops the workers after running jobs finish; waiting jobs get on_expire. Accepts NULL. */
void adm_destroy(adm_gate_t *gate);

/**
 * Submits @p job (borrowed). 0 when it runs now or waits; -ADM_E_TOO_BIG,
 * -ADM_E_QUEUE_FULL or -ADM_E_SHUTDOWN when refused (the job is not kept).
 * @p queued (optional) tells whether it had to wait.
 */
int adm_submit(adm_gate_t *gate, adm_job_t *job, uint64_t now_ms, bool *queued);

/** Removes a waiting job (its client went away). true when removed: the gate no longer
 *  references it and it will never run. false when it has already started or finished. */
bool adm_cancel(adm_gate_t *gate, adm_job_t *job);

/** Current figures. */
void adm_stats(adm_gate_t *gate, adm_stats_t *out);

/** Seconds a refused client should wait, from the recent drain rate (1..60). */
uint32_t adm_retry_after(adm_gate_t *gate);

/** Monotonic milliseconds (the clock deadlines use). */
uint64_t adm_now_ms(void);

/** Text for an ADM_E_* code. */
const char *adm_strerror(int code);

#endif
