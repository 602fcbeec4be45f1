/* Tests of the mezzanine levels (server/mezz.c and their use in server/derive.c): which
 * originals get one, that a job on the level has exactly the original's output dimensions
 * (a grid of sizes, modes and orientations), and, against the real binary beside a second
 * one with levels off: the level is made on a second size, which waits for it (as do all
 * sizes asked for meanwhile: none decodes the original), used for the outputs it is k
 * times larger than and not for the others, estimated from its own probe, within 45 dB
 * PSNR of the direct result for every mode and output format, and gone when the original
 * is replaced or deleted. */
#include <check.h>
#include <glob.h>
#include <unistd.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <vips/vips.h>

#include "imgproc/imgproc.h"
#include "server/mezz.h"
#include "tests/tg_harness.h"

/* ---- unit: the decisions ---------------------------------------------------------------- */

static cfg_t mcfg(void)
{
    cfg_t c;
    memset(&c, 0, sizeof(c));
    c.mezz_enabled = true;
    c.mezz_size = 1280;
    c.mezz_k_milli = 2000;
    c.mezz_quality = 95;
    return c;
}

static imgproc_probe_t jpeg_probe(uint32_t w, uint32_t h, uint32_t orientation)
{
    imgproc_probe_t p;
    memset(&p, 0, sizeof(p));
    p.fmt = IMGPROC_FMT_JPEG;
    p.width = w;
    p.height = h;
    p.bands = 3;
    p.bit_depth = 8;
    p.pages = 1;
    p.orientation = orientation;
    p.chroma_h = p.chroma_v = 2;
    p.file_bytes = (uint64_t)w * h / 4;
    return p;
}

/* the qualities the chroma rule reads: thumbgate.yaml's defaults */
static const imgproc_opts_t mopts = {.jpeg_quality = 80, .avif_quality = 60};

/* The probe of a real encoded image made by libvips (alpha, 16 bits...). */
static imgproc_probe_t probe_of(VipsImage *im, const char *suffix)
{
    void *buf;
    size_t len;
    ck_assert_int_eq(vips_image_write_to_buffer(im, suffix, &buf, &len, NULL), 0);
    imgproc_probe_t p;
    imgproc_err_t err;
    ck_assert_int_eq(imgproc_probe_buf(buf, len, &p, &err), 0);
    g_free(buf);
    return p;
}

START_TEST(test_mezz_which_originals_get_a_level)
{
    cfg_t c = mcfg();
    imgproc_job_t lj;
    imgproc_probe_t p = jpeg_probe(5120, 3200, 1);
    ck_assert(mezz_level_job(&c, &p, &lj));
    ck_assert_int_eq(lj.op, IMGPROC_OP_FIT);
    ck_assert_int_eq(lj.out_fmt, IMGPROC_FMT_JPEG);
    /* half the original (libjpeg's 1/2 scale), or mezzanine.size when that is larger */
    static const uint32_t want[][4] = {{5120, 3200, 2560, 1600},
                                       {3000, 4000, 1500, 2000},
                                       {2000, 1500, 1280, 960},
                                       {1920, 1080, 1280, 720},
                                       {9000, 1000, 4500, 500}};
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        uint32_t w, h;
        p = jpeg_probe(want[i][0], want[i][1], 1);
        ck_assert(mezz_level_job(&c, &p, &lj));
        imgproc_output_dims(&p, &lj, &w, &h);
        ck_assert_msg(w == want[i][2] && h == want[i][3], "%ux%u: level %ux%u", want[i][0],
                      want[i][1], w, h);
    }
    p = jpeg_probe(1900, 1000, 1); /* < 1.5 x 1280: the level would be most of it */
    ck_assert(!mezz_level_job(&c, &p, &lj));
    p = jpeg_probe(3000, 2000, 1);
    c.mezz_enabled = false;
    ck_assert(!mezz_level_job(&c, &p, &lj));
    c = mcfg();
    c.memory_mode = CFG_MODE_NAIVE;
    ck_assert(!mezz_level_job(&c, &p, &lj));
    c = mcfg();

    /* real headers: opaque 8-bit PNG yes; alpha (a JPEG level would flatten it) and
     * 16-bit no */
    VipsImage *grey, *rgb, *rgba, *wide;
    ck_assert_int_eq(vips_black(&grey, 2000, 1500, "bands", 1, NULL), 0);
    VipsImage *bands[4] = {grey, grey, grey, grey};
    ck_assert_int_eq(vips_bandjoin(bands, &rgb, 3, NULL), 0);
    ck_assert_int_eq(vips_bandjoin(bands, &rgba, 4, NULL), 0);
    rgb->Type = rgba->Type = VIPS_INTERPRETATION_sRGB;
    ck_assert_int_eq(vips_cast(rgb, &wide, VIPS_FORMAT_USHORT, NULL), 0);
    wide->Type = VIPS_INTERPRETATION_RGB16;
    p = probe_of(rgb, ".png");
    ck_assert(mezz_level_job(&c, &p, &lj));
    p = probe_of(rgba, ".png");
    ck_assert(p.has_alpha);
    ck_assert(!mezz_level_job(&c, &p, &lj));
    p = probe_of(wide, ".png");
    ck_assert_uint_eq(p.bit_depth, 16);
    ck_assert(!mezz_level_job(&c, &p, &lj));
    g_object_unref(grey), g_object_unref(rgb), g_object_unref(rgba), g_object_unref(wide);
}
END_TEST

