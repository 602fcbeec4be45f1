/* admin — the admin listener (loopback by default): /metrics (Prometheus text
 * format), /healthz, /readyz, /debug/flight, /debug/charts (charts.h) and /debug/heap
 * (heap.h). Rendering reads only atomics, the gate's stats and jemalloc's statistics, so a
 * scrape never waits on image work. */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/charts.h"
#include "server/connguard.h"
#include "server/flight.h"
#include "server/heap.h"
#include "server/http.h"
#include "server/json.h"
#include "server/room.h"
#include "server/s3store.h"

/* The room: the services it reads (never writes). */
typedef struct {
    h2o_handler_t super;
    room_services_t s;
} admin_t;

static void gauge(FILE *o, const char *name, const char *help, double v)
{
    fprintf(o, "# HELP %s %s\n# TYPE %s gauge\n%s %.17g\n", name, help, name, name, v);
}

static void counter(FILE *o, const char *name, const char *help, uint64_t v)
{
    fprintf(o, "# HELP %s %s\n# TYPE %s counter\n%s %" PRIu64 "\n", name, help, name, name, v);
}

/* A counter of seconds (microsecond resolution). */
static void counter_seconds(FILE *o, const char *name, const char *help, double v)
{
    fprintf(o, "# HELP %s %s\n# TYPE %s counter\n%s %.6f\n", name, help, name, name, v);
}

#define LOAD(x) atomic_load_explicit(&(x), memory_order_relaxed)

/* The s3 backend's requests to the store (none with the local backend). */
static void render_s3(const room_services_t *srv, FILE *o)
{
    s3store_t *rs = store_remote(srv->store);
    if (rs == NULL)
        return;
    s3_stats_t st;
    uint64_t coalesced;
    s3store_stats(rs, &st, &coalesced);
    fprintf(o, "# HELP thumbgate_s3_requests_total Requests to the object store by operation "
               "(check: the readiness checker's) and outcome.\n"
               "# TYPE thumbgate_s3_requests_total counter\n");
    for (int op = 0; op < S3_OP__N; op++)
        for (int r = 0; r < S3_RESULTS; r++)
            fprintf(o, "thumbgate_s3_requests_total{op=\"%s\",result=\"%s\"} %" PRIu64 "\n",
                    s3_op_name((s3_op_t)op), s3_result_name(r), st.n[op][r]);
    counter(o, "thumbgate_s3_checks_coalesced_total",
            "Checks against the bucket that took the outcome of a concurrent one for the same "
            "name instead of asking again.",
            coalesced);
}

/* The memory plan's terms beside what each term holds now (memplan.h, connguard.h). */
static void render_plan(const room_services_t *srv, FILE *o)
{
    const memplan_t *p = srv->plan;
    fprintf(o, "# HELP thumbgate_memory_plan_bytes Worst case of each term of the memory plan.\n"
               "# TYPE thumbgate_memory_plan_bytes gauge\n");
    const struct {
        const char *term;
        uint64_t v;
    } terms[] = {{"limit", p->limit},   {"baseline", p->baseline},
                 {"budget", p->budget}, {"connections", p->connections},
                 {"bodies", p->bodies}, {"flight", p->flight},
                 {"hot", p->hot},
                 {"kernel", p->kernel}, {"s3", p->s3},
                 {"slack", p->slack},   {"total", p->total}};
    for (size_t i = 0; i < sizeof(terms) / sizeof(terms[0]); i++)
        fprintf(o, "thumbgate_memory_plan_bytes{term=\"%s\"} %" PRIu64 "\n", terms[i].term,
                terms[i].v);
    connguard_stats_t g;
    connguard_stats(srv->guard, &g);
    gauge(o, "thumbgate_open_connections", "Open client connections on the public listener.",
          (double)g.open);
    gauge(o, "thumbgate_max_connections", "limits.max_connections as resolved by the memory plan.",
          (double)p->max_connections);
    gauge(o, "thumbgate_body_reserved_bytes",
          "Request-body bytes reserved now (limits.max_body_inflight).", (double)g.body_reserved);
    gauge(o, "thumbgate_conn_input_ram_bytes", "Connection input buffers held in memory.",
          (double)g.input_ram);
    gauge(o, "thumbgate_conn_input_spill_bytes", "Connection input buffers moved to spill files.",
          (double)g.input_spill);
    fprintf(o, "# HELP thumbgate_conn_refused_total Connections answered and closed by connguard, "
               "by reason.\n"
               "# TYPE thumbgate_conn_refused_total counter\n");
    for (unsigned r = 0; r < CONNGUARD_R_MAX; r++)
        fprintf(o, "thumbgate_conn_refused_total{reason=\"%s\"} %" PRIu64 "\n",
                connguard_reason_name(r), g.refused[r]);
}

