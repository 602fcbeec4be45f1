/* Check tests for imgproc/jpegfast.c (issue 14): JPEG to JPEG by YCbCr planes must give what
 * libvips' own path gives. Detailed (noise) content is saved as 4:2:0, 4:4:4 and grey JPEGs
 * at sizes whose DCT scales and box groups do not divide them; each box (fits, centre crops
 * at odd and even offsets, conversions) is made by the fast
 * path (called directly, so that it is known to have run, and through imgproc_run(), which
 * must write the same bytes) and by vips_thumbnail() + jpegsave with run.c's options. Both
 * JPEGs are measured against vips_thumbnail()'s lossless result: the fast one may be at
 * most 0.5 dB further from it (JPEG's own loss at quality 80 is larger than the
 * differences of the two resizes, as in the mezzanine levels' test), or at least 45 dB
 * from it (tiny outputs, where both are within a level of it). Then what the path
 * must refuse or stop on: files it does not take, a truncated file (libvips reports it),
 * the deadline, a failed write. libvips is initialised inside the forked child. */
#include <check.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <vips/vips.h>

#include "imgproc/jpegfast.h"
#include "tests/tg_harness.h"

#define Q 80

static char tmpdir[256];
static int q = Q; /* the quality of the checks: Q, or 90 and over (4:4:4 outputs) */

static void setup(void)
{
    ck_assert_int_eq(imgproc_init("check_jpegfast"), 0);
    tg_mkdtemp(tmpdir, sizeof(tmpdir), "check-jpegfast");
}

static void teardown(void)
{
    ck_assert_int_eq(tg_rmtree(tmpdir), 0);
}

static imgproc_opts_t opts = {.jpeg_quality = Q, .webp_quality = 80, .png_compression = 1};

typedef enum { S_420, S_444, S_GREY, S_WAVES, S_N } sampling_t;
static const char *const sampling_name[S_N] = {"4:2:0", "4:4:4", "grey", "4:2:0 waves"};

/* Colour waves: each band a sinusoid of its own period on each axis, so the chroma has
 * structure at every scale and a chroma grid off the luma's by a fraction of a sample
 * costs dB (the noise of tg_detail_image hides that: 4:2:0 keeps little of its chroma). */
static VipsImage *waves(int w, int h)
{
    uint8_t *px = g_malloc((size_t)w * h * 3);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int k = 0; k < 3; k++)
                px[((size_t)y * w + x) * 3 + k] =
                    (uint8_t)(128 + 90 * sin(x / (5.0 + k * 3)) * cos(y / (4.0 + k * 2)));
    VipsImage *mem =
        vips_image_new_from_memory_copy(px, (size_t)w * h * 3, w, h, 3, VIPS_FORMAT_UCHAR);
    g_free(px);
    ck_assert_ptr_nonnull(mem);
    return mem;
}

static void make_jpeg(sampling_t s, int w, int h, const char *path, const char *extra)
{
    VipsImage *img = s == S_WAVES ? waves(w, h) : tg_detail_image(w, h, s == S_GREY ? 1 : 3, false);
    int rc = vips_jpegsave(img, path, "Q", s == S_WAVES ? 90 : 88, "subsample_mode",
                           s == S_444 ? VIPS_FOREIGN_SUBSAMPLE_OFF : VIPS_FOREIGN_SUBSAMPLE_ON,
                           "interlace", extra && strcmp(extra, "progressive") == 0, NULL);
    ck_assert_msg(rc == 0, "save: %s", vips_error_buffer());
    g_object_unref(img);
}

typedef struct {
    char *buf;
    size_t len, cap;
    bool fail;
} mem_t;

static int mem_write(void *arg, const void *data, size_t len)
{
    mem_t *m = arg;
    if (m->fail)
        return -1;
    if (m->len + len > m->cap) {
        m->cap = (m->len + len) * 2;
        ck_assert_ptr_nonnull(m->buf = realloc(m->buf, m->cap));
    }
    memcpy(m->buf + m->len, data, len);
    m->len += len;
    return 0;
}

static bool yes(void *arg)
{
    return true;
}

