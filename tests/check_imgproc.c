/* Check tests for imgproc: sniffing, the header probe on generated and hostile files,
 * the job plan, and imgproc_run's output (dimensions, format, orientation, metadata,
 * fidelity against a direct vips_thumbnail(), errors on truncated input). Every image is
 * generated in the test; libvips is initialised inside the forked child by the checked
 * fixture, never in the runner. */
#include <check.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include <orc/orc.h>

#include <vips/vips.h>

#include "imgproc/imgproc_internal.h"
#include "tests/tg_harness.h"

static char tmpdir[256];

static void setup(void)
{
    ck_assert_int_eq(imgproc_init("check_imgproc"), 0);
    tg_mkdtemp(tmpdir, sizeof(tmpdir), "check-imgproc");
}

static void teardown(void)
{
    ck_assert_int_eq(tg_rmtree(tmpdir), 0);
}

static const imgproc_opts_t opts = {
    .jpeg_quality = 90, .webp_quality = 90, .png_compression = 3, .keep_icc = false};

/* ---------------------------------------------------------------- helpers */

/* Path of @p name in the test's temp dir. The result lives in a ring of 32 buffers:
 * callers that keep a path across many calls copy it. */
static const char *tpath(const char *name)
{
    static char buf[32][512];
    static int i;
    i = (i + 1) % 32;
    snprintf(buf[i], sizeof(buf[i]), "%s/%s", tmpdir, name);
    return buf[i];
}

/* A smooth photo-like uchar image (gradients plus a gentle sine pattern). */
static VipsImage *content(int w, int h, int bands, bool alpha)
{
    VipsImage *ctx = vips_image_new();
    VipsImage **t = (VipsImage **)vips_object_local_array(VIPS_OBJECT(ctx), 12);
    ck_assert_int_eq(vips_xyz(&t[0], w, h, NULL), 0);
    ck_assert_int_eq(vips_extract_band(t[0], &t[1], 0, NULL), 0);
    ck_assert_int_eq(vips_extract_band(t[0], &t[2], 1, NULL), 0);
    ck_assert_int_eq(vips_linear1(t[1], &t[3], 200.0 / w, 20, NULL), 0);
    ck_assert_int_eq(vips_linear1(t[2], &t[4], 200.0 / h, 30, NULL), 0);
    ck_assert_int_eq(vips_sines(&t[5], w, h, "hfreq", 2.0, "vfreq", 1.5, NULL), 0);
    ck_assert_int_eq(vips_linear1(t[5], &t[6], 60, 128, NULL), 0);
    VipsImage *rgb[3] = {t[3], t[4], t[6]};
    ck_assert_int_eq(vips_bandjoin(rgb, &t[7], 3, NULL), 0);
    VipsImage *img = t[7];
    if (bands == 1) {
        ck_assert_int_eq(vips_extract_band(img, &t[8], 0, NULL), 0);
        img = t[8];
    }
    if (alpha) {
        ck_assert_int_eq(vips_linear1(t[1], &t[9], 255.0 / w, 0, NULL), 0);
        ck_assert_int_eq(vips_bandjoin2(img, t[9], &t[10], NULL), 0);
        img = t[10];
    }
    VipsImage *out;
    ck_assert_int_eq(vips_cast(img, &out, VIPS_FORMAT_UCHAR, NULL), 0);
    g_object_unref(ctx);
    return out;
}

typedef enum {
    G_JPEG,
    G_JPEG_PROG,
    G_JPEG444,
    G_PNG,
    G_PNG_INTERLACED,
    G_WEBP,
    G_WEBP_LOSSLESS
} gen_t;

/* Saves @p img as @p kind to @p path, with EXIF orientation @p orient (1 = none). */
static void save_as(VipsImage *img, gen_t kind, int orient, const char *path)
{
    VipsImage *c;
    ck_assert_int_eq(vips_copy(img, &c, NULL), 0);
    if (orient != 1)
        vips_image_set_int(c, VIPS_META_ORIENTATION, orient);
    gboolean strip = orient == 1;
    int rc = -1;
    switch (kind) {
    case G_JPEG:
    case G_JPEG_PROG:
    case G_JPEG444:
        rc = vips_jpegsave(
            c, path, "Q", 95, "strip", strip, "interlace", kind == G_JPEG_PROG, "subsample_mode",
            kind == G_JPEG444 ? VIPS_FOREIGN_SUBSAMPLE_OFF : VIPS_FOREIGN_SUBSAMPLE_ON, NULL);
        break;
    case G_PNG:
    case G_PNG_INTERLACED:
        rc = vips_pngsave(c, path, "strip", strip, "interlace", kind == G_PNG_INTERLACED, NULL);
        break;
    case G_WEBP:
        rc = vips_webpsave(c, path, "Q", 95, "strip", strip, NULL);
        break;
    case G_WEBP_LOSSLESS:
        rc = vips_webpsave(c, path, "lossless", TRUE, "strip", strip, NULL);
        break;
    }
    ck_assert_msg(rc == 0, "save %s: %s", path, vips_error_buffer());
    g_object_unref(c);
}

static const char *gen(const char *name, gen_t kind, int w, int h, int bands, bool alpha,
                       int orient)
{
    const char *p = tpath(name);
    VipsImage *img = content(w, h, bands, alpha);
    save_as(img, kind, orient, p);
    g_object_unref(img);
    return p;
}

/* Copies the first @p keep bytes of @p src to a new file. */
static const char *truncated_copy(const char *src, const char *name, size_t keep)
{
    size_t len;
    void *buf = tg_read_file(src, &len);
    ck_assert_uint_lt(keep, len);
    const char *p = tpath(name);
    tg_write_file(p, buf, keep);
    free(buf);
    return p;
}

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = v >> 24;
    p[1] = v >> 16;
    p[2] = v >> 8;
    p[3] = v;
}

/* Appends a PNG chunk (length, type, data, CRC) at @p p; returns bytes written. */
static size_t png_chunk(uint8_t *p, const char *type, const void *data, uint32_t len)
{
    put_be32(p, len);
    memcpy(p + 4, type, 4);
    if (len)
        memcpy(p + 8, data, len);
    uLong crc = crc32(0L, Z_NULL, 0);
    crc = crc32(crc, p + 4, len + 4);
    put_be32(p + 8 + len, (uint32_t)crc);
    return 12 + len;
}

/* A minimal big-endian TIFF/EXIF block holding only IFD0 Orientation = @p v. */
static size_t exif_block(uint8_t *p, bool prefix, uint16_t v)
{
    size_t n = 0;
    if (prefix) {
        memcpy(p, "Exif\0\0", 6);
        n = 6;
    }
    static const uint8_t tiff[] = {'M',  'M',  0, 42, 0, 0, 0, 8,             /* IFD0 at 8 */
                                   0,    1,                                   /* one entry */
                                   0x01, 0x12, 0, 3,  0, 0, 0, 1, 0, 0, 0, 0, /* SHORT x1 */
                                   0,    0,    0, 0};
    memcpy(p + n, tiff, sizeof(tiff));
    p[n + 18] = v >> 8;
    p[n + 19] = v & 0xFF;
    return n + sizeof(tiff);
}

/* A JPEG whose first segment after SOI is an EXIF APP1 with orientation @p v. */
static const char *jpeg_with_orientation(const char *src, const char *name, uint16_t v)
{
    size_t len;
    uint8_t *in = tg_read_file(src, &len);
    uint8_t *out = malloc(len + 64);
    uint8_t ex[64];
    size_t en = exif_block(ex, true, v);
    memcpy(out, in, 2);
    out[2] = 0xFF;
    out[3] = 0xE1;
    out[4] = (en + 2) >> 8;
    out[5] = (en + 2) & 0xFF;
    memcpy(out + 6, ex, en);
    memcpy(out + 6 + en, in + 2, len - 2);
    const char *p = tpath(name);
    tg_write_file(p, out, len + 4 + en);
    free(in);
    free(out);
    return p;
}

/* A PNG with an eXIf chunk (orientation @p v) inserted right after IHDR. */
static const char *png_with_orientation(const char *src, const char *name, uint16_t v)
{
    size_t len;
    uint8_t *in = tg_read_file(src, &len);
    uint8_t *out = malloc(len + 64);
    uint8_t ex[64];
    size_t en = exif_block(ex, false, v);
    size_t head = 8 + 25; /* signature + IHDR chunk */
    memcpy(out, in, head);
    size_t n = png_chunk(out + head, "eXIf", ex, (uint32_t)en);
    memcpy(out + head + n, in + head, len - head);
    const char *p = tpath(name);
    tg_write_file(p, out, len + n);
    free(in);
    free(out);
    return p;
}

static imgproc_fmt_t file_magic(const char *path)
{
    uint8_t head[16] = {0};
    FILE *f = fopen(path, "rb");
    ck_assert_ptr_nonnull(f);
    size_t n = fread(head, 1, sizeof(head), f);
    fclose(f);
    return imgproc_sniff(head, n);
}

static off_t file_size(const char *path)
{
    struct stat st;
    ck_assert_int_eq(stat(path, &st), 0);
    return st.st_size;
}

static VipsImage *load(const char *path)
{
    VipsImage *img = vips_image_new_from_file(path, "access", VIPS_ACCESS_RANDOM, NULL);
    ck_assert_msg(img != NULL, "load %s: %s", path, vips_error_buffer());
    return img;
}

/* Runs a job and checks the universal post-conditions: success, output format by magic,
 * reported size and bytes, dimensions exactly as imgproc_output_dims() promised. */
static void run_ok(const char *src, imgproc_job_t job, const char *dst, uint32_t ew, uint32_t eh)
{
    imgproc_probe_t p;
    imgproc_err_t err;
    imgproc_out_t out;
    ck_assert_int_eq(imgproc_probe_file(src, &p, &err), 0);
    uint32_t pw, ph;
    imgproc_output_dims(&p, &job, &pw, &ph);
    int rc = imgproc_run(src, &job, &opts, dst, &out, &err);
    ck_assert_msg(rc == 0, "run %s: %s", src, err.msg);
    ck_assert_int_eq(file_magic(dst), job.out_fmt);
    ck_assert_uint_eq(out.bytes, (uint64_t)file_size(dst));
    ck_assert_uint_eq(out.width, pw);
    ck_assert_uint_eq(out.height, ph);
    ck_assert_uint_eq(out.width, ew);
    ck_assert_uint_eq(out.height, eh);
    VipsImage *img = load(dst);
    ck_assert_int_eq(img->Xsize, (int)ew);
    ck_assert_int_eq(img->Ysize, (int)eh);
    g_object_unref(img);
}

