/* http — response helpers shared by the handlers: JSON errors (the one place error
 * codes become statuses), file responses with ETag / Last-Modified / 304 / Range, the
 * filter that turns h2o's own text errors into JSON, and the access logger (one line a
 * request, never a body). */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "server/http.h"
#include "server/json.h"

#define FILE_CHUNK (64 * 1024)

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

/* The access logger of the request's path holds the gate that Retry-After comes from. */
struct access_logger {
    h2o_logger_t super;
    metrics_t *metrics;
    adm_gate_t *gate;
    bool enabled; /* http.access_log: a line per request; the metrics are always kept */
};

static void log_access(h2o_logger_t *_self, h2o_req_t *req);

static const struct access_logger *logger_of(h2o_req_t *req)
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
    const struct access_logger *l = logger_of(req);
    if (h.status == 503 && l != NULL) {
        char ra[16];
        snprintf(ra, sizeof(ra), "%" PRIu32, adm_retry_after(l->gate));
        srv__add_header(req, "retry-after", ra);
    }
    send_error_status(req, h.status, h.code, msg);
}

/* --- files ------------------------------------------------------------------------ */

struct file_gen {
    h2o_generator_t super;
    int fd;
    off_t off;
    uint64_t remaining;
    char *buf;
};

static void on_file_dispose(void *p)
{
    struct file_gen *g = p;
    if (g->fd >= 0)
        close(g->fd);
}

static void file_proceed(h2o_generator_t *_self, h2o_req_t *req)
{
    struct file_gen *self = (void *)_self;
    size_t want = self->remaining < FILE_CHUNK ? (size_t)self->remaining : FILE_CHUNK;
    ssize_t n;
    while ((n = pread(self->fd, self->buf, want, self->off)) < 0 && errno == EINTR)
        ;
    if (n <= 0) {
        /* the file shrank under us (it never should: we replace by rename); end the
         * response short so the client sees a length mismatch rather than a hang */
        h2o_send(req, NULL, 0, H2O_SEND_STATE_ERROR);
        return;
    }
    self->off += n;
    self->remaining -= (uint64_t)n;
    h2o_iovec_t buf = h2o_iovec_init(self->buf, (size_t)n);
    h2o_send(req, &buf, 1,
             self->remaining == 0 ? H2O_SEND_STATE_FINAL : H2O_SEND_STATE_IN_PROGRESS);
}

static void file_stop(h2o_generator_t *_self, h2o_req_t *req)
{
    /* the fd is closed when the request's pool is cleared */
}

/* Parses a single "bytes=a-b" / "bytes=a-" / "bytes=-n" range. 1 = ok, 0 = ignore the
 * header (multi-range or malformed: we answer 200 with the whole file, as RFC 9110
 * allows), -1 = unsatisfiable. */
static int parse_range(h2o_iovec_t v, uint64_t size, uint64_t *first, uint64_t *last)
{
    if (v.len < 7 || memcmp(v.base, "bytes=", 6) != 0 || memchr(v.base, ',', v.len) != NULL)
        return 0;
    const char *p = v.base + 6, *end = v.base + v.len;
    uint64_t a = 0, b = 0;
    bool has_a = false, has_b = false;
    for (; p < end && *p >= '0' && *p <= '9'; p++, has_a = true) {
        if (a > (UINT64_MAX - 9) / 10)
            return 0;
        a = a * 10 + (uint64_t)(*p - '0');
    }
    if (p == end || *p != '-')
        return 0;
    for (p++; p < end && *p >= '0' && *p <= '9'; p++, has_b = true) {
        if (b > (UINT64_MAX - 9) / 10)
            return 0;
        b = b * 10 + (uint64_t)(*p - '0');
    }
    if (p != end || (!has_a && !has_b))
        return 0;
    if (!has_a) { /* suffix: the last b bytes */
        if (b == 0 || size == 0)
            return -1;
        *first = b >= size ? 0 : size - b;
        *last = size - 1;
        return 1;
    }
    if (has_b && b < a)
        return 0;
    if (a >= size)
        return -1;
    *first = a;
    *last = has_b && b < size ? b : size - 1;
    return 1;
}

