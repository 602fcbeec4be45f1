/* Unit tests of imgproc_is_complete(): whole files of every format pass (with trailing
 * bytes too), every cut-off prefix fails, a wrong format fails. */
#include <check.h>
#include <string.h>
#include <vips/vips.h>

#include "imgproc/imgproc.h"
#include "tests/tg_harness.h"

static void setup(void)
{
    ck_assert_int_eq(VIPS_INIT("check_complete"), 0);
}

static void check_format(const char *ext, imgproc_fmt_t fmt, int bands)
{
    size_t len;
    unsigned char *img = tg_image(300, 200, bands, ext, &len);
    ck_assert(imgproc_is_complete(img, len, fmt));
    /* every prefix is incomplete: cut points across headers, data and the trailer */
    size_t cuts[] = {0,       1,       8,        12,      20,      33,     100,
                     len / 4, len / 2, len - 12, len - 3, len - 2, len - 1};
    for (size_t i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++)
        if (cuts[i] < len)
            ck_assert_msg(!imgproc_is_complete(img, cuts[i], fmt), "%s cut at %zu of %zu passed",
                          ext, cuts[i], len);
    /* bytes after the end marker (motion-photo trailers, padding) are allowed for
     * JPEG and PNG; WebP's RIFF size says where the image ends */
    unsigned char *more = g_malloc(len + 4096);
    memcpy(more, img, len);
    memset(more + len, 0xAB, 4096);
    ck_assert(imgproc_is_complete(more, len + 4096, fmt));
    /* the wrong format never passes */
    ck_assert(!imgproc_is_complete(img, len,
                                   fmt == IMGPROC_FMT_PNG ? IMGPROC_FMT_JPEG : IMGPROC_FMT_PNG));
    g_free(more);
    g_free(img);
}

START_TEST(test_complete_jpeg)
{
    check_format("jpg", IMGPROC_FMT_JPEG, 3);
    check_format("jpg[interlace]", IMGPROC_FMT_JPEG, 3); /* progressive: several scans */
}
END_TEST

START_TEST(test_complete_png)
{
    check_format("png", IMGPROC_FMT_PNG, 3);
    check_format("png[interlace]", IMGPROC_FMT_PNG, 4);
}
END_TEST

START_TEST(test_complete_webp)
{
    check_format("webp", IMGPROC_FMT_WEBP, 3);
    check_format("webp[lossless]", IMGPROC_FMT_WEBP, 4);
}
END_TEST

START_TEST(test_complete_rejects_garbage)
{
    static const unsigned char soi_only[] = {0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10};
    ck_assert(!imgproc_is_complete(soi_only, sizeof(soi_only), IMGPROC_FMT_JPEG));
    ck_assert(!imgproc_is_complete(NULL, 0, IMGPROC_FMT_JPEG));
    ck_assert(!imgproc_is_complete("RIFF\xff\xff\xff\x7fWEBPVP8 ", 16,
                                   IMGPROC_FMT_WEBP)); /* size beyond the file */
}
END_TEST

Suite *complete_suite(void); /* called by check_main.c */
Suite *complete_suite(void)
{
    Suite *s = suite_create("complete");
    TCase *t = tcase_create("complete");
    tcase_add_checked_fixture(t, setup, NULL);
    tcase_add_test(t, test_complete_jpeg);
    tcase_add_test(t, test_complete_png);
    tcase_add_test(t, test_complete_webp);
    tcase_add_test(t, test_complete_rejects_garbage);
    suite_add_tcase(s, t);
    return s;
}