/* Over originals of many shapes and orientations and every request mode: a request the
 * level may serve gives exactly the original's output dimensions on it; conversions and
 * outputs the level is not k times larger than are never served from it; and the level
 * serves every output comfortably within its reach (the exact-dimensions fallback does
 * not lose them). */
START_TEST(test_mezz_level_job_has_the_original_dims)
{
    cfg_t c = mcfg();
    c.mezz_k_milli = _i == 0 ? 2000 : 1333; /* the loop index: k = 2, and the default */
    const double k = c.mezz_k_milli / 1000.0;
    static const uint32_t sides[][2] = {{5120, 3200}, {4000, 3000}, {2600, 1701}, {6001, 997},
                                        {1931, 1930}, {3001, 4999}, {2048, 1536}};
    static const uint32_t orients[] = {1, 3, 6, 8};
    unsigned served = 0, checked = 0;
    for (size_t i = 0; i < sizeof(sides) / sizeof(sides[0]); i++)
        for (size_t o = 0; o < 4; o++) {
            imgproc_probe_t orig = jpeg_probe(sides[i][0], sides[i][1], orients[o]);
            imgproc_job_t lj;
            ck_assert(mezz_level_job(&c, &orig, &lj));
            uint32_t lw, lh;
            imgproc_output_dims(&orig, &lj, &lw, &lh); /* stored upright */
            imgproc_probe_t lvl = jpeg_probe(lw, lh, 1);
            bool swap = orients[o] >= 5;
            double W = swap ? orig.height : orig.width, H = swap ? orig.width : orig.height;
            for (uint32_t a = 16; a <= 2600; a += 13)
                for (int mode = 0; mode < 5; mode++) {
                    imgproc_job_t req = {.out_fmt = IMGPROC_FMT_JPEG};
                    uint32_t b = a * 3 / 4 + 1;
                    switch (mode) {
                    case 0:
                        req.op = IMGPROC_OP_FIT, req.width = a, req.height = b;
                        break;
                    case 1:
                        req.op = IMGPROC_OP_COVER, req.width = a, req.height = b;
                        break;
                    case 2:
                        req.op = IMGPROC_OP_FIT, req.width = a;
                        break;
                    case 3:
                        req.op = IMGPROC_OP_FIT, req.height = a;
                        break;
                    default:
                        req.op = IMGPROC_OP_CONVERT;
                        break;
                    }
                    uint32_t ow, oh, gw, gh;
                    imgproc_output_dims(&orig, &req, &ow, &oh);
                    double s = fmax(ow / W, oh / H); /* the output's scale */
                    imgproc_job_t on;
                    bool ok = mezz_job_on_level(&c, &mopts, &orig, &req, &lvl, &on);
                    checked++;
                    if (mode == 4 || lw < k * s * W - 1e-9 || lh < k * s * H - 1e-9) {
                        ck_assert_msg(!ok, "%ux%u o%u mode %d %u: served beyond k", orig.width,
                                      orig.height, orients[o], mode, a);
                        continue;
                    }
                    if (lw >= 1.1 * k * s * W && lh >= 1.1 * k * s * H)
                        ck_assert_msg(ok, "%ux%u o%u mode %d %u: not served", orig.width,
                                      orig.height, orients[o], mode, a);
                    if (!ok)
                        continue;
                    served++;
                    imgproc_output_dims(&lvl, &on, &gw, &gh);
                    ck_assert_msg(gw == ow && gh == oh, "%ux%u o%u mode %d %u: %ux%u != %ux%u",
                                  orig.width, orig.height, orients[o], mode, a, gw, gh, ow, oh);
                }
        }
    ck_assert_uint_gt(served, checked / 10);
}
END_TEST

/* A level's chroma is finer than the output's too: a 4:2:0 level serves outputs whose
 * chroma is subsampled as well up to 1/k of its size, and full-chroma outputs (PNG, GIF,
 * JPEG XL, JPEG and AVIF from quality 90, as libvips writes them) up to half its chroma
 * (MEZZ_CHROMA_RATIO 2 > k); a 4:4:4 level (made before levels were 4:2:0) and a grey one
 * serve both up to 1/k. */
START_TEST(test_mezz_full_chroma_outputs_need_the_chroma)
{
    cfg_t c = mcfg();
    c.mezz_k_milli = 1333;
    const double k = 1.333;
    static const struct {
        imgproc_fmt_t fmt;
        uint32_t quality; /* the job's own (a preset's); 0: mopts' */
        bool full;
    } outs[] = {
        {IMGPROC_FMT_JPEG, 0, false}, {IMGPROC_FMT_JPEG, 89, false}, {IMGPROC_FMT_JPEG, 90, true},
        {IMGPROC_FMT_JPEG, 95, true}, {IMGPROC_FMT_WEBP, 0, false},  {IMGPROC_FMT_WEBP, 95, false},
        {IMGPROC_FMT_AVIF, 0, false}, {IMGPROC_FMT_AVIF, 92, true},  {IMGPROC_FMT_PNG, 0, true},
        {IMGPROC_FMT_GIF, 0, true},   {IMGPROC_FMT_JXL, 0, true}};
    imgproc_probe_t orig = jpeg_probe(5120, 3200, 1);
    for (int kind = 0; kind < 3; kind++) { /* 4:2:0, 4:4:4, grey */
        imgproc_probe_t lvl = jpeg_probe(2560, 1600, 1);
        if (kind == 1)
            lvl.chroma_h = lvl.chroma_v = 1;
        if (kind == 2)
            lvl.bands = 1, lvl.chroma_h = lvl.chroma_v = 1;
        for (size_t f = 0; f < sizeof(outs) / sizeof(outs[0]); f++) {
            double reach = kind == 0 && outs[f].full ? 2560 / 2 / 2.0 : 2560 / k;
            for (uint32_t a = 100; a <= 2560; a += 9) {
                imgproc_job_t req = {.op = IMGPROC_OP_FIT,
                                     .width = a,
                                     .out_fmt = outs[f].fmt,
                                     .quality = outs[f].quality};
                imgproc_job_t on;
                bool ok = mezz_job_on_level(&c, &mopts, &orig, &req, &lvl, &on);
                if (a > reach)
                    ck_assert_msg(!ok, "kind %d fmt %d q%u: %u px served", kind, outs[f].fmt,
                                  outs[f].quality, a);
                else if (a < reach - 1)
                    ck_assert_msg(ok, "kind %d fmt %d q%u: %u px not served", kind, outs[f].fmt,
                                  outs[f].quality, a);
            }
        }
    }
}
END_TEST

