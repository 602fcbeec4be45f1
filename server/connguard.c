/* connguard — connection memory bounds (see connguard.h for what and why). */
#include "server/connguard.h"

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
    /* per loop, touched only by that loop's thread */
    struct {
        h2o_linklist_t conns; /**< gconn_t of the loop's open connections */
        size_t unlearned;     /**< of them, those whose request is not yet known */
        uint64_t now_ms;      /**< the loop's clock at its last scan */
    } loops[CONNGUARD_MAX_LOOPS];
};

/* What connguard keeps per connection: freed by h2o's on_close callback of the socket. */
typedef struct {
    connguard_t *g;
    h2o_socket_t *sock;
    /* h2o's HTTP/1 connection embeds its request, so its address is fixed for the
     * connection's life: learned once from foreach_request, then read directly */
    h2o_req_t *req;
    h2o_linklist_t link; /**< in g->loops[loop].conns */
    unsigned loop;
    struct timeval body_seen; /**< request_body_begin_at of the request last reserved for */
    /* loop-clock times, for choosing whom to close when the connections are all taken */
    uint64_t busy_ms;  /**< last seen with a request under way (idle since then) */
    uint64_t head_ms;  /**< reading a request head since (0: not) */
    uint64_t moved_ms; /**< its response last moved (or it was not sending) */
    size_t sent;       /**< response bytes sent at the last look */
    uint64_t reserved;
    bool refused;
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

static void on_close(void *data)
{
    gconn_t *c = data;
    release(c->g, c);
    h2o_linklist_unlink(&c->link);
    if (c->req == NULL)
        c->g->loops[c->loop].unlearned--;
    atomic_fetch_sub_explicit(&c->g->open, 1, memory_order_relaxed);
    free(c);
}

/* Answers straight on the socket (h2o has produced no response: it is still reading the
 * request) and shuts both directions, so h2o's next read sees the end and closes. */
static void refuse_fd(connguard_t *g, int fd, connguard_reason_t why, err_domain_t domain, int code,
                      const char *msg)
{
    conns_answer(fd, domain, code, msg);
    shutdown(fd, SHUT_RDWR);
    atomic_fetch_add_explicit(&g->refused[why], 1, memory_order_relaxed);
}

/* Whom to close when every connection is taken, so that a flood of connections that
 * do nothing useful cannot lock other clients out: the loop's connection idle the
 * longest (a quarter second at least), else the one that has been sending a request head
 * the longest (a slow head: answered 408), else the response stalled the longest (a
 * quarter second at least). Requests being handled and bodies being received are never chosen.
 * *head tells whether the victim was reading a head. */
#define VICTIM_MIN_MS 250
static gconn_t *victim(connguard_t *g, unsigned loop, bool *head)
{
    uint64_t now = g->loops[loop].now_ms;
    gconn_t *idle = NULL, *slow = NULL, *stalled = NULL;
    h2o_linklist_t *anchor = &g->loops[loop].conns;
    for (h2o_linklist_t *l = anchor->next; l != anchor; l = l->next) {
        gconn_t *c = H2O_STRUCT_FROM_MEMBER(gconn_t, link, l);
        if (c->refused || c->req == NULL || c->busy_ms == 0)
            continue;
        if (c->req->input.method.base == NULL && c->sock->input->size == 0) {
            if (now - c->busy_ms >= VICTIM_MIN_MS && (idle == NULL || c->busy_ms < idle->busy_ms))
                idle = c;
        } else if (c->head_ms != 0) {
            if (slow == NULL || c->head_ms < slow->head_ms)
                slow = c;
        } else if (c->req->res.status != 0 && now - c->moved_ms >= VICTIM_MIN_MS) {
            if (stalled == NULL || c->moved_ms < stalled->moved_ms)
                stalled = c;
        }
    }
    *head = idle == NULL && slow != NULL;
    return idle ? idle : slow ? slow : stalled;
}

bool connguard_accept(connguard_t *g, h2o_socket_t *sock, unsigned loop)
{
    int fd = h2o_socket_get_fd(sock);
    gconn_t *c = NULL;
    loop = loop < CONNGUARD_MAX_LOOPS ? loop : CONNGUARD_MAX_LOOPS - 1;
    bool full =
        atomic_fetch_add_explicit(&g->open, 1, memory_order_relaxed) >= g->cfg.max_connections;
    bool head = false;
    gconn_t *v = full ? victim(g, loop, &head) : NULL;
    if (v != NULL) {
        /* h2o sees the end on its next read and closes it; until then the count is one over */
        v->refused = true;
        int vfd = h2o_socket_get_fd(v->sock);
        if (head)
            conns_answer(vfd, ERR_REQ, ERR_REQ_TIMEOUT,
                         "the request head was too slow while the server was out of connections");
        shutdown(vfd, SHUT_RDWR);
        atomic_fetch_add_explicit(&g->refused[head ? CONNGUARD_R_SLOW : CONNGUARD_R_IDLE], 1,
                                  memory_order_relaxed);
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
    g->loops[c->loop].unlearned++;
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
            c->g->loops[c->loop].unlearned--;
        }
    }
    return 0;
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

void connguard_scan(connguard_t *g, h2o_context_t *ctx, unsigned loop)
{
    if (loop >= CONNGUARD_MAX_LOOPS)
        loop = CONNGUARD_MAX_LOOPS - 1;
    if (g->loops[loop].unlearned != 0)
        ctx->globalconf->http1.callbacks.foreach_request(ctx, learn_one, NULL);
    uint64_t ram = 0, spill = 0, now = h2o_now(ctx->loop);
    g->loops[loop].now_ms = now;
    h2o_linklist_t *anchor = &g->loops[loop].conns;
    for (h2o_linklist_t *l = anchor->next; l != anchor; l = l->next) {
        gconn_t *c = H2O_STRUCT_FROM_MEMBER(gconn_t, link, l);
        h2o_buffer_t *in = c->sock->input;
        if (in->bytes != NULL)
            *(in->_fd != -1 ? &spill : &ram) += in->capacity;
        if (c->req != NULL && c->busy_ms == 0)
            c->busy_ms = c->moved_ms = now; /* first look: count its idle time from here */
        /* idle and owing nothing: the common case costs these two loads */
        if (c->refused || c->req == NULL || (in->size == 0 && c->reserved == 0))
            continue;
        h2o_req_t *req = c->req;
        c->busy_ms = now;
        bool head =
            req->processed_at.at.tv_sec == 0 && req->timestamps.request_body_begin_at.tv_sec == 0;
        c->head_ms = !head ? 0 : c->head_ms ? c->head_ms : now;
        if (req->res.status == 0 || req->bytes_sent != c->sent)
            c->moved_ms = now, c->sent = req->bytes_sent;
        check_one(g, c);
    }
    atomic_store_explicit(&g->input_ram[loop], ram, memory_order_relaxed);
    atomic_store_explicit(&g->input_spill[loop], spill, memory_order_relaxed);
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
}
