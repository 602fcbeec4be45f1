/* s3room — the s3 backend's first room: a GET or HEAD whose key (and, for a derived URL,
 * stem) was not checked against the bucket within storage.s3.revalidate is synced on an
 * io thread (s3store_sync: HEAD, download or local delete), then passed on to the other
 * rooms, which serve the local files as with the local backend. A fresh key costs two
 * hash lookups here and nothing else. While the bucket does not answer, such a request
 * gets 503 + Retry-After at once (never a wait longer than the s3 timeouts).
 * With the local backend it passes every request on. Memory: one task (a route_t) per
 * request being synced; they are bounded by the connections. */
#include <stdlib.h>
#include <string.h>

#include "server/http.h"
#include "server/iopool.h"
#include "server/room.h"
#include "server/route.h"
#include "server/s3store.h"

typedef struct {
    h2o_handler_t super;
    store_t *store;
} s3room_t;

struct s3room_loop {
    h2o_multithread_receiver_t io_rx;
};

struct sync_task {
    iopool_task_t super;
    s3room_t *self;
    h2o_req_t *req;
    route_t rt;
    int ret;
};

static void sync_run(iopool_task_t *_t)
{
    struct sync_task *t = (void *)_t;
    s3store_t *rs = store_remote(t->self->store);
    t->ret = s3store_sync(rs, t->rt.key, t->rt.derived ? t->rt.stem : NULL,
                          t->rt.derived ? t->rt.variant : NULL);
}

static void sync_done(iopool_task_t *_t)
{
    struct sync_task *t = (void *)_t;
    if (t->ret != 0)
        srv__send_err(t->req, ERR_STORE, t->ret,
                      "the object store did not answer or gave a damaged copy; retry");
    else
        h2o_delegate_request(t->req, &t->self->super);
    free(t);
}

static int on_req(h2o_handler_t *_self, h2o_req_t *req)
{
    s3room_t *self = (void *)_self;
    s3store_t *rs = store_remote(self->store);
    if (rs == NULL || (!h2o_memis(req->method.base, req->method.len, H2O_STRLIT("GET")) &&
                       !h2o_memis(req->method.base, req->method.len, H2O_STRLIT("HEAD"))))
        return -1;
    struct sync_task *t = calloc(1, sizeof(*t)); /* zeroed: its message link is unlinked */
    if (t == NULL || route_parse_key(req->path.base, req->path.len, &t->rt) != 0) {
        free(t);
        return -1;
    }
    if (route_parse_derived(&t->rt) != 0)
        t->rt.derived = false; /* a bad size: derive room answers it */
    if (s3store_fresh(rs, t->rt.key, t->rt.derived ? t->rt.stem : NULL)) {
        free(t);
        return -1;
    }
    if (s3store_down(rs)) {
        free(t);
        srv__send_err(req, ERR_STORE, STORE_E_UNAVAILABLE,
                      "the object store does not answer; retry later");
        return 0;
    }
    t->self = self;
    t->req = req;
    t->super.run = sync_run;
    t->super.done = sync_done;
    t->super.reply_to =
        &((struct s3room_loop *)h2o_context_get_handler_context(req->conn->ctx, _self))->io_rx;
    iopool_submit(&t->super);
    return 0;
}

static void on_context_init(h2o_handler_t *_self, h2o_context_t *ctx)
{
    struct s3room_loop *l = calloc(1, sizeof(*l));
    if (l == NULL)
        h2o_fatal("no memory for a loop's s3 room");
    iopool_init_loop(ctx->queue, &l->io_rx);
    h2o_context_set_handler_context(ctx, _self, l);
}

static void do_register(h2o_pathconf_t *pathconf, const room_services_t *s)
{
    s3room_t *self = (void *)h2o_create_handler(pathconf, sizeof(*self));
    self->super.on_req = on_req;
    self->super.on_context_init = on_context_init;
    self->store = s->store;
}

const room_t s3sync_room = {.register_ = do_register};
