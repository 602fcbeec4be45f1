/* Integration tests of issue 15's formats through the real binary: GIF, TIFF, HEIC and AVIF
 * originals (upload, probe, thumbnail), AVIF, JPEG XL and GIF outputs, bombs refused before
 * any decoding (a 10 000-frame GIF, a HEIC whose header declares 30000x30000), truncated
 * files of each new format refused with a JSON error without losing the stored original,
 * a multi-page TIFF giving its first page, animated GIF/WebP outputs keeping every frame (fit
 * and cover, each frame resized and cut alike) while still outputs take the first, and an
 * animation whose frames together are over limits.max_pixels refused unadmitted. Images are
 * generated here with libvips. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <vips/vips.h>

#include "tests/tg_harness.h"

static tg_server_t S;

static void teardown(void)
{
    tg_cleanup(&S);
}

/* The saver suffix of each new input format (AVIF is libheif's AV1 compression). */
static const struct {
    const char *key, *saver, *name;
} inputs[] = {
    {"/in/a.gif", "gif", "gif"},
    {"/in/b.tif", "tif", "tiff"},
    /* 720 KB in 128x128 tiles: libtiff takes a short read as an error, and tiles straddle
     * the job's 64 KiB read buffer (every thumbnail of it was 415 while reads came short) */
    {"/in/e.tif", "tif[tile]", "tiff"},
    {"/in/c.heic", "heic", "heic"},
    {"/in/d.avif", "heic[compression=av1]", "avif"},
};

static void expect_image(const char *path, int w, int h, const char *mime)
{
    tg_expect_dims(&S, path, w, h, mime);
}

/* A JSON error {"error": @p code, ...} with @p status. */
static void expect_error(const char *method, const char *path, const void *body, size_t len,
                         long status, const char *code)
{
    tg_resp_t r;
    long got = tg_http(&S, method, path, body, len, NULL, &r);
    ck_assert_msg(got == status, "%s %s: %ld %s", method, path, got, r.body);
    char want[96];
    snprintf(want, sizeof(want), "\"error\":\"%s\"", code);
    ck_assert_msg(r.body && strstr(r.body, want) && strstr(r.body, "\"message\""), "%s: %s", path,
                  r.body);
    tg_resp_free(&r);
}

START_TEST(test_formats_inputs_thumbnail)
{
    tg_start(&S, NULL, NULL);
    for (size_t i = 0; i < sizeof(inputs) / sizeof(inputs[0]); i++) {
        size_t len;
        void *img = tg_image(600, 400, 3, inputs[i].saver, &len);
        tg_resp_t r;
        ck_assert_msg(tg_http(&S, "PUT", inputs[i].key, img, len, NULL, &r) == 201, "%s: %ld %s",
                      inputs[i].key, r.status, r.body);
        char want[64];
        snprintf(want, sizeof(want), "\"format\":\"%s\"", inputs[i].name);
        ck_assert_msg(strstr(r.body, want) && strstr(r.body, "\"width\":600"), "%s", r.body);
        tg_resp_free(&r);
        g_free(img);
        char path[128], stem[64];
        snprintf(stem, sizeof(stem), "%.*s", (int)(strrchr(inputs[i].key, '.') - inputs[i].key),
                 inputs[i].key);
        snprintf(path, sizeof(path), "%s_290x290.jpg", stem);
        expect_image(path, 290, 193, "image/jpeg");
        snprintf(path, sizeof(path), "%s_100x100c.png", stem);
        expect_image(path, 100, 100, "image/png");
    }
}
END_TEST

START_TEST(test_formats_avif_jxl_gif_outputs)
{
    tg_start(&S, NULL, NULL);
    tg_put_image(&S, "/out/cat.jpg", 800, 600, "jpg");
    expect_image("/out/cat_290x290.avif", 290, 218, "image/avif");
    expect_image("/out/cat_290x290.jxl", 290, 218, "image/jxl");
    expect_image("/out/cat_120x120c.gif", 120, 120, "image/gif");
    expect_image("/out/cat.avif", 800, 600, "image/avif"); /* full size */
    /* the second request is a cache hit with the same type */
    expect_image("/out/cat_290x290.jxl", 290, 218, "image/jxl");
}
END_TEST

