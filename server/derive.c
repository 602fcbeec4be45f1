/* derive — GET of derived URLs (<stem>_WxH.ext, conversions).
 *
 * Cached results are served from disk without touching the gate. A miss probes the
 * source header, estimates the job's peak memory and submits one job per distinct
 * result (identical concurrent requests join it: coalescing). Each waiting request is
 * a `waiter` owned by its event loop; the job is owned by the gate while it waits and
 * by its worker while it runs, and the worker frees it after posting the outcome to
 * every waiter's loop. Lock order: coalesce_mu, then the gate's mutex. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "server/flight.h"
#include "server/srv_internal.h"

#define JOBMAP_BUCKETS 1024

typedef struct derive_job derive_job_t;

typedef struct waiter {
    srv_task_t super; /* run == NULL: a derive completion (see on_done_messages) */
    h2o_req_t *req;
    derive_job_t *job; /* NULL once the outcome is posted; under coalesce_mu */
    int fd;
    h2o_linklist_t link; /* in th->waiters; loop-owned */
    struct waiter *next; /* in job->waiters; under coalesce_mu */
    uint64_t joined_ms;
    /* outcome, written by the poster before the message is sent */
    int status;
    const char *code;
    char msg[STORE_PATH_MAX]; /* error text, or the cache path on success */
    uint64_t wait_ms, work_ms;
} waiter_t;

struct derive_job {
    adm_job_t super;
    srv_t *srv;
    char src[STORE_PATH_MAX];
    struct stat src_st;
    char cache_path[STORE_PATH_MAX];
    char what[ROUTE_KEY_MAX + 64]; /* "<stem> <variant>" for the flight recorder */
    imgproc_job_t ij;
    waiter_t *waiters;
    derive_job_t *map_next;
    uint64_t submitted_ms;
    bool started;
};

struct srv_jobmap {
    derive_job_t *buckets[JOBMAP_BUCKETS];
};

static size_t hash_path(const char *s)
{
    size_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h % JOBMAP_BUCKETS;
}

static derive_job_t *map_find(srv_t *srv, const char *path)
{
    for (derive_job_t *j = srv->jobs->buckets[hash_path(path)]; j; j = j->map_next)
        if (strcmp(j->cache_path, path) == 0)
            return j;
    return NULL;
}

static void map_remove(srv_t *srv, derive_job_t *job)
{
    derive_job_t **p = &srv->jobs->buckets[hash_path(job->cache_path)];
    for (; *p; p = &(*p)->map_next)
        if (*p == job) {
            *p = job->map_next;
            return;
        }
}

/* Posts the outcome to every waiter and frees the job. Called with coalesce_mu held. */
static void post_all(derive_job_t *job, int status, const char *code, const char *msg, uint64_t wait_ms,
                     uint64_t work_ms)
{
    map_remove(job->srv, job);
    waiter_t *w = job->waiters, *next;
    for (; w; w = next) {
        next = w->next;
        w->job = NULL;
        w->status = status;
        w->code = code;
        if (status != 200) /* on success msg keeps the cache path set at submit */
            snprintf(w->msg, sizeof(w->msg), "%s", msg ? msg : "");
        w->wait_ms = wait_ms;
        w->work_ms = work_ms;
        h2o_multithread_send_message(&w->super.th->done_rx, &w->super.super);
    }
    free(job);
}

/* The real peak of a job is observable when it runs alone: reset the process's VmHWM
 * (clear_refs 5) as it starts and read VmHWM as it ends; if no other job started in
 * between, the rise is its peak (give or take other requests' memory). Feeds the
 * estimate/measured histogram so operators see the estimator's accuracy live. */
static bool peak_begin(srv_t *srv, uint64_t *gen, uint64_t *rss0)
{
    if (atomic_fetch_add_explicit(&srv->metrics.workers_busy, 1, memory_order_relaxed) != 0) {
        atomic_fetch_add_explicit(&srv->job_gen, 1, memory_order_relaxed);
        return false;
    }
    *gen = atomic_fetch_add_explicit(&srv->job_gen, 1, memory_order_relaxed) + 1;
    FILE *f = fopen("/proc/self/clear_refs", "w");
    if (f == NULL)
        return false;
    bool ok = fputs("5", f) >= 0;
    ok &= fclose(f) == 0;
    metrics_proc_t pm;
    metrics_proc_read(&pm);
    *rss0 = pm.rss;
    return ok && *rss0 > 0;
}

