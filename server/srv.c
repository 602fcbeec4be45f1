/* srv — the lifecycle: process set-up (store, plan, gate, connection guard, flight
 * recorder), h2o configuration, one event loop per thread with its own SO_REUSEPORT
 * listener, the io pool, the signal thread, graceful drain and stop. It knows no handler:
 * the rooms come from router_register with the services made here (room.h). */
#include "server/srv.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "server/connguard.h"
#include "server/conns.h"
#include "server/flight.h"
#include "server/http.h"
#include "server/iopool.h"
#include "server/json.h"
#include "server/room.h"
#include "server/s3.h"
#include "server/s3store.h"
#include "server/router.h"
#include "server/sysfacts.h"
#include "server/jobmeter.h"
#include "server/heap.h"

#define IO_THREADS 2       /* uploads are fsynced here: more would only queue on the disk */
#define TRIM_EVERY_MS 1000 /* jobmeter: at most one heap trim a second (jobmeter.h) */

typedef struct srv srv_t;

/** One event loop thread: its h2o context, listener and control receiver. */
typedef struct srv_thread {
    srv_t *srv;
    unsigned idx;
    pthread_t tid;
    h2o_evloop_t *loop;
    h2o_context_t ctx;
    h2o_accept_ctx_t accept_ctx;
    struct conns *conns; /**< listener, accept limit (conns.c) */
    /* admin listener: only on thread 0, with its own globalconf/context */
    h2o_context_t admin_ctx;
    h2o_accept_ctx_t admin_accept_ctx;
    h2o_socket_t *admin_listener;
    h2o_multithread_receiver_t ctl_rx; /**< shutdown requests */
    h2o_timeout_t tick_timeout;
    h2o_timeout_entry_t tick;  /**< every 100 ms: wakes a draining loop; on loop 0 also store
                                    upkeep (every 500 ms) and the flight recorder */
    uint64_t inflight;         /**< requests handled and not yet disposed (this loop) */
    uint64_t last_maintain_ms; /**< loop 0: the last store_maintain */
    bool draining;
    bool ready; /**< set up by its own thread (under srv->setup_mu) */
} srv_thread_t;

/** The process: what the lifecycle made at start, and the loops. */
struct srv {
    const cfg_t *cfg;
    h2o_globalconf_t globalconf;
    h2o_globalconf_t admin_globalconf;
    h2o_hostconf_t *hostconf, *admin_hostconf;
    unsigned nthreads;
    srv_thread_t *threads;
    store_t *store;
    s3_t *s3;           /**< storage.backend s3: the bucket client; NULL when local */
    s3store_t *s3store; /**< and the store's remote half */
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
    uint64_t started_at_ms;
    uint64_t shutdown_deadline_ms;
    struct flight *flight;
    memplan_t plan;          /**< the memory plan worked out at start (memplan.h) */
    struct connguard *guard; /**< connection and request-body bounds (connguard.h) */
};

void srv_block_signals(sigset_t *set)
{
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    if (set != NULL)
        *set = sigs;
}

/* --- requests in flight (the drain waits for them) ------------------------------------ */

struct req_track {
    srv_thread_t *th;
};

static void on_req_disposed(void *p)
{
    struct req_track *t = p;
    t->th->inflight--;
}

/* The first handler of the public API: counts the request as in flight until its pool is
 * cleared, then passes it on to the router. */
static int on_track_request(h2o_handler_t *self, h2o_req_t *req)
{
    struct req_track *t = h2o_mem_alloc_shared(&req->pool, sizeof(*t), on_req_disposed);
    t->th = H2O_STRUCT_FROM_MEMBER(srv_thread_t, ctx, req->conn->ctx);
    t->th->inflight++;
    return -1;
}

/* --- loops and shutdown ------------------------------------------------------------------ */

static bool loop_is_drained(srv_thread_t *th)
{
    return th->inflight == 0 && conns_all_idle(th->conns);
}

static void begin_drain(srv_thread_t *th)
{
    if (th->draining)
        return;
    th->draining = true;
    conns_stop_listening(th->conns);
    h2o_context_request_shutdown(&th->ctx);
}