/* GIF89a, a 1000x1000 screen, and @p frames 1x1 frames of one LZW-coded pixel. */
static void *gif_frames(unsigned frames, size_t *len)
{
    static const unsigned char head[] = {'G',  'I', 'F', '8', '9', 'a', 0xE8, 0x03, 0xE8, 0x03,
                                         0x80, 0,   0,   0,   0,   0,   255,  255,  255};
    static const unsigned char frame[] = {0x2C, 0, 0, 0, 0, 1, 0, 1, 0, 0, 2, 2, 0x44, 0x01, 0};
    *len = sizeof(head) + (size_t)frames * sizeof(frame) + 1;
    unsigned char *p = malloc(*len), *q = p;
    ck_assert_ptr_nonnull(p);
    memcpy(q, head, sizeof(head));
    q += sizeof(head);
    for (unsigned i = 0; i < frames; i++, q += sizeof(frame))
        memcpy(q, frame, sizeof(frame));
    *q = 0x3B;
    return p;
}

START_TEST(test_formats_animated_bomb_is_413_before_decoding)
{
    tg_start(&S, NULL, NULL);
    size_t len;
    void *gif = gif_frames(10000, &len);
    tg_resp_t r;
    /* the header is small and whole: stored; deriving from it is refused unadmitted */
    ck_assert_int_eq(tg_http(&S, "PUT", "/bomb/frames.gif", gif, len, NULL, &r), 201);
    ck_assert_msg(strstr(r.body, "\"width\":1000"), "%s", r.body);
    tg_resp_free(&r);
    free(gif);
    double admitted = tg_metric(&S, "thumbgate_jobs_admitted_total");
    expect_error("GET", "/bomb/frames_100x100.webp", NULL, 0, 413, "too_many_pixels");
    expect_error("GET", "/bomb/frames_100x100.jpg", NULL, 0, 413, "too_many_pixels");
    ck_assert(tg_metric(&S, "thumbgate_jobs_admitted_total") == admitted);
    /* under limits.max_frames it is an ordinary image */
    gif = gif_frames(3, &len);
    ck_assert_int_eq(tg_http(&S, "PUT", "/bomb/three.gif", gif, len, NULL, &r), 201);
    tg_resp_free(&r);
    free(gif);
    expect_image("/bomb/three_100x100.png", 100, 100, "image/png");
}
END_TEST

/* An animation of @p n frames of @p w x @p h, frame i a flat grey of level 20 + 25 i (so a
 * crop across a frame border shows), saved by libvips as @p saver ("gif", "webp"). */
static void *anim_image(int n, int w, int h, const char *saver, size_t *len)
{
    VipsImage *frames[16], *roll = NULL, *black = NULL;
    ck_assert_int_le(n, 16);
    ck_assert_int_eq(vips_black(&black, w, h, "bands", 3, NULL), 0);
    for (int i = 0; i < n; i++)
        ck_assert_int_eq(vips_linear1(black, &frames[i], 1.0, 20.0 + 25.0 * i, "uchar", TRUE, NULL),
                         0);
    ck_assert_int_eq(vips_arrayjoin(frames, &roll, n, "across", 1, NULL), 0);
    roll->Type = VIPS_INTERPRETATION_sRGB;
    vips_image_set_int(roll, VIPS_META_PAGE_HEIGHT, h);
    int delay[16];
    for (int i = 0; i < n; i++)
        delay[i] = 80;
    vips_image_set_array_int(roll, "delay", delay, n);
    vips_image_set_int(roll, "loop", 0);
    char suffix[16];
    snprintf(suffix, sizeof(suffix), ".%s", saver);
    void *buf = NULL;
    ck_assert_msg(vips_image_write_to_buffer(roll, suffix, &buf, len, NULL) == 0, "%s",
                  vips_error_buffer());
    for (int i = 0; i < n; i++)
        g_object_unref(frames[i]);
    g_object_unref(roll);
    g_object_unref(black);
    return buf;
}

/* GETs @p path and checks it has @p n frames of @p w x @p h; returns the image (all frames). */
static VipsImage *get_frames(const char *path, int n, int w, int h)
{
    tg_resp_t r;
    ck_assert_msg(tg_http(&S, "GET", path, NULL, 0, NULL, &r) == 200, "%s: %ld %s", path, r.status,
                  r.body);
    /* a still format has no "n" option: one frame, its height the frame's */
    VipsImage *img = vips_image_new_from_buffer(r.body, r.len, n > 1 ? "n=-1" : "", NULL);
    ck_assert_msg(img, "%s: %s", path, vips_error_buffer());
    /* the buffer is borrowed: read the pixels before it goes */
    VipsImage *mem = vips_image_copy_memory(img);
    ck_assert_ptr_nonnull(mem);
    g_object_unref(img);
    tg_resp_free(&r);
    ck_assert_msg(vips_image_get_n_pages(mem) == n && mem->Xsize == w &&
                      vips_image_get_page_height(mem) == h && mem->Ysize == n * h,
                  "%s: %d frames of %dx%d, want %d of %dx%d", path, vips_image_get_n_pages(mem),
                  mem->Xsize, vips_image_get_page_height(mem), n, w, h);
    return mem;
}

