/* The allocator room (server/heap.c): a heap profile fetched from a running server opens in
 * jeprof, jemalloc's figures in /metrics keep their order, the profile ring keeps at most
 * heap_ring.keep files within heap_ring.max_disk, and a build without jemalloc (ASan)
 * answers /debug/heap with a JSON 501. */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "server/heap.h"
#include "tests/tg_harness.h"

static tg_server_t S;

static void teardown(void)
{
    tg_cleanup(&S);
}

/* Runs `jeprof --text BIN PROFILE` and returns its exit status; its output goes to @p out. */
static int jeprof_text(const char *profile, char *out, size_t cap)
{
    char cmd[1200];
    snprintf(cmd, sizeof(cmd), "jeprof --text '%s' '%s' 2>&1", getenv("THUMBGATE_BIN"), profile);
    FILE *p = popen(cmd, "r");
    ck_assert_ptr_nonnull(p);
    size_t n = 0, r;
    while (n + 1 < cap && (r = fread(out + n, 1, cap - 1 - n, p)) > 0)
        n += r;
    out[n] = '\0';
    char sink[4096];
    while (fread(sink, 1, sizeof(sink), p) > 0) /* let it finish writing */
        ;
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

START_TEST(test_heap_profile_opens_in_jeprof)
{
    /* every allocation sampled (jemalloc reads MALLOC_CONF after our malloc_conf), so the
     * live heap named below is in the profile every time, not by the luck of a 512 KiB
     * average sampling interval (an idle profile once named only gnutls' init) */
    const char *env[] = {"MALLOC_CONF=lg_prof_sample:0", NULL};
    tg_start(&S, env, NULL);
    tg_put_image(&S, "/p.png", 2000, 2000, "png");
    tg_resp_t r;
    ck_assert_int_eq(tg_http(&S, "GET", "/p_290x290.jpg", NULL, 0, NULL, &r), 200);
    tg_resp_free(&r);
    long st = tg_admin(&S, "/debug/heap", &r);
    if (!heap_available()) { /* a sanitizer build: ASan owns malloc, no profiles */
        ck_assert_int_eq(st, 501);
        ck_assert_ptr_nonnull(strstr(r.body, "\"error\":\"not_implemented\""));
        ck_assert_ptr_nonnull(strstr(r.body, "\"message\":"));
        tg_resp_free(&r);
        return;
    }
    ck_assert_int_eq(st, 200);
    ck_assert_msg(strncmp(r.body, "heap_v2/", 8) == 0, "not a jemalloc heap profile: %.40s",
                  r.body);
    ck_assert_ptr_nonnull(strstr(r.body, "MAPPED_LIBRARIES:"));
    char path[400];
    snprintf(path, sizeof(path), "%s.prof", S.root);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(r.body, 1, r.len, f), r.len);
    fclose(f);
    tg_resp_free(&r);
    /* the temporary profile is gone from the instance's temp directory */
    char cmd[600], out[64 * 1024];
    snprintf(cmd, sizeof(cmd), "find '%s/tmp' -name 'heap.*' | grep -q .", S.root);
    ck_assert_int_ne(system(cmd), 0);

    int rc = jeprof_text(path, out, sizeof(out));
    unlink(path);
    ck_assert_msg(rc == 0, "jeprof --text exited %d:\n%s", rc, out);
    ck_assert_msg(strstr(out, "Total:") != NULL, "no total in:\n%s", out);
    /* symbolised against the binary: the server's own functions (or libvips') are named.
     * Which allocations are sampled is random, so any of the paths that hold memory at
     * idle will do: start-up (main, srv_run, imgproc_init), the connection table, libvips */
    static const char *const ours[] = {" main\n", "srv_run",  "srv__", "connguard_",
                                       "store_",  "imgproc_", "vips_"};
    bool named = false;
    for (size_t i = 0; i < sizeof(ours) / sizeof(ours[0]); i++)
        named = named || strstr(out, ours[i]) != NULL;
    ck_assert_msg(named, "no thumbgate or libvips function in:\n%s", out);
}
END_TEST

static double metric(const char *name)
{
    return tg_metric(&S, name);
}

