/* metrics — slots, histograms and their Prometheus rendering. */
#include "server/metrics.h"

#include <inttypes.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

/* every status the server sends (the error table in errors.c, files, h2o's own) */
static const int status_slots[METRICS_NSTATUS - 1] = {
    200, 201, 204, 206, 304, 400, 401, 403, 404, 405, 408, 409, 413, 415, 416, 499, 500, 503, 507};

const double metrics_hist_bounds[METRICS_HIST_BUCKETS] = {
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};

unsigned metrics_status_slot(int status)
{
    for (unsigned i = 0; i < METRICS_NSTATUS - 1; i++)
        if (status_slots[i] == status)
            return i;
    return METRICS_NSTATUS - 1;
}

int metrics_slot_status(unsigned slot)
{
    return slot < METRICS_NSTATUS - 1 ? status_slots[slot] : 0;
}

const char *metrics_route_name(metrics_route_t r)
{
    static const char *const names[METRICS_ROUTE_MAX] = {"put", "delete", "original", "derived",
                                                         "other"};
    return r < METRICS_ROUTE_MAX ? names[r] : "other";
}

void metrics_hist_observe(metrics_hist_t *h, uint64_t us)
{
    atomic_fetch_add_explicit(&h->count, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum_us, us, memory_order_relaxed);
    for (unsigned i = 0; i < METRICS_HIST_BUCKETS; i++)
        if ((double)us <= metrics_hist_bounds[i] * 1e6) {
            atomic_fetch_add_explicit(&h->buckets[i], 1, memory_order_relaxed);
            break;
        }
}

void metrics_hist_render(FILE *out, const char *name, const char *help, const metrics_hist_t *h,
                         double scale)
{
    fprintf(out, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    uint64_t cum = 0;
    for (unsigned i = 0; i < METRICS_HIST_BUCKETS; i++) {
        cum += atomic_load_explicit(&h->buckets[i], memory_order_relaxed);
        fprintf(out, "%s_bucket{le=\"%g\"} %llu\n", name, metrics_hist_bounds[i] * scale,
                (unsigned long long)cum);
    }
    uint64_t count = atomic_load_explicit(&h->count, memory_order_relaxed);
    fprintf(out, "%s_bucket{le=\"+Inf\"} %llu\n", name, (unsigned long long)count);
    fprintf(out, "%s_sum %.6f\n", name,
            (double)atomic_load_explicit(&h->sum_us, memory_order_relaxed) / 1e6 * scale);
    fprintf(out, "%s_count %llu\n", name, (unsigned long long)count);
}

void metrics_proc_read(metrics_proc_t *out)
{
    static const struct {
        const char *name;
        size_t off;
        uint64_t scale;
    } fields[] = {{"VmRSS:", offsetof(metrics_proc_t, rss), 1024},
                  {"RssAnon:", offsetof(metrics_proc_t, rss_anon), 1024},
                  {"RssFile:", offsetof(metrics_proc_t, rss_file), 1024},
                  {"VmHWM:", offsetof(metrics_proc_t, hwm), 1024},
                  {"Threads:", offsetof(metrics_proc_t, threads), 1}};
    memset(out, 0, sizeof(*out));
    FILE *f = fopen("/proc/self/status", "r");
    char line[128];
    while (f != NULL && fgets(line, sizeof(line), f) != NULL)
        for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
            size_t l = strlen(fields[i].name);
            if (strncmp(line, fields[i].name, l) == 0) {
                *(uint64_t *)((char *)out + fields[i].off) =
                    strtoull(line + l, NULL, 10) * fields[i].scale;
                break;
            }
        }
    if (f)
        fclose(f);
}
