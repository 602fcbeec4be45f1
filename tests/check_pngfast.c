/* Check tests for imgproc/pngfast.c (issue 14, item 3): the libspng decoder with the box
 * shrink in its row loop must give what libvips' own path gives. Every PNG kind is made
 * here from detailed (noise) content at sizes whose shrink groups do not divide the image,
 * run through imgproc_run() (PNG output, lossless) and compared with vips_thumbnail() on
 * the same file with the options run.c uses: PSNR >= 45 dB over every band, alpha
 * included, same dimensions. Kinds the fast path does not take (16-bit, interlaced) are
 * checked to go through libvips. libvips is initialised inside the forked child. */
#include <check.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <vips/vips.h>

#include "imgproc/imgproc_internal.h"
#include "tests/tg_harness.h"

static char tmpdir[256];

static void setup(void)
{
    ck_assert_int_eq(imgproc_init("check_pngfast"), 0);
    tg_mkdtemp(tmpdir, sizeof(tmpdir), "check-pngfast");
}

static void teardown(void)
{
    ck_assert_int_eq(tg_rmtree(tmpdir), 0);
}

static const imgproc_opts_t opts = {
    .jpeg_quality = 90, .webp_quality = 90, .png_compression = 1, .keep_icc = false};

typedef enum {
    K_RGB,
    K_RGBA,
    K_GREY,
    K_GREYA,
    K_PALETTE,
    K_PALETTE_ALPHA,
    K_GREY1,
    K_ICC,
    K_RGB16,
    K_INTERLACED,
    K_N
} kind_t;

static const char *const kind_name[K_N] = {"rgb",     "rgba",          "grey",      "greya",
                                           "palette", "palette-alpha", "grey-1bit", "icc",
                                           "rgb16",   "interlaced"};

/* @p filter: the row filters libpng may use for the 8-bit kinds our own reader unfilters. */
static void make_png(kind_t k, int w, int h, const char *path, VipsForeignPngFilter filter)
{
    int bands = k == K_GREY || k == K_GREYA || k == K_GREY1 ? 1 : 3;
    bool alpha = k == K_RGBA || k == K_GREYA || k == K_PALETTE_ALPHA;
    VipsImage *img = tg_detail_image(w, h, bands, alpha), *t = NULL, *u = NULL;
    int rc;
    switch (k) {
    case K_PALETTE:
    case K_PALETTE_ALPHA:
        rc = vips_pngsave(img, path, "palette", TRUE, "compression", 1, NULL);
        break;
    case K_GREY1:
        rc = vips_pngsave(img, path, "bitdepth", 1, "compression", 1, NULL);
        break;
    case K_ICC:
        ck_assert_int_eq(vips_icc_transform(img, &t, "p3", "input_profile", "srgb", NULL), 0);
        rc = vips_pngsave(t, path, "compression", 1, "strip", FALSE, NULL);
        break;
    case K_RGB16:
        ck_assert_int_eq(vips_cast(img, &t, VIPS_FORMAT_USHORT, "shift", TRUE, NULL), 0);
        ck_assert_int_eq(vips_copy(t, &u, "interpretation", VIPS_INTERPRETATION_RGB16, NULL), 0);
        rc = vips_pngsave(u, path, "compression", 1, NULL);
        break;
    case K_INTERLACED:
        rc = vips_pngsave(img, path, "interlace", TRUE, "compression", 1, NULL);
        break;
    default:
        /* vips' default is no filter: with ALL libpng picks sub, up, average or Paeth per
         * row; one filter alone makes every row go through that unfiltering */
        rc = vips_pngsave(img, path, "compression", 1, "filter", filter, NULL);
        break;
    }
    ck_assert_msg(rc == 0, "save %s: %s", kind_name[k], vips_error_buffer());
    VIPS_UNREF(u);
    VIPS_UNREF(t);
    g_object_unref(img);
}

typedef struct {
    imgproc_op_t op;
    uint32_t w, h;
} box_t;