START_TEST(test_heap_metrics_in_order)
{
    tg_start(&S, NULL, NULL);
    tg_put_image(&S, "/m.png", 2500, 2500, "png");
    tg_resp_t r;
    ck_assert_int_eq(tg_http(&S, "GET", "/m_1200x.jpg", NULL, 0, NULL, &r), 200);
    tg_resp_free(&r);
    if (!heap_available()) { /* ASan: no jemalloc figures rather than wrong ones */
        ck_assert_double_eq(metric("thumbgate_heap_allocated_bytes"), -1);
        ck_assert_double_eq(metric("thumbgate_heap_resident_bytes"), -1);
        return;
    }
    /* one scrape, so the figures come from one epoch */
    ck_assert_int_eq(tg_admin(&S, "/metrics", &r), 200);
    double v[5];
    const char *names[5] = {"thumbgate_heap_allocated_bytes", "thumbgate_heap_active_bytes",
                            "thumbgate_heap_resident_bytes", "thumbgate_heap_retained_bytes",
                            "thumbgate_process_resident_anon_bytes"};
    for (int i = 0; i < 5; i++) {
        char key[80];
        snprintf(key, sizeof(key), "\n%s ", names[i]);
        const char *p = strstr(r.body, key);
        ck_assert_msg(p != NULL, "%s missing", names[i]);
        v[i] = strtod(p + strlen(key), NULL);
    }
    tg_resp_free(&r);
    ck_assert_double_gt(v[0], 1 << 20); /* libvips, h2o, the connection table: MiBs */
    ck_assert_double_le(v[0], v[1]);    /* allocated <= active */
    ck_assert_double_le(v[1], v[2]);    /* active <= resident */
    ck_assert_double_ge(v[3], 0);
    /* what the allocator says is in use is resident anonymous memory of the process
     * (allocations are touched when used; the rest is libraries, stacks, h2o's buffers) */
    ck_assert_double_le(v[0], v[4]);
}
END_TEST

/* ---- the ring ---- */

static void write_file(const char *dir, const char *name, size_t size)
{
    char path[600];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    for (size_t i = 0; i < size; i++)
        fputc('x', f);
    fclose(f);
}

static bool exists(const char *dir, const char *name)
{
    char path[600];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    return access(path, F_OK) == 0;
}

/* Profiles listed in @p dir (names heap.<ms>.<pid>.heap), and their total size. */
static int count_profiles(const char *dir, long long *bytes)
{
    DIR *d = opendir(dir);
    ck_assert_ptr_nonnull(d);
    struct dirent *e;
    int n = 0;
    *bytes = 0;
    while ((e = readdir(d)) != NULL) {
        size_t l = strlen(e->d_name);
        if (strncmp(e->d_name, "heap.", 5) != 0 || l < 10 || strcmp(e->d_name + l - 5, ".heap"))
            continue;
        struct stat st;
        ck_assert_int_eq(fstatat(dirfd(d), e->d_name, &st, 0), 0);
        *bytes += st.st_size;
        n++;
    }
    closedir(d);
    return n;
}

START_TEST(test_heap_ring_prune_keeps_newest_within_bounds)
{
    char dir[] = "/tmp/tg-heapring-XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    /* five profiles, oldest first, 1000 bytes each, and two files that are not profiles */
    const char *p[5] = {"heap.0000000000001.7.heap", "heap.0000000000002.7.heap",
                        "heap.0000000000003.8.heap", "heap.0000000000004.8.heap",
                        "heap.0000000000005.8.heap"};
    for (int i = 0; i < 5; i++)
        write_file(dir, p[i], 1000);
    write_file(dir, "notes.txt", 5000);
    write_file(dir, ".heap.tmp.9", 5000);
    uint64_t files, bytes;
    /* the count bound */
    ck_assert_int_eq(heap_ring_prune(dir, 3, 1 << 20, &files, &bytes), 0);
    ck_assert_uint_eq(files, 3);
    ck_assert_uint_eq(bytes, 3000);
    ck_assert(!exists(dir, p[0]) && !exists(dir, p[1]));
    ck_assert(exists(dir, p[2]) && exists(dir, p[3]) && exists(dir, p[4]));
    ck_assert(exists(dir, "notes.txt") && exists(dir, ".heap.tmp.9"));
    /* the disk bound: 2500 bytes hold the newest two */
    ck_assert_int_eq(heap_ring_prune(dir, 10, 2500, &files, &bytes), 0);
    ck_assert_uint_eq(files, 2);
    ck_assert_uint_eq(bytes, 2000);
    ck_assert(!exists(dir, p[2]) && exists(dir, p[3]) && exists(dir, p[4]));
    /* a newest profile larger than the whole bound is not kept either */
    write_file(dir, "heap.0000000000006.8.heap", 4000);
    ck_assert_int_eq(heap_ring_prune(dir, 10, 2500, &files, &bytes), 0);
    ck_assert_uint_eq(files, 0);
    ck_assert(!exists(dir, "heap.0000000000006.8.heap") && !exists(dir, p[4]));
    ck_assert_int_eq(tg_rmtree(dir), 0);
}
END_TEST

