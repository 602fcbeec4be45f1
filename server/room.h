/* room — INTERNAL to server/: what a handler room (originals.c, derive.c, admin.c) gets
 * from the lifecycle, and the one thing the lifecycle asks of it. A room is an h2o
 * handler with its own context struct, holding only the services it uses; its per-loop
 * state comes from h2o's on_context_init, its timers are its own, and its requests finish
 * through callbacks it owns. The lifecycle (srv.c) never names a room: it hands the
 * services to router_register (router.h), which registers the rooms of router.c's table. */
#ifndef THUMBGATE_ROOM_H
#define THUMBGATE_ROOM_H

#include <h2o.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "config/cfg.h"
#include "imgproc/imgproc.h"
#include "server/adm.h"
#include "server/memplan.h"
#include "server/metrics.h"
#include "server/store.h"

struct flight;
struct connguard;

/** The process-wide services, made by the lifecycle at start and live until the loops have
 *  stopped. Rooms borrow what they need; none of them owns any of these. */
typedef struct room_services {
    const cfg_t *cfg;
    store_t *store;
    adm_gate_t *gate;
    metrics_t *metrics;
    const imgproc_opts_t *imgopts;
    struct flight *flight;       /**< NULL when the recorder is off */
    struct connguard *guard;     /**< connection and request-body bounds */
    const memplan_t *plan;       /**< the memory plan worked out at start */
    const atomic_bool *draining; /**< set when SIGTERM/SIGINT started the drain */
    uint64_t started_at_ms;
} room_services_t;

/** A handler room: a row of router.c's table. */
typedef struct room {
    bool admin; /**< served on the admin listener, not the public one */
    /** Creates the room's handler on @p pathconf with the services it keeps (borrowed);
     *  @p s itself lives only for the call, so the room copies what it keeps. */
    void (*register_)(h2o_pathconf_t *pathconf, const room_services_t *s);
} room_t;

extern const room_t s3sync_room;      /* s3room.c: s3 backend, a GET's key checked first */
extern const room_t derive_hits_room; /* derive.c: URLs it answered from the cache before */
extern const room_t originals_room;   /* originals.c: PUT, DELETE, GET/HEAD of a stored key */
extern const room_t derive_room;      /* derive.c: GET/HEAD of a derived URL */
extern const room_t admin_room;       /* admin.c: /metrics /healthz /readyz /debug/... */

#endif
