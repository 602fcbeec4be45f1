/* srv — process set-up and the event loops: h2o configuration, one loop per thread
 * with its own SO_REUSEPORT listener, a small io pool for disk-heavy work, the signal
 * thread, graceful drain, and the request router of the public API. */
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

#include "server/flight.h"
#include "server/srv_internal.h"

#define IO_THREADS 2

/* --- memory limit ------------------------------------------------------------------- */

static uint64_t read_u64_file(const char *path)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return 0;
    char buf[64] = "";
    uint64_t v = 0;
    if (fgets(buf, sizeof(buf), f) != NULL && strncmp(buf, "max", 3) != 0)
        v = strtoull(buf, NULL, 10);
    fclose(f);
    return v;
}

static uint64_t mem_total(void)
{
    FILE *f = fopen("/proc/meminfo", "r");
    char line[256];
    uint64_t kb = 0;
    while (f != NULL && fgets(line, sizeof(line), f) != NULL)
        if (sscanf(line, "MemTotal: %" SCNu64 " kB", &kb) == 1)
            break;
    if (f)
        fclose(f);
    return kb * 1024;
}

uint64_t srv_memory_limit(const char **source)
{
    uint64_t total = mem_total(), lim = 0;
    const char *src = "MemTotal";
    FILE *f = fopen("/proc/self/cgroup", "r");
    char line[1024], path[1400];
    while (f != NULL && fgets(line, sizeof(line), f) != NULL) {
        line[strcspn(line, "\n")] = '\0';
        char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (c2 == NULL)
            continue;
        *c2 = '\0';
        const char *ctrls = c1 + 1, *cg = c2 + 1;
        uint64_t v = 0;
        if (strcmp(line, "0") == 0 && *ctrls == '\0') {
            snprintf(path, sizeof(path), "/sys/fs/cgroup%s/memory.max", cg);
            if ((v = read_u64_file(path)) != 0)
                src = "cgroup v2 memory.max";
        } else if (strstr(ctrls, "memory") != NULL) {
            snprintf(path, sizeof(path), "/sys/fs/cgroup/memory%s/memory.limit_in_bytes", cg);
            if ((v = read_u64_file(path)) != 0)
                src = "cgroup v1 memory.limit_in_bytes";
        }
        if (v != 0 && v < total && (lim == 0 || v < lim))
            lim = v;
    }
    if (f)
        fclose(f);
    if (lim == 0)
        src = "MemTotal";
    if (source)
        *source = src;
    return lim ? lim : total;
}

uint64_t srv_auto_budget(uint32_t percent, const char **source)
{
    return srv_memory_limit(source) / 100 * percent;
}

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

/* --- small helpers ------------------------------------------------------------------- */

uint64_t srv__now_ms(void)
{
    return adm_now_ms();
}

srv_thread_t *srv__thread_of(h2o_req_t *req)
{
    return H2O_STRUCT_FROM_MEMBER(srv_thread_t, ctx, req->conn->ctx);
}

struct req_track {
    srv_thread_t *th;
};

static void on_req_disposed(void *p)
{
    struct req_track *t = p;
    t->th->inflight--;
}

void srv__track_request(h2o_req_t *req)
{
    struct req_track *t = h2o_mem_alloc_shared(&req->pool, sizeof(*t), on_req_disposed);
    t->th = srv__thread_of(req);
    t->th->inflight++;
}

/* --- io pool: disk-heavy work (fsync of uploads, deletes) off the event loops --------- */

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    srv_task_t *head, *tail;
    pthread_t threads[IO_THREADS];
    unsigned started;
    bool stop;
} io = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

static void *io_main(void *arg)
{
    pthread_mutex_lock(&io.mu);
    for (;;) {
        while (io.head == NULL && !io.stop)
            pthread_cond_wait(&io.cv, &io.mu);
        if (io.head == NULL)
            break;
        srv_task_t *t = io.head;
        io.head = t->_next;
        if (io.head == NULL)
            io.tail = NULL;
        pthread_mutex_unlock(&io.mu);
        t->run(t);
        if (t->th != NULL)
            h2o_multithread_send_message(&t->th->done_rx, &t->super);
        else
            free(t); /* detached: nobody waits for it */
        pthread_mutex_lock(&io.mu);
    }
    pthread_mutex_unlock(&io.mu);
    return NULL;
}

