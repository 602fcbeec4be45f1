/* Integration tests of the admin listener and the flight recorder: every endpoint, the
 * Prometheus format (promtool), counters moving with real requests, readiness while
 * saturated and while draining, the access log line, and the post-mortem after kill -9. */
#include <check.h>
#include <curl/curl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <vips/vips.h>

#include "tests/tg_harness.h"

static tg_server_t S;

static void teardown(void)
{
    tg_cleanup(&S);
}

static void put(const char *path, int w, int h, const char *fmt)
{
    tg_put_image(&S, path, w, h, fmt);
}

START_TEST(test_admin_endpoints)
{
    tg_start(&S, NULL, NULL);
    tg_resp_t r;
    char ct[80];
    ck_assert_int_eq(tg_admin(&S, "/healthz", &r), 200);
    ck_assert_str_eq(r.body, "{\"status\":\"ok\",\"libvips\":true}\n");
    tg_resp_free(&r);
    ck_assert_int_eq(tg_admin(&S, "/readyz", &r), 200);
    ck_assert_ptr_nonnull(strstr(r.body, "\"ready\":true"));
    tg_resp_free(&r);
    ck_assert_int_eq(tg_admin(&S, "/metrics", &r), 200);
    ck_assert(tg_header(&r, "content-type", ct, sizeof(ct)));
    ck_assert_str_eq(ct, "text/plain; version=0.0.4; charset=utf-8");
    tg_resp_free(&r);
    ck_assert_int_eq(tg_admin(&S, "/debug/flight", &r), 200);
    ck_assert(r.body[0] == '[');
    tg_resp_free(&r);
    ck_assert_int_eq(tg_admin(&S, "/nope", &r), 404);
    ck_assert_ptr_nonnull(strstr(r.body, "\"error\":\"not_found\""));
    tg_resp_free(&r);
    /* the admin listener is not the public API, and vice versa */
    ck_assert_int_eq(tg_http(&S, "GET", "/metrics", NULL, 0, NULL, &r), 404);
    tg_resp_free(&r);
}
END_TEST

START_TEST(test_admin_metrics_pass_promtool_and_move)
{
    tg_start(&S, NULL, NULL);
    /* a job on a large PNG (no shrink-on-load) raises the process's high-water mark,
     * which is how a lone job's peak is measured (VmHWM is never reset) */
    put("/m.png", 3000, 3000, "png");
    tg_resp_t r;
    ck_assert_int_eq(tg_http(&S, "GET", "/m_2000x.jpg", NULL, 0, NULL, &r), 200);
    tg_resp_free(&r);
    ck_assert_int_eq(tg_http(&S, "GET", "/m_2000x.jpg", NULL, 0, NULL, &r), 200);
    tg_resp_free(&r);
    ck_assert_int_eq(tg_http(&S, "GET", "/m.png", NULL, 0, NULL, &r), 200);
    tg_resp_free(&r);
    ck_assert_int_eq(tg_http(&S, "GET", "/absent.jpg", NULL, 0, NULL, &r),
                     404); /* a conversion of stem "absent" */
    tg_resp_free(&r);
    ck_assert_int_eq(tg_http(&S, "GET", "/absent", NULL, 0, NULL, &r), 404);
    tg_resp_free(&r);
    ck_assert_int_eq(tg_http(&S, "GET", "/a//b", NULL, 0, NULL, &r), 400);
    tg_resp_free(&r);

    ck_assert_int_eq(tg_admin(&S, "/metrics", &r), 200);
    char path[320];
    snprintf(path, sizeof(path), "%s.metrics", S.root);
    FILE *f = fopen(path, "w");
    fwrite(r.body, 1, r.len, f);
    fclose(f);
    tg_resp_free(&r);
    ck_assert_msg(system("command -v promtool >/dev/null") == 0,
                  "promtool is missing: run make deps");
    char cmd[400];
    snprintf(cmd, sizeof(cmd), "promtool check metrics < %s", path);
    int st = system(cmd);
    unlink(path);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "promtool rejected /metrics");

    /* the access logger counts after the response is sent: wait for the last one */
    ck_assert(tg_wait_metric(&S, "thumbgate_http_requests_total{route=\"other\",status=\"400\"}", 1,
                             5000));
    ck_assert_double_eq(
        tg_metric(&S, "thumbgate_http_requests_total{route=\"put\",status=\"201\"}"), 1);
    ck_assert_double_eq(
        tg_metric(&S, "thumbgate_http_requests_total{route=\"derived\",status=\"200\"}"), 2);
    ck_assert_double_eq(
        tg_metric(&S, "thumbgate_http_requests_total{route=\"original\",status=\"200\"}"), 1);
    ck_assert_double_eq(
        tg_metric(&S, "thumbgate_http_requests_total{route=\"original\",status=\"404\"}"), 1);
    ck_assert_double_eq(
        tg_metric(&S, "thumbgate_http_requests_total{route=\"derived\",status=\"404\"}"), 1);
    ck_assert_double_eq(tg_metric(&S, "thumbgate_cache_misses_total"), 1);
    ck_assert_double_eq(tg_metric(&S, "thumbgate_cache_hits_total"), 1);
    ck_assert_double_eq(tg_metric(&S, "thumbgate_jobs_admitted_total"), 1);
    ck_assert_double_eq(tg_metric(&S, "thumbgate_job_duration_seconds_count"), 1);
    ck_assert_double_ge(tg_metric(&S, "thumbgate_http_received_bytes_total"), 1000);
    ck_assert_double_ge(tg_metric(&S, "thumbgate_http_sent_bytes_total"), 1000);
    ck_assert_double_gt(tg_metric(&S, "thumbgate_process_resident_anon_bytes"), 0);
    ck_assert_double_gt(tg_metric(&S, "thumbgate_budget_in_use_highwater_bytes"), 0);
    ck_assert_double_gt(tg_metric(&S, "thumbgate_cache_bytes"), 0);
    /* the one job ran alone, so its estimate was compared with its measured peak */
    ck_assert_double_eq(tg_metric(&S, "thumbgate_estimate_ratio_count"), 1);
    /* no underestimate; under ASan the measured peak includes redzones and quarantine */
    if (getenv("THUMBGATE_SANITIZED") == NULL)
        ck_assert_double_eq(tg_metric(&S, "thumbgate_estimate_ratio_bucket{le=\"1\"}"), 0);
}
END_TEST

