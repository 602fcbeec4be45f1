/* memplan — the memory plan (see memplan.h for the terms and the rules). */
#include "server/memplan.h"

#include "server/s3.h"
#include "server/s3store.h"

#include <inttypes.h>
#include <string.h>

#define MIB (1024.0 * 1024.0)

/* IO pool threads (srv.c) */
#define IO_THREADS 2

/* The share of the limit that `limits.max_connections: auto` may give to connections,
 * and the range it stays in. */
#define AUTO_CONN_PERCENT 20
#define AUTO_CONN_MIN 64
#define AUTO_CONN_MAX 4096

static uint64_t per_conn(const cfg_t *cfg)
{
    /* one read can land up to twice the socket buffer (the kernel doubles SO_RCVBUF) on
     * top of a head that was still under max_header_bytes when connguard last looked */
    uint64_t head_copy = cfg->max_header_bytes + 2 * cfg->socket_buffer;
    return MEMPLAN_CONN_BASE + cfg->upload_spill_bytes / 2 + head_copy + MEMPLAN_RESPONSE;
}

int memplan_compute(const cfg_t *cfg, uint64_t limit, const char *source, bool kernel_charged,
                    unsigned threads, unsigned workers, memplan_t *p, char *err, size_t errlen)
{
    memset(p, 0, sizeof(*p));
    p->limit = limit;
    p->limit_source = source;
    p->kernel_charged = kernel_charged;
    p->per_conn = per_conn(cfg);
    /* receive and send buffer, each doubled by the kernel for its own bookkeeping */
    p->per_conn_kernel = kernel_charged ? 4 * cfg->socket_buffer : 0;

    p->max_connections = cfg->max_connections;
    if (p->max_connections == 0) {
        uint64_t n = limit / 100 * AUTO_CONN_PERCENT / (p->per_conn + p->per_conn_kernel);
        p->max_connections = n < AUTO_CONN_MIN   ? AUTO_CONN_MIN
                             : n > AUTO_CONN_MAX ? AUTO_CONN_MAX
                                                 : (uint32_t)n;
    }
    p->max_body_inflight = cfg->max_body_inflight;
    if (p->max_body_inflight == 0) /* auto: 1/8 of the limit */
        p->max_body_inflight = limit / 8 > (1u << 20) ? limit / 8 : (1u << 20);

    bool s3 = cfg->storage_backend == CFG_BACKEND_S3;
    unsigned io = IO_THREADS + (s3 ? cfg->s3_transfers : 0);
    p->baseline = MEMPLAN_BASELINE + (uint64_t)(threads + workers + io) * MEMPLAN_THREAD;
    if (s3) /* the checker's handle is the +1; a listing is made by a transfer's thread */
        p->s3 = (uint64_t)(cfg->s3_transfers + 1) * (S3_HANDLE_BYTES + 2 * cfg->s3_buffer) +
                (uint64_t)cfg->s3_transfers * S3_LIST_MAX + S3STORE_SLOTS * 16;
    p->connections = (uint64_t)p->max_connections * p->per_conn;
    p->kernel = (uint64_t)p->max_connections * p->per_conn_kernel;
    p->bodies = p->max_body_inflight;
    p->flight = (uint64_t)cfg->flight_slots * 4096;
    p->hot = cfg->hot_results;
    p->backlog = threads * MEMPLAN_BACKLOG;
    p->backlog_kernel = (uint64_t)p->backlog * (MEMPLAN_SOCK_KERNEL + 2 * cfg->socket_buffer);
    uint64_t others =
        p->baseline + p->connections + p->kernel + p->bodies + p->flight + p->hot + p->s3;

    p->budget_auto = cfg->memory_budget == 0;
    if (p->budget_auto) {
        uint64_t room = others < limit ? (limit - others) / 21 * 20 : 0;
        uint64_t cap = limit / 100 * cfg->memory_budget_percent;
        p->budget = room < cap ? room : cap;
        p->budget_by_percent = cap < room;
        if (p->budget < MEMPLAN_MIN_BUDGET) {
            snprintf(err, errlen,
                     "the memory limit %.0f MiB (%s) leaves %.0f MiB for image work after "
                     "connections %.0f MiB, "
                     "request bodies %.0f MiB and the rest (%.0f MiB); at least %.0f MiB is "
                     "needed: lower "
                     "limits.max_connections, limits.max_body_inflight, limits.max_upload, "
                     "limits.max_header_bytes, http.upload_spill or http.hot_results, or raise "
                     "the limit",
                     limit / MIB, source, room / MIB, (p->connections + p->kernel) / MIB,
                     p->bodies / MIB, (p->baseline + p->flight + p->hot + p->s3) / MIB,
                     MEMPLAN_MIN_BUDGET / MIB);
            return -1;
        }
    } else {
        p->budget = cfg->memory_budget;
    }
    p->slack = p->budget / 20;
    p->total = others + p->budget + p->slack;
    if (p->total > limit) {
        snprintf(err, errlen,
                 "the memory plan needs %.0f MiB but the limit is %.0f MiB (%s): image budget "
                 "%.0f, connections "
                 "%.0f (%" PRIu32
                 " x %.0f KiB), request bodies %.0f, other %.0f MiB; lower memory.budget, "
                 "limits.max_connections, limits.max_body_inflight, limits.max_upload or "
                 "http.hot_results",
                 p->total / MIB, limit / MIB, source, p->budget / MIB,
                 (p->connections + p->kernel) / MIB, p->max_connections,
                 (p->per_conn + p->per_conn_kernel) / 1024.0, p->bodies / MIB,
                 (p->baseline + p->flight + p->hot + p->s3 + p->slack) / MIB);
        return -1;
    }
    return 0;
}

