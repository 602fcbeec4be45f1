/* jobmeter — estimate against measured for every job, concurrent ones included.
 *
 * A small sampler thread runs while any job runs. Every period it reads the process's
 * anonymous resident memory (/proc/self/statm: resident - shared) and compares what lies
 * above the idle floor with the sum of the estimates of the jobs running at that moment:
 *
 *     ratio(t) = (anon(t) - floor) / sum of the running estimates(t)
 *
 * Each job keeps the highest ratio seen while it ran. When it ends, estimate/measured =
 * 1 / that ratio goes into thumbgate_estimate_ratio, and a ratio above 1 counts in
 * thumbgate_estimate_under_total and logs one JSON line with the job and its co-runners.
 *
 * It is a group bound: all of the growth is charged to the running set, so a job's ratio
 * can only be over-reported (a co-runner's excess, memory that is not a job's), never hide
 * an underestimate of the running set. It does not depend on the allocator: it reads what
 * the kernel says is resident, wherever and by whichever thread it was allocated.
 *
 * The floor is the process's anonymous memory with no job running. Heap a finished job freed
 * but the allocator kept would otherwise be charged to the jobs still running (a false
 * alarm) or, once in the floor, be reused by the next jobs unseen (a hidden underestimate);
 * so after jobs end the sampler has the allocator give its free pages back (opts.trim, off
 * the worker's path, at most once per trim_every_ms; one trim covers every job that ended
 * before it began) and, when no job runs then, re-reads the floor. Until that trim an ended
 * job's estimate stays in the sum its co-runners are compared with: its freed heap may
 * still be resident, and it is bounded by that estimate when the estimate was right. When a job
 * starts on an idle server the floor may only go down. Without trim the floor is re-read after
 * quiet_ms without any job, and can then hold reusable heap. */
#ifndef THUMBGATE_JOBMETER_H
#define THUMBGATE_JOBMETER_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "server/metrics.h"

typedef struct jobmeter jobmeter_t;

/** One job as the meter sees it: the caller's storage, alive from begin to end. */
typedef struct jobmeter_job {
    uint64_t estimate; /**< set by the caller before jobmeter_begin */
    const char *what;  /**< borrowed until jobmeter_end ("<stem> <variant>") */
    /* private: under the meter's mutex */
    struct jobmeter_job *_next, *_prev;
    double _max;                      /**< highest ratio seen while it ran */
    uint64_t _excess_at, _set_est_at; /**< anon above the floor and the set's estimates then */
    unsigned _set_n_at;               /**< jobs running then */
    char _co[256];                    /**< the co-runners then, when the ratio was over 1 */
} jobmeter_job_t;

typedef struct {
    uint32_t period_ms; /**< between two samples while jobs run */
    uint32_t quiet_ms;  /**< the floor is re-read after this long without any job */
    metrics_t *metrics; /**< est_ratio, est_under, est_trim_us are updated here (borrowed) */
    /** Gives freed heap back to the kernel (imgproc_trim), called by the sampler after jobs
     *  end; with none running then, the floor is re-read. NULL: after quiet_ms instead. */
    void (*trim)(void);
    /** At most one trim per this many ms (0: after every job end). A trim purges every
     *  arena, and the next jobs fault their pages in again: after every end it cost the
     *  first-touch bench 13% of server CPU per request (README, "Estimate against
     *  measured, for every job"). */
    uint32_t trim_every_ms;
    FILE *log; /**< one JSON line per underestimate; NULL = none */
} jobmeter_opts_t;

/** Starts the sampler thread (idle until a job begins). Reads the test-only environment
 *  knob TG_TEST_ESTIMATE_SCALE once (see jobmeter_scaled). NULL on failure. */
jobmeter_t *jobmeter_create(const jobmeter_opts_t *opts);
/** Stops the sampler; no job may be running. Accepts NULL. */
void jobmeter_destroy(jobmeter_t *m);
/** @p estimate times TG_TEST_ESTIMATE_SCALE (test only: makes estimates really too
 *  low, admission included, to show the meter catches it); @p estimate when unset. */
uint64_t jobmeter_scaled(const jobmeter_t *m, uint64_t estimate);
/** A job starts (its estimate and what are set). Accepts m == NULL (no metering). */
void jobmeter_begin(jobmeter_t *m, jobmeter_job_t *job);
/** The job ended: one last sample, then it is observed in the metrics (and logged when it
 *  was over 1). Returns its ratio: measured over estimate, an upper bound. */
double jobmeter_end(jobmeter_t *m, jobmeter_job_t *job);

#endif