/* ---- integration -------------------------------------------------------------------- */

static tg_server_t S, D; /* S: levels on; D: levels off (the direct results) */

static void teardown(void)
{
    tg_cleanup(&S);
    tg_cleanup(&D);
}

/* A photo-like opaque image: a 1/f-like spectrum as photos have (blurred noise at three
 * scales, the coarser the stronger) over a gradient; three bands. */
static VipsImage *photo(int w, int h)
{
    VipsImage *ctx = vips_image_new();
    /* 4 images per band and scale (3 x 3), then 8 to join them: ASan caught 32 */
    enum { NT = 3 * 3 * 4 + 8 };
    VipsImage **t = (VipsImage **)vips_object_local_array(VIPS_OBJECT(ctx), NT);
    int n = 0;
    VipsImage *bands[3];
    for (int b = 0; b < 3; b++) {
        static const double sigma[3] = {3.0, 12.0, 48.0}, amp[3] = {0.75, 2.5, 8.0};
        VipsImage *sum = NULL;
        for (int i = 0; i < 3; i++) {
            ck_assert_int_eq(vips_gaussnoise(&t[n], w, h, "mean", 0.0, "sigma", 40.0, NULL), 0);
            ck_assert_int_eq(vips_gaussblur(t[n], &t[n + 1], sigma[i], NULL), 0);
            ck_assert_int_eq(vips_linear1(t[n + 1], &t[n + 2], amp[i], 0.0, NULL), 0);
            if (sum != NULL) {
                ck_assert_int_eq(vips_add(sum, t[n + 2], &t[n + 3], NULL), 0);
                sum = t[n + 3];
            } else {
                sum = t[n + 2];
            }
            n += 4;
        }
        bands[b] = sum;
    }
    ck_assert_int_eq(vips_xyz(&t[n], w, h, NULL), 0);
    ck_assert_int_eq(vips_extract_band(t[n], &t[n + 1], 0, NULL), 0);
    ck_assert_int_eq(vips_linear1(t[n + 1], &t[n + 2], 120.0 / w, 68.0, NULL), 0);
    ck_assert_int_eq(vips_add(bands[2], t[n + 2], &t[n + 3], NULL), 0);
    ck_assert_int_eq(vips_linear1(bands[0], &t[n + 4], 1.0, 128.0, NULL), 0);
    ck_assert_int_eq(vips_linear1(bands[1], &t[n + 5], 1.0, 128.0, NULL), 0);
    VipsImage *in[3] = {t[n + 4], t[n + 5], t[n + 3]};
    ck_assert_int_eq(vips_bandjoin(in, &t[n + 6], 3, NULL), 0);
    ck_assert_int_eq(vips_cast(t[n + 6], &t[n + 7], VIPS_FORMAT_UCHAR, NULL), 0);
    ck_assert(n + 7 < NT);
    VipsImage *out;
    ck_assert_int_eq(vips_copy(t[n + 7], &out, "interpretation", VIPS_INTERPRETATION_sRGB, NULL),
                     0);
    ck_assert_int_eq(vips_image_wio_input(out), 0); /* computed once, no ties to ctx */
    g_object_unref(ctx);
    return out;
}

static void put_both(const char *path, const void *buf, size_t len)
{
    tg_resp_t r;
    ck_assert_int_eq(tg_http(&S, "PUT", path, buf, len, NULL, &r), 201);
    tg_resp_free(&r);
    ck_assert_int_eq(tg_http(&D, "PUT", path, buf, len, NULL, &r), 201);
    tg_resp_free(&r);
}

static VipsImage *get_image(tg_server_t *s, const char *path)
{
    tg_resp_t r;
    ck_assert_msg(tg_http(s, "GET", path, NULL, 0, NULL, &r) == 200, "%s: %ld %s", path, r.status,
                  r.body);
    VipsImage *im = vips_image_new_from_buffer(r.body, r.len, "", NULL);
    ck_assert_msg(im != NULL, "%s: %s", path, vips_error_buffer());
    VipsImage *mem = vips_image_copy_memory(im);
    g_object_unref(im);
    tg_resp_free(&r);
    return mem;
}

