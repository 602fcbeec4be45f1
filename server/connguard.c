/* connguard — connection memory bounds (see connguard.h for what and why). */
#include "server/connguard.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "server/auth.h"
#include "server/conns.h"
#include "server/errors.h"
#include "server/store.h"

struct connguard {
    connguard_config_t cfg;
    _Atomic uint64_t open;
    _Atomic uint64_t reserved;
    _Atomic uint64_t refused[CONNGUARD_R_MAX];
    _Atomic uint64_t input_ram[CONNGUARD_MAX_LOOPS], input_spill[CONNGUARD_MAX_LOOPS];
    _Atomic uint64_t holds;
    /* h2o's HTTP/1 connection embeds its request: its offset in the connection, learned
     * from the first connection foreach_request shows (0: not yet) */
    _Atomic size_t req_offset;
    /* per loop, touched only by that loop's thread */
    struct {
        h2o_linklist_t conns;  /**< gconn_t of the loop's open connections */
        uint64_t now_ms;       /**< the loop's clock at its last walk */
        struct gconn *victim;  /**< chosen by connguard_admit for the accept that follows */
        int victim_kind;       /**< what it was chosen as (V_IDLE, V_SLOW, V_STALLED) */
        h2o_socket_t *held;    /**< the listener, while it is off the loop */
        h2o_socket_cb held_cb; /**< its accept callback, to start it again */
        uint64_t full_since;   /**< when the loop first found no room (0: it has room) */
    } loops[CONNGUARD_MAX_LOOPS];
};

/* What connguard keeps per connection: freed by h2o's on_close callback of the socket. */
typedef struct gconn {
    connguard_t *g;
    h2o_socket_t *sock;
    /* h2o's HTTP/1 connection embeds its request, so its address is fixed for the
     * connection's life: learned once from foreach_request, then read directly */
    h2o_req_t *req;
    h2o_linklist_t link; /**< in g->loops[loop].conns */
    unsigned loop;
    struct timeval body_seen; /**< request_body_begin_at of the request last reserved for */
    /* loop-clock times, for choosing whom to close when the connections are all taken */
    uint64_t busy_ms;     /**< last seen with a request under way (idle since then) */
    uint64_t head_ms;     /**< reading a request head since (0: not) */
    uint64_t moved_ms;    /**< its response last moved (or it was not sending) */
    size_t sent;          /**< response bytes sent at the last look */
    struct timeval begun; /**< request_begin_at of the request the times below are of */
    uint64_t body_ms;     /**< its request body last grew (0: not receiving a body) */
    size_t body_size;     /**< input bytes at that time */
    uint64_t reserved;
    bool refused; /**< answered or shut down: h2o closes it at its next event */
} gconn_t;

connguard_t *connguard_create(const connguard_config_t *cfg)
{
    connguard_t *g = calloc(1, sizeof(*g));
    if (g == NULL)
        return NULL;
    g->cfg = *cfg;
    for (unsigned i = 0; i < CONNGUARD_MAX_LOOPS; i++)
        h2o_linklist_init_anchor(&g->loops[i].conns);
    return g;
}

void connguard_destroy(connguard_t *g)
{
    free(g);
}

const char *connguard_reason_name(connguard_reason_t r)
{
    static const char *const names[CONNGUARD_R_MAX] = {
        "max_connections", "header_too_large", "body_bytes_in_flight", "unauthorized",
        "disk_full",       "idle_closed",      "slow_head_closed"};
    return r < CONNGUARD_R_MAX ? names[r] : "other";
}

void connguard_tune_listener(const connguard_t *g, int fd)
{
    int sz = (int)g->cfg.socket_buffer;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof(sz));
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz));
}

static void release(connguard_t *g, gconn_t *c)
{
    if (c->reserved != 0)
        atomic_fetch_sub_explicit(&g->reserved, c->reserved, memory_order_relaxed);
    c->reserved = 0;
}