/* imgproc_run() to PNG against vips_thumbnail() with run.c's options; returns the PSNR. */
static double compare(const char *src, const imgproc_probe_t *probe, const box_t *b, bool *fast)
{
    imgproc_job_t job = {.op = b->op, .width = b->w, .height = b->h, .out_fmt = IMGPROC_FMT_PNG};
    imgproc__plan_t pl;
    ck_assert_int_eq(imgproc__plan(probe, &job, &pl), 0);
    *fast = pl.png_shrink_h != 0;
    char dst[600];
    snprintf(dst, sizeof(dst), "%s.out.png", src);
    imgproc_out_t out;
    imgproc_err_t err;
    int rc = imgproc_run(src, &job, &opts, dst, &out, &err);
    ck_assert_msg(rc == 0, "%s: %s", src, err.msg);

    VipsImage *ref = NULL, *got = NULL;
    ck_assert_int_eq(
        vips_thumbnail(src, &ref, (int)pl.box_w, "height", (int)pl.box_h, "size", VIPS_SIZE_DOWN,
                       "crop", pl.crop ? VIPS_INTERESTING_CENTRE : VIPS_INTERESTING_NONE,
                       "no_rotate", TRUE, "export_profile", probe->has_icc ? "srgb" : NULL, NULL),
        0);
    ck_assert_ptr_nonnull(got = vips_image_new_from_file(dst, NULL));
    ck_assert_msg(got->Xsize == ref->Xsize && got->Ysize == ref->Ysize && got->Bands == ref->Bands,
                  "%s %ux%u: got %dx%dx%d, libvips %dx%dx%d", src, b->w, b->h, got->Xsize,
                  got->Ysize, got->Bands, ref->Xsize, ref->Ysize, ref->Bands);
    ck_assert_uint_eq(out.width, (uint32_t)ref->Xsize);
    ck_assert_uint_eq(out.height, (uint32_t)ref->Ysize);
    VipsImage *r8 = NULL;
    ck_assert_int_eq(vips_cast(ref, &r8, VIPS_FORMAT_UCHAR, NULL), 0);
    double db = tg_psnr(got, r8);
    g_object_unref(r8);
    g_object_unref(got);
    g_object_unref(ref);
    unlink(dst);
    return db;
}

/* Sizes whose box groups leave partial rows and columns (1037 = 3 x 345 + 2, ...). */
static const struct {
    int w, h;
} sizes[] = {{1037, 771}, {2003, 1499}};

static const box_t boxes[] = {
    {IMGPROC_OP_FIT, 290, 290}, {IMGPROC_OP_FIT, 203, 203}, {IMGPROC_OP_COVER, 150, 90},
    {IMGPROC_OP_FIT, 120, 0},   {IMGPROC_OP_FIT, 0, 97},    {IMGPROC_OP_COVER, 333, 111},
};

/* The row filters: all of them (libpng chooses per row), then each of those that need the
 * pixel to the left (unfiltered a pixel at a time, every band at once) alone. */
static const VipsForeignPngFilter filters[] = {
    VIPS_FOREIGN_PNG_FILTER_ALL, VIPS_FOREIGN_PNG_FILTER_SUB, VIPS_FOREIGN_PNG_FILTER_AVG,
    VIPS_FOREIGN_PNG_FILTER_PAETH};

START_TEST(test_pngfast_matches_libvips_every_kind_and_mode)
{
    kind_t k = (kind_t)_i;
    /* the kinds our own IDAT reader takes get every filter; libspng unfilters the others */
    bool own = k == K_RGB || k == K_RGBA || k == K_GREY || k == K_GREYA;
    size_t nf = own ? sizeof(filters) / sizeof(filters[0]) : 1;
    for (size_t f = 0; f < nf; f++) {
        /* one filter alone: the smaller size, with its partial groups, is enough */
        size_t ns = f == 0 ? sizeof(sizes) / sizeof(sizes[0]) : 1;
        for (size_t s = 0; s < ns; s++) {
            char src[512];
            snprintf(src, sizeof(src), "%s/%s-%dx%d-f%d.png", tmpdir, kind_name[k], sizes[s].w,
                     sizes[s].h, (int)filters[f]);
            make_png(k, sizes[s].w, sizes[s].h, src, filters[f]);
            imgproc_probe_t probe;
            imgproc_err_t err;
            ck_assert_int_eq(imgproc_probe_file(src, &probe, &err), 0);
            int fast_cases = 0;
            for (size_t i = 0; i < sizeof(boxes) / sizeof(boxes[0]); i++) {
                bool fast;
                double db = compare(src, &probe, &boxes[i], &fast);
                ck_assert_msg(db >= 45.0, "%s %s %ux%u (%s path): PSNR %.1f dB", kind_name[k], src,
                              boxes[i].w, boxes[i].h, fast ? "pngfast" : "libvips", db);
                fast_cases += fast;
            }
            /* 16-bit and interlaced PNGs stay on libvips; every other kind takes the new
             * path for most of these boxes (those with a box group of 2 or more on both
             * axes: at 1037x771, 290x290 and the 333x111 cover are not). */
            if (k == K_RGB16 || k == K_INTERLACED)
                ck_assert_int_eq(fast_cases, 0);
            else
                ck_assert_int_ge(fast_cases, 4);
        }
    }
}
END_TEST

/* A PNG cut in the middle of its pixel data fails on the fast path (never a grey
 * half-image), and a full-size conversion or a mild shrink keeps the libvips path. */
