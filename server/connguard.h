/* connguard — memory bounds of the public listener's connections, enforced where h2o
 * 2.2 leaves room for it.
 *
 * h2o 2.2's HTTP/1 reads a request's whole body into the connection's input buffer
 * before any handler runs (lib/http1.c: the entity readers), so a handler cannot refuse
 * a body it has not yet received. What the server owns is the accepted socket and the
 * event loop, so connguard works there:
 *   - at accept: the connection count (limits.max_connections, one process-wide
 *     counter) and the kernel buffers (http.socket_buffer) of the socket; at the limit,
 *     a connection doing nothing useful (idle, slow head, stalled response: victim() in
 *     connguard.c) is closed to make room; only when there is none is the new one 503;
 *   - after every event-loop iteration (at most 256 sockets have been read, each by at
 *     most its receive buffer) it looks at each connection's input buffer and request:
 *       a head still incomplete past limits.max_header_bytes      -> 431
 *       a body starting on a PUT/DELETE without valid credentials  -> 401 / 403
 *       a body whose declared length does not fit the process-wide
 *       reservation limits.max_body_inflight (chunked: max_upload) -> 503 + Retry-After
 *       a body that must spill to a disk without room for it        -> 507
 *     The answer is written straight to the socket and both directions are shut down;
 *     h2o then sees the end of the stream and closes the connection itself.
 * A reservation lives until the connection's next request or its close, or as long as
 * its input buffer stays in a spill file. What remains: the bytes of one read may land
 * before the check (counted in the memory plan), and a client that keeps sending after
 * the refusal may see a reset instead of the answer. */
#ifndef THUMBGATE_CONNGUARD_H
#define THUMBGATE_CONNGUARD_H

#include <h2o.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#define CONNGUARD_MAX_LOOPS 256

typedef enum {
    CONNGUARD_R_CONNECTIONS = 0, /**< over limits.max_connections at accept */
    CONNGUARD_R_HEADER,          /**< head over limits.max_header_bytes */
    CONNGUARD_R_BODIES,          /**< body would exceed limits.max_body_inflight */
    CONNGUARD_R_AUTH,            /**< write without valid credentials, refused before its body */
    CONNGUARD_R_DISK,            /**< the spill disk cannot hold the declared body: 507 */
    CONNGUARD_R_IDLE,            /**< an idle keep-alive connection closed to make room */
    CONNGUARD_R_SLOW,            /**< a slow request head closed (408) to make room */
    CONNGUARD_R_MAX
} connguard_reason_t;

typedef struct {
    uint32_t max_connections;
    uint64_t max_header_bytes;
    uint64_t max_body_inflight;
    uint64_t max_upload;
    uint64_t socket_buffer;
    const char *write_token;  /**< borrowed; "" = writes only from loopback */
    uint64_t spill_threshold; /**< http.upload_spill: bodies past half of it go to a spill file */
    char spill_dir[512];      /**< where the spill files are made (statvfs before a large body) */
} connguard_config_t;

typedef struct {
    uint64_t open;          /**< connections open now */
    uint64_t body_reserved; /**< body bytes reserved now */
    uint64_t input_ram,
        input_spill; /**< input buffer bytes in memory / in spill files (last look) */
    uint64_t refused[CONNGUARD_R_MAX];
} connguard_stats_t;

typedef struct connguard connguard_t;

connguard_t *connguard_create(const connguard_config_t *cfg);
void connguard_destroy(connguard_t *g);

/** Sets the kernel buffer sizes on a listening socket (accepted sockets inherit them). */
void connguard_tune_listener(const connguard_t *g, int fd);

/** Takes a newly accepted socket of loop @p loop (whose thread must also scan it):
 *  true to hand it to h2o, false when it was refused (answered 503 and closed here). */
bool connguard_accept(connguard_t *g, h2o_socket_t *sock, unsigned loop);

/** Looks at every connection of @p ctx (call on its loop after each iteration);
 *  @p loop is the loop's index, for the per-loop buffer figures. */
void connguard_scan(connguard_t *g, h2o_context_t *ctx, unsigned loop);

void connguard_stats(connguard_t *g, connguard_stats_t *out);
const char *connguard_reason_name(connguard_reason_t r);

#endif