static bool reserve(connguard_t *g, gconn_t *c, uint64_t bytes, bool force)
{
    uint64_t cur = atomic_load_explicit(&g->reserved, memory_order_relaxed);
    do {
        /* one body larger than the whole cap may come alone: limits.max_upload stays possible */
        if (!force && cur != 0 && cur + bytes > g->cfg.max_body_inflight)
            return false;
    } while (!atomic_compare_exchange_weak_explicit(&g->reserved, &cur, cur + bytes,
                                                    memory_order_relaxed, memory_order_relaxed));
    c->reserved += bytes;
    return true;
}

/* Starts the held listener of @p loop again (it accepts on its next event). */
static void unhold(connguard_t *g, unsigned loop)
{
    h2o_socket_t *l = g->loops[loop].held;
    if (l != NULL) {
        g->loops[loop].held = NULL;
        h2o_socket_read_start(l, g->loops[loop].held_cb);
    }
}

static void on_close(void *data)
{
    gconn_t *c = data;
    connguard_t *g = c->g;
    release(g, c);
    h2o_linklist_unlink(&c->link);
    if (g->loops[c->loop].victim == c)
        g->loops[c->loop].victim = NULL;
    /* a slot is free: a held listener of this loop takes the next waiting connection */
    if (atomic_fetch_sub_explicit(&g->open, 1, memory_order_relaxed) <= g->cfg.max_connections)
        unhold(g, c->loop);
    free(c);
}

/* Answers straight on the socket (h2o has produced no response: it is still reading the
 * request) and shuts both directions, so h2o's next read sees the end and closes. Counted
 * first: a client that has the answer finds it in /metrics. */
static void refuse_fd(connguard_t *g, int fd, connguard_reason_t why, err_domain_t domain, int code,
                      const char *msg)
{
    atomic_fetch_add_explicit(&g->refused[why], 1, memory_order_relaxed);
    conns_answer(fd, domain, code, msg);
    shutdown(fd, SHUT_RDWR);
}

/* Whom to close when every connection is taken, so that a flood of connections that
 * do nothing useful cannot lock other clients out: the loop's connection idle the
 * longest (a quarter second at least), else the one that has been sending a request head
 * the longest (a slow head: answered 408), else the response stalled the longest (a
 * second at least: a client of a loaded machine may pause a quarter second, and a
 * response cut in the middle is lost to it, while an idle connection's client just
 * connects again). Requests being handled and bodies being received are never chosen. A connection
 * is judged by the walk's bookkeeping (busy_ms, head_ms, moved_ms), so one it has not looked at yet
 * is not chosen. */
#define VICTIM_MIN_MS 250
#define VICTIM_STALLED_MS 1000
enum { V_NONE, V_STALLED, V_SLOW, V_IDLE }; /* in order of preference */

/* Whether @p c may be closed to make room, and as what. */
static int eligible(const gconn_t *c, uint64_t now)
{
    if (c->refused || c->req == NULL || c->busy_ms == 0)
        return V_NONE;
    const h2o_req_t *req = c->req;
    if (req->input.method.base == NULL && c->sock->input->size == 0)
        return now - c->busy_ms >= VICTIM_MIN_MS ? V_IDLE : V_NONE;
    if (c->head_ms != 0 && req->processed_at.at.tv_sec == 0 &&
        req->timestamps.request_body_begin_at.tv_sec == 0)
        return V_SLOW;
    if (req->res.status != 0 && now - c->moved_ms >= VICTIM_STALLED_MS)
        return V_STALLED;
    return V_NONE;
}

/* The age that orders candidates of one kind: the oldest goes first. */
static uint64_t since(const gconn_t *c, int kind)
{
    return kind == V_IDLE ? c->busy_ms : kind == V_SLOW ? c->head_ms : c->moved_ms;
}

