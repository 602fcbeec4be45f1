/* Tests of the flight recorder: the ring (wrap, torn slots), the history of runs kept
 * across restarts (bounded by keep_runs and max_disk), the clean flag, a ring left by a
 * process killed with SIGKILL, the cgroup OOM-kill comparison (fake cgroup files), and an
 * integration test: kill -9 a real server with a job in flight, restart it on the same
 * storage, and find the previous run announced, kept and listed. */
#include <check.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "server/flight.h"
#include "tests/tg_harness.h"

static char dir[64];

static void setup(void)
{
    snprintf(dir, sizeof(dir), "/tmp/tgflight.XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
}

static void teardown(void)
{
    ck_assert_int_eq(tg_rmtree(dir), 0);
}

/* The sample callback: in_use counts the snapshots taken, so each one is recognisable. */
static void sample(void *ctx, flight_sample_t *out)
{
    uint64_t *n = ctx;
    *out = (flight_sample_t){.budget = 1000, .in_use = ++*n, .queue_len = 2, .running = 1};
}

static uint64_t nsamples;

static flight_opts_t opts(uint32_t slots, uint32_t keep_runs)
{
    flight_opts_t o;
    memset(&o, 0, sizeof(o));
    snprintf(o.path, sizeof(o.path), "%s/flight.ring", dir);
    o.slots = slots;
    o.interval_ms = 100;
    o.keep_runs = keep_runs;
    o.max_disk = 1 << 30;
    snprintf(o.cgroup_dir, sizeof(o.cgroup_dir), "%s/nocgroup", dir); /* no counter file */
    o.sample = sample;
    o.ctx = &nsamples;
    return o;
}

static flight_t *open_ok(const flight_opts_t *o)
{
    char err[1400] = "";
    flight_t *f = flight_open(o, err, sizeof(err));
    ck_assert_msg(f != NULL, "flight_open: %s", err);
    return f;
}

/** Output of fn into a heap string (caller frees). */
#define CAPTURE(var, call)                                                                         \
    do {                                                                                           \
        size_t len_;                                                                               \
        FILE *out = open_memstream(&(var), &len_);                                                 \
        call;                                                                                      \
        fclose(out);                                                                               \
    } while (0)

static unsigned count(const char *s, const char *needle)
{
    unsigned n = 0;
    for (const char *p = s; (p = strstr(p, needle)) != NULL; p += strlen(needle))
        n++;
    return n;
}

static bool exists(const char *name)
{
    char p[256];
    snprintf(p, sizeof(p), "%s/%s", dir, name);
    return access(p, F_OK) == 0;
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
}

/** Runs one recorder in a child that takes @p ticks snapshots with a job in flight, then
 *  is killed with SIGKILL (no flight_close). Returns the child's pid. */
static pid_t run_killed(const flight_opts_t *o, int ticks)
{
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        char err[1400];
        flight_t *f = flight_open(o, err, sizeof(err));
        if (f == NULL)
            _exit(3);
        static int job;
        flight_job_begin(f, &job, "victim full.webp", 123456789);
        for (int i = 0; i < ticks; i++)
            flight_tick(f, 1000 + (uint64_t)i * o->interval_ms);
        raise(SIGKILL);
        _exit(4);
    }
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert_msg(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "child status %d", st);
    return pid;
}

/* ---- the ring ---------------------------------------------------------------------------- */

