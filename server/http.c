/* http — the responses shared by the rooms (http.h): JSON errors (the one place error
 * codes become statuses), stored files through h2o's file handler with our ETag, the
 * filter that turns h2o's own text errors into JSON, and the access logger (one line a
 * request, never a body, written once per loop iteration). */
#include "server/http.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <malloc.h>
#include <poll.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include "server/json.h"

#define HTTP_NFMT IMGPROC_FMT__COUNT /* content types of stored files, unknown included */

static bool is_head(h2o_req_t *req)
{
    return h2o_memis(req->method.base, req->method.len, H2O_STRLIT("HEAD"));
}

void srv__add_header(h2o_req_t *req, const char *name, const char *value)
{
    /* h2o keeps the value pointer, not a copy: it must live in the request's pool */
    h2o_iovec_t v = h2o_strdup(&req->pool, value, SIZE_MAX);
    h2o_add_header_by_str(&req->pool, &req->res.headers, name, strlen(name), 0, NULL, v.base,
                          v.len);
}

void srv__set_env(h2o_req_t *req, const char *name, const char *fmt, ...)
{
    if (strchr(fmt, '%') == NULL) { /* a string literal: it outlives the request */
        *h2o_req_getenv(req, name, strlen(name), 1) = h2o_iovec_init(fmt, strlen(fmt));
        return;
    }
    char buf[64];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    *h2o_req_getenv(req, name, strlen(name), 1) =
        h2o_strdup(&req->pool, buf, (size_t)n < sizeof(buf) ? (size_t)n : sizeof(buf) - 1);
}

void srv__send_json(h2o_req_t *req, int status, const char *json, size_t len)
{
    static h2o_generator_t generator = {NULL, NULL};
    h2o_iovec_t body = h2o_strdup(&req->pool, json, len);
    req->res.status = status;
    req->res.reason = status < 300 ? "OK" : "Error";
    req->res.content_length = len;
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL,
                   H2O_STRLIT("application/json"));
    h2o_start_response(req, &generator);
    h2o_send(req, is_head(req) ? NULL : &body, is_head(req) ? 0 : 1, H2O_SEND_STATE_FINAL);
}

static void send_error_status(h2o_req_t *req, int status, const char *code, const char *msg)
{
    char body[1400];
    json_t j;
    json_begin(&j, body, sizeof(body));
    json_str(&j, "error", code);
    json_str(&j, "message", msg);
    size_t n = json_end(&j);
    srv__set_env(req, "TG_ERROR", "%s", code);
    srv__send_json(req, status, body, n);
}

/* What the responses of a path need, kept in its access logger (req->pathconf finds it):
 * the gate that Retry-After comes from, the metrics, and h2o's file handlers. */
struct responses {
    h2o_logger_t super;
    metrics_t *metrics;
    adm_gate_t *gate;
    bool log;                        /* http.access_log: a line per request */
    bool shared_etags;               /* s3 backend: ETags from STORE_XATTR_HTTP_ETAG */
    h2o_handler_t *files[HTTP_NFMT]; /* h2o's file handler for each content type */
    h2o_pathconf_t files_conf;       /* theirs: no request is bound to it */
};

static void log_access(h2o_logger_t *_self, h2o_req_t *req);

static const struct responses *responses_of(h2o_req_t *req)
{
    for (size_t i = 0; req->pathconf != NULL && i < req->pathconf->loggers.size; i++)
        if (req->pathconf->loggers.entries[i]->log_access == log_access)
            return (void *)req->pathconf->loggers.entries[i];
    return NULL;
}

void srv__send_err(h2o_req_t *req, err_domain_t domain, int err, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    err_http_t h = errors_http(domain, err);
    const struct responses *l = responses_of(req);
    if (h.status == 503 && l != NULL) {
        char ra[16];
        snprintf(ra, sizeof(ra), "%" PRIu32, adm_retry_after(l->gate));
        srv__add_header(req, "retry-after", ra);
    }
    send_error_status(req, h.status, h.code, msg);
}

