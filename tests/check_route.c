/* Unit tests of server/route.c: key validation and the derived-URL grammar, with
 * hostile inputs (dot segments, encodings, NUL, huge numbers, zero, doubled suffixes);
 * smart crops, pixel ratios, .auto, presets (issue 15) and the Accept q-values. */
#include <check.h>
#include <string.h>

#include "server/route.h"

static int parse(const char *path, route_t *rt)
{
    return route_parse_key(path, strlen(path), rt);
}

START_TEST(test_route_key_accepts_valid)
{
    route_t rt;
    static const char *const ok[] = {"/cat.jpg", "/a/b/c.png", "/A-Z_0.9",
                                     "/...",     "/x",         "/cat.jpg?w=1"};
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
        ck_assert_msg(parse(ok[i], &rt) == 0, "%s rejected", ok[i]);
    parse("/a/b/c.png?x", &rt);
    ck_assert_str_eq(rt.key, "a/b/c.png");
    ck_assert_uint_eq(rt.keylen, 9);
}
END_TEST

START_TEST(test_route_key_rejects_hostile)
{
    route_t rt;
    static const char *const bad[] = {"/",       "//x",  "/a//b",        "/a/",    "/../etc/passwd",
                                      "/a/../b", "/./a", "/%2e%2e/x",    "/a%2fb", "/a b",
                                      "/a\\b",   "x",    "/caf\xc3\xa9", "/a:b",   "/a/.",
                                      "/~root",  "",     "/?q"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        ck_assert_msg(parse(bad[i], &rt) == -ROUTE_E_BADKEY, "%s accepted", bad[i]);
    /* an embedded NUL is not a terminator: the whole length is checked */
    ck_assert_int_eq(route_parse_key("/a\0b", 4, &rt), -ROUTE_E_BADKEY);
}
END_TEST

START_TEST(test_route_key_length_limit)
{
    char path[ROUTE_KEY_MAX + 3];
    route_t rt;
    path[0] = '/';
    memset(path + 1, 'a', ROUTE_KEY_MAX);
    path[ROUTE_KEY_MAX + 1] = '\0';
    ck_assert_int_eq(parse(path, &rt), 0);
    path[ROUTE_KEY_MAX + 1] = 'a';
    path[ROUTE_KEY_MAX + 2] = '\0';
    ck_assert_int_eq(parse(path, &rt), -ROUTE_E_BADKEY);
}
END_TEST

static route_t derived(const char *path, int *ret)
{
    route_t rt;
    ck_assert_int_eq(parse(path, &rt), 0);
    *ret = route_parse_derived(&rt);
    return rt;
}

START_TEST(test_route_derived_forms)
{
    int r;
    route_t rt = derived("/photos/cat_290x290.webp", &r);
    ck_assert_int_eq(r, 0);
    ck_assert(rt.derived);
    ck_assert_str_eq(rt.stem, "photos/cat");
    ck_assert_int_eq(rt.job.op, IMGPROC_OP_FIT);
    ck_assert_uint_eq(rt.job.width, 290);
    ck_assert_uint_eq(rt.job.height, 290);
    ck_assert_int_eq(rt.job.out_fmt, IMGPROC_FMT_WEBP);
    ck_assert_str_eq(rt.variant, "290x290.webp");

    rt = derived("/cat_100x50c.jpeg", &r);
    ck_assert(rt.derived);
    ck_assert_int_eq(rt.job.op, IMGPROC_OP_COVER);
    ck_assert_str_eq(rt.variant, "100x50c.jpg");

    rt = derived("/cat_300x.png", &r);
    ck_assert(rt.derived);
    ck_assert_uint_eq(rt.job.width, 300);
    ck_assert_uint_eq(rt.job.height, 0);
    ck_assert_str_eq(rt.variant, "300x.png");

    rt = derived("/cat_x120.JPG", &r);
    ck_assert(rt.derived);
    ck_assert_uint_eq(rt.job.width, 0);
    ck_assert_uint_eq(rt.job.height, 120);
    ck_assert_int_eq(rt.job.out_fmt, IMGPROC_FMT_JPEG);

    rt = derived("/cat.webp", &r);
    ck_assert(rt.derived);
    ck_assert_int_eq(rt.job.op, IMGPROC_OP_CONVERT);
    ck_assert_str_eq(rt.stem, "cat");
    ck_assert_str_eq(rt.variant, "full.webp");
}
END_TEST

START_TEST(test_route_derived_names_that_are_not_sizes)
{
    int r;
    /* an underscore that is not a size suffix belongs to the stem */
    route_t rt = derived("/my_photo.png", &r);
    ck_assert(rt.derived);
    ck_assert_str_eq(rt.stem, "my_photo");
    ck_assert_int_eq(rt.job.op, IMGPROC_OP_CONVERT);
    /* doubled suffix: the last one is the size, the rest is the stem */
    rt = derived("/cat_10x10_20x20.jpg", &r);
    ck_assert(rt.derived);
    ck_assert_str_eq(rt.stem, "cat_10x10");
    ck_assert_uint_eq(rt.job.width, 20);
    /* not an output extension (HEIC is read, never written): no derived meaning */
    rt = derived("/cat_10x10.heic", &r);
    ck_assert(!rt.derived);
    rt = derived("/noext", &r);
    ck_assert(!rt.derived);
    rt = derived("/.jpg", &r);
    ck_assert(!rt.derived);
    rt = derived("/cat_axb.jpg", &r);
    ck_assert(rt.derived);
    ck_assert_str_eq(rt.stem, "cat_axb");
}
END_TEST

START_TEST(test_route_derived_bad_sizes)
{
    static const char *const bad[] = {"/cat_0x0.jpg",          "/cat_0x10.jpg",
                                      "/cat_10x0.jpg",         "/cat_x0.jpg",
                                      "/cat_0x.jpg",           "/cat_010x10.jpg",
                                      "/cat_100001x1.jpg",     "/cat_99999999999999999999x1.jpg",
                                      "/cat_4294967297x1.jpg", "/cat_10xc.jpg",
                                      "/cat_x10c.jpg"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int r;
        derived(bad[i], &r);
        ck_assert_msg(r == -ROUTE_E_BADSIZE, "%s not rejected", bad[i]);
    }
}
END_TEST

START_TEST(test_route_smart_ratio_auto_forms)
{
    int r;
    route_t rt = derived("/a/cat_290x200s.webp", &r);
    ck_assert_int_eq(r, 0);
    ck_assert(rt.derived);
    ck_assert_str_eq(rt.stem, "a/cat");
    ck_assert_int_eq(rt.job.op, IMGPROC_OP_SMART);
    ck_assert_uint_eq(rt.job.width, 290);
    ck_assert_uint_eq(rt.job.height, 200);
    ck_assert_str_eq(rt.variant, "290x200s.webp");

    /* a pixel ratio multiplies the box; the written size is kept for limits.sizes */
    rt = derived("/cat_290x200c@2x.jpg", &r);
    ck_assert_int_eq(r, 0);
    ck_assert(rt.derived && rt.at);
    ck_assert_str_eq(rt.stem, "cat");
    ck_assert_int_eq(rt.job.op, IMGPROC_OP_COVER);
    ck_assert_uint_eq(rt.job.width, 580);
    ck_assert_uint_eq(rt.job.height, 400);
    ck_assert_uint_eq(rt.base_w, 290);
    ck_assert_uint_eq(rt.base_h, 200);
    ck_assert_uint_eq(rt.dpr, 2);
    /* the same result as the doubled size: one cache entry */
    ck_assert_str_eq(rt.variant, "580x400c.jpg");
    rt = derived("/cat_x100@3x.png", &r);
    ck_assert(rt.derived);
    ck_assert_uint_eq(rt.job.width, 0);
    ck_assert_uint_eq(rt.job.height, 300);
    rt = derived("/cat_100x100s@4x.webp", &r);
    ck_assert(rt.derived);
    ck_assert_int_eq(rt.job.op, IMGPROC_OP_SMART);
    ck_assert_uint_eq(rt.job.width, 400);

    /* .auto: the format is the caller's to pick; no variant until then */
    rt = derived("/cat_290x290.auto", &r);
    ck_assert_int_eq(r, 0);
    ck_assert(rt.derived && rt.auto_fmt);
    ck_assert_int_eq(rt.job.out_fmt, IMGPROC_FMT_UNKNOWN);
    ck_assert_str_eq(rt.variant, "");
    rt = derived("/cat_290x290s@2x.auto", &r);
    ck_assert(rt.derived && rt.auto_fmt);
    ck_assert_uint_eq(rt.job.width, 580);
    rt.job.out_fmt = IMGPROC_FMT_WEBP;
    char v[48];
    ck_assert_int_eq(route_variant(&rt.job, v, sizeof(v)), 0);
    ck_assert_str_eq(v, "580x580s.webp");
    rt.job.quality = 75;
    ck_assert_int_eq(route_variant(&rt.job, v, sizeof(v)), 0);
    ck_assert_str_eq(v, "580x580s_q75.webp");
    ck_assert_int_eq(route_variant(&rt.job, v, 8), -1);
    rt.job.out_fmt = IMGPROC_FMT_UNKNOWN;
    ck_assert_int_eq(route_variant(&rt.job, v, sizeof(v)), -1);
    rt = derived("/cat.auto", &r);
    ck_assert(rt.derived && rt.auto_fmt);
    ck_assert_int_eq(rt.job.op, IMGPROC_OP_CONVERT);
}
END_TEST

START_TEST(test_route_presets)
{
    int r;
    route_t rt = derived("/img/cat@thumb", &r);
    ck_assert_int_eq(r, 0);
    ck_assert(rt.derived && rt.at);
    ck_assert_str_eq(rt.stem, "img/cat");
    ck_assert_str_eq(rt.preset, "thumb");
    rt = derived("/cat.v2@Hero_2-x", &r);
    ck_assert(rt.derived);
    ck_assert_str_eq(rt.stem, "cat.v2");
    ck_assert_str_eq(rt.preset, "Hero_2-x");
    /* a name of 33 characters is no preset */
    rt = derived("/cat@abcdefghijabcdefghijabcdefghijabc", &r);
    ck_assert(!rt.derived);
    rt = derived("/cat@abcdefghijabcdefghijabcdefghijab", &r);
    ck_assert(rt.derived);
    /* "@2x" after a conversion is neither a preset nor a ratio (no size before it) */
    rt = derived("/cat@2x.jpg", &r);
    ck_assert_int_eq(r, 0);
    ck_assert(!rt.derived);
}
END_TEST

START_TEST(test_route_at_keys)
{
    route_t rt;
    /* '@' only in the last segment, with something valid on each side */
    static const char *const bad[] = {"/a@b/c", "/@",    "/a@",   "/@a",   "/a@@b",
                                      "/a@.",   "/a@..", "/a@b@", "/a@%40"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        ck_assert_msg(parse(bad[i], &rt) == -ROUTE_E_BADKEY, "%s accepted", bad[i]);
    ck_assert_int_eq(parse("/a/b@c", &rt), 0);
    ck_assert(rt.at);
    ck_assert_int_eq(parse("/a/b_1x1@2x.jpg?sig=x", &rt), 0);
    ck_assert(rt.at);
    ck_assert_int_eq(parse("/a/b.jpg", &rt), 0);
    ck_assert(!rt.at);
}
END_TEST

START_TEST(test_route_bad_ratios)
{
    static const char *const bad[] = {
        "/cat_10x10@0x.jpg", "/cat_10x10@5x.jpg",  "/cat_10x10@9x.jpg",   "/cat_10x10@x.jpg",
        "/cat_10x10@2.jpg",  "/cat_10x10@22x.jpg", "/cat_10x10@2.5x.jpg", "/cat_10x10s@02x.auto",
        "/cat_0x10s.jpg",    "/cat_10xs.jpg",      "/cat_x10s.auto"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int r;
        derived(bad[i], &r);
        ck_assert_msg(r == -ROUTE_E_BADSIZE, "%s not rejected", bad[i]);
    }
}
END_TEST

START_TEST(test_route_accept_q)
{
    const char *a = "text/html, image/webp;q=0.8, image/avif, image/*;q=0.9, */*;q=0.1";
    ck_assert_int_eq(route_accept_q(a, strlen(a), "image/webp"), 800);
    ck_assert_int_eq(route_accept_q(a, strlen(a), "image/avif"), 1000);
    ck_assert_int_eq(route_accept_q(a, strlen(a), "image/png"), -1); /* wildcards not counted */
    const char *b = "image/*,*/*";
    ck_assert_int_eq(route_accept_q(b, strlen(b), "image/webp"), -1);
    const char *c = "IMAGE/WEBP ; Q=0 , image/avif;level=1;q=0.125";
    ck_assert_int_eq(route_accept_q(c, strlen(c), "image/webp"), 0);
    ck_assert_int_eq(route_accept_q(c, strlen(c), "image/avif"), 125);
    const char *d = "image/webp;q=2, image/avif;q=abc, image/webpx";
    ck_assert_int_eq(route_accept_q(d, strlen(d), "image/webp"), 0); /* malformed: 0 */
    ck_assert_int_eq(route_accept_q(d, strlen(d), "image/avif"), 0);
    ck_assert_int_eq(route_accept_q("", 0, "image/webp"), -1);
    /* the length is honoured: no read past it */
    ck_assert_int_eq(route_accept_q("image/webp", 9, "image/webp"), -1);
}
END_TEST

Suite *route_suite(void); /* called by check_main.c */
Suite *route_suite(void)
{
    Suite *s = suite_create("route");
    TCase *k = tcase_create("key");
    tcase_add_test(k, test_route_key_accepts_valid);
    tcase_add_test(k, test_route_key_rejects_hostile);
    tcase_add_test(k, test_route_key_length_limit);
    suite_add_tcase(s, k);
    TCase *d = tcase_create("derived");
    tcase_add_test(d, test_route_derived_forms);
    tcase_add_test(d, test_route_derived_names_that_are_not_sizes);
    tcase_add_test(d, test_route_derived_bad_sizes);
    tcase_add_test(d, test_route_smart_ratio_auto_forms);
    tcase_add_test(d, test_route_presets);
    tcase_add_test(d, test_route_at_keys);
    tcase_add_test(d, test_route_bad_ratios);
    tcase_add_test(d, test_route_accept_q);
    suite_add_tcase(s, d);
    return s;
}
