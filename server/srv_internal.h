/* INTERNAL to server/ (nothing outside server/ includes it): the process context srv_t
 * and the per-loop srv_thread_t that the rooms share, and the entry points of the rooms
 * that have no public header of their own:
 *   lifecycle  srv.c        start, loops, drain, stop (public: srv.h)
 *   router     router.c     request -> room (router.h)
 *   responses  http.c       JSON errors (via errors.c), files, access log, h2o error filter
 *   originals  originals.c  PUT / DELETE / GET of stored keys
 *   derived    derive.c     derived URLs: cache, probe, admission, coalescing, jobs
 *   admin      admin.c      /metrics /healthz /readyz /debug/flight
 * Rooms with their own public header: conns.h, iopool.h, sysfacts.h, errors.h, json.h,
 * store.h, adm.h, route.h, metrics.h, flight.h. */
#ifndef THUMBGATE_SRV_INTERNAL_H
#define THUMBGATE_SRV_INTERNAL_H

#include <h2o.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>

#include "config/cfg.h"
#include "imgproc/imgproc.h"
#include "server/adm.h"
#include "server/connguard.h"
#include "server/errors.h"
#include "server/memplan.h"
#include "server/metrics.h"
#include "server/route.h"
#include "server/store.h"

typedef struct srv srv_t;
typedef struct srv_thread srv_thread_t;

/** One event loop thread: its h2o context, listener and message receivers. */
struct srv_thread {
    srv_t *srv;
    unsigned idx;
    pthread_t tid;
    h2o_evloop_t *loop;
    h2o_context_t ctx;
    h2o_accept_ctx_t accept_ctx;
    struct conns *conns; /**< listener, accept limit, watchdog (conns.c) */
    /* admin listener: only on thread 0, with its own globalconf/context */
    h2o_context_t admin_ctx;
    h2o_accept_ctx_t admin_accept_ctx;
    h2o_socket_t *admin_listener;
    h2o_multithread_receiver_t io_rx; /**< completions of io tasks for this loop (iopool.c) */
    h2o_multithread_receiver_t
        derive_rx;                     /**< completions of derive jobs for this loop (derive.c) */
    h2o_multithread_receiver_t ctl_rx; /**< shutdown requests */
    h2o_timeout_t tick_timeout;
    h2o_timeout_entry_t tick; /**< 100 ms housekeeping: gone clients, queue expiry */
    h2o_linklist_t waiters;   /**< derive waiters owned by this loop */
    uint64_t inflight;        /**< requests handled and not yet disposed (this loop) */
    uint64_t last_watch_ms;
    bool draining;
    bool ready; /**< set up by its own thread (under srv->setup_mu) */
};

/** Process-wide server state. Created in srv_run, read-mostly. */
struct srv {
    const cfg_t *cfg;
    h2o_globalconf_t globalconf;
    h2o_globalconf_t admin_globalconf;
    h2o_hostconf_t *hostconf, *admin_hostconf;
    unsigned nthreads;
    srv_thread_t *threads;
    store_t *store;
    adm_gate_t *gate;
    metrics_t metrics;
    imgproc_opts_t imgopts;
    int listen_fd, admin_fd;
    struct sockaddr_storage listen_addr;
    atomic_bool shutting_down;
    atomic_int loops_done;
    pthread_mutex_t setup_mu; /**< loops report their own set-up to srv_run */
    pthread_cond_t setup_cv;
    unsigned setup_reported;
    bool setup_failed;
    _Atomic uint64_t job_gen; /**< jobs started so far (peak measurement, derive.c) */
    uint64_t started_at_ms;
    uint64_t shutdown_deadline_ms;
    pthread_mutex_t coalesce_mu;
    struct srv_jobmap
        *jobs; /**< in-flight derive jobs by cache path (coalescing); under coalesce_mu */
    struct flight *flight;
    memplan_t plan;          /**< the memory plan worked out at start (memplan.h) */
    struct connguard *guard; /**< connection and request-body bounds (connguard.h) */
};

/* --- srv.c --- */
srv_thread_t *srv__thread_of(h2o_req_t *req);
uint64_t srv__now_ms(void);
/** Counts a request as in flight until its pool is cleared (drain on shutdown). */
void srv__track_request(h2o_req_t *req);

/* --- http.c --- */
/** Sends the JSON error {"error","message"} of module error @p err of @p domain: status and
 *  code come from errors_http() (the one table); a 503 carries Retry-After. */
void srv__send_err(h2o_req_t *req, err_domain_t domain, int err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/** Sends a JSON body with @p status (borrows @p json; copied into the pool). */
void srv__send_json(h2o_req_t *req, int status, const char *json, size_t len);
/** GET/HEAD of a stored file (original or cached derived) with ETag, Last-Modified, 304,
 *  Range/206/416 and HEAD; a whole GET goes through h2o_file_send and the loop's filecache.
 *  false when not found. @p sb (optional) receives the file's stat when it is served. */
bool srv__serve_path(srv_t *srv, h2o_req_t *req, const char *path, struct stat *sb);
/** Registers the JSON-error filter and access logger on @p pathconf. */
void srv__register_http_filters(srv_t *srv, h2o_pathconf_t *pathconf);
/** True when the peer of @p req has closed or reset its connection (safe from any thread). */
bool srv__client_gone_fd(int fd);
int srv__req_fd(h2o_req_t *req);
/** Sets a per-request value the access logger reads (TG_ROUTE, TG_ADMISSION, TG_WAIT_MS,
 *  TG_ESTIMATE, TG_ERROR); @p name must be static, the value is copied into the pool. */
void srv__set_env(h2o_req_t *req, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/** Adds a Server-Timing / diagnostic header (name must be static). */
void srv__add_header(h2o_req_t *req, const char *name, const char *value);

/* --- originals.c --- */
void srv__handle_put(srv_t *srv, h2o_req_t *req, const char *key, size_t keylen);
void srv__handle_delete(srv_t *srv, h2o_req_t *req, const char *key, size_t keylen);

/* --- derive.c --- */
void srv__handle_derive(srv_t *srv, h2o_req_t *req, const route_t *rt);
void srv__derive_tick(srv_thread_t *th);
/** Sets up the loop's waiter list and the receiver of derive completions. */
void srv__derive_init_loop(srv_thread_t *th);

/* --- admin.c --- */
void srv__admin_register(srv_t *srv);

#endif
