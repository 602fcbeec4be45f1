/* sysfacts — memory limit and cores (see sysfacts.h). The limit detection is moved here
 * as it was in srv.c; a resolver of its own (memlimit.c) replaces its body later. */
#include "server/sysfacts.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static uint64_t read_u64_file(const char *path)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return 0;
    char buf[64] = "";
    uint64_t v = 0;
    if (fgets(buf, sizeof(buf), f) != NULL && strncmp(buf, "max", 3) != 0)
        v = strtoull(buf, NULL, 10);
    fclose(f);
    return v;
}

static uint64_t mem_total(void)
{
    FILE *f = fopen("/proc/meminfo", "r");
    char line[256];
    uint64_t kb = 0;
    while (f != NULL && fgets(line, sizeof(line), f) != NULL)
        if (sscanf(line, "MemTotal: %" SCNu64 " kB", &kb) == 1)
            break;
    if (f)
        fclose(f);
    return kb * 1024;
}

uint64_t srv_memory_limit(const char **source)
{
    uint64_t total = mem_total(), lim = 0;
    const char *src = "MemTotal";
    FILE *f = fopen("/proc/self/cgroup", "r");
    char line[1024], path[1400];
    while (f != NULL && fgets(line, sizeof(line), f) != NULL) {
        line[strcspn(line, "\n")] = '\0';
        char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (c2 == NULL)
            continue;
        *c2 = '\0';
        const char *ctrls = c1 + 1, *cg = c2 + 1;
        uint64_t v = 0;
        if (strcmp(line, "0") == 0 && *ctrls == '\0') {
            snprintf(path, sizeof(path), "/sys/fs/cgroup%s/memory.max", cg);
            if ((v = read_u64_file(path)) != 0)
                src = "cgroup v2 memory.max";
        } else if (strstr(ctrls, "memory") != NULL) {
            snprintf(path, sizeof(path), "/sys/fs/cgroup/memory%s/memory.limit_in_bytes", cg);
            if ((v = read_u64_file(path)) != 0)
                src = "cgroup v1 memory.limit_in_bytes";
        }
        if (v != 0 && v < total && (lim == 0 || v < lim))
            lim = v;
    }
    if (f)
        fclose(f);
    if (lim == 0)
        src = "MemTotal";
    if (source)
        *source = src;
    return lim ? lim : total;
}

uint64_t srv_auto_budget(uint32_t percent, const char **source)
{
    return srv_memory_limit(source) / 100 * percent;
}

unsigned sysfacts_ncores(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (unsigned)n : 1;
}