START_TEST(test_admin_readyz_saturated_and_draining)
{
    const char *env[] = {"THUMBGATE_WORKERS=1", "THUMBGATE_MEMORY_QUEUE_MAX=1",
                         "THUMBGATE_MEMORY_QUEUE_TIMEOUT=60s",
                         /* the drain must outlast two 9 MP jobs on a loaded machine: the
                          * test asserts that they finish, not how fast */
                         "THUMBGATE_HTTP_SHUTDOWN_TIMEOUT=120s", NULL};
    tg_start(&S, env, NULL);
    put("/s.png", 3000, 3000, "png");
    int a = tg_send_get(&S, "/s.webp");
    ck_assert(tg_wait_metric(&S, "thumbgate_workers_busy", 1, 10000));
    int b = tg_send_get(&S, "/s_700x.png");
    ck_assert(tg_wait_metric(&S, "thumbgate_queue_length", 1, 10000));
    tg_resp_t r;
    ck_assert_int_eq(tg_admin(&S, "/readyz", &r), 503);
    ck_assert_ptr_nonnull(strstr(r.body, "\"queue_saturated\":true"));
    tg_resp_free(&r);
    /* SIGTERM: in-flight jobs finish; meanwhile the node reports not ready */
    kill(S.pid, SIGTERM);
    ck_assert(tg_wait_admin(&S, "/readyz", 503, "\"draining\":true", 30000));
    char buf[512];
    tg_read_all(a, buf, sizeof(buf), 30000);
    ck_assert(strncmp(buf, "HTTP/1.1 200", 12) == 0);
    tg_read_all(b, buf, sizeof(buf), 30000);
    ck_assert(strncmp(buf, "HTTP/1.1 200", 12) == 0);
    close(a);
    close(b);
    int st;
    waitpid(S.pid, &st, 0);
    S.pid = 0;
    ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}
END_TEST

START_TEST(test_admin_flight_recorder_names_job_after_kill9)
{
    const char *env[] = {"THUMBGATE_WORKERS=1", "THUMBGATE_FLIGHT_INTERVAL=100ms", NULL};
    tg_start(&S, env, NULL);
    put("/victim.png", 3000, 3000, "png");
    int a = tg_send_get(&S, "/victim.webp");
    ck_assert(tg_wait_metric(&S, "thumbgate_workers_busy", 1, 10000));
    /* wait until a snapshot with the job is on disk (seen through /debug/flight): bounded
     * by time, not by a count of requests, which a fast machine makes within one interval */
    ck_assert(tg_wait_admin(&S, "/debug/flight", 200, "\"what\":\"victim full.webp\"", 30000));
    kill(S.pid, SIGKILL);
    waitpid(S.pid, NULL, 0);
    S.pid = 0;
    close(a);
    char cmd[600], out[8192];
    snprintf(cmd, sizeof(cmd), "%s flight %s/flight.ring -n 5", getenv("THUMBGATE_BIN"), S.root);
    FILE *p = popen(cmd, "r");
    size_t n = fread(out, 1, sizeof(out) - 1, p);
    out[n] = '\0';
    ck_assert_int_eq(pclose(p), 0);
    ck_assert_msg(strstr(out, "in flight: victim full.webp") != NULL, "post-mortem: %s", out);
    ck_assert_ptr_nonnull(strstr(out, "budget_in_use="));
    /* not a ring: a clear error */
    snprintf(cmd, sizeof(cmd), "%s flight /etc/hostname 2>/dev/null", getenv("THUMBGATE_BIN"));
    int st = system(cmd);
    ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 2);
}
END_TEST