/* The fast path called directly on @p src for @p job: its return code, the output in @p m. */
static int run_fast(const char *src, const imgproc_job_t *job, imgproc__plan_t *pl, mem_t *m,
                    bool (*cancelled)(void *))
{
    imgproc_probe_t probe;
    imgproc_err_t err;
    ck_assert_int_eq(imgproc_probe_file(src, &probe, &err), 0);
    ck_assert_int_eq(imgproc__plan(&probe, job, pl), 0);
    ck_assert_msg(imgproc__jpegfast_takes(&probe, job, pl), "%s: not taken", src);
    int fd = open(src, O_RDONLY | O_CLOEXEC);
    ck_assert_int_ge(fd, 0);
    int rc = imgproc__jpegfast(fd, pl, q, imgproc_full_chroma(job, &opts), cancelled, NULL,
                               mem_write, m, &err);
    close(fd);
    return rc;
}

static void check_box(const char *src, sampling_t s, imgproc_op_t op, uint32_t w, uint32_t h)
{
    imgproc_job_t job = {.op = op, .width = w, .height = h, .out_fmt = IMGPROC_FMT_JPEG};
    imgproc__plan_t pl;
    mem_t m = {0};
    int rc = run_fast(src, &job, &pl, &m, NULL);
    ck_assert_msg(rc == 0, "%s %s Q%d %ux%u: the path gave %d", sampling_name[s], src, q, w, h, rc);

    /* imgproc_run() takes the same path: the same bytes */
    char dst[600];
    snprintf(dst, sizeof(dst), "%s.out.jpg", src);
    imgproc_out_t out;
    imgproc_err_t err;
    ck_assert_msg(imgproc_run(src, &job, &opts, dst, &out, &err) == 0, "%s: %s", src, err.msg);
    size_t len;
    char *file = tg_read_file(dst, &len);
    ck_assert_msg(len == m.len && memcmp(file, m.buf, len) == 0,
                  "%s %ux%u: imgproc_run wrote %zu bytes, the fast path %zu", src, w, h, len,
                  m.len);
    free(file);
    unlink(dst);

    VipsImage *ref = NULL, *r8 = NULL, *got = NULL, *vj = NULL;
    void *vbuf = NULL;
    size_t vlen = 0;
    ck_assert_int_eq(vips_thumbnail(src, &ref, (int)pl.box_w, "height", (int)pl.box_h, "size",
                                    VIPS_SIZE_DOWN, "crop",
                                    pl.crop ? VIPS_INTERESTING_CENTRE : VIPS_INTERESTING_NONE,
                                    "no_rotate", TRUE, NULL),
                     0);
    VipsImage *cast = NULL;
    ck_assert_int_eq(vips_cast(ref, &cast, VIPS_FORMAT_UCHAR, NULL), 0);
    ck_assert_ptr_nonnull(r8 = vips_image_copy_memory(cast)); /* read twice below */
    g_object_unref(cast);
    ck_assert_int_eq(vips_jpegsave_buffer(r8, &vbuf, &vlen, "Q", q, "strip", TRUE, "subsample_mode",
                                          opts.jpeg_420 ? VIPS_FOREIGN_SUBSAMPLE_ON
                                                        : VIPS_FOREIGN_SUBSAMPLE_AUTO,
                                          NULL),
                     0);
    ck_assert_ptr_nonnull(vj = vips_image_new_from_buffer(vbuf, vlen, "", NULL));
    ck_assert_ptr_nonnull(got = vips_image_new_from_buffer(m.buf, m.len, "", NULL));
    ck_assert_msg(got->Xsize == r8->Xsize && got->Ysize == r8->Ysize && got->Bands == r8->Bands,
                  "%s %ux%u: got %dx%dx%d, libvips %dx%dx%d", src, w, h, got->Xsize, got->Ysize,
                  got->Bands, r8->Xsize, r8->Ysize, r8->Bands);
    ck_assert_uint_eq(out.width, (uint32_t)r8->Xsize);
    ck_assert_uint_eq(out.height, (uint32_t)r8->Ysize);
    /* the chroma libvips writes at this quality (4:2:0 under 90, 4:4:4 from 90, 4:2:0
     * always with jpeg_420) */
    imgproc_probe_t outp, vp;
    ck_assert_int_eq(imgproc_probe_buf(m.buf, m.len, &outp, &err), 0);
    ck_assert_int_eq(imgproc_probe_buf(vbuf, vlen, &vp, &err), 0);
    ck_assert_msg(outp.chroma_h == vp.chroma_h && outp.chroma_v == vp.chroma_v,
                  "Q%d%s: sampled %u,%u, libvips %u,%u", q, opts.jpeg_420 ? " 4:2:0" : "",
                  outp.chroma_h, outp.chroma_v, vp.chroma_h, vp.chroma_v);
    double fast = tg_psnr(got, r8), vips = tg_psnr(vj, r8);
    fprintf(stderr, "jpegfast Q%d %s %s %ux%u: %.2f dB, libvips' JPEG %.2f dB\n", q,
            sampling_name[s], src, w, h, fast, vips);
    ck_assert_msg(fast >= vips - 0.5 || fast >= 45.0,
                  "%s %s %ux%u: %.2f dB from the lossless result, libvips %.2f", sampling_name[s],
                  src, w, h, fast, vips);
    g_object_unref(got);
    g_object_unref(vj);
    g_object_unref(r8);
    g_object_unref(ref);
    g_free(vbuf);
    free(m.buf);
}

