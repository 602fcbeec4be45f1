/* flight — the memory flight recorder: every interval a snapshot (time, RSS, budget in
 * use, queue, every in-flight job with its estimate and elapsed time, the cgroup's OOM-kill
 * counter) goes into a fixed-size ring in a preallocated file written in place, so it
 * costs no growing memory or disk and survives a SIGKILL (the page cache belongs to the
 * kernel). A clean stop marks the ring clean. At the next start the previous ring is kept
 * beside the new one as <path>.<run> (the last flight.keep_runs runs, at most
 * flight.max_disk bytes in all), and a run that ended without a clean stop is reported.
 * `thumbgate flight` lists runs and prints any of them.
 *
 * The recorder knows nothing of the server: it reads the figures of a snapshot through a
 * callback (flight_opts_t.sample). */
#ifndef THUMBGATE_FLIGHT_H
#define THUMBGATE_FLIGHT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "config/cfg.h"

typedef struct flight flight_t;

#define FLIGHT_MAX_JOBS 24
#define FLIGHT_WHAT_LEN 120

/** The figures of one snapshot, filled by the owner's callback. */
typedef struct {
    uint64_t rss_anon, rss_file, vm_hwm;   /**< bytes, from /proc/self/status */
    uint64_t budget, in_use, queued_bytes; /**< admission gate */
    uint32_t queue_len, running;
    uint64_t conns, body_reserved, input_spill; /**< connguard: the connection terms now */
    uint64_t plan_total;                        /**< the memory plan's total */
} flight_sample_t;

/** What flight_open needs; flight_opts_init fills it from a config. */
typedef struct {
    char path[1100];      /**< the current run's ring; older runs live beside it as path.<run> */
    uint32_t slots;       /**< snapshots in a ring */
    uint64_t interval_ms; /**< between two snapshots */
    uint32_t keep_runs;   /**< rings of previous runs kept */
    uint64_t max_disk;    /**< bytes all rings may take together */
    /** Directory holding the cgroup's memory.events (v2) or memory.oom_control (v1);
     *  "" = the memory cgroup of this process, found through /proc/self/cgroup. */
    char cgroup_dir[512];
    /** Fills @p out for a snapshot (called from flight_tick's thread); NULL = zeros. */
    void (*sample)(void *ctx, flight_sample_t *out);
    void *ctx;
} flight_opts_t;

/** A job that was in flight in a run's last snapshot. */
typedef struct {
    char what[FLIGHT_WHAT_LEN];
    uint64_t estimate, elapsed_ms;
} flight_job_t;

/** How the previous run ended, read at start from its ring. */
typedef struct {
    uint64_t run, pid;
    bool clean; /**< it was stopped cleanly (flight_close) */
    uint64_t started_unix_ms;
    uint64_t last_snapshot_unix_ms; /**< 0: no snapshot was written */
    uint32_t njobs;                 /**< in flight at the last snapshot */
    flight_job_t jobs[FLIGHT_MAX_JOBS];
    bool oom_known; /**< both counters were read, from the same cgroup file */
    uint64_t oom_kills_then, oom_kills_now;
    bool oom_killed; /**< the cgroup's OOM-kill counter rose since its last record */
} flight_prev_t;

/** Fills @p o from @p cfg (path, slots, interval, keep_runs, max_disk); no callback. */
void flight_opts_init(flight_opts_t *o, const cfg_t *cfg);

/**
 * Starts a run: keeps the previous ring as path.<run> (deleting the oldest beyond keep_runs
 * and max_disk), then creates and preallocates a new ring. NULL with a message in @p err
 * on failure, including when another live process records into the same ring.
 */
flight_t *flight_open(const flight_opts_t *opts, char *err, size_t errlen);
/** Marks the ring clean (a clean stop) and frees it. Accepts NULL. */
void flight_close(flight_t *f);
/** Marks the ring clean without freeing (for an exit that skips flight_close). */
void flight_mark_clean(flight_t *f);
/** Called often from one thread; writes a snapshot when the interval has passed since the
 *  last one. Between snapshots it only compares two numbers. */
void flight_tick(flight_t *f, uint64_t now_ms);
/** Registers / unregisters an in-flight job (any thread; @p id is an opaque pointer). */
void flight_job_begin(flight_t *f, const void *id, const char *what, uint64_t estimate);
void flight_job_end(flight_t *f, const void *id);

/** The previous run, or NULL when there was none (first start, or @p f NULL). */
const flight_prev_t *flight_previous(const flight_t *f);
/** Writes the one JSON line {"log":"previous_run",...} when the previous run ended without
 *  a clean stop; nothing otherwise. */
void flight_log_previous(const flight_t *f, FILE *out);
/** Writes the previous run's Prometheus gauges (none when there was no previous run). */
void flight_render_metrics(const flight_t *f, FILE *out);

/**
 * Prints one ring, newest snapshot first, at most @p max snapshots (0 = all), as text or
 * (json) a JSON array. @p run < 0: the file @p path itself; otherwise the run of that
 * number among path and its kept rings (path.<run>). 0, or -1 with a message in @p err
 * when there is no such run or the file is not a ring. Holds 16 bytes per slot.
 */
int flight_dump(const char *path, long run, FILE *out, bool json, unsigned max, char *err,
                size_t errlen);
/** Lists the runs kept at @p path, newest first: run, pid, start, last snapshot, snapshots,
 *  jobs in flight at the last one, and how it ended (running, clean, killed; oom_kill when
 *  the cgroup's counter rose before the next start). 0, or -1 with @p err when none. */
int flight_list(const char *path, FILE *out, bool json, char *err, size_t errlen);

#endif