/* ---------------------------------------------------------------- sniffing and names */

/* Issue 15's inputs: the probe agrees with libvips' own header read (size, bands, pages) for
 * files libvips wrote, without decoding; multi-frame GIFs and multi-page TIFFs are counted;
 * a header cut short is CORRUPT. */
static void probe_matches_vips(const char *path, imgproc_fmt_t fmt, uint32_t pages)
{
    imgproc_probe_t p;
    imgproc_err_t err;
    ck_assert_msg(imgproc_probe_file(path, &p, &err) == 0, "%s: %s", path, err.msg);
    ck_assert_int_eq(p.fmt, fmt);
    VipsImage *im = vips_image_new_from_file(path, NULL);
    ck_assert_ptr_nonnull(im);
    ck_assert_uint_eq(p.width, (uint32_t)vips_image_get_width(im));
    ck_assert_uint_eq(p.height, (uint32_t)vips_image_get_page_height(im));
    ck_assert_uint_eq(p.bands, (uint32_t)vips_image_get_bands(im));
    ck_assert_uint_eq(p.pages, pages);
    g_object_unref(im);
}

START_TEST(test_imgproc_probe_gif_tiff_heif)
{
    VipsImage *rgb = content(321, 123, 3, false), *rgba = content(200, 150, 3, true);
    ck_assert_int_eq(vips_gifsave(rgb, tpath("a.gif"), NULL), 0);
    ck_assert_int_eq(
        vips_tiffsave(rgb, tpath("a.tif"), "compression", VIPS_FOREIGN_TIFF_COMPRESSION_LZW, NULL),
        0);
    ck_assert_int_eq(vips_tiffsave(rgba, tpath("t.tif"), "tile", TRUE, NULL), 0);
    ck_assert_int_eq(vips_heifsave(rgb, tpath("a.heic"), NULL), 0);
    ck_assert_int_eq(vips_heifsave(rgba, tpath("a.avif"), "compression",
                                   VIPS_FOREIGN_HEIF_COMPRESSION_AV1, NULL),
                     0);
    probe_matches_vips(tpath("a.gif"), IMGPROC_FMT_GIF, 1);
    probe_matches_vips(tpath("a.tif"), IMGPROC_FMT_TIFF, 1);
    probe_matches_vips(tpath("t.tif"), IMGPROC_FMT_TIFF, 1);
    probe_matches_vips(tpath("a.heic"), IMGPROC_FMT_HEIC, 1);
    probe_matches_vips(tpath("a.avif"), IMGPROC_FMT_AVIF, 1);

    /* five frames / five pages, 64 lines each */
    VipsImage *strip = content(80, 320, 3, false);
    VipsImage *anim = NULL;
    ck_assert_int_eq(vips_copy(strip, &anim, NULL), 0);
    vips_image_set_int(anim, VIPS_META_PAGE_HEIGHT, 64);
    ck_assert_int_eq(vips_gifsave(anim, tpath("five.gif"), NULL), 0);
    ck_assert_int_eq(vips_tiffsave(anim, tpath("five.tif"), NULL), 0);
    probe_matches_vips(tpath("five.gif"), IMGPROC_FMT_GIF, 5);
    probe_matches_vips(tpath("five.tif"), IMGPROC_FMT_TIFF, 5);

    /* cut inside the header: corrupt, never a guess */
    imgproc_probe_t p;
    imgproc_err_t err;
    static const char *const names[] = {"a.gif", "a.tif", "a.heic", "a.avif"};
    for (size_t i = 0; i < 4; i++) {
        char cut[32];
        snprintf(cut, sizeof(cut), "cut-%s", names[i]);
        ck_assert_msg(imgproc_probe_file(truncated_copy(tpath(names[i]), cut, 40), &p, &err) ==
                          -IMGPROC_E_CORRUPT,
                      "%s: %s", names[i], err.msg);
    }

    /* A version-1 pitm names the primary item with 32 bits instead of 16 (ISO/IEC 14496-12
     * 8.11.4): rewrite libheif's version-0 box and grow it and its meta box by two bytes. */
    size_t alen;
    uint8_t *a = tg_read_file(tpath("a.avif"), &alen);
    uint8_t *pitm = memmem(a, alen, "pitm", 4), *meta = memmem(a, alen, "meta", 4);
    ck_assert_ptr_nonnull(pitm);
    ck_assert_ptr_nonnull(meta);
    ck_assert_uint_eq(pitm[4], 0);
    size_t at = (size_t)(pitm - a), mt = (size_t)(meta - a);
    uint8_t *v1 = malloc(alen + 2);
    memcpy(v1, a, at + 8);
    v1[at + 4] = 1;
    put_be32(v1 + at + 8, (uint32_t)a[at + 8] << 8 | a[at + 9]);
    memcpy(v1 + at + 12, a + at + 10, alen - at - 10);
    put_be32(v1 + at - 4, 8 + 4 + 4);
    put_be32(v1 + mt - 4, ((uint32_t)a[mt - 4] << 24 | (uint32_t)a[mt - 3] << 16 |
                           (uint32_t)a[mt - 2] << 8 | a[mt - 1]) + 2);
    ck_assert_msg(imgproc_probe_buf(v1, alen + 2, &p, &err) == 0, "pitm v1: %s", err.msg);
    ck_assert_uint_eq(p.width, 200);
    ck_assert_uint_eq(p.height, 150);
    /* The fuzzer's case: a version-1 pitm with room for a 16-bit id only, ending the buffer
     * (meta size 0 runs to the end). Corrupt, and nothing read past the buffer (ASan). */
    uint8_t *cut = malloc(at + 10);
    memcpy(cut, v1, at + 10);
    put_be32(cut + mt - 4, 0);
    put_be32(cut + at - 4, 8 + 4 + 2);
    ck_assert_int_eq(imgproc_probe_buf(cut, at + 10, &p, &err), -IMGPROC_E_CORRUPT);
    free(cut);
    free(v1);
    free(a);
    g_object_unref(anim);
    g_object_unref(strip);
    g_object_unref(rgba);
    g_object_unref(rgb);
}
END_TEST

START_TEST(test_imgproc_sniff_detects_magic)
{
    static const uint8_t jpg[] = {0xFF, 0xD8, 0xFF, 0xE0};
    static const uint8_t png[] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n', 0, 0, 0, 13};
    static const uint8_t webp[] = {'R', 'I', 'F', 'F', 1, 0, 0, 0, 'W', 'E', 'B', 'P'};
    static const uint8_t gif[] = {'G', 'I', 'F', '8', '9', 'a', 1, 0, 1, 0, 0, 0};
    static const uint8_t riff_wav[] = {'R', 'I', 'F', 'F', 1, 0, 0, 0, 'W', 'A', 'V', 'E'};
    ck_assert_int_eq(imgproc_sniff(jpg, sizeof(jpg)), IMGPROC_FMT_JPEG);
    ck_assert_int_eq(imgproc_sniff(png, sizeof(png)), IMGPROC_FMT_PNG);
    ck_assert_int_eq(imgproc_sniff(webp, sizeof(webp)), IMGPROC_FMT_WEBP);
    ck_assert_int_eq(imgproc_sniff(gif, sizeof(gif)), IMGPROC_FMT_GIF);
    ck_assert_int_eq(imgproc_sniff("II*\0\x08\0\0\0", 8), IMGPROC_FMT_TIFF);
    ck_assert_int_eq(imgproc_sniff("MM\0*\0\0\0\x08", 8), IMGPROC_FMT_TIFF);
    ck_assert_int_eq(imgproc_sniff("\0\0\0\x18"
                                   "ftypheic\0\0\0\0mif1heic",
                                   24),
                     IMGPROC_FMT_HEIC);
    /* mif1 major brand with avif among the compatible ones: AVIF */
    ck_assert_int_eq(imgproc_sniff("\0\0\0\x18"
                                   "ftypmif1\0\0\0\0mif1avif",
                                   24),
                     IMGPROC_FMT_AVIF);
    ck_assert_int_eq(imgproc_sniff("\0\0\0\x14"
                                   "ftypisom\0\0\0\0mp41",
                                   20),
                     IMGPROC_FMT_UNKNOWN);
    ck_assert_int_eq(imgproc_sniff("BM6\0\0\0\0\0\0\0", 10), IMGPROC_FMT_UNKNOWN);
    ck_assert_int_eq(imgproc_sniff(riff_wav, sizeof(riff_wav)), IMGPROC_FMT_UNKNOWN);
    ck_assert_int_eq(imgproc_sniff(jpg, 2), IMGPROC_FMT_UNKNOWN);
    ck_assert_int_eq(imgproc_sniff(png, 7), IMGPROC_FMT_UNKNOWN);
    ck_assert_int_eq(imgproc_sniff(NULL, 0), IMGPROC_FMT_UNKNOWN);
}
END_TEST