START_TEST(test_flight_ring_wraps_keeping_the_newest)
{
    flight_opts_t o = opts(3, 5);
    nsamples = 0;
    flight_t *f = open_ok(&o);
    flight_tick(f, 1000);
    flight_tick(f, 1050); /* inside the interval: no snapshot */
    for (uint64_t t = 1100; t <= 1600; t += 100)
        flight_tick(f, t);
    ck_assert_uint_eq(nsamples, 7);
    char *js, err[1400];
    CAPTURE(js, ck_assert_int_eq(flight_dump(o.path, -1, out, true, 0, err, sizeof(err)), 0));
    /* 7 snapshots in 3 slots: the newest three, newest first, each with its own figures */
    ck_assert_uint_eq(count(js, "\"seq\":"), 3);
    char *a = strstr(js, "\"seq\":7,"), *b = strstr(js, "\"seq\":6,"),
         *c = strstr(js, "\"seq\":5,");
    ck_assert_msg(a && b && c && a < b && b < c, "%s", js);
    ck_assert_ptr_nonnull(strstr(a, "\"in_use\":7,"));
    ck_assert_ptr_nonnull(strstr(c, "\"in_use\":5,"));
    free(js);
    /* -n bounds the output */
    CAPTURE(js, ck_assert_int_eq(flight_dump(o.path, -1, out, true, 1, err, sizeof(err)), 0));
    ck_assert_uint_eq(count(js, "\"seq\":"), 1);
    free(js);

    /* a torn write (seq and its trailing copy differ) is skipped, the rest still read */
    int fd = open(o.path, O_RDWR);
    uint64_t seq, bad = 99;
    ck_assert_int_eq(pread(fd, &seq, sizeof(seq), 4096 * 2), sizeof(seq)); /* slot 1: seq 5 */
    ck_assert_uint_eq(seq, 5);
    ck_assert_int_eq(pwrite(fd, &bad, sizeof(bad), 4096 * 2), sizeof(bad));
    close(fd);
    CAPTURE(js, ck_assert_int_eq(flight_dump(o.path, -1, out, true, 0, err, sizeof(err)), 0));
    ck_assert_uint_eq(count(js, "\"seq\":"), 2);
    ck_assert_ptr_null(strstr(js, "\"seq\":99"));
    free(js);
    flight_close(f);
}
END_TEST

START_TEST(test_flight_dump_refuses_what_is_not_a_ring)
{
    char err[1400] = "", *txt;
    CAPTURE(txt, ck_assert_int_eq(flight_dump("/etc/hostname", -1, out, false, 0, err, sizeof(err)),
                                  -1));
    ck_assert_str_eq(txt, "");
    ck_assert_ptr_nonnull(strstr(err, "is not a flight recorder ring"));
    free(txt);
    flight_opts_t o = opts(4, 5);
    flight_close(open_ok(&o));
    CAPTURE(txt, ck_assert_int_eq(flight_dump(o.path, 99, out, false, 0, err, sizeof(err)), -1));
    ck_assert_ptr_nonnull(strstr(err, "no run 99"));
    free(txt);
    CAPTURE(txt, ck_assert_int_eq(flight_dump(o.path, 1, out, false, 0, err, sizeof(err)), 0));
    ck_assert_ptr_nonnull(strstr(txt, "flight recorder run 1 of pid "));
    free(txt);
}
END_TEST

/* ---- history ----------------------------------------------------------------------------- */

START_TEST(test_flight_history_is_bounded_by_keep_runs)
{
    flight_opts_t o = opts(4, 2);
    for (int i = 0; i < 5; i++) {
        flight_t *f = open_ok(&o);
        flight_tick(f, 1000);
        flight_close(f);
    }
    /* runs 1..5 were recorded; the current (5) and the two before it are kept */
    ck_assert(exists("flight.ring"));
    ck_assert(exists("flight.ring.4") && exists("flight.ring.3"));
    ck_assert(!exists("flight.ring.2") && !exists("flight.ring.1"));
    char *txt, err[1400];
    CAPTURE(txt, ck_assert_int_eq(flight_list(o.path, out, true, err, sizeof(err)), 0));
    ck_assert_uint_eq(count(txt, "\"run\":"), 3);
    char *r5 = strstr(txt, "\"run\":5,"), *r4 = strstr(txt, "\"run\":4,"),
         *r3 = strstr(txt, "\"run\":3,");
    ck_assert_msg(r5 && r4 && r3 && r5 < r4 && r4 < r3, "%s", txt);
    ck_assert_uint_eq(count(txt, "\"ended\":\"clean\""), 3);
    free(txt);
    /* any kept run prints by number */
    CAPTURE(txt, ck_assert_int_eq(flight_dump(o.path, 3, out, false, 0, err, sizeof(err)), 0));
    ck_assert_ptr_nonnull(strstr(txt, "flight recorder run 3 of pid"));
    free(txt);

    /* keep_runs 0: only the current ring stays, yet the previous run is still reported */
    o.keep_runs = 0;
    flight_t *f = open_ok(&o);
    ck_assert(!exists("flight.ring.5") && !exists("flight.ring.4") && !exists("flight.ring.3"));
    ck_assert_ptr_nonnull(flight_previous(f));
    ck_assert_uint_eq(flight_previous(f)->run, 5);
    flight_close(f);
}
END_TEST

