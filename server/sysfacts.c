/* sysfacts — the memory limit, the memory plan and the core count (see sysfacts.h). */
#include "server/sysfacts.h"

#include <string.h>
#include <unistd.h>

#include "server/connguard.h"
#include "server/memlimit.h"

uint64_t srv_memory_limit(const char **source)
{
    return memlimit_bytes("/", source);
}

unsigned sysfacts_ncores(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (unsigned)n : 1;
}

unsigned sysfacts_loops(const cfg_t *cfg)
{
    unsigned n = cfg->threads ? cfg->threads : sysfacts_ncores();
    return n < CONNGUARD_MAX_LOOPS ? n : CONNGUARD_MAX_LOOPS;
}

int srv_plan(const cfg_t *cfg, memplan_t *plan, char *err, size_t errlen)
{
    const char *src = "MemTotal";
    uint64_t limit = srv_memory_limit(&src);
    unsigned threads = sysfacts_loops(cfg);
    unsigned workers = cfg->workers ? cfg->workers : sysfacts_ncores();
    /* cgroup v2 charges the kernel's socket buffers to the cgroup; v1 (without kmem.tcp) does not
     */
    bool v2 = strncmp(src, "cgroup v2", 9) == 0;
    return memplan_compute(cfg, limit, src, v2, threads, workers, plan, err, errlen);
}
