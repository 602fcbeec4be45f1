/* Unit tests of server/route.c: key validation and the derived-URL grammar, with
 * hostile inputs (dot segments, encodings, NUL, huge numbers, zero, doubled suffixes). */
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
    suite_add_tcase(s, d);
    return s;
}