START_TEST(test_imgproc_fmt_helpers_roundtrip)
{
    ck_assert_str_eq(imgproc_fmt_name(IMGPROC_FMT_JPEG), "jpeg");
    ck_assert_str_eq(imgproc_fmt_name(IMGPROC_FMT_PNG), "png");
    ck_assert_str_eq(imgproc_fmt_name(IMGPROC_FMT_WEBP), "webp");
    ck_assert_ptr_null(imgproc_fmt_name(IMGPROC_FMT_UNKNOWN));
    ck_assert_str_eq(imgproc_fmt_mime(IMGPROC_FMT_WEBP), "image/webp");
    ck_assert_str_eq(imgproc_fmt_mime(IMGPROC_FMT_UNKNOWN), "application/octet-stream");
    ck_assert_int_eq(imgproc_fmt_from_ext("JPG", 3), IMGPROC_FMT_JPEG);
    ck_assert_int_eq(imgproc_fmt_from_ext("jpeg", 4), IMGPROC_FMT_JPEG);
    ck_assert_int_eq(imgproc_fmt_from_ext("pngx", 3), IMGPROC_FMT_PNG);
    ck_assert_int_eq(imgproc_fmt_from_ext("WebP", 4), IMGPROC_FMT_WEBP);
    ck_assert_int_eq(imgproc_fmt_from_ext("gif", 3), IMGPROC_FMT_GIF);
    ck_assert_int_eq(imgproc_fmt_from_ext("AVIF", 4), IMGPROC_FMT_AVIF);
    ck_assert_int_eq(imgproc_fmt_from_ext("jxl", 3), IMGPROC_FMT_JXL);
    /* input-only formats are no derived extension */
    ck_assert_int_eq(imgproc_fmt_from_ext("heic", 4), IMGPROC_FMT_UNKNOWN);
    ck_assert_int_eq(imgproc_fmt_from_ext("tiff", 4), IMGPROC_FMT_UNKNOWN);
    ck_assert_int_eq(imgproc_fmt_from_ext("gi", 2), IMGPROC_FMT_UNKNOWN);
    ck_assert_str_eq(imgproc_fmt_mime(IMGPROC_FMT_AVIF), "image/avif");
    ck_assert_str_eq(imgproc_fmt_mime(IMGPROC_FMT_JXL), "image/jxl");
    ck_assert(imgproc_fmt_is_output(IMGPROC_FMT_JXL) && !imgproc_fmt_is_output(IMGPROC_FMT_TIFF));
    ck_assert(imgproc_fmt_is_animated(IMGPROC_FMT_GIF) &&
              !imgproc_fmt_is_animated(IMGPROC_FMT_AVIF));
    ck_assert_int_eq(imgproc_fmt_from_ext("jp", 2), IMGPROC_FMT_UNKNOWN);
    ck_assert_str_eq(imgproc_strerror(-IMGPROC_E_CORRUPT), imgproc_strerror(IMGPROC_E_CORRUPT));
    ck_assert_str_ne(imgproc_strerror(IMGPROC_E_CORRUPT), imgproc_strerror(IMGPROC_E_IO));
}
END_TEST

/* ---------------------------------------------------------------- probe */

static imgproc_probe_t probe_ok(const char *path)
{
    imgproc_probe_t p, q;
    imgproc_err_t err;
    int rc = imgproc_probe_file(path, &p, &err);
    ck_assert_msg(rc == 0, "probe %s: %s", path, err.msg);
    size_t len;
    void *buf = tg_read_file(path, &len);
    ck_assert_int_eq(imgproc_probe_buf(buf, len, &q, &err), 0);
    free(buf);
    ck_assert_mem_eq(&p, &q, sizeof(p)); /* file and buffer probes agree */
    return p;
}

START_TEST(test_imgproc_probe_jpeg_variants)
{
    imgproc_probe_t p = probe_ok(gen("b.jpg", G_JPEG, 301, 199, 3, false, 1));
    ck_assert_int_eq(p.fmt, IMGPROC_FMT_JPEG);
    ck_assert_uint_eq(p.width, 301);
    ck_assert_uint_eq(p.height, 199);
    ck_assert_uint_eq(p.bands, 3);
    ck_assert_uint_eq(p.bit_depth, 8);
    ck_assert(!p.progressive);
    ck_assert(!p.has_alpha);
    ck_assert_uint_eq(p.pages, 1);
    ck_assert_uint_eq(p.orientation, 1);
    ck_assert_uint_eq(p.chroma_h, 2);
    ck_assert_uint_eq(p.chroma_v, 2);
    /* 4:2:0: Y 38x25 blocks rounded to 38x26, Cb/Cr 19x13 each, 128 bytes per block. */
    ck_assert_uint_eq(p._jpeg_coef_bytes, (38 * 26 + 2 * 19 * 13) * 128);

    p = probe_ok(gen("p.jpg", G_JPEG_PROG, 640, 480, 3, false, 6));
    ck_assert(p.progressive);
    ck_assert_uint_eq(p.orientation, 6);

    p = probe_ok(gen("f.jpg", G_JPEG444, 64, 64, 3, false, 1));
    ck_assert_uint_eq(p.chroma_h, 1);
    ck_assert_uint_eq(p.chroma_v, 1);

    p = probe_ok(gen("g.jpg", G_JPEG, 50, 40, 1, false, 1));
    ck_assert_uint_eq(p.bands, 1);
}
END_TEST

START_TEST(test_imgproc_probe_png_variants)
{
    imgproc_probe_t p = probe_ok(gen("rgb.png", G_PNG, 33, 17, 3, false, 1));
    ck_assert_int_eq(p.fmt, IMGPROC_FMT_PNG);
    ck_assert_uint_eq(p.width, 33);
    ck_assert_uint_eq(p.height, 17);
    ck_assert_uint_eq(p.bands, 3);
    ck_assert(!p.has_alpha && !p.progressive);

    p = probe_ok(gen("rgba.png", G_PNG_INTERLACED, 33, 17, 3, true, 1));
    ck_assert_uint_eq(p.bands, 4);
    ck_assert(p.has_alpha && p.progressive);

    p = probe_ok(gen("grey.png", G_PNG, 10, 10, 1, true, 1));
    ck_assert_uint_eq(p.bands, 2);

    /* Palette with transparency (tRNS) loads as RGBA in libvips. */
    VipsImage *img = content(20, 10, 3, true);
    const char *pal = tpath("pal.png");
    ck_assert_int_eq(vips_pngsave(img, pal, "palette", TRUE, "strip", TRUE, NULL), 0);
    g_object_unref(img);
    p = probe_ok(pal);
    ck_assert_uint_eq(p.bands, 4);
    ck_assert(p.has_alpha);
    VipsImage *l = load(pal);
    ck_assert_int_eq(l->Bands, 4);
    g_object_unref(l);

    /* 16-bit. */
    img = content(8, 8, 3, false);
    VipsImage *img16;
    ck_assert_int_eq(vips_colourspace(img, &img16, VIPS_INTERPRETATION_RGB16, NULL), 0);
    const char *p16 = tpath("16.png");
    ck_assert_int_eq(vips_pngsave(img16, p16, NULL), 0);
    g_object_unref(img16);
    g_object_unref(img);
    p = probe_ok(p16);
    ck_assert_uint_eq(p.bit_depth, 16);

    /* EXIF orientation from an eXIf chunk. */
    p = probe_ok(png_with_orientation(tpath("rgb.png"), "exif.png", 8));
    ck_assert_uint_eq(p.orientation, 8);
}
END_TEST

START_TEST(test_imgproc_probe_webp_variants)
{
    imgproc_probe_t p = probe_ok(gen("l.webp", G_WEBP, 123, 45, 3, false, 1));
    ck_assert_int_eq(p.fmt, IMGPROC_FMT_WEBP);
    ck_assert_uint_eq(p.width, 123);
    ck_assert_uint_eq(p.height, 45);
    ck_assert_uint_eq(p.bands, 3);
    ck_assert(!p.lossless && !p.has_alpha);

    p = probe_ok(gen("a.webp", G_WEBP, 64, 32, 3, true, 3));
    ck_assert_uint_eq(p.bands, 4);
    ck_assert(p.has_alpha);
    ck_assert_uint_eq(p.orientation, 3);
    ck_assert(p._flags & IMGPROC__F_WEBP_ALPH);

    p = probe_ok(gen("ll.webp", G_WEBP_LOSSLESS, 17, 9, 3, true, 1));
    ck_assert(p.lossless && p.has_alpha);
    ck_assert_uint_eq(p.width, 17);

    /* Animated: three 40x30 frames. */
    VipsImage *strip = content(40, 90, 3, false), *anim;
    ck_assert_int_eq(vips_copy(strip, &anim, NULL), 0);
    vips_image_set_int(anim, VIPS_META_PAGE_HEIGHT, 30);
    int delays[3] = {100, 100, 100};
    vips_image_set_array_int(anim, "delay", delays, 3);
    const char *ap = tpath("anim.webp");
    ck_assert_int_eq(vips_webpsave(anim, ap, "strip", TRUE, NULL), 0);
    g_object_unref(anim);
    g_object_unref(strip);
    p = probe_ok(ap);
    ck_assert_uint_eq(p.pages, 3);
    ck_assert_uint_eq(p.width, 40);
    ck_assert_uint_eq(p.height, 30);
}
END_TEST

START_TEST(test_imgproc_probe_orientation_absurd_is_one)
{
    const char *src = gen("o.jpg", G_JPEG, 40, 20, 3, false, 1);
    ck_assert_uint_eq(probe_ok(jpeg_with_orientation(src, "o5.jpg", 5)).orientation, 5);
    ck_assert_uint_eq(probe_ok(jpeg_with_orientation(src, "o0.jpg", 0)).orientation, 1);
    ck_assert_uint_eq(probe_ok(jpeg_with_orientation(src, "o9.jpg", 9)).orientation, 1);
    ck_assert_uint_eq(probe_ok(jpeg_with_orientation(src, "oz.jpg", 65535)).orientation, 1);
    /* And the job treats the absurd value as upright: same size, no rotation. */
    imgproc_job_t job = {.op = IMGPROC_OP_CONVERT,
                         .width = 0,
                         .height = 0,
                         .out_fmt = IMGPROC_FMT_PNG,
                         .naive = false};
    run_ok(tpath("oz.jpg"), job, tpath("oz.png"), 40, 20);
}
END_TEST