START_TEST(test_flight_history_is_bounded_by_max_disk)
{
    /* a ring of 4 slots is 5 x 4 KiB; room for the current one and two kept */
    flight_opts_t o = opts(4, 100);
    o.max_disk = 3 * 5 * 4096 + 4095;
    for (int i = 0; i < 6; i++)
        flight_close(open_ok(&o));
    ck_assert(exists("flight.ring") && exists("flight.ring.5") && exists("flight.ring.4"));
    ck_assert(!exists("flight.ring.3") && !exists("flight.ring.2") && !exists("flight.ring.1"));
    /* a bigger ring from an older config counts at its real size */
    o.slots = 9; /* 10 x 4 KiB: only one 5-slot ring fits beside it */
    flight_close(open_ok(&o));
    ck_assert(exists("flight.ring.6") && !exists("flight.ring.5"));
    struct stat st;
    char p[256];
    snprintf(p, sizeof(p), "%s/flight.ring", dir);
    ck_assert_int_eq(stat(p, &st), 0);
    ck_assert_int_eq(st.st_size, 10 * 4096);
}
END_TEST

START_TEST(test_flight_clean_stop_is_not_announced)
{
    flight_opts_t o = opts(4, 5);
    char file[200];
    snprintf(o.cgroup_dir, sizeof(o.cgroup_dir), "%s", dir);
    snprintf(file, sizeof(file), "%s/memory.events", dir);
    write_file(file, "oom_kill 1\n");
    flight_t *f = open_ok(&o);
    ck_assert_ptr_null(flight_previous(f)); /* the first run has none */
    char *txt;
    CAPTURE(txt, flight_render_metrics(f, out));
    ck_assert_str_eq(txt, "");
    free(txt);
    flight_tick(f, 1000);
    flight_close(f);
    /* another process of the cgroup was OOM-killed after the clean stop: not this run */
    write_file(file, "oom_kill 2\n");

    f = open_ok(&o);
    const flight_prev_t *p = flight_previous(f);
    ck_assert_ptr_nonnull(p);
    ck_assert(p->clean);
    ck_assert(p->oom_known && !p->oom_killed);
    ck_assert_uint_eq(p->run, 1);
    ck_assert_uint_eq(p->pid, (uint64_t)getpid());
    CAPTURE(txt, flight_log_previous(f, out));
    ck_assert_str_eq(txt, ""); /* a clean stop is not news */
    free(txt);
    CAPTURE(txt, flight_render_metrics(f, out));
    ck_assert_ptr_nonnull(strstr(txt, "\nthumbgate_previous_run_clean 1\n"));
    ck_assert_ptr_nonnull(strstr(txt, "\nthumbgate_previous_run_oom_killed 0\n"));
    free(txt);
    flight_close(f);
}
END_TEST

START_TEST(test_flight_refuses_a_ring_in_use)
{
    flight_opts_t o = opts(4, 5);
    flight_t *f = open_ok(&o);
    char err[1400] = "";
    ck_assert_ptr_null(flight_open(&o, err, sizeof(err)));
    ck_assert_msg(strstr(err, "in use by a running thumbgate") != NULL, "%s", err);
    /* the live ring was neither rotated nor truncated */
    ck_assert(!exists("flight.ring.1"));
    char *txt;
    CAPTURE(txt, ck_assert_int_eq(flight_list(o.path, out, false, err, sizeof(err)), 0));
    ck_assert_ptr_nonnull(strstr(txt, "running"));
    free(txt);
    flight_close(f);
}
END_TEST

/* ---- a killed run ------------------------------------------------------------------------ */