void srv__io_submit(srv_t *srv, srv_task_t *task)
{
    task->_next = NULL;
    pthread_mutex_lock(&io.mu);
    if (io.tail)
        io.tail->_next = task;
    else
        io.head = task;
    io.tail = task;
    pthread_cond_signal(&io.cv);
    pthread_mutex_unlock(&io.mu);
}

struct detached_task {
    srv_task_t super;
    srv_t *srv;
    void (*fn)(srv_t *srv);
};

static void run_detached(srv_task_t *t)
{
    struct detached_task *d = (void *)t;
    d->fn(d->srv);
}

void srv__io_submit_detached(srv_t *srv, void (*fn)(srv_t *srv))
{
    struct detached_task *d = calloc(1, sizeof(*d));
    if (d == NULL)
        return; /* best effort: the next job tries again */
    d->super.run = run_detached;
    d->srv = srv;
    d->fn = fn;
    srv__io_submit(srv, &d->super);
}

/* Messages on done_rx are io tasks or derive completions; the first byte of each tells. */
static void on_done_messages(h2o_multithread_receiver_t *rx, h2o_linklist_t *messages)
{
    srv_thread_t *th = H2O_STRUCT_FROM_MEMBER(srv_thread_t, done_rx, rx);
    while (!h2o_linklist_is_empty(messages)) {
        h2o_multithread_message_t *msg = H2O_STRUCT_FROM_MEMBER(h2o_multithread_message_t, link, messages->next);
        h2o_linklist_unlink(&msg->link);
        srv_task_t *task = (srv_task_t *)msg;
        if (task->run != NULL)
            task->done(task);
        else
            srv__derive_on_done(th, msg);
    }
}

/* --- routing ------------------------------------------------------------------------- */

struct api_handler {
    h2o_handler_t super;
    srv_t *srv;
};

static int on_api_req(h2o_handler_t *_self, h2o_req_t *req)
{
    srv_t *srv = ((struct api_handler *)_self)->srv;
    srv__track_request(req);
    route_t *rt = h2o_mem_alloc_pool(&req->pool, sizeof(*rt));
    bool get = h2o_memis(req->method.base, req->method.len, H2O_STRLIT("GET")) ||
               h2o_memis(req->method.base, req->method.len, H2O_STRLIT("HEAD"));
    bool put = h2o_memis(req->method.base, req->method.len, H2O_STRLIT("PUT"));
    bool del = h2o_memis(req->method.base, req->method.len, H2O_STRLIT("DELETE"));
    if (!get && !put && !del) {
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_ALLOW, NULL, H2O_STRLIT("GET, HEAD, PUT, DELETE"));
        srv__send_error(req, 405, "method_not_allowed", "method %.*s is not allowed; use GET, HEAD, PUT or DELETE",
                        (int)(req->method.len < 16 ? req->method.len : 16), req->method.base);
        return 0;
    }
    if (route_parse_key(req->path.base, req->path.len, rt) != 0) {
        srv__send_error(req, 400, "bad_key",
                        "keys are segments of [A-Za-z0-9._-] joined by '/', at most %d bytes, without '.' or '..' "
                        "segments",
                        ROUTE_KEY_MAX);
        return 0;
    }
    if (put) {
        srv__set_env(req, "TG_ROUTE", "put");
        srv__handle_put(srv, req, rt->key, rt->keylen);
        return 0;
    }
    if (del) {
        srv__set_env(req, "TG_ROUTE", "delete");
        srv__handle_delete(srv, req, rt->key, rt->keylen);
        return 0;
    }
    char path[STORE_PATH_MAX];
    store_orig_path(srv->store, rt->key, path, sizeof(path));
    srv__set_env(req, "TG_ROUTE", "original");
    if (srv__serve_path(srv, req, path, NULL)) /* an exact stored key always wins */
        return 0;
    int r = route_parse_derived(rt);
    if (r == -ROUTE_E_BADSIZE) {
        srv__set_env(req, "TG_ROUTE", "derived");
        srv__send_error(req, 400, "bad_size", "sizes are 1..%u pixels, without leading zeros", ROUTE_DIM_MAX);
        return 0;
    }
    if (rt->derived) {
        srv__set_env(req, "TG_ROUTE", "derived");
        srv__handle_derive(srv, req, rt);
        return 0;
    }
    srv__send_error(req, 404, "not_found", "no original stored under this key");
    return 0;
}