/* --- files ------------------------------------------------------------------------ */

#define ETAG_MAX 160 /* an ETag as sent, ours or STORE_XATTR_HTTP_ETAG's */

/* Our validator: inode, size and mtime in ms. Originals are replaced by rename, so the
 * inode changes with every version, even one of the same size in the same second (h2o's
 * own "mtime-size" ETag would not). */
static char *put_hex(char *p, uint64_t v)
{
    char tmp[16];
    int n = 0;
    do
        tmp[n++] = "0123456789abcdef"[v & 15];
    while ((v >>= 4) != 0);
    while (n > 0)
        *p++ = tmp[--n];
    return p;
}

/* "inode-size-mtime_ms" in hex (ETAG_MAX holds the longest); by hand, because a cached
 * hit makes one per request and snprintf was a visible share of its CPU */
static size_t make_etag(const struct stat *st, char *out)
{
    char *p = out;
    *p++ = '"';
    p = put_hex(p, (uint64_t)st->st_ino);
    *p++ = '-';
    p = put_hex(p, (uint64_t)st->st_size);
    *p++ = '-';
    p = put_hex(p, (uint64_t)(st->st_mtim.tv_sec * 1000 + st->st_mtim.tv_nsec / 1000000));
    *p++ = '"';
    return (size_t)(p - out);
}

/* The ETag of the open file @p fd (stat @p st) into @p out (ETAG_MAX): the one stored
 * beside it (s3 backend, STORE_XATTR_HTTP_ETAG) when @p shared, else ours. Its length. */
static size_t file_etag(bool shared, int fd, const struct stat *st, char *out)
{
    ssize_t xl = shared ? fgetxattr(fd, STORE_XATTR_HTTP_ETAG, out, ETAG_MAX - 1) : -1;
    return xl > 0 ? (size_t)xl : make_etag(st, out);
}

static bool etag_matches(h2o_iovec_t inm, const char *etag, size_t etaglen)
{
    /* If-None-Match: "*" or a comma list of (weak or strong) tags; weak comparison: the
     * opaque tags, without W/ on either side */
    if (etaglen > 2 && etag[0] == 'W' && etag[1] == '/') {
        etag += 2;
        etaglen -= 2;
    }
    const char *p = inm.base, *end = inm.base + inm.len;
    while (p < end) {
        while (p < end && (*p == ' ' || *p == ','))
            p++;
        if (p < end && *p == '*')
            return true;
        if (end - p > 2 && p[0] == 'W' && p[1] == '/')
            p += 2;
        const char *q = p;
        while (q < end && *q != ',')
            q++;
        const char *t = q;
        while (t > p && t[-1] == ' ')
            t--;
        if ((size_t)(t - p) == etaglen && memcmp(p, etag, etaglen) == 0)
            return true;
        p = q;
    }
    return false;
}

/* What h2o's file handler does not know: our ETag. If-None-Match is answered here (h2o would
 * compare its own tag; left in place, it also keeps h2o from applying If-Modified-Since, as
 * RFC 9110 13.2.2 wants). A Range that h2o should not see is removed: one under an
 * If-Range naming another version, several ranges, or another unit (the whole file is
 * sent: RFC 9110 14.2 lets a server ignore a Range, and requires it for unknown units).
 * true when the 304 was sent. */