/* 1037 x 771 leaves partial DCT blocks and box groups on both axes; 33 x 17 is smaller than
 * most boxes (no resize at all) and odd. */
static const struct {
    int w, h;
} sizes[] = {{1037, 771}, {2003, 1499}, {33, 17}};

static const struct {
    imgproc_op_t op;
    uint32_t w, h;
} boxes[] = {
    {IMGPROC_OP_FIT, 290, 290},   {IMGPROC_OP_FIT, 203, 0},     {IMGPROC_OP_FIT, 0, 97},
    {IMGPROC_OP_FIT, 1000, 1000}, {IMGPROC_OP_FIT, 7, 7},       {IMGPROC_OP_CONVERT, 0, 0},
    {IMGPROC_OP_FIT, 61, 0},      {IMGPROC_OP_COVER, 150, 90},  {IMGPROC_OP_COVER, 333, 111},
    {IMGPROC_OP_COVER, 7, 7},     {IMGPROC_OP_COVER, 101, 101}, {IMGPROC_OP_COVER, 40, 900}};

START_TEST(test_jpegfast_matches_libvips_every_sampling_and_box)
{
    sampling_t s = (sampling_t)_i;
    for (size_t z = 0; z < sizeof(sizes) / sizeof(sizes[0]); z++) {
        char src[512];
        snprintf(src, sizeof(src), "%s/%d-%dx%d.jpg", tmpdir, (int)s, sizes[z].w, sizes[z].h);
        make_jpeg(s, sizes[z].w, sizes[z].h, src, NULL);
        for (size_t b = 0; b < sizeof(boxes) / sizeof(boxes[0]); b++)
            check_box(src, s, boxes[b].op, boxes[b].w, boxes[b].h);
    }
}
END_TEST

/* Quality 90 and over: libvips writes full-resolution chroma (4:4:4), and so must the path
 * (unless opts.jpeg_420: see below). Outputs at libjpeg's 1/2 and 1/4 scales
 * (vips_thumbnail leaves a factor of 2 to the resize: under 501 px of 2003), where a
 * 4:2:0 file's chroma comes out of the IDCT at the luma's resolution, resizes and crops.
 * At full scale (1001 px of 2003) a 4:2:0 file's chroma is half the luma's, which libvips
 * upsamples first: the path declines it, and takes the 4:4:4 file. */
static const struct {
    imgproc_op_t op;
    uint32_t w, h;
} qboxes[] = {{IMGPROC_OP_FIT, 480, 480}, {IMGPROC_OP_COVER, 333, 111}, {IMGPROC_OP_FIT, 400, 0},
              {IMGPROC_OP_FIT, 61, 0},    {IMGPROC_OP_FIT, 0, 97},      {IMGPROC_OP_FIT, 1001, 0},
              {IMGPROC_OP_FIT, 700, 0}};