START_TEST(test_imgproc_probe_bomb_png_declares_50000)
{
    /* 50000x50000 RGB, one tiny IDAT: a decompression bomb's header. */
    uint8_t buf[256];
    size_t n = 0;
    memcpy(buf, "\x89PNG\r\n\x1a\n", 8);
    n = 8;
    uint8_t ihdr[13] = {0};
    put_be32(ihdr, 50000);
    put_be32(ihdr + 4, 50000);
    ihdr[8] = 8;
    ihdr[9] = 2;
    n += png_chunk(buf + n, "IHDR", ihdr, 13);
    static const uint8_t idat[] = {0x78, 0x9c, 0x63, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01};
    n += png_chunk(buf + n, "IDAT", idat, sizeof(idat));
    n += png_chunk(buf + n, "IEND", NULL, 0);
    const char *path = tpath("bomb.png");
    tg_write_file(path, buf, n);

    uint64_t before;
    imgproc_vips_mem(&before, NULL);
    imgproc_probe_t p = probe_ok(path);
    ck_assert_uint_eq(p.width, 50000);
    ck_assert_uint_eq(p.height, 50000);
    ck_assert_uint_eq(p.bands, 3);
    ck_assert_uint_eq(p.file_bytes, n);
    uint64_t after;
    imgproc_vips_mem(&after, NULL);
    ck_assert_uint_eq(before, after); /* the probe asked libvips for nothing */

    /* A naive decode would need 7.5 GB: the estimate says so before any pixel. */
    imgproc_job_t naive = {.op = IMGPROC_OP_FIT,
                           .width = 290,
                           .height = 290,
                           .out_fmt = IMGPROC_FMT_JPEG,
                           .naive = true};
    ck_assert_uint_ge(imgproc_estimate(&p, &naive), 50000ull * 50000 * 3);

    /* And if it were run anyway, the missing pixel data is an error, not a grey image. */
    imgproc_job_t job = {.op = IMGPROC_OP_FIT,
                         .width = 290,
                         .height = 290,
                         .out_fmt = IMGPROC_FMT_JPEG,
                         .naive = false};
    imgproc_err_t err;
    imgproc_out_t out;
    ck_assert_int_eq(imgproc_run(path, &job, &opts, tpath("bomb.jpg"), &out, &err),
                     -IMGPROC_E_CORRUPT);
}
END_TEST

START_TEST(test_imgproc_probe_rejects_hostile)
{
    imgproc_probe_t p;
    imgproc_err_t err;

    /* Zero bytes, in memory and on disk. */
    ck_assert_int_eq(imgproc_probe_buf(NULL, 0, &p, &err), -IMGPROC_E_UNSUPPORTED);
    ck_assert_int_eq(err.code, IMGPROC_E_UNSUPPORTED);
    tg_write_file(tpath("empty.jpg"), "", 0);
    ck_assert_int_eq(imgproc_probe_file(tpath("empty.jpg"), &p, &err), -IMGPROC_E_UNSUPPORTED);

    /* Wrong magic: a BMP and text named .jpg. */
    static const char bmp[] = "BM6\0\0\0\0\0\0\0\x36\0\0\0";
    ck_assert_int_eq(imgproc_probe_buf(bmp, sizeof(bmp), &p, &err), -IMGPROC_E_UNSUPPORTED);
    /* A GIF with a screen but no frame before its trailer. */
    static const char gif[] = "GIF89a\x01\x00\x01\x00\x80\x00\x00\xff\xff\xff\x00\x00\x00;";
    ck_assert_int_eq(imgproc_probe_buf(gif, sizeof(gif), &p, &err), -IMGPROC_E_CORRUPT);
    tg_write_file(tpath("text.jpg"), "hello, world\n", 13);
    ck_assert_int_eq(imgproc_probe_file(tpath("text.jpg"), &p, &err), -IMGPROC_E_UNSUPPORTED);

    /* Truncated inside the header. */
    const char *jpg = gen("t.jpg", G_JPEG, 64, 64, 3, false, 1);
    ck_assert_int_eq(imgproc_probe_file(truncated_copy(jpg, "t10.jpg", 10), &p, &err),
                     -IMGPROC_E_CORRUPT);
    const char *png = gen("t.png", G_PNG, 64, 64, 3, false, 1);
    ck_assert_int_eq(imgproc_probe_file(truncated_copy(png, "t20.png", 20), &p, &err),
                     -IMGPROC_E_CORRUPT);
    const char *webp = gen("t.webp", G_WEBP, 64, 64, 3, false, 1);
    ck_assert_int_eq(imgproc_probe_file(truncated_copy(webp, "t.webp2", 40), &p, &err),
                     -IMGPROC_E_CORRUPT);

    /* PNG with a broken IHDR CRC, zero width, bad colour type. */
    size_t len;
    uint8_t *b = tg_read_file(png, &len);
    b[29] ^= 0xFF; /* IHDR CRC */
    ck_assert_int_eq(imgproc_probe_buf(b, len, &p, &err), -IMGPROC_E_CORRUPT);
    b[29] ^= 0xFF;
    ck_assert_int_eq(imgproc_probe_buf(b, len, &p, &err), 0);
    uint8_t z[64];
    memcpy(z, b, 33);
    uint8_t ihdr[13];
    memcpy(ihdr, b + 16, 13);
    put_be32(ihdr, 0);
    png_chunk(z + 8, "IHDR", ihdr, 13);
    ck_assert_int_eq(imgproc_probe_buf(z, 33, &p, &err), -IMGPROC_E_CORRUPT);
    put_be32(ihdr, 64);
    ihdr[9] = 5;
    png_chunk(z + 8, "IHDR", ihdr, 13);
    ck_assert_int_eq(imgproc_probe_buf(z, 33, &p, &err), -IMGPROC_E_CORRUPT);
    free(b);

    /* JPEG whose SOF declares 12-bit samples, and one with zero height. */
    b = tg_read_file(jpg, &len);
    size_t sof = 2;
    while (sof + 4 < len && !(b[sof] == 0xFF && b[sof + 1] == 0xC0))
        sof++;
    ck_assert_uint_lt(sof + 4, len);
    b[sof + 4] = 12;
    ck_assert_int_eq(imgproc_probe_buf(b, len, &p, &err), -IMGPROC_E_UNSUPPORTED);
    b[sof + 4] = 8;
    b[sof + 5] = b[sof + 6] = 0;
    ck_assert_int_eq(imgproc_probe_buf(b, len, &p, &err), -IMGPROC_E_CORRUPT);
    free(b);

    /* Missing file. */
    ck_assert_int_eq(imgproc_probe_file(tpath("nope.jpg"), &p, &err), -IMGPROC_E_IO);
}
END_TEST

START_TEST(test_imgproc_probe_finds_sof_after_big_app_segments)
{
    /* 400 KB of APP13 segments before the SOF: past the 64 KiB prefix. */
    const char *src = gen("big.jpg", G_JPEG, 80, 60, 3, false, 1);
    size_t len;
    uint8_t *in = tg_read_file(src, &len);
    size_t pad = 7 * 65537;
    uint8_t *out = malloc(len + pad);
    memcpy(out, in, 2);
    size_t n = 2;
    for (int i = 0; i < 7; i++) {
        out[n] = 0xFF;
        out[n + 1] = 0xED;
        out[n + 2] = 0xFF;
        out[n + 3] = 0xFF;
        memset(out + n + 4, 'x', 65533);
        n += 65537;
    }
    memcpy(out + n, in + 2, len - 2);
    const char *path = tpath("bigapp.jpg");
    tg_write_file(path, out, n + len - 2);
    imgproc_probe_t p = probe_ok(path);
    ck_assert_uint_eq(p.width, 80);
    ck_assert_uint_eq(p.height, 60);
    free(in);
    free(out);
}
END_TEST

/* The probe reads the header, never the pixels: each image with everything past its first
 * 4 KiB zeroed (pixel data destroyed, length kept) still probes to the same size. (Its speed, ~10
 * us, is a benchmark figure, printed here and never asserted: make test runs on busy machines.) */
START_TEST(test_imgproc_probe_is_fast)
{
    const char *paths[3] = {gen("f.jpg", G_JPEG_PROG, 3000, 2000, 3, false, 6),
                            gen("f.png", G_PNG, 2000, 1500, 3, true, 1),
                            gen("f.webp", G_WEBP, 2000, 1500, 3, true, 1)};
    const char *cut[3] = {tpath("cut.jpg"), tpath("cut.png"), tpath("cut.webp")};
    for (int i = 0; i < 3; i++) {
        imgproc_probe_t p, q;
        imgproc_err_t err;
        ck_assert_int_eq(imgproc_probe_file(paths[i], &p, &err), 0);
        gsize len;
        gchar *data;
        ck_assert(g_file_get_contents(paths[i], &data, &len, NULL));
        ck_assert_uint_gt(len, 4096); /* the zeroing really destroys pixel data */
        memset(data + 4096, 0, len - 4096);
        tg_write_file(cut[i], data, len);
        g_free(data);
        ck_assert_msg(imgproc_probe_file(cut[i], &q, &err) == 0, "%s: %s", cut[i], err.msg);
        ck_assert_uint_eq(q.width, p.width);
        ck_assert_uint_eq(q.height, p.height);
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        for (int k = 0; k < 200; k++)
            ck_assert_int_eq(imgproc_probe_file(paths[i], &p, &err), 0);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double us = ((t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec)) / 1e3 / 200;
        fprintf(stderr, "%s: probe %.1f us\n", paths[i], us);
    }
}
END_TEST

/* ---------------------------------------------------------------- plan / dims / estimate */

static imgproc_probe_t fake(imgproc_fmt_t fmt, uint32_t w, uint32_t h, uint32_t orient)
{
    imgproc_probe_t p = {.fmt = fmt,
                         .width = w,
                         .height = h,
                         .bands = 3,
                         .bit_depth = 8,
                         .pages = 1,
                         .orientation = orient,
                         .chroma_h = 2,
                         .chroma_v = 2,
                         .file_bytes = (uint64_t)w * h / 4};
    p._jpeg_coef_bytes = (uint64_t)w * h * 3; /* 4:2:0: 1.5 samples/px, 2 bytes each */
    return p;
}