START_TEST(test_flight_reads_the_ring_of_a_killed_process)
{
    flight_opts_t o = opts(8, 5);
    pid_t child = run_killed(&o, 3);

    flight_t *f = open_ok(&o);
    const flight_prev_t *p = flight_previous(f);
    ck_assert_ptr_nonnull(p);
    ck_assert(!p->clean);
    ck_assert_uint_eq(p->pid, (uint64_t)child);
    ck_assert_uint_eq(p->run, 1);
    ck_assert_uint_gt(p->last_snapshot_unix_ms, 0);
    ck_assert_uint_eq(p->njobs, 1);
    ck_assert_str_eq(p->jobs[0].what, "victim full.webp");
    ck_assert_uint_eq(p->jobs[0].estimate, 123456789);
    ck_assert(!p->oom_known); /* no cgroup file in this test */

    char *txt, want[128];
    CAPTURE(txt, flight_log_previous(f, out));
    ck_assert_uint_eq(count(txt, "\n"), 1);
    snprintf(want, sizeof(want), "{\"log\":\"previous_run\",\"run\":1,\"pid\":%d,\"clean\":false,",
             (int)child);
    ck_assert_msg(strncmp(txt, want, strlen(want)) == 0, "%s", txt);
    ck_assert_ptr_nonnull(
        strstr(txt, "\"jobs\":[{\"what\":\"victim full.webp\",\"estimate\":123456789,"));
    ck_assert_ptr_nonnull(strstr(txt, "\"oom_kill\":false,\"oom_kill_counter\":null,"));
    ck_assert_ptr_nonnull(strstr(txt, "/flight.ring.1\"}\n"));
    ck_assert_ptr_null(strstr(txt, "\"last_snapshot\":null"));
    free(txt);
    CAPTURE(txt, flight_render_metrics(f, out));
    ck_assert_ptr_nonnull(strstr(txt, "\nthumbgate_previous_run_clean 0\n"));
    ck_assert_ptr_nonnull(strstr(txt, "\nthumbgate_previous_run_jobs_in_flight 1\n"));
    free(txt);

    /* the kept ring reads back: the killed run, its 3 snapshots and its job */
    char err[1400];
    CAPTURE(txt, ck_assert_int_eq(flight_dump(o.path, 1, out, false, 0, err, sizeof(err)), 0));
    snprintf(want, sizeof(want), "flight recorder run 1 of pid %d (killed): 3 snapshots",
             (int)child);
    ck_assert_msg(strstr(txt, want) != NULL, "%s", txt);
    ck_assert_uint_eq(count(txt, "in flight: victim full.webp estimate=117.7MiB"), 3);
    free(txt);
    CAPTURE(txt, ck_assert_int_eq(flight_list(o.path, out, false, err, sizeof(err)), 0));
    ck_assert_msg(strstr(txt, "running\n") && strstr(txt, "killed\n"), "%s", txt);
    free(txt);
    flight_close(f);
}
END_TEST

START_TEST(test_flight_killed_before_any_snapshot)
{
    flight_opts_t o = opts(8, 5);
    pid_t child = run_killed(&o, 0);
    flight_t *f = open_ok(&o);
    const flight_prev_t *p = flight_previous(f);
    ck_assert_ptr_nonnull(p);
    ck_assert(!p->clean);
    ck_assert_uint_eq(p->pid, (uint64_t)child);
    ck_assert_uint_eq(p->last_snapshot_unix_ms, 0);
    char *txt;
    CAPTURE(txt, flight_log_previous(f, out));
    ck_assert_ptr_nonnull(strstr(txt, "\"last_snapshot\":null,\"jobs\":[],"));
    free(txt);
    flight_close(f);
}
END_TEST

START_TEST(test_flight_oom_kill_counter_v1_rose)
{
    flight_opts_t o = opts(8, 5);
    char cg[128], file[200];
    snprintf(cg, sizeof(cg), "%s/cg", dir);
    ck_assert_int_eq(mkdir(cg, 0755), 0);
    snprintf(o.cgroup_dir, sizeof(o.cgroup_dir), "%s", cg);
    snprintf(file, sizeof(file), "%s/memory.oom_control", cg);
    write_file(file, "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n");
    run_killed(&o, 2);
    write_file(file, "oom_kill_disable 0\nunder_oom 0\noom_kill 4\n"); /* the kernel killed */

    flight_t *f = open_ok(&o);
    const flight_prev_t *p = flight_previous(f);
    ck_assert(p->oom_known && p->oom_killed);
    ck_assert_uint_eq(p->oom_kills_then, 3);
    ck_assert_uint_eq(p->oom_kills_now, 4);
    char *txt, err[1400];
    CAPTURE(txt, flight_log_previous(f, out));
    ck_assert_ptr_nonnull(
        strstr(txt, "\"oom_kill\":true,\"oom_kill_counter\":{\"then\":3,\"now\":4}"));
    free(txt);
    CAPTURE(txt, flight_render_metrics(f, out));
    ck_assert_ptr_nonnull(strstr(txt, "\nthumbgate_previous_run_oom_killed 1\n"));
    free(txt);
    CAPTURE(txt, ck_assert_int_eq(flight_list(o.path, out, false, err, sizeof(err)), 0));
    ck_assert_msg(strstr(txt, "killed, oom_kill\n") != NULL, "%s", txt);
    free(txt);
    flight_close(f);
}
END_TEST