/* A 2003 x 1499 file of sampling @p s as @p src, and the first @p nboxes of qboxes from it
 * at each of @p nq qualities; the quality is left at the last. */
static void check_qualities(sampling_t s, char *src, size_t srclen, const int *qs, size_t nq,
                            size_t nboxes)
{
    snprintf(src, srclen, "%s/q-%d-%d.jpg", tmpdir, (int)s, (int)opts.jpeg_420);
    make_jpeg(s, 2003, 1499, src, NULL);
    for (size_t k = 0; k < nq; k++) {
        q = qs[k];
        opts.jpeg_quality = (uint32_t)q;
        for (size_t b = 0; b < nboxes; b++)
            check_box(src, s, qboxes[b].op, qboxes[b].w, qboxes[b].h);
    }
}

START_TEST(test_jpegfast_full_chroma_from_90)
{
    static const int qualities[] = {90, 95, 98};
    for (sampling_t s = S_420; s <= S_444; s++) {
        char src[512];
        /* not the last two boxes, at full scale: below */
        check_qualities(s, src, sizeof(src), qualities, 3, 5);
        /* full scale: a 4:2:0 chroma plane is 1002 wide, half the luma's */
        static const uint32_t full[] = {1001, 700};
        for (size_t k = 0; k < 2; k++) {
            imgproc_job_t job = {
                .op = IMGPROC_OP_FIT, .width = full[k], .out_fmt = IMGPROC_FMT_JPEG};
            imgproc__plan_t pl;
            mem_t m = {0};
            int rc = run_fast(src, &job, &pl, &m, NULL);
            free(m.buf);
            if (s == S_420)
                ck_assert_int_eq(rc, IMGPROC__JPEGFAST_DECLINED);
            else
                check_box(src, s, job.op, job.width, job.height);
        }
    }
    q = Q;
    opts.jpeg_quality = Q;
}
END_TEST

/* opts.jpeg_420 (the mezzanine levels, made at 95 and 98): 4:2:0 at every quality, as
 * libvips writes with subsample_mode on, from either sampling and at every scale (a 4:2:0
 * file's chroma at full scale is already the output's: the path takes it). */
START_TEST(test_jpegfast_420_at_any_quality)
{
    static const int qualities[] = {95, 98};
    opts.jpeg_420 = true;
    for (sampling_t s = S_420; s <= S_444; s++) {
        char src[512];
        check_qualities(s, src, sizeof(src), qualities, 2, sizeof(qboxes) / sizeof(qboxes[0]));
    }
    opts.jpeg_420 = false;
    q = Q;
    opts.jpeg_quality = Q;
}
END_TEST

/* The chroma grid on the luma's: resized lengths that are odd (990x693 from 1000x700, 249,
 * 250x175), a stored width that is odd at full scale (1035 px, whose chroma is 518 samples
 * for 517.5), crops that start at odd offsets, on colour waves (review of 5384a0b: the
 * chroma was a quarter sample off in each of these, 2.75 dB under libvips' JPEG at
 * 990x693); a 5x4 output, whose last chroma column covers one luma column. */
START_TEST(test_jpegfast_chroma_lands_on_the_luma)
{
    static const struct {
        int w, h;
        imgproc_op_t op;
        uint32_t bw, bh;
    } cases[] = {
        {1000, 700, IMGPROC_OP_FIT, 990, 5000}, {1035, 700, IMGPROC_OP_FIT, 1000, 0},
        {1000, 700, IMGPROC_OP_FIT, 249, 0},    {1000, 700, IMGPROC_OP_FIT, 250, 175},
        {1000, 700, IMGPROC_OP_COVER, 201, 77}, {1035, 701, IMGPROC_OP_COVER, 333, 111},
        {1035, 701, IMGPROC_OP_FIT, 517, 517},  {37, 29, IMGPROC_OP_FIT, 5, 5},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char src[512];
        snprintf(src, sizeof(src), "%s/waves-%dx%d.jpg", tmpdir, cases[i].w, cases[i].h);
        make_jpeg(S_WAVES, cases[i].w, cases[i].h, src, NULL);
        check_box(src, S_WAVES, cases[i].op, cases[i].bw, cases[i].bh);
    }
    /* under 4 px on a side: libvips' (its chroma is the one output pixel's) */
    char src[512];
    snprintf(src, sizeof(src), "%s/waves-37x1.jpg", tmpdir);
    make_jpeg(S_WAVES, 37, 1, src, NULL);
    imgproc_job_t job = {
        .op = IMGPROC_OP_FIT, .width = 1, .height = 1, .out_fmt = IMGPROC_FMT_JPEG};
    imgproc__plan_t pl;
    mem_t m = {0};
    ck_assert_int_eq(run_fast(src, &job, &pl, &m, NULL), IMGPROC__JPEGFAST_DECLINED);
    free(m.buf);
}
END_TEST