/* --- listeners, loops, shutdown -------------------------------------------------------- */

static int parse_hostport(const char *s, struct sockaddr_storage *ss, socklen_t *len)
{
    char host[128];
    const char *colon = strrchr(s, ':');
    if (colon == NULL || (size_t)(colon - s) >= sizeof(host))
        return -1;
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = '\0';
    char *h = host;
    if (h[0] == '[') { /* [::1]:8080 */
        h++;
        h[strcspn(h, "]")] = '\0';
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV}, *res;
    if (getaddrinfo(*h ? h : NULL, colon + 1, &hints, &res) != 0)
        return -1;
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    *len = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

/* SO_REUSEPORT would let a second thumbgate (or anything of the same user) share the
 * port silently and take half the traffic: bind once without it to prove the address
 * is free before the per-thread listeners join it. */
static int probe_free(const struct sockaddr_storage *ss, socklen_t len)
{
    int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0), ret = -1;
    if (fd < 0)
        return -1;
    int on = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on)); /* TIME_WAIT leftovers are fine */
    if (bind(fd, (const struct sockaddr *)ss, len) == 0)
        ret = 0;
    close(fd);
    return ret;
}

static bool port_is_zero(const struct sockaddr_storage *ss)
{
    return ss->ss_family == AF_INET6 ? ((const struct sockaddr_in6 *)ss)->sin6_port == 0
                                     : ((const struct sockaddr_in *)ss)->sin_port == 0;
}

static int open_listener(struct sockaddr_storage *ss, socklen_t len)
{
    int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -1;
    int on = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof(on));
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
    if (bind(fd, (struct sockaddr *)ss, len) != 0 || listen(fd, 1024) != 0) {
        close(fd);
        return -1;
    }
    /* port 0: the first bind picks the port, the other threads join it */
    socklen_t l = len;
    getsockname(fd, (struct sockaddr *)ss, &l);
    return fd;
}

static size_t count_conns(h2o_context_t *ctx)
{
    size_t n = 0;
    for (h2o_linklist_t *p = ctx->http1._conns.next; p != &ctx->http1._conns; p = p->next)
        n++;
    return n;
}

static void on_accept(h2o_socket_t *listener, const char *err)
{
    srv_thread_t *th = listener->data;
    if (err != NULL)
        return;
    uint32_t per_thread = th->srv->cfg->max_connections / th->srv->nthreads;
    if (per_thread == 0)
        per_thread = 1;
    for (int i = 0; i < 16; i++) {
        h2o_socket_t *sock = h2o_evloop_socket_accept(listener);
        if (sock == NULL)
            break;
        if (count_conns(&th->ctx) >= per_thread) {
            /* over the connection bound: close at once rather than let the backlog grow */
            h2o_socket_close(sock);
            continue;
        }
        h2o_accept(&th->accept_ctx, sock);
    }
}

static void on_admin_accept(h2o_socket_t *listener, const char *err)
{
    srv_thread_t *th = listener->data;
    h2o_socket_t *sock;
    if (err == NULL && (sock = h2o_evloop_socket_accept(listener)) != NULL)
        h2o_accept(&th->admin_accept_ctx, sock);
}

static int is_busy_request(h2o_req_t *req, void *cbdata)
{
    h2o_socket_t *sock = req->conn->callbacks->get_socket ? req->conn->callbacks->get_socket(req->conn) : NULL;
    /* a connection with a parsed request or unread bytes is mid-request (e.g. an upload) */
    if (req->input.method.base != NULL || (sock != NULL && sock->input->size != 0))
        return 1;
    return 0;
}

static bool loop_is_drained(srv_thread_t *th)
{
    if (th->inflight != 0)
        return false;
    return th->ctx.globalconf->http1.callbacks.foreach_request(&th->ctx, is_busy_request, NULL) == 0;
}