START_TEST(test_heap_ring_on_a_server_keeps_at_most_keep)
{
    if (!heap_available()) /* ASan: the ring needs profiling; the prune test covers the rest */
        return;
    char root[] = "/tmp/tg-heapsrv-XXXXXX", dir[300];
    ck_assert_ptr_nonnull(mkdtemp(root));
    snprintf(dir, sizeof(dir), "%s/heap", root);
    ck_assert_int_eq(mkdir(dir, 0755), 0);
    /* a previous run's profile, older than anything the server writes: deleted first */
    write_file(dir, "heap.0000000000001.1.heap", 100);
    const char *env[] = {"THUMBGATE_HEAP_RING_INTERVAL=1s", "THUMBGATE_HEAP_RING_KEEP=3", NULL};
    tg_start(&S, env, root);
    ck_assert_msg(tg_wait_metric(&S, "thumbgate_heap_ring_profiles_total", 5, 120000),
                  "the ring wrote fewer than 5 profiles in 120 s");
    ck_assert_double_eq(metric("thumbgate_heap_ring_failures_total"), 0);
    ck_assert_int_eq(tg_stop(&S), 0);
    long long bytes;
    int n = count_profiles(dir, &bytes);
    ck_assert_int_eq(n, 3);
    ck_assert(!exists(dir, "heap.0000000000001.1.heap"));
    char cmd[400];
    snprintf(cmd, sizeof(cmd), "ls -a '%s' | grep -q '^\\.heap\\.tmp'", dir);
    ck_assert_int_ne(system(cmd), 0); /* no half-written profile left behind */
    /* each kept profile is a complete jemalloc profile */
    DIR *d = opendir(dir);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strncmp(e->d_name, "heap.", 5) != 0)
            continue;
        char path[600], head[16] = "";
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        FILE *f = fopen(path, "r");
        ck_assert_ptr_nonnull(f);
        ck_assert_ptr_nonnull(fgets(head, sizeof(head), f));
        fclose(f);
        ck_assert_msg(strncmp(head, "heap_v2/", 8) == 0, "%s: %s", e->d_name, head);
    }
    closedir(d);
}
END_TEST

START_TEST(test_heap_ring_respects_max_disk)
{
    if (!heap_available())
        return;
    /* a bound below one profile: every profile is counted as failed, none stays on disk */
    const char *env[] = {"THUMBGATE_HEAP_RING_INTERVAL=1s", "THUMBGATE_HEAP_RING_MAX_DISK=64KiB",
                         NULL};
    tg_start(&S, env, NULL);
    tg_resp_t r;
    ck_assert_int_eq(tg_admin(&S, "/debug/heap", &r), 200);
    size_t one = r.len;
    tg_resp_free(&r);
    /* the process's maps (MAPPED_LIBRARIES: libvips and its ~100 libraries) alone are larger */
    ck_assert_msg(one > 64 * 1024, "a profile takes only %zu bytes: raise the test's bound", one);
    ck_assert_msg(tg_wait_metric(&S, "thumbgate_heap_ring_failures_total", 2, 120000),
                  "no failure counted though a profile takes %zu bytes", one);
    ck_assert_double_eq(metric("thumbgate_heap_ring_profiles_total"), 0);
    ck_assert_double_eq(metric("thumbgate_heap_ring_bytes"), 0);
    char dir[300];
    snprintf(dir, sizeof(dir), "%s/heap", S.root);
    long long bytes;
    ck_assert_int_eq(count_profiles(dir, &bytes), 0);
    ck_assert_int_eq(bytes, 0);
}
END_TEST

Suite *heap_suite(void); /* called by check_main.c */
Suite *heap_suite(void)
{
    Suite *s = suite_create("heap");
    TCase *t = tcase_create("heap");
    tcase_add_checked_fixture(t, tg_fixture_setup, teardown);
    tcase_set_timeout(t, 600);
    tcase_add_test(t, test_heap_profile_opens_in_jeprof);
    tcase_add_test(t, test_heap_metrics_in_order);
    tcase_add_test(t, test_heap_ring_prune_keeps_newest_within_bounds);
    tcase_add_test(t, test_heap_ring_on_a_server_keeps_at_most_keep);
    tcase_add_test(t, test_heap_ring_respects_max_disk);
    suite_add_tcase(s, t);
    return s;
}