/* What the path does not take or must stop on. */
START_TEST(test_jpegfast_refuses_and_stops)
{
    char src[512], cut[512], prog[512], dst[600];
    snprintf(src, sizeof(src), "%s/whole.jpg", tmpdir);
    snprintf(cut, sizeof(cut), "%s/cut.jpg", tmpdir);
    snprintf(prog, sizeof(prog), "%s/prog.jpg", tmpdir);
    snprintf(dst, sizeof(dst), "%s/out.jpg", tmpdir);
    make_jpeg(S_420, 1200, 900, src, NULL);
    imgproc_job_t job = {
        .op = IMGPROC_OP_FIT, .width = 200, .height = 200, .out_fmt = IMGPROC_FMT_JPEG};
    imgproc__plan_t pl;
    imgproc_probe_t probe;
    imgproc_err_t err;
    imgproc_out_t out;

    /* the deadline: stops with TIMEOUT; a write that fails: IO */
    mem_t m = {0};
    ck_assert_int_eq(run_fast(src, &job, &pl, &m, yes), -IMGPROC_E_TIMEOUT);
    m.fail = true;
    ck_assert_int_eq(run_fast(src, &job, &pl, &m, NULL), -IMGPROC_E_IO);
    free(m.buf);

    /* cut in its scan data: the path hands the file to libvips, which refuses it as
     * before (never a grey half-image) */
    size_t len;
    char *buf = tg_read_file(src, &len);
    tg_write_file(cut, buf, len * 6 / 10);
    free(buf);
    m = (mem_t){0};
    ck_assert_int_eq(run_fast(cut, &job, &pl, &m, NULL), IMGPROC__JPEGFAST_DECLINED);
    free(m.buf);
    ck_assert_int_eq(imgproc_run(cut, &job, &opts, dst, &out, &err), -IMGPROC_E_CORRUPT);

    /* not taken: a smart crop, other output formats, a progressive file */
    ck_assert_int_eq(imgproc_probe_file(src, &probe, &err), 0);
    ck_assert(imgproc__jpegfast_takes(&probe, &job, &pl));
    imgproc_job_t other = job;
    other.out_fmt = IMGPROC_FMT_WEBP;
    ck_assert(!imgproc__jpegfast_takes(&probe, &other, &pl));
    other = job;
    other.op = IMGPROC_OP_SMART;
    ck_assert_int_eq(imgproc__plan(&probe, &other, &pl), 0);
    ck_assert(!imgproc__jpegfast_takes(&probe, &other, &pl));
    make_jpeg(S_420, 1200, 900, prog, "progressive");
    ck_assert_int_eq(imgproc_probe_file(prog, &probe, &err), 0);
    ck_assert_int_eq(imgproc__plan(&probe, &job, &pl), 0);
    ck_assert(!imgproc__jpegfast_takes(&probe, &job, &pl));
    ck_assert_int_eq(imgproc_run(prog, &job, &opts, dst, &out, &err), 0);
    ck_assert_uint_eq(out.width, 200);
}
END_TEST

/* Damaged files, the fast path's adversary: bytes of a baseline JPEG overwritten at spread
 * positions (markers and tables in the first KiB, scan data after), one at a time. Each
 * through imgproc_run() ends as libvips alone would end it: the same success or failure
 * and the same dimensions (the path hands every file libjpeg warns about to libvips), and
 * never a crash (the suite runs under ASan in `make check-asan`). */