static void begin_drain(srv_thread_t *th)
{
    if (th->draining)
        return;
    th->draining = true;
    if (th->listener != NULL) {
        h2o_socket_read_stop(th->listener);
        h2o_socket_close(th->listener);
        th->listener = NULL;
    }
    h2o_context_request_shutdown(&th->ctx);
}

static void on_ctl_messages(h2o_multithread_receiver_t *rx, h2o_linklist_t *messages)
{
    srv_thread_t *th = H2O_STRUCT_FROM_MEMBER(srv_thread_t, ctl_rx, rx);
    while (!h2o_linklist_is_empty(messages)) {
        h2o_multithread_message_t *msg = H2O_STRUCT_FROM_MEMBER(h2o_multithread_message_t, link, messages->next);
        h2o_linklist_unlink(&msg->link);
        free(msg);
    }
    begin_drain(th);
}

/* --- connection watchdog --------------------------------------------------------------
 * h2o 2.2 has no keep-alive idle timeout of its own for HTTP/1 (request_timeout covers
 * it) and no write timeout: a client that stops reading holds its connection and the
 * kernel's send buffer forever. Every 500 ms each loop looks at its connections; one
 * idle between requests for http.idle_timeout, or whose response made no progress for
 * that long, is shut down (h2o then sees the error and closes it cleanly). */
typedef struct {
    const void *sock;
    uint64_t sig, since_ms;
    int kind;
} conn_seen_t;

enum { SEEN_IDLE = 1, SEEN_SENDING = 2 };

struct watch_ctx {
    srv_thread_t *th;
    uint64_t now;
    conn_seen_t *prev, *next;
    size_t nprev, nnext, capnext;
    uint64_t limit_ms;
};

static int by_sock(const void *a, const void *b)
{
    const conn_seen_t *x = a, *y = b;
    return (x->sock > y->sock) - (x->sock < y->sock);
}

static int watch_one(h2o_req_t *req, void *cbdata)
{
    struct watch_ctx *w = cbdata;
    h2o_socket_t *sock = req->conn->callbacks->get_socket ? req->conn->callbacks->get_socket(req->conn) : NULL;
    if (sock == NULL)
        return 0;
    conn_seen_t cur = {.sock = sock};
    if (req->input.method.base == NULL && sock->input->size == 0)
        cur.kind = SEEN_IDLE;
    else if (req->res.status != 0)
        cur.kind = SEEN_SENDING, cur.sig = req->bytes_sent;
    else
        return 0; /* reading a request (request_timeout) or waiting for our answer (queue) */
    conn_seen_t *old = w->prev ? bsearch(&cur, w->prev, w->nprev, sizeof(cur), by_sock) : NULL;
    cur.since_ms = old != NULL && old->kind == cur.kind && old->sig == cur.sig ? old->since_ms : w->now;
    if (w->now - cur.since_ms >= w->limit_ms) {
        shutdown(h2o_socket_get_fd(sock), SHUT_RDWR);
        return 0;
    }
    if (w->nnext == w->capnext) {
        size_t cap = w->capnext ? w->capnext * 2 : 64;
        conn_seen_t *n = realloc(w->next, cap * sizeof(*n));
        if (n == NULL)
            return 0;
        w->next = n;
        w->capnext = cap;
    }
    w->next[w->nnext++] = cur;
    return 0;
}

static void watch_connections(srv_thread_t *th, uint64_t now)
{
    struct watch_ctx w = {.th = th, .now = now, .prev = th->seen, .nprev = th->nseen,
                          .limit_ms = th->srv->cfg->idle_timeout_ms};
    th->ctx.globalconf->http1.callbacks.foreach_request(&th->ctx, watch_one, &w);
    if (w.nnext > 1)
        qsort(w.next, w.nnext, sizeof(*w.next), by_sock);
    free(th->seen);
    th->seen = w.next;
    th->nseen = w.nnext;
}