static bool answer_preconditions(h2o_req_t *req, const char *etag, size_t etaglen)
{
    ssize_t i;
    if ((i = h2o_find_header(&req->headers, H2O_TOKEN_IF_NONE_MATCH, -1)) != -1 &&
        etag_matches(req->headers.entries[i].value, etag, etaglen)) {
        req->res.status = 304;
        req->res.reason = "Not Modified";
        h2o_send_inline(req, NULL, 0);
        return true;
    }
    if ((i = h2o_find_header(&req->headers, H2O_TOKEN_RANGE, -1)) != -1) {
        h2o_iovec_t v = req->headers.entries[i].value;
        ssize_t ir = h2o_find_header(&req->headers, H2O_TOKEN_IF_RANGE, -1);
        if (v.len < 6 || memcmp(v.base, "bytes=", 6) != 0 || memchr(v.base, ',', v.len) != NULL ||
            (ir != -1 && (etag[0] == 'W' || /* If-Range compares strongly: never a weak tag */
                          !h2o_memis(req->headers.entries[ir].value.base,
                                     req->headers.entries[ir].value.len, etag, etaglen))))
            h2o_delete_header(&req->headers, i);
    }
    return false;
}

/* The loop's filecache (h2o's: path -> open descriptor and stat, which h2o's file handler
 * below finds too). A result's path never names other bytes (its generation is in the path,
 * and one made again is the same), so its descriptor may serve later iterations: a cached
 * hit then costs no open, fstat or close. Anything else empties the cache after the
 * iteration: an original (replaced in place by a PUT) and a failed open (h2o memoizes the
 * error, and the file may appear). http_filecache_sweep also empties it when the store
 * changed (an eviction or replacement by this instance: store_epoch) and at least once a
 * second, as the remembered hits of derive.c are forgotten. */
#define FILECACHE_KEEP_MS 1000
static _Thread_local struct {
    bool dirty;
    uint64_t epoch, since_ms;
} fc;

void http_filecache_sweep(h2o_context_t *ctx, uint64_t epoch, uint64_t now_ms)
{
    if (fc.dirty || epoch != fc.epoch || now_ms - fc.since_ms >= FILECACHE_KEEP_MS) {
        h2o_filecache_clear(ctx->filecache);
        fc.dirty = false;
        fc.epoch = epoch;
        fc.since_ms = now_ms;
    }
}

static bool serve_file(h2o_req_t *req, const char *path, imgproc_fmt_t fmt, struct stat *sb,
                       bool result)
{
    const struct responses *self = responses_of(req);
    if (self == NULL) /* a path without http_register: nothing to send files with */
        return false;
    h2o_filecache_t *cache = req->conn->ctx->filecache;
    if (!result)
        fc.dirty = true;
    h2o_filecache_ref_t *ref = h2o_filecache_open_file(cache, path, O_RDONLY | O_CLOEXEC);
    if (ref == NULL) {
        /* h2o may have memoized an earlier miss of this iteration (a result that a job has
         * committed since): look once more with the cache emptied */
        fc.dirty = true;
        h2o_filecache_clear(cache);
        if ((ref = h2o_filecache_open_file(cache, path, O_RDONLY | O_CLOEXEC)) == NULL)
            return false;
    }
    unsigned char magic[16];
    ssize_t n = 0;
    if (!S_ISREG(ref->st.st_mode) ||
        (fmt == IMGPROC_FMT_UNKNOWN && (n = pread(ref->fd, magic, sizeof(magic), 0)) < 0)) {
        h2o_filecache_close_file(ref);
        return false;
    }
    if (fmt == IMGPROC_FMT_UNKNOWN)
        fmt = imgproc_sniff(magic, (size_t)n);
    struct stat st = ref->st;
    char *etag = h2o_mem_alloc_pool(&req->pool, ETAG_MAX);
    size_t etaglen = file_etag(self->shared_etags, ref->fd, &st, etag);
    h2o_filecache_close_file(ref);
    if (sb != NULL)
        *sb = st;

    size_t nheaders = req->res.headers.size;
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_ETAG, NULL, etag, etaglen);
    if (answer_preconditions(req, etag, etaglen))
        return true;
    /* h2o's file handler of the file's type: Last-Modified, If-Modified-Since (304), one
     * Range (206 / 416), HEAD, Content-Length and the body from the cached descriptor. It
     * maps a request path to a file; ours is the file's absolute path (store.h). */
    h2o_iovec_t saved = req->path_normalized;
    req->path_normalized = h2o_iovec_init(path, strlen(path));
    h2o_handler_t *h = self->files[fmt < HTTP_NFMT ? fmt : IMGPROC_FMT_UNKNOWN];
    int r = h->on_req(h, req);
    req->path_normalized = saved;
    if (r != 0) /* gone since we looked: nothing was sent */
        req->res.headers.size = nheaders;
    return r == 0;
}