static uint64_t estimate_of(tg_server_t *s, const char *path)
{
    char needle[300], line[2048];
    snprintf(needle, sizeof(needle), "\"path\":\"%s\"", path);
    ck_assert_msg(tg_wait_log_line(s->log, needle, line, sizeof(line), 30000) >= 1,
                  "no access line %s", path);
    const char *e = strstr(line, "\"estimate\":");
    ck_assert_ptr_nonnull(e);
    return strtoull(e + 11, NULL, 10);
}

/* For every mode and output format on @p stem (a w x h original on both servers, the level
 * made): each is made from the source its mode's letter in @p lossy (JPEG and WebP at
 * quality 80: 4:2:0) or @p png says (S the small level, B the level, - the original); what
 * a level serves has the direct result's dimensions and is within 45 dB PSNR of it (for
 * JPEG and WebP, whose own encoding loss at quality 80 is larger than that, within 0.5 dB
 * of the direct result's PSNR against the lossless direct result), and is estimated lower
 * than the same job on the original; what the original serves is the direct result. */
static void compare_modes(const char *stem, const char *near_k_cover, const char *lossy,
                          const char *png)
{
    /* the level is half the 2600x1700 original, 1300x850 (upright): _970x970 and
     * @p near_k_cover are outputs it is only k (1.333) times larger than; its small level,
     * 650x425, is so for _480x480 */
    const char *const modes[] = {"_300x300", "_200x200c", "_400x",    "_x150",
                                 "_250x390", "_480x480",  "_970x970", near_k_cover};
    static const char *const fmts[] = {"png", "jpg", "webp"};
    for (size_t m = 0; m < sizeof(modes) / sizeof(modes[0]); m++) {
        char ref_path[128];
        snprintf(ref_path, sizeof(ref_path), "/%s%s.png", stem, modes[m]);
        VipsImage *ref = NULL; /* the direct lossless result */
        for (size_t f = 0; f < 3; f++) {
            char path[128];
            snprintf(path, sizeof(path), "/%s%s.%s", stem, modes[m], fmts[f]);
            double used = tg_metric(&S, "thumbgate_mezzanine_used_total");
            double sused = tg_metric(&S, "thumbgate_mezzanine_small_used_total");
            VipsImage *lv = get_image(&S, path);
            char from = f == 0 ? png[m] : lossy[m];
            ck_assert_msg(tg_metric(&S, "thumbgate_mezzanine_used_total") == used + (from != '-'),
                          "%s: expected from %s", path, from == '-' ? "the original" : "a level");
            ck_assert_msg(tg_metric(&S, "thumbgate_mezzanine_small_used_total") ==
                              sused + (from == 'S'),
                          "%s: expected from the %s level", path, from == 'S' ? "small" : "large");
            VipsImage *dir = get_image(&D, path);
            if (ref == NULL) /* the PNG comes first: it is the direct lossless result (one
                                GET, so the access log has one line for its estimate) */
                ref = f == 0 ? (g_object_ref(dir), dir) : get_image(&D, ref_path);
            ck_assert_msg(lv->Xsize == dir->Xsize && lv->Ysize == dir->Ysize,
                          "%s: %dx%d from the level, %dx%d direct", path, lv->Xsize, lv->Ysize,
                          dir->Xsize, dir->Ysize);
            double p = tg_psnr(lv, dir);
            fprintf(stderr, "mezz psnr %s %.2f dB against the direct result\n", path, p);
            if (from == '-') {
                ck_assert_msg(p == 1000.0, "%s differs from the direct result", path);
            } else if (f == 0) {
                ck_assert_msg(p >= 45.0, "%s: PSNR %.2f dB against the direct result", path, p);
            } else {
                double pl = tg_psnr(lv, ref), pd = tg_psnr(dir, ref);
                fprintf(stderr,
                        "mezz psnr %s against the lossless direct: %.2f level, %.2f direct\n", path,
                        pl, pd);
                ck_assert_msg(pl >= pd - 0.5, "%s: %.2f dB from the level, %.2f direct (%.2f)",
                              path, pl, pd, p);
            }
            if (from != '-')
                ck_assert_msg(estimate_of(&S, path) < estimate_of(&D, path),
                              "%s: estimated %llu from the level, %llu from the original", path,
                              (unsigned long long)estimate_of(&S, path),
                              (unsigned long long)estimate_of(&D, path));
            g_object_unref(lv);
            g_object_unref(dir);
        }
        g_object_unref(ref);
    }
}

/* The level of @p stem on S, probed from its file: it has the size and orientation
 * mezz_level_probe() predicts from the original @p orig (what requests wait on). */
static void expect_predicted_level(const char *stem, const imgproc_probe_t *orig)
{
    char pat[400];
    snprintf(pat, sizeof(pat), "%s/cache/%s@/*/@level-[0-9]*[0-9].jpg", S.root, stem);
    glob_t g;
    ck_assert_int_eq(glob(pat, 0, NULL, &g), 0);
    ck_assert_uint_eq(g.gl_pathc, 1); /* the level, not its small level */
    imgproc_probe_t real, want;
    imgproc_err_t err;
    ck_assert_int_eq(imgproc_probe_file(g.gl_pathv[0], &real, &err), 0);
    globfree(&g);
    cfg_t c = mcfg();
    imgproc_job_t lj;
    ck_assert(mezz_level_job(&c, orig, &lj));
    mezz_level_probe(orig, &lj, &want);
    ck_assert_msg(real.width == want.width && real.height == want.height &&
                      real.orientation == want.orientation && real.fmt == want.fmt,
                  "level %ux%u (orientation %u), predicted %ux%u", real.width, real.height,
                  real.orientation, want.width, want.height);
}