static void peak_end(srv_t *srv, bool measuring, uint64_t gen, uint64_t rss0, uint64_t estimate)
{
    if (measuring && atomic_load_explicit(&srv->job_gen, memory_order_relaxed) == gen) {
        metrics_proc_t pm;
        metrics_proc_read(&pm);
        uint64_t hwm = pm.hwm;
        if (hwm > rss0) {
            double ratio = (double)estimate / (double)(hwm - rss0);
            metrics_hist_observe(&srv->metrics.est_ratio, (uint64_t)(ratio * 1e6)); /* buckets read as ratios */
        }
    }
    atomic_fetch_add_explicit(&srv->metrics.workers_busy, -1, memory_order_relaxed);
}

static void do_evict(srv_t *srv)
{
    store_cache_evict(srv->store);
}

static void job_run(adm_job_t *_job)
{
    derive_job_t *job = (void *)_job;
    srv_t *srv = job->srv;
    uint64_t start = srv__now_ms();

    pthread_mutex_lock(&srv->coalesce_mu);
    bool anyone = false;
    for (waiter_t *w = job->waiters; w; w = w->next)
        anyone |= !srv__client_gone_fd(w->fd);
    if (!anyone) {
        /* every client went away while the job waited: do not decode for nobody */
        atomic_fetch_add_explicit(&srv->metrics.jobs_dropped_gone, 1, memory_order_relaxed);
        post_all(job, 499, "client_gone", "the client closed the connection", start - job->submitted_ms, 0);
        pthread_mutex_unlock(&srv->coalesce_mu);
        return;
    }
    job->started = true;
    pthread_mutex_unlock(&srv->coalesce_mu);

    uint64_t gen = 0, rss0 = 0;
    bool measuring = peak_begin(srv, &gen, &rss0);
    flight_job_begin(srv->flight, job, job->what, job->super.estimate);
    char tmp[STORE_PATH_MAX], src[64];
    imgproc_out_t out;
    imgproc_err_t err = {0};
    int r, status = 200;
    const char *code = NULL;
    /* decode exactly the file that was probed and admitted: an original replaced while
     * the job waited could need far more memory than its estimate */
    int sfd = open(job->src, O_RDONLY | O_CLOEXEC);
    struct stat now;
    if (sfd < 0 || fstat(sfd, &now) != 0 || now.st_ino != job->src_st.st_ino || now.st_size != job->src_st.st_size ||
        now.st_mtim.tv_sec != job->src_st.st_mtim.tv_sec || now.st_mtim.tv_nsec != job->src_st.st_mtim.tv_nsec) {
        status = 503, code = "source_changed";
        snprintf(err.msg, sizeof(err.msg), "the original was replaced while the job waited; retry");
        r = 0;
    } else if ((r = store_tmp_file(srv->store, tmp, sizeof(tmp))) != 0) {
        snprintf(err.msg, sizeof(err.msg), "cannot create a temp file");
        r = -IMGPROC_E_IO;
    } else {
        snprintf(src, sizeof(src), "/proc/self/fd/%d", sfd);
        r = imgproc_run(src, &job->ij, &srv->imgopts, tmp, &out, &err);
        if (r == 0) {
            int c = store_cache_commit(srv->store, tmp, job->cache_path, job->src, &job->src_st);
            if (c == -STORE_E_NOTFOUND)
                status = 503, code = "source_changed", snprintf(err.msg, sizeof(err.msg), "the original changed; retry");
            else if (c != 0)
                r = -IMGPROC_E_IO, snprintf(err.msg, sizeof(err.msg), "cannot store the result");
        } else {
            unlink(tmp);
        }
    }
    if (sfd >= 0)
        close(sfd);
    flight_job_end(srv->flight, job);
    peak_end(srv, measuring, gen, rss0, job->super.estimate);
    uint64_t end = srv__now_ms();
    metrics_hist_observe(&srv->metrics.job_seconds, (end - start) * 1000);
    metrics_hist_observe(&srv->metrics.wait_seconds, (start - job->submitted_ms) * 1000);

    switch (-r) {
    case IMGPROC_OK:
        break;
    case IMGPROC_E_UNSUPPORTED:
    case IMGPROC_E_CORRUPT:
        status = 415, code = "corrupt_image";
        break;
    case IMGPROC_E_TOO_LARGE:
        status = 413, code = "too_many_pixels";
        break;
    case IMGPROC_E_NOMEM:
        status = 503, code = "busy";
        break;
    case IMGPROC_E_TIMEOUT:
        status = 503, code = "job_timeout";
        atomic_fetch_add_explicit(&srv->metrics.jobs_timed_out, 1, memory_order_relaxed);
        break;
    case IMGPROC_E_INVALID:
        status = 400, code = "bad_request";
        break;
    default:
        status = 500, code = "processing_error";
    }
    if (r != 0) {
        atomic_fetch_add_explicit(&srv->metrics.jobs_failed, 1, memory_order_relaxed);
        if (srv->cfg->log_level >= CFG_LOG_WARN)
            fprintf(stderr, "{\"log\":\"error\",\"op\":\"derive\",\"src\":\"%.300s\",\"status\":%d,\"error\":\"%.200s\"}\n",
                job->src, status, err.msg);
    }
    pthread_mutex_lock(&srv->coalesce_mu);
    post_all(job, status, code, err.msg, start - job->submitted_ms, end - start);
    pthread_mutex_unlock(&srv->coalesce_mu);
    /* everyone has their answer; a cache over its bound is trimmed off the job path */
    if (status == 200 && store_cache_over_bound(srv->store))
        srv__io_submit_detached(srv, do_evict);
}

