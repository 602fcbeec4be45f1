/* metrics — process-wide counters, updated with relaxed atomics from any thread and
 * rendered in Prometheus text format by the admin listener. Fixed size: no label set
 * grows with traffic (routes and statuses are closed enums). */
#ifndef THUMBGATE_METRICS_H
#define THUMBGATE_METRICS_H

#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>

typedef enum {
    METRICS_ROUTE_PUT = 0,
    METRICS_ROUTE_DELETE,
    METRICS_ROUTE_ORIGINAL, /**< GET/HEAD of a stored key */
    METRICS_ROUTE_DERIVED,  /**< GET/HEAD of a derived URL */
    METRICS_ROUTE_OTHER,    /**< bad key, 405, h2o's own errors */
    METRICS_ROUTE_MAX
} metrics_route_t;

#define METRICS_NSTATUS 20
#define METRICS_HIST_BUCKETS 14

typedef struct {
    _Atomic uint64_t count, sum_us;
    _Atomic uint64_t buckets[METRICS_HIST_BUCKETS]; /**< cumulative at render time */
} metrics_hist_t;

typedef struct {
    _Atomic uint64_t requests[METRICS_ROUTE_MAX][METRICS_NSTATUS];
    _Atomic uint64_t bytes_in, bytes_out;
    _Atomic uint64_t cache_hits, cache_misses, coalesced;
    _Atomic uint64_t hot_hits; /**< cache hits answered from memory (http.h hot results) */
    _Atomic uint64_t jobs_failed, jobs_dropped_gone;
    _Atomic uint64_t jobs_timed_out; /**< cancelled at memory.job_timeout (also in jobs_failed) */
    _Atomic uint64_t rejected_pixels, rejected_format;
    _Atomic uint64_t mezz_made, mezz_used, mezz_refused; /**< mezzanine levels (mezz.h) */
    _Atomic uint64_t mezz_small_used; /**< of mezz_used: made from a small level */
    _Atomic uint64_t mezz_waited; /**< requests that waited for their original's level */
    _Atomic int64_t workers_busy;
    metrics_hist_t job_seconds, wait_seconds;
    /** estimate / measured of every job (jobmeter.h: a group bound), x 1e6 fixed point */
    metrics_hist_t est_ratio;
    _Atomic uint64_t est_under;   /**< jobs whose measured group ratio went over their estimate */
    _Atomic uint64_t est_trim_us; /**< time the meter's per-job heap trim took (its cost) */
    struct jobmeter *meter;       /**< the sampler behind both (jobmeter.h); NULL = none */
} metrics_t;

/** Memory figures of this process from /proc/self/status, in bytes (threads: a count). */
typedef struct {
    uint64_t rss, rss_anon, rss_file, hwm, threads;
} metrics_proc_t;
/** Reads /proc/self/status; fields it cannot read are 0. */
void metrics_proc_read(metrics_proc_t *out);

/** Status code to its slot (200 ... 507: every status the server sends; the last slot is "other").
 */
unsigned metrics_status_slot(int status);
int metrics_slot_status(unsigned slot);
const char *metrics_route_name(metrics_route_t r);
/** Records a duration in microseconds into @p h. */
void metrics_hist_observe(metrics_hist_t *h, uint64_t us);
/** Upper bounds (seconds) of the histogram buckets. */
extern const double metrics_hist_bounds[METRICS_HIST_BUCKETS];
/** Writes @p h as a Prometheus histogram named @p name (with _bucket/_sum/_count). */
void metrics_hist_render(FILE *out, const char *name, const char *help, const metrics_hist_t *h,
                         double scale);

#endif