START_TEST(test_imgproc_output_dims_every_mode)
{
    static const struct {
        imgproc_fmt_t fmt;
        uint32_t w, h, o;
        imgproc_op_t op;
        uint32_t tw, th, ew, eh;
    } t[] = {
        {IMGPROC_FMT_JPEG, 6000, 4000, 1, IMGPROC_OP_FIT, 290, 290, 290, 193},
        {IMGPROC_FMT_PNG, 6000, 4000, 1, IMGPROC_OP_FIT, 290, 290, 290, 193},
        {IMGPROC_FMT_WEBP, 6000, 4000, 1, IMGPROC_OP_FIT, 290, 290, 290, 193},
        {IMGPROC_FMT_JPEG, 6000, 4000, 1, IMGPROC_OP_FIT, 290, 0, 290, 193},
        {IMGPROC_FMT_JPEG, 6000, 4000, 1, IMGPROC_OP_FIT, 0, 290, 435, 290},
        {IMGPROC_FMT_JPEG, 6000, 4000, 1, IMGPROC_OP_COVER, 290, 290, 290, 290},
        {IMGPROC_FMT_JPEG, 6000, 4000, 1, IMGPROC_OP_COVER, 100, 300, 100, 300},
        {IMGPROC_FMT_JPEG, 6000, 4000, 1, IMGPROC_OP_CONVERT, 0, 0, 6000, 4000},
        {IMGPROC_FMT_JPEG, 6000, 4000, 6, IMGPROC_OP_FIT, 290, 290, 193, 290},
        {IMGPROC_FMT_JPEG, 6000, 4000, 6, IMGPROC_OP_FIT, 290, 0, 290, 435},
        {IMGPROC_FMT_JPEG, 6000, 4000, 8, IMGPROC_OP_CONVERT, 0, 0, 4000, 6000},
        {IMGPROC_FMT_JPEG, 6000, 4000, 3, IMGPROC_OP_CONVERT, 0, 0, 6000, 4000},
        {IMGPROC_FMT_PNG, 100, 50, 1, IMGPROC_OP_FIT, 290, 290, 100, 50},      /* no upscaling */
        {IMGPROC_FMT_PNG, 100, 50, 1, IMGPROC_OP_COVER, 290, 290, 100, 50},    /* never enlarged */
        {IMGPROC_FMT_PNG, 1000, 200, 1, IMGPROC_OP_COVER, 290, 290, 290, 200}, /* crop only */
        {IMGPROC_FMT_PNG, 20000, 1, 1, IMGPROC_OP_COVER, 290, 290, 290, 1},
        {IMGPROC_FMT_PNG, 1, 20000, 1, IMGPROC_OP_COVER, 290, 290, 1, 290},
        {IMGPROC_FMT_PNG, 20000, 1, 1, IMGPROC_OP_FIT, 290, 290, 290, 1},
        {IMGPROC_FMT_PNG, 20000, 1, 1, IMGPROC_OP_FIT, 0, 290, 20000, 1},
        {IMGPROC_FMT_JPEG, 20000, 2, 6, IMGPROC_OP_COVER, 100, 300, 2, 300},
        {IMGPROC_FMT_JPEG, 1, 10000, 1, IMGPROC_OP_FIT, 290, 290, 1, 290},
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        imgproc_probe_t p = fake(t[i].fmt, t[i].w, t[i].h, t[i].o);
        imgproc_job_t job = {.op = t[i].op,
                             .width = t[i].tw,
                             .height = t[i].th,
                             .out_fmt = IMGPROC_FMT_JPEG,
                             .naive = false};
        uint32_t w, h;
        imgproc_output_dims(&p, &job, &w, &h);
        ck_assert_msg(w == t[i].ew && h == t[i].eh, "case %zu: %ux%u, expected %ux%u", i, w, h,
                      t[i].ew, t[i].eh);
    }
    /* Bad jobs give 0x0 and a zero estimate. */
    imgproc_probe_t p = fake(IMGPROC_FMT_JPEG, 600, 400, 1);
    imgproc_job_t bad[] = {
        {.op = IMGPROC_OP_FIT,
         .width = 0,
         .height = 0,
         .out_fmt = IMGPROC_FMT_JPEG,
         .naive = false},
        {.op = IMGPROC_OP_COVER,
         .width = 290,
         .height = 0,
         .out_fmt = IMGPROC_FMT_JPEG,
         .naive = false},
        {.op = (imgproc_op_t)42, .width = 290, .height = 290, .out_fmt = IMGPROC_FMT_JPEG}};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        uint32_t w = 1, h = 1;
        imgproc_output_dims(&p, &bad[i], &w, &h);
        ck_assert_uint_eq(w, 0);
        ck_assert_uint_eq(h, 0);
        ck_assert_uint_eq(imgproc_estimate(&p, &bad[i]), 0);
    }
}
END_TEST

START_TEST(test_imgproc_plan_shrink_on_load)
{
    imgproc__plan_t pl;
    imgproc_job_t job = {.op = IMGPROC_OP_FIT,
                         .width = 290,
                         .height = 290,
                         .out_fmt = IMGPROC_FMT_JPEG,
                         .naive = false};
    imgproc_probe_t p = fake(IMGPROC_FMT_JPEG, 6000, 4000, 1);
    ck_assert_int_eq(imgproc__plan(&p, &job, &pl), 0);
    ck_assert_uint_eq(pl.jpeg_shrink, 8); /* shrink 20.7 -> libjpeg 1/8 */
    ck_assert_uint_eq(pl.load_w, 750);
    job.width = job.height = 1200;
    ck_assert_int_eq(imgproc__plan(&p, &job, &pl), 0);
    ck_assert_uint_eq(pl.jpeg_shrink, 2); /* shrink 5 -> 1/2 */
    job.naive = true;
    ck_assert_int_eq(imgproc__plan(&p, &job, &pl), 0);
    ck_assert_uint_eq(pl.jpeg_shrink, 1);
    p.fmt = IMGPROC_FMT_WEBP;
    job.naive = false;
    ck_assert_int_eq(imgproc__plan(&p, &job, &pl), 0);
    ck_assert_uint_eq(pl.load_w, 1200); /* libwebp scales straight to the target */
    p._flags = IMGPROC__F_WEBP_NOSCALE;
    ck_assert_int_eq(imgproc__plan(&p, &job, &pl), 0);
    ck_assert_uint_eq(pl.load_w, 6000);
    p.fmt = IMGPROC_FMT_PNG;
    ck_assert_int_eq(imgproc__plan(&p, &job, &pl), 0);
    ck_assert_uint_eq(pl.load_w, 6000);
}
END_TEST

START_TEST(test_imgproc_estimate_orders_costs)
{
    imgproc_job_t fit = {.op = IMGPROC_OP_FIT,
                         .width = 290,
                         .height = 290,
                         .out_fmt = IMGPROC_FMT_JPEG,
                         .naive = false};
    imgproc_probe_t base = fake(IMGPROC_FMT_JPEG, 6000, 4000, 1), prog = base;
    prog.progressive = true;
    uint64_t eb = imgproc_estimate(&base, &fit), ep = imgproc_estimate(&prog, &fit);
    /* Baseline with 1/8 shrink-on-load is far below w*h*bands; progressive is above it
     * (libjpeg's coefficient buffer: 2 bytes x 1.5 samples per pixel). */
    ck_assert_uint_lt(eb, 6000ull * 4000 * 3 / 4);
    ck_assert_uint_ge(ep, prog._jpeg_coef_bytes);
    ck_assert_uint_gt(ep, 6000ull * 4000 * 3);
    imgproc_job_t naive = fit;
    naive.naive = true;
    ck_assert_uint_ge(imgproc_estimate(&base, &naive), 6000ull * 4000 * 3);
    /* Interlaced PNG buffers the whole image; plain PNG streams. */
    imgproc_probe_t png = fake(IMGPROC_FMT_PNG, 4000, 4000, 1), ipng = png;
    ipng.progressive = true;
    ck_assert_uint_gt(imgproc_estimate(&ipng, &fit), imgproc_estimate(&png, &fit));
    ck_assert_uint_ge(imgproc_estimate(&ipng, &fit), 4000ull * 4000 * 3);
    /* Full-size rotation needs the whole output in memory. */
    imgproc_job_t conv = {.op = IMGPROC_OP_CONVERT,
                          .width = 0,
                          .height = 0,
                          .out_fmt = IMGPROC_FMT_JPEG,
                          .naive = false};
    imgproc_probe_t rot = base;
    rot.orientation = 6;
    ck_assert_uint_ge(imgproc_estimate(&rot, &conv), 6000ull * 4000 * 3);
    ck_assert_uint_gt(imgproc_estimate(&rot, &conv), imgproc_estimate(&base, &conv));
}
END_TEST

START_TEST(test_imgproc_plan_never_enlarges_and_is_bounded)
{
    /* The issue-12 job: a 1-pixel strip as a cover crop was planned 5.8 million pixels
     * wide and estimated at 5.25 GB. Now every image of the pipeline stays within the
     * source, whatever the mode and box. */
    static const uint32_t shapes[][2] = {{20000, 1}, {1, 20000}, {20000, 2}, {3, 9000}, {100, 50}};
    static const uint32_t boxes[][2] = {{290, 290}, {2000, 2000}, {1, 1}, {16384, 16384}, {5, 900}};
    for (size_t i = 0; i < sizeof(shapes) / sizeof(shapes[0]); i++)
        for (size_t b = 0; b < sizeof(boxes) / sizeof(boxes[0]); b++)
            for (int op = IMGPROC_OP_FIT; op <= IMGPROC_OP_COVER; op++) {
                imgproc_probe_t p = fake(IMGPROC_FMT_PNG, shapes[i][0], shapes[i][1], 1);
                imgproc_job_t job = {.op = (imgproc_op_t)op,
                                     .width = boxes[b][0],
                                     .height = boxes[b][1],
                                     .out_fmt = IMGPROC_FMT_WEBP};
                imgproc__plan_t pl;
                ck_assert_int_eq(imgproc__plan(&p, &job, &pl), 0);
                ck_assert_uint_le(pl.resized_w, p.width);
                ck_assert_uint_le(pl.resized_h, p.height);
                ck_assert_uint_le(pl.out_w, p.width);
                ck_assert_uint_le(pl.out_h, p.height);
                ck_assert_uint_lt(imgproc_estimate(&p, &job), 32u << 20);
            }
    /* A plan over max_pixels is refused before anything runs, with a clear error. */
    imgproc_probe_t p = fake(IMGPROC_FMT_JPEG, 6000, 4000, 1);
    imgproc_job_t job = {
        .op = IMGPROC_OP_CONVERT, .out_fmt = IMGPROC_FMT_JPEG, .max_pixels = 6000 * 4000 - 1};
    imgproc_err_t err = {0};
    ck_assert_int_eq(imgproc_plan_check(&p, &job, &err), -IMGPROC_E_TOO_LARGE);
    ck_assert_int_eq(err.code, IMGPROC_E_TOO_LARGE);
    ck_assert_ptr_nonnull(strstr(err.msg, "over"));
    ck_assert_uint_eq(imgproc_estimate(&p, &job), 0);
    job.max_pixels = 6000 * 4000;
    ck_assert_int_eq(imgproc_plan_check(&p, &job, &err), 0);
    job = (imgproc_job_t){.op = IMGPROC_OP_COVER, .width = 290, .out_fmt = IMGPROC_FMT_JPEG};
    ck_assert_int_eq(imgproc_plan_check(&p, &job, &err), -IMGPROC_E_INVALID);
}
END_TEST