static void job_expire(adm_job_t *_job)
{
    derive_job_t *job = (void *)_job;
    srv_t *srv = job->srv;
    pthread_mutex_lock(&srv->coalesce_mu);
    post_all(job, 503, "over_budget", "the memory budget stayed full for the whole wait", srv__now_ms() - job->submitted_ms,
             0);
    pthread_mutex_unlock(&srv->coalesce_mu);
}

static void send_busy(srv_t *srv, h2o_req_t *req, const char *code, const char *msg)
{
    char ra[16];
    int n = snprintf(ra, sizeof(ra), "%" PRIu32, adm_retry_after(srv->gate));
    h2o_iovec_t v = h2o_strdup(&req->pool, ra, (size_t)n); /* h2o keeps the pointer, not a copy */
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_RETRY_AFTER, NULL, v.base, v.len);
    srv__send_error(req, 503, code, "%s", msg);
}

void srv__derive_on_done(srv_thread_t *th, h2o_multithread_message_t *msg)
{
    waiter_t *w = (waiter_t *)msg;
    srv_t *srv = th->srv;
    h2o_req_t *req = w->req;
    h2o_linklist_unlink(&w->link);
    srv__set_env(req, "TG_WAIT_MS", "%" PRIu64, w->wait_ms);
    char st[96];
    snprintf(st, sizeof(st), "queue;dur=%" PRIu64 ", work;dur=%" PRIu64, w->wait_ms, w->work_ms);
    srv__add_header(req, "server-timing", st);
    if (w->status == 200) {
        /* w->msg holds the cache path on success */
        if (!srv__serve_path(srv, req, w->msg, NULL))
            send_busy(srv, req, "result_evicted", "the result was replaced before it could be sent; retry");
    } else if (w->status == 503 || w->status == 499) {
        /* 499: nobody reads it, but answering closes the connection */
        if (strcmp(w->code, "over_budget") == 0)
            srv__set_env(req, "TG_ADMISSION", "expired");
        send_busy(srv, req, w->code, w->msg);
    } else {
        srv__send_error(req, w->status, w->code, "%s", w->msg);
    }
    free(w);
}

