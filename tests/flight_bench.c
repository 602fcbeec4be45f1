/* Cost of the flight recorder: one snapshot (the server's sample callback reads
 * /proc/self/status; the recorder reads the cgroup's OOM-kill counter and writes 4 KiB)
 * and one tick between snapshots. Not part of `make test` (timings are not assertions).
 * Build and run (after `make`):
 *   cc -O2 -std=c11 -D_GNU_SOURCE -I. -o build/flight_bench tests/flight_bench.c
 *      build/release/server/flight.o build/release/server/metrics.o -pthread -lm
 *   build/flight_bench */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "server/flight.h"
#include "server/metrics.h"

static void sample(void *ctx, flight_sample_t *o)
{
    (void)ctx;
    metrics_proc_t pm;
    metrics_proc_read(&pm);
    o->rss_anon = pm.rss_anon;
    o->rss_file = pm.rss_file;
    o->vm_hwm = pm.hwm;
}

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

int main(void)
{
    char dir[] = "/tmp/flight_bench.XXXXXX", err[1400];
    if (mkdtemp(dir) == NULL)
        return 1;
    flight_opts_t o;
    memset(&o, 0, sizeof(o));
    snprintf(o.path, sizeof(o.path), "%s/flight.ring", dir);
    o.slots = 300;
    o.interval_ms = 100;
    o.max_disk = 64 << 20;
    o.sample = sample;
    flight_t *f = flight_open(&o, err, sizeof(err));
    if (f == NULL) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    int job;
    flight_job_begin(f, &job, "victim full.webp", 1234);
    const int n = 20000;
    double t0 = now();
    for (int i = 0; i < n; i++)
        flight_tick(f, 1000 + (uint64_t)i * 100);
    double t1 = now();
    for (int i = 0; i < n; i++)
        flight_tick(f, 1000 + (uint64_t)(n - 1) * 100 + 1);
    double t2 = now();
    printf("snapshot: %.1f us; tick between snapshots: %.1f ns\n", (t1 - t0) / n * 1e6,
           (t2 - t1) / n * 1e9);
    flight_close(f);
    unlink(o.path);
    rmdir(dir);
    return 0;
}