bool srv__serve_path(h2o_req_t *req, const char *path, imgproc_fmt_t fmt, struct stat *sb)
{
    return serve_file(req, path, fmt, sb, false);
}

bool srv__serve_result(h2o_req_t *req, const char *path, imgproc_fmt_t fmt, struct stat *sb)
{
    return serve_file(req, path, fmt, sb, true);
}

/* --- hot results: a small result's bytes and headers in memory -------------------------- */

struct srv_hot {
    time_t mtime;
    imgproc_fmt_t fmt;
    size_t held; /* what its allocation takes, counted in hot_held until it is freed */
    size_t etaglen, len;
    char etag[ETAG_MAX];
    char last_modified[H2O_TIMESTR_RFC1123_LEN + 1];
    char body[];
};

static _Atomic uint64_t hot_held; /* bytes of every srv_hot alive, all loops */

uint64_t srv__hot_bytes(void)
{
    return atomic_load_explicit(&hot_held, memory_order_relaxed);
}

static void hot_dispose(void *p)
{
    atomic_fetch_sub_explicit(&hot_held, ((srv_hot_t *)p)->held, memory_order_relaxed);
}

/* h2o's shared chunk around @p p: what malloc really gave, size class included */
static size_t hot_usable(srv_hot_t *p)
{
    return malloc_usable_size(
        H2O_STRUCT_FROM_MEMBER(struct st_h2o_mem_pool_shared_entry_t, bytes, (void *)p));
}

srv_hot_t *srv__hot_read(h2o_req_t *req, const char *path, imgproc_fmt_t fmt, uint64_t cap)
{
    const struct responses *self = responses_of(req);
    if (self == NULL || fmt == IMGPROC_FMT_UNKNOWN || cap == 0)
        return NULL;
    /* the descriptor and stat serve_file just took from the loop's filecache: the same
     * file as the response, without opening it again */
    h2o_filecache_ref_t *ref =
        h2o_filecache_open_file(req->conn->ctx->filecache, path, O_RDONLY | O_CLOEXEC);
    if (ref == NULL)
        return NULL;
    int fd = ref->fd;
    struct stat st = ref->st;
    srv_hot_t *h = NULL;
    if (!S_ISREG(st.st_mode) || st.st_size > SRV_HOT_MAX || sizeof(*h) + (uint64_t)st.st_size > cap)
        goto fail;
    size_t len = (size_t)st.st_size;
    h = h2o_mem_alloc_shared(NULL, sizeof(*h) + len, hot_dispose);
    h->held = 0; /* what hot_dispose gives back: nothing until it is counted */
    /* counted at its real size (the allocator's size class) before it is kept: the loops
     * together never hold more than @p cap; one that would pass it is freed at once */
    size_t held = hot_usable(h);
    if (atomic_fetch_add_explicit(&hot_held, held, memory_order_relaxed) + held > cap) {
        atomic_fetch_sub_explicit(&hot_held, held, memory_order_relaxed);
        goto fail;
    }
    h->held = held;
    h->mtime = st.st_mtime;
    h->fmt = fmt;
    h->len = len;
    for (size_t got = 0; got < len;) {
        ssize_t n = pread(fd, h->body + got, len - got, (off_t)got);
        if (n <= 0) /* results are never written in place: a short read is an error */
            goto fail;
        got += (size_t)n;
    }
    h->etaglen = file_etag(self->shared_etags, fd, &st, h->etag);
    struct tm gm;
    gmtime_r(&st.st_mtime, &gm);
    h2o_time2str_rfc1123(h->last_modified, &gm);
    h2o_filecache_close_file(ref);
    return h;
fail:
    if (h != NULL)
        h2o_mem_release_shared(h);
    h2o_filecache_close_file(ref);
    return NULL;
}

