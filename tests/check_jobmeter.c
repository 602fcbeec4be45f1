/* Integration tests of the per-job estimate check (server/jobmeter.c) against the real
 * binary: every job is observed, concurrent ones included; the underestimate counter stays
 * 0 on ordinary jobs and rises, with a log line naming the job, when the estimates really
 * are too low (TG_TEST_ESTIMATE_SCALE, a test-only knob that scales every estimate
 * down, admission included). Synchronised on /metrics, no sleeps. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tests/tg_harness.h"

static tg_server_t S;

static void teardown(void)
{
    tg_cleanup(&S);
}

/* Sends every path at once (each on its own connection), then reads every answer. */
static void get_all_at_once(const char *const *paths, int n)
{
    int fds[16];
    ck_assert_int_le(n, 16);
    for (int i = 0; i < n; i++)
        fds[i] = tg_send_get(&S, paths[i]);
    for (int i = 0; i < n; i++) {
        char buf[512];
        size_t got = tg_read_all(fds[i], buf, sizeof(buf) - 1, 60000);
        buf[got] = '\0';
        close(fds[i]);
        ck_assert_msg(strncmp(buf, "HTTP/1.1 200", 12) == 0, "%s: %.200s", paths[i], buf);
    }
}

START_TEST(test_jobmeter_every_job_measured_none_under)
{
    /* three workers, six different jobs sent together: they overlap, and each is still
     * measured (the old measure skipped every job that did not run alone). Without
     * mezzanine levels: a.jpg's second size starts a level job when its first result is
     * already there, which a slow client makes happen (7 jobs measured, once, at load 4) */
    const char *env[] = {"THUMBGATE_WORKERS=3", "THUMBGATE_MEZZANINE_ENABLED=false", NULL};
    tg_start(&S, env, NULL);
    tg_put_image(&S, "/a.jpg", 3000, 2000, "jpg");
    tg_put_image(&S, "/b.png", 1600, 1600, "png");
    tg_put_image(&S, "/c.webp", 1500, 1000, "webp");
    const char *paths[] = {"/a_290x290.jpg", "/a.webp",      "/b_400x300c.png",
                           "/b.jpg",         "/c_200x.webp", "/c.png"};
    int n = (int)(sizeof(paths) / sizeof(paths[0]));
    get_all_at_once(paths, n);
    ck_assert(tg_wait_metric(&S, "thumbgate_estimate_ratio_count", n, 30000));
    ck_assert_double_eq(tg_metric(&S, "thumbgate_estimate_ratio_count"), n);
    /* under ASan the resident memory includes redzones and quarantine */
    if (getenv("THUMBGATE_SANITIZED") == NULL) {
        ck_assert_double_eq(tg_metric(&S, "thumbgate_estimate_under_total"), 0);
        ck_assert_double_eq(tg_metric(&S, "thumbgate_estimate_ratio_bucket{le=\"1\"}"), 0);
    }
    /* a second round on a warm server, while the first round's heap may still be held */
    const char *again[] = {"/a_600x600.png", "/b_290x290.webp", "/c_100x100c.jpg", "/a.png"};
    get_all_at_once(again, 4);
    ck_assert(tg_wait_metric(&S, "thumbgate_estimate_ratio_count", n + 4, 30000));
    if (getenv("THUMBGATE_SANITIZED") == NULL)
        ck_assert_double_eq(tg_metric(&S, "thumbgate_estimate_under_total"), 0);
    ck_assert_int_eq(tg_stop(&S), 0);
}
END_TEST

START_TEST(test_jobmeter_counts_estimates_that_are_too_low)
{
    /* every estimate at 2% of itself: a full-size WebP of a 2000x2000 PNG holds tens of MB
     * for its encoder, fifty times its admitted estimate */
    const char *env[] = {"THUMBGATE_WORKERS=2", "TG_TEST_ESTIMATE_SCALE=0.02", NULL};
    tg_start(&S, env, NULL);
    tg_put_image(&S, "/u.png", 2000, 2000, "png");
    tg_put_image(&S, "/v.jpg", 3000, 2000, "jpg");
    const char *paths[] = {"/u.webp", "/v.png"};
    get_all_at_once(paths, 2);
    ck_assert(tg_wait_metric(&S, "thumbgate_estimate_ratio_count", 2, 30000));
    ck_assert(tg_wait_metric(&S, "thumbgate_estimate_under_total", 1, 30000));
    ck_assert_double_ge(tg_metric(&S, "thumbgate_estimate_ratio_bucket{le=\"1\"}"), 1);
    ck_assert_int_eq(tg_stop(&S), 0);
    /* one JSON line per underestimate, naming the job and the set it ran in */
    char line[8192];
    ck_assert_msg(tg_log_lines(S.log, "\"log\":\"estimate_under\"", line, sizeof(line)) > 0,
                  "no estimate_under line in %s", S.log);
    ck_assert(strstr(line, "\"job\":\"u full.webp\"") || strstr(line, "\"job\":\"v full.png\""));
    ck_assert_ptr_nonnull(strstr(line, "\"running\":"));
}
END_TEST

Suite *jobmeter_suite(void); /* called by check_main.c */
Suite *jobmeter_suite(void)
{
    Suite *s = suite_create("jobmeter");
    TCase *t = tcase_create("jobmeter");
    tcase_add_checked_fixture(t, tg_fixture_setup, teardown);
    tcase_set_timeout(t, 120);
    tcase_add_test(t, test_jobmeter_every_job_measured_none_under);
    tcase_add_test(t, test_jobmeter_counts_estimates_that_are_too_low);
    suite_add_tcase(s, t);
    return s;
}
