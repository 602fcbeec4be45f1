/* sysfacts — what the system tells about the process: the memory limit it runs under
 * (memlimit.c: the smallest cgroup limit above it, else MemTotal), the memory plan
 * worked out from it, and the number of online cores. (The /proc/self/status reader is
 * metrics_proc_read in metrics.h.) Reads files only; no state. */
#ifndef THUMBGATE_SYSFACTS_H
#define THUMBGATE_SYSFACTS_H

#include <stddef.h>
#include <stdint.h>

#include "config/cfg.h"
#include "server/memplan.h"

/** The memory limit the process runs under; @p source (optional) names where it came from. */
uint64_t srv_memory_limit(const char **source);

/** The memory plan of @p cfg under the limit this process runs under (memplan.h);
 *  0, or -1 with a message naming the keys to lower. */
int srv_plan(const cfg_t *cfg, memplan_t *plan, char *err, size_t errlen);

/** Online cores (at least 1). */
unsigned sysfacts_ncores(void);

/** The event loops of @p cfg: `threads`, or with `threads: auto` the online cores, at most
 *  CONNGUARD_MAX_LOOPS (connguard keeps one single-thread slot per loop). */
unsigned sysfacts_loops(const cfg_t *cfg);

#endif