/* A second size of an original waits for its level and is made from it; its
 * Server-Timing says how long it waited for the level. */
static void expect_waited_for_level(const char *path)
{
    double used = tg_metric(&S, "thumbgate_mezzanine_used_total");
    double waited = tg_metric(&S, "thumbgate_mezzanine_waited_total");
    tg_resp_t r;
    char timing[160];
    ck_assert_int_eq(tg_http(&S, "GET", path, NULL, 0, NULL, &r), 200);
    ck_assert(tg_header(&r, "server-timing", timing, sizeof(timing)));
    /* one header: the job's queue and work, and the wait for the level */
    ck_assert_msg(strstr(timing, "level;dur=") != NULL && strstr(timing, "queue;dur=") != NULL,
                  "%s: server-timing %s", path, timing);
    VipsImage *im = vips_image_new_from_buffer(r.body, r.len, "", NULL);
    ck_assert_ptr_nonnull(im);
    VipsImage *lv = vips_image_copy_memory(im), *dir = get_image(&D, path);
    g_object_unref(im);
    tg_resp_free(&r);
    ck_assert_int_eq(tg_metric(&S, "thumbgate_mezzanine_waited_total"), waited + 1);
    ck_assert_int_eq(tg_metric(&S, "thumbgate_mezzanine_used_total"), used + 1);
    ck_assert(lv->Xsize == dir->Xsize && lv->Ysize == dir->Ysize);
    g_object_unref(lv);
    g_object_unref(dir);
}

static void expect_not_from_level(const char *path)
{
    double used = tg_metric(&S, "thumbgate_mezzanine_used_total");
    VipsImage *lv = get_image(&S, path), *dir = get_image(&D, path);
    ck_assert_int_eq(tg_metric(&S, "thumbgate_mezzanine_used_total"), used);
    ck_assert(lv->Xsize == dir->Xsize && lv->Ysize == dir->Ysize);
    ck_assert_msg(tg_psnr(lv, dir) == 1000.0, "%s differs from the direct result", path);
    g_object_unref(lv);
    g_object_unref(dir);
}

START_TEST(test_mezz_psnr_every_mode_and_format)
{
    const char *on[] = {"THUMBGATE_LOG_ACCESS=true", NULL};
    const char *off[] = {"THUMBGATE_LOG_ACCESS=true", "THUMBGATE_MEZZANINE_ENABLED=false", NULL};
    tg_start(&S, on, NULL);
    tg_start(&D, off, NULL);
    VipsImage *im = photo(2600, 1700);

    /* a JPEG stored sideways (EXIF orientation 6): the level must be upright */
    VipsImage *o6;
    ck_assert_int_eq(vips_copy(im, &o6, NULL), 0);
    vips_image_set_int(o6, VIPS_META_ORIENTATION, 6);
    void *buf;
    size_t len;
    ck_assert_int_eq(vips_image_write_to_buffer(o6, ".jpg", &buf, &len, "Q", 95, NULL), 0);
    imgproc_probe_t p;
    imgproc_err_t err;
    ck_assert_int_eq(imgproc_probe_buf(buf, len, &p, &err), 0);
    ck_assert_uint_eq(p.orientation, 6);
    put_both("/rot.jpg", buf, len);
    g_free(buf);
    imgproc_probe_t rot_probe = p;
    /* an opaque 8-bit PNG */
    ck_assert_int_eq(vips_image_write_to_buffer(im, ".png", &buf, &len, NULL), 0);
    imgproc_probe_t flat_probe;
    ck_assert_int_eq(imgproc_probe_buf(buf, len, &flat_probe, &err), 0);
    put_both("/flat.png", buf, len);
    g_free(buf);
    g_object_unref(o6);
    g_object_unref(im);

    /* one size makes no level (it is made from the original); a second one makes it and
     * waits for it */
    const char *first[] = {"/rot_100x100.jpg", "/flat_100x100.jpg"};
    for (int i = 0; i < 2; i++)
        expect_not_from_level(first[i]);
    ck_assert_int_eq(tg_metric(&S, "thumbgate_mezzanine_made_total"), 0);
    expect_waited_for_level("/rot_120x120.jpg");
    expect_waited_for_level("/flat_120x120.jpg");
    ck_assert_int_eq(tg_metric(&S, "thumbgate_mezzanine_made_total"), 2);
    ck_assert_int_eq(tg_metric(&S, "thumbgate_mezzanine_levels"), 4); /* and small levels */
    ck_assert_int_gt(tg_metric(&S, "thumbgate_mezzanine_bytes"), 0);
    expect_predicted_level("rot", &rot_probe);
    expect_predicted_level("flat", &flat_probe);

    /* S: within the small level's reach (650x425, half the level: outputs up to about
     * 487 x 319 on the original's axes), so made from it; B: from the level. The levels
     * are 4:2:0, so a PNG (full chroma) is served by a level whose chroma is twice the
     * output (MEZZ_CHROMA_RATIO): the small level up to 162 x 106 on the original's axes,
     * the level up to 325 x 212, else the original (-). */
    compare_modes("rot", "_620x960c", "SSBSSSBB", "BB-S----"); /* displayed 1700x2600 */
    compare_modes("flat", "_960x620c", "SSSSSSBB", "BB-BB---");
    /* a conversion and an output the level is not k times larger than: the original */
    expect_not_from_level("/rot.png");
    expect_not_from_level("/flat_1000x.jpg");
    /* every job, the level's included, stayed within its estimate (jobmeter); under ASan
     * the resident memory includes redzones and quarantine, as in check_jobmeter */
    if (getenv("THUMBGATE_SANITIZED") == NULL)
        ck_assert_int_eq(tg_metric(&S, "thumbgate_estimate_under_total"), 0);
}
END_TEST