void memplan_log(const memplan_t *p, FILE *out)
{
    fprintf(out,
            "{\"log\":\"memory_plan\",\"limit\":%" PRIu64
            ",\"limit_source\":\"%s\",\"baseline\":%" PRIu64 ",\"budget\":%" PRIu64
            ",\"budget_auto\":%s,\"max_connections\":%" PRIu32 ",\"per_connection\":%" PRIu64
            ",\"connections\":%" PRIu64 ",\"bodies\":%" PRIu64 ",\"flight\":%" PRIu64
            ",\"hot\":%" PRIu64 ",\"kernel\":%" PRIu64 ",\"s3\":%" PRIu64 ",\"slack\":%" PRIu64
            ",\"backlog\":%" PRIu32 ",\"backlog_kernel\":%" PRIu64 ",\"total\":%" PRIu64 "}\n",
            p->limit, p->limit_source, p->baseline, p->budget, p->budget_auto ? "true" : "false",
            p->max_connections, p->per_conn + p->per_conn_kernel, p->connections, p->bodies,
            p->flight, p->hot, p->kernel, p->s3, p->slack, p->backlog, p->backlog_kernel, p->total);
}

void memplan_print(const memplan_t *p, FILE *out)
{
    fprintf(out, "# memory plan (worst case of every term)\n");
    fprintf(out, "#   limit          %10.1f MiB  (%s)\n", p->limit / MIB, p->limit_source);
    fprintf(out, "#   baseline       %10.1f MiB\n", p->baseline / MIB);
    fprintf(out, "#   image budget   %10.1f MiB  (%s)\n", p->budget / MIB,
            !p->budget_auto ? "memory.budget"
            : p->budget_by_percent
                ? "auto: memory.auto_percent of the limit (less than the rest leaves)"
                : "auto: what the other terms leave, less slack");
    fprintf(out, "#   connections    %10.1f MiB  (%" PRIu32 " x %.1f KiB)\n", p->connections / MIB,
            p->max_connections, p->per_conn / 1024.0);
    fprintf(out, "#   request bodies %10.1f MiB  (limits.max_body_inflight)\n", p->bodies / MIB);
    fprintf(out, "#   flight ring    %10.1f MiB\n", p->flight / MIB);
    if (p->hot > 0)
        fprintf(out, "#   hot results    %10.1f MiB  (http.hot_results)\n", p->hot / MIB);
    if (p->kernel_charged)
        fprintf(out, "#   socket buffers %10.1f MiB  (cgroup v2: %" PRIu32 " x %.1f KiB)\n",
                p->kernel / MIB, p->max_connections, p->per_conn_kernel / 1024.0);
    if (p->s3 > 0)
        fprintf(out, "#   s3 transfers   %10.1f MiB  (storage.s3.transfers, storage.s3.buffer)\n",
                p->s3 / MIB);
    fprintf(out, "#   allocator slack%10.1f MiB  (budget / 20)\n", p->slack / MIB);
    fprintf(out, "#   total          %10.1f MiB  (%.0f%% of the limit)\n", p->total / MIB,
            p->limit ? 100.0 * (double)p->total / (double)p->limit : 0.0);
    fprintf(out,
            "#   not in the total: accept queues %" PRIu32 " connections x %.1f KiB = %.1f MiB of "
            "kernel memory\n#     (charged to no cgroup until accepted; on cgroup v2 then to the "
            "socket buffers term)\n",
            p->backlog, p->backlog ? (double)(p->backlog_kernel / p->backlog) / 1024.0 : 0.0,
            p->backlog_kernel / MIB);
}
