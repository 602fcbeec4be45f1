/* router — the public API's request to handler room: method and key checks first, then
 * the rooms of its table in order (originals: PUT, DELETE, GET/HEAD of a stored key;
 * derived: GET/HEAD of a derived URL), each answering or passing the request on, and a
 * JSON 404 when none answered. Admin rooms go on the admin listener. It knows the rooms'
 * table, nothing of their work; the lifecycle knows only this function. */
#ifndef THUMBGATE_ROUTER_H
#define THUMBGATE_ROUTER_H

#include <h2o.h>

#include "server/room.h"

/** Registers the API rooms on @p api and the admin rooms on @p admin (borrows @p s). */
void router_register(h2o_pathconf_t *api, h2o_pathconf_t *admin, const room_services_t *s);

#endif