/* ---------------------------------------------------------------- run */

START_TEST(test_imgproc_run_strips_every_mode)
{
    /* 1-pixel and 2-pixel strips in every mode and output format: a sane image exactly as
     * planned, or a clear error for what a format cannot hold. */
    VipsImage *img = content(20000, 1, 3, false);
    ck_assert_int_eq(vips_pngsave(img, tpath("wide.png"), NULL), 0);
    g_object_unref(img);
    img = content(1, 20000, 3, false);
    ck_assert_int_eq(vips_pngsave(img, tpath("tall.png"), NULL), 0);
    g_object_unref(img);
    img = content(2, 20000, 3, false);
    ck_assert_int_eq(vips_jpegsave(img, tpath("tall2.jpg"), NULL), 0);
    g_object_unref(img);
    char srcs[3][512]; /* tpath() reuses its buffers */
    snprintf(srcs[0], sizeof(srcs[0]), "%s", tpath("wide.png"));
    snprintf(srcs[1], sizeof(srcs[1]), "%s", tpath("tall.png"));
    snprintf(srcs[2], sizeof(srcs[2]), "%s", tpath("tall2.jpg"));
    static const struct {
        imgproc_op_t op;
        uint32_t w, h;
    } jobs[] = {{IMGPROC_OP_COVER, 290, 290}, {IMGPROC_OP_COVER, 1, 1000},
                {IMGPROC_OP_FIT, 290, 290},   {IMGPROC_OP_FIT, 290, 0},
                {IMGPROC_OP_FIT, 0, 290},     {IMGPROC_OP_CONVERT, 0, 0}};
    static const imgproc_fmt_t fmts[] = {IMGPROC_FMT_JPEG, IMGPROC_FMT_PNG, IMGPROC_FMT_WEBP};
    for (size_t s = 0; s < 3; s++)
        for (size_t j = 0; j < sizeof(jobs) / sizeof(jobs[0]); j++)
            for (size_t f = 0; f < 3; f++) {
                imgproc_job_t job = {
                    .op = jobs[j].op, .width = jobs[j].w, .height = jobs[j].h, .out_fmt = fmts[f]};
                imgproc_probe_t p;
                imgproc_err_t err;
                ck_assert_int_eq(imgproc_probe_file(srcs[s], &p, &err), 0);
                ck_assert_uint_lt(imgproc_estimate(&p, &job), 64u << 20);
                uint32_t ow, oh;
                imgproc_output_dims(&p, &job, &ow, &oh);
                ck_assert(ow >= 1 && oh >= 1 && ow <= p.width && oh <= p.height);
                if (fmts[f] == IMGPROC_FMT_WEBP && (ow > 16383 || oh > 16383)) {
                    imgproc_out_t out;
                    ck_assert_int_eq(imgproc_run(srcs[s], &job, &opts, tpath("o"), &out, &err),
                                     -IMGPROC_E_TOO_LARGE);
                    continue;
                }
                run_ok(srcs[s], job, tpath(fmts[f] == IMGPROC_FMT_PNG ? "o.png" : "o.img"), ow, oh);
            }
}
END_TEST

START_TEST(test_imgproc_run_stops_at_its_deadline)
{
    /* Long enough to run well past 1 ms in any mode: the deadline cancels it with TIMEOUT,
     * and the same job without a deadline succeeds. */
    const char *src = gen("slow.png", G_PNG, 3000, 3000, 3, false, 1);
    const char *psrc = gen("slow.jpg", G_JPEG_PROG, 3000, 3000, 3, false, 1);
    imgproc_job_t jobs[] = {
        {.op = IMGPROC_OP_CONVERT, .out_fmt = IMGPROC_FMT_PNG},
        {.op = IMGPROC_OP_FIT, .width = 290, .height = 290, .out_fmt = IMGPROC_FMT_WEBP},
        {.op = IMGPROC_OP_COVER,
         .width = 100,
         .height = 100,
         .out_fmt = IMGPROC_FMT_JPEG,
         .naive = true}};
    for (size_t i = 0; i < sizeof(jobs) / sizeof(jobs[0]); i++)
        for (int s = 0; s < 2; s++) {
            imgproc_err_t err;
            imgproc_out_t out;
            jobs[i].timeout_ms = 1;
            int rc = imgproc_run(s ? psrc : src, &jobs[i], &opts, tpath("d.out"), &out, &err);
            ck_assert_msg(rc == -IMGPROC_E_TIMEOUT, "job %zu/%d: %d %s", i, s, rc, err.msg);
            ck_assert_int_eq(err.code, IMGPROC_E_TIMEOUT);
            ck_assert_str_eq(imgproc_strerror(rc), "job deadline passed");
            jobs[i].timeout_ms = 0;
            ck_assert_int_eq(
                imgproc_run(s ? psrc : src, &jobs[i], &opts, tpath("d.out"), &out, &err), 0);
        }
}
END_TEST

START_TEST(test_imgproc_run_dims_and_format_every_mode)
{
    static const struct {
        gen_t kind;
        bool alpha;
        const char *name;
    } srcs[] = {{G_JPEG, false, "s.jpg"},  {G_JPEG_PROG, false, "sp.jpg"},
                {G_PNG, false, "s.png"},   {G_PNG_INTERLACED, true, "si.png"},
                {G_WEBP, false, "s.webp"}, {G_WEBP_LOSSLESS, true, "sl.webp"}};
    static const struct {
        imgproc_op_t op;
        uint32_t tw, th, ew, eh;
    } jobs[] = {
        {IMGPROC_OP_FIT, 290, 290, 290, 193},   {IMGPROC_OP_FIT, 100, 0, 100, 67},
        {IMGPROC_OP_FIT, 0, 100, 150, 100},     {IMGPROC_OP_COVER, 290, 290, 290, 290},
        {IMGPROC_OP_COVER, 100, 200, 100, 200}, {IMGPROC_OP_CONVERT, 0, 0, 900, 600},
        {IMGPROC_OP_FIT, 2000, 2000, 900, 600},
    };
    static const imgproc_fmt_t fmts[] = {IMGPROC_FMT_JPEG, IMGPROC_FMT_PNG, IMGPROC_FMT_WEBP};
    for (size_t s = 0; s < sizeof(srcs) / sizeof(srcs[0]); s++) {
        char src[512];
        snprintf(src, sizeof(src), "%s",
                 gen(srcs[s].name, srcs[s].kind, 900, 600, 3, srcs[s].alpha, 1));
        for (size_t j = 0; j < sizeof(jobs) / sizeof(jobs[0]); j++)
            for (size_t f = 0; f < 3; f++) {
                imgproc_job_t job = {.op = jobs[j].op,
                                     .width = jobs[j].tw,
                                     .height = jobs[j].th,
                                     .out_fmt = fmts[f],
                                     .naive = j == 0 && f == 0};
                run_ok(src, job, tpath("out"), jobs[j].ew, jobs[j].eh);
            }
    }
}
END_TEST

/* Red top-left quadrant on blue, stored with EXIF orientation @p o. */
static const char *quadrant_image(gen_t kind, int o, const char *name)
{
    VipsImage *ctx = vips_image_new();
    VipsImage **t = (VipsImage **)vips_object_local_array(VIPS_OBJECT(ctx), 4);
    double blue[3] = {0, 0, 255}, red[3] = {255, 0, 0};
    ck_assert_int_eq(vips_black(&t[0], 120, 80, "bands", 3, NULL), 0);
    ck_assert_int_eq(vips_linear(t[0], &t[1], blue, blue, 3, NULL), 0);
    ck_assert_int_eq(vips_cast(t[1], &t[2], VIPS_FORMAT_UCHAR, NULL), 0);
    ck_assert_int_eq(vips_draw_rect(t[2], red, 3, 0, 0, 60, 40, "fill", TRUE, NULL), 0);
    const char *p = tpath(name);
    save_as(t[2], kind, o, p);
    g_object_unref(ctx);
    return p;
}

static void pixel(const char *path, int x, int y, double rgb[3])
{
    VipsImage *img = load(path);
    double *v;
    int n;
    ck_assert_int_eq(vips_getpoint(img, &v, &n, x, y, NULL), 0);
    ck_assert_int_ge(n, 3);
    memcpy(rgb, v, 3 * sizeof(double));
    g_free(v);
    g_object_unref(img);
}

static bool is_red(const double c[3])
{
    return c[0] > 200 && c[1] < 60 && c[2] < 60;
}

START_TEST(test_imgproc_run_applies_orientation)
{
    /* Where the stored top-left (red) quadrant lands after orienting, per EXIF value. */
    static const struct {
        int o;
        int w, h;   /* displayed size */
        int rx, ry; /* a point inside the red quadrant after orienting */
    } t[] = {{1, 120, 80, 10, 10},  {3, 120, 80, 110, 70}, {6, 80, 120, 70, 10},
             {8, 80, 120, 10, 110}, {2, 120, 80, 110, 10}, {5, 80, 120, 10, 10}};
    imgproc_job_t job = {.op = IMGPROC_OP_CONVERT,
                         .width = 0,
                         .height = 0,
                         .out_fmt = IMGPROC_FMT_PNG,
                         .naive = false};
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        char name[32];
        snprintf(name, sizeof(name), "q%d.jpg", t[i].o);
        const char *src = quadrant_image(G_JPEG, t[i].o, name);
        run_ok(src, job, tpath("q.png"), (uint32_t)t[i].w, (uint32_t)t[i].h);
        double c[3];
        pixel(tpath("q.png"), t[i].rx, t[i].ry, c);
        ck_assert_msg(is_red(c), "orientation %d: (%d,%d) is %.0f,%.0f,%.0f", t[i].o, t[i].rx,
                      t[i].ry, c[0], c[1], c[2]);
        pixel(tpath("q.png"), t[i].w - 1 - t[i].rx, t[i].h - 1 - t[i].ry, c);
        ck_assert(!is_red(c));
    }
    /* Orientation carried in a PNG eXIf chunk, and in a thumbnail rather than a convert. */
    const char *png = quadrant_image(G_PNG, 1, "qp.png");
    const char *png6 = png_with_orientation(png, "qp6.png", 6);
    imgproc_job_t fit = {.op = IMGPROC_OP_FIT,
                         .width = 60,
                         .height = 60,
                         .out_fmt = IMGPROC_FMT_PNG,
                         .naive = false};
    run_ok(png6, fit, tpath("qp6-out.png"), 40, 60);
    double c[3];
    pixel(tpath("qp6-out.png"), 35, 5, c);
    ck_assert(is_red(c));
    /* The output carries no orientation tag to be applied twice. */
    VipsImage *img = load(tpath("qp6-out.png"));
    ck_assert_int_eq(vips_image_get_orientation(img), 1);
    g_object_unref(img);
}
END_TEST