static void on_ctl_messages(h2o_multithread_receiver_t *rx, h2o_linklist_t *messages)
{
    srv_thread_t *th = H2O_STRUCT_FROM_MEMBER(srv_thread_t, ctl_rx, rx);
    while (!h2o_linklist_is_empty(messages)) {
        h2o_multithread_message_t *msg =
            H2O_STRUCT_FROM_MEMBER(h2o_multithread_message_t, link, messages->next);
        h2o_linklist_unlink(&msg->link);
        free(msg);
    }
    begin_drain(th);
}

static void on_tick(h2o_timeout_entry_t *entry)
{
    srv_thread_t *th = H2O_STRUCT_FROM_MEMBER(srv_thread_t, tick, entry);
    if (th->idx == 0) {
        uint64_t now = adm_now_ms();
        if (now - th->last_maintain_ms >= 500) {
            th->last_maintain_ms = now;
            store_maintain(th->srv->store);
        }
        flight_tick(th->srv->flight, adm_now_ms());
    }
    /* every loop re-arms it: a draining loop relies on it to wake up */
    h2o_timeout_link(th->loop, &th->tick_timeout, &th->tick);
}

static int setup_thread(srv_t *srv, srv_thread_t *th, unsigned idx);

/* Each loop thread creates its own loop, context and sockets: h2o keeps per-thread
 * state (the socket buffer prototype and its recycle allocator are __thread), so objects
 * made on the main thread for another loop would share the main thread's allocator
 * between loops, unlocked — heap corruption under load (found by loadtest request-churn). */
static void *loop_main(void *arg)
{
    srv_thread_t *th = arg;
    srv_t *srv = th->srv;
    int rc = setup_thread(srv, th, th->idx);
    pthread_mutex_lock(&srv->setup_mu);
    srv->setup_reported++;
    if (rc != 0)
        srv->setup_failed = true;
    else
        th->ready = true;
    pthread_cond_broadcast(&srv->setup_cv);
    pthread_mutex_unlock(&srv->setup_mu);
    if (rc != 0) {
        atomic_fetch_add(&srv->loops_done, 1);
        return NULL;
    }
    uint64_t idle_since = adm_now_ms();
    /* loop 0 hosts the admin listener: it stays until the other loops have drained, so
     * /readyz keeps answering "draining" for as long as any request is in flight */
    while (!(th->draining && (loop_is_drained(th) || adm_now_ms() >= srv->shutdown_deadline_ms) &&
             (th->idx != 0 || (unsigned)atomic_load(&srv->loops_done) >= srv->nthreads - 1))) {
        h2o_evloop_run(th->loop, 1000);
        http_log_flush();
        connguard_scan(srv->guard, &th->ctx, th->idx);
        /* only results' descriptors outlive the iteration: a replaced file is never stale */
        http_filecache_sweep(&th->ctx, store_epoch(srv->store), adm_now_ms());
        /* give freed heap back to the OS once everything has been quiet for a while */
        if (th->idx == 0 && srv->cfg->malloc_trim_idle) {
            adm_stats_t as;
            adm_stats(srv->gate, &as);
            if (as.running != 0 || th->inflight != 0)
                idle_since = adm_now_ms();
            else if (idle_since != 0 && adm_now_ms() - idle_since > 2000) {
                imgproc_trim();
                idle_since = 0; /* once per quiet period */
            }
        }
    }
    http_log_flush();
    atomic_fetch_add(&srv->loops_done, 1);
    return NULL;
}

static int setup_thread(srv_t *srv, srv_thread_t *th, unsigned idx)
{
    th->loop = h2o_evloop_create();
    h2o_context_init(&th->ctx, th->loop, &srv->globalconf);
    th->accept_ctx.ctx = &th->ctx;
    th->accept_ctx.hosts = srv->globalconf.hosts;
    h2o_multithread_register_receiver(th->ctx.queue, &th->ctl_rx, on_ctl_messages);
    h2o_timeout_init(th->loop, &th->tick_timeout, 100);
    th->tick.cb = on_tick;
    h2o_timeout_link(th->loop, &th->tick_timeout, &th->tick);

    conns_conf_t cc = {.guard = srv->guard, .loop = idx};
    if ((th->conns = conns_create(&th->ctx, &th->accept_ctx, &cc)) == NULL)
        return -1;
    int fd = idx == 0 ? srv->listen_fd
                      : conns_open_listener(&srv->listen_addr, sizeof(srv->listen_addr));
    if (fd < 0)
        return -1;
    connguard_tune_listener(srv->guard, fd);
    conns_listen(th->conns, fd);
    if (idx == 0 && srv->admin_fd >= 0) {
        h2o_context_init(&th->admin_ctx, th->loop, &srv->admin_globalconf);
        th->admin_accept_ctx.ctx = &th->admin_ctx;
        th->admin_accept_ctx.hosts = srv->admin_globalconf.hosts;
        th->admin_listener = conns_listen_plain(th->loop, srv->admin_fd, &th->admin_accept_ctx);
    }
    return 0;
}