static gconn_t *victim(connguard_t *g, unsigned loop, uint64_t now, int *kind)
{
    gconn_t *best = NULL;
    int best_kind = V_NONE;
    h2o_linklist_t *anchor = &g->loops[loop].conns;
    for (h2o_linklist_t *l = anchor->next; l != anchor; l = l->next) {
        gconn_t *c = H2O_STRUCT_FROM_MEMBER(gconn_t, link, l);
        int k = eligible(c, now);
        if (k > best_kind || (k != V_NONE && k == best_kind && since(c, k) < since(best, k)))
            best = c, best_kind = k;
    }
    *kind = best_kind;
    return best;
}

static bool has_room(connguard_t *g)
{
    return atomic_load_explicit(&g->open, memory_order_relaxed) < g->cfg.max_connections;
}

bool connguard_admit(connguard_t *g, unsigned loop, h2o_socket_t *listener, h2o_socket_cb on_accept)
{
    assert(loop < CONNGUARD_MAX_LOOPS);
    uint64_t now = h2o_now(h2o_socket_get_loop(listener));
    g->loops[loop].victim = NULL;
    if (has_room(g) ||
        (g->loops[loop].victim = victim(g, loop, now, &g->loops[loop].victim_kind)) != NULL) {
        g->loops[loop].full_since = 0;
        return true;
    }
    if (g->loops[loop].full_since == 0)
        g->loops[loop].full_since = now;
    if (now - g->loops[loop].full_since >= CONNGUARD_HOLD_MS)
        return true; /* waited long enough: the connection is answered 503 at once */
    /* nobody to close yet (e.g. a flood of fresh connections): let new ones wait in the
     * kernel's accept queue rather than turn them away; the walk or a close starts the
     * listener again */
    h2o_socket_read_stop(listener);
    g->loops[loop].held = listener;
    g->loops[loop].held_cb = on_accept;
    atomic_fetch_add_explicit(&g->holds, 1, memory_order_relaxed);
    return false;
}

void connguard_forget_listener(connguard_t *g, unsigned loop)
{
    assert(loop < CONNGUARD_MAX_LOOPS);
    g->loops[loop].held = NULL;
}

bool connguard_accept(connguard_t *g, h2o_socket_t *sock, unsigned loop)
{
    int fd = h2o_socket_get_fd(sock);
    gconn_t *c = NULL;
    assert(loop < CONNGUARD_MAX_LOOPS);
    bool full =
        atomic_fetch_add_explicit(&g->open, 1, memory_order_relaxed) >= g->cfg.max_connections;
    gconn_t *v = g->loops[loop].victim; /* chosen by connguard_admit just before */
    g->loops[loop].victim = NULL;
    if (full && v != NULL && !v->refused) {
        /* h2o sees the end on its next read and closes it; until then the count is one over */
        bool head = g->loops[loop].victim_kind == V_SLOW;
        v->refused = true;
        int vfd = h2o_socket_get_fd(v->sock);
        atomic_fetch_add_explicit(&g->refused[head ? CONNGUARD_R_SLOW : CONNGUARD_R_IDLE], 1,
                                  memory_order_relaxed);
        if (head)
            conns_answer(vfd, ERR_REQ, ERR_REQ_TIMEOUT,
                         "the request head was too slow while the server was out of connections");
        shutdown(vfd, SHUT_RDWR);
        full = false;
    }
    if (full || (c = calloc(1, sizeof(*c))) == NULL) {
        atomic_fetch_sub_explicit(&g->open, 1, memory_order_relaxed);
        refuse_fd(g, fd, CONNGUARD_R_CONNECTIONS, ERR_REQ, ERR_REQ_CONNECTIONS,
                  "the server holds limits.max_connections connections; try again");
        h2o_socket_close(sock);
        return false;
    }
    c->g = g;
    c->sock = sock;
    c->loop = loop;
    h2o_linklist_insert(&g->loops[c->loop].conns, &c->link);
    sock->on_close.cb = on_close;
    sock->on_close.data = c;
    return true;
}