void srv__hot_release(srv_hot_t *h)
{
    if (h != NULL)
        h2o_mem_release_shared(h);
}

/* What srv__serve_result sends for the same file (h2o's file handler and ours), without
 * Range: If-None-Match against our ETag, then If-Modified-Since as h2o compares it. */
bool srv__serve_hot(h2o_req_t *req, srv_hot_t *h)
{
    if (h2o_find_header(&req->headers, H2O_TOKEN_RANGE, -1) != -1)
        return false;
    /* the headers and the body point into @p h: it lives until the request is done */
    h2o_mem_link_shared(&req->pool, h);
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_ETAG, NULL, h->etag, h->etaglen);
    if (answer_preconditions(req, h->etag, h->etaglen))
        return true;
    ssize_t i;
    struct tm ims;
    if (h2o_find_header(&req->headers, H2O_TOKEN_IF_NONE_MATCH, -1) == -1 &&
        (i = h2o_find_header(&req->headers, H2O_TOKEN_IF_MODIFIED_SINCE, -1)) != -1 &&
        h2o_time_parse_rfc1123(req->headers.entries[i].value.base,
                               req->headers.entries[i].value.len, &ims) == 0 &&
        timegm(&ims) >= h->mtime) {
        req->res.status = 304;
        req->res.reason = "Not Modified";
        h2o_send_inline(req, NULL, 0);
        return true;
    }
    static h2o_generator_t generator = {NULL, NULL};
    const char *mime = imgproc_fmt_mime(h->fmt);
    req->res.status = 200;
    req->res.reason = "OK";
    req->res.content_length = h->len;
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, mime, strlen(mime));
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_LAST_MODIFIED, NULL, h->last_modified,
                   H2O_TIMESTR_RFC1123_LEN);
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_ACCEPT_RANGES, NULL,
                   H2O_STRLIT("bytes"));
    h2o_start_response(req, &generator);
    h2o_iovec_t body = h2o_iovec_init(h->body, h->len);
    h2o_send(req, is_head(req) ? NULL : &body, is_head(req) ? 0 : 1, H2O_SEND_STATE_FINAL);
    return true;
}

/* --- client liveness ------------------------------------------------------------------ */

int srv__req_fd(h2o_req_t *req)
{
    h2o_socket_t *sock =
        req->conn->callbacks->get_socket ? req->conn->callbacks->get_socket(req->conn) : NULL;
    return sock ? h2o_socket_get_fd(sock) : -1;
}