START_TEST(test_jpegfast_damaged_files_end_as_libvips_ends_them)
{
    char src[512], bad[512], dst[600];
    snprintf(src, sizeof(src), "%s/whole.jpg", tmpdir);
    snprintf(bad, sizeof(bad), "%s/bad.jpg", tmpdir);
    snprintf(dst, sizeof(dst), "%s/out.jpg", tmpdir);
    make_jpeg(S_420, 700, 500, src, NULL);
    size_t len;
    char *whole = tg_read_file(src, &len);
    char *buf = malloc(len);
    ck_assert_ptr_nonnull(buf);
    imgproc_job_t job = {
        .op = IMGPROC_OP_FIT, .width = 150, .height = 0, .out_fmt = IMGPROC_FMT_JPEG};
    int fast_ok = 0, failed = 0;
    uint32_t rnd = 12345;
    for (int i = 0; i < 120; i++) {
        rnd = rnd * 1103515245u + 12345u;
        size_t at = i < 40 ? 2 + (rnd >> 8) % 1024 : 1024 + (rnd >> 8) % (len - 1026);
        memcpy(buf, whole, len);
        buf[at] = (char)(rnd >> 24);
        tg_write_file(bad, buf, len);

        imgproc_out_t out;
        imgproc_err_t err;
        int rc = imgproc_run(bad, &job, &opts, dst, &out, &err);
        /* libvips on its own: vips_thumbnail with run.c's load option, encoded */
        VipsImage *ref = NULL;
        void *vbuf = NULL;
        size_t vlen;
        imgproc_probe_t probe;
        char opt[600];
        snprintf(opt, sizeof(opt), "%s[fail_on=error]", bad);
        int vrc = imgproc_probe_file(bad, &probe, &err) != 0 ? -1
                  : vips_thumbnail(opt, &ref, 150, "height", 10000000, "size", VIPS_SIZE_DOWN,
                                   "no_rotate", TRUE, NULL) != 0
                      ? -1
                      : vips_jpegsave_buffer(ref, &vbuf, &vlen, "Q", Q, "strip", TRUE, NULL);
        vips_error_clear();
        ck_assert_msg((rc == 0) == (vrc == 0), "byte %zu = %d: imgproc_run %d (%s), libvips %d", at,
                      (unsigned char)buf[at], rc, rc ? err.msg : "", vrc);
        if (rc == 0) {
            ck_assert_int_eq(out.width, ref->Xsize);
            ck_assert_int_eq(out.height, ref->Ysize);
            fast_ok++;
        } else {
            ck_assert_msg(rc == -IMGPROC_E_CORRUPT || rc == -IMGPROC_E_UNSUPPORTED ||
                              rc == -IMGPROC_E_TOO_LARGE,
                          "byte %zu: %d %s", at, rc, err.msg);
            failed++;
        }
        VIPS_UNREF(ref);
        g_free(vbuf);
    }
    fprintf(stderr, "jpegfast damaged files: %d made, %d refused\n", fast_ok, failed);
    ck_assert_int_gt(fast_ok, 0);
    ck_assert_int_gt(failed, 0);
    free(buf);
    free(whole);
}
END_TEST

Suite *jpegfast_suite(void);
Suite *jpegfast_suite(void)
{
    Suite *s = suite_create("jpegfast");
    TCase *tc = tcase_create("jpegfast");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, test_jpegfast_matches_libvips_every_sampling_and_box, 0, S_WAVES);
    tcase_add_test(tc, test_jpegfast_chroma_lands_on_the_luma);
    tcase_add_test(tc, test_jpegfast_full_chroma_from_90);
    tcase_add_test(tc, test_jpegfast_420_at_any_quality);
    tcase_add_test(tc, test_jpegfast_refuses_and_stops);
    tcase_add_test(tc, test_jpegfast_damaged_files_end_as_libvips_ends_them);
    suite_add_tcase(s, tc);
    return s;
}