/* The declared length of the body after the head at the start of @p in (h2o has
 * lower-cased the header names in place): Content-Length, or max_upload for chunked. */
static uint64_t declared_length(const connguard_t *g, const h2o_buffer_t *in)
{
    const char *p = in->bytes, *end = in->bytes + in->size;
    for (;;) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        if (nl == NULL)
            return g->cfg.max_upload;
        p = nl + 1;
        if (p >= end || *p == '\r' || *p == '\n')
            return 0; /* end of the head: no body header found */
        if ((size_t)(end - p) > 15 && memcmp(p, "content-length:", 15) == 0)
            return strtoull(p + 15, NULL, 10);
        if ((size_t)(end - p) > 18 && memcmp(p, "transfer-encoding:", 18) == 0)
            return g->cfg.max_upload;
    }
}

static bool is_write(h2o_req_t *req)
{
    return h2o_memis(req->input.method.base, req->input.method.len, H2O_STRLIT("PUT")) ||
           h2o_memis(req->input.method.base, req->input.method.len, H2O_STRLIT("DELETE"));
}

static int learn_one(h2o_req_t *req, void *cbdata)
{
    h2o_socket_t *sock =
        req->conn->callbacks->get_socket ? req->conn->callbacks->get_socket(req->conn) : NULL;
    if (sock != NULL && sock->on_close.cb == on_close) {
        gconn_t *c = sock->on_close.data;
        if (c->req == NULL) {
            c->req = req;
            size_t off = (size_t)((char *)req - (char *)req->conn);
            if ((void *)req->conn == sock->data && off < 65536)
                atomic_store_explicit(&c->g->req_offset, off, memory_order_relaxed);
        }
    }
    return 0;
}

/* The request of @p c without a pass over h2o's connections: at the offset learned from
 * an earlier connection, checked against the request's own back pointer. */
static bool learn_fast(connguard_t *g, gconn_t *c)
{
    size_t off = atomic_load_explicit(&g->req_offset, memory_order_relaxed);
    h2o_conn_t *conn = c->sock->data;
    if (off == 0 || conn == NULL)
        return false;
    h2o_req_t *req = (h2o_req_t *)((char *)conn + off);
    if (req->conn != conn)
        return false;
    c->req = req;
    return true;
}

/* Whether the spill files' disk has room for @p len more bytes: h2o cannot tell a full
 * disk from a failed read, and would drop the connection without an answer. */
static bool spill_room(const connguard_t *g, uint64_t len)
{
    struct statvfs v;
    if (statvfs(g->cfg.spill_dir, &v) != 0)
        return true; /* unknown: let the write find out */
    return (uint64_t)v.f_bavail * v.f_frsize > len + (len >> 3);
}