/* jemalloc's figures (absent in a sanitizer build, where ASan owns malloc) and the heap
 * profile ring's counters when it is on. */
static void render_heap(const room_services_t *srv, FILE *o)
{
    heap_stats_t h;
    if (heap_stats(&h) != 0)
        return;
    gauge(o, "thumbgate_heap_allocated_bytes", "jemalloc: bytes in live allocations (in use).",
          (double)h.allocated);
    gauge(o, "thumbgate_heap_active_bytes",
          "jemalloc: bytes in pages holding live allocations (>= allocated).", (double)h.active);
    gauge(o, "thumbgate_heap_resident_bytes",
          "jemalloc: resident bytes of the allocator: active, unused dirty pages, metadata "
          "(held; >= active).",
          (double)h.resident);
    gauge(o, "thumbgate_heap_retained_bytes",
          "jemalloc: address space kept for reuse but returned to the kernel (not resident).",
          (double)h.retained);
    gauge(o, "thumbgate_heap_metadata_bytes", "jemalloc: the allocator's own structures.",
          (double)h.metadata);
    if (srv->cfg->heap_ring_interval_ms == 0)
        return;
    heap_ring_stats_t r;
    heap_ring_stats(&r);
    counter(o, "thumbgate_heap_ring_profiles_total", "Heap profiles written by the ring.",
            r.dumps);
    counter(o, "thumbgate_heap_ring_failures_total",
            "Heap profiles the ring could not write or keep (over heap_ring.max_disk alone).",
            r.failed);
    gauge(o, "thumbgate_heap_ring_files", "Heap profiles kept on disk.", (double)r.files);
    gauge(o, "thumbgate_heap_ring_bytes", "Bytes of the heap profiles kept on disk.",
          (double)r.bytes);
    gauge(o, "thumbgate_heap_ring_last_seconds", "Time the last profile took to write and prune.",
          (double)r.last_ms / 1000.0);
}

/* /debug/heap: a heap profile of the process, taken into the instance's temp directory,
 * read back and removed; 501 when this build has no profiling (a sanitizer build). */
static int render_heap_profile(const room_services_t *srv, FILE *o, json_t *j)
{
    char *prof = NULL;
    size_t len = 0;
    int rc = heap_dump_read(store_tmp_dir(srv->store), &prof, &len);
    if (rc == 0) {
        fwrite(prof, 1, len, o);
        free(prof);
        return 200;
    }
    json_str(j, "error", rc == -ENOTSUP ? "not_implemented" : "internal_error");
    if (rc == -ENOTSUP)
        json_str(j, "message", "heap profiles need the jemalloc build with profiling; this "
                               "build has none (sanitizer builds own malloc)");
    else
        json_str(j, "message", strerror(-rc));
    return rc == -ENOTSUP ? 501 : 500;
}

