/* originals — PUT, DELETE and GET/HEAD of stored files.
 * Memory bound of an upload: h2o holds the body; above http.upload_spill it lives in an
 * unlinked mmap'd file under storage.root/tmp, so anonymous memory stays at the spill
 * threshold per connection. The handler probes the header in place (no copy) and an
 * io thread writes the bytes to a temp file straight from that mapping, fsyncs and
 * renames: no second copy of the body exists at any time, and none is ever logged. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "server/auth.h"
#include "server/iopool.h"
#include "server/json.h"
#include "server/http.h"
#include "server/route.h"

/* The room: what it borrows from the process, and its per-loop io receiver. */
typedef struct {
    h2o_handler_t super;
    const cfg_t *cfg;
    store_t *store;
    metrics_t *metrics;
} originals_t;

struct originals_loop {
    h2o_multithread_receiver_t io_rx; /* completions of this loop's writes (iopool.h) */
};

/* Writes need the Bearer token when one is configured, else a loopback client. */
static bool check_write_auth(originals_t *self, h2o_req_t *req)
{
    const char *msg = NULL;
    int code = auth_write(self->cfg->write_token, req, &msg);
    if (code == 0)
        return true;
    if (code == ERR_AUTH_NO_TOKEN)
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_WWW_AUTHENTICATE, NULL,
                       H2O_STRLIT("Bearer"));
    srv__send_err(req, ERR_AUTH, code, "%s", msg);
    return false;
}

static struct originals_loop *loop_of(originals_t *self, h2o_req_t *req)
{
    return h2o_context_get_handler_context(req->conn->ctx, &self->super);
}

struct put_task {
    iopool_task_t super;
    h2o_req_t *req;
    store_t *store;
    const char *key; /* in req->pool */
    h2o_iovec_t body;
    imgproc_probe_t probe;
    bool replaced;
    int ret;
    char err[256];
};

static void put_run(iopool_task_t *_t)
{
    struct put_task *t = (void *)_t;
    t->ret = store_put(t->store, t->key, t->body.base, t->body.len, &t->replaced, t->err,
                       sizeof(t->err));
}

static void put_done(iopool_task_t *_t)
{
    struct put_task *t = (void *)_t;
    h2o_req_t *req = t->req;
    if (t->ret != 0) {
        if (t->ret != -STORE_E_NOSPACE && t->ret != -STORE_E_CONFLICT) {
            char line[900];
            json_t j;
            json_begin(&j, line, sizeof(line));
            json_str(&j, "log", "error");
            json_str(&j, "op", "put");
            json_str(&j, "key", t->key);
            json_str(&j, "error", t->err);
            fwrite(line, 1, json_end(&j), stderr);
        }
        srv__send_err(req, ERR_STORE, t->ret, "could not store the upload: %s", t->err);
    } else {
        char body[900];
        json_t j;
        json_begin(&j, body, sizeof(body));
        json_str(&j, "key", t->key);
        json_u64(&j, "bytes", t->body.len);
        json_str(&j, "format", imgproc_fmt_name(t->probe.fmt));
        json_u64(&j, "width", t->probe.width);
        json_u64(&j, "height", t->probe.height);
        size_t n = json_end(&j);
        srv__send_json(req, t->replaced ? 200 : 201, body, n);
    }
    free(t);
}

