/* memlimit — the memory limit the process runs under, found the way container runtimes
 * lay cgroups out (v1 and v2, with or without a cgroup namespace, the container's own
 * cgroup directory bind-mounted where the host's root would be). */
#ifndef THUMBGATE_MEMLIMIT_H
#define THUMBGATE_MEMLIMIT_H

#include <stdint.h>

typedef struct memlimit {
    uint64_t bytes;     /* the smallest limit found; MemTotal when no cgroup sets a smaller one */
    const char *source; /* static string naming the kind of figure (MEMLIMIT_SRC_*) */
    char file[512];     /* the file it was read from, with the root prefix */
} memlimit_t;

#define MEMLIMIT_SRC_V1 "cgroup v1 memory.limit_in_bytes"
#define MEMLIMIT_SRC_V1_HIER "cgroup v1 hierarchical_memory_limit"
#define MEMLIMIT_SRC_V2 "cgroup v2 memory.max"
#define MEMLIMIT_SRC_MEMTOTAL "MemTotal"
#define MEMLIMIT_SRC_NONE "none"

/**
 * Resolves the limit into @p out, reading files under @p root ("/" in production, a fake
 * tree in tests; NULL means "/"). For each cgroup memory hierarchy mounted in
 * /proc/self/mountinfo (v1 `cgroup` with the memory controller, v2 `cgroup2`), the
 * process's path from /proc/self/cgroup is mapped onto the mount point through the
 * mount's root field; from that directory up to the mount point every v1
 * memory.limit_in_bytes and memory.stat hierarchical_memory_limit, or v2 memory.max, is a
 * candidate, and so is MemTotal from /proc/meminfo. The smallest wins. Missing or
 * unreadable files, "max" and 0 are no limit. Without a readable mountinfo the usual
 * mount points (/sys/fs/cgroup/memory, /sys/fs/cgroup) are assumed. When nothing at all
 * is readable, bytes is 0 and source MEMLIMIT_SRC_NONE.
 */
void memlimit_resolve(const char *root, memlimit_t *out);

/** memlimit_resolve() for callers that want the figure and its source string only. */
uint64_t memlimit_bytes(const char *root, const char **source);

#endif
