/* srv — the thumbgate HTTP server: h2o event loops (one per thread, SO_REUSEPORT
 * listeners), the public API of DESIGN.md, the admin listener, graceful shutdown. */
#ifndef THUMBGATE_SRV_H
#define THUMBGATE_SRV_H

#include <signal.h>
#include <stdint.h>

#include "config/cfg.h"
#include "server/memplan.h"

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

/**
 * The memory limit the process runs under: cgroup v2 memory.max, else cgroup v1
 * memory.limit_in_bytes, else MemTotal. @p source (optional) names where it came from.
 */
uint64_t srv_memory_limit(const char **source);

/** The memory plan of @p cfg under the limit this process runs under (memplan.h);
 *  0, or -1 with a message naming the keys to lower. */
int srv_plan(const cfg_t *cfg, memplan_t *plan, char *err, size_t errlen);

#endif