START_TEST(test_imgproc_run_matches_vips_thumbnail)
{
    static const struct {
        gen_t kind;
        const char *name;
        imgproc_op_t op;
    } t[] = {{G_JPEG, "r.jpg", IMGPROC_OP_FIT},
             {G_JPEG_PROG, "rp.jpg", IMGPROC_OP_COVER},
             {G_PNG, "r.png", IMGPROC_OP_FIT},
             {G_PNG_INTERLACED, "ri.png", IMGPROC_OP_COVER},
             {G_WEBP, "r.webp", IMGPROC_OP_FIT}};
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        char src[512];
        snprintf(src, sizeof(src), "%s", gen(t[i].name, t[i].kind, 2400, 1600, 3, false, 1));
        VipsImage *lazy, *ref;
        ck_assert_int_eq(vips_thumbnail(src, &lazy, 290, "height", 290, "crop",
                                        t[i].op == IMGPROC_OP_COVER ? VIPS_INTERESTING_CENTRE
                                                                    : VIPS_INTERESTING_NONE,
                                        NULL),
                         0);
        ck_assert_ptr_nonnull(ref = vips_image_copy_memory(lazy)); /* loaders are sequential */
        g_object_unref(lazy);
        /* Lossless output: must be (nearly) the same pixels as libvips' own thumbnail. */
        imgproc_job_t job = {
            .op = t[i].op, .width = 290, .height = 290, .out_fmt = IMGPROC_FMT_PNG, .naive = false};
        run_ok(src, job, tpath("t.png"), 290, t[i].op == IMGPROC_OP_COVER ? 290 : 193);
        VipsImage *got = load(tpath("t.png"));
        double db = tg_psnr(got, ref);
        ck_assert_msg(db >= 40.0, "%s: PSNR %.1f dB", t[i].name, db);
        g_object_unref(got);
        /* JPEG output at quality 90 still within 40 dB of the reference. */
        job.out_fmt = IMGPROC_FMT_JPEG;
        run_ok(src, job, tpath("t.jpg"), 290, t[i].op == IMGPROC_OP_COVER ? 290 : 193);
        got = load(tpath("t.jpg"));
        db = tg_psnr(got, ref);
        ck_assert_msg(db >= 40.0, "%s -> jpeg: PSNR %.1f dB", t[i].name, db);
        g_object_unref(got);
        g_object_unref(ref);
    }
}
END_TEST

START_TEST(test_imgproc_run_truncated_is_error_not_grey)
{
    imgproc_job_t jobs[] = {{.op = IMGPROC_OP_FIT,
                             .width = 290,
                             .height = 290,
                             .out_fmt = IMGPROC_FMT_JPEG,
                             .naive = false},
                            {.op = IMGPROC_OP_CONVERT,
                             .width = 0,
                             .height = 0,
                             .out_fmt = IMGPROC_FMT_PNG,
                             .naive = false},
                            {.op = IMGPROC_OP_FIT,
                             .width = 290,
                             .height = 290,
                             .out_fmt = IMGPROC_FMT_JPEG,
                             .naive = true}};
    static const struct {
        gen_t kind;
        const char *name;
    } srcs[] = {{G_JPEG, "tr.jpg"},
                {G_JPEG_PROG, "trp.jpg"},
                {G_PNG, "tr.png"},
                {G_PNG_INTERLACED, "tri.png"}};
    for (size_t s = 0; s < sizeof(srcs) / sizeof(srcs[0]); s++) {
        char src[512], half[512];
        snprintf(src, sizeof(src), "%s", gen(srcs[s].name, srcs[s].kind, 1200, 900, 3, false, 1));
        size_t len;
        free(tg_read_file(src, &len));
        char name[32];
        snprintf(name, sizeof(name), "half-%s", srcs[s].name);
        snprintf(half, sizeof(half), "%s", truncated_copy(src, name, len / 2));
        imgproc_probe_t p;
        imgproc_err_t err;
        ck_assert_int_eq(imgproc_probe_file(half, &p, &err), 0); /* header intact */
        for (size_t j = 0; j < sizeof(jobs) / sizeof(jobs[0]); j++) {
            imgproc_out_t out;
            int rc = imgproc_run(half, &jobs[j], &opts, tpath("half.out"), &out, &err);
            ck_assert_msg(rc == -IMGPROC_E_CORRUPT, "%s job %zu: rc %d", name, j, rc);
            ck_assert_int_eq(err.code, IMGPROC_E_CORRUPT);
            ck_assert(strlen(err.msg) > 0);
        }
    }
    /* A WebP cut short is caught by the probe (its RIFF size says so). */
    const char *w = gen("tr.webp", G_WEBP, 400, 300, 3, false, 1);
    size_t len;
    free(tg_read_file(w, &len));
    imgproc_err_t err;
    imgproc_out_t out;
    ck_assert_int_eq(imgproc_run(truncated_copy(w, "half.webp", len / 2), &jobs[0], &opts,
                                 tpath("half.out"), &out, &err),
                     -IMGPROC_E_CORRUPT);
}
END_TEST

START_TEST(test_imgproc_run_metadata_and_alpha)
{
    /* An image with EXIF (orientation 1 tag written by the saver) and an ICC profile. */
    VipsImage *img = content(300, 200, 3, false), *tagged, *prof;
    ck_assert_int_eq(vips_icc_transform(img, &prof, "srgb", "input_profile", "srgb", NULL), 0);
    ck_assert_int_eq(vips_copy(prof, &tagged, NULL), 0);
    vips_image_set_string(tagged, "exif-ifd0-Artist",
                          "someone (someone, ASCII, 8 components, 8 bytes)");
    static const char xmp[] = "<x:xmpmeta xmlns:x='adobe:ns:meta/'></x:xmpmeta>";
    vips_image_set_blob_copy(tagged, VIPS_META_XMP_NAME, xmp, sizeof(xmp) - 1);
    const char *src = tpath("meta.jpg");
    ck_assert_int_eq(vips_jpegsave(tagged, src, "Q", 95, NULL), 0);
    g_object_unref(tagged);
    VipsImage *s0 = load(src); /* the source really carries what must be stripped */
    ck_assert(vips_image_get_typeof(s0, VIPS_META_XMP_NAME));
    ck_assert(vips_image_get_typeof(s0, "exif-ifd0-Artist"));
    g_object_unref(s0);
    g_object_unref(prof);
    g_object_unref(img);
    imgproc_probe_t p = probe_ok(src);
    ck_assert(p.has_icc);

    imgproc_job_t job = {.op = IMGPROC_OP_FIT,
                         .width = 100,
                         .height = 100,
                         .out_fmt = IMGPROC_FMT_JPEG,
                         .naive = false};
    imgproc_opts_t o = opts;
    imgproc_err_t err;
    imgproc_out_t out;
    for (int keep = 0; keep <= 1; keep++) {
        o.keep_icc = keep;
        ck_assert_int_eq(imgproc_run(src, &job, &o, tpath("m.jpg"), &out, &err), 0);
        VipsImage *r = load(tpath("m.jpg"));
        ck_assert_int_eq(vips_image_get_typeof(r, VIPS_META_ICC_NAME) != 0, keep);
        ck_assert(!vips_image_get_typeof(r, VIPS_META_XMP_NAME));
        ck_assert(!vips_image_get_typeof(r, "exif-ifd0-Artist"));
        g_object_unref(r);
    }

    /* Transparent pixels flatten to white in JPEG, stay transparent in PNG/WebP. */
    const char *a = gen("alpha.png", G_PNG, 200, 100, 3, true, 1);
    imgproc_job_t conv = {.op = IMGPROC_OP_CONVERT,
                          .width = 0,
                          .height = 0,
                          .out_fmt = IMGPROC_FMT_JPEG,
                          .naive = false};
    run_ok(a, conv, tpath("flat.jpg"), 200, 100);
    double c[3];
    pixel(tpath("flat.jpg"), 0, 50, c); /* alpha 0 column */
    ck_assert(c[0] > 245 && c[1] > 245 && c[2] > 245);
    conv.out_fmt = IMGPROC_FMT_WEBP;
    run_ok(a, conv, tpath("keep.webp"), 200, 100);
    VipsImage *r = load(tpath("keep.webp"));
    ck_assert_int_eq(r->Bands, 4);
    g_object_unref(r);
}
END_TEST

START_TEST(test_imgproc_run_converts_to_srgb)
{
    /* sRGB red/blue quadrants re-encoded in Display P3 and tagged with that profile: the
     * output must be sRGB again (red ~ 255,0,0), not the P3 numbers (~234,51,35). */
    VipsImage *ctx = vips_image_new();
    VipsImage **t = (VipsImage **)vips_object_local_array(VIPS_OBJECT(ctx), 4);
    t[0] = load(quadrant_image(G_PNG, 1, "q-srgb.png"));
    ck_assert_int_eq(vips_icc_transform(t[0], &t[1], "p3", "input_profile", "srgb", NULL), 0);
    const char *p3 = tpath("q-p3.png");
    ck_assert_int_eq(vips_pngsave(t[1], p3, NULL), 0);
    g_object_unref(ctx);
    double c[3];
    pixel(p3, 10, 10, c);
    ck_assert_msg(c[1] > 30, "the P3 file should not hold sRGB numbers: %.0f,%.0f,%.0f", c[0], c[1],
                  c[2]);
    ck_assert(probe_ok(p3).has_icc);
    static const imgproc_fmt_t fmts[] = {IMGPROC_FMT_PNG, IMGPROC_FMT_JPEG, IMGPROC_FMT_WEBP};
    for (size_t f = 0; f < 3; f++) {
        imgproc_job_t job = {
            .op = IMGPROC_OP_CONVERT, .width = 0, .height = 0, .out_fmt = fmts[f], .naive = false};
        run_ok(p3, job, tpath("q-out"), 120, 80);
        pixel(tpath("q-out"), 10, 10, c);
        ck_assert_msg(c[0] > 240 && c[1] < 25 && c[2] < 25, "fmt %d: red came out %.0f,%.0f,%.0f",
                      (int)fmts[f], c[0], c[1], c[2]);
    }
}
END_TEST