/* {"log":<what>,<key>:<v>[,"drain":<drain>]} on stderr */
static void log_event(const char *what, const char *key, int64_t v, const char *drain)
{
    char line[200];
    json_t j;
    json_begin(&j, line, sizeof(line));
    json_str(&j, "log", what);
    json_i64(&j, key, v);
    if (drain != NULL)
        json_str(&j, "drain", drain);
    fwrite(line, 1, json_end(&j), stderr);
}

/* The flight recorder's view of the server: read once per snapshot (flight.interval). */
static void flight_sample(void *ctx, flight_sample_t *out)
{
    srv_t *srv = ctx;
    metrics_proc_t pm;
    adm_stats_t as;
    metrics_proc_read(&pm);
    adm_stats(srv->gate, &as);
    *out = (flight_sample_t){.rss_anon = pm.rss_anon,
                             .rss_file = pm.rss_file,
                             .vm_hwm = pm.hwm,
                             .budget = as.budget,
                             .in_use = as.in_use,
                             .queued_bytes = as.queued_bytes,
                             .queue_len = as.queue_len,
                             .running = as.running,
                             .plan_total = srv->plan.total};
    connguard_stats_t g;
    connguard_stats(srv->guard, &g);
    out->conns = g.open;
    out->body_reserved = g.body_reserved;
    out->input_spill = g.input_spill;
}