bool srv__client_gone_fd(int fd)
{
    if (fd < 0)
        return false;
    /* h2o stops reading once the request is complete, so it cannot see a hang-up
     * while we work; ask the kernel. POLLRDHUP: the peer closed its side. */
    struct pollfd p = {.fd = fd, .events = POLLRDHUP};
    if (poll(&p, 1, 0) <= 0)
        return false;
    return (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0;
}

/* --- JSON for h2o's own errors ---------------------------------------------------- */

struct json_ostream {
    h2o_ostream_t super;
    h2o_iovec_t body;
    bool sent;
};

static void json_ostream_send(h2o_ostream_t *_self, h2o_req_t *req, h2o_iovec_t *bufs,
                              size_t bufcnt, h2o_send_state_t state)
{
    struct json_ostream *self = (void *)_self;
    /* drop h2o's text body; send ours once */
    if (!self->sent && !is_head(req)) {
        self->sent = true;
        h2o_ostream_send_next(&self->super, req, &self->body, 1, state);
    } else {
        h2o_ostream_send_next(&self->super, req, NULL, 0, state);
    }
}

static void on_setup_json_errors(h2o_filter_t *self, h2o_req_t *req, h2o_ostream_t **slot)
{
    ssize_t ct = h2o_find_header(&req->res.headers, H2O_TOKEN_CONTENT_TYPE, -1);
    if (req->res.status >= 400 && ct != -1 &&
        h2o_memis(req->res.headers.entries[ct].value.base, req->res.headers.entries[ct].value.len,
                  H2O_STRLIT("text/plain; charset=utf-8"))) {
        const char *code = errors_http(ERR_H2O, req->res.status).code;
        srv__set_env(req, "TG_ERROR", "%s", code);
        const char *reason = req->res.reason ? req->res.reason : "error";
        char *json = h2o_mem_alloc_pool(&req->pool, 400);
        json_t j;
        json_begin(&j, json, 400);
        json_str(&j, "error", code);
        json_str(&j, "message", reason);
        size_t n = json_end(&j);
        req->res.headers.entries[ct].value = h2o_iovec_init(H2O_STRLIT("application/json"));
        req->res.content_length = (size_t)n;
        struct json_ostream *os = (void *)h2o_add_ostream(req, sizeof(*os), slot);
        os->super.do_send = json_ostream_send;
        os->body = h2o_iovec_init(json, (size_t)n);
        os->sent = false;
        slot = &os->super.next;
    }
    h2o_setup_next_ostream(req, slot);
}

/* --- access log and request metrics ------------------------------------------------ */

static h2o_iovec_t env_or(h2o_req_t *req, const char *name, size_t len, const char *dflt)
{
    h2o_iovec_t *v = h2o_req_getenv(req, name, len, 0);
    return v != NULL ? *v : h2o_iovec_init(dflt, strlen(dflt));
}

static metrics_route_t route_of(h2o_req_t *req)
{
    h2o_iovec_t r = env_or(req, H2O_STRLIT("TG_ROUTE"), "other");
    for (int i = 0; i < METRICS_ROUTE_MAX; i++)
        if (h2o_memis(r.base, r.len, metrics_route_name(i), strlen(metrics_route_name(i))))
            return i;
    return METRICS_ROUTE_OTHER;
}

/* Access lines gather in the loop thread's buffer and go to stderr in whole-line writes of
 * at most PIPE_BUF bytes (atomic on a pipe, so lines of two loops never interleave): when
 * the buffer is full and after every loop iteration (http_log_flush). Memory: PIPE_BUF
 * bytes per thread that logs. */
static _Thread_local struct {
    size_t len;
    char buf[PIPE_BUF];
} logbuf;

static void write_all(const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(STDERR_FILENO, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return; /* stderr is gone: nothing to tell it */
        p += w, n -= (size_t)w;
    }
}

void http_log_flush(void)
{
    write_all(logbuf.buf, logbuf.len);
    logbuf.len = 0;
}

static void log_append(const char *line, size_t n)
{
    if (logbuf.len + n > sizeof(logbuf.buf))
        http_log_flush();
    if (n > sizeof(logbuf.buf)) {
        write_all(line, n);
        return;
    }
    memcpy(logbuf.buf + logbuf.len, line, n);
    logbuf.len += n;
}

static void log_access(h2o_logger_t *_self, h2o_req_t *req)
{
    struct responses *self = (void *)_self;
    int status = req->res.status;
    metrics_route_t route = route_of(req);
    atomic_fetch_add_explicit(&self->metrics->requests[route][metrics_status_slot(status)], 1,
                              memory_order_relaxed);
    atomic_fetch_add_explicit(&self->metrics->bytes_out, req->bytes_sent, memory_order_relaxed);
    atomic_fetch_add_explicit(&self->metrics->bytes_in, req->entity.len, memory_order_relaxed);
    if (!self->log)
        return;

    int64_t dur_us = -1;
    struct timeval now;
    gettimeofday(&now, NULL);
    if (req->timestamps.request_begin_at.tv_sec != 0)
        dur_us = (int64_t)(now.tv_sec - req->timestamps.request_begin_at.tv_sec) * 1000000 +
                 (now.tv_usec - req->timestamps.request_begin_at.tv_usec);
    /* proc_ms: from the complete request (body received) to now: the server's own time,
     * without the client's upload time */
    int64_t proc_us = -1;
    if (req->processed_at.at.tv_sec != 0)
        proc_us = (int64_t)(now.tv_sec - req->processed_at.at.tv_sec) * 1000000 +
                  (now.tv_usec - req->processed_at.at.tv_usec);
    /* bounded fields: the path is cut at 256 bytes and escaped; no body ever */
    h2o_iovec_t a = env_or(req, H2O_STRLIT("TG_ADMISSION"), "");
    h2o_iovec_t e = env_or(req, H2O_STRLIT("TG_ERROR"), "");
    h2o_iovec_t wait = env_or(req, H2O_STRLIT("TG_WAIT_MS"), "0");
    h2o_iovec_t est = env_or(req, H2O_STRLIT("TG_ESTIMATE"), "0");
    char line[1600];
    json_t j;
    json_begin(&j, line, sizeof(line));
    json_milli(&j, "t", (int64_t)now.tv_sec * 1000 + now.tv_usec / 1000);
    json_str(&j, "log", "access");
    json_strn(&j, "method", req->input.method.base,
              req->input.method.len < 16 ? req->input.method.len : 16);
    json_strn(&j, "path", req->input.path.base,
              req->input.path.len < 256 ? req->input.path.len : 256);
    json_str(&j, "route", metrics_route_name(route));
    json_i64(&j, "status", status);
    json_u64(&j, "bytes", req->bytes_sent);
    json_u64(&j, "in", req->entity.len);
    json_milli(&j, "ms", dur_us < 0 ? -1000 : dur_us);
    json_milli(&j, "proc_ms", proc_us < 0 ? -1000 : proc_us);
    json_u64(&j, "wait_ms", strtoull(wait.base, NULL, 10));
    json_u64(&j, "estimate", strtoull(est.base, NULL, 10));
    json_strn(&j, "admission", a.base, a.len < 40 ? a.len : 40);
    json_strn(&j, "error", e.base, e.len < 40 ? e.len : 40);
    size_t n = json_end(&j);
    log_append(line, n);
}

void http_register(h2o_pathconf_t *pathconf, const room_services_t *s)
{
    h2o_filter_t *f = h2o_create_filter(pathconf, sizeof(*f));
    f->on_setup_ostream = on_setup_json_errors;
    struct responses *l = (void *)h2o_create_logger(pathconf, sizeof(*l));
    l->super.log_access = log_access;
    l->metrics = s->metrics;
    l->gate = s->gate;
    l->log = s->cfg->access_log;
    l->shared_etags = s->cfg->storage_backend == CFG_BACKEND_S3;
    /* h2o's file handlers live on a pathconf of their own, reachable by no request: each
     * has a single content type (its default; no extension is mapped) and sends our ETag */
    h2o_pathconf_t *files = &l->files_conf;
    h2o_mimemap_t *none = h2o_mimemap_create();
    h2o_config_init_pathconf(files, pathconf->global, "/", none);
    static const char *no_index[] = {NULL};
    for (int fmt = 0; fmt < HTTP_NFMT; fmt++) {
        h2o_mimemap_t *m = h2o_mimemap_create();
        h2o_mimemap_clear_types(m);
        h2o_mimemap_set_default_type(m, imgproc_fmt_mime(fmt), NULL);
        l->files[fmt] =
            (h2o_handler_t *)h2o_file_register(files, "/", no_index, m, H2O_FILE_FLAG_NO_ETAG);
        h2o_mem_release_shared(m);
    }
    h2o_mem_release_shared(none);
}