static bool etag_matches(h2o_iovec_t inm, const char *etag, size_t etaglen)
{
    /* If-None-Match: "*" or a comma list of (weak or strong) tags; weak comparison */
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

/* Our validator: inode, size and mtime in ms. Originals are replaced by rename, so the
 * inode changes with every version, even one of the same size in the same second (h2o's
 * own "mtime-size" ETag would not). */
static size_t make_etag(const struct stat *st, char *out, size_t cap)
{
    return (size_t)snprintf(
        out, cap, "\"%" PRIx64 "-%" PRIx64 "-%lx\"", (uint64_t)st->st_ino, (uint64_t)st->st_size,
        (unsigned long)(st->st_mtim.tv_sec * 1000 + st->st_mtim.tv_nsec / 1000000));
}

/* Sends an open file answering conditionals, a Range and HEAD; takes ownership of @p fd. */
static void send_file_full(h2o_req_t *req, int fd, const struct stat *st, const char *mime)
{
    struct file_gen *gen = h2o_mem_alloc_shared(&req->pool, sizeof(*gen), on_file_dispose);
    gen->fd = fd;
    gen->super.proceed = file_proceed;
    gen->super.stop = file_stop;
    gen->buf = NULL;

    uint64_t size = (uint64_t)st->st_size;
    char *etag = h2o_mem_alloc_pool(&req->pool, 64);
    size_t etaglen = make_etag(st, etag, 64);
    char *lm = h2o_mem_alloc_pool(&req->pool, H2O_TIMESTR_RFC1123_LEN + 1);
    struct tm gmt;
    gmtime_r(&st->st_mtime, &gmt);
    h2o_time2str_rfc1123(lm, &gmt);

    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_ETAG, NULL, etag, etaglen);
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_LAST_MODIFIED, NULL, lm,
                   H2O_TIMESTR_RFC1123_LEN);
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_ACCEPT_RANGES, NULL,
                   H2O_STRLIT("bytes"));

    /* conditional GET: If-None-Match wins over If-Modified-Since (RFC 9110 13.2.2) */
    ssize_t i;
    bool not_modified = false;
    if ((i = h2o_find_header(&req->headers, H2O_TOKEN_IF_NONE_MATCH, -1)) != -1) {
        not_modified = etag_matches(req->headers.entries[i].value, etag, etaglen);
    } else if ((i = h2o_find_header(&req->headers, H2O_TOKEN_IF_MODIFIED_SINCE, -1)) != -1) {
        h2o_iovec_t v = req->headers.entries[i].value;
        not_modified = v.len == H2O_TIMESTR_RFC1123_LEN && memcmp(v.base, lm, v.len) == 0;
        struct tm t;
        if (!not_modified && h2o_time_parse_rfc1123(v.base, v.len, &t) == 0)
            not_modified = timegm(&t) >= st->st_mtime;
    }
    if (not_modified) {
        static h2o_generator_t nogen = {NULL, NULL};
        req->res.status = 304;
        req->res.reason = "Not Modified";
        h2o_start_response(req, &nogen);
        h2o_send(req, NULL, 0, H2O_SEND_STATE_FINAL);
        return;
    }

    uint64_t first = 0, last = size ? size - 1 : 0;
    int range = 0;
    if ((i = h2o_find_header(&req->headers, H2O_TOKEN_RANGE, -1)) != -1) {
        range = parse_range(req->headers.entries[i].value, size, &first, &last);
        /* If-Range with a different validator: send the whole file */
        ssize_t ir = h2o_find_header(&req->headers, H2O_TOKEN_IF_RANGE, -1);
        if (range != 0 && ir != -1 &&
            !h2o_memis(req->headers.entries[ir].value.base, req->headers.entries[ir].value.len,
                       etag, etaglen))
            range = 0, first = 0, last = size ? size - 1 : 0;
    }
    if (range < 0) {
        char *cr = h2o_mem_alloc_pool(&req->pool, 48);
        int n = snprintf(cr, 48, "bytes */%" PRIu64, size);
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_RANGE, NULL, cr, (size_t)n);
        srv__send_err(req, ERR_REQ, ERR_REQ_RANGE, "the range is outside the %" PRIu64 "-byte file",
                      size);
        return;
    }
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, mime, strlen(mime));
    if (range > 0) {
        char *cr = h2o_mem_alloc_pool(&req->pool, 80);
        int n = snprintf(cr, 80, "bytes %" PRIu64 "-%" PRIu64 "/%" PRIu64, first, last, size);
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_RANGE, NULL, cr, (size_t)n);
        req->res.status = 206;
        req->res.reason = "Partial Content";
    } else {
        req->res.status = 200;
        req->res.reason = "OK";
    }
    gen->off = (off_t)first;
    gen->remaining = size == 0 ? 0 : last - first + 1;
    req->res.content_length = (size_t)gen->remaining;
    h2o_start_response(req, &gen->super);
    if (is_head(req) || gen->remaining == 0) {
        h2o_send(req, NULL, 0, H2O_SEND_STATE_FINAL);
        return;
    }
    gen->buf = h2o_mem_alloc_pool(&req->pool, gen->remaining < FILE_CHUNK ? (size_t)gen->remaining
                                                                          : FILE_CHUNK);
    file_proceed(&gen->super, req);
}

