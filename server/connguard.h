/* connguard — the public listener's connections: their memory bounds, where h2o 2.2
 * leaves room for them, and their timeouts, in one walk.
 *
 * h2o 2.2's HTTP/1 reads a request's whole body into the connection's input buffer
 * before any handler runs (lib/http1.c: the entity readers), so a handler cannot refuse
 * a body it has not yet received. What the server owns is the accepted socket and the
 * event loop, so connguard works there:
 *   - before accept: the connection count (limits.max_connections, one process-wide
 *     counter). At the limit, a connection doing nothing useful (idle, slow head, stalled
 *     response: victim() in connguard.c) is closed to make room. When there is none, the
 *     listener is taken off the loop: new connections wait in the kernel's accept queue
 *     (conns.c's listen backlog) until a slot frees or a victim qualifies, for at most
 *     CONNGUARD_HOLD_MS; only then are the waiting ones answered 503 + Retry-After, so a
 *     flood of fresh connections cannot turn a client away before anyone is idle;
 *   - the kernel buffers (http.socket_buffer) of every accepted socket;
 *   - one walk over the loop's connections after an event-loop iteration, at most every
 *     CONNGUARD_LOOK_MS (and on the loop's 100 ms tick when it is quiet). For each:
 *       a head still incomplete past limits.max_header_bytes      -> 431
 *       a body starting on a PUT/DELETE without valid credentials  -> 401 / 403
 *       a body whose declared length does not fit the process-wide
 *       reservation limits.max_body_inflight (chunked: max_upload) -> 503 + Retry-After
 *       a body that must spill to a disk without room for it        -> 507
 *       idle between requests, or a response that stopped moving,
 *       for http.idle_timeout                                       -> closed
 *       a head not complete, or a body that stopped moving, for
 *       http.request_timeout (a slow but steady upload is never cut) -> 408
 *     and the bookkeeping that chooses victims, the buffer figures, and putting a held
 *     listener back. An answer is written straight to the socket and both directions
 *     are shut down; h2o then sees the end of the stream and closes the connection.
 * A reservation lives until the connection's next request or its close, or as long as
 * its input buffer stays in a spill file. What remains: what a connection receives
 * between two looks lands before the check (CONNGUARD_LOOK_MS of the loop's reads,
 * counted in the memory plan as one read per connection: at 2 ms a loopback client
 * rarely gets more), and a client that keeps sending after the refusal may see a reset
 * instead of the answer. */
#ifndef THUMBGATE_CONNGUARD_H
#define THUMBGATE_CONNGUARD_H

#include <h2o.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#define CONNGUARD_MAX_LOOPS 256 /**< loop indexes stay below it: sysfacts_loops caps the loops */
#define CONNGUARD_LOOK_MS 2     /**< the walk runs at most this often per loop */
#define CONNGUARD_HOLD_MS 2000  /**< longest a held listener keeps connections waiting */

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
    char spill_dir[1024];     /**< store_tmp_dir(), where the spill files are made (statvfs
                                   before a large body); room for any storage.root */
    uint64_t idle_timeout_ms; /**< http.idle_timeout: idle between requests, stalled response */
    uint64_t request_timeout_ms; /**< http.request_timeout: head not complete, body not moving */
    _Atomic uint64_t *timeouts;  /**< counts the 408s sent (optional) */
} connguard_config_t;

typedef struct {
    uint64_t open;          /**< connections open now */
    uint64_t body_reserved; /**< body bytes reserved now */
    uint64_t input_ram,
        input_spill; /**< input buffer bytes in memory / in spill files (last look) */
    uint64_t refused[CONNGUARD_R_MAX];
    uint64_t holds; /**< times a listener was taken off its loop for want of a slot */
} connguard_stats_t;

typedef struct connguard connguard_t;

connguard_t *connguard_create(const connguard_config_t *cfg);
void connguard_destroy(connguard_t *g);

/** Sets the kernel buffer sizes on a listening socket (accepted sockets inherit them). */
void connguard_tune_listener(const connguard_t *g, int fd);

/** Before accepting on @p listener of loop @p loop: true when a connection may be
 *  accepted now (a free slot, a victim to close, or the hold is over and it will be
 *  answered 503). False when every slot is taken and nobody can be closed yet: the
 *  listener is then off the loop, and connguard starts it again with @p on_accept when
 *  a slot frees, a victim qualifies or CONNGUARD_HOLD_MS have passed. */
bool connguard_admit(connguard_t *g, unsigned loop, h2o_socket_t *listener,
                     h2o_socket_cb on_accept);
/** The listener of loop @p loop is being closed: connguard must not start it again. */
void connguard_forget_listener(connguard_t *g, unsigned loop);

/** Takes a newly accepted socket of loop @p loop (whose thread must also scan it), right
 *  after connguard_admit: true to hand it to h2o, false when it was refused (answered
 *  503 and closed here). */
bool connguard_accept(connguard_t *g, h2o_socket_t *sock, unsigned loop);

/** The one walk over the connections of @p ctx (call on its loop after each iteration:
 *  it returns at once when the last walk is less than CONNGUARD_LOOK_MS old); @p loop
 *  is the loop's index. */
void connguard_scan(connguard_t *g, h2o_context_t *ctx, unsigned loop);

void connguard_stats(connguard_t *g, connguard_stats_t *out);
const char *connguard_reason_name(connguard_reason_t r);

#endif