static void render_metrics(const room_services_t *srv, FILE *o)
{
    adm_stats_t a;
    adm_stats(srv->gate, &a);
    metrics_t *m = srv->metrics;
    gauge(o, "thumbgate_budget_bytes", "Memory budget for image work.", (double)a.budget);
    gauge(o, "thumbgate_budget_in_use_bytes", "Estimated bytes of the jobs running now.",
          (double)a.in_use);
    gauge(o, "thumbgate_budget_in_use_highwater_bytes", "Highest budget in use since start.",
          (double)a.in_use_highwater);
    gauge(o, "thumbgate_queue_length", "Jobs waiting for budget.", a.queue_len);
    gauge(o, "thumbgate_queue_bytes", "Sum of the estimates of waiting jobs.",
          (double)a.queued_bytes);
    gauge(o, "thumbgate_workers", "Image worker threads.", a.workers);
    gauge(o, "thumbgate_workers_busy", "Workers decoding or encoding now.",
          (double)LOAD(m->workers_busy));
    counter(o, "thumbgate_jobs_admitted_total", "Jobs that got budget and ran.", a.admitted);
    counter(o, "thumbgate_jobs_queued_total", "Jobs that had to wait for budget or a worker.",
            a.queued);
    counter(o, "thumbgate_jobs_completed_total", "Jobs finished (any outcome).", a.completed);
    counter(o, "thumbgate_jobs_failed_total", "Jobs whose decode or encode failed.",
            LOAD(m->jobs_failed));
    counter(o, "thumbgate_jobs_timed_out_total", "Jobs cancelled at memory.job_timeout (503).",
            LOAD(m->jobs_timed_out));
    counter(o, "thumbgate_jobs_coalesced_total", "Requests that joined an identical running job.",
            LOAD(m->coalesced));
    fprintf(o, "# HELP thumbgate_jobs_rejected_total Jobs refused or dropped, by reason.\n"
               "# TYPE thumbgate_jobs_rejected_total counter\n");
    fprintf(o, "thumbgate_jobs_rejected_total{reason=\"too_big\"} %" PRIu64 "\n",
            a.rejected_too_big);
    fprintf(o, "thumbgate_jobs_rejected_total{reason=\"queue_full\"} %" PRIu64 "\n",
            a.rejected_queue_full);
    fprintf(o, "thumbgate_jobs_rejected_total{reason=\"expired\"} %" PRIu64 "\n", a.expired);
    fprintf(o, "thumbgate_jobs_rejected_total{reason=\"pixels\"} %" PRIu64 "\n",
            LOAD(m->rejected_pixels));
    fprintf(o, "thumbgate_jobs_rejected_total{reason=\"client_gone\"} %" PRIu64 "\n",
            LOAD(m->jobs_dropped_gone));
    fprintf(o, "thumbgate_jobs_rejected_total{reason=\"format\"} %" PRIu64 "\n",
            LOAD(m->rejected_format));
    metrics_hist_render(o, "thumbgate_job_duration_seconds",
                        "Time a job spent decoding and encoding.", &m->job_seconds, 1);
    metrics_hist_render(o, "thumbgate_queue_wait_seconds", "Time a job waited for budget.",
                        &m->wait_seconds, 1);
    metrics_hist_render(
        o, "thumbgate_estimate_ratio",
        "Estimate / measured of every job: sum of the running estimates over the anonymous "
        "memory above the idle floor, lowest while it ran (below 1 = underestimate).",
        &m->est_ratio, 1);
    counter(o, "thumbgate_estimate_under_total",
            "Jobs whose running set used more memory than its estimates (a group bound).",
            LOAD(m->est_under));
    counter_seconds(o, "thumbgate_estimate_trim_seconds_total",
                    "Time the per-job measure spent giving freed heap back after jobs ended (its "
                    "cost).",
                    (double)LOAD(m->est_trim_us) / 1e6);

    fprintf(o, "# HELP thumbgate_http_requests_total Requests by route and status.\n"
               "# TYPE thumbgate_http_requests_total counter\n");
    for (int r = 0; r < METRICS_ROUTE_MAX; r++)
        for (unsigned s = 0; s < METRICS_NSTATUS; s++) {
            uint64_t v = LOAD(m->requests[r][s]);
            int code = metrics_slot_status(s);
            if (v == 0)
                continue;
            if (code)
                fprintf(o,
                        "thumbgate_http_requests_total{route=\"%s\",status=\"%d\"} %" PRIu64 "\n",
                        metrics_route_name(r), code, v);
            else
                fprintf(
                    o, "thumbgate_http_requests_total{route=\"%s\",status=\"other\"} %" PRIu64 "\n",
                    metrics_route_name(r), v);
        }
    counter(o, "thumbgate_http_received_bytes_total", "Request body bytes received.",
            LOAD(m->bytes_in));
    counter(o, "thumbgate_http_sent_bytes_total", "Response bytes sent.", LOAD(m->bytes_out));
    render_plan(srv, o);

    counter(o, "thumbgate_cache_hits_total", "Derived images served from the result cache.",
            LOAD(m->cache_hits));
    counter(o, "thumbgate_cache_misses_total", "Derived images that needed a job.",
            LOAD(m->cache_misses));
    counter(o, "thumbgate_hot_hits_total",
            "Cache hits answered from a hot result in memory (part of thumbgate_cache_hits_total).",
            LOAD(m->hot_hits));
    gauge(o, "thumbgate_hot_bytes", "Bytes of hot results in memory (http.hot_results).",
          (double)srv__hot_bytes());
    uint64_t cbytes, cev;
    store_cache_stats(srv->store, &cbytes, &cev);
    gauge(o, "thumbgate_cache_bytes", "Bytes of derived results on disk.", (double)cbytes);
    counter(o, "thumbgate_cache_evictions_total", "Derived results evicted (least recently used).",
            cev);
    uint64_t lbytes, lfiles;
    store_level_stats(srv->store, &lbytes, &lfiles);
    gauge(o, "thumbgate_mezzanine_bytes",
          "Bytes of mezzanine levels on disk (part of thumbgate_cache_bytes).", (double)lbytes);
    gauge(o, "thumbgate_mezzanine_levels",
          "Mezzanine level files on disk (an original's level and its small level).",
          (double)lfiles);
    counter(o, "thumbgate_mezzanine_made_total",
            "Level jobs done (each makes an original's level, then its small level).",
            LOAD(m->mezz_made));
    counter(o, "thumbgate_mezzanine_used_total", "Derived results made from a mezzanine level.",
            LOAD(m->mezz_used));
    counter(o, "thumbgate_mezzanine_small_used_total",
            "Of those, made from an original's small level (half its level).",
            LOAD(m->mezz_small_used));
    counter(o, "thumbgate_mezzanine_waited_total",
            "Derived requests that waited for their original's level instead of decoding the original.",
            LOAD(m->mezz_waited));
    counter(o, "thumbgate_mezzanine_refused_total",
            "Level jobs admission refused (queue full or over the budget).", LOAD(m->mezz_refused));

    render_s3(srv, o);

    uint64_t vnow, vhigh;
    metrics_proc_t pm;
    metrics_proc_read(&pm);
    imgproc_vips_mem(&vnow, &vhigh);
    gauge(o, "thumbgate_process_resident_anon_bytes", "RssAnon from /proc/self/status.",
          (double)pm.rss_anon);
    gauge(o, "thumbgate_process_resident_file_bytes", "RssFile from /proc/self/status.",
          (double)pm.rss_file);
    gauge(o, "thumbgate_process_resident_highwater_bytes", "VmHWM from /proc/self/status.",
          (double)pm.hwm);
    gauge(o, "thumbgate_process_threads", "Threads of the process.", (double)pm.threads);
    gauge(o, "thumbgate_vips_tracked_bytes", "Memory libvips tracks now.", (double)vnow);
    gauge(o, "thumbgate_vips_tracked_highwater_bytes", "Highest memory libvips tracked.",
          (double)vhigh);
    render_heap(srv, o);
    flight_render_metrics(srv->flight, o);
    gauge(o, "thumbgate_uptime_seconds", "Seconds since start.",
          (double)(adm_now_ms() - srv->started_at_ms) / 1000.0);
}