void srv__derive_tick(srv_thread_t *th)
{
    srv_t *srv = th->srv;
    if (h2o_linklist_is_empty(&th->waiters))
        return;
    h2o_linklist_t *node = th->waiters.next;
    while (node != &th->waiters) {
        waiter_t *w = H2O_STRUCT_FROM_MEMBER(waiter_t, link, node);
        node = node->next;
        if (!srv__client_gone_fd(w->fd))
            continue;
        pthread_mutex_lock(&srv->coalesce_mu);
        derive_job_t *job = w->job;
        if (job == NULL) { /* the outcome is already on its way to us */
            pthread_mutex_unlock(&srv->coalesce_mu);
            continue;
        }
        waiter_t **p = &job->waiters;
        while (*p != w)
            p = &(*p)->next;
        *p = w->next;
        w->job = NULL;
        /* the last waiter of a job that has not started takes it out of the queue */
        if (job->waiters == NULL && !job->started && adm_cancel(srv->gate, &job->super)) {
            map_remove(srv, job);
            free(job);
        }
        pthread_mutex_unlock(&srv->coalesce_mu);
        atomic_fetch_add_explicit(&srv->metrics.jobs_dropped_gone, 1, memory_order_relaxed);
        h2o_linklist_unlink(&w->link);
        srv__set_env(w->req, "TG_ADMISSION", "client-gone");
        send_busy(srv, w->req, "client_gone", "the client closed the connection");
        free(w);
    }
}

static bool size_allowed(const cfg_t *cfg, const imgproc_job_t *j)
{
    if (cfg->nsizes == 0 || j->op == IMGPROC_OP_CONVERT)
        return true;
    for (uint32_t i = 0; i < cfg->nsizes; i++)
        if (cfg->sizes[i].width == j->width && cfg->sizes[i].height == j->height &&
            cfg->sizes[i].crop == (j->op == IMGPROC_OP_COVER))
            return true;
    return false;
}