START_TEST(test_flight_oom_kill_counter_v2_unchanged_or_other_cgroup)
{
    flight_opts_t o = opts(8, 5);
    char cg[128], file[200];
    snprintf(cg, sizeof(cg), "%s/cg2", dir);
    ck_assert_int_eq(mkdir(cg, 0755), 0);
    snprintf(o.cgroup_dir, sizeof(o.cgroup_dir), "%s", cg);
    snprintf(file, sizeof(file), "%s/memory.events", cg);
    write_file(file, "low 0\nhigh 0\nmax 7\noom 2\noom_kill 2\noom_group_kill 0\n");
    run_killed(&o, 2);
    /* a kill -9 by someone else: the counter did not move */
    flight_t *f = open_ok(&o);
    const flight_prev_t *p = flight_previous(f);
    ck_assert(p->oom_known && !p->oom_killed);
    ck_assert_uint_eq(p->oom_kills_then, 2);
    flight_close(f);

    /* the next run lives in another cgroup: counters of two cgroups do not compare */
    run_killed(&o, 2);
    snprintf(cg, sizeof(cg), "%s/cg3", dir);
    ck_assert_int_eq(mkdir(cg, 0755), 0);
    snprintf(file, sizeof(file), "%s/memory.events", cg);
    write_file(file, "oom_kill 9\n");
    snprintf(o.cgroup_dir, sizeof(o.cgroup_dir), "%s", cg);
    f = open_ok(&o);
    p = flight_previous(f);
    ck_assert(!p->clean && !p->oom_known && !p->oom_killed);
    flight_close(f);
}
END_TEST

/* ---- integration: kill -9 a server and restart it ---------------------------------------- */

static tg_server_t S;

static void server_teardown(void)
{
    tg_cleanup(&S);
}

/** Runs `thumbgate flight ARGS` and returns its stdout (caller frees); asserts exit 0. */
static char *run_cli(const char *args)
{
    char cmd[700];
    snprintf(cmd, sizeof(cmd), "%s flight %s", getenv("THUMBGATE_BIN"), args);
    FILE *p = popen(cmd, "r");
    ck_assert_ptr_nonnull(p);
    char *out = calloc(1, 65536);
    size_t n = fread(out, 1, 65535, p);
    out[n] = '\0';
    ck_assert_msg(pclose(p) == 0, "%s failed: %s", cmd, out);
    return out;
}

