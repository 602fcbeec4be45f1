/* derive — GET of derived URLs (<stem>_WxH.ext, conversions, smart crops, pixel ratios,
 * .auto format negotiation, <stem>@<preset>), signed with auth.url_key when one is set.
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

#include "server/auth.h"
#include "server/errors.h"
#include "server/flight.h"
#include "server/iopool.h"
#include "server/jobmeter.h"
#include "server/json.h"
#include "server/http.h"
#include "server/mezz.h"
#include "server/room.h"
#include "server/route.h"

#define JOBMAP_BUCKETS 1024
/* slots of the table of originals whose level is not made yet (struct level_mark) */
#define LEVEL_MARKS 1024

typedef struct derive_job derive_job_t;

/* The room: what it borrows from the process, and the coalescing map it owns. */
typedef struct {
    h2o_handler_t super;
    const cfg_t *cfg;
    store_t *store;
    adm_gate_t *gate;
    metrics_t *metrics;
    const imgproc_opts_t *imgopts;
    /* imgopts with mezzanine.quality and 4:2:0 chroma: what levels are made with */
    imgproc_opts_t level_opts;
    imgproc_opts_t small_opts; /* and small levels: MEZZ_SMALL_QUALITY_UP over it */
    struct flight *flight;
    pthread_mutex_t coalesce_mu;
    /* in-flight jobs by cache path (coalescing), zeroed with the handler; under coalesce_mu */
    derive_job_t *jobs[JOBMAP_BUCKETS];
    /* what is known of originals whose level is not made yet (level_mark); under
     * coalesce_mu */
    struct level_mark {
        uint64_t level; /* hash of the level's cache path (never 0; 0: an empty slot) */
        uint64_t first; /* hash of the first derived miss's cache path, never 0 */
        bool failed;    /* the level job failed on the image: not tried again */
    } marks[LEVEL_MARKS];
} derive_t;

/* Cached hits in one lookup: each loop remembers, for the URLs it last answered from the
 * result cache, the file that answered them (a direct-mapped table). A remembered URL is
 * served from its file, before any other room looks at it, while the store's epoch is
 * unchanged (no put, delete or eviction in this instance since: an exact key stored
 * later wins again at once) and for at most HIT_TTL_MS (what another instance sharing the
 * storage root changed is seen within that time: the loop's filecache may hold the old
 * result's descriptor that long, http.c). Memory: HIT_SLOTS x (a URL and a path, at most
 * 513 + 1400 bytes) per loop.
 *
 * A remembered result of at most SRV_HOT_MAX bytes that is hit again is read into memory
 * (a hot result, http.h) and answered from there while its URL stays remembered: no
 * system call but the socket's. Every loop's hot results together stay within
 * http.hot_results (their term of the memory plan); the tick lets go of those whose URL
 * is forgotten. */
#define HIT_SLOTS 256
#define HIT_TTL_MS 1000

struct hit {
    char *url; /* the request path up to its query; NULL: an empty slot */
    size_t urllen;
    char *file;
    imgproc_fmt_t fmt;
    uint64_t epoch, until_ms;
    srv_hot_t *hot; /* the result in memory, or NULL */
    bool hot_tried; /* read once per remembering: a big result or a full cap costs no more */
};

/* A loop's share of the room: its waiting requests and the receiver of their outcomes. */
struct derive_loop {
    derive_t *srv;
    struct hit hits[HIT_SLOTS];
    h2o_loop_t *loop;
    h2o_multithread_receiver_t rx; /* outcomes of jobs, posted by workers */
    h2o_linklist_t waiters;        /* waiters of this loop's requests */
    h2o_timeout_t tick_timeout;
    h2o_timeout_entry_t tick; /* 100 ms: clients that left while their job waits */
};

/* The outcome of a job: ok, or a module error (mapped to HTTP by errors_http). */
typedef struct {
    bool ok;
    err_domain_t domain;
    int err;
    char msg[256];
} outcome_t;

typedef struct waiter {
    h2o_multithread_message_t msg; /* on loop->rx: only derive completions go there */
    struct derive_loop *loop;
    h2o_req_t *req;
    derive_job_t *job; /* NULL once the outcome is posted; under coalesce_mu */
    int fd;
    h2o_linklist_t link; /* in loop->waiters; loop-owned */
    struct waiter *next; /* in job->waiters; under coalesce_mu */
    route_t *rt;         /* the request's route, in its pool */
    int64_t level_ms;    /* how long it waited for its original's level before; -1: not */
    bool redo;           /* waits for its original's level: handled again once it is made */
    uint64_t joined_ms;
    char result[STORE_PATH_MAX]; /* the cache path this request is served from */
    /* written by the poster before the message is sent */
    outcome_t out;
    uint64_t wait_ms, work_ms;
} waiter_t;

struct derive_job {
    adm_job_t super;
    derive_t *srv;
    char src[STORE_PATH_MAX];
    struct stat src_st;
    char cache_path[STORE_PATH_MAX];
    char what[ROUTE_KEY_MAX + 64]; /* "<stem> <variant>" for the flight recorder */
    imgproc_job_t ij;
    const imgproc_opts_t *opts;
    bool level;       /* makes a mezzanine level (mezz.h); its waiters are redo waiters */
    bool for_waiters; /* a level made for requests that wait for it: dropped if they all leave */
    bool from_level;  /* decodes the mezzanine level instead of the original */
    bool from_small;  /* ... its small level (mezz_small_job) */
    waiter_t *waiters;
    derive_job_t *map_next;
    uint64_t submitted_ms;
    bool started;
    int src_fd; /* the source, opened once by the handler; probed and decoded from it */
};

static void job_free(derive_job_t *job)
{
    if (job != NULL && job->src_fd >= 0)
        close(job->src_fd);
    free(job);
}

/* FNV-1a (64-bit) of @p n bytes */
static size_t fnv1a(const char *s, size_t n)
{
    size_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h;
}

static size_t hash_path(const char *s)
{
    return fnv1a(s, strlen(s)) % JOBMAP_BUCKETS;
}

static derive_job_t *map_find(derive_t *srv, const char *path)
{
    for (derive_job_t *j = srv->jobs[hash_path(path)]; j; j = j->map_next)
        if (strcmp(j->cache_path, path) == 0)
            return j;
    return NULL;
}

static void map_remove(derive_t *srv, derive_job_t *job)
{
    derive_job_t **p = &srv->jobs[hash_path(job->cache_path)];
    for (; *p; p = &(*p)->map_next)
        if (*p == job) {
            *p = job->map_next;
            return;
        }
}

