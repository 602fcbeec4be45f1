/* sysfacts — what the system tells about the process: the memory limit it runs under
 * (cgroup v2 memory.max, cgroup v1 memory.limit_in_bytes, else MemTotal), the budget
 * `auto` resolves to, and the number of online cores. (The /proc/self/status reader is
 * metrics_proc_read in metrics.h.) Reads files only; no state. */
#ifndef THUMBGATE_SYSFACTS_H
#define THUMBGATE_SYSFACTS_H

#include <stdint.h>

/** The memory limit the process runs under; @p source (optional) names where it came from. */
uint64_t srv_memory_limit(const char **source);

/** The budget `auto` resolves to: @p percent of srv_memory_limit(). */
uint64_t srv_auto_budget(uint32_t percent, const char **source);

/** Online cores (at least 1). */
unsigned sysfacts_ncores(void);

#endif
