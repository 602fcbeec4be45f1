/* srv — the thumbgate HTTP server: h2o event loops (one per thread, SO_REUSEPORT
 * listeners), the public API of DESIGN.md, the admin listener, graceful shutdown. */
#ifndef THUMBGATE_SRV_H
#define THUMBGATE_SRV_H

#include <signal.h>
#include <stdint.h>

#include "config/cfg.h"

/**
 * Runs the server on @p cfg (borrowed) until SIGTERM/SIGINT, then stops accepting,
 * finishes in-flight requests up to http.shutdown_timeout and returns the process exit
 * code (0 after a clean drain, 1 when start-up failed).
 */
int srv_run(const cfg_t *cfg);

/**
 * Blocks SIGTERM, SIGINT and SIGHUP in the calling thread (and so in every thread it
 * creates afterwards), filling @p set (optional) with them: call it first in main, before
 * libvips or anything else starts threads, so only srv_run's sigwait receives them.
 */
void srv_block_signals(sigset_t *set);

#endif
