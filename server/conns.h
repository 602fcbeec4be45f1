/* conns — the connections room: listening sockets and accept with the connection limit
 * (connguard_admit: at the limit with nobody to close, the listener leaves the loop and
 * new connections wait in the kernel's accept queue). The timeouts that end connections
 * h2o 2.2 would keep forever (idle between requests, responses that stopped moving) or
 * drop without a word (a request that stopped arriving gets a 408) are kept by
 * connguard's one walk over the loop's connections (connguard.h), which holds them
 * (connguard_config_t). One conns_t per event loop.
 * Memory: one conns_t per loop; a connection waiting in the accept queue is kernel memory
 * (each public listener has MEMPLAN_BACKLOG of them, memplan.h). */
#ifndef THUMBGATE_CONNS_H
#define THUMBGATE_CONNS_H

#include <h2o.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "server/errors.h"

typedef struct {
    struct connguard *guard; /**< admits accepted sockets (limits.max_connections, connguard.h) */
    unsigned loop;           /**< this loop's index, for connguard */
} conns_conf_t;

typedef struct conns conns_t;

/** The connections of the loop of @p ctx; accepted sockets go to @p accept_ctx. */
conns_t *conns_create(h2o_context_t *ctx, h2o_accept_ctx_t *accept_ctx, const conns_conf_t *conf);
void conns_destroy(conns_t *c);
/** Accepts on listening socket @p fd (taken) with the limit. */
void conns_listen(conns_t *c, int fd);
/** Stops accepting and closes the listening socket (drain). */
void conns_stop_listening(conns_t *c);
/** True when no connection is in the middle of a request (drain). */
bool conns_all_idle(const conns_t *c);

/** Answers error @p code of @p domain (errors.h) as JSON straight on socket @p fd, for a
 *  connection h2o is still reading (it has produced no response): best effort, no wait.
 *  503 carries Retry-After, 401 WWW-Authenticate. The caller then shuts the socket down. */
void conns_answer(int fd, err_domain_t domain, int code, const char *msg);

/** Accepts on @p fd (taken) without limit or watchdog (the admin listener). */
h2o_socket_t *conns_listen_plain(h2o_evloop_t *loop, int fd, h2o_accept_ctx_t *accept_ctx);

/** "host:port" / "[v6]:port" to an address. 0 or -1. */
int conns_parse_hostport(const char *s, struct sockaddr_storage *ss, socklen_t *len);
/** Binds once without SO_REUSEPORT: 0 when nobody else listens on @p ss. */
int conns_probe_free(const struct sockaddr_storage *ss, socklen_t len);
bool conns_port_is_zero(const struct sockaddr_storage *ss);
/** A non-blocking SO_REUSEPORT listener; port 0 is resolved into @p ss. -1 on failure. */
int conns_open_listener(struct sockaddr_storage *ss, socklen_t len);
/** True for 127.0.0.0/8, ::1 and ::ffff:127.0.0.0/104. */
bool conns_is_loopback(const struct sockaddr_storage *ss);
void conns_addr_str(const struct sockaddr_storage *ss, char *out, size_t len);

#endif