START_TEST(test_pngfast_truncated_fails_and_small_shrinks_use_libvips)
{
    char src[512], cut[512], dst[600];
    snprintf(src, sizeof(src), "%s/whole.png", tmpdir);
    snprintf(cut, sizeof(cut), "%s/cut.png", tmpdir);
    snprintf(dst, sizeof(dst), "%s/out.jpg", tmpdir);
    make_png(K_RGB, 1200, 900, src, VIPS_FOREIGN_PNG_FILTER_ALL);
    size_t len;
    char *buf = tg_read_file(src, &len);
    /* the first half of the file: IHDR and part of the IDAT stream */
    tg_write_file(cut, buf, len / 2);

    imgproc_probe_t probe;
    imgproc_err_t err;
    ck_assert_int_eq(imgproc_probe_file(cut, &probe, &err), 0);
    imgproc_job_t job = {
        .op = IMGPROC_OP_FIT, .width = 200, .height = 200, .out_fmt = IMGPROC_FMT_JPEG};
    imgproc__plan_t pl;
    ck_assert_int_eq(imgproc__plan(&probe, &job, &pl), 0);
    ck_assert_uint_ne(pl.png_shrink_h, 0);
    imgproc_out_t out;
    ck_assert_int_eq(imgproc_run(cut, &job, &opts, dst, &out, &err), -IMGPROC_E_CORRUPT);

    /* the whole file with one bit of the last IDAT's CRC flipped (the 4 bytes before the
     * 12-byte IEND): refused like libpng refuses it, although every row decodes */
    char bad[512];
    snprintf(bad, sizeof(bad), "%s/badcrc.png", tmpdir);
    ck_assert(memcmp(buf + len - 12, "\0\0\0\0IEND", 8) == 0);
    buf[len - 13] ^= 1;
    tg_write_file(bad, buf, len);
    free(buf);
    ck_assert_int_eq(imgproc_run(src, &job, &opts, dst, &out, &err), 0);
    ck_assert_int_eq(imgproc_run(bad, &job, &opts, dst, &out, &err), -IMGPROC_E_CORRUPT);

    /* a full-size conversion and a 1.2x shrink: no box shrink to move, libvips decodes */
    job.op = IMGPROC_OP_CONVERT;
    ck_assert_int_eq(imgproc__plan(&probe, &job, &pl), 0);
    ck_assert_uint_eq(pl.png_shrink_h, 0);
    job.op = IMGPROC_OP_FIT;
    job.width = job.height = 1000;
    ck_assert_int_eq(imgproc__plan(&probe, &job, &pl), 0);
    ck_assert_uint_eq(pl.png_shrink_h, 0);
}
END_TEST

/* A group of rows long enough that white, opaque, premultiplied column sums would pass 32
 * bits (70 000 rows x 255 x 255) before the group ends: they are folded into the 64-bit
 * accumulator on the way, so the thumbnail is still white and opaque, as libvips makes it. */
START_TEST(test_pngfast_tall_alpha_group_folds_its_sums)
{
    char src[512];
    snprintf(src, sizeof(src), "%s/tall.png", tmpdir);
    VipsImage *black = NULL, *white = NULL;
    ck_assert_int_eq(vips_black(&black, 6, 140000, "bands", 4, NULL), 0);
    ck_assert_int_eq(vips_linear1(black, &white, 1.0, 255.0, "uchar", TRUE, NULL), 0);
    ck_assert_int_eq(vips_pngsave(white, src, "compression", 1, NULL), 0);
    g_object_unref(white);
    g_object_unref(black);
    imgproc_probe_t probe;
    imgproc_err_t err;
    ck_assert_int_eq(imgproc_probe_file(src, &probe, &err), 0);
    ck_assert(probe.has_alpha);
    box_t b = {IMGPROC_OP_FIT, 0, 1};
    imgproc_job_t job = {.op = b.op, .width = b.w, .height = b.h, .out_fmt = IMGPROC_FMT_PNG};
    imgproc__plan_t pl;
    ck_assert_int_eq(imgproc__plan(&probe, &job, &pl), 0);
    ck_assert_uint_gt((uint64_t)pl.png_shrink_v * 255 * 255, UINT32_MAX);
    bool fast;
    double db = compare(src, &probe, &b, &fast);
    ck_assert(fast);
    ck_assert_msg(db >= 45.0, "PSNR %.1f dB", db);
}
END_TEST

Suite *pngfast_suite(void);
Suite *pngfast_suite(void)
{
    Suite *s = suite_create("pngfast");
    TCase *tc = tcase_create("pngfast");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, test_pngfast_matches_libvips_every_kind_and_mode, 0, K_N);
    tcase_add_test(tc, test_pngfast_truncated_fails_and_small_shrinks_use_libvips);
    tcase_add_test(tc, test_pngfast_tall_alpha_group_folds_its_sums);
    suite_add_tcase(s, tc);
    return s;
}