int srv_run(const cfg_t *cfg)
{
    static srv_t S; /* the one process-wide server; main owns it */
    srv_t *srv = &S;
    char err[512];
    int ret = 1;
    srv->cfg = cfg;
    srv->started_at_ms = adm_now_ms();
    pthread_mutex_init(&srv->setup_mu, NULL);
    pthread_cond_init(&srv->setup_cv, NULL);
    srv->admin_fd = -1;

    /* signals go to the main thread's sigwait only: block them before any thread
     * (workers, io, loops) is created, so every thread inherits the mask */
    sigset_t sigs;
    srv_block_signals(&sigs);
    signal(SIGPIPE, SIG_IGN);

    if ((srv->store = store_create(cfg->storage_root, cfg->cache_max_bytes, err, sizeof(err))) ==
        NULL) {
        fprintf(stderr, "thumbgate: %s\n", err);
        return 1;
    }
    if (cfg->storage_backend == CFG_BACKEND_S3) { /* the local tree becomes the bucket's cache */
        if ((srv->s3 = s3_create(cfg, err, sizeof(err))) == NULL ||
            (srv->s3store = s3store_create(srv->store, srv->s3, cfg->s3_revalidate_ms,
                                           cfg->s3_cache_max)) == NULL) {
            fprintf(stderr, "thumbgate: %s\n", srv->s3 ? "out of memory" : err);
            goto out_store;
        }
        store_set_remote(srv->store, srv->s3store);
    }
    /* bodies above the spill threshold live in an unlinked file under storage.root/tmp
     * (mmap'd by h2o), not in anonymous memory */
    h2o_socket_buffer_mmap_settings.threshold = cfg->upload_spill_bytes;
    snprintf(h2o_socket_buffer_mmap_settings.fn_template,
             sizeof(h2o_socket_buffer_mmap_settings.fn_template), "%s",
             store_spill_template(srv->store));

    /* naive mode models the servers of the incidents for the load harness: no admission,
     * no plan, no connection guard (a plan that does not fit is only reported) */
    bool naive = cfg->memory_mode == CFG_MODE_NAIVE;
    if (srv_plan(cfg, &srv->plan, err, sizeof(err)) != 0) {
        fprintf(stderr, "thumbgate: %s\n", err);
        if (!naive)
            goto out_store;
    }
    uint64_t budget = srv->plan.budget;
    if (budget == 0) /* naive mode with a plan that did not fit */
        budget = cfg->memory_budget ? cfg->memory_budget
                                    : srv->plan.limit / 100 * cfg->memory_budget_percent;
    const char *bsrc = srv->plan.budget_auto ? srv->plan.limit_source : "memory.budget";
    unsigned workers = cfg->workers ? cfg->workers : sysfacts_ncores();
    connguard_config_t gc = {
        .max_connections = srv->plan.max_connections,
        .max_header_bytes = cfg->max_header_bytes,
        .max_body_inflight = srv->plan.max_body_inflight,
        .max_upload = cfg->max_upload,
        .socket_buffer = cfg->socket_buffer,
        .write_token = cfg->write_token,
        .spill_threshold = cfg->upload_spill_bytes,
        .idle_timeout_ms = cfg->idle_timeout_ms,
        .request_timeout_ms = cfg->req_timeout_ms,
        .timeouts = &srv->metrics.requests[METRICS_ROUTE_OTHER][metrics_status_slot(408)]};
    snprintf(gc.spill_dir, sizeof(gc.spill_dir), "%s", store_tmp_dir(srv->store));
    if (naive) {
        gc.max_connections = cfg->max_connections ? cfg->max_connections : 4096;
        gc.max_header_bytes = UINT64_MAX;
        gc.max_body_inflight = UINT64_MAX;
    }
    if ((srv->guard = connguard_create(&gc)) == NULL)
        goto out_store;
    adm_config_t ac = {.budget = budget,
                       .workers = workers,
                       .queue_max = cfg->queue_max,
                       .queue_max_bytes = cfg->queue_max_bytes ? cfg->queue_max_bytes : budget * 4,
                       .queue_timeout_ms = cfg->queue_timeout_ms,
                       .naive = cfg->memory_mode == CFG_MODE_NAIVE};
    if ((srv->gate = adm_create(&ac)) == NULL) {
        fprintf(stderr, "thumbgate: cannot start %u worker threads\n", workers);
        goto out_guard;
    }
    srv->imgopts =
        (imgproc_opts_t){.jpeg_quality = cfg->jpeg_quality,
                         .webp_quality = cfg->webp_quality,
                         .png_compression = cfg->png_compression,
                         .avif_quality = cfg->avif_quality,
                         .avif_effort = cfg->avif_effort,
                         .jxl_quality = cfg->jxl_quality,
                         .jxl_effort = cfg->jxl_effort,
                         .keep_icc = cfg->keep_icc};

    /* public API */
    h2o_config_init(&srv->globalconf);
    srv->globalconf.max_request_entity_size = cfg->max_upload;
    /* h2o's request timeout is one deadline for idle + head + body that closes without a
     * word; conns.c times each phase instead (idle, head, body progress -> 408) */
    srv->globalconf.http1.req_timeout = 24 * 3600 * 1000;
    srv->globalconf.http1.upgrade_to_http2 =
        0; /* h2c is off: TLS and HTTP/2 belong to the balancer */
    srv->globalconf.http2.idle_timeout = cfg->idle_timeout_ms;
    srv->globalconf.server_name = h2o_iovec_init(H2O_STRLIT("thumbgate"));
    srv->globalconf.filecache.capacity = 64; /* per loop: results kept up to 1 s (http.c) */
    srv->hostconf =
        h2o_config_register_host(&srv->globalconf, h2o_iovec_init(H2O_STRLIT("default")), 65535);

    socklen_t len;
    if (conns_parse_hostport(cfg->listen, &srv->listen_addr, &len) != 0 ||
        (!conns_port_is_zero(&srv->listen_addr) && conns_probe_free(&srv->listen_addr, len) != 0) ||
        (srv->listen_fd = conns_open_listener(&srv->listen_addr, len)) < 0) {
        fprintf(stderr, "thumbgate: cannot listen on %s: %s\n", cfg->listen, strerror(errno));
        goto out_gate;
    }
    if (!conns_is_loopback(&srv->listen_addr) && cfg->write_token[0] == '\0' &&
        cfg->log_level >= CFG_LOG_WARN) {
        /* writes without a token are trusted from loopback: behind a proxy on this host
         * every client is loopback, so anyone who reaches the proxy could write */
        char line[600];
        json_t j;
        json_begin(&j, line, sizeof(line));
        json_str(&j, "log", "warning");
        json_str(&j, "listen", cfg->listen);
        json_str(
            &j, "message",
            "listen is not loopback and auth.write_token is empty: PUT and DELETE are accepted "
            "from any loopback client, which behind a reverse proxy on this host is every client; "
            "set auth.write_token");
        fwrite(line, 1, json_end(&j), stderr);
    }
    struct sockaddr_storage admin_addr;
    if (cfg->admin_listen[0] != '\0' &&
        (conns_parse_hostport(cfg->admin_listen, &admin_addr, &len) != 0 ||
         (!conns_port_is_zero(&admin_addr) && conns_probe_free(&admin_addr, len) != 0) ||
         (srv->admin_fd = conns_open_listener(&admin_addr, len)) < 0)) {
        fprintf(stderr, "thumbgate: cannot listen on %s: %s\n", cfg->admin_listen, strerror(errno));
        goto out_listen;
    }
    flight_opts_t fo;
    flight_opts_init(&fo, cfg);
    fo.sample = flight_sample;
    fo.ctx = srv;
    srv->flight = flight_open(&fo, err, sizeof(err));
    if (srv->flight == NULL)
        fprintf(stderr, "thumbgate: flight recorder off: %s\n", err);
    else if (cfg->log_level >= CFG_LOG_WARN)
        flight_log_previous(srv->flight, stderr); /* the previous run was killed: say so */
    /* estimate against measured for every job (jobmeter.h); without it jobs are unmetered */
    srv->metrics.meter =
        jobmeter_create(&(jobmeter_opts_t){.period_ms = 5,
                                           .quiet_ms = 3000, /* read only without trim */
                                           .metrics = &srv->metrics,
                                           .trim = cfg->malloc_trim_idle ? imgproc_trim : NULL,
                                           .trim_every_ms = TRIM_EVERY_MS,
                                           .log = cfg->log_level >= CFG_LOG_WARN ? stderr : NULL});

    heap_ring_opts_t ho; /* periodic heap profiles, off unless heap_ring.interval is set */
    heap_ring_opts_init(&ho, cfg);
    if (heap_ring_start(&ho, err, sizeof(err)) != 0)
        fprintf(stderr, "thumbgate: heap profile ring off: %s\n", err);

    /* the rooms, with what they borrow (each copies what it keeps: this lives here only) */
    room_services_t services = {.cfg = cfg,
                                .store = srv->store,
                                .gate = srv->gate,
                                .metrics = &srv->metrics,
                                .imgopts = &srv->imgopts,
                                .flight = srv->flight,
                                .guard = srv->guard,
                                .plan = &srv->plan,
                                .draining = &srv->shutting_down,
                                .started_at_ms = srv->started_at_ms};
    h2o_pathconf_t *pathconf = h2o_config_register_path(srv->hostconf, "/", 0);
    h2o_create_handler(pathconf, sizeof(h2o_handler_t))->on_req = on_track_request;
    h2o_config_init(&srv->admin_globalconf);
    srv->admin_globalconf.http1.upgrade_to_http2 = 0;
    srv->admin_globalconf.max_request_entity_size = 4096;
    srv->admin_hostconf = h2o_config_register_host(&srv->admin_globalconf,
                                                   h2o_iovec_init(H2O_STRLIT("default")), 65535);
    router_register(pathconf, h2o_config_register_path(srv->admin_hostconf, "/", 0), &services);
    http_register(pathconf, &services);
    http_register(&srv->hostconf->fallback_path, &services);

    srv->nthreads = sysfacts_loops(cfg);
    srv->threads = calloc(srv->nthreads, sizeof(*srv->threads));
    /* with s3, each concurrent transfer has an io thread of its own (memplan counts them) */
    iopool_start(IO_THREADS + (srv->s3 ? cfg->s3_transfers : 0));
    unsigned started = 0;
    for (; started < srv->nthreads; started++) {
        srv->threads[started].srv = srv;
        srv->threads[started].idx = started;
        if (pthread_create(&srv->threads[started].tid, NULL, loop_main, &srv->threads[started]) !=
            0)
            break;
    }
    pthread_mutex_lock(&srv->setup_mu);
    while (srv->setup_reported < started)
        pthread_cond_wait(&srv->setup_cv, &srv->setup_mu);
    bool failed = srv->setup_failed || started < srv->nthreads;
    pthread_mutex_unlock(&srv->setup_mu);
    srv->nthreads = started;
    if (failed) {
        fprintf(stderr, "thumbgate: cannot start the event loops (threads or listeners): %s\n",
                strerror(errno));
        srv->shutdown_deadline_ms = adm_now_ms();
        for (unsigned i = 0; i < started; i++)
            if (srv->threads[i].ready) {
                h2o_multithread_message_t *m = calloc(1, sizeof(*m));
                h2o_multithread_send_message(&srv->threads[i].ctl_rx, m);
            }
        ret = 1;
        goto out_threads;
    }

    char a1[80], a2[80] = "off";
    conns_addr_str(&srv->listen_addr, a1, sizeof(a1));
    if (srv->admin_fd >= 0)
        conns_addr_str(&admin_addr, a2, sizeof(a2));
    if (cfg->log_level >= CFG_LOG_INFO) {
        char line[1600];
        json_t j;
        json_begin(&j, line, sizeof(line));
        json_str(&j, "log", "start");
        json_str(&j, "listen", a1);
        json_str(&j, "admin", a2);
        json_u64(&j, "threads", srv->nthreads);
        json_u64(&j, "workers", workers);
        json_u64(&j, "budget", budget);
        json_str(&j, "budget_source", bsrc);
        json_str(&j, "mode", ac.naive ? "naive" : "admit");
        json_str(&j, "storage", cfg->storage_root);
        json_i64(&j, "pid", (int64_t)getpid());
        fwrite(line, 1, json_end(&j), stderr);
        memplan_log(&srv->plan, stderr);
    }

    for (;;) {
        int sig = 0;
        sigwait(&sigs, &sig);
        if (sig == SIGHUP)
            continue; /* no reload: restart to change config (documented) */
        break;
    }
    if (cfg->log_level >= CFG_LOG_INFO)
        log_event("shutdown", "drain_ms", (int64_t)cfg->shutdown_timeout_ms, NULL);
    srv->shutdown_deadline_ms = adm_now_ms() + cfg->shutdown_timeout_ms;
    atomic_store(&srv->shutting_down, true);
    for (unsigned i = 0; i < srv->nthreads; i++) {
        h2o_multithread_message_t *m = calloc(1, sizeof(*m));
        h2o_multithread_send_message(&srv->threads[i].ctl_rx, m);
    }
    ret = 0;

out_threads:
    for (unsigned i = 0; i < srv->nthreads; i++)
        pthread_join(srv->threads[i].tid, NULL);
    iopool_stop();
    if (ret == 0 && adm_now_ms() >= srv->shutdown_deadline_ms) {
        /* the drain deadline passed with jobs still decoding: their clients were cut
         * off anyway, and waiting for the workers would overrun the deadline */
        if (cfg->log_level >= CFG_LOG_INFO)
            log_event("stopped", "exit", 0, "deadline");
        flight_mark_clean(srv->flight); /* a stop we chose, though jobs were cut off */
        fflush(NULL);
        _exit(0);
    }
    /* the loops are gone; jobs still running finish before the recorder they report to */
    adm_destroy(srv->gate);
    srv->gate = NULL;
    jobmeter_destroy(srv->metrics.meter);
    srv->metrics.meter = NULL;
    heap_ring_stop();
    flight_close(srv->flight);
    srv->flight = NULL;
    s3_destroy(srv->s3); /* first: its checker calls into s3store */
    s3store_destroy(srv->s3store);
    store_destroy(srv->store);
    if (cfg->log_level >= CFG_LOG_INFO)
        log_event("stopped", "exit", ret, NULL);
    /* h2o contexts and connections are left to process exit: tearing them down while
     * idle keep-alive sockets are still linked costs time and proves nothing */
    return ret;
out_listen:
    close(srv->listen_fd);
out_gate:
    adm_destroy(srv->gate);
out_guard:
    connguard_destroy(srv->guard);
out_store:
    s3_destroy(srv->s3); /* first: its checker calls into s3store */
    s3store_destroy(srv->s3store);
    store_destroy(srv->store);
    return ret;
}
