/* Unit tests of server/metrics.c: every status the server sends has a slot of its own,
 * histograms bucket and render in the Prometheus format, /proc/self/status is read. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/metrics.h"

/* Every status thumbgate answers with (DESIGN.md and the error table). */
static const int sent[] = {200, 201, 204, 206, 304, 400, 401, 403, 404, 405,
                           408, 409, 413, 415, 416, 499, 500, 503, 507};

START_TEST(test_metrics_every_sent_status_has_a_slot)
{
    for (size_t i = 0; i < sizeof(sent) / sizeof(sent[0]); i++) {
        unsigned slot = metrics_status_slot(sent[i]);
        ck_assert_uint_lt(slot, METRICS_NSTATUS);
        ck_assert_msg(metrics_slot_status(slot) == sent[i], "status %d is counted as %d", sent[i],
                      metrics_slot_status(slot));
        for (size_t j = 0; j < i; j++)
            ck_assert_uint_ne(slot, metrics_status_slot(sent[j]));
    }
    /* anything else shares the "other" slot, which renders as status 0 */
    ck_assert_int_eq(metrics_slot_status(metrics_status_slot(418)), 0);
    ck_assert_uint_eq(metrics_status_slot(418), metrics_status_slot(599));
}
END_TEST

START_TEST(test_metrics_route_names)
{
    ck_assert_str_eq(metrics_route_name(METRICS_ROUTE_PUT), "put");
    ck_assert_str_eq(metrics_route_name(METRICS_ROUTE_DERIVED), "derived");
    ck_assert_str_eq(metrics_route_name(METRICS_ROUTE_MAX), "other");
}
END_TEST

static double sample(const char *text, const char *name)
{
    size_t l = strlen(name);
    for (const char *p = text; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
        if (strncmp(p, name, l) == 0 && p[l] == ' ')
            return strtod(p + l + 1, NULL);
    return -1;
}

START_TEST(test_metrics_histogram_buckets_and_render)
{
    static metrics_hist_t h;
    memset(&h, 0, sizeof(h));
    metrics_hist_observe(&h, 500);      /* 0.5 ms: first bucket (le 0.001) */
    metrics_hist_observe(&h, 1000);     /* exactly 1 ms: still le 0.001 */
    metrics_hist_observe(&h, 7000);     /* 7 ms: le 0.01 */
    metrics_hist_observe(&h, 60000000); /* 60 s: above every bound, only +Inf */
    char *buf = NULL;
    size_t len = 0;
    FILE *o = open_memstream(&buf, &len);
    metrics_hist_render(o, "t_seconds", "help text", &h, 1);
    fclose(o);
    ck_assert_ptr_nonnull(strstr(buf, "# HELP t_seconds help text\n# TYPE t_seconds histogram\n"));
    ck_assert_double_eq(sample(buf, "t_seconds_bucket{le=\"0.001\"}"), 2);
    ck_assert_double_eq(sample(buf, "t_seconds_bucket{le=\"0.005\"}"), 2);
    ck_assert_double_eq(sample(buf, "t_seconds_bucket{le=\"0.01\"}"), 3);
    ck_assert_double_eq(sample(buf, "t_seconds_bucket{le=\"30\"}"), 3);
    ck_assert_double_eq(sample(buf, "t_seconds_bucket{le=\"+Inf\"}"), 4);
    ck_assert_double_eq(sample(buf, "t_seconds_count"), 4);
    ck_assert_double_eq_tol(sample(buf, "t_seconds_sum"), 60.0085, 1e-6);
    free(buf);
}
END_TEST

START_TEST(test_metrics_proc_read)
{
    metrics_proc_t pm;
    metrics_proc_read(&pm);
    ck_assert_uint_gt(pm.rss, 0);
    ck_assert_uint_ge(pm.hwm, pm.rss);
    ck_assert_uint_ge(pm.threads, 1);
    /* a touched 64 MiB buffer shows in the resident and highwater figures */
    size_t n = 64u << 20;
    char *p = malloc(n);
    ck_assert_ptr_nonnull(p);
    memset(p, 1, n);
    __asm__ volatile("" : : "r"(p) : "memory"); /* the pages must really be written */
    metrics_proc_t after;
    metrics_proc_read(&after);
    ck_assert_uint_ge(after.rss_anon, pm.rss_anon + n / 2);
    ck_assert_uint_ge(after.hwm, pm.rss + n / 2);
    free(p);
}
END_TEST

Suite *metrics_suite(void); /* called by check_main.c */
Suite *metrics_suite(void)
{
    Suite *s = suite_create("metrics");
    TCase *t = tcase_create("metrics");
    tcase_add_test(t, test_metrics_every_sent_status_has_a_slot);
    tcase_add_test(t, test_metrics_route_names);
    tcase_add_test(t, test_metrics_histogram_buckets_and_render);
    tcase_add_test(t, test_metrics_proc_read);
    suite_add_tcase(s, t);
    return s;
}