static void send_text(h2o_req_t *req, int status, const char *ctype, char *body, size_t len)
{
    static h2o_generator_t gen = {NULL, NULL};
    req->res.status = status;
    req->res.reason = status == 200 ? "OK" : "Error";
    req->res.content_length = len;
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, ctype,
                   strlen(ctype));
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL,
                   H2O_STRLIT("no-store"));
    h2o_iovec_t b = h2o_strdup(&req->pool, body, len);
    h2o_start_response(req, &gen);
    h2o_send(req, &b, 1, H2O_SEND_STATE_FINAL);
}

static int on_admin_req(h2o_handler_t *_self, h2o_req_t *req)
{
    const room_services_t *srv = &((admin_t *)_self)->s;
    h2o_iovec_t p = req->path_normalized;
    char *buf = NULL;
    size_t len = 0;
    FILE *o = open_memstream(&buf, &len);
    if (o == NULL)
        return -1;
    int status = 200;
    const char *ctype = "application/json";
    char jbuf[512];
    json_t j;
    json_begin(&j, jbuf, sizeof(jbuf));
    if (h2o_memis(p.base, p.len, H2O_STRLIT("/metrics"))) {
        render_metrics(srv, o);
        ctype = "text/plain; version=0.0.4; charset=utf-8";
    } else if (h2o_memis(p.base, p.len, H2O_STRLIT("/healthz"))) {
        bool ok = imgproc_selftest();
        status = ok ? 200 : 503;
        json_str(&j, "status", ok ? "ok" : "failing");
        json_bool(&j, "libvips", ok);
    } else if (h2o_memis(p.base, p.len, H2O_STRLIT("/readyz"))) {
        adm_stats_t a;
        adm_stats(srv->gate, &a);
        bool draining = atomic_load(srv->draining);
        /* saturated: a new job that cannot start at once would be refused */
        bool saturated =
            srv->cfg->queue_max > 0 ? a.queue_len >= srv->cfg->queue_max : a.running >= a.workers;
        bool store_ok = store_ready(srv->store); /* s3: the bucket answers */
        status = draining || saturated || !store_ok ? 503 : 200;
        json_bool(&j, "ready", status == 200);
        json_bool(&j, "store_ready", store_ok);
        json_bool(&j, "draining", draining);
        json_bool(&j, "queue_saturated", saturated);
        json_u64(&j, "queue_length", a.queue_len);
    } else if (h2o_memis(p.base, p.len, H2O_STRLIT("/debug/flight"))) {
        /* ?list: the kept runs; ?run=ID: one of them; otherwise the current ring */
        flight_opts_t fo;
        char q[24] = "", ferr[1400], *end = NULL;
        size_t qlen = req->query_at != SIZE_MAX ? req->path.len - req->query_at - 1 : 0;
        if (qlen < sizeof(q))
            memcpy(q, req->path.base + req->query_at + 1, qlen);
        bool list = strcmp(q, "list") == 0;
        long run = strncmp(q, "run=", 4) == 0 && isdigit((unsigned char)q[4])
                       ? strtol(q + 4, &end, 10)
                       : -1;
        flight_opts_init(&fo, srv->cfg);
        fflush(o);
        if (qlen != 0 && !list && (qlen >= sizeof(q) || run < 0 || *end != '\0')) {
            status = 400;
            json_str(&j, "error", "bad_request");
            json_str(&j, "message", "/debug/flight takes ?list or ?run=ID");
        } else if ((list ? flight_list(fo.path, o, true, ferr, sizeof(ferr))
                         : flight_dump(fo.path, run, o, true, 120, ferr, sizeof(ferr))) != 0) {
            status = 404;
            json_str(&j, "error", "not_found");
            json_str(&j, "message", "no such flight ring");
        }
    } else if (h2o_memis(p.base, p.len, H2O_STRLIT("/debug/heap"))) {
        status = render_heap_profile(srv, o, &j);
        ctype = status == 200 ? "text/plain; charset=utf-8" : ctype;
    } else if (h2o_memis(p.base, p.len, H2O_STRLIT("/debug/charts"))) {
        charts_write(o);
        ctype = "text/html; charset=utf-8";
    } else {
        status = 404;
        json_str(&j, "error", "not_found");
        json_str(&j, "message", "admin endpoints: /metrics /healthz /readyz "
                                "/debug/flight[?list|?run=ID] /debug/charts /debug/heap");
    }
    if (!j.first) /* a JSON answer was written into j, not into o */
        fwrite(jbuf, 1, json_end(&j), o);
    fclose(o);
    send_text(req, status, ctype, buf, len);
    free(buf);
    return 0;
}

static void do_register(h2o_pathconf_t *pathconf, const room_services_t *s)
{
    admin_t *self = (void *)h2o_create_handler(pathconf, sizeof(*self));
    self->super.on_req = on_admin_req;
    self->s = *s;
}

const room_t admin_room = {.admin = true, .register_ = do_register};
