/* Unit tests of the memory plan: it fits every limit it accepts, it refuses the plans
 * that cannot fit and names the keys to lower, and each knob moves the terms the way
 * the plan's promise needs (more per connection -> less for images). */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/cfg.h"
#include "server/memplan.h"

#define MIB (1024ull * 1024ull)
#define GIB (1024ull * MIB)

static const cfg_t *load(const char *yaml)
{
    const cfg_t *c = cfg_load_string(yaml, "t.yaml", NULL, stderr);
    ck_assert_ptr_nonnull(c);
    return c;
}

static uint64_t terms_sum(const memplan_t *p)
{
    return p->baseline + p->budget + p->connections + p->bodies + p->flight + p->hot + p->kernel +
           p->slack;
}

START_TEST(test_memplan_auto_fits_every_limit)
{
    const cfg_t *c = load("{}\n");
    static const uint64_t limits[] = {256 * MIB, 512 * MIB, 1 * GIB, 4 * GIB, 24 * GIB, 256 * GIB};
    for (size_t i = 0; i < sizeof(limits) / sizeof(limits[0]); i++)
        for (int v2 = 0; v2 < 2; v2++) {
            memplan_t p;
            char err[512] = "";
            ck_assert_msg(memplan_compute(c, limits[i], "test", v2, 2, 2, &p, err, sizeof(err)) ==
                              0,
                          "limit %llu: %s", (unsigned long long)limits[i], err);
            ck_assert_uint_le(p.total, limits[i]);
            ck_assert_uint_eq(p.total, terms_sum(&p));
            ck_assert_uint_ge(p.budget, MEMPLAN_MIN_BUDGET);
            ck_assert_uint_ge(p.max_connections, 64);
            ck_assert_uint_le(p.max_connections, 4096);
            ck_assert(v2 ? p.kernel > 0 : p.kernel == 0);
            /* the per-connection worst case holds at least a full head and a file chunk */
            ck_assert_uint_gt(p.per_conn, c->max_header_bytes + MEMPLAN_RESPONSE);
        }
    cfg_free(c);
}
END_TEST

START_TEST(test_memplan_explicit_budget_over_limit_names_keys)
{
    const cfg_t *c = load("memory: {budget: 400MiB}\n");
    memplan_t p;
    char err[768] = "";
    ck_assert_int_eq(memplan_compute(c, 512 * MIB, "cgroup", false, 2, 2, &p, err, sizeof(err)),
                     -1);
    ck_assert_ptr_nonnull(strstr(err, "memory.budget"));
    ck_assert_ptr_nonnull(strstr(err, "limits.max_connections"));
    ck_assert_ptr_nonnull(strstr(err, "512 MiB"));
    /* the same budget under a larger limit is fine, and kept exactly */
    ck_assert_int_eq(memplan_compute(c, 2 * GIB, "cgroup", false, 2, 2, &p, err, sizeof(err)), 0);
    ck_assert_uint_eq(p.budget, 400 * MIB);
    ck_assert(!p.budget_auto);
    cfg_free(c);
}
END_TEST

START_TEST(test_memplan_too_small_limit_refused)
{
    const cfg_t *c = load("{}\n");
    memplan_t p;
    char err[768] = "";
    ck_assert_int_eq(memplan_compute(c, 96 * MIB, "cgroup", false, 2, 2, &p, err, sizeof(err)), -1);
    ck_assert_ptr_nonnull(strstr(err, "limits.max_connections"));
    ck_assert_ptr_nonnull(strstr(err, "96 MiB"));
    /* fewer connections and a smaller body cap make the same limit workable */
    cfg_free(c);
    c = load("limits: {max_connections: 16, max_body_inflight: 2MiB}\n");
    ck_assert_int_eq(memplan_compute(c, 96 * MIB, "cgroup", false, 2, 2, &p, err, sizeof(err)), 0);
    ck_assert_uint_le(p.total, 96 * MIB);
    cfg_free(c);
}
END_TEST

START_TEST(test_memplan_body_cap_independent_of_max_upload)
{
    /* a 2 GiB upload bound under a 512 MiB limit: the body cap stays a share of the limit
     * (one body larger than it comes alone; its spill pages are the kernel's to write back) */
    const cfg_t *c = load("limits: {max_upload: 2GiB}\n");
    memplan_t p;
    char err[768] = "";
    ck_assert_int_eq(memplan_compute(c, 512 * MIB, "cgroup", false, 2, 2, &p, err, sizeof(err)), 0);
    ck_assert_uint_lt(p.max_body_inflight, c->max_upload);
    ck_assert_uint_le(p.total, 512 * MIB);
    cfg_free(c);
}
END_TEST