START_TEST(test_admin_access_log_line)
{
    const char *env[] = {"THUMBGATE_LOG_ACCESS=true", NULL};
    tg_start(&S, env, NULL);
    size_t len;
    char *img = tg_image(40, 40, 3, "jpg", &len);
    /* a body that must never reach the log: mark it */
    tg_resp_t r;
    ck_assert_int_eq(tg_http(&S, "PUT", "/logged.jpg", img, len, NULL, &r), 201);
    tg_resp_free(&r);
    ck_assert_int_eq(tg_http(&S, "GET", "/logged_10x10.png", NULL, 0, NULL, &r), 200);
    tg_resp_free(&r);
    ck_assert_int_eq(tg_stop(&S), 0); /* flushes and closes the log */
    FILE *f = fopen(S.log, "r");
    char line[2048];
    int put_lines = 0, derive_lines = 0;
    while (f && fgets(line, sizeof(line), f)) {
        if (strstr(line, "\"log\":\"access\"") && strstr(line, "\"method\":\"PUT\"") &&
            strstr(line, "\"path\":\"/logged.jpg\"") && strstr(line, "\"status\":201"))
            put_lines++;
        if (strstr(line, "\"path\":\"/logged_10x10.png\"") &&
            strstr(line, "\"admission\":\"admitted\"") && strstr(line, "\"estimate\":") &&
            strstr(line, "\"wait_ms\":"))
            derive_lines++;
        ck_assert_ptr_null(memmem(line, strlen(line), img + 2, 16)); /* no body bytes */
    }
    if (f)
        fclose(f);
    ck_assert_int_eq(put_lines, 1);
    ck_assert_int_eq(derive_lines, 1);
    g_free(img);
}
END_TEST

/* The live memory page is one self-contained document: no script, style or font fetched
 * from anywhere, so it works on an air-gapped admin port; it polls /metrics there. */
START_TEST(test_admin_charts_page_self_contained)
{
    tg_start(&S, NULL, NULL);
    tg_resp_t r;
    char ct[80];
    ck_assert_int_eq(tg_admin(&S, "/debug/charts", &r), 200);
    ck_assert(tg_header(&r, "content-type", ct, sizeof(ct)));
    ck_assert_str_eq(ct, "text/html; charset=utf-8");
    ck_assert_uint_eq(strlen(r.body), r.len); /* text, no NUL inside */
    ck_assert(strncmp(r.body, "<!doctype html>", 15) == 0);
    ck_assert_ptr_nonnull(strstr(r.body, "</html>"));
    ck_assert_ptr_nonnull(strstr(r.body, "fetch(\"/metrics\""));
    ck_assert_ptr_nonnull(strstr(r.body, "<canvas"));
    ck_assert_ptr_null(strcasestr(r.body, "http://"));
    ck_assert_ptr_null(strcasestr(r.body, "https://"));
    ck_assert_ptr_null(strcasestr(r.body, "<link"));
    ck_assert_ptr_null(strcasestr(r.body, "@import"));
    ck_assert_ptr_null(strcasestr(r.body, "url("));
    int scripts = 0;
    for (const char *q = r.body; (q = strcasestr(q, "<script")) != NULL; q += 7, scripts++)
        ck_assert_msg(q[7] == '>', "a <script> with attributes (src=?): %.60s", q);
    ck_assert_int_eq(scripts, 1);
    ck_assert_ptr_nonnull(strstr(r.body, "thumbgate_heap_allocated_bytes"));
    tg_resp_free(&r);
    /* the allocator metrics the page draws are there (tg_metric is -1 when absent): jemalloc's;
     * under ASan, which owns malloc, they are absent and the page says "not exported" */
    if (getenv("THUMBGATE_SANITIZED") == NULL) {
        ck_assert_double_gt(tg_metric(&S, "thumbgate_heap_allocated_bytes"), 0);
        ck_assert_double_gt(tg_metric(&S, "thumbgate_heap_resident_bytes"), 0);
    } else {
        ck_assert_double_eq(tg_metric(&S, "thumbgate_heap_allocated_bytes"), -1);
    }
}
END_TEST

Suite *admin_suite(void); /* called by check_main.c */
Suite *admin_suite(void)
{
    Suite *s = suite_create("admin");
    TCase *t = tcase_create("admin");
    tcase_add_checked_fixture(t, tg_fixture_setup, teardown);
    tcase_set_timeout(t, 120);
    tcase_add_test(t, test_admin_endpoints);
    tcase_add_test(t, test_admin_metrics_pass_promtool_and_move);
    tcase_add_test(t, test_admin_readyz_saturated_and_draining);
    tcase_add_test(t, test_admin_flight_recorder_names_job_after_kill9);
    tcase_add_test(t, test_admin_access_log_line);
    tcase_add_test(t, test_admin_charts_page_self_contained);
    suite_add_tcase(s, t);
    return s;
}