static void on_tick(h2o_timeout_entry_t *entry)
{
    srv_thread_t *th = H2O_STRUCT_FROM_MEMBER(srv_thread_t, tick, entry);
    uint64_t now = srv__now_ms();
    srv__derive_tick(th);
    if (now - th->last_watch_ms >= 500) {
        th->last_watch_ms = now;
        watch_connections(th, now);
        if (th->idx == 0)
            store_maintain(th->srv->store);
    }
    atomic_store_explicit(&th->nconns, (uint32_t)count_conns(&th->ctx), memory_order_relaxed);
    if (th->idx == 0)
        flight_tick(th->srv->flight, srv__now_ms());
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
    uint64_t idle_since = srv__now_ms();
    /* loop 0 hosts the admin listener: it stays until the other loops have drained, so
     * /readyz keeps answering "draining" for as long as any request is in flight */
    while (!(th->draining && (loop_is_drained(th) || srv__now_ms() >= srv->shutdown_deadline_ms) &&
             (th->idx != 0 || (unsigned)atomic_load(&srv->loops_done) >= srv->nthreads - 1))) {
        h2o_evloop_run(th->loop, 1000);
        /* give freed heap back to the OS once everything has been quiet for a while */
        if (th->idx == 0 && srv->cfg->malloc_trim_idle) {
            adm_stats_t as;
            adm_stats(srv->gate, &as);
            if (as.running != 0 || th->inflight != 0)
                idle_since = srv__now_ms();
            else if (idle_since != 0 && srv__now_ms() - idle_since > 2000) {
                imgproc_trim();
                idle_since = 0; /* once per quiet period */
            }
        }
    }
    atomic_fetch_add(&srv->loops_done, 1);
    return NULL;
}

static int setup_thread(srv_t *srv, srv_thread_t *th, unsigned idx)
{
    th->loop = h2o_evloop_create();
    h2o_context_init(&th->ctx, th->loop, &srv->globalconf);
    th->accept_ctx.ctx = &th->ctx;
    th->accept_ctx.hosts = srv->globalconf.hosts;
    h2o_multithread_register_receiver(th->ctx.queue, &th->done_rx, on_done_messages);
    h2o_multithread_register_receiver(th->ctx.queue, &th->ctl_rx, on_ctl_messages);
    h2o_linklist_init_anchor(&th->waiters);
    h2o_timeout_init(th->loop, &th->tick_timeout, 100);
    th->tick.cb = on_tick;
    h2o_timeout_link(th->loop, &th->tick_timeout, &th->tick);

    int fd = idx == 0 ? srv->listen_fd : open_listener(&srv->listen_addr, sizeof(srv->listen_addr));
    if (fd < 0)
        return -1;
    th->listener = h2o_evloop_socket_create(th->loop, fd, H2O_SOCKET_FLAG_DONT_READ);
    th->listener->data = th;
    h2o_socket_read_start(th->listener, on_accept);
    if (idx == 0 && srv->admin_fd >= 0) {
        h2o_context_init(&th->admin_ctx, th->loop, &srv->admin_globalconf);
        th->admin_accept_ctx.ctx = &th->admin_ctx;
        th->admin_accept_ctx.hosts = srv->admin_globalconf.hosts;
        th->admin_listener = h2o_evloop_socket_create(th->loop, srv->admin_fd, H2O_SOCKET_FLAG_DONT_READ);
        th->admin_listener->data = th;
        h2o_socket_read_start(th->admin_listener, on_admin_accept);
    }
    return 0;
}

static unsigned ncores(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (unsigned)n : 1;
}

static void addr_str(const struct sockaddr_storage *ss, char *out, size_t len)
{
    char host[INET6_ADDRSTRLEN] = "?";
    unsigned port = 0;
    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const void *)ss;
        inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof(host));
        port = ntohs(a->sin6_port);
        snprintf(out, len, "[%s]:%u", host, port);
    } else {
        const struct sockaddr_in *a = (const void *)ss;
        inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host));
        port = ntohs(a->sin_port);
        snprintf(out, len, "%s:%u", host, port);
    }
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
                             .running = as.running};
}