/* Frame @p i of @p roll (page height @p h) is a flat grey of level 20 + 25 i: a crop or a resize
 * that crossed a frame border would blend two levels. */
static void expect_frame_level(VipsImage *roll, int i, int h, const char *what)
{
    VipsImage *c = NULL, *f = NULL;
    double lo, hi;
    /* the colour bands (GIF reads back as RGBA, the alpha is 255) */
    ck_assert_int_eq(vips_crop(roll, &c, 0, i * h, roll->Xsize, h, NULL), 0);
    ck_assert_int_eq(vips_extract_band(c, &f, 0, "n", roll->Bands < 3 ? 1 : 3, NULL), 0);
    g_object_unref(c);
    ck_assert_int_eq(vips_min(f, &lo, NULL), 0);
    ck_assert_int_eq(vips_max(f, &hi, NULL), 0);
    double want = 20 + 25 * i;
    ck_assert_msg(fabs(lo - want) <= 3 && fabs(hi - want) <= 3,
                  "%s frame %d: levels %.0f..%.0f, want %.0f", what, i, lo, hi, want);
    g_object_unref(f);
}

START_TEST(test_formats_animated_outputs_keep_every_frame)
{
    tg_start(&S, NULL, NULL);
    static const char *const savers[] = {"gif", "webp"};
    for (int k = 0; k < 2; k++) {
        size_t len;
        void *src = anim_image(8, 300, 200, savers[k], &len);
        char key[64], path[96];
        snprintf(key, sizeof(key), "/anim/a.%s", savers[k]);
        tg_resp_t r;
        ck_assert_msg(tg_http(&S, "PUT", key, src, len, NULL, &r) == 201, "%s: %s", key, r.body);
        tg_resp_free(&r);
        g_free(src);
        static const char *const outs[] = {"gif", "webp"};
        for (int o = 0; o < 2; o++) {
            /* fit: every frame resized to the same 100x67 */
            snprintf(path, sizeof(path), "/anim/a_100x100.%s", outs[o]);
            VipsImage *fit = get_frames(path, 8, 100, 67);
            for (int i = 0; i < 8; i++)
                expect_frame_level(fit, i, 67, path);
            g_object_unref(fit);
            /* cover: 100x100 cut from each frame, never across frames */
            snprintf(path, sizeof(path), "/anim/a_100x100c.%s", outs[o]);
            VipsImage *cover = get_frames(path, 8, 100, 100);
            for (int i = 0; i < 8; i++)
                expect_frame_level(cover, i, 100, path);
            g_object_unref(cover);
        }
        /* still outputs: the first frame only */
        snprintf(path, sizeof(path), "/anim/a_100x100.png");
        VipsImage *still = get_frames(path, 1, 100, 67);
        expect_frame_level(still, 0, 67, path);
        g_object_unref(still);
        tg_resp_t d;
        ck_assert_int_eq(tg_http(&S, "DELETE", key, NULL, 0, NULL, &d), 204);
        tg_resp_free(&d);
    }
}
END_TEST

START_TEST(test_formats_animation_over_max_pixels_is_413_before_admission)
{
    /* 8 frames of 300x200: each frame is under the bound, all of them are over it */
    const char *env[] = {"THUMBGATE_LIMITS_MAX_PIXELS=200000", NULL};
    tg_start(&S, env, NULL);
    size_t len;
    void *src = anim_image(8, 300, 200, "gif", &len);
    tg_resp_t r;
    ck_assert_msg(tg_http(&S, "PUT", "/anim/big.gif", src, len, NULL, &r) == 201, "%s", r.body);
    tg_resp_free(&r);
    g_free(src);
    double admitted = tg_metric(&S, "thumbgate_jobs_admitted_total");
    expect_error("GET", "/anim/big_100x100.webp", NULL, 0, 413, "too_many_pixels");
    expect_error("GET", "/anim/big_100x100c.gif", NULL, 0, 413, "too_many_pixels");
    ck_assert(tg_metric(&S, "thumbgate_jobs_admitted_total") == admitted);
    /* a still output reads the first frame only: allowed */
    expect_image("/anim/big_100x100.jpg", 100, 67, "image/jpeg");
}
END_TEST

