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
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "server/auth.h"
#include "server/srv_internal.h"

/* Writes need the Bearer token when one is configured, else a loopback client. */
static bool check_write_auth(srv_t *srv, h2o_req_t *req)
{
    const char *msg = NULL;
    int status = auth_write(srv->cfg->write_token, req, &msg);
    if (status == 0)
        return true;
    if (status == 401)
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_WWW_AUTHENTICATE, NULL, H2O_STRLIT("Bearer"));
    srv__send_error(req, status, status == 401 ? "unauthorized" : "forbidden", "%s", msg);
    return false;
}

struct put_task {
    srv_task_t super;
    h2o_req_t *req;
    const char *key; /* in req->pool */
    h2o_iovec_t body;
    imgproc_probe_t probe;
    bool replaced;
    int ret;
    char err[256];
};

static void put_run(srv_task_t *_t)
{
    struct put_task *t = (void *)_t;
    t->ret = store_put(t->super.th->srv->store, t->key, t->body.base, t->body.len, &t->replaced, t->err, sizeof(t->err));
}

static void put_done(srv_task_t *_t)
{
    struct put_task *t = (void *)_t;
    h2o_req_t *req = t->req;
    if (t->ret == -STORE_E_NOSPACE) {
        srv__send_error(req, 507, "storage_full", "no space left to store the upload: %s", t->err);
    } else if (t->ret == -STORE_E_CONFLICT) {
        srv__send_error(req, 409, "key_conflict", "the key collides with stored data: %s", t->err);
    } else if (t->ret != 0) {
        fprintf(stderr, "{\"log\":\"error\",\"op\":\"put\",\"key\":\"%.200s\",\"error\":\"%s\"}\n", t->key, t->err);
        srv__send_error(req, 500, "storage_error", "could not store the upload");
    } else {
        char json[800];
        int n = snprintf(json, sizeof(json),
                         "{\"key\":\"%s\",\"bytes\":%zu,\"format\":\"%s\",\"width\":%" PRIu32 ",\"height\":%" PRIu32 "}\n",
                         t->key, t->body.len, imgproc_fmt_name(t->probe.fmt), t->probe.width, t->probe.height);
        srv__send_json(req, t->replaced ? 200 : 201, json, (size_t)n);
    }
    free(t);
}

void srv__handle_put(srv_t *srv, h2o_req_t *req, const char *key, size_t keylen)
{
    if (!check_write_auth(srv, req))
        return;
    h2o_iovec_t body = req->entity;
    if (body.base == NULL || body.len == 0) {
        srv__send_error(req, 400, "empty_body", "PUT needs the image bytes as the request body");
        return;
    }
    imgproc_probe_t probe;
    imgproc_err_t ierr = {0};
    if (imgproc_sniff(body.base, body.len) == IMGPROC_FMT_UNKNOWN) {
        atomic_fetch_add_explicit(&srv->metrics.rejected_format, 1, memory_order_relaxed);
        srv__send_error(req, 415, "unsupported_format", "the body is not a JPEG, PNG or WebP image");
        return;
    }
    /* header only: no pixel is decoded on upload */
    if (imgproc_probe_buf(body.base, body.len, &probe, &ierr) != 0) {
        atomic_fetch_add_explicit(&srv->metrics.rejected_format, 1, memory_order_relaxed);
        srv__send_error(req, 415, "corrupt_image", "the image header is malformed: %s", ierr.msg);
        return;
    }
    if ((uint64_t)probe.width * probe.height > srv->cfg->max_pixels) {
        atomic_fetch_add_explicit(&srv->metrics.rejected_pixels, 1, memory_order_relaxed);
        srv__send_error(req, 413, "too_many_pixels",
                        "the header declares %" PRIu32 "x%" PRIu32 " pixels, over limits.max_pixels %" PRIu64,
                        probe.width, probe.height, srv->cfg->max_pixels);
        return;
    }
    if (!imgproc_is_complete(body.base, body.len, probe.fmt)) {
        atomic_fetch_add_explicit(&srv->metrics.rejected_format, 1, memory_order_relaxed);
        srv__send_error(req, 415, "corrupt_image", "the %s image is truncated: it ends before its last marker",
                        imgproc_fmt_name(probe.fmt));
        return;
    }
    struct put_task *t = calloc(1, sizeof(*t));
    if (t == NULL) {
        srv__send_error(req, 503, "busy", "out of memory");
        return;
    }
    t->super.th = srv__thread_of(req);
    t->super.run = put_run;
    t->super.done = put_done;
    t->req = req;
    t->key = h2o_strdup(&req->pool, key, keylen).base;
    t->body = body; /* borrowed: h2o keeps it until we respond, reading is stopped */
    t->probe = probe;
    srv__io_submit(srv, &t->super);
}

struct del_task {
    srv_task_t super;
    h2o_req_t *req;
    const char *key;
    int ret;
};

static void del_run(srv_task_t *_t)
{
    struct del_task *t = (void *)_t;
    t->ret = store_delete(t->super.th->srv->store, t->key);
}

static void del_done(srv_task_t *_t)
{
    struct del_task *t = (void *)_t;
    static h2o_generator_t gen = {NULL, NULL};
    if (t->ret == -STORE_E_NOTFOUND) {
        srv__send_error(t->req, 404, "not_found", "no original stored under this key");
    } else if (t->ret != 0) {
        srv__send_error(t->req, 500, "storage_error", "could not delete");
    } else {
        t->req->res.status = 204;
        t->req->res.reason = "No Content";
        h2o_start_response(t->req, &gen);
        h2o_send(t->req, NULL, 0, H2O_SEND_STATE_FINAL);
    }
    free(t);
}

void srv__handle_delete(srv_t *srv, h2o_req_t *req, const char *key, size_t keylen)
{
    if (!check_write_auth(srv, req))
        return;
    struct del_task *t = calloc(1, sizeof(*t));
    if (t == NULL) {
        srv__send_error(req, 503, "busy", "out of memory");
        return;
    }
    t->super.th = srv__thread_of(req);
    t->super.run = del_run;
    t->super.done = del_done;
    t->req = req;
    t->key = h2o_strdup(&req->pool, key, keylen).base;
    srv__io_submit(srv, &t->super);
}

bool srv__serve_path(srv_t *srv, h2o_req_t *req, const char *path, struct stat *sb)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    struct stat st;
    unsigned char magic[16];
    ssize_t n;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || (n = pread(fd, magic, sizeof(magic), 0)) < 0) {
        close(fd);
        return false;
    }
    if (sb != NULL)
        *sb = st;
    imgproc_fmt_t fmt = imgproc_sniff(magic, (size_t)n);
    srv__send_file(req, fd, &st, imgproc_fmt_mime(fmt));
    return true;
}