START_TEST(test_memplan_bigger_connections_leave_less_for_images)
{
    const cfg_t *small = load("limits: {max_connections: 1000, max_header_bytes: 8KiB}\n");
    const cfg_t *big = load("limits: {max_connections: 1000, max_header_bytes: 256KiB}\n");
    memplan_t ps, pb;
    char err[768];
    ck_assert_int_eq(memplan_compute(small, GIB, "t", false, 2, 2, &ps, err, sizeof(err)), 0);
    ck_assert_int_eq(memplan_compute(big, GIB, "t", false, 2, 2, &pb, err, sizeof(err)), 0);
    ck_assert_uint_gt(pb.per_conn, ps.per_conn);
    ck_assert_uint_gt(pb.connections, ps.connections);
    ck_assert_uint_lt(pb.budget, ps.budget);
    /* with auto connections, the larger heads mean fewer connections instead */
    cfg_free(small);
    cfg_free(big);
    small = load("limits: {max_header_bytes: 8KiB}\n");
    big = load("limits: {max_header_bytes: 256KiB}\n");
    ck_assert_int_eq(memplan_compute(small, GIB, "t", false, 2, 2, &ps, err, sizeof(err)), 0);
    ck_assert_int_eq(memplan_compute(big, GIB, "t", false, 2, 2, &pb, err, sizeof(err)), 0);
    ck_assert_uint_lt(pb.max_connections, ps.max_connections);
    cfg_free(small);
    cfg_free(big);
}
END_TEST

/* hot results (http.hot_results) are held beside the image work: what they may hold is
 * taken from the auto budget, and an explicit budget that no longer fits names the key */
START_TEST(test_memplan_hot_results_leave_less_for_images)
{
    const cfg_t *off = load("http: {hot_results: 0}\n");
    const cfg_t *big = load("http: {hot_results: 64MiB}\n");
    memplan_t po, pb;
    char err[768] = "";
    ck_assert_int_eq(memplan_compute(off, 512 * MIB, "t", false, 2, 2, &po, err, sizeof(err)), 0);
    ck_assert_int_eq(memplan_compute(big, 512 * MIB, "t", false, 2, 2, &pb, err, sizeof(err)), 0);
    ck_assert_uint_eq(po.hot, 0);
    ck_assert_uint_eq(pb.hot, 64 * MIB);
    ck_assert_uint_lt(pb.budget, po.budget);
    ck_assert_uint_le(pb.total, 512 * MIB);
    ck_assert_uint_eq(pb.total, terms_sum(&pb));
    cfg_free(off);
    cfg_free(big);
    /* a budget that fits the limit without hot results, and not with 64 MiB of them */
    uint64_t room = po.total - po.budget - po.slack;
    char yaml[128];
    uint64_t budget = (512 * MIB - room) / 21 * 20 / MIB * MIB;
    snprintf(yaml, sizeof(yaml), "memory: {budget: %lluMiB}\nhttp: {hot_results: 0}\n",
             (unsigned long long)(budget / MIB));
    off = load(yaml);
    ck_assert_int_eq(memplan_compute(off, 512 * MIB, "t", false, 2, 2, &po, err, sizeof(err)), 0);
    snprintf(yaml, sizeof(yaml), "memory: {budget: %lluMiB}\nhttp: {hot_results: 64MiB}\n",
             (unsigned long long)(budget / MIB));
    big = load(yaml);
    ck_assert_int_eq(memplan_compute(big, 512 * MIB, "t", false, 2, 2, &pb, err, sizeof(err)), -1);
    ck_assert_ptr_nonnull(strstr(err, "http.hot_results"));
    cfg_free(off);
    cfg_free(big);
}
END_TEST

START_TEST(test_memplan_auto_percent_caps_the_budget)
{
    const cfg_t *c = load("memory: {auto_percent: 10}\n");
    memplan_t p;
    char err[768];
    ck_assert_int_eq(memplan_compute(c, 24 * GIB, "t", false, 2, 2, &p, err, sizeof(err)), 0);
    ck_assert_uint_le(p.budget, 24 * GIB / 10);
    ck_assert(p.budget_by_percent);
    cfg_free(c);
}
END_TEST

START_TEST(test_memplan_printed)
{
    const cfg_t *c = load("{}\n");
    memplan_t p;
    char err[768];
    ck_assert_int_eq(
        memplan_compute(c, GIB, "cgroup v2 memory.max", true, 2, 2, &p, err, sizeof(err)), 0);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    memplan_log(&p, f);
    memplan_print(&p, f);
    fclose(f);
    char want[64];
    snprintf(want, sizeof(want), "\"total\":%llu}", (unsigned long long)p.total);
    ck_assert_ptr_nonnull(strstr(buf, want));
    ck_assert_ptr_nonnull(strstr(buf, "socket buffers"));
    ck_assert_ptr_nonnull(strstr(buf, "cgroup v2 memory.max"));
    free(buf);
    cfg_free(c);
}
END_TEST

Suite *memplan_suite(void); /* called by check_main.c */
Suite *memplan_suite(void)
{
    Suite *s = suite_create("memplan");
    TCase *t = tcase_create("plan");
    tcase_add_test(t, test_memplan_auto_fits_every_limit);
    tcase_add_test(t, test_memplan_explicit_budget_over_limit_names_keys);
    tcase_add_test(t, test_memplan_too_small_limit_refused);
    tcase_add_test(t, test_memplan_body_cap_independent_of_max_upload);
    tcase_add_test(t, test_memplan_bigger_connections_leave_less_for_images);
    tcase_add_test(t, test_memplan_hot_results_leave_less_for_images);
    tcase_add_test(t, test_memplan_auto_percent_caps_the_budget);
    tcase_add_test(t, test_memplan_printed);
    suite_add_tcase(s, t);
    return s;
}