START_TEST(test_formats_heif_bomb_is_413_before_decoding)
{
    tg_start(&S, NULL, NULL);
    size_t len;
    unsigned char *heic = tg_image(64, 48, 3, "heic", &len);
    /* every ispe (libheif writes one per property set) says 30000x30000: 900 MP, over
     * limits.max_pixels and over the 16384 a side libheif decodes */
    const unsigned char big[8] = {0, 0, 0x75, 0x30, 0, 0, 0x75, 0x30};
    unsigned n = 0;
    for (unsigned char *p = heic; (p = memmem(p, len - (size_t)(p - heic), "ispe", 4)); p += 4, n++)
        memcpy(p + 8, big, 8);
    ck_assert_uint_ge(n, 1);
    expect_error("PUT", "/bomb/big.heic", heic, len, 413, "too_many_pixels");
    expect_error("GET", "/bomb/big.heic", NULL, 0, 404, "not_found");
    g_free(heic);
}
END_TEST

START_TEST(test_formats_heif_side_over_libheifs_limit_is_413_at_upload)
{
    /* libheif 1.15 refuses to decode a side over 16384 ("Security limit exceeded"): such a
     * file is refused when it is uploaded, not stored to fail every request later */
    tg_start(&S, NULL, NULL);
    size_t len;
    unsigned char *wide = tg_image(16385, 2, 3, "heic[compression=av1]", &len);
    tg_resp_t r;
    ck_assert_int_eq(tg_http(&S, "PUT", "/side/wide.avif", wide, len, NULL, &r), 413);
    ck_assert_msg(strstr(r.body, "\"error\":\"too_many_pixels\"") && strstr(r.body, "16384"), "%s",
                  r.body);
    tg_resp_free(&r);
    expect_error("GET", "/side/wide.avif", NULL, 0, 404, "not_found");
    g_free(wide);
    /* the largest side libheif decodes is stored and served */
    unsigned char *edge = tg_image(2, 16384, 3, "heic[compression=av1]", &len);
    ck_assert_int_eq(tg_http(&S, "PUT", "/side/tall.avif", edge, len, NULL, &r), 201);
    tg_resp_free(&r);
    expect_image("/side/tall_100x100.jpg", 1, 100, "image/jpeg");
    g_free(edge);
}
END_TEST

START_TEST(test_formats_uninterruptible_steps_over_the_deadline_are_413_before_admission)
{
    /* libheif decodes a HEIC/AVIF and libjxl encodes a JPEG XL in calls the job deadline
     * cannot stop: one that could not finish inside memory.job_timeout is refused (413)
     * before admission, as AVIF encodes and WebP decodes are; a small one is still admitted */
    const char *env[] = {"THUMBGATE_MEMORY_JOB_TIMEOUT=100ms", NULL};
    tg_start(&S, env, NULL);
    size_t len;
    unsigned char *heic = tg_image(800, 600, 3, "heic", &len);
    tg_resp_t r;
    ck_assert_int_eq(tg_http(&S, "PUT", "/slow/big.heic", heic, len, NULL, &r), 201);
    tg_resp_free(&r);
    g_free(heic);
    tg_put_image(&S, "/slow/photo.jpg", 800, 600, "jpg");
    double admitted = tg_metric(&S, "thumbgate_jobs_admitted_total");
    ck_assert_int_eq(tg_http(&S, "GET", "/slow/big_100x100.jpg", NULL, 0, NULL, &r), 413);
    ck_assert_msg(strstr(r.body, "HEIC decodes in one uninterruptible step"), "%s", r.body);
    tg_resp_free(&r);
    ck_assert_int_eq(tg_http(&S, "GET", "/slow/photo.jxl", NULL, 0, NULL, &r), 413);
    ck_assert_msg(strstr(r.body, "JPEG XL encodes in one uninterruptible step"), "%s", r.body);
    tg_resp_free(&r);
    ck_assert(tg_metric(&S, "thumbgate_jobs_admitted_total") == admitted);
    /* a 100x75 JPEG XL is admitted; on a busy box it may still miss 100 ms (503 then) */
    long st = tg_http(&S, "GET", "/slow/photo_100x100.jxl", NULL, 0, NULL, &r);
    ck_assert_msg(st == 200 || (st == 503 && strstr(r.body, "job_timeout")), "%ld %s", st, r.body);
    tg_resp_free(&r);
    ck_assert(tg_metric(&S, "thumbgate_jobs_admitted_total") == admitted + 1);
}
END_TEST