static unsigned levels_on_disk(const char *stem)
{
    char pat[400];
    snprintf(pat, sizeof(pat), "%s/cache/%s@/*/@level-*", S.root, stem);
    glob_t g;
    unsigned n = glob(pat, 0, NULL, &g) == 0 ? (unsigned)g.gl_pathc : 0;
    globfree(&g);
    return n;
}

static void derive_two(const char *stem)
{
    char path[128];
    for (int i = 0; i < 2; i++) {
        tg_resp_t r;
        snprintf(path, sizeof(path), "/%s_%dx.jpg", stem, 100 + i);
        ck_assert_int_eq(tg_http(&S, "GET", path, NULL, 0, NULL, &r), 200);
        tg_resp_free(&r);
    }
}

static void get_ok(const char *path)
{
    tg_resp_t r;
    ck_assert_msg(tg_http(&S, "GET", path, NULL, 0, NULL, &r) == 200, "%s: %ld", path, r.status);
    tg_resp_free(&r);
}

START_TEST(test_mezz_level_goes_with_its_original)
{
    tg_start(&S, NULL, NULL);
    size_t len;
    void *a = tg_image(2400, 1600, 3, "jpg", &len);
    tg_resp_t r;
    ck_assert_int_eq(tg_http(&S, "PUT", "/x.jpg", a, len, NULL, &r), 201);
    tg_resp_free(&r);
    derive_two("x");
    ck_assert(tg_wait_metric(&S, "thumbgate_mezzanine_made_total", 1, 120000));
    ck_assert_uint_eq(levels_on_disk("x"), 2); /* the level and its small level */
    ck_assert_int_eq(tg_metric(&S, "thumbgate_mezzanine_levels"), 2);

    /* replaced: the level of the old original is gone at once, a new one is made later */
    size_t blen;
    void *b = tg_image(2400, 1600, 3, "jpg", &blen);
    ck_assert_int_eq(tg_http(&S, "PUT", "/x.jpg", b, blen, NULL, &r), 200);
    g_free(b);
    tg_resp_free(&r);
    ck_assert_uint_eq(levels_on_disk("x"), 0);
    ck_assert_int_eq(tg_metric(&S, "thumbgate_mezzanine_levels"), 0);
    ck_assert_int_eq(tg_metric(&S, "thumbgate_mezzanine_bytes"), 0);
    derive_two("x");
    ck_assert(tg_wait_metric(&S, "thumbgate_mezzanine_made_total", 2, 120000));
    ck_assert_uint_eq(levels_on_disk("x"), 2);

    /* deleted: gone too */
    ck_assert_int_eq(tg_http(&S, "DELETE", "/x.jpg", NULL, 0, NULL, &r), 204);
    tg_resp_free(&r);
    ck_assert_uint_eq(levels_on_disk("x"), 0);
    ck_assert_int_eq(tg_metric(&S, "thumbgate_mezzanine_levels"), 0);

    /* the small level evicted alone (removed behind the store's back: the levels gauge is
     * not checked after it): the level serves its sizes, and it is not made again */
    ck_assert_int_eq(tg_http(&S, "PUT", "/y.jpg", a, len, NULL, &r), 201);
    tg_resp_free(&r);
    derive_two("y");
    ck_assert(tg_wait_metric(&S, "thumbgate_mezzanine_made_total", 3, 120000));
    ck_assert_uint_eq(levels_on_disk("y"), 2);
    char pat[400];
    snprintf(pat, sizeof(pat), "%s/cache/y@/*/@level-*-half.jpg", S.root);
    glob_t g;
    ck_assert_int_eq(glob(pat, 0, NULL, &g), 0);
    ck_assert_uint_eq(g.gl_pathc, 1);
    ck_assert_int_eq(unlink(g.gl_pathv[0]), 0);
    globfree(&g);
    double used = tg_metric(&S, "thumbgate_mezzanine_used_total");
    double sused = tg_metric(&S, "thumbgate_mezzanine_small_used_total");
    get_ok("/y_102x.jpg");
    ck_assert_int_eq(tg_metric(&S, "thumbgate_mezzanine_used_total"), used + 1);
    ck_assert_int_eq(tg_metric(&S, "thumbgate_mezzanine_small_used_total"), sused);
    ck_assert_int_eq(tg_metric(&S, "thumbgate_mezzanine_made_total"), 3);
    ck_assert_uint_eq(levels_on_disk("y"), 1);

    g_free(a);
}
END_TEST

/* GET @p path on a connection of its own that the server closes after the answer. */
static int send_get_close(const char *path)
{
    char req[300];
    int n =
        snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", path);
    int fd = tg_connect(&S);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, req, (size_t)n), n);
    return fd;
}

