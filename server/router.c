/* router — request to handler room (see router.h). */
#include "server/router.h"

#include "server/http.h"
#include "server/route.h"

/* The rooms in the order they see a request: an exact stored key wins over the derived
 * grammar, so originals comes before derived; the cached hits derive remembers come first
 * (it forgets them when a key is stored). With the s3 backend, s3sync_room comes before
 * all: it brings the local copy of a key not checked lately in line with the bucket,
 * then passes the request on. derive_room registers after derive_hits_room. */
static const room_t *const rooms[] = {&s3sync_room, &derive_hits_room, &originals_room, &derive_room,
                                      &admin_room};

/* Method and key checks: 405 / 400 here; anything else goes on to the rooms. */
static int on_check(h2o_handler_t *self, h2o_req_t *req)
{
    route_t rt;
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
    /* '@' (presets, pixel ratios) is in requested names only, never in a stored key */
    if (route_parse_key(req->path.base, req->path.len, &rt) != 0 || ((put || del) && rt.at)) {
        srv__send_err(req, ERR_ROUTE, ROUTE_E_BADKEY,
                      "keys are segments of [A-Za-z0-9._-] joined by '/', at most %d bytes, "
                      "without '.' or '..' segments",
                      ROUTE_KEY_MAX);
        return 0;
    }
    srv__set_env(req, "TG_ROUTE", put ? "put" : del ? "delete" : "original");
    return -1;
}

/* No room answered: a GET of a key that is neither stored nor derived. */
static int on_not_found(h2o_handler_t *self, h2o_req_t *req)
{
    srv__send_err(req, ERR_REQ, ERR_REQ_NOT_FOUND, "no original stored under this key");
    return 0;
}

void router_register(h2o_pathconf_t *api, h2o_pathconf_t *admin, const room_services_t *s)
{
    h2o_create_handler(api, sizeof(h2o_handler_t))->on_req = on_check;
    for (size_t i = 0; i < sizeof(rooms) / sizeof(rooms[0]); i++)
        rooms[i]->register_(rooms[i]->admin ? admin : api, s);
    h2o_create_handler(api, sizeof(h2o_handler_t))->on_req = on_not_found;
}