START_TEST(test_imgproc_run_rejects_bad_jobs)
{
    const char *src = gen("bad.jpg", G_JPEG, 64, 48, 3, false, 1);
    imgproc_err_t err;
    imgproc_out_t out;
    imgproc_job_t job = {
        .op = IMGPROC_OP_FIT, .width = 0, .height = 0, .out_fmt = IMGPROC_FMT_JPEG, .naive = false};
    ck_assert_int_eq(imgproc_run(src, &job, &opts, tpath("o"), &out, &err), -IMGPROC_E_INVALID);
    job.width = 32;
    job.out_fmt = IMGPROC_FMT_UNKNOWN;
    ck_assert_int_eq(imgproc_run(src, &job, &opts, tpath("o"), &out, &err), -IMGPROC_E_INVALID);
    job.out_fmt = IMGPROC_FMT_JPEG;
    imgproc_opts_t o = opts;
    o.jpeg_quality = 0;
    ck_assert_int_eq(imgproc_run(src, &job, &o, tpath("o"), &out, &err), -IMGPROC_E_INVALID);
    ck_assert_int_eq(imgproc_run(tpath("missing.jpg"), &job, &opts, tpath("o"), &out, &err),
                     -IMGPROC_E_IO);
    ck_assert_int_eq(imgproc_run(src, &job, &opts, tpath("no/such/dir/o"), &out, &err),
                     -IMGPROC_E_IO);
    tg_write_file(tpath("bmp.jpg"), "BM6\0\0\0\0\0\0\0\x36\0\0\0", 14);
    ck_assert_int_eq(imgproc_run(tpath("bmp.jpg"), &job, &opts, tpath("o"), &out, &err),
                     -IMGPROC_E_UNSUPPORTED);
    /* WebP cannot hold more than 16383 pixels a side: refused before decoding. */
    VipsImage *wide = content(17000, 4, 3, false);
    ck_assert_int_eq(vips_pngsave(wide, tpath("wide.png"), NULL), 0);
    g_object_unref(wide);
    imgproc_job_t conv = {.op = IMGPROC_OP_CONVERT,
                          .width = 0,
                          .height = 0,
                          .out_fmt = IMGPROC_FMT_WEBP,
                          .naive = false};
    ck_assert_int_eq(imgproc_run(tpath("wide.png"), &conv, &opts, tpath("o"), &out, &err),
                     -IMGPROC_E_TOO_LARGE);
}
END_TEST

static long minor_faults(void)
{
    struct rusage r;
    getrusage(RUSAGE_SELF, &r);
    return r.ru_minflt;
}

/* The release build's calloc (imgproc.c) zeroes a reused block with memset: no page faults,
 * where jemalloc's own calloc gives the block's pages back to the kernel (madvise) and every
 * write faults a zero page in again. 96 KiB: above the thread cache (tcache_max 4 KiB) and
 * below the oversize arena's threshold (128 KiB), so each block is a reused dirty extent of
 * an ordinary arena, like libvips' region buffers. A big calloc stays jemalloc's: never
 * written, it is never committed. Under a sanitizer calloc is the sanitizer's: nothing to
 * check. */
START_TEST(test_imgproc_calloc_reuse_does_not_fault)
{
#ifdef THUMBGATE_JEMALLOC
    enum { N = 200, SZ = 96 * 1024, PAGE = 4096 };
    free(calloc(1, SZ)); /* the first one faults its pages in */
    long f0 = minor_faults();
    for (int i = 0; i < N; i++) {
        volatile char *p = calloc(1, SZ);
        ck_assert_ptr_nonnull((void *)p);
        for (int k = 0; k < SZ; k += PAGE) {
            ck_assert_int_eq(p[k], 0); /* zeroed, as calloc must */
            p[k] = 1;
        }
        free((void *)p);
    }
    long faults = minor_faults() - f0;
    /* jemalloc's calloc: SZ / PAGE (24) faults per block, 4803 in all (measured) */
    ck_assert_msg(faults < N, "%ld page faults for %d reused 96 KiB callocs", faults, N);

    enum { BIG = 64 << 20 };
    f0 = minor_faults();
    volatile char *big = calloc(BIG / 4096, 4096);
    ck_assert_ptr_nonnull((void *)big);
    ck_assert_int_eq(big[0] + big[BIG / 2] + big[BIG - 1], 0);
    faults = minor_faults() - f0;
    ck_assert_msg(faults < 1024, "%ld page faults for a 64 MiB calloc read at 3 places", faults);
    free((void *)big);
    volatile size_t half = SIZE_MAX / 2;
    ck_assert_ptr_null(calloc(half, 4)); /* n * size overflows */
#endif
}
END_TEST

/* libvips' orc calls go through imgproc/orclock.c (orc 0.4.33 corrupts its code memory
 * when two threads compile or free at once): the dynamic linker must bind them to the
 * executable's definitions, not liborc's. And orc stays on: jobs with large resizes map
 * orc code regions (files named orcexec.*), libvips' vector paths, 30% faster. */
START_TEST(test_imgproc_orc_calls_take_our_lock)
{
    ck_assert_ptr_eq(dlsym(RTLD_DEFAULT, "orc_program_compile"), (void *)orc_program_compile);
    ck_assert_ptr_eq(dlsym(RTLD_DEFAULT, "orc_program_free"), (void *)orc_program_free);
    void *lib = dlsym(RTLD_NEXT, "orc_program_compile");
    ck_assert_ptr_nonnull(lib); /* liborc's own, which ours calls */
    ck_assert_ptr_ne(lib, (void *)orc_program_compile);

    imgproc_job_t job = {.op = IMGPROC_OP_FIT, .width = 600, .height = 600, .naive = false};
    job.out_fmt = IMGPROC_FMT_JPEG;
    run_ok(gen("orc.jpg", G_JPEG, 900, 700, 3, false, 1), job, tpath("orc1.jpg"), 600, 467);
    job.out_fmt = IMGPROC_FMT_PNG;
    run_ok(gen("orc.png", G_PNG, 700, 900, 3, true, 1), job, tpath("orc2.png"), 467, 600);
    FILE *f = fopen("/proc/self/maps", "r");
    ck_assert_ptr_nonnull(f);
    char line[1024];
    int regions = 0;
    while (fgets(line, sizeof(line), f))
        regions += strstr(line, "orcexec") != NULL;
    fclose(f);
    ck_assert_msg(regions > 0, "no orc code mapped: libvips ran its plain C paths");
}
END_TEST

START_TEST(test_imgproc_runtime_helpers)
{
    ck_assert(imgproc_selftest());
    imgproc_job_t job = {.op = IMGPROC_OP_FIT,
                         .width = 64,
                         .height = 64,
                         .out_fmt = IMGPROC_FMT_WEBP,
                         .naive = false};
    run_ok(gen("h.jpg", G_JPEG, 640, 480, 3, false, 1), job, tpath("h.webp"), 64, 48);
    uint64_t now, hw;
    imgproc_vips_mem(&now, &hw);
    ck_assert_uint_gt(hw, 0);
    ck_assert_uint_ge(hw, now);
    imgproc_trim();
}
END_TEST

Suite *imgproc_suite(void);
Suite *imgproc_suite(void)
{
    Suite *s = suite_create("imgproc");
    TCase *tc;

    tc = tcase_create("sniff");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 30); /* the fixture's imgproc_init warms libvips up */
    tcase_add_test(tc, test_imgproc_sniff_detects_magic);
    tcase_add_test(tc, test_imgproc_fmt_helpers_roundtrip);
    suite_add_tcase(s, tc);

    tc = tcase_create("probe");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_imgproc_probe_jpeg_variants);
    tcase_add_test(tc, test_imgproc_probe_png_variants);
    tcase_add_test(tc, test_imgproc_probe_webp_variants);
    tcase_add_test(tc, test_imgproc_probe_gif_tiff_heif);
    tcase_add_test(tc, test_imgproc_probe_orientation_absurd_is_one);
    tcase_add_test(tc, test_imgproc_probe_bomb_png_declares_50000);
    tcase_add_test(tc, test_imgproc_probe_rejects_hostile);
    tcase_add_test(tc, test_imgproc_probe_finds_sof_after_big_app_segments);
    tcase_add_test(tc, test_imgproc_probe_is_fast);
    suite_add_tcase(s, tc);

    tc = tcase_create("plan");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_imgproc_output_dims_every_mode);
    tcase_add_test(tc, test_imgproc_plan_shrink_on_load);
    tcase_add_test(tc, test_imgproc_estimate_orders_costs);
    tcase_add_test(tc, test_imgproc_plan_never_enlarges_and_is_bounded);
    suite_add_tcase(s, tc);

    tc = tcase_create("run");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_imgproc_run_dims_and_format_every_mode);
    tcase_add_test(tc, test_imgproc_run_applies_orientation);
    tcase_add_test(tc, test_imgproc_run_matches_vips_thumbnail);
    tcase_add_test(tc, test_imgproc_run_truncated_is_error_not_grey);
    tcase_add_test(tc, test_imgproc_run_metadata_and_alpha);
    tcase_add_test(tc, test_imgproc_run_converts_to_srgb);
    tcase_add_test(tc, test_imgproc_run_rejects_bad_jobs);
    tcase_add_test(tc, test_imgproc_runtime_helpers);
    tcase_add_test(tc, test_imgproc_orc_calls_take_our_lock);
    tcase_add_test(tc, test_imgproc_calloc_reuse_does_not_fault);
    tcase_add_test(tc, test_imgproc_run_strips_every_mode);
    tcase_add_test(tc, test_imgproc_run_stops_at_its_deadline);
    suite_add_tcase(s, tc);
    return s;
}