START_TEST(test_mezz_sizes_wait_for_the_level)
{
    tg_start(&S, NULL, NULL);
    tg_put_image(&S, "/w.jpg", 2400, 1600, "jpg");
    tg_put_image(&S, "/v.jpg", 2400, 1600, "jpg");

    /* the first size: from the original, no level */
    get_ok("/w_100x.jpg");
    ck_assert_int_eq(tg_metric(&S, "thumbgate_mezzanine_made_total"), 0);
    ck_assert_int_eq(tg_metric(&S, "thumbgate_mezzanine_used_total"), 0);

    /* eight more at once: one level is made, and every one of them is made from it (it
     * waited for the level, or came after it was made): none decodes the original */
    enum { N = 8 };
    int fds[N];
    char path[64];
    for (int i = 0; i < N; i++) {
        snprintf(path, sizeof(path), "/w_%dx.jpg", 110 + 10 * i);
        fds[i] = send_get_close(path);
    }
    static char buf[1 << 20];
    for (int i = 0; i < N; i++) {
        size_t n = tg_read_all(fds[i], buf, sizeof(buf), 60000);
        close(fds[i]);
        ck_assert_msg(n > 12 && strncmp(buf, "HTTP/1.1 200", 12) == 0, "size %d: %.40s",
                      110 + 10 * i, buf);
        const char *body = strstr(buf, "\r\n\r\n");
        ck_assert_ptr_nonnull(body);
        int w, h;
        ck_assert(tg_dims(body + 4, n - (size_t)(body + 4 - buf), &w, &h));
        ck_assert_int_eq(w, 110 + 10 * i);
    }
    ck_assert_int_eq(tg_metric(&S, "thumbgate_mezzanine_made_total"), 1);
    ck_assert_int_eq(tg_metric(&S, "thumbgate_mezzanine_used_total"), N);
    double waited = tg_metric(&S, "thumbgate_mezzanine_waited_total");
    ck_assert(waited >= 1 && waited <= N);

    /* an output the level (1280 px) is not k times larger than neither waits nor uses it */
    get_ok("/w_1000x.jpg");
    ck_assert_int_eq(tg_metric(&S, "thumbgate_mezzanine_used_total"), N);
    ck_assert_int_eq(tg_metric(&S, "thumbgate_mezzanine_waited_total"), waited);

    /* a client that leaves while it waits for the level: answered (499, in the tick); the
     * level job leaves the queue with it unless it has started (nobody is decoded for),
     * and the next size makes it (or finds it made) and is made from it */
    get_ok("/v_100x.jpg");
    int fd = send_get_close("/v_120x.jpg");
    ck_assert(tg_wait_metric(&S, "thumbgate_mezzanine_waited_total", waited + 1, 30000));
    close(fd);
    ck_assert(
        tg_wait_metric(&S, "thumbgate_jobs_rejected_total{reason=\"client_gone\"}", 1, 30000) ||
        tg_metric(&S, "thumbgate_mezzanine_made_total") == 2);
    get_ok("/v_130x.jpg");
    ck_assert_int_eq(tg_metric(&S, "thumbgate_mezzanine_made_total"), 2);
    ck_assert_int_eq(tg_metric(&S, "thumbgate_mezzanine_used_total"), N + 1);
    /* an .auto URL that waits for the level is handled twice: its response still says
     * Vary: Accept once */
    tg_put_image(&S, "/u.jpg", 2400, 1600, "jpg");
    get_ok("/u_100x.jpg");
    double w0 = tg_metric(&S, "thumbgate_mezzanine_waited_total");
    fd = send_get_close("/u_120x.auto");
    size_t n = tg_read_all(fd, buf, sizeof(buf), 60000);
    close(fd);
    ck_assert_msg(n > 12 && strncmp(buf, "HTTP/1.1 200", 12) == 0, "%.60s", buf);
    ck_assert_int_eq(tg_metric(&S, "thumbgate_mezzanine_waited_total"), w0 + 1);
    unsigned vary = 0;
    for (const char *p = buf; (p = strcasestr(p, "\r\nvary:")) != NULL; p += 7)
        vary++;
    ck_assert_uint_eq(vary, 1);
    ck_assert_ptr_nonnull(strcasestr(buf, "level;dur="));
    if (getenv("THUMBGATE_SANITIZED") == NULL)
        ck_assert_int_eq(tg_metric(&S, "thumbgate_estimate_under_total"), 0);
}
END_TEST

/* A level a size it does not serve wants (made after that size's own job, or made before
 * for waiters) is made even when a request that waits for it leaves: the next sizes of the
 * original want it, so it does not leave the queue with that client.
 * One worker is kept busy by a long job on another original, so what follows stays queued:
 * a 1000 px size (over what the level serves: its own job, and it wants the level) and a
 * 120 px size that waits for the level, in the order @p waiter_first says. The waiter's
 * client then leaves: the level must stay queued, be made, and serve the next size. */