static void handle_put(originals_t *self, h2o_req_t *req, const char *key, size_t keylen)
{
    if (!check_write_auth(self, req))
        return;
    h2o_iovec_t body = req->entity;
    if (body.base == NULL || body.len == 0) {
        srv__send_err(req, ERR_REQ, ERR_REQ_EMPTY_BODY,
                      "PUT needs the image bytes as the request body");
        return;
    }
    imgproc_probe_t probe;
    imgproc_err_t ierr = {0};
    if (imgproc_sniff(body.base, body.len) == IMGPROC_FMT_UNKNOWN) {
        atomic_fetch_add_explicit(&self->metrics->rejected_format, 1, memory_order_relaxed);
        srv__send_err(req, ERR_REQ, ERR_REQ_UNSUPPORTED_BODY,
                      "the body is not a JPEG, PNG, WebP, GIF, TIFF, HEIC or AVIF image");
        return;
    }
    /* header only: no pixel is decoded on upload */
    if (imgproc_probe_buf(body.base, body.len, &probe, &ierr) != 0) {
        /* a size the decoder refuses is 413 like max_pixels; a feature it lacks 415
         * unsupported_format; anything else a malformed header */
        int code = IMGPROC_E_CORRUPT;
        const char *what = "the image header is malformed";
        if (ierr.code == IMGPROC_E_TOO_LARGE) {
            code = IMGPROC_E_TOO_LARGE;
            what = "the header declares a size the decoder refuses";
        } else if (ierr.code == IMGPROC_E_UNSUPPORTED) {
            code = IMGPROC_E_UNSUPPORTED;
            what = "the image uses a feature no decoder here supports";
        }
        atomic_fetch_add_explicit(code == IMGPROC_E_TOO_LARGE ? &self->metrics->rejected_pixels
                                                              : &self->metrics->rejected_format,
                                  1, memory_order_relaxed);
        srv__send_err(req, ERR_IMGPROC, code, "%s: %s", what, ierr.msg);
        return;
    }
    if ((uint64_t)probe.width * probe.height > self->cfg->max_pixels) {
        atomic_fetch_add_explicit(&self->metrics->rejected_pixels, 1, memory_order_relaxed);
        srv__send_err(req, ERR_REQ, ERR_REQ_TOO_MANY_PIXELS,
                      "the header declares %" PRIu32 "x%" PRIu32
                      " pixels, over limits.max_pixels %" PRIu64,
                      probe.width, probe.height, self->cfg->max_pixels);
        return;
    }
    if (!imgproc_is_complete(body.base, body.len, probe.fmt)) {
        atomic_fetch_add_explicit(&self->metrics->rejected_format, 1, memory_order_relaxed);
        srv__send_err(req, ERR_IMGPROC, IMGPROC_E_CORRUPT,
                      "the %s image is truncated: it ends before its last marker",
                      imgproc_fmt_name(probe.fmt));
        return;
    }
    struct put_task *t = calloc(1, sizeof(*t));
    if (t == NULL) {
        srv__send_err(req, ERR_REQ, ERR_REQ_BUSY, "out of memory");
        return;
    }
    t->super.reply_to = &loop_of(self, req)->io_rx;
    t->store = self->store;
    t->super.run = put_run;
    t->super.done = put_done;
    t->req = req;
    t->key = h2o_strdup(&req->pool, key, keylen).base;
    t->body = body; /* borrowed: h2o keeps it until we respond, reading is stopped */
    t->probe = probe;
    iopool_submit(&t->super);
}

struct del_task {
    iopool_task_t super;
    h2o_req_t *req;
    store_t *store;
    const char *key;
    int ret;
};

static void del_run(iopool_task_t *_t)
{
    struct del_task *t = (void *)_t;
    t->ret = store_delete(t->store, t->key);
}

static void del_done(iopool_task_t *_t)
{
    struct del_task *t = (void *)_t;
    static h2o_generator_t gen = {NULL, NULL};
    if (t->ret == -STORE_E_NOTFOUND) {
        srv__send_err(t->req, ERR_STORE, t->ret, "no original stored under this key");
    } else if (t->ret != 0) {
        srv__send_err(t->req, ERR_STORE, t->ret, "could not delete");
    } else {
        t->req->res.status = 204;
        t->req->res.reason = "No Content";
        h2o_start_response(t->req, &gen);
        h2o_send(t->req, NULL, 0, H2O_SEND_STATE_FINAL);
    }
    free(t);
}

static void handle_delete(originals_t *self, h2o_req_t *req, const char *key, size_t keylen)
{
    if (!check_write_auth(self, req))
        return;
    struct del_task *t = calloc(1, sizeof(*t));
    if (t == NULL) {
        srv__send_err(req, ERR_REQ, ERR_REQ_BUSY, "out of memory");
        return;
    }
    t->super.reply_to = &loop_of(self, req)->io_rx;
    t->store = self->store;
    t->super.run = del_run;
    t->super.done = del_done;
    t->req = req;
    t->key = h2o_strdup(&req->pool, key, keylen).base;
    iopool_submit(&t->super);
}

static int on_req(h2o_handler_t *_self, h2o_req_t *req)
{
    originals_t *self = (void *)_self;
    route_t rt;
    if (route_parse_key(req->path.base, req->path.len, &rt) != 0)
        return -1; /* the router answers bad keys before any room sees them */
    if (h2o_memis(req->method.base, req->method.len, H2O_STRLIT("PUT"))) {
        handle_put(self, req, rt.key, rt.keylen);
        return 0;
    }
    if (h2o_memis(req->method.base, req->method.len, H2O_STRLIT("DELETE"))) {
        handle_delete(self, req, rt.key, rt.keylen);
        return 0;
    }
    char path[STORE_PATH_MAX];
    store_orig_path(self->store, rt.key, path, sizeof(path));
    return srv__serve_path(req, path, IMGPROC_FMT_UNKNOWN, NULL)
               ? 0
               : -1; /* else maybe a derived URL */
}

static void on_context_init(h2o_handler_t *_self, h2o_context_t *ctx)
{
    struct originals_loop *l = calloc(1, sizeof(*l));
    if (l == NULL)
        h2o_fatal("no memory for a loop's originals room");
    iopool_init_loop(ctx->queue, &l->io_rx);
    h2o_context_set_handler_context(ctx, _self, l);
}

static void do_register(h2o_pathconf_t *pathconf, const room_services_t *s)
{
    originals_t *self = (void *)h2o_create_handler(pathconf, sizeof(*self));
    self->super.on_context_init = on_context_init;
    self->super.on_req = on_req;
    self->cfg = s->cfg;
    self->store = s->store;
    self->metrics = s->metrics;
}

const room_t originals_room = {.register_ = do_register};