/* One connection's rules; see connguard.h. */
static void check_one(connguard_t *g, gconn_t *c)
{
    h2o_req_t *req = c->req;
    h2o_buffer_t *in = c->sock->input;
    bool spilled = in->bytes != NULL && in->_fd != -1;
    int fd = h2o_socket_get_fd(c->sock);
    bool processed = req->processed_at.at.tv_sec != 0;
    struct timeval body_at = req->timestamps.request_body_begin_at;
    if (body_at.tv_sec == 0) {
        /* no body on this request (yet): reading a head, handling a GET, or idle */
        if (!processed && in->size > g->cfg.max_header_bytes) {
            c->refused = true;
            refuse_fd(g, fd, CONNGUARD_R_HEADER, ERR_REQ, ERR_REQ_HEAD_TOO_LARGE,
                      "the request head is larger than limits.max_header_bytes");
        } else if (c->reserved != 0 && !spilled) {
            release(g, c); /* the last body is gone and its buffer is back in memory */
        }
        return;
    }
    if (timercmp(&body_at, &c->body_seen, ==))
        return; /* already reserved for */
    release(g, c);
    c->body_seen = body_at;
    uint64_t len = declared_length(g, in);
    if (processed) {
        /* the whole body came with the head: the handler holds it now; count it */
        reserve(g, c, len, true);
        return;
    }
    const char *msg;
    int code;
    if (is_write(req) && (code = auth_write(g->cfg.write_token, req, &msg)) != 0) {
        c->refused = true;
        refuse_fd(g, fd, CONNGUARD_R_AUTH, ERR_AUTH, code, msg);
    } else if (len > g->cfg.spill_threshold / 2 && !spill_room(g, len)) {
        c->refused = true;
        refuse_fd(g, fd, CONNGUARD_R_DISK, ERR_STORE, STORE_E_NOSPACE,
                  "no space left on the storage disk for the request body");
    } else if (!reserve(g, c, len, false)) {
        c->refused = true;
        refuse_fd(g, fd, CONNGUARD_R_BODIES, ERR_REQ, ERR_REQ_BODIES_FULL,
                  "too many request bodies are in flight (limits.max_body_inflight); retry later");
    }
}

/* Shuts @p c down for a timeout: a request that stopped arriving is answered 408 first. */
static void time_out(connguard_t *g, gconn_t *c, bool answer)
{
    int fd = h2o_socket_get_fd(c->sock);
    c->refused = true;
    if (answer) {
        conns_answer(fd, ERR_REQ, ERR_REQ_TIMEOUT,
                     "the request stopped arriving (http.request_timeout)");
        if (g->cfg.timeouts != NULL)
            atomic_fetch_add_explicit(g->cfg.timeouts, 1, memory_order_relaxed);
    }
    /* h2o sees the error on its next read or write and closes the connection cleanly */
    shutdown(fd, SHUT_RDWR);
}

/* The watchdog part of the walk. h2o 2.2 has no keep-alive idle timeout for HTTP/1 and
 * no write timeout, and its request timeout is one deadline for idle + head + body that
 * closes without a response. So: idle between requests, or a response that made no
 * progress: idle_timeout, then shut; a head not complete: request_timeout from when the
 * walk first saw it, then 408; a body not moving (no byte received): request_timeout,
 * then 408 (a slow but steady upload is never cut); a complete request waiting for our
 * answer: not timed here (the queue timeout is). */
static void watch_one(connguard_t *g, gconn_t *c, uint64_t now)
{
    const connguard_config_t *to = &g->cfg;
    h2o_req_t *req = c->req;
    bool body =
        req->input.method.base != NULL && req->res.status == 0 && req->processed_at.at.tv_sec == 0;
    if (!body)
        c->body_ms = 0;
    if (req->input.method.base == NULL) {
        if (c->sock->input->size == 0) {
            if (to->idle_timeout_ms != 0 && now - c->busy_ms >= to->idle_timeout_ms)
                time_out(g, c, false);
        } else if (to->request_timeout_ms != 0 && c->head_ms != 0 &&
                   now - c->head_ms >= to->request_timeout_ms) {
            time_out(g, c, true);
        }
    } else if (req->res.status != 0) {
        if (to->idle_timeout_ms != 0 && now - c->moved_ms >= to->idle_timeout_ms)
            time_out(g, c, false);
    } else if (body) {
        /* a body, or a head whose first read already showed its request line */
        if (c->body_ms == 0 || c->sock->input->size != c->body_size)
            c->body_ms = now, c->body_size = c->sock->input->size;
        else if (to->request_timeout_ms != 0 && now - c->body_ms >= to->request_timeout_ms)
            time_out(g, c, true);
    }
}

/* A held listener is started again when a slot is free, a victim qualifies, or it has
 * held connections back for CONNGUARD_HOLD_MS (they are then answered 503). */