START_TEST(test_flight_restart_after_kill9_keeps_and_announces_the_previous_run)
{
    const char *env[] = {"THUMBGATE_WORKERS=1", "THUMBGATE_FLIGHT_INTERVAL=100ms", NULL};
    tg_start(&S, env, NULL);
    char root[256];
    snprintf(root, sizeof(root), "%s", S.root);
    tg_put_image(&S, "/victim.png", 3000, 3000, "png");
    int a = tg_send_get(&S, "/victim.webp");
    ck_assert(tg_wait_metric(&S, "thumbgate_workers_busy", 1, 10000));
    /* a snapshot with the job is on disk */
    ck_assert(tg_wait_admin(&S, "/debug/flight", 200, "\"what\":\"victim full.webp\"", 30000));
    pid_t first = S.pid;
    kill(S.pid, SIGKILL);
    waitpid(S.pid, NULL, 0);
    S.pid = 0;
    close(a);

    /* restart on the same storage, as systemd Restart= would */
    tg_start(&S, env, root);
    /* /metrics answers only once the loops run, after the start-up log lines */
    ck_assert_double_eq(tg_metric(&S, "thumbgate_previous_run_clean"), 0);
    ck_assert_double_eq(tg_metric(&S, "thumbgate_previous_run_jobs_in_flight"), 1);
    ck_assert_double_eq(tg_metric(&S, "thumbgate_previous_run_oom_killed"), 0);
    char line[8192], want[64];
    ck_assert_uint_eq(tg_log_lines(S.log, "\"log\":\"previous_run\"", line, sizeof(line)), 1);
    snprintf(want, sizeof(want), "\"pid\":%d,\"clean\":false,", (int)first);
    ck_assert_msg(strstr(line, want) != NULL, "%s", line);
    ck_assert_msg(strstr(line, "\"jobs\":[{\"what\":\"victim full.webp\",\"estimate\":") != NULL,
                  "%s", line);
    ck_assert_ptr_nonnull(strstr(line, "\"oom_kill\":false"));
    ck_assert_ptr_null(strstr(line, "\"last_snapshot\":null"));

    /* the killed run's ring is kept and listed beside the running one */
    char args[400];
    snprintf(args, sizeof(args), "%s/flight.ring.1", root);
    ck_assert_int_eq(access(args, F_OK), 0);
    snprintf(args, sizeof(args), "--dir %s --list", root);
    char *out = run_cli(args);
    ck_assert_msg(count(out, "\n") == 3, "%s", out); /* a heading and two runs */
    ck_assert_msg(strstr(out, "\n2 ") && strstr(out, "running\n"), "%s", out);
    snprintf(want, sizeof(want), "\n1      %-8d", (int)first);
    ck_assert_msg(strstr(out, want) && strstr(out, "killed\n"), "%s", out);
    free(out);
    snprintf(args, sizeof(args), "--dir %s --run 1 -n 3", root);
    out = run_cli(args);
    ck_assert_msg(strstr(out, "(killed)") && strstr(out, "in flight: victim full.webp"), "%s", out);
    free(out);
    tg_resp_t r;
    ck_assert_int_eq(tg_admin(&S, "/debug/flight?run=1", &r), 200);
    ck_assert_ptr_nonnull(strstr(r.body, "\"what\":\"victim full.webp\""));
    tg_resp_free(&r);
    ck_assert_int_eq(tg_admin(&S, "/debug/flight?list", &r), 200);
    ck_assert_ptr_nonnull(strstr(r.body, "{\"run\":2,"));
    ck_assert_ptr_nonnull(strstr(r.body, "\"ended\":\"killed\""));
    tg_resp_free(&r);
    ck_assert_int_eq(tg_admin(&S, "/debug/flight?run=7", &r), 404);
    tg_resp_free(&r);
    ck_assert_int_eq(tg_admin(&S, "/debug/flight?run=1x", &r), 400);
    tg_resp_free(&r);

    /* a clean stop marks the ring clean, and the next start announces nothing */
    ck_assert_int_eq(tg_stop(&S), 0);
    snprintf(args, sizeof(args), "--dir %s --list --json", root);
    out = run_cli(args);
    ck_assert_msg(strstr(out, "{\"run\":2,") && strstr(out, "\"ended\":\"clean\""), "%s", out);
    free(out);
    tg_start(&S, env, root);
    ck_assert_double_eq(tg_metric(&S, "thumbgate_previous_run_clean"), 1);
    ck_assert_uint_eq(tg_log_lines(S.log, "\"log\":\"previous_run\"", NULL, 0), 1);
}
END_TEST

Suite *flight_suite(void); /* called by check_main.c */
Suite *flight_suite(void)
{
    Suite *s = suite_create("flight");
    TCase *t = tcase_create("ring");
    tcase_add_checked_fixture(t, setup, teardown);
    tcase_add_test(t, test_flight_ring_wraps_keeping_the_newest);
    tcase_add_test(t, test_flight_dump_refuses_what_is_not_a_ring);
    tcase_add_test(t, test_flight_history_is_bounded_by_keep_runs);
    tcase_add_test(t, test_flight_history_is_bounded_by_max_disk);
    tcase_add_test(t, test_flight_clean_stop_is_not_announced);
    tcase_add_test(t, test_flight_refuses_a_ring_in_use);
    tcase_add_test(t, test_flight_reads_the_ring_of_a_killed_process);
    tcase_add_test(t, test_flight_killed_before_any_snapshot);
    tcase_add_test(t, test_flight_oom_kill_counter_v1_rose);
    tcase_add_test(t, test_flight_oom_kill_counter_v2_unchanged_or_other_cgroup);
    suite_add_tcase(s, t);
    TCase *it = tcase_create("restart");
    tcase_add_checked_fixture(it, tg_fixture_setup, server_teardown);
    tcase_set_timeout(it, 120);
    tcase_add_test(it, test_flight_restart_after_kill9_keeps_and_announces_the_previous_run);
    suite_add_tcase(s, it);
    return s;
}
