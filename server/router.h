/* router — the public API's one h2o handler: method and key checks, then the handler
 * room a request belongs to (originals: PUT, DELETE, GET/HEAD of a stored key; derived:
 * GET/HEAD of a derived URL). It knows the rooms' entry points, nothing of their work. */
#ifndef THUMBGATE_ROUTER_H
#define THUMBGATE_ROUTER_H

#include <h2o.h>

struct srv;

/** Registers the API handler on @p pathconf. */
void router_register(struct srv *srv, h2o_pathconf_t *pathconf);

#endif