void srv__handle_derive(srv_t *srv, h2o_req_t *req, const route_t *rt)
{
    const cfg_t *cfg = srv->cfg;
    if (!size_allowed(cfg, &rt->job)) {
        srv__send_error(req, 400, "size_not_allowed", "this size is not in limits.sizes");
        return;
    }
    derive_job_t *job = calloc(1, sizeof(*job));
    waiter_t *w = calloc(1, sizeof(*w));
    if (job == NULL || w == NULL) {
        free(job), free(w);
        send_busy(srv, req, "busy", "out of memory");
        return;
    }
    if (store_find_source(srv->store, rt->stem, job->src, sizeof(job->src), &job->src_st) != 0) {
        free(job), free(w);
        srv__send_error(req, 404, "not_found", "no original stored for this derived image");
        return;
    }
    store_cache_path(srv->store, rt->stem, &job->src_st, rt->variant, job->cache_path, sizeof(job->cache_path));
    struct stat sb;
    if (srv__serve_path(srv, req, job->cache_path, &sb)) {
        store_cache_touch(job->cache_path, &sb);
        atomic_fetch_add_explicit(&srv->metrics.cache_hits, 1, memory_order_relaxed);
        srv__set_env(req, "TG_ADMISSION", "cache-hit");
        free(job), free(w);
        return;
    }
    atomic_fetch_add_explicit(&srv->metrics.cache_misses, 1, memory_order_relaxed);

    /* header only, bounded read: the decision is made before any pixel is decoded */
    imgproc_probe_t probe;
    imgproc_err_t ierr = {0};
    if (imgproc_probe_file(job->src, &probe, &ierr) != 0) {
        free(job), free(w);
        srv__send_error(req, 415, "corrupt_image", "the stored original cannot be read: %s", ierr.msg);
        return;
    }
    if ((uint64_t)probe.width * probe.height > cfg->max_pixels) {
        free(job), free(w);
        atomic_fetch_add_explicit(&srv->metrics.rejected_pixels, 1, memory_order_relaxed);
        srv__set_env(req, "TG_ADMISSION", "rejected-pixels");
        srv__send_error(req, 413, "too_many_pixels", "the original has %" PRIu32 "x%" PRIu32 " pixels, over limits.max_pixels",
                        probe.width, probe.height);
        return;
    }
    job->ij = rt->job;
    snprintf(job->what, sizeof(job->what), "%s %s", rt->stem, rt->variant);
    job->ij.naive = cfg->memory_mode == CFG_MODE_NAIVE;
    job->ij.timeout_ms = (uint32_t)cfg->job_timeout_ms;
    job->ij.max_pixels = cfg->max_pixels;
    int pr = imgproc_plan_check(&probe, &job->ij, &ierr);
    if (pr != 0) {
        free(job), free(w);
        srv__send_error(req, pr == -IMGPROC_E_TOO_LARGE ? 413 : 400, pr == -IMGPROC_E_TOO_LARGE ? "too_many_pixels" : "bad_size",
                        "%s", ierr.msg);
        return;
    }
    uint32_t ow, oh;
    imgproc_output_dims(&probe, &job->ij, &ow, &oh);
    if (ow > cfg->max_output_width || oh > cfg->max_output_height) {
        free(job), free(w);
        srv__send_error(req, 400, "output_too_large", "the output would be %" PRIu32 "x%" PRIu32 ", over limits.max_output",
                        ow, oh);
        return;
    }
    job->srv = srv;
    job->super.estimate = imgproc_estimate(&probe, &job->ij);
    job->super.run = job_run;
    job->super.on_expire = job_expire;
    srv__set_env(req, "TG_ESTIMATE", "%" PRIu64, job->super.estimate);

    srv_thread_t *th = srv__thread_of(req);
    w->super.th = th;
    w->req = req;
    w->fd = srv__req_fd(req);
    w->joined_ms = srv__now_ms();
    snprintf(w->msg, sizeof(w->msg), "%s", job->cache_path);

    pthread_mutex_lock(&srv->coalesce_mu);
    if (srv->jobs == NULL && (srv->jobs = calloc(1, sizeof(*srv->jobs))) == NULL) {
        pthread_mutex_unlock(&srv->coalesce_mu);
        free(job), free(w);
        send_busy(srv, req, "busy", "out of memory");
        return;
    }
    derive_job_t *same = map_find(srv, job->cache_path);
    if (same == NULL && access(job->cache_path, F_OK) == 0) {
        /* an identical job finished between our cache miss and now: serve its result */
        pthread_mutex_unlock(&srv->coalesce_mu);
        atomic_fetch_add_explicit(&srv->metrics.cache_hits, 1, memory_order_relaxed);
        srv__set_env(req, "TG_ADMISSION", "cache-hit");
        if (!srv__serve_path(srv, req, job->cache_path, NULL))
            send_busy(srv, req, "result_evicted", "the result was replaced before it could be sent; retry");
        free(job), free(w);
        return;
    }
    if (same != NULL) {
        /* an identical job is waiting or running: share its result */
        w->job = same;
        w->next = same->waiters;
        same->waiters = w;
        pthread_mutex_unlock(&srv->coalesce_mu);
        free(job);
        atomic_fetch_add_explicit(&srv->metrics.coalesced, 1, memory_order_relaxed);
        srv__set_env(req, "TG_ADMISSION", "coalesced");
        h2o_linklist_insert(&th->waiters, &w->link);
        return;
    }
    job->submitted_ms = w->joined_ms;
    job->waiters = w;
    w->job = job;
    size_t b = hash_path(job->cache_path);
    job->map_next = srv->jobs->buckets[b];
    srv->jobs->buckets[b] = job;
    bool queued = false;
    int r = adm_submit(srv->gate, &job->super, job->submitted_ms, &queued);
    if (r != 0) {
        map_remove(srv, job);
        pthread_mutex_unlock(&srv->coalesce_mu);
        free(job), free(w);
        if (r == -ADM_E_TOO_BIG) {
            srv__set_env(req, "TG_ADMISSION", "rejected-too-big");
            srv__send_error(req, 413, "over_budget", "this image needs more memory than the whole budget allows");
        } else {
            srv__set_env(req, "TG_ADMISSION", "rejected-queue-full");
            send_busy(srv, req, "over_budget", adm_strerror(r));
        }
        return;
    }
    pthread_mutex_unlock(&srv->coalesce_mu);
    srv__set_env(req, "TG_ADMISSION", queued ? "queued" : "admitted");
    h2o_linklist_insert(&th->waiters, &w->link);
}