static void level_stays_when_its_waiter_leaves(bool waiter_first)
{
    const char *env[] = {"THUMBGATE_WORKERS=1", "THUMBGATE_MEMORY_QUEUE_TIMEOUT=60s", NULL};
    tg_start(&S, env, NULL);
    tg_put_image(&S, "/g.png", 3000, 3000, "png");
    tg_put_image(&S, "/a.jpg", 2400, 1600, "jpg");
    get_ok("/a_100x.jpg"); /* the first size */
    int busy = tg_send_get(&S, "/g.webp");
    ck_assert(tg_wait_metric(&S, "thumbgate_workers_busy", 1, 10000));
    int big = -1;
    if (!waiter_first) { /* its own job, then the level behind it */
        big = tg_send_get(&S, "/a_1000x.jpg");
        ck_assert(tg_wait_metric(&S, "thumbgate_queue_length", 2, 10000));
    }
    int fd = send_get_close("/a_120x.jpg");
    ck_assert(tg_wait_metric(&S, "thumbgate_mezzanine_waited_total", 1, 30000));
    if (waiter_first) { /* the level was made for the waiter; now a size wants it */
        ck_assert(tg_wait_metric(&S, "thumbgate_queue_length", 1, 10000));
        big = tg_send_get(&S, "/a_1000x.jpg");
        ck_assert(tg_wait_metric(&S, "thumbgate_queue_length", 2, 10000));
    }
    close(fd);
    ck_assert(
        tg_wait_metric(&S, "thumbgate_jobs_rejected_total{reason=\"client_gone\"}", 1, 30000));
    ck_assert_double_eq(tg_metric(&S, "thumbgate_queue_length"), 2); /* the level stays */
    char buf[512];
    tg_read_all(busy, buf, sizeof(buf), 60000);
    close(busy);
    ck_assert_msg(strncmp(buf, "HTTP/1.1 200", 12) == 0, "%.60s", buf);
    tg_read_all(big, buf, sizeof(buf), 60000);
    close(big);
    ck_assert_msg(strncmp(buf, "HTTP/1.1 200", 12) == 0, "%.60s", buf);
    ck_assert(tg_wait_metric(&S, "thumbgate_mezzanine_made_total", 1, 60000));
    /* the next size is made from it, without waiting */
    get_ok("/a_130x.jpg");
    ck_assert_int_eq(tg_metric(&S, "thumbgate_mezzanine_used_total"), 1);
    ck_assert_int_eq(tg_metric(&S, "thumbgate_mezzanine_waited_total"), 1);
}

START_TEST(test_mezz_level_outlives_a_waiter_it_was_not_made_for)
{
    level_stays_when_its_waiter_leaves(false);
}
END_TEST

START_TEST(test_mezz_level_made_for_waiters_stays_when_a_size_it_does_not_serve_wants_it)
{
    level_stays_when_its_waiter_leaves(true);
}
END_TEST

static void expect_timeout(const char *path)
{
    tg_resp_t r;
    ck_assert_int_eq(tg_http(&S, "GET", path, NULL, 0, NULL, &r), 503);
    ck_assert_msg(strstr(r.body, "\"error\":\"job_timeout\"") != NULL, "%s: %s", path, r.body);
    tg_resp_free(&r);
}

START_TEST(test_mezz_failed_level_is_tried_once)
{
    /* a job deadline no decode of this 3000x3000 noise PNG meets: the level job fails as the
     * requests do. The request that waited for it is then made from the original (and
     * fails on its own deadline: an answer, not a hang), and later sizes do not try the
     * level again. The same URL asked twice is one size, not two. */
    const char *env[] = {"THUMBGATE_MEMORY_JOB_TIMEOUT=50ms", "THUMBGATE_WORKERS=1", NULL};
    tg_start(&S, env, NULL);
    tg_put_image(&S, "/slow.png", 3000, 3000, "png");
    expect_timeout("/slow_100x.jpg");
    ck_assert_int_eq(tg_metric(&S, "thumbgate_jobs_timed_out_total"), 1);
    /* the same URL again is not a second size: no level */
    expect_timeout("/slow_100x.jpg");
    ck_assert_int_eq(tg_metric(&S, "thumbgate_jobs_timed_out_total"), 2);
    ck_assert_int_eq(tg_metric(&S, "thumbgate_mezzanine_waited_total"), 0);
    expect_timeout("/slow_110x.jpg");
    ck_assert_int_eq(tg_metric(&S, "thumbgate_mezzanine_waited_total"), 1);
    ck_assert_int_eq(tg_metric(&S, "thumbgate_jobs_timed_out_total"), 4); /* level, request */
    expect_timeout("/slow_120x.jpg");
    ck_assert_int_eq(tg_metric(&S, "thumbgate_mezzanine_waited_total"), 1);
    ck_assert_int_eq(tg_metric(&S, "thumbgate_jobs_timed_out_total"), 5);
    ck_assert_int_eq(tg_metric(&S, "thumbgate_mezzanine_made_total"), 0);
    ck_assert_int_eq(tg_metric(&S, "thumbgate_mezzanine_used_total"), 0);
}
END_TEST

Suite *mezz_suite(void); /* called by check_main.c */
Suite *mezz_suite(void)
{
    Suite *s = suite_create("mezz");
    TCase *u = tcase_create("decisions");
    tcase_add_checked_fixture(u, tg_fixture_setup, NULL);
    tcase_add_test(u, test_mezz_which_originals_get_a_level);
    tcase_add_loop_test(u, test_mezz_level_job_has_the_original_dims, 0, 2);
    tcase_add_test(u, test_mezz_full_chroma_outputs_need_the_chroma);
    suite_add_tcase(s, u);
    TCase *t = tcase_create("server");
    tcase_add_checked_fixture(t, tg_fixture_setup, teardown);
    tcase_set_timeout(t, 300);
    tcase_add_test(t, test_mezz_psnr_every_mode_and_format);
    tcase_add_test(t, test_mezz_level_goes_with_its_original);
    tcase_add_test(t, test_mezz_sizes_wait_for_the_level);
    tcase_add_test(t, test_mezz_level_outlives_a_waiter_it_was_not_made_for);
    tcase_add_test(t,
                   test_mezz_level_made_for_waiters_stays_when_a_size_it_does_not_serve_wants_it);
    tcase_add_test(t, test_mezz_failed_level_is_tried_once);
    suite_add_tcase(s, t);
    return s;
}