/* The mark of the original whose level's cache path is @p lpath, made (empty) when it has
 * none; direct-mapped, so another original's may take its slot: a level is then made one
 * size late, or tried again. Under coalesce_mu. */
static struct level_mark *level_mark(derive_t *srv, const char *lpath)
{
    uint64_t h = (uint64_t)fnv1a(lpath, strlen(lpath));
    struct level_mark *m = &srv->marks[h % LEVEL_MARKS];
    h |= 1;
    if (m->level != h)
        *m = (struct level_mark){.level = h};
    return m;
}

/* Posts the outcome to every waiter and frees the job. Called with coalesce_mu held. */
static void post_all(derive_job_t *job, const outcome_t *out, uint64_t wait_ms, uint64_t work_ms)
{
    map_remove(job->srv, job);
    waiter_t *w = job->waiters, *next;
    for (; w; w = next) {
        next = w->next;
        w->job = NULL;
        w->out = *out;
        w->wait_ms = wait_ms;
        w->work_ms = work_ms;
        h2o_multithread_send_message(&w->loop->rx, &w->msg);
    }
    job_free(job);
}

static outcome_t fail(err_domain_t domain, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static outcome_t fail(err_domain_t domain, int err, const char *fmt, ...)
{
    outcome_t o = {.ok = false, .domain = domain, .err = err < 0 ? -err : err};
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(o.msg, sizeof(o.msg), fmt, ap);
    va_end(ap);
    return o;
}

static void do_evict(void *store)
{
    store_cache_evict(store);
}

/* Runs @p ij on @p fd (borrowed) with @p opts into a temp file and commits it to the cache
 * as @p path, a result of @p job's original. */
static outcome_t run_commit(derive_t *srv, const derive_job_t *job, int fd, const imgproc_job_t *ij,
                            const imgproc_opts_t *opts, const char *path)
{
    char tmp[STORE_PATH_MAX];
    int r = store_tmp_file(srv->store, tmp, sizeof(tmp));
    if (r != 0)
        return fail(ERR_STORE, r, "cannot create a temp file for the result");
    imgproc_out_t res;
    imgproc_err_t ierr = {0};
    outcome_t out = {.ok = true};
    r = imgproc_run_fd(fd, ij, opts, tmp, &res, &ierr);
    if (r == -IMGPROC_E_IO && store_out_of_space(srv->store))
        out = fail(ERR_STORE, STORE_E_NOSPACE, "no space left to store the result");
    else if (r != 0)
        out = fail(ERR_IMGPROC, r, "%s", ierr.msg);
    else if ((r = store_cache_commit(srv->store, tmp, path, job->src, &job->src_st)) != 0)
        out = fail(ERR_STORE, r,
                   r == -STORE_E_NOTFOUND  ? "the original was deleted"
                   : r == -STORE_E_CHANGED ? "the original changed; retry"
                                           : "cannot store the result");
    else
        store_result_made(srv->store, job->src, path); /* s3: shared with others */
    if (!out.ok)
        unlink(tmp); /* commit removes it itself; harmless then */
    return out;
}

/* Decodes the source (opened once, on the descriptor the checks were made on) into a temp
 * file and commits it to the cache. */
static outcome_t make_result(derive_t *srv, derive_job_t *job)
{
    /* the descriptor holds exactly the bytes that were probed and admitted; a key
     * deleted or replaced meanwhile gets no result (its clients hear why) */
    struct stat now;
    if (stat(job->src, &now) != 0)
        return fail(ERR_STORE, STORE_E_NOTFOUND, "the original was deleted");
    if (now.st_ino != job->src_st.st_ino || now.st_size != job->src_st.st_size ||
        now.st_mtim.tv_sec != job->src_st.st_mtim.tv_sec ||
        now.st_mtim.tv_nsec != job->src_st.st_mtim.tv_nsec)
        return fail(ERR_STORE, STORE_E_CHANGED,
                    "the original was replaced while the job waited; retry");
    return run_commit(srv, job, job->src_fd, &job->ij, job->opts, job->cache_path);
}

/* After the level of @p job is committed: its small level (mezz_small_job), made from the
 * level in the same job, within its estimate (a job on a quarter of the original's pixels
 * or fewer). Not made is not a failure: the level serves those outputs then. */
static void make_small_level(derive_t *srv, derive_job_t *job)
{
    imgproc_probe_t lp;
    imgproc_job_t sj;
    imgproc_err_t ierr = {0};
    char variant[64], path[STORE_PATH_MAX];
    mezz_variant(srv->cfg, true, variant, sizeof(variant));
    /* beside the level: the same generation directory of the original's results */
    const char *slash = strrchr(job->cache_path, '/');
    int dirlen = (int)(slash - job->cache_path);
    if (snprintf(path, sizeof(path), "%.*s/%s", dirlen, job->cache_path, variant) >=
        (int)sizeof(path))
        return;
    int fd = open(job->cache_path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    if (imgproc_probe_fd(fd, &lp, &ierr) == 0 && mezz_small_job(&lp, &sj)) {
        sj.timeout_ms = job->ij.timeout_ms;
        sj.max_pixels = job->ij.max_pixels;
        (void)run_commit(srv, job, fd, &sj, &srv->small_opts, path);
    }
    close(fd);
}

static void job_run(adm_job_t *_job)
{
    derive_job_t *job = (void *)_job;
    derive_t *srv = job->srv;
    uint64_t start = adm_now_ms();

    pthread_mutex_lock(&srv->coalesce_mu);
    bool anyone = false;
    for (waiter_t *w = job->waiters; w; w = w->next)
        anyone |= !srv__client_gone_fd(w->fd);
    anyone |= job->level && !job->for_waiters; /* made after a size it does not serve */
    if (!anyone) {
        /* every client went away while the job waited: do not decode for nobody */
        atomic_fetch_add_explicit(&srv->metrics->jobs_dropped_gone, 1, memory_order_relaxed);
        outcome_t gone = fail(ERR_REQ, ERR_REQ_CLIENT_GONE, "the client closed the connection");
        post_all(job, &gone, start - job->submitted_ms, 0);
        pthread_mutex_unlock(&srv->coalesce_mu);
        return;
    }
    job->started = true;
    pthread_mutex_unlock(&srv->coalesce_mu);

    atomic_fetch_add_explicit(&srv->metrics->workers_busy, 1, memory_order_relaxed);
    jobmeter_job_t meter = {.estimate = job->super.estimate, .what = job->what};
    jobmeter_begin(srv->metrics->meter, &meter);
    flight_job_begin(srv->flight, job, job->what, job->super.estimate);
    outcome_t out = make_result(srv, job);
    if (out.ok && job->level) { /* on disk now: a request may find it before the small one */
        atomic_fetch_add_explicit(&srv->metrics->mezz_made, 1, memory_order_relaxed);
        make_small_level(srv, job);
    }
    flight_job_end(srv->flight, job);
    jobmeter_end(srv->metrics->meter, &meter);
    atomic_fetch_add_explicit(&srv->metrics->workers_busy, -1, memory_order_relaxed);
    uint64_t end = adm_now_ms();
    metrics_hist_observe(&srv->metrics->job_seconds, (end - start) * 1000);
    metrics_hist_observe(&srv->metrics->wait_seconds, (start - job->submitted_ms) * 1000);
    if (!out.ok && out.domain == ERR_IMGPROC &&
        (out.err == IMGPROC_E_TIMEOUT || out.err == -IMGPROC_E_TIMEOUT))
        atomic_fetch_add_explicit(&srv->metrics->jobs_timed_out, 1, memory_order_relaxed);
    if (out.ok && job->from_level)
        atomic_fetch_add_explicit(&srv->metrics->mezz_used, 1, memory_order_relaxed);
    if (out.ok && job->from_small)
        atomic_fetch_add_explicit(&srv->metrics->mezz_small_used, 1, memory_order_relaxed);
    if (!out.ok) {
        atomic_fetch_add_explicit(&srv->metrics->jobs_failed, 1, memory_order_relaxed);
        if (srv->cfg->log_level >= CFG_LOG_WARN) {
            err_http_t h = errors_http(out.domain, out.err);
            char line[1024];
            json_t j;
            json_begin(&j, line, sizeof(line));
            json_str(&j, "log", "error");
            json_str(&j, "op", "derive");
            json_str(&j, "src", job->src);
            json_i64(&j, "status", h.status);
            json_str(&j, "error", out.msg);
            fwrite(line, 1, json_end(&j), stderr);
        }
    }
    pthread_mutex_lock(&srv->coalesce_mu);
    if (job->level && !out.ok && out.domain == ERR_IMGPROC) /* deadline, bad data: once */
        level_mark(srv, job->cache_path)->failed = true;
    post_all(job, &out, start - job->submitted_ms, end - start);
    pthread_mutex_unlock(&srv->coalesce_mu);
    /* everyone has their answer; a cache over its bound is trimmed off the job path */
    if (out.ok && store_cache_over_bound(srv->store))
        iopool_submit_detached(do_evict, srv->store);
}

static void job_expire(adm_job_t *_job)
{
    derive_job_t *job = (void *)_job;
    derive_t *srv = job->srv;
    outcome_t out =
        fail(ERR_ADM, ADM_E_EXPIRED, "the memory budget stayed full for the whole wait");
    pthread_mutex_lock(&srv->coalesce_mu);
    post_all(job, &out, adm_now_ms() - job->submitted_ms, 0);
    pthread_mutex_unlock(&srv->coalesce_mu);
}

static void handle_derive(derive_t *srv, h2o_req_t *req, route_t *rt, int64_t level_ms);

/* Completions of derive jobs, on the loop of each waiting request. A request that waited
 * for its original's level is handled again, once: from the level when it was made, else
 * from the original. */
static void on_derive_messages(h2o_multithread_receiver_t *rx, h2o_linklist_t *messages)
{
    while (!h2o_linklist_is_empty(messages)) {
        h2o_multithread_message_t *m =
            H2O_STRUCT_FROM_MEMBER(h2o_multithread_message_t, link, messages->next);
        h2o_linklist_unlink(&m->link);
        waiter_t *w = H2O_STRUCT_FROM_MEMBER(waiter_t, msg, m);
        h2o_req_t *req = w->req;
        h2o_linklist_unlink(&w->link);
        /* (a level dropped because every client that waited for it left: answered 499) */
        if (w->redo && !(w->out.domain == ERR_REQ && w->out.err == ERR_REQ_CLIENT_GONE)) {
            derive_t *srv = w->loop->srv;
            route_t *rt = w->rt;
            int64_t level_ms = (int64_t)(adm_now_ms() - w->joined_ms);
            free(w);
            handle_derive(srv, req, rt, level_ms);
            continue;
        }
        /* the wait for the level, if any, is part of the request's wait */
        srv__set_env(req, "TG_WAIT_MS", "%" PRIu64,
                     (w->level_ms > 0 ? (uint64_t)w->level_ms : 0) + w->wait_ms);
        char st[128];
        int n = snprintf(st, sizeof(st), "queue;dur=%" PRIu64 ", work;dur=%" PRIu64, w->wait_ms,
                         w->work_ms);
        if (w->level_ms >= 0 && n > 0 && (size_t)n < sizeof(st))
            snprintf(st + n, sizeof(st) - (size_t)n, ", level;dur=%" PRId64, w->level_ms);
        srv__add_header(req, "server-timing", st);
        if (w->out.ok) {
            if (!srv__serve_result(req, w->result, IMGPROC_FMT_UNKNOWN, NULL))
                srv__send_err(req, ERR_REQ, ERR_REQ_RESULT_EVICTED,
                              "the result was replaced before it could be sent; retry");
        } else {
            if (w->out.domain == ERR_ADM && w->out.err == ADM_E_EXPIRED)
                srv__set_env(req, "TG_ADMISSION", "expired");
            /* 499: nobody reads it, but answering closes the connection */
            srv__send_err(req, w->out.domain, w->out.err, "%s", w->out.msg);
        }
        free(w);
    }
}

/* Answers the waiters whose clients have left; a job nobody waits for any more leaves
 * the queue. */
static void drop_gone(struct derive_loop *l)
{
    derive_t *srv = l->srv;
    if (h2o_linklist_is_empty(&l->waiters))
        return;
    h2o_linklist_t *node = l->waiters.next;
    while (node != &l->waiters) {
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
        /* the last waiter of a job that has not started takes it out of the queue (a
         * level too: the next size of its original asks for it again) */
        if (job->waiters == NULL && !job->started && (!job->level || job->for_waiters) &&
            adm_cancel(srv->gate, &job->super)) {
            map_remove(srv, job);
            job_free(job);
        }
        pthread_mutex_unlock(&srv->coalesce_mu);
        atomic_fetch_add_explicit(&srv->metrics->jobs_dropped_gone, 1, memory_order_relaxed);
        h2o_linklist_unlink(&w->link);
        srv__set_env(w->req, "TG_ADMISSION", "client-gone");
        srv__send_err(w->req, ERR_REQ, ERR_REQ_CLIENT_GONE, "the client closed the connection");
        free(w);
    }
}

/* limits.sizes applies to the size as written (before a pixel ratio); a WxHc entry also
 * allows the smart crop WxHs (same output, same bound). */
static bool size_allowed(const cfg_t *cfg, const route_t *rt)
{
    const imgproc_job_t *j = &rt->job;
    if (cfg->nsizes == 0 || j->op == IMGPROC_OP_CONVERT)
        return true;
    bool crop = j->op == IMGPROC_OP_COVER || j->op == IMGPROC_OP_SMART;
    for (uint32_t i = 0; i < cfg->nsizes; i++)
        if (cfg->sizes[i].width == rt->base_w && cfg->sizes[i].height == rt->base_h &&
            cfg->sizes[i].crop == crop)
            return true;
    return false;
}

/* The job of /<stem>@<name>, with its variant; 0 or an ERR_REQ_* code. */
static int preset_job(const cfg_t *cfg, const char *name, imgproc_job_t *job, char *variant,
                      size_t n)
{
    for (uint32_t i = 0; i < cfg->npresets; i++) {
        const cfg_preset_t *p = &cfg->presets[i];
        if (strcmp(p->name, name) != 0)
            continue;
        memset(job, 0, sizeof(*job));
        job->op = p->mode == CFG_PRESET_COVER   ? IMGPROC_OP_COVER
                  : p->mode == CFG_PRESET_SMART ? IMGPROC_OP_SMART
                                                : IMGPROC_OP_FIT;
        job->width = p->width;
        job->height = p->height;
        job->quality = p->quality;
        job->out_fmt = imgproc_fmt_from_ext(p->format, strlen(p->format));
        if (job->out_fmt == IMGPROC_FMT_UNKNOWN || route_variant(job, variant, n) != 0)
            return ERR_REQ_NO_FORMAT;
        return 0;
    }
    return ERR_REQ_UNKNOWN_PRESET;
}

/* .auto: AVIF when the build encodes it and Accept names it, else WebP when Accept names
 * it (the higher q wins, AVIF on a tie; wildcards name neither); UNKNOWN = neither, the
 * caller picks PNG (alpha) or JPEG from the source. */
static imgproc_fmt_t negotiate(h2o_req_t *req)
{
    int avif = -1, webp = -1;
    imgproc_fmt_t avif_fmt = imgproc_fmt_from_ext("avif", 4);
    for (ssize_t i = -1; (i = h2o_find_header(&req->headers, H2O_TOKEN_ACCEPT, i)) != -1;) {
        h2o_iovec_t v = req->headers.entries[i].value;
        int a = route_accept_q(v.base, v.len, "image/avif");
        int w = route_accept_q(v.base, v.len, "image/webp");
        avif = a > avif ? a : avif;
        webp = w > webp ? w : webp;
    }
    if (avif_fmt != IMGPROC_FMT_UNKNOWN && avif > 0 && avif >= webp)
        return avif_fmt;
    if (webp > 0)
        return IMGPROC_FMT_WEBP;
    return IMGPROC_FMT_UNKNOWN;
}

/* An .auto request moves to output @p fmt: its variant, cache file and name follow. */
static void auto_switch(derive_t *srv, route_t *rt, derive_job_t *job, imgproc_fmt_t fmt)
{
    rt->job.out_fmt = job->ij.out_fmt = fmt;
    route_variant(&rt->job, rt->variant, sizeof(rt->variant));
    store_cache_path(srv->store, rt->stem, &job->src_st, rt->variant, job->cache_path,
                     sizeof(job->cache_path));
    snprintf(job->what, sizeof(job->what), "%s %s", rt->stem, rt->variant);
}

/* Refuses @p req before any job exists; frees what was made for it. */
static void refuse(h2o_req_t *req, derive_job_t *job, waiter_t *w, err_domain_t d, int err,
                   const char *fmt, ...) __attribute__((format(printf, 6, 7)));
static void refuse(h2o_req_t *req, derive_job_t *job, waiter_t *w, err_domain_t d, int err,
                   const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    job_free(job);
    free(w);
    srv__send_err(req, d, err, "%s", msg);
}

static struct derive_loop *loop_of(derive_t *srv, h2o_req_t *req)
{
    return h2o_context_get_handler_context(req->conn->ctx, &srv->super);
}

static struct hit *hit_slot(struct derive_loop *l, h2o_req_t *req, size_t *urllen)
{
    *urllen = req->query_at != SIZE_MAX ? req->query_at : req->path.len;
    return &l->hits[fnv1a(req->path.base, *urllen) % HIT_SLOTS];
}

/* @p req was answered from @p file: remember it, valid for @p epoch, the store's epoch read
 * before the source was looked up (a change since then is not missed). */
static void hit_remember(derive_t *srv, h2o_req_t *req, const char *file, imgproc_fmt_t fmt,
                         uint64_t epoch)
{
    struct derive_loop *l = loop_of(srv, req);
    size_t n;
    struct hit *h = hit_slot(l, req, &n);
    free(h->url);
    free(h->file);
    srv__hot_release(h->hot);
    h->hot = NULL;
    h->hot_tried = false;
    h->url = h2o_mem_alloc(n + 1);
    memcpy(h->url, req->path.base, n);
    h->url[n] = '\0';
    h->urllen = n;
    h->file = strdup(file);
    if (h->file == NULL)
        free(h->url), h->url = NULL;
    h->fmt = fmt;
    h->epoch = epoch;
    h->until_ms = adm_now_ms() + HIT_TTL_MS;
}

/* What a miss knows of its original's mezzanine level (from_level). */
typedef struct {
    bool missing;     /* the original gets a level (lj makes it) and it is not made yet */
    bool seen;        /* a result of the original is on disk: another size was asked for */
    bool would_serve; /* the level, once made, would serve this request */
    imgproc_job_t lj;
    char path[STORE_PATH_MAX]; /* the level's cache path */
} level_t;

/* Submits the job that makes the mezzanine level @p lv of @p job's original (probed as
 * @p orig, opened by @p job) from the original, admitted like any job. Returns it, or
 * NULL when it cannot be made or admission refuses it (counted; a later miss tries
 * again). Called with coalesce_mu held, no job for @p lv in flight. */
static derive_job_t *make_level(derive_t *srv, const char *stem, const derive_job_t *job,
                                const imgproc_probe_t *orig, const level_t *lv)
{
    derive_job_t *lvl = calloc(1, sizeof(*lvl));
    if (lvl == NULL || (lvl->src_fd = dup(job->src_fd)) < 0) {
        free(lvl);
        return NULL;
    }
    lvl->srv = srv;
    memcpy(lvl->src, job->src, sizeof(lvl->src));
    lvl->src_st = job->src_st;
    snprintf(lvl->cache_path, sizeof(lvl->cache_path), "%s", lv->path);
    snprintf(lvl->what, sizeof(lvl->what), "%s %s", stem, strrchr(lv->path, '/') + 1);
    lvl->ij = lv->lj;
    lvl->ij.timeout_ms = job->ij.timeout_ms;
    lvl->ij.max_pixels = job->ij.max_pixels;
    lvl->opts = &srv->level_opts;
    lvl->level = true;
    lvl->super.estimate = jobmeter_scaled(srv->metrics->meter, imgproc_estimate(orig, &lvl->ij));
    if (lvl->super.estimate == 0) { /* a job imgproc_plan_check() refuses: none */
        job_free(lvl);
        return NULL;
    }
    lvl->super.run = job_run;
    lvl->super.on_expire = job_expire;
    lvl->submitted_ms = adm_now_ms();
    size_t b = hash_path(lvl->cache_path);
    lvl->map_next = srv->jobs[b];
    srv->jobs[b] = lvl;
    bool queued;
    if (adm_submit(srv->gate, &lvl->super, lvl->submitted_ms, &queued) != 0) {
        map_remove(srv, lvl);
        job_free(lvl);
        atomic_fetch_add_explicit(&srv->metrics->mezz_refused, 1, memory_order_relaxed);
        return NULL;
    }
    return lvl;
}

/* The source of @p job: its original's mezzanine level when there is one that may serve
 * the request (then @p probe becomes the level's, so the estimate is the level's, and the
 * job runs on the level with the original's output dimensions), else the original. @p lv
 * says whether the original gets a level that is not made yet, and whether it would serve
 * the request: the caller then makes it or waits for it (handle_derive). */
static void from_level(derive_t *srv, const char *stem, derive_job_t *job, imgproc_probe_t *probe,
                       level_t *lv)
{
    imgproc_job_t onl;
    lv->missing = lv->seen = lv->would_serve = false;
    if (!mezz_level_job(srv->cfg, probe, &lv->lj))
        return;
    char variant[64];
    mezz_variant(srv->cfg, false, variant, sizeof(variant));
    store_cache_path(srv->store, stem, &job->src_st, variant, lv->path, sizeof(lv->path));
    int fd = open(lv->path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        char *slash = strrchr(lv->path, '/');
        *slash = '\0';
        lv->seen = access(lv->path, F_OK) == 0; /* a result of this original exists */
        *slash = '/';
        imgproc_probe_t lp;
        mezz_level_probe(probe, &lv->lj, &lp);
        lv->missing = true;
        lv->would_serve = mezz_job_on_level(srv->cfg, srv->imgopts, probe, &job->ij, &lp, &onl);
        return;
    }
    imgproc_probe_t lp;
    imgproc_err_t ierr;
    struct stat sb;
    if (fstat(fd, &sb) != 0 || imgproc_probe_fd(fd, &lp, &ierr) != 0 ||
        !mezz_job_on_level(srv->cfg, srv->imgopts, probe, &job->ij, &lp, &onl)) {
        close(fd);
        return;
    }
    /* the small level, made with it, when it serves the request too (a small level
     * evicted alone is not made again: the level serves meanwhile) */
    char spath[STORE_PATH_MAX];
    store_cache_touch(lv->path, &sb); /* levels in use stay in the cache, both of them */
    mezz_variant(srv->cfg, true, variant, sizeof(variant));
    store_cache_path(srv->store, stem, &job->src_st, variant, spath, sizeof(spath));
    int sfd = open(spath, O_RDONLY | O_CLOEXEC);
    imgproc_probe_t sp;
    imgproc_job_t sonl;
    struct stat ssb;
    if (sfd >= 0 && fstat(sfd, &ssb) == 0 && imgproc_probe_fd(sfd, &sp, &ierr) == 0 &&
        mezz_job_on_level(srv->cfg, srv->imgopts, probe, &job->ij, &sp, &sonl)) {
        close(fd);
        fd = sfd, lp = sp, onl = sonl;
        job->from_small = true;
        store_cache_touch(spath, &ssb);
    } else if (sfd >= 0) {
        close(sfd);
    }
    close(job->src_fd);
    job->src_fd = fd;
    job->ij = onl;
    *probe = lp;
    job->from_level = true;
}

/* The request of @p w waits for @p target (an identical job, or its original's level)
 * instead of running @p own, which is freed; @p counter counts it. Called with coalesce_mu
 * held, which it releases. */
static void join_job(derive_t *srv, struct derive_loop *l, waiter_t *w, derive_job_t *target,
                     derive_job_t *own, _Atomic uint64_t *counter, const char *admission)
{
    w->job = target;
    w->next = target->waiters;
    target->waiters = w;
    pthread_mutex_unlock(&srv->coalesce_mu);
    job_free(own);
    atomic_fetch_add_explicit(counter, 1, memory_order_relaxed);
    srv__set_env(w->req, "TG_ADMISSION", admission);
    h2o_linklist_insert(&l->waiters, &w->link);
}

/* Handles a derived request; @p level_ms >= 0: it has waited that long for its original's
 * level already (it is not made to wait again, nor makes a level); -1: it has not. */
static void handle_derive(derive_t *srv, h2o_req_t *req, route_t *rt, int64_t level_ms)
{
    bool waited = level_ms >= 0;
    if (waited) /* the wait for the level is this request's, whatever answers it */
        srv__set_env(req, "TG_WAIT_MS", "%" PRId64, level_ms);
    const cfg_t *cfg = srv->cfg;
    if (rt->preset[0] != '\0') {
        int pe = preset_job(cfg, rt->preset, &rt->job, rt->variant, sizeof(rt->variant));
        if (pe != 0) {
            srv__send_err(req, ERR_REQ, pe,
                          pe == ERR_REQ_UNKNOWN_PRESET
                              ? "no preset is named %s"
                              : "preset %s asks for a format this build cannot encode",
                          rt->preset);
            return;
        }
    } else if (cfg->presets_only) {
        srv__send_err(req, ERR_REQ, ERR_REQ_PRESETS_ONLY,
                      "this server serves only presets (/<key>@<preset>): limits.presets_only");
        return;
    } else if (!size_allowed(cfg, rt)) {
        srv__send_err(req, ERR_REQ, ERR_REQ_SIZE_NOT_ALLOWED, "this size is not in limits.sizes");
        return;
    }
    if (rt->auto_fmt) {
        /* the answer depends on Accept: caches must key on it (said once per response) */
        if (!waited)
            srv__add_header(req, "vary", "Accept");
        rt->job.out_fmt = negotiate(req);
    }
    derive_job_t *job = calloc(1, sizeof(*job));
    waiter_t *w = calloc(1, sizeof(*w));
    if (job == NULL || w == NULL) {
        free(job);
        refuse(req, NULL, w, ERR_REQ, ERR_REQ_BUSY, "out of memory");
        return;
    }
    job->src_fd = -1;
    uint64_t epoch = store_epoch(srv->store); /* before the lookup: a change since is seen */
    if (store_find_source(srv->store, rt->stem, job->src, sizeof(job->src), &job->src_st) != 0) {
        refuse(req, job, w, ERR_REQ, ERR_REQ_NOT_FOUND,
               "no original stored for this derived image");
        return;
    }
    if (rt->auto_fmt) {
        if (rt->job.out_fmt == IMGPROC_FMT_UNKNOWN) {
            /* neither AVIF nor WebP: PNG keeps the source's alpha, else JPEG (a header read) */
            imgproc_probe_t ap;
            imgproc_err_t aerr = {0};
            bool alpha = imgproc_probe_file(job->src, &ap, &aerr) == 0 && ap.has_alpha;
            rt->job.out_fmt = alpha ? IMGPROC_FMT_PNG : IMGPROC_FMT_JPEG;
        }
        /* cached per chosen format: the same result as the URL with that extension */
        if (route_variant(&rt->job, rt->variant, sizeof(rt->variant)) != 0) {
            refuse(req, job, w, ERR_REQ, ERR_REQ_NO_FORMAT, "no output format");
            return;
        }
    }
    store_cache_path(srv->store, rt->stem, &job->src_st, rt->variant, job->cache_path,
                     sizeof(job->cache_path));
    struct stat sb;
    if (waited) { /* a hit after the wait says how long it was; a miss: the job's timing */
        char st[40];
        snprintf(st, sizeof(st), "level;dur=%" PRId64, level_ms);
        srv__add_header(req, "server-timing", st);
    }
    if (srv__serve_result(req, job->cache_path, rt->job.out_fmt, &sb)) {
        /* an .auto URL's file depends on Accept: never remembered by URL alone */
        if (!rt->auto_fmt)
            hit_remember(srv, req, job->cache_path, rt->job.out_fmt, epoch);
        store_cache_touch(job->cache_path, &sb);
        if (!waited) /* a request handled again was counted as a miss */
            atomic_fetch_add_explicit(&srv->metrics->cache_hits, 1, memory_order_relaxed);
        srv__set_env(req, "TG_ADMISSION", "cache-hit");
        job_free(job), free(w);
        return;
    }
    if (waited) { /* the job's timing says it, with its queue and work */
        ssize_t h = h2o_find_header_by_str(&req->res.headers, H2O_STRLIT("server-timing"), -1);
        if (h >= 0)
            h2o_delete_header(&req->res.headers, h);
    }
    if (!waited) /* counted once per request */
        atomic_fetch_add_explicit(&srv->metrics->cache_misses, 1, memory_order_relaxed);

    /* the source is opened once: probed here, decoded from the same descriptor later */
    if ((job->src_fd = open(job->src, O_RDONLY | O_CLOEXEC)) < 0 ||
        fstat(job->src_fd, &job->src_st) != 0) {
        refuse(req, job, w, ERR_REQ, ERR_REQ_NOT_FOUND,
               "no original stored for this derived image");
        return;
    }
    /* the original may have been replaced since the cache lookup: name its own results */
    store_cache_path(srv->store, rt->stem, &job->src_st, rt->variant, job->cache_path,
                     sizeof(job->cache_path));
    /* header only, bounded read: the decision is made before any pixel is decoded */
    imgproc_probe_t probe;
    imgproc_err_t ierr = {0};
    int r = imgproc_probe_fd(job->src_fd, &probe, &ierr);
    if (r != 0) {
        refuse(req, job, w, ERR_IMGPROC, IMGPROC_E_CORRUPT,
               "the stored original cannot be read: %s", ierr.msg);
        return;
    }
    if ((uint64_t)probe.width * probe.height > cfg->max_pixels) {
        atomic_fetch_add_explicit(&srv->metrics->rejected_pixels, 1, memory_order_relaxed);
        srv__set_env(req, "TG_ADMISSION", "rejected-pixels");
        {
            refuse(req, job, w, ERR_REQ, ERR_REQ_TOO_MANY_PIXELS,
                   "the original has %" PRIu32 "x%" PRIu32 " pixels, over limits.max_pixels",
                   probe.width, probe.height);
            return;
        }
    }
    job->ij = rt->job;
    snprintf(job->what, sizeof(job->what), "%s %s", rt->stem, rt->variant);
    job->ij.naive = cfg->memory_mode == CFG_MODE_NAIVE;
    job->ij.timeout_ms = (uint32_t)cfg->job_timeout_ms;
    job->ij.max_pixels = cfg->max_pixels;
    /* the estimate depends on it: a preset's own quality, else the process-wide one */
    job->ij.webp_quality = rt->job.quality ? rt->job.quality : srv->imgopts->webp_quality;
    job->ij.avif_effort = srv->imgopts->avif_effort; /* the deadline check too */
    job->ij.max_frames = cfg->max_frames;
    int pr = imgproc_plan_check(&probe, &job->ij, &ierr);
    if (pr == -IMGPROC_E_TOO_LARGE && rt->auto_fmt && job->ij.out_fmt == IMGPROC_FMT_AVIF) {
        /* .auto asked for AVIF, whose encode could not finish within the job deadline:
         * WebP is the next choice the client accepts (checked below like any WebP) */
        auto_switch(srv, rt, job, IMGPROC_FMT_WEBP);
        pr = imgproc_plan_check(&probe, &job->ij, &ierr);
    }
    if (pr != 0) {
        bool big = pr == -IMGPROC_E_TOO_LARGE;
        refuse(req, job, w, big ? ERR_IMGPROC : ERR_ROUTE,
               big ? IMGPROC_E_TOO_LARGE : ROUTE_E_BADSIZE, "%s", ierr.msg);
        return;
    }
    uint32_t ow, oh;
    imgproc_output_dims(&probe, &job->ij, &ow, &oh);
    if (rt->auto_fmt && job->ij.out_fmt == IMGPROC_FMT_WEBP &&
        (ow > IMGPROC_WEBP_MAX_DIM || oh > IMGPROC_WEBP_MAX_DIM)) {
        /* .auto picks a format that can hold the output: over WebP's sides, PNG or JPEG */
        auto_switch(srv, rt, job, probe.has_alpha ? IMGPROC_FMT_PNG : IMGPROC_FMT_JPEG);
    }
    if (ow > cfg->max_output_width || oh > cfg->max_output_height) {
        refuse(req, job, w, ERR_REQ, ERR_REQ_OUTPUT_TOO_LARGE,
               "the output would be %" PRIu32 "x%" PRIu32 ", over limits.max_output", ow, oh);
        return;
    }
    if (job->ij.out_fmt == IMGPROC_FMT_WEBP &&
        (ow > IMGPROC_WEBP_MAX_DIM || oh > IMGPROC_WEBP_MAX_DIM)) {
        refuse(req, job, w, ERR_REQ, ERR_REQ_OUTPUT_TOO_LARGE,
               "the output would be %" PRIu32 "x%" PRIu32 ", over WebP's %u pixels a side", ow, oh,
               IMGPROC_WEBP_MAX_DIM);
        return;
    }
    job->srv = srv;
    job->opts = srv->imgopts;
    imgproc_probe_t orig = probe;
    level_t lv;
    from_level(srv, rt->stem, job, &probe, &lv); /* may switch the source to the level */
    /* (jobmeter_scaled: a test-only knob that makes estimates too low; identity otherwise) */
    job->super.estimate = jobmeter_scaled(srv->metrics->meter, imgproc_estimate(&probe, &job->ij));
    job->super.run = job_run;
    job->super.on_expire = job_expire;
    srv__set_env(req, "TG_ESTIMATE", "%" PRIu64, job->super.estimate);

    struct derive_loop *l = loop_of(srv, req);
    w->loop = l;
    w->req = req;
    w->fd = srv__req_fd(req);
    w->joined_ms = adm_now_ms();
    w->level_ms = level_ms;
    snprintf(w->result, sizeof(w->result), "%s", job->cache_path);

    pthread_mutex_lock(&srv->coalesce_mu);
    derive_job_t *same = map_find(srv, job->cache_path);
    if (same == NULL && access(job->cache_path, F_OK) == 0) {
        /* an identical job finished between our cache miss and now: serve its result */
        pthread_mutex_unlock(&srv->coalesce_mu);
        if (!waited)
            atomic_fetch_add_explicit(&srv->metrics->cache_hits, 1, memory_order_relaxed);
        srv__set_env(req, "TG_ADMISSION", "cache-hit");
        if (!srv__serve_result(req, job->cache_path, rt->job.out_fmt, NULL))
            srv__send_err(req, ERR_REQ, ERR_REQ_RESULT_EVICTED,
                          "the result was replaced before it could be sent; retry");
        job_free(job), free(w);
        return;
    }
    if (same != NULL) {
        /* an identical job is waiting or running: share its result */
        join_job(srv, l, w, same, job, &srv->metrics->coalesced, "coalesced");
        return;
    }
    /* The original's level is not made yet. It is made once a second size of the original
     * is asked for (a result on disk, or a miss of another URL submitted before: the same
     * URL asked again is not another size), and every request it will serve waits for it
     * meanwhile, so that none of them decodes the original: they are handled again when it
     * is made (on_derive_messages). A level that failed is not tried again. */
    bool want_level = false;
    struct level_mark *m = lv.missing && !waited ? level_mark(srv, lv.path) : NULL;
    if (m != NULL && !m->failed) {
        uint64_t first = (uint64_t)fnv1a(job->cache_path, strlen(job->cache_path)) | 1;
        if (m->first == 0)
            m->first = first;
        derive_job_t *lvl = map_find(srv, lv.path);
        bool second = m->first != first || lv.seen;
        bool make = lvl == NULL && second;
        if (!lv.would_serve) {
            want_level = make; /* made after this request's own job */
            if (lvl != NULL && second)
                lvl->for_waiters = false; /* now wanted by a size it does not serve */
        } else {
            if (make && (lvl = make_level(srv, rt->stem, job, &orig, &lv)) != NULL)
                lvl->for_waiters = true;
            if (lvl != NULL) {
                w->rt = rt;
                w->redo = true;
                join_job(srv, l, w, lvl, job, &srv->metrics->mezz_waited, "level-wait");
                return;
            }
        }
    }
    job->submitted_ms = w->joined_ms;
    job->waiters = w;
    w->job = job;
    size_t b = hash_path(job->cache_path);
    job->map_next = srv->jobs[b];
    srv->jobs[b] = job;
    bool queued = false;
    r = adm_submit(srv->gate, &job->super, job->submitted_ms, &queued);
    if (r != 0) {
        map_remove(srv, job);
        pthread_mutex_unlock(&srv->coalesce_mu);
        srv__set_env(req, "TG_ADMISSION",
                     r == -ADM_E_TOO_BIG ? "rejected-too-big" : "rejected-queue-full");
        {
            refuse(req, job, w, ERR_ADM, r, "%s", adm_strerror(r));
            return;
        }
    }
    if (want_level)
        make_level(srv, rt->stem, job, &orig, &lv);
    pthread_mutex_unlock(&srv->coalesce_mu);
    srv__set_env(req, "TG_ADMISSION", queued ? "queued" : "admitted");
    h2o_linklist_insert(&l->waiters, &w->link);
}

/* lets go of the hot results whose URL is forgotten (expired, or the store changed) */
static void drop_cold(struct derive_loop *l)
{
    uint64_t now = adm_now_ms(), epoch = store_epoch(l->srv->store);
    for (size_t i = 0; i < HIT_SLOTS; i++) {
        struct hit *h = &l->hits[i];
        if (h->hot != NULL && (h->epoch != epoch || now > h->until_ms)) {
            srv__hot_release(h->hot);
            h->hot = NULL;
        }
    }
}

static void on_tick(h2o_timeout_entry_t *entry)
{
    struct derive_loop *l = H2O_STRUCT_FROM_MEMBER(struct derive_loop, tick, entry);
    drop_gone(l);
    drop_cold(l);
    h2o_timeout_link(l->loop, &l->tick_timeout, &l->tick);
}

/* The first room a request meets: a GET/HEAD of a remembered URL is answered here. */
typedef struct {
    h2o_handler_t super;
    derive_t *srv; /* set when the derive room registers */
} hits_t;

static int on_hit_req(h2o_handler_t *_self, h2o_req_t *req)
{
    derive_t *srv = ((hits_t *)_self)->srv;
    if (!h2o_memis(req->method.base, req->method.len, H2O_STRLIT("GET")) &&
        !h2o_memis(req->method.base, req->method.len, H2O_STRLIT("HEAD")))
        return -1;
    struct derive_loop *l = loop_of(srv, req);
    uint64_t epoch = store_epoch(srv->store);
    size_t n;
    struct hit *h = hit_slot(l, req, &n);
    if (h->url == NULL || h->urllen != n || memcmp(h->url, req->path.base, n) != 0 ||
        h->epoch != epoch || adm_now_ms() > h->until_ms)
        return -1;
    /* a remembered URL is still signed for: without the right ?sig= the derive room refuses */
    const char *msg;
    if (auth_url_check(srv->cfg->url_secret, req, &msg) != 0)
        return -1;
    if (h->hot != NULL && srv__serve_hot(req, h->hot)) {
        /* its file's atime (eviction order) is refreshed when the URL is remembered again */
        atomic_fetch_add_explicit(&srv->metrics->hot_hits, 1, memory_order_relaxed);
    } else {
        struct stat sb;
        if (!srv__serve_result(req, h->file, h->fmt, &sb))
            return -1; /* evicted, or removed by another instance */
        store_cache_touch(h->file, &sb);
        if (!h->hot_tried) {
            h->hot_tried = true;
            h->hot = srv__hot_read(req, h->file, h->fmt, srv->cfg->hot_results);
        }
    }
    srv__set_env(req, "TG_ROUTE", "derived"); /* read by the access log, after the response */
    atomic_fetch_add_explicit(&srv->metrics->cache_hits, 1, memory_order_relaxed);
    srv__set_env(req, "TG_ADMISSION", "cache-hit");
    return 0;
}

static int on_req(h2o_handler_t *_self, h2o_req_t *req)
{
    derive_t *srv = (void *)_self;
    route_t *rt = h2o_mem_alloc_pool(&req->pool, sizeof(*rt));
    if (route_parse_key(req->path.base, req->path.len, rt) != 0)
        return -1; /* the router answers bad keys before any room sees them */
    int r = route_parse_derived(rt);
    if (r != -ROUTE_E_BADSIZE && !rt->derived)
        return -1;
    srv__set_env(req, "TG_ROUTE", "derived");
    /* signed URLs: checked first, so that an unsigned request learns nothing else */
    const char *msg;
    if (auth_url_check(srv->cfg->url_secret, req, &msg) != 0) {
        srv__send_err(req, ERR_AUTH, ERR_AUTH_BAD_SIG, "%s", msg);
        return 0;
    }
    if (r == -ROUTE_E_BADSIZE) {
        srv__send_err(req, ERR_ROUTE, ROUTE_E_BADSIZE,
                      "sizes are 1..%u pixels, without leading zeros; pixel ratios @1x..@%ux",
                      ROUTE_DIM_MAX, ROUTE_DPR_MAX);
        return 0;
    }
    handle_derive(srv, req, rt, -1);
    return 0;
}

static void on_context_init(h2o_handler_t *_self, h2o_context_t *ctx)
{
    struct derive_loop *l = calloc(1, sizeof(*l));
    if (l == NULL)
        h2o_fatal("no memory for a loop's derive room");
    l->srv = (void *)_self;
    l->loop = ctx->loop;
    h2o_linklist_init_anchor(&l->waiters);
    h2o_multithread_register_receiver(ctx->queue, &l->rx, on_derive_messages);
    h2o_timeout_init(ctx->loop, &l->tick_timeout, 100);
    l->tick.cb = on_tick;
    h2o_timeout_link(ctx->loop, &l->tick_timeout, &l->tick);
    h2o_context_set_handler_context(ctx, _self, l);
}

static void do_register(h2o_pathconf_t *pathconf, const room_services_t *s)
{
    derive_t *srv = (void *)h2o_create_handler(pathconf, sizeof(*srv));
    srv->super.on_context_init = on_context_init;
    srv->super.on_req = on_req;
    srv->cfg = s->cfg;
    srv->store = s->store;
    srv->gate = s->gate;
    srv->metrics = s->metrics;
    srv->imgopts = s->imgopts;
    srv->level_opts = *s->imgopts;
    srv->level_opts.jpeg_quality = s->cfg->mezz_quality;
    srv->level_opts.jpeg_420 = true; /* mezz.h: the levels' chroma */
    srv->small_opts = srv->level_opts;
    srv->small_opts.jpeg_quality = s->cfg->mezz_quality + MEZZ_SMALL_QUALITY_UP > 100
                                       ? 100
                                       : s->cfg->mezz_quality + MEZZ_SMALL_QUALITY_UP;
    srv->flight = s->flight;
    pthread_mutex_init(&srv->coalesce_mu, NULL);
    /* a preset whose format this build cannot encode answers 400 format_unavailable: say so
     * at start rather than at the first request */
    for (uint32_t i = 0; i < s->cfg->npresets && s->cfg->log_level >= CFG_LOG_WARN; i++) {
        const cfg_preset_t *p = &s->cfg->presets[i];
        if (imgproc_fmt_from_ext(p->format, strlen(p->format)) != IMGPROC_FMT_UNKNOWN)
            continue;
        char line[300];
        json_t j;
        json_begin(&j, line, sizeof(line));
        json_str(&j, "log", "warning");
        json_str(&j, "preset", p->name);
        json_str(&j, "format", p->format);
        json_str(&j, "message", "this build cannot encode the preset's format: its URLs get 400");
        fwrite(line, 1, json_end(&j), stderr);
    }
    for (size_t i = 0; i < pathconf->handlers.size; i++)
        if (pathconf->handlers.entries[i]->on_req == on_hit_req)
            ((hits_t *)pathconf->handlers.entries[i])->srv = srv;
}

static void do_register_hits(h2o_pathconf_t *pathconf, const room_services_t *s)
{
    h2o_create_handler(pathconf, sizeof(hits_t))->on_req = on_hit_req;
}

const room_t derive_hits_room = {.register_ = do_register_hits};
const room_t derive_room = {.register_ = do_register};