bool srv__serve_path(h2o_req_t *req, const char *path, struct stat *sb)
{
    /* the loop's h2o filecache: files opened in this loop iteration are opened once (it
     * is cleared after every iteration, so a replaced file is never served stale) */
    h2o_filecache_ref_t *ref =
        h2o_filecache_open_file(req->conn->ctx->filecache, path, O_RDONLY | O_CLOEXEC);
    if (ref == NULL)
        return false;
    unsigned char magic[16];
    ssize_t n;
    if (!S_ISREG(ref->st.st_mode) || (n = pread(ref->fd, magic, sizeof(magic), 0)) < 0) {
        h2o_filecache_close_file(ref);
        return false;
    }
    struct stat st = ref->st;
    if (sb != NULL)
        *sb = st;
    const char *mime = imgproc_fmt_mime(imgproc_sniff(magic, (size_t)n));
    bool plain = !is_head(req) && h2o_find_header(&req->headers, H2O_TOKEN_RANGE, -1) == -1 &&
                 h2o_find_header(&req->headers, H2O_TOKEN_IF_NONE_MATCH, -1) == -1 &&
                 h2o_find_header(&req->headers, H2O_TOKEN_IF_MODIFIED_SINCE, -1) == -1;
    if (plain) {
        /* the common case, a whole GET: h2o's own file sender (Last-Modified,
         * Accept-Ranges, Content-Length, the body from the cached descriptor) with our ETag */
        char *etag = h2o_mem_alloc_pool(&req->pool, 64);
        size_t etaglen = make_etag(&st, etag, 64);
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_ETAG, NULL, etag, etaglen);
        h2o_filecache_close_file(ref);
        return h2o_file_send(req, 200, "OK", path, h2o_iovec_init(mime, strlen(mime)),
                             H2O_FILE_FLAG_NO_ETAG) == 0;
    }
    /* conditionals, ranges and HEAD: answered here, from the same open file */
    int fd = dup(ref->fd);
    h2o_filecache_close_file(ref);
    if (fd < 0)
        return false;
    send_file_full(req, fd, &st, mime);
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

static void log_access(h2o_logger_t *_self, h2o_req_t *req)
{
    struct access_logger *self = (void *)_self;
    int status = req->res.status;
    metrics_route_t route = route_of(req);
    atomic_fetch_add_explicit(&self->metrics->requests[route][metrics_status_slot(status)], 1,
                              memory_order_relaxed);
    atomic_fetch_add_explicit(&self->metrics->bytes_out, req->bytes_sent, memory_order_relaxed);
    atomic_fetch_add_explicit(&self->metrics->bytes_in, req->entity.len, memory_order_relaxed);
    if (!self->enabled)
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
    json_fixed3(&j, "t", (double)now.tv_sec + (double)(now.tv_usec / 1000) / 1000.0);
    json_str(&j, "log", "access");
    json_strn(&j, "method", req->input.method.base,
              req->input.method.len < 16 ? req->input.method.len : 16);
    json_strn(&j, "path", req->input.path.base,
              req->input.path.len < 256 ? req->input.path.len : 256);
    json_str(&j, "route", metrics_route_name(route));
    json_i64(&j, "status", status);
    json_u64(&j, "bytes", req->bytes_sent);
    json_u64(&j, "in", req->entity.len);
    json_fixed3(&j, "ms", dur_us < 0 ? -1.0 : (double)dur_us / 1000.0);
    json_fixed3(&j, "proc_ms", proc_us < 0 ? -1.0 : (double)proc_us / 1000.0);
    json_u64(&j, "wait_ms", strtoull(wait.base, NULL, 10));
    json_u64(&j, "estimate", strtoull(est.base, NULL, 10));
    json_strn(&j, "admission", a.base, a.len < 40 ? a.len : 40);
    json_strn(&j, "error", e.base, e.len < 40 ? e.len : 40);
    size_t n = json_end(&j);
    fwrite(line, 1, n, stderr);
}

void http_register(h2o_pathconf_t *pathconf, const room_services_t *s)
{
    h2o_filter_t *f = h2o_create_filter(pathconf, sizeof(*f));
    f->on_setup_ostream = on_setup_json_errors;
    struct access_logger *l = (void *)h2o_create_logger(pathconf, sizeof(*l));
    l->super.log_access = log_access;
    l->metrics = s->metrics;
    l->gate = s->gate;
    l->enabled = s->cfg->access_log;
}
