/* router — request to handler room (see router.h). */
#include "server/router.h"

#include "server/srv_internal.h"

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
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_ALLOW, NULL,
                       H2O_STRLIT("GET, HEAD, PUT, DELETE"));
        srv__send_err(req, ERR_REQ, ERR_REQ_METHOD,
                      "method %.*s is not allowed; use GET, HEAD, PUT or DELETE",
                      (int)(req->method.len < 16 ? req->method.len : 16), req->method.base);
        return 0;
    }
    if (route_parse_key(req->path.base, req->path.len, rt) != 0) {
        srv__send_err(req, ERR_ROUTE, ROUTE_E_BADKEY,
                      "keys are segments of [A-Za-z0-9._-] joined by '/', at most %d bytes, "
                      "without '.' or '..' "
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
        srv__send_err(req, ERR_ROUTE, ROUTE_E_BADSIZE,
                      "sizes are 1..%u pixels, without leading zeros", ROUTE_DIM_MAX);
        return 0;
    }
    if (rt->derived) {
        srv__set_env(req, "TG_ROUTE", "derived");
        srv__handle_derive(srv, req, rt);
        return 0;
    }
    srv__send_err(req, ERR_REQ, ERR_REQ_NOT_FOUND, "no original stored under this key");
    return 0;
}

void router_register(struct srv *srv, h2o_pathconf_t *pathconf)
{
    struct api_handler *h = (void *)h2o_create_handler(pathconf, sizeof(*h));
    h->super.on_req = on_api_req;
    h->srv = srv;
}