int srv_run(const cfg_t *cfg)
{
    static srv_t S; /* the one process-wide server; main owns it */
    srv_t *srv = &S;
    char err[512];
    int ret = 1;
    srv->cfg = cfg;
    srv->started_at_ms = srv__now_ms();
    pthread_mutex_init(&srv->coalesce_mu, NULL);
    pthread_mutex_init(&srv->setup_mu, NULL);
    pthread_cond_init(&srv->setup_cv, NULL);
    srv->admin_fd = -1;

    /* signals go to the main thread's sigwait only: block them before any thread
     * (workers, io, loops) is created, so every thread inherits the mask */
    sigset_t sigs;
    srv_block_signals(&sigs);
    signal(SIGPIPE, SIG_IGN);


    if ((srv->store = store_create(cfg->storage_root, cfg->cache_max_bytes, err, sizeof(err))) == NULL) {
        fprintf(stderr, "thumbgate: %s\n", err);
        return 1;
    }
    /* bodies above the spill threshold live in an unlinked file under storage.root/tmp
     * (mmap'd by h2o), not in anonymous memory */
    h2o_socket_buffer_mmap_settings.threshold = cfg->upload_spill_bytes;
    snprintf(h2o_socket_buffer_mmap_settings.fn_template, sizeof(h2o_socket_buffer_mmap_settings.fn_template), "%s",
             store_spill_template(srv->store));

    const char *bsrc = "memory.budget";
    uint64_t budget = cfg->memory_budget ? cfg->memory_budget : srv_auto_budget(cfg->memory_budget_percent, &bsrc);
    unsigned workers = cfg->workers ? cfg->workers : ncores();
    adm_config_t ac = {.budget = budget,
                       .workers = workers,
                       .queue_max = cfg->queue_max,
                       .queue_max_bytes = cfg->queue_max_bytes ? cfg->queue_max_bytes : budget * 4,
                       .queue_timeout_ms = cfg->queue_timeout_ms,
                       .naive = cfg->memory_mode == CFG_MODE_NAIVE};
    if ((srv->gate = adm_create(&ac)) == NULL) {
        fprintf(stderr, "thumbgate: cannot start %u worker threads\n", workers);
        goto out_store;
    }
    srv->imgopts = (imgproc_opts_t){cfg->jpeg_quality, cfg->webp_quality, cfg->png_compression, cfg->keep_icc};

    /* public API */
    h2o_config_init(&srv->globalconf);
    srv->globalconf.max_request_entity_size = cfg->max_upload;
    srv->globalconf.http1.req_timeout = cfg->req_timeout_ms;
    srv->globalconf.http1.upgrade_to_http2 = 0; /* h2c is off: TLS and HTTP/2 belong to the balancer */
    srv->globalconf.http2.idle_timeout = cfg->idle_timeout_ms;
    srv->globalconf.server_name = h2o_iovec_init(H2O_STRLIT("thumbgate"));
    srv->hostconf = h2o_config_register_host(&srv->globalconf, h2o_iovec_init(H2O_STRLIT("default")), 65535);
    h2o_pathconf_t *pathconf = h2o_config_register_path(srv->hostconf, "/", 0);
    struct api_handler *h = (void *)h2o_create_handler(pathconf, sizeof(*h));
    h->super.on_req = on_api_req;
    h->srv = srv;
    srv__register_http_filters(srv, pathconf);
    srv__register_http_filters(srv, &srv->hostconf->fallback_path);
    srv__admin_register(srv);

    socklen_t len;
    if (parse_hostport(cfg->listen, &srv->listen_addr, &len) != 0 ||
        (!port_is_zero(&srv->listen_addr) && probe_free(&srv->listen_addr, len) != 0) ||
        (srv->listen_fd = open_listener(&srv->listen_addr, len)) < 0) {
        fprintf(stderr, "thumbgate: cannot listen on %s: %s\n", cfg->listen, strerror(errno));
        goto out_gate;
    }
    struct sockaddr_storage admin_addr;
    if (cfg->admin_listen[0] != '\0' &&
        (parse_hostport(cfg->admin_listen, &admin_addr, &len) != 0 ||
         (!port_is_zero(&admin_addr) && probe_free(&admin_addr, len) != 0) ||
         (srv->admin_fd = open_listener(&admin_addr, len)) < 0)) {
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

    srv->nthreads = cfg->threads ? cfg->threads : ncores();
    srv->threads = calloc(srv->nthreads, sizeof(*srv->threads));
    for (unsigned i = 0; i < IO_THREADS; i++)
        io.started += pthread_create(&io.threads[i], NULL, io_main, NULL) == 0;
    unsigned started = 0;
    for (; started < srv->nthreads; started++) {
        srv->threads[started].srv = srv;
        srv->threads[started].idx = started;
        if (pthread_create(&srv->threads[started].tid, NULL, loop_main, &srv->threads[started]) != 0)
            break;
    }
    pthread_mutex_lock(&srv->setup_mu);
    while (srv->setup_reported < started)
        pthread_cond_wait(&srv->setup_cv, &srv->setup_mu);
    bool failed = srv->setup_failed || started < srv->nthreads;
    pthread_mutex_unlock(&srv->setup_mu);
    srv->nthreads = started;
    if (failed) {
        fprintf(stderr, "thumbgate: cannot start the event loops (threads or listeners): %s\n", strerror(errno));
        srv->shutdown_deadline_ms = srv__now_ms();
        for (unsigned i = 0; i < started; i++)
            if (srv->threads[i].ready) {
                h2o_multithread_message_t *m = calloc(1, sizeof(*m));
                h2o_multithread_send_message(&srv->threads[i].ctl_rx, m);
            }
        ret = 1;
        goto out_threads;
    }

    char a1[80], a2[80] = "off";
    addr_str(&srv->listen_addr, a1, sizeof(a1));
    if (srv->admin_fd >= 0)
        addr_str(&admin_addr, a2, sizeof(a2));
    if (cfg->log_level >= CFG_LOG_INFO)
        fprintf(stderr,
            "{\"log\":\"start\",\"listen\":\"%s\",\"admin\":\"%s\",\"threads\":%u,\"workers\":%u,\"budget\":%" PRIu64
            ",\"budget_source\":\"%s\",\"mode\":\"%s\",\"storage\":\"%s\",\"pid\":%ld}\n",
            a1, a2, srv->nthreads, workers, budget, bsrc, ac.naive ? "naive" : "admit", cfg->storage_root,
            (long)getpid());

    for (;;) {
        int sig = 0;
        sigwait(&sigs, &sig);
        if (sig == SIGHUP)
            continue; /* no reload: restart to change config (documented) */
        break;
    }
    if (cfg->log_level >= CFG_LOG_INFO)
        fprintf(stderr, "{\"log\":\"shutdown\",\"drain_ms\":%" PRIu64 "}\n", cfg->shutdown_timeout_ms);
    srv->shutdown_deadline_ms = srv__now_ms() + cfg->shutdown_timeout_ms;
    atomic_store(&srv->shutting_down, true);
    for (unsigned i = 0; i < srv->nthreads; i++) {
        h2o_multithread_message_t *m = calloc(1, sizeof(*m));
        h2o_multithread_send_message(&srv->threads[i].ctl_rx, m);
    }
    ret = 0;

out_threads:
    for (unsigned i = 0; i < srv->nthreads; i++)
        pthread_join(srv->threads[i].tid, NULL);
    pthread_mutex_lock(&io.mu);
    io.stop = true;
    pthread_cond_broadcast(&io.cv);
    pthread_mutex_unlock(&io.mu);
    for (unsigned i = 0; i < io.started; i++)
        pthread_join(io.threads[i], NULL);
    if (ret == 0 && srv__now_ms() >= srv->shutdown_deadline_ms) {
        /* the drain deadline passed with jobs still decoding: their clients were cut
         * off anyway, and waiting for the workers would overrun the deadline */
        if (cfg->log_level >= CFG_LOG_INFO)
            fprintf(stderr, "{\"log\":\"stopped\",\"exit\":0,\"drain\":\"deadline\"}\n");
        flight_mark_clean(srv->flight); /* a stop we chose, though jobs were cut off */
        fflush(NULL);
        _exit(0);
    }
    /* the loops are gone; jobs still running finish before the recorder they report to */
    adm_destroy(srv->gate);
    srv->gate = NULL;
    flight_close(srv->flight);
    srv->flight = NULL;
    store_destroy(srv->store);
    if (cfg->log_level >= CFG_LOG_INFO)
        fprintf(stderr, "{\"log\":\"stopped\",\"exit\":%d}\n", ret);
    /* h2o contexts and connections are left to process exit: tearing them down while
     * idle keep-alive sockets are still linked costs time and proves nothing */
    return ret;
out_listen:
    close(srv->listen_fd);
out_gate:
    adm_destroy(srv->gate);
out_store:
    store_destroy(srv->store);
    return ret;
}