START_TEST(test_formats_truncated_is_refused_and_loses_nothing)
{
    tg_start(&S, NULL, NULL);
    for (size_t i = 0; i < sizeof(inputs) / sizeof(inputs[0]); i++) {
        size_t len;
        void *img = tg_image(300, 200, 3, inputs[i].saver, &len);
        tg_resp_t r;
        ck_assert_int_eq(tg_http(&S, "PUT", inputs[i].key, img, len, NULL, &r), 201);
        tg_resp_free(&r);
        /* a replacement cut in half is refused, the stored original stays */
        expect_error("PUT", inputs[i].key, img, len / 2, 415, "corrupt_image");
        ck_assert_int_eq(tg_http(&S, "GET", inputs[i].key, NULL, 0, NULL, &r), 200);
        ck_assert_msg(r.len == len && memcmp(r.body, img, len) == 0, "%s changed", inputs[i].key);
        tg_resp_free(&r);
        g_free(img);
    }
}
END_TEST

START_TEST(test_formats_multipage_tiff_gives_first_page)
{
    tg_start(&S, NULL, NULL);
    /* page 1 white, page 2 black, 200x100 each */
    VipsImage *white = NULL, *black = NULL, *pages = NULL, *w3 = NULL;
    ck_assert_int_eq(vips_black(&black, 200, 100, "bands", 3, NULL), 0);
    ck_assert_int_eq(vips_linear1(black, &white, 1.0, 255.0, "uchar", TRUE, NULL), 0);
    ck_assert_int_eq(vips_cast_uchar(black, &w3, NULL), 0);
    VipsImage *arr[2] = {white, w3};
    ck_assert_int_eq(vips_arrayjoin(arr, &pages, 2, "across", 1, NULL), 0);
    pages->Type = VIPS_INTERPRETATION_sRGB;
    vips_image_set_int(pages, VIPS_META_PAGE_HEIGHT, 100);
    void *buf;
    size_t len;
    ck_assert_int_eq(vips_tiffsave_buffer(pages, &buf, &len, NULL), 0);
    tg_resp_t r;
    ck_assert_int_eq(tg_http(&S, "PUT", "/tif/pages.tif", buf, len, NULL, &r), 201);
    ck_assert_msg(strstr(r.body, "\"height\":100"), "%s", r.body);
    tg_resp_free(&r);
    expect_image("/tif/pages_100x100.png", 100, 50, "image/png");
    ck_assert_int_eq(tg_http(&S, "GET", "/tif/pages_100x100.png", NULL, 0, NULL, &r), 200);
    VipsImage *got = vips_image_new_from_buffer(r.body, r.len, "", NULL);
    ck_assert_ptr_nonnull(got);
    double mean;
    ck_assert_int_eq(vips_avg(got, &mean, NULL), 0);
    ck_assert_msg(mean > 250, "mean %.1f: not the white first page", mean);
    g_object_unref(got);
    tg_resp_free(&r);
    g_free(buf);
    g_object_unref(pages);
    g_object_unref(w3);
    g_object_unref(white);
    g_object_unref(black);
}
END_TEST

Suite *formats_suite(void); /* called by check_main.c */
Suite *formats_suite(void)
{
    Suite *s = suite_create("formats");
    TCase *t = tcase_create("formats");
    tcase_add_checked_fixture(t, tg_fixture_setup, teardown);
    tcase_set_timeout(t, 180);
    tcase_add_test(t, test_formats_inputs_thumbnail);
    tcase_add_test(t, test_formats_avif_jxl_gif_outputs);
    tcase_add_test(t, test_formats_animated_bomb_is_413_before_decoding);
    tcase_add_test(t, test_formats_heif_bomb_is_413_before_decoding);
    tcase_add_test(t, test_formats_heif_side_over_libheifs_limit_is_413_at_upload);
    tcase_add_test(t, test_formats_animated_outputs_keep_every_frame);
    tcase_add_test(t, test_formats_animation_over_max_pixels_is_413_before_admission);
    tcase_add_test(t,
                   test_formats_uninterruptible_steps_over_the_deadline_are_413_before_admission);
    tcase_add_test(t, test_formats_truncated_is_refused_and_loses_nothing);
    tcase_add_test(t, test_formats_multipage_tiff_gives_first_page);
    suite_add_tcase(s, t);
    return s;
}