static void maybe_unhold(connguard_t *g, unsigned loop, uint64_t now, bool any_victim)
{
    if (g->loops[loop].held == NULL)
        return;
    if (any_victim || has_room(g) || now - g->loops[loop].full_since >= CONNGUARD_HOLD_MS)
        unhold(g, loop);
}

void connguard_scan(connguard_t *g, h2o_context_t *ctx, unsigned loop)
{
    assert(loop < CONNGUARD_MAX_LOOPS);
    uint64_t now = h2o_now(ctx->loop);
    if (now - g->loops[loop].now_ms < CONNGUARD_LOOK_MS)
        return;
    g->loops[loop].now_ms = now;
    uint64_t ram = 0, spill = 0;
    bool slow_learn = false, any_victim = false;
    h2o_linklist_t *anchor = &g->loops[loop].conns;
    for (h2o_linklist_t *l = anchor->next; l != anchor; l = l->next) {
        gconn_t *c = H2O_STRUCT_FROM_MEMBER(gconn_t, link, l);
        h2o_buffer_t *in = c->sock->input;
        if (in->bytes != NULL)
            *(in->_fd != -1 ? &spill : &ram) += in->capacity;
        if (c->refused)
            continue;
        if (c->req == NULL && !learn_fast(g, c)) {
            slow_learn = true;
            continue;
        }
        if (c->busy_ms == 0)
            c->busy_ms = c->moved_ms = now; /* first look: count its idle time from here */
        h2o_req_t *req = c->req;
        /* idle and owing nothing: the common case costs these loads */
        bool active = in->size != 0 || req->input.method.base != NULL;
        if (active) {
            c->busy_ms = now;
            if (!timercmp(&req->timestamps.request_begin_at, &c->begun, ==)) {
                /* another request since the last look (a short one may come and go
                 * between two looks): its times start now, not from the last one's */
                c->begun = req->timestamps.request_begin_at;
                c->head_ms = c->body_ms = 0;
                c->moved_ms = now, c->sent = req->bytes_sent;
            }
            bool head = req->processed_at.at.tv_sec == 0 &&
                        req->timestamps.request_body_begin_at.tv_sec == 0;
            c->head_ms = !head ? 0 : c->head_ms ? c->head_ms : now;
            if (req->res.status == 0 || req->bytes_sent != c->sent)
                c->moved_ms = now, c->sent = req->bytes_sent;
        }
        if (active || c->reserved != 0) {
            check_one(g, c);
            if (c->refused)
                continue;
        }
        watch_one(g, c, now);
        any_victim = any_victim || (g->loops[loop].held != NULL && eligible(c, now) != V_NONE);
    }
    /* connections h2o has not shown yet (the request offset is not known): one pass over
     * h2o's own list, only until the first connection has taught the offset */
    if (slow_learn)
        ctx->globalconf->http1.callbacks.foreach_request(ctx, learn_one, NULL);
    atomic_store_explicit(&g->input_ram[loop], ram, memory_order_relaxed);
    atomic_store_explicit(&g->input_spill[loop], spill, memory_order_relaxed);
    maybe_unhold(g, loop, now, any_victim);
}

void connguard_stats(connguard_t *g, connguard_stats_t *out)
{
    memset(out, 0, sizeof(*out));
    out->open = atomic_load_explicit(&g->open, memory_order_relaxed);
    out->body_reserved = atomic_load_explicit(&g->reserved, memory_order_relaxed);
    for (unsigned i = 0; i < CONNGUARD_MAX_LOOPS; i++) {
        out->input_ram += atomic_load_explicit(&g->input_ram[i], memory_order_relaxed);
        out->input_spill += atomic_load_explicit(&g->input_spill[i], memory_order_relaxed);
    }
    for (unsigned r = 0; r < CONNGUARD_R_MAX; r++)
        out->refused[r] = atomic_load_explicit(&g->refused[r], memory_order_relaxed);
    out->holds = atomic_load_explicit(&g->holds, memory_order_relaxed);
}
