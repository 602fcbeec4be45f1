/* calibrate — checks imgproc_estimate() against the real peak memory of each job.
 *
 *   calibrate [--reduced] [--dir DIR] [--jobs N] [--cold] [-v]
 *       Generates a grid of images (formats x sizes x baseline/progressive/interlaced x
 *       chroma subsampling x alpha x orientation) into DIR (default: a fresh temp dir,
 *       removed afterwards), runs every case in a fresh child process and prints
 *       estimate, measured peak and their ratio per case, then the summary line
 *         cases=N underestimates=U median_ratio=X worst_ratio=Y
 *       Exit status 1 when any case is underestimated (or a case fails).
 *   calibrate --burst N [--file F]
 *       Allocator experiment: RSS kept after N concurrent jobs, with and without our
 *       malloc settings, before and after imgproc_trim().
 *   calibrate --lazy-free MIB
 *       Are lazily freed pages taken back under a cgroup limit (tests/lazyfree_oom.sh)?
 *
 * Measuring: the child (fork+exec of ourselves, so libvips is never inherited across a
 * fork) initialises imgproc, runs a small warm-up of every loader/saver path in its job
 * thread (the one-time costs a long-running server has already paid: code pages, GType
 * classes, libvips' thread pool, the thread's malloc arena), trims, resets VmHWM through
 * /proc/self/clear_refs ("5"), takes VmRSS as the base, runs the job in that same thread
 * and reports VmHWM - base: everything the job added, libvips-tracked or not. Jobs under
 * 4 MiB are run three times that way and the largest peak is reported. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <math.h>
#include <pthread.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>

#include <vips/vips.h>

#include "imgproc/imgproc_internal.h"

#ifdef THUMBGATE_JEMALLOC
#include <jemalloc/jemalloc.h>
#endif

extern char **environ;

/* ---------------------------------------------------------------- image generation */

typedef enum {
    V_JPEG_BASE420,
    V_JPEG_BASE444,
    V_JPEG_PROG420,
    V_JPEG_PROG444,
    V_JPEG_GREY,
    V_JPEG_CMYK,
    V_PNG_RGB,
    V_PNG_RGBA,
    V_PNG_INTERLACED,
    V_PNG_GREY,
    V_PNG_RGB16,
    V_PNG_PALETTE,
    V_WEBP_LOSSY,
    V_WEBP_ALPHA,
    V_WEBP_LOSSLESS,
    V_JPEG_ICC,
    V_PNG_ICC,
    V_WEBP_ANIM,
    V_GIF, /* issue 15's inputs */
    V_TIFF,
    V_HEIC,
    V_AVIF,
    V_GRID_COUNT, /* the calibration grid uses the variants above; the attack all of them */
    V_PNG_GREYA = V_GRID_COUNT,
    V_PNG_GREY16,
    V_PNG_RGBA16,
    V_PNG_PALETTE_ALPHA,
    V_PNG_INTERLACED_GREYA,
    V_PNG_BIGTEXT,
    V_JPEG_PROG_GREY,
    V_JPEG_CMYK_PROG,
    V_JPEG_BIGICC,
    V_WEBP_LOSSLESS_ALPHA,
    V_WEBP_BIGICC,
    V_JPEG_NOISE, /* high-entropy content: encoders' token and output buffers grow with it */
    V_PNG_NOISE,
    V_WEBP_NOISE,
    V_PNG_NOISE_RGBA,
    V_TIFF_TILED,
    V_TIFF_ONESTRIP, /* the whole image in one strip: libtiff decodes it at once */
    V_GIF_ALPHA,
    V_GIF_ANIM10, /* animated outputs: every frame held (toilet roll of frames) */
    V_GIF_ANIM50,
    V_WEBP_ANIM10,
    V_WEBP_ANIM50,
    V__COUNT
} variant_t;

static const struct {
    const char *name, *ext;
    bool noisy; /* strong independent noise in each band (make_content) */
} variants[V__COUNT] = {
    [V_JPEG_BASE420] = {"jpeg-base420", "jpg"},
    [V_JPEG_BASE444] = {"jpeg-base444", "jpg"},
    [V_JPEG_PROG420] = {"jpeg-prog420", "jpg"},
    [V_JPEG_PROG444] = {"jpeg-prog444", "jpg"},
    [V_JPEG_GREY] = {"jpeg-grey", "jpg"},
    [V_JPEG_CMYK] = {"jpeg-cmyk", "jpg"},
    [V_PNG_RGB] = {"png-rgb", "png"},
    [V_PNG_RGBA] = {"png-rgba", "png"},
    [V_PNG_INTERLACED] = {"png-interlaced", "png"},
    [V_PNG_GREY] = {"png-grey", "png"},
    [V_PNG_RGB16] = {"png-rgb16", "png"},
    [V_PNG_PALETTE] = {"png-palette", "png"},
    [V_WEBP_LOSSY] = {"webp-lossy", "webp"},
    [V_WEBP_ALPHA] = {"webp-alpha", "webp"},
    [V_WEBP_LOSSLESS] = {"webp-lossless", "webp"},
    [V_JPEG_ICC] = {"jpeg-icc", "jpg"},
    [V_PNG_ICC] = {"png-icc", "png"},
    [V_WEBP_ANIM] = {"webp-anim", "webp"},
    [V_GIF] = {"gif", "gif"},
    [V_TIFF] = {"tiff", "tif"},
    [V_HEIC] = {"heic", "heic"},
    [V_AVIF] = {"avif", "avif"},
    [V_TIFF_TILED] = {"tiff-tiled", "tif"},
    [V_TIFF_ONESTRIP] = {"tiff-onestrip", "tif"},
    [V_GIF_ALPHA] = {"gif-alpha", "gif"},
    [V_GIF_ANIM10] = {"gif-anim10", "gif"},
    [V_GIF_ANIM50] = {"gif-anim50", "gif"},
    [V_WEBP_ANIM10] = {"webp-anim10", "webp"},
    [V_WEBP_ANIM50] = {"webp-anim50", "webp"},
    [V_PNG_GREYA] = {"png-greya", "png"},
    [V_PNG_GREY16] = {"png-grey16", "png"},
    [V_PNG_RGBA16] = {"png-rgba16", "png"},
    [V_PNG_PALETTE_ALPHA] = {"png-palette-alpha", "png"},
    [V_PNG_INTERLACED_GREYA] = {"png-interlaced-greya", "png"},
    [V_PNG_BIGTEXT] = {"png-bigtext", "png"},
    [V_JPEG_PROG_GREY] = {"jpeg-prog-grey", "jpg"},
    [V_JPEG_CMYK_PROG] = {"jpeg-cmyk-prog", "jpg"},
    [V_JPEG_BIGICC] = {"jpeg-bigicc", "jpg"},
    [V_WEBP_LOSSLESS_ALPHA] = {"webp-lossless-alpha", "webp"},
    [V_WEBP_BIGICC] = {"webp-bigicc", "webp"},
    [V_JPEG_NOISE] = {"jpeg-noise", "jpg", true},
    [V_PNG_NOISE] = {"png-noise", "png", true},
    [V_WEBP_NOISE] = {"webp-noise", "webp", true},
    [V_PNG_NOISE_RGBA] = {"png-noise-rgba", "png", true},
};

/* A valid ICC profile (Display P3) padded to about 1 MiB: lcms reads the tag table and
 * ignores the rest, but the decoder keeps and copies every byte. New reference or NULL. */
static int free_icc(void *data, void *area)
{
    g_free(data);
    return 0;
}

static VipsBlob *big_icc(void)
{
    VipsBlob *p3 = NULL;
    if (vips_profile_load("p3", &p3, NULL))
        return NULL;
    size_t len, big = 1u << 20;
    const unsigned char *src = vips_blob_get(p3, &len);
    unsigned char *buf = g_malloc0(big);
    memcpy(buf, src, len < big ? len : big);
    buf[0] = (unsigned char)(big >> 24);
    buf[1] = (unsigned char)(big >> 16);
    buf[2] = (unsigned char)(big >> 8);
    buf[3] = (unsigned char)big;
    for (size_t i = len; i < big; i++) /* incompressible padding */
        buf[i] = (unsigned char)(i * 2654435761u >> 13);
    vips_area_unref(VIPS_AREA(p3));
    return vips_blob_new(free_icc, buf, big);
}

/* Photo-like content: gradients, a sine pattern and gaussian noise (so that files have
 * realistic entropy), optionally with an alpha band; @p noisy: strong independent noise in
 * each band (the worst case for encoders). Returns a new uchar image. */
static VipsImage *make_content(int w, int h, int bands, bool alpha, bool noisy)
{
    VipsImage *ctx = vips_image_new();
    VipsImage **t = (VipsImage **)vips_object_local_array(VIPS_OBJECT(ctx), 20);
    VipsImage *out = NULL;
    if (vips_xyz(&t[0], w, h, NULL) || vips_extract_band(t[0], &t[1], 0, NULL) ||
        vips_extract_band(t[0], &t[2], 1, NULL) || vips_linear1(t[1], &t[3], 200.0 / w, 20, NULL) ||
        vips_linear1(t[2], &t[4], 200.0 / h, 30, NULL) ||
        vips_sines(&t[5], w, h, "hfreq", 7.0, "vfreq", 5.0, NULL) ||
        vips_linear1(t[5], &t[6], 90, 128, NULL))
        goto out;
    VipsImage *rgb[3] = {t[3], t[4], t[6]};
    if (vips_bandjoin(rgb, &t[7], 3, NULL))
        goto out;
    if (noisy) {
        VipsImage *n3[3];
        for (int i = 0; i < 3; i++)
            if (vips_gaussnoise(&t[16 + i], w, h, "sigma", 45.0, "mean", 0.0, NULL))
                goto out;
        n3[0] = t[16], n3[1] = t[17], n3[2] = t[18];
        if (vips_bandjoin(n3, &t[8], 3, NULL))
            goto out;
    } else if (vips_gaussnoise(&t[8], w, h, "sigma", 6.0, "mean", 0.0, NULL)) {
        goto out;
    }
    if (vips_add(t[7], t[8], &t[9], NULL))
        goto out;
    VipsImage *img = t[9];
    if (bands == 1) {
        if (vips_extract_band(img, &t[10], 1, NULL))
            goto out;
        img = t[10];
    }
    if (alpha) {
        /* A soft diagonal transparency ramp. */
        if (vips_add(t[1], t[2], &t[13], NULL) ||
            vips_linear1(t[13], &t[14], 255.0 / (w + h), 0, NULL) ||
            vips_bandjoin2(img, t[14], &t[15], NULL))
            goto out;
        img = t[15];
    }
    if (vips_cast(img, &out, VIPS_FORMAT_UCHAR, NULL))
        out = NULL;
out:
    g_object_unref(ctx);
    return out;
}

/* An uncompressed 8-bit TIFF of @p img in a single strip (libvips writes 8-line strips). */
static int tiff_one_strip(VipsImage *img, const char *path)
{
    size_t len;
    uint8_t *px = vips_image_write_to_memory(img, &len);
    if (!px)
        return -1;
    uint32_t w = (uint32_t)img->Xsize, h = (uint32_t)img->Ysize, b = (uint32_t)img->Bands;
    uint8_t hdr[8 + 2 + 9 * 12 + 4 + 8];
    memset(hdr, 0, sizeof(hdr));
    memcpy(hdr, "II*\0\x08\0\0\0", 8);
    hdr[8] = 9;
    static const uint16_t tags[9] = {256, 257, 258, 259, 262, 273, 277, 278, 279};
    uint32_t bits_at = 8 + 2 + 9 * 12 + 4; /* BitsPerSample array when b > 2 */
    uint32_t data_at = sizeof(hdr);
    uint32_t vals[9] = {w, h, b > 2 ? bits_at : 8, 1, b >= 3 ? 2 : 1, data_at, b, h, (uint32_t)len};
    for (int i = 0; i < 9; i++) {
        uint8_t *e = hdr + 10 + i * 12;
        e[0] = (uint8_t)tags[i];
        e[1] = (uint8_t)(tags[i] >> 8);
        e[2] = 4; /* LONG */
        e[4] = i == 2 ? (uint8_t)b : 1;
        if (i == 2) {
            e[2] = 3; /* SHORT */
            if (b <= 2) {
                e[8] = 8;
                e[10] = b == 2 ? 8 : 0;
                continue;
            }
        }
        for (int k = 0; k < 4; k++)
            e[8 + k] = (uint8_t)(vals[i] >> (8 * k));
    }
    for (uint32_t k = 0; k < 4; k++)
        hdr[bits_at + 2 * k] = 8;
    FILE *f = fopen(path, "wb");
    int rc =
        f && fwrite(hdr, 1, sizeof(hdr), f) == sizeof(hdr) && fwrite(px, 1, len, f) == len ? 0 : -1;
    if (f && fclose(f) != 0)
        rc = -1;
    g_free(px);
    if (rc)
        vips_error("calibrate", "cannot write %s", path);
    return rc;
}

/* Frames of an animated variant (1 for stills). */
static int anim_frames(variant_t v)
{
    return v == V_WEBP_ANIM                          ? 4
           : v == V_GIF_ANIM10 || v == V_WEBP_ANIM10 ? 10
           : v == V_GIF_ANIM50 || v == V_WEBP_ANIM50 ? 50
                                                     : 1;
}

static int generate(variant_t v, int w, int h, int orientation, const char *path)
{
    bool alpha = v == V_PNG_RGBA || v == V_WEBP_ALPHA || v == V_PNG_GREYA || v == V_PNG_RGBA16 ||
                 v == V_PNG_PALETTE_ALPHA || v == V_PNG_INTERLACED_GREYA ||
                 v == V_WEBP_LOSSLESS_ALPHA || v == V_PNG_NOISE_RGBA || v == V_GIF_ALPHA;
    bool noisy = variants[v].noisy;
    int bands = (v == V_JPEG_GREY || v == V_PNG_GREY || v == V_PNG_GREYA || v == V_PNG_GREY16 ||
                 v == V_PNG_INTERLACED_GREYA || v == V_JPEG_PROG_GREY)
                    ? 1
                    : 3;
    VipsImage *img = make_content(w, h, bands, alpha, noisy), *t1 = NULL, *t2 = NULL;
    int rc = -1;
    if (!img)
        return -1;
    if (vips_copy(img, &t1, NULL))
        goto out;
    bool has_icc = v == V_JPEG_ICC || v == V_PNG_ICC || v == V_JPEG_CMYK || v == V_JPEG_CMYK_PROG ||
                   v == V_JPEG_BIGICC || v == V_WEBP_BIGICC;
    bool keep_meta = has_icc || v == V_PNG_BIGTEXT;
    if (v == V_JPEG_ICC || v == V_PNG_ICC) {
        /* Display P3 pixels tagged with their profile: jobs must transform to sRGB. */
        if (vips_icc_transform(t1, &t2, "p3", "input_profile", "srgb", NULL))
            goto out;
        VIPS_UNREF(t1);
        t1 = t2;
        t2 = NULL;
    } else if (anim_frames(v) > 1) {
        /* Frames stacked vertically: a moving box over the content. */
        int n = anim_frames(v);
        VipsImage *stack[50], *joined = NULL;
        double ink[3] = {255, 40, 40};
        int made = 0, jrc = -1;
        for (; made < n; made++) {
            stack[made] = vips_image_copy_memory(t1);
            if (!stack[made] || vips_draw_rect(stack[made], ink, 3, made * w / (n + 1), h / 4,
                                               w / (n + 1) + 1, h / 2, "fill", TRUE, NULL))
                break;
        }
        if (made == n)
            jrc = vips_arrayjoin(stack, &joined, n, "across", 1, NULL);
        for (int i = 0; i < made + (made < n && stack[made] ? 1 : 0); i++)
            g_object_unref(stack[i]);
        if (jrc)
            goto out;
        VIPS_UNREF(t1);
        t1 = joined;
        vips_image_set_int(t1, VIPS_META_PAGE_HEIGHT, h);
        int delays[50];
        for (int i = 0; i < n; i++)
            delays[i] = 100;
        vips_image_set_array_int(t1, "delay", delays, n);
    } else if (v == V_JPEG_BIGICC || v == V_WEBP_BIGICC) {
        VipsBlob *icc = big_icc();
        if (!icc)
            goto out;
        vips_image_set_blob_copy(t1, VIPS_META_ICC_NAME, VIPS_AREA(icc)->data,
                                 VIPS_AREA(icc)->length);
        vips_area_unref(VIPS_AREA(icc));
    } else if (v == V_PNG_BIGTEXT) {
        /* 2 MiB of text chunks: libpng and libvips keep them as metadata. */
        size_t n = 1u << 20;
        char *txt = g_malloc(n + 1);
        for (size_t i = 0; i < n; i++)
            txt[i] = (char)('a' + (i * 2654435761u >> 7) % 26);
        txt[n] = '\0';
        vips_image_set_string(t1, "png-comment-0-Comment", txt);
        vips_image_set_string(t1, "png-comment-1-Description", txt);
        g_free(txt);
    } else if (v == V_PNG_GREY16) {
        if (vips_colourspace(t1, &t2, VIPS_INTERPRETATION_GREY16, NULL))
            goto out;
        VIPS_UNREF(t1);
        t1 = t2;
        t2 = NULL;
    } else if (v == V_JPEG_CMYK || v == V_JPEG_CMYK_PROG) {
        if (vips_colourspace(t1, &t2, VIPS_INTERPRETATION_CMYK, NULL))
            goto out;
        VIPS_UNREF(t1);
        t1 = t2;
        t2 = NULL;
    } else if (v == V_PNG_RGB16 || v == V_PNG_RGBA16) {
        if (vips_colourspace(t1, &t2, VIPS_INTERPRETATION_RGB16, NULL))
            goto out;
        VIPS_UNREF(t1);
        t1 = t2;
        t2 = NULL;
    }
    if (orientation != 1)
        vips_image_set_int(t1, VIPS_META_ORIENTATION, orientation);
    else
        vips_image_remove(t1, VIPS_META_ORIENTATION);
    gboolean strip = orientation == 1 && !keep_meta;
    switch (v) {
    case V_JPEG_BASE420:
    case V_JPEG_BASE444:
    case V_JPEG_PROG420:
    case V_JPEG_PROG444:
    case V_JPEG_GREY:
    case V_JPEG_CMYK:
    case V_JPEG_ICC:
    case V_JPEG_PROG_GREY:
    case V_JPEG_CMYK_PROG:
    case V_JPEG_BIGICC:
    case V_JPEG_NOISE:
        rc = vips_jpegsave(t1, path, "Q", 85, "strip", strip, "interlace",
                           v == V_JPEG_PROG420 || v == V_JPEG_PROG444 || v == V_JPEG_PROG_GREY ||
                               v == V_JPEG_CMYK_PROG,
                           "subsample_mode",
                           (v == V_JPEG_BASE444 || v == V_JPEG_PROG444) ? VIPS_FOREIGN_SUBSAMPLE_OFF
                                                                        : VIPS_FOREIGN_SUBSAMPLE_ON,
                           NULL);
        break;
    case V_PNG_RGB:
    case V_PNG_RGBA:
    case V_PNG_INTERLACED:
    case V_PNG_GREY:
    case V_PNG_RGB16:
    case V_PNG_ICC:
    case V_PNG_GREYA:
    case V_PNG_GREY16:
    case V_PNG_RGBA16:
    case V_PNG_INTERLACED_GREYA:
    case V_PNG_BIGTEXT:
    case V_PNG_NOISE:
    case V_PNG_NOISE_RGBA:
        rc = vips_pngsave(t1, path, "compression", 3, "strip", strip, "interlace",
                          v == V_PNG_INTERLACED || v == V_PNG_INTERLACED_GREYA, NULL);
        break;
    case V_PNG_PALETTE:
    case V_PNG_PALETTE_ALPHA:
        rc = vips_pngsave(t1, path, "compression", 3, "strip", strip, "palette", TRUE, NULL);
        break;
    case V_WEBP_LOSSY:
    case V_WEBP_ALPHA:
    case V_WEBP_ANIM:
    case V_WEBP_ANIM10:
    case V_WEBP_ANIM50:
    case V_WEBP_BIGICC:
    case V_WEBP_NOISE:
        rc = vips_webpsave(t1, path, "Q", 80, "strip", strip, "effort", 2, NULL);
        break;
    case V_WEBP_LOSSLESS:
    case V_WEBP_LOSSLESS_ALPHA:
        rc = vips_webpsave(t1, path, "lossless", TRUE, "strip", strip, "effort", 0, NULL);
        break;
    case V_GIF:
    case V_GIF_ALPHA:
    case V_GIF_ANIM10:
    case V_GIF_ANIM50:
        rc = vips_gifsave(t1, path, "strip", strip, "effort", 1, NULL);
        break;
    case V_TIFF:
    case V_TIFF_TILED:
    case V_TIFF_ONESTRIP:
        /* libvips writes 8-line strips; one strip is the whole image (rows_per_strip = h) */
        rc = v == V_TIFF_ONESTRIP
                 ? tiff_one_strip(t1, path)
                 : vips_tiffsave(t1, path, "compression", VIPS_FOREIGN_TIFF_COMPRESSION_DEFLATE,
                                 "tile", v == V_TIFF_TILED, "strip", strip, NULL);
        break;
    case V_HEIC:
    case V_AVIF:
        rc = vips_heifsave(t1, path, "Q", 50, "strip", strip, "effort", 0, "compression",
                           v == V_AVIF ? VIPS_FOREIGN_HEIF_COMPRESSION_AV1
                                       : VIPS_FOREIGN_HEIF_COMPRESSION_HEVC,
                           NULL);
        break;
    default:
        break;
    }
out:
    if (rc)
        fprintf(stderr, "generate %s: %s", path, vips_error_buffer());
    vips_error_clear();
    VIPS_UNREF(t2);
    VIPS_UNREF(t1);
    g_object_unref(img);
    return rc;
}

/* ---------------------------------------------------------------- the grid */

typedef struct {
    variant_t v;
    int w, h, orient;
    imgproc_job_t job;
} case_t;

typedef struct {
    case_t *c;
    size_t n, cap;
} grid_t;

static void add(grid_t *g, variant_t v, int w, int h, int orient, imgproc_op_t op, int tw, int th,
                imgproc_fmt_t fmt, bool naive)
{
    if (g->n == g->cap) {
        g->cap = g->cap ? 2 * g->cap : 256;
        g->c = realloc(g->c, g->cap * sizeof(*g->c));
        if (!g->c)
            abort();
    }
    g->c[g->n++] = (case_t){
        v,
        w,
        h,
        orient,
        {.op = op, .width = (uint32_t)tw, .height = (uint32_t)th, .out_fmt = fmt, .naive = naive}};
}

static const struct {
    int w, h;
} full_sizes[] = {{640, 480}, {1600, 1200}, {3000, 2000}, {4000, 6000}, {6000, 4000}, {8192, 6144}},
  reduced_sizes[] = {{320, 240}, {1600, 1000}};

static bool reduced_variant(int v)
{
    return v != V_JPEG_BASE444 && v != V_JPEG_PROG444 && v != V_PNG_GREY && v != V_PNG_PALETTE;
}

/* Every underestimate the attack (`make estimator-attack`) found, the worst of each family,
 * fixed in the estimator and kept here so that `make test` holds them: wide short images
 * (every stage holds the whole image), 16-bit grey, text and ICC metadata, strips. */
static const struct {
    variant_t v;
    int w, h;
    imgproc_op_t op;
    int tw, th;
    imgproc_fmt_t fmt;
    bool naive;
} found[] = {
    {V_PNG_GREY16, 21999, 37, IMGPROC_OP_FIT, 6388, 6638, IMGPROC_FMT_JPEG, false}, /* 8.07x */
    {V_PNG_BIGTEXT, 2, 4, IMGPROC_OP_FIT, 0, 1, IMGPROC_FMT_JPEG, false},           /* 4.31x */
    {V_PNG_RGBA16, 21490, 36, IMGPROC_OP_FIT, 6388, 6638, IMGPROC_FMT_JPEG, false}, /* 3.34x */
    {V_PNG_RGBA, 21999, 37, IMGPROC_OP_FIT, 6388, 6638, IMGPROC_FMT_JPEG, false},   /* 3.28x */
    {V_PNG_RGB16, 21754, 34, IMGPROC_OP_FIT, 6388, 6638, IMGPROC_FMT_JPEG, false},  /* 2.51x */
    {V_PNG_ICC, 21754, 34, IMGPROC_OP_FIT, 6195, 7282, IMGPROC_FMT_JPEG, false},    /* 2.48x */
    {V_PNG_RGB, 21999, 37, IMGPROC_OP_FIT, 6388, 6638, IMGPROC_FMT_JPEG, false},    /* 2.46x */
    {V_PNG_PALETTE_ALPHA, 6934, 34, IMGPROC_OP_COVER, 42, 13, IMGPROC_FMT_JPEG, false},
    {V_PNG_PALETTE, 22579, 30, IMGPROC_OP_FIT, 5692, 5692, IMGPROC_FMT_JPEG, false},
    {V_PNG_INTERLACED_GREYA, 6379, 36, IMGPROC_OP_COVER, 42, 13, IMGPROC_FMT_JPEG, false},
    {V_PNG_GREY, 12777, 37, IMGPROC_OP_COVER, 39, 10, IMGPROC_FMT_JPEG, false},
    {V_JPEG_BIGICC, 1882, 3509, IMGPROC_OP_FIT, 304, 123, IMGPROC_FMT_JPEG, false}, /* 1.31x */
    {V_PNG_INTERLACED, 6623, 37, IMGPROC_OP_COVER, 38, 10, IMGPROC_FMT_JPEG, false},
    {V_PNG_GREY16, 12777, 37, IMGPROC_OP_FIT, 6407, 6407, IMGPROC_FMT_WEBP, true},
    {V_PNG_RGB16, 7490, 615, IMGPROC_OP_FIT, 0, 464, IMGPROC_FMT_JPEG, false},
    {V_PNG_GREY, 4593, 615, IMGPROC_OP_FIT, 3759, 3759, IMGPROC_FMT_JPEG, false},
    {V_PNG_RGBA, 4252, 334, IMGPROC_OP_CONVERT, 0, 0, IMGPROC_FMT_PNG, false},
    /* issue 12: a 1-pixel strip as a cover crop was planned 5.8 Mpx wide */
    {V_PNG_RGB, 20000, 1, IMGPROC_OP_COVER, 290, 290, IMGPROC_FMT_WEBP, false},
    {V_PNG_RGB, 1, 20000, IMGPROC_OP_FIT, 290, 290, IMGPROC_FMT_JPEG, false},
    /* issue 12 item 4: the per-job meter saw a noise JPEG to WebP 1.58x over; libwebp's
     * encoder grows with entropy and quality (1.18x at 2000x1500, 1.33x at 3000x2000) */
    {V_JPEG_NOISE, 2000, 1500, IMGPROC_OP_CONVERT, 0, 0, IMGPROC_FMT_WEBP, false},
    /* issue 15: the encoders' whole-output buffers on the costliest content */
    {V_JPEG_NOISE, 1600, 1000, IMGPROC_OP_CONVERT, 0, 0, IMGPROC_FMT_AVIF, false},
    {V_JPEG_NOISE, 1600, 1000, IMGPROC_OP_CONVERT, 0, 0, IMGPROC_FMT_JXL, false},
    {V_JPEG_NOISE, 1600, 1000, IMGPROC_OP_CONVERT, 0, 0, IMGPROC_FMT_GIF, false},
    {V_PNG_NOISE_RGBA, 1000, 1000, IMGPROC_OP_CONVERT, 0, 0, IMGPROC_FMT_AVIF, false},
    {V_PNG_NOISE_RGBA, 1000, 1000, IMGPROC_OP_CONVERT, 0, 0, IMGPROC_FMT_JXL, false},
    /* animated outputs: every frame decoded, resized, cropped and encoded (issue 15) */
    {V_GIF_ANIM10, 400, 300, IMGPROC_OP_FIT, 100, 100, IMGPROC_FMT_GIF, false},
    {V_GIF_ANIM10, 400, 300, IMGPROC_OP_COVER, 100, 100, IMGPROC_FMT_WEBP, false},
    {V_GIF_ANIM50, 400, 300, IMGPROC_OP_FIT, 290, 290, IMGPROC_FMT_WEBP, false},
    {V_GIF_ANIM50, 400, 300, IMGPROC_OP_COVER, 290, 290, IMGPROC_FMT_GIF, false},
    {V_GIF_ANIM50, 400, 300, IMGPROC_OP_CONVERT, 0, 0, IMGPROC_FMT_WEBP, false},
    {V_WEBP_ANIM10, 400, 300, IMGPROC_OP_FIT, 100, 100, IMGPROC_FMT_WEBP, false},
    {V_WEBP_ANIM10, 400, 300, IMGPROC_OP_COVER, 100, 100, IMGPROC_FMT_GIF, false},
    {V_WEBP_ANIM10, 400, 300, IMGPROC_OP_SMART, 200, 200, IMGPROC_FMT_WEBP, false},
    {V_WEBP_ANIM50, 400, 300, IMGPROC_OP_FIT, 290, 290, IMGPROC_FMT_GIF, false},
    {V_WEBP_ANIM50, 400, 300, IMGPROC_OP_COVER, 290, 290, IMGPROC_FMT_WEBP, false},
    {V_WEBP_ANIM50, 400, 300, IMGPROC_OP_FIT, 100, 100, IMGPROC_FMT_JPEG, false}, /* a still */
    /* 1-pixel strips to JPEG XL (per-row cost, 2.03x) and AVIF (bordered frames, 1.44x) */
    {V_WEBP_LOSSLESS, 1, 10730, IMGPROC_OP_CONVERT, 0, 0, IMGPROC_FMT_JXL, false},
    {V_WEBP_LOSSLESS, 1, 10730, IMGPROC_OP_CONVERT, 0, 0, IMGPROC_FMT_AVIF, false},
    {V_PNG_NOISE_RGBA, 16000, 1, IMGPROC_OP_CONVERT, 0, 0, IMGPROC_FMT_AVIF, false},
    /* an animation of short frames is a tall roll to the pipeline (2.34x, 2.08x) */
    {V_GIF_ANIM50, 9237, 5, IMGPROC_OP_FIT, 134, 8, IMGPROC_FMT_WEBP, false},
    {V_GIF_ANIM50, 2000, 100, IMGPROC_OP_FIT, 134, 8, IMGPROC_FMT_WEBP, false},
    /* the attention search on a wide image with alpha (1.02x) */
    {V_GIF_ALPHA, 9317, 241, IMGPROC_OP_SMART, 562, 1241, IMGPROC_FMT_PNG, false},
};

/* Full grid: every variant x size with fit 290x290, cover 290x290, one side (800 wide),
 * a bigger cover (1200x1200, which enlarges small images), a naive fit, and full-size
 * conversions (to every format up to 6 MP, to JPEG above, where the encoders cost what
 * they cost); EXIF orientation 6 on a subset; very wide and very tall images.
 * Reduced grid (make test): small and medium sizes, fewer variants and operations. */
static void build_grid(grid_t *g, bool reduced)
{
    size_t ns = reduced ? sizeof(reduced_sizes) / sizeof(reduced_sizes[0])
                        : sizeof(full_sizes) / sizeof(full_sizes[0]);
    if (!reduced) /* the PNG fact: 8000x8000 to 290x290 */
        add(g, V_PNG_RGB, 8000, 8000, 1, IMGPROC_OP_FIT, 290, 290, IMGPROC_FMT_JPEG, false);
    for (size_t i = 0; i < sizeof(found) / sizeof(found[0]); i++)
        add(g, found[i].v, found[i].w, found[i].h, 1, found[i].op, found[i].tw, found[i].th,
            found[i].fmt, found[i].naive);
    for (int v = 0; v < V_GRID_COUNT; v++) {
        if (reduced && !reduced_variant(v))
            continue;
        for (size_t s = 0; s < ns; s++) {
            int w = reduced ? reduced_sizes[s].w : full_sizes[s].w;
            int h = reduced ? reduced_sizes[s].h : full_sizes[s].h;
            long px = (long)w * h;
            if (v == V_WEBP_LOSSLESS && px > 30000000)
                continue; /* encoding the sample takes minutes */
            if (v == V_WEBP_ANIM && px > 6000000)
                continue;
            if ((v == V_JPEG_ICC || v == V_PNG_ICC) && !reduced && s != 0 && s != 1 && s != 4)
                continue;
            bool big = px > 30000000, mid = px > 6000000;
            add(g, v, w, h, 1, IMGPROC_OP_FIT, 290, 290, IMGPROC_FMT_JPEG, false);
            add(g, v, w, h, 1, IMGPROC_OP_COVER, 290, 290, IMGPROC_FMT_WEBP, false);
            add(g, v, w, h, 1, IMGPROC_OP_FIT, 800, 0, IMGPROC_FMT_PNG, false);
            /* smart crop (issue 15): attention searches the shrunk image held in memory */
            add(g, v, w, h, 1, IMGPROC_OP_SMART, 290, 290, IMGPROC_FMT_JPEG, false);
            if (!reduced) {
                add(g, v, w, h, 1, IMGPROC_OP_COVER, 1200, 1200, IMGPROC_FMT_JPEG, false);
                add(g, v, w, h, 1, IMGPROC_OP_SMART, 1200, 1200, IMGPROC_FMT_WEBP, false);
            }
            if (!big || v == V_JPEG_BASE420 || v == V_PNG_RGB)
                add(g, v, w, h, 1, IMGPROC_OP_FIT, 290, 290, IMGPROC_FMT_JPEG, true);
            add(g, v, w, h, 1, IMGPROC_OP_CONVERT, 0, 0, IMGPROC_FMT_JPEG, false);
            if (reduced ? s == 0
                        : !big && (!mid || v == V_JPEG_BASE420 || v == V_PNG_RGB ||
                                   v == V_WEBP_LOSSY || v == V_PNG_RGBA)) {
                add(g, v, w, h, 1, IMGPROC_OP_CONVERT, 0, 0, IMGPROC_FMT_PNG, false);
                add(g, v, w, h, 1, IMGPROC_OP_CONVERT, 0, 0, IMGPROC_FMT_WEBP, false);
            }
            /* issue 15's encoders: thumbnails from every variant and size, full-size
             * conversions up to 2 MP (the AVIF encode of 3 MP takes seconds); the reduced grid
             * has the thumbnails of its larger size only */
            if (!reduced || s == 1) {
                add(g, v, w, h, 1, IMGPROC_OP_FIT, 290, 290, IMGPROC_FMT_AVIF, false);
                add(g, v, w, h, 1, IMGPROC_OP_COVER, 290, 290, IMGPROC_FMT_JXL, false);
                add(g, v, w, h, 1, IMGPROC_OP_FIT, 290, 290, IMGPROC_FMT_GIF, false);
            }
            if (reduced ? s == 1 && (v == V_JPEG_BASE420 || v == V_PNG_RGBA) : px <= 2000000) {
                add(g, v, w, h, 1, IMGPROC_OP_CONVERT, 0, 0, IMGPROC_FMT_AVIF, false);
                add(g, v, w, h, 1, IMGPROC_OP_CONVERT, 0, 0, IMGPROC_FMT_JXL, false);
                add(g, v, w, h, 1, IMGPROC_OP_CONVERT, 0, 0, IMGPROC_FMT_GIF, false);
            }
            bool orient = v == V_JPEG_BASE420 || v == V_JPEG_PROG420 || v == V_PNG_RGB ||
                          v == V_PNG_INTERLACED || v == V_WEBP_LOSSY;
            if (orient && (reduced ? s == 1 : (s == 1 || s == 4))) {
                add(g, v, w, h, 6, IMGPROC_OP_FIT, 290, 290, IMGPROC_FMT_JPEG, false);
                add(g, v, w, h, 6, IMGPROC_OP_COVER, 290, 290, IMGPROC_FMT_JPEG, false);
                add(g, v, w, h, 6, IMGPROC_OP_SMART, 400, 200, IMGPROC_FMT_JPEG, false);
                add(g, v, w, h, 6, IMGPROC_OP_CONVERT, 0, 0, IMGPROC_FMT_JPEG, false);
            }
        }
    }
    if (!reduced) {
        static const variant_t odd[] = {V_JPEG_BASE420, V_JPEG_PROG420, V_PNG_RGB, V_WEBP_LOSSY};
        static const int dims[2][2] = {{16000, 1000}, {1000, 16000}};
        for (size_t i = 0; i < sizeof(odd) / sizeof(odd[0]); i++)
            for (int d = 0; d < 2; d++) {
                int w = dims[d][0], h = dims[d][1];
                add(g, odd[i], w, h, 1, IMGPROC_OP_FIT, 290, 290, IMGPROC_FMT_JPEG, false);
                add(g, odd[i], w, h, 1, IMGPROC_OP_COVER, 290, 290, IMGPROC_FMT_WEBP, false);
                add(g, odd[i], w, h, 1, IMGPROC_OP_FIT, 800, 0, IMGPROC_FMT_PNG, false);
                add(g, odd[i], w, h, 1, IMGPROC_OP_CONVERT, 0, 0, IMGPROC_FMT_JPEG, false);
            }
    }
}

static void image_path(char *buf, size_t n, const char *dir, variant_t v, int w, int h, int o)
{
    int k = snprintf(buf, n, "%s/%s-%dx%d-o%d.%s", dir, variants[v].name, w, h, o, variants[v].ext);
    if (k < 0 || (size_t)k >= n) {
        fprintf(stderr, "calibrate: path too long under %s\n", dir);
        exit(2);
    }
}

static const char *op_name(imgproc_op_t op)
{
    return op == IMGPROC_OP_FIT     ? "fit"
           : op == IMGPROC_OP_COVER ? "cover"
           : op == IMGPROC_OP_SMART ? "smart"
                                    : "convert";
}

/* Small images covering every loader/saver path, for the child's warm-up. */
static int make_warm(const char *dir)
{
    char path[4096];
    for (int v = 0; v < V__COUNT; v++) {
        image_path(path, sizeof(path), dir, (variant_t)v, 96, 64, 1);
        if (access(path, R_OK) != 0 && generate((variant_t)v, 96, 64, 1, path))
            return -1;
        image_path(path, sizeof(path), dir, (variant_t)v, 96, 64, 6);
        if (access(path, R_OK) != 0 && generate((variant_t)v, 96, 64, 6, path))
            return -1;
    }
    return 0;
}

/* ---------------------------------------------------------------- child: one measurement */

/* A "Key: N kB" field of /proc/<pid>/status in KiB; -1 when unreadable. */
static long proc_kib(pid_t pid, const char *key)
{
    char p[64], line[256];
    snprintf(p, sizeof(p), "/proc/%ld/status", (long)pid);
    FILE *f = fopen(p, "r");
    long v = -1;
    size_t kl = strlen(key);
    if (!f)
        return -1;
    while (fgets(line, sizeof(line), f))
        if (strncmp(line, key, kl) == 0 && line[kl] == ':')
            v = atol(line + kl + 1);
    fclose(f);
    return v;
}

static long status_kib(const char *key)
{
    return proc_kib(getpid(), key);
}

static int reset_hwm(void)
{
    int fd = open("/proc/self/clear_refs", O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int rc = write(fd, "5", 1) == 1 ? 0 : -1;
    close(fd);
    return rc;
}

typedef struct {
    const char *file, *warm_file, *out_path;
    imgproc_job_t job;
    bool cold;
    int rc;
    imgproc_err_t err;
    uint64_t estimate, measured, vips_hw;
    imgproc_out_t out;
    uint32_t pw, ph;
    double ms;
} measure_t;

/* The server's defaults; CALIBRATE_QUALITY=N in the environment sets the JPEG and WebP
 * quality of the measured jobs (the estimate does not depend on it: check the worst). */
static imgproc_opts_t cal_opts = {.jpeg_quality = 80,
                                  .webp_quality = 75,
                                  .png_compression = 6,
                                  .avif_quality = 60,
                                  .avif_effort = 2,
                                  .jxl_quality = 75,
                                  .jxl_effort = 7,
                                  .keep_icc = false};

#define SMALL_JOB (4u << 20)

static void *measure_thread(void *arg)
{
    measure_t *m = arg;
    imgproc_probe_t probe;

    if (!m->cold) {
        /* Same loader, same operation and saver, on a tiny image of the same kind. */
        imgproc_job_t wj = m->job;
        if (wj.op != IMGPROC_OP_CONVERT) {
            wj.width = wj.width > 48 ? 48 : wj.width;
            wj.height = wj.height > 48 ? 48 : wj.height;
        }
        imgproc_out_t wo;
        imgproc_err_t we;
        if (imgproc_run(m->warm_file, &wj, &cal_opts, m->out_path, &wo, &we) != 0) {
            fprintf(stderr, "warm-up %s: %s\n", m->warm_file, we.msg);
            m->rc = -1;
            return NULL;
        }
    }
    if ((m->rc = imgproc_probe_file(m->file, &probe, &m->err)) != 0)
        return NULL;
    m->estimate = imgproc_estimate(&probe, &m->job);
    imgproc_output_dims(&probe, &m->job, &m->pw, &m->ph);
    /* Small jobs are measured three times and the largest peak kept: below a few MiB the
     * allocator's state makes single readings of the same job vary by 2x (0.4-0.8 MiB for a
     * 640x480 grey PNG); the high readings are what the estimate must cover, and a lucky
     * low one would make it look wasteful. */
    for (int pass = 0; pass < 3; pass++) {
        imgproc_trim();
        if (reset_hwm() != 0) {
            fprintf(stderr, "cannot reset VmHWM via /proc/self/clear_refs\n");
            m->rc = -1;
            return NULL;
        }
        long base = status_kib("VmRSS");
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        m->rc = imgproc_run(m->file, &m->job, &cal_opts, m->out_path, &m->out, &m->err);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        long peak = status_kib("VmHWM");
        if (m->rc != 0)
            return NULL;
        uint64_t measured = peak > base ? (uint64_t)(peak - base) * 1024 : 0;
        if (pass == 0) {
            uint64_t vips_hw;
            imgproc_vips_mem(NULL, &vips_hw);
            m->vips_hw = vips_hw;
            m->ms = (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) / 1e6;
        }
        m->measured = measured > m->measured ? measured : m->measured;
        if (m->measured >= SMALL_JOB)
            break;
    }
    return NULL;
}

static int child_measure(int argc, char **argv)
{
    /* --measure FILE OP W H FMT NAIVE WARMFILE COLD */
    if (argc != 10)
        return 2;
    measure_t m = {.file = argv[2], .warm_file = argv[8], .cold = atoi(argv[9])};
    const char *q = getenv("CALIBRATE_QUALITY");
    if (q && atoi(q) >= 1 && atoi(q) <= 100)
        cal_opts.jpeg_quality = cal_opts.webp_quality = (unsigned)atoi(q);
    m.job.webp_quality = cal_opts.webp_quality;
    const char *e = getenv("CALIBRATE_AVIF_EFFORT");
    if (e && atoi(e) >= 0 && atoi(e) <= 9)
        cal_opts.avif_effort = (unsigned)atoi(e);
    m.job.avif_effort = cal_opts.avif_effort;
    m.job.op = (imgproc_op_t)atoi(argv[3]);
    m.job.width = (uint32_t)atoi(argv[4]);
    m.job.height = (uint32_t)atoi(argv[5]);
    m.job.out_fmt = (imgproc_fmt_t)atoi(argv[6]);
    m.job.naive = atoi(argv[7]);
    if (getenv("CALIBRATE_TIMEOUT_MS")) /* the job deadline armed, to measure its cost */
        m.job.timeout_ms = (uint32_t)atoi(getenv("CALIBRATE_TIMEOUT_MS"));
    char out_path[4096];
    snprintf(out_path, sizeof(out_path), "%s.out-%ld.tmp", m.warm_file, (long)getpid());
    m.out_path = out_path;
    if (imgproc_init(argv[0]) != 0)
        return 2;
    pthread_t th;
    if (pthread_create(&th, NULL, measure_thread, &m) != 0)
        return 2;
    pthread_join(th, NULL);
    unlink(out_path);
    if (m.rc != 0) {
        printf("ERROR %s\n", m.err.msg);
        return 1;
    }
    printf("RESULT %llu %llu %llu %.1f %u %u %u %u %llu\n", (unsigned long long)m.estimate,
           (unsigned long long)m.measured, (unsigned long long)m.vips_hw, m.ms, m.out.width,
           m.out.height, m.pw, m.ph, (unsigned long long)m.out.bytes);
    return 0;
}

/* ---------------------------------------------------------------- parent: run the grid */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Starts argv as a child with stdout into a pipe; returns its pid (or -1) and the read end. */
static pid_t spawn_child(char *const argv[], char *const envp[], int *rfd)
{
    int pfd[2];
    if (pipe2(pfd, O_CLOEXEC) != 0)
        return -1;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, pfd[1], 1);
    pid_t pid;
    int rc = posix_spawn(&pid, "/proc/self/exe", &fa, NULL, argv, envp ? envp : environ);
    posix_spawn_file_actions_destroy(&fa);
    close(pfd[1]);
    if (rc != 0) {
        close(pfd[0]);
        return -1;
    }
    *rfd = pfd[0];
    return pid;
}

/* Reads what is left in @p fd (up to n-1 bytes) and closes it. */
static void drain(int fd, char *buf, size_t n)
{
    size_t got = 0;
    for (;;) {
        ssize_t k = read(fd, buf + got, n - 1 - got);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0 || (got += (size_t)k) == n - 1)
            break;
    }
    buf[got] = '\0';
    close(fd);
}

/* Runs argv as a child with stdout into @p buf. Returns the exit status or -1. */
static int spawn_capture(char *const argv[], char *buf, size_t n, char *const envp[])
{
    int fd, st;
    pid_t pid = spawn_child(argv, envp, &fd);
    if (pid < 0)
        return -1;
    drain(fd, buf, n);
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int rm_rf(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char p[4096];
    if (!d)
        return -1;
    while ((e = readdir(d))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        snprintf(p, sizeof(p), "%s/%s", dir, e->d_name);
        unlink(p);
    }
    closedir(d);
    return rmdir(dir);
}

typedef struct {
    char out[1024];
    int status;
    bool done;
} result_t;

/* Prints one finished case; updates the tallies. */
static void report(const case_t *c, const char *path, const result_t *res, bool verbose,
                   double *ratios, size_t *nres, size_t *under, size_t *failed, double *worst,
                   double *lowest)
{
    unsigned long long est, meas, vhw, obytes;
    double ms;
    unsigned ow, oh, pw, ph;
    char jobname[64];
    snprintf(jobname, sizeof(jobname), "%s%s %ux%u->%s", c->job.naive ? "naive-" : "",
             op_name(c->job.op), c->job.width, c->job.height, imgproc_fmt_name(c->job.out_fmt));
    const char *base = strrchr(path, '/') + 1;
    if (res->status != 0 || sscanf(res->out, "RESULT %llu %llu %llu %lf %u %u %u %u %llu", &est,
                                   &meas, &vhw, &ms, &ow, &oh, &pw, &ph, &obytes) != 9) {
        printf("%-44s %-22s FAILED: %s", base, jobname, res->out[0] ? res->out : "(no output)\n");
        (*failed)++;
        return;
    }
    double ratio = meas ? (double)est / (double)meas : 99.0;
    ratios[(*nres)++] = ratio;
    if (est < meas)
        (*under)++;
    *worst = ratio > *worst ? ratio : *worst;
    *lowest = ratio < *lowest ? ratio : *lowest;
    bool dims_ok = ow == pw && oh == ph;
    printf("%-44s %-22s %10.2f %10.2f %7.2f %5ux%-5u %8.0f%s%s", base, jobname, est / 1048576.0,
           meas / 1048576.0, ratio, ow, oh, ms, est < meas ? "  UNDER" : "",
           dims_ok ? "" : "  DIMS-MISMATCH");
    if (verbose)
        printf("  vips_hw=%.2f out_bytes=%llu", vhw / 1048576.0, obytes);
    printf("\n");
    fflush(stdout);
    if (!dims_ok)
        (*failed)++;
}

static int run_grid(const char *argv0, bool reduced, const char *dir_arg, bool cold, bool verbose,
                    int jobs)
{
    char dir[4096];
    bool temp = dir_arg == NULL;
    if (temp) {
        const char *tmp = getenv("TMPDIR");
        snprintf(dir, sizeof(dir), "%s/thumbgate-calib-XXXXXX", tmp && *tmp ? tmp : "/tmp");
        if (!mkdtemp(dir)) {
            perror("mkdtemp");
            return 2;
        }
    } else {
        snprintf(dir, sizeof(dir), "%s", dir_arg);
        mkdir(dir, 0755);
    }
    if (VIPS_INIT(argv0))
        return 2;
    vips_cache_set_max(0);

    grid_t g = {0};
    build_grid(&g, reduced);
    if (make_warm(dir) != 0)
        return 2;
    fprintf(stderr, "calibrate: %zu cases, %d at a time, images in %s\n", g.n, jobs, dir);

    double *ratios = calloc(g.n, sizeof(double));
    result_t *res = calloc(g.n, sizeof(result_t));
    pid_t *pids = calloc(g.n, sizeof(pid_t));
    int *fds = calloc(g.n, sizeof(int));
    char(*paths)[512] = calloc(g.n, sizeof(*paths));
    if (!ratios || !res || !pids || !fds || !paths)
        return 2;
    size_t nres = 0, under = 0, failed = 0, next = 0, printed = 0;
    int inflight = 0;
    double worst = 0, lowest = 1e9;
    printf("%-44s %-22s %10s %10s %7s %11s %8s\n", "image", "job", "est_MB", "meas_MB", "ratio",
           "out", "ms");
    while (printed < g.n) {
        while (inflight < jobs && next < g.n) {
            case_t *c = &g.c[next];
            image_path(paths[next], sizeof(paths[next]), dir, c->v, c->w, c->h, c->orient);
            if (access(paths[next], R_OK) != 0 &&
                generate(c->v, c->w, c->h, c->orient, paths[next]) != 0) {
                snprintf(res[next].out, sizeof(res[next].out), "cannot generate image\n");
                res[next].status = -1;
                res[next].done = true;
                next++;
                continue;
            }
            char a[6][32], warm[512];
            snprintf(a[0], 32, "%d", (int)c->job.op);
            snprintf(a[1], 32, "%u", c->job.width);
            snprintf(a[2], 32, "%u", c->job.height);
            snprintf(a[3], 32, "%d", (int)c->job.out_fmt);
            snprintf(a[4], 32, "%d", (int)c->job.naive);
            snprintf(a[5], 32, "%d", (int)cold);
            image_path(warm, sizeof(warm), dir, c->v, 96, 64, c->orient);
            char *args[] = {(char *)argv0, "--measure", paths[next], a[0], a[1], a[2],
                            a[3],          a[4],        warm,        a[5], NULL};
            if ((pids[next] = spawn_child(args, NULL, &fds[next])) < 0) {
                res[next].status = -1;
                res[next].done = true;
            } else {
                inflight++;
            }
            next++;
        }
        if (inflight > 0) {
            int st;
            pid_t pid = waitpid(-1, &st, 0);
            if (pid < 0 && errno == EINTR)
                continue;
            for (size_t i = 0; pid > 0 && i < next; i++)
                if (pids[i] == pid && !res[i].done) {
                    drain(fds[i], res[i].out, sizeof(res[i].out));
                    res[i].status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
                    res[i].done = true;
                    inflight--;
                }
        }
        while (printed < g.n && res[printed].done) {
            report(&g.c[printed], paths[printed], &res[printed], verbose, ratios, &nres, &under,
                   &failed, &worst, &lowest);
            printed++;
        }
    }
    qsort(ratios, nres, sizeof(double), cmp_double);
    double median =
        nres ? (nres % 2 ? ratios[nres / 2] : (ratios[nres / 2 - 1] + ratios[nres / 2]) / 2) : 0;
    printf("cases=%zu underestimates=%zu median_ratio=%.2f worst_ratio=%.2f lowest_ratio=%.2f"
           " failed=%zu\n",
           nres, under, median, worst, nres ? lowest : 0, failed);
    if (reduced) /* small images: the floor dominates, ratios are not meaningful here */
        printf("targets (reduced grid checks underestimates only): underestimates=0 %s\n",
               under ? "FAIL" : "ok");
    else
        printf("targets: underestimates=0 %s, median<=1.3 %s, worst<=3 %s\n", under ? "FAIL" : "ok",
               median <= 1.3 ? "ok" : "FAIL", worst <= 3.0 ? "ok" : "FAIL");
    free(ratios);
    free(res);
    free(pids);
    free(fds);
    free(paths);
    free(g.c);
    if (temp)
        rm_rf(dir);
    return (under || failed) ? 1 : 0;
}

/* ---------------------------------------------------------------- allocator burst */

typedef struct {
    const char *file, *out;
    int rc;
} burst_arg_t;

static void *burst_thread(void *p)
{
    burst_arg_t *a = p;
    imgproc_job_t job = {
        .op = IMGPROC_OP_FIT, .width = 290, .height = 290, .out_fmt = IMGPROC_FMT_JPEG};
    imgproc_err_t err;
    imgproc_out_t out;
    a->rc = imgproc_run(a->file, &job, &cal_opts, a->out, &out, &err);
    return NULL;
}

static int child_burst(int argc, char **argv)
{
    /* --burst-child N FILE... DIR */
    if (argc < 5)
        return 2;
    int n = atoi(argv[2]);
    int nfiles = argc - 4;
    const char *dir = argv[argc - 1];
    const char *only_mmap = getenv("CALIBRATE_BURST_MMAP_ONLY");
    if (only_mmap && strcmp(only_mmap, "1") == 0) /* with IMGPROC_MALLOC_DEFAULTS=1 */
        mallopt(M_MMAP_THRESHOLD, 128 * 1024);
    if (imgproc_init(argv[0]) != 0)
        return 2;
    long before = status_kib("VmRSS");
    pthread_t *th = calloc((size_t)n, sizeof(*th));
    burst_arg_t *a = calloc((size_t)n, sizeof(*a));
    char(*outs)[4096] = calloc((size_t)n, sizeof(*outs));
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < n; i++) {
            snprintf(outs[i], sizeof(outs[i]), "%s/burst-%ld-%d.jpg", dir, (long)getpid(), i);
            a[i] = (burst_arg_t){argv[3 + (i + round) % nfiles], outs[i], 0};
            pthread_create(&th[i], NULL, burst_thread, &a[i]);
        }
        for (int i = 0; i < n; i++) {
            pthread_join(th[i], NULL);
            unlink(outs[i]);
            if (a[i].rc)
                fprintf(stderr, "burst job %d failed\n", i);
        }
    }
    long peak = status_kib("VmHWM"), after = status_kib("VmRSS");
    imgproc_trim();
    long trimmed = status_kib("VmRSS");
    printf("idle_before_kib=%ld peak_kib=%ld after_burst_kib=%ld after_trim_kib=%ld\n", before,
           peak, after, trimmed);
    free(th);
    free(a);
    free(outs);
    return 0;
}

static int run_burst(const char *argv0, int n, const char *dir_arg)
{
    char dir[4096];
    const char *tmp = getenv("TMPDIR");
    if (dir_arg)
        snprintf(dir, sizeof(dir), "%s", dir_arg);
    else {
        snprintf(dir, sizeof(dir), "%s/thumbgate-burst-XXXXXX", tmp && *tmp ? tmp : "/tmp");
        if (!mkdtemp(dir))
            return 2;
    }
    mkdir(dir, 0755);
    if (VIPS_INIT(argv0))
        return 2;
    char f[3][4096];
    image_path(f[0], sizeof(f[0]), dir, V_JPEG_PROG420, 6000, 4000, 1);
    image_path(f[1], sizeof(f[1]), dir, V_JPEG_BASE420, 6000, 4000, 1);
    image_path(f[2], sizeof(f[2]), dir, V_PNG_RGB, 4000, 3000, 1);
    variant_t vs[3] = {V_JPEG_PROG420, V_JPEG_BASE420, V_PNG_RGB};
    int ws[3] = {6000, 6000, 4000}, hs[3] = {4000, 4000, 3000};
    for (int i = 0; i < 3; i++)
        if (access(f[i], R_OK) != 0 && generate(vs[i], ws[i], hs[i], 1, f[i]))
            return 2;
    char ns[16];
    snprintf(ns, sizeof(ns), "%d", n);
    char *args[] = {(char *)argv0, "--burst-child", ns, f[0], f[1], f[2], dir, NULL};
    static char env_defaults[] = "IMGPROC_MALLOC_DEFAULTS=1";
    static char env_mmap_only[] = "CALIBRATE_BURST_MMAP_ONLY=1";
    size_t ne = 0;
    while (environ[ne])
        ne++;
    char **env = calloc(ne + 3, sizeof(char *));
    if (!env)
        return 2;
    memcpy(env, environ, ne * sizeof(char *));
    env[ne] = env_defaults;
    char out[1024];
    printf("burst: %d concurrent jobs x 3 rounds (6000x4000 progressive + baseline JPEG, "
           "4000x3000 PNG -> 290x290), RSS in KiB\n",
           n);
    if (spawn_capture(args, out, sizeof(out), env) == 0)
        printf("glibc defaults:              %s", out);
    env[ne + 1] = env_mmap_only;
    if (spawn_capture(args, out, sizeof(out), env) == 0)
        printf("M_MMAP_THRESHOLD=128K only:  %s", out);
    if (spawn_capture(args, out, sizeof(out), NULL) == 0)
        printf("imgproc malloc policy:       %s", out);
    free(env);
    if (!dir_arg)
        rm_rf(dir);
    return 0;
}

/* ---------------------------------------------------------------- the attack
 *
 * calibrate --attack [--minutes M] [--cases N] [--seed S] [--jobs J] [--dir DIR]
 *                    [--server BIN] [--server-every K]
 * Searches for the jobs the estimator gets most wrong in the dangerous direction: random
 * headers x operations (extreme aspect ratios, sizes on both sides of the JPEG/WebP
 * shrink-on-load steps, every mode and output format, every variant above), plus
 * hill-climbing from the cases with the highest measured/estimate ratio (small changes to
 * the size, the box, the mode or the format). Each case runs in a fresh child exactly as
 * the grid does. With --server, every K-th image also goes through a running thumbgate
 * (PUT, then one GET per job, one request at a time), and the server's peak over its RSS
 * before the request is held against the same estimate. Ends after M minutes or N cases
 * (whichever first) with a summary; exit 1 on any underestimate. Each run searches from a
 * new seed (clock and pid) unless --seed S is given; the first line prints it, so a run
 * that found something can be replayed. */

typedef struct {
    uint64_t s;
} rng_t;

static uint64_t rnd(rng_t *r)
{
    r->s ^= r->s << 13;
    r->s ^= r->s >> 7;
    r->s ^= r->s << 17;
    return r->s;
}

static double rnd01(rng_t *r)
{
    return (double)(rnd(r) >> 11) / (double)(1ull << 53);
}

static int rnd_in(rng_t *r, int lo, int hi) /* inclusive */
{
    return lo + (int)(rnd(r) % (uint64_t)(hi - lo + 1));
}

/* Log-uniform integer in [lo, hi]. */
static int rnd_log(rng_t *r, int lo, int hi)
{
    double v = exp(log(lo) + rnd01(r) * (log(hi) - log(lo)));
    int k = (int)(v + 0.5);
    return k < lo ? lo : k > hi ? hi : k;
}

static bool is_jpeg(variant_t v)
{
    return strcmp(variants[v].ext, "jpg") == 0;
}

static bool is_webp(variant_t v)
{
    return strcmp(variants[v].ext, "webp") == 0;
}

/* Largest side and pixel count the attack generates for a variant (generation time). */
static void variant_caps(variant_t v, int *max_side, long *max_px)
{
    *max_side = is_jpeg(v) ? 65500 : is_webp(v) ? 16383 : 60000;
    *max_px = 40000000;
    if (v == V_WEBP_LOSSLESS || v == V_WEBP_LOSSLESS_ALPHA)
        *max_px = 6000000;
    else if (v == V_WEBP_ANIM)
        *max_px = 2500000;
    else if (anim_frames(v) > 1)
        *max_px = 40000000 / anim_frames(v);
    else if (v == V_PNG_BIGTEXT || v == V_JPEG_BIGICC || v == V_WEBP_BIGICC || variants[v].noisy)
        *max_px = 12000000;
    else if (v == V_GIF || v == V_GIF_ALPHA || v == V_HEIC || v == V_AVIF)
        *max_px = 12000000; /* generation time */
    if (v == V_HEIC || v == V_AVIF)
        *max_side = 16384; /* libheif's limit: larger is refused at upload */
    if (v == V_GIF || v == V_GIF_ALPHA || v == V_GIF_ANIM10 || v == V_GIF_ANIM50)
        *max_side = 65535;
}

static void clamp_shape(variant_t v, int *w, int *h)
{
    int ms;
    long mp;
    variant_caps(v, &ms, &mp);
    *w = *w < 1 ? 1 : *w > ms ? ms : *w;
    *h = *h < 1 ? 1 : *h > ms ? ms : *h;
    while ((long)*w * *h > mp) {
        if (*w >= *h)
            *w = (int)(*w * 0.9);
        else
            *h = (int)(*h * 0.9);
    }
    *w = *w < 1 ? 1 : *w;
    *h = *h < 1 ? 1 : *h;
}

/* A random header: a strip (1xN, Nx1, 2xN, Nx2), a size just around a shrink-on-load step
 * for a typical box, or a log-uniform size. */
static void random_image(rng_t *r, variant_t *v, int *w, int *h, int *o)
{
    *v = (variant_t)rnd_in(r, 0, V__COUNT - 1);
    double u = rnd01(r);
    if (u < 0.2) {
        int n = rnd_log(r, 2, 60000), thin = rnd_in(r, 1, 2);
        if (rnd(r) & 1)
            *w = n, *h = thin;
        else
            *w = thin, *h = n;
    } else if (u < 0.45) {
        static const double steps[] = {2, 4, 8, 16};
        int box = rnd_log(r, 32, 1600);
        double f = steps[rnd_in(r, 0, 3)];
        *w = (int)(box * f) + rnd_in(r, -2, 2);
        *h = (int)(*w / exp((rnd01(r) - 0.5) * 2.0) + 0.5);
    } else {
        *w = rnd_log(r, 1, 12000);
        *h = rnd_log(r, 1, 12000);
    }
    clamp_shape(*v, w, h);
    *o = 1;
    if ((*v == V_JPEG_BASE420 || *v == V_JPEG_PROG420 || *v == V_PNG_RGB ||
         *v == V_PNG_INTERLACED || *v == V_WEBP_LOSSY || *v == V_JPEG_CMYK) &&
        rnd01(r) < 0.2) {
        static const int os[] = {3, 6, 8};
        *o = os[rnd_in(r, 0, 2)];
    }
}

/* An output format: JPEG, PNG and WebP as often as before, AVIF, JPEG XL and GIF (issue 15)
 * a third of the time. */
static imgproc_fmt_t random_out(rng_t *r)
{
    static const imgproc_fmt_t outs[] = {IMGPROC_FMT_JPEG, IMGPROC_FMT_PNG, IMGPROC_FMT_WEBP,
                                         IMGPROC_FMT_JPEG, IMGPROC_FMT_PNG, IMGPROC_FMT_WEBP,
                                         IMGPROC_FMT_AVIF, IMGPROC_FMT_JXL, IMGPROC_FMT_GIF};
    return outs[rnd_in(r, 0, (int)(sizeof(outs) / sizeof(outs[0])) - 1)];
}

/* A random job for a w x h source; boxes near the shrink-on-load steps of that source. */
static imgproc_job_t random_job(rng_t *r, int w, int h)
{
    imgproc_job_t j = {.op = IMGPROC_OP_FIT, .out_fmt = random_out(r)};
    double u = rnd01(r);
    long px = (long)w * h;
    if (u < 0.12 && px <= 16000000) {
        j.op = IMGPROC_OP_CONVERT;
        return j;
    }
    j.op = u < 0.55 ? IMGPROC_OP_FIT : u < 0.85 ? IMGPROC_OP_COVER : IMGPROC_OP_SMART;
    j.naive = j.op == IMGPROC_OP_FIT && px <= 16000000 && rnd01(r) < 0.08;
    if (rnd01(r) < 0.35) {
        static const double steps[] = {2, 4, 8, 16};
        double f = steps[rnd_in(r, 0, 3)] * (1 + (rnd01(r) - 0.5) * 0.02);
        int big = w > h ? w : h;
        j.width = j.height = (uint32_t)fmax(1, big / f);
    } else {
        j.width = (uint32_t)rnd_log(r, 1, 2500);
        j.height = (uint32_t)rnd_log(r, 1, 2500);
    }
    if (j.op == IMGPROC_OP_FIT && rnd01(r) < 0.25) {
        if (rnd(r) & 1)
            j.width = 0;
        else
            j.height = 0;
    }
    return j;
}

typedef struct {
    case_t c;
    double est, meas, ratio; /* ratio = measured / estimate */
    double srv_meas;         /* in-server peak (0: not run there) */
    bool srv_failed;         /* the server answered its GET with other than 200 */
} att_rec_t;

#define ATT_POP 12

typedef struct {
    att_rec_t pop[ATT_POP]; /* the highest ratios seen, best first */
    int npop;
    att_rec_t over[10]; /* the largest est - measured (MiB wasted), for the report */
    int nover;
    size_t cases, under, failed, gen_failed, srv_cases, srv_under;
    double worst, srv_worst;
    att_rec_t worst_rec, srv_worst_rec;
    FILE *found; /* underestimated cases, one per line */
    FILE *log;   /* every case: name, estimate, child peak, server peak (0: not run there) */
} att_state_t;

static void case_name(const case_t *c, char *buf, size_t n)
{
    snprintf(buf, n, "%s %dx%d o%d %s%s %ux%u->%s", variants[c->v].name, c->w, c->h, c->orient,
             c->job.naive ? "naive-" : "", op_name(c->job.op), c->job.width, c->job.height,
             imgproc_fmt_name(c->job.out_fmt));
}

static void att_record(att_state_t *st, const att_rec_t *rec)
{
    /* population: keep the ATT_POP highest ratios (distinct cases) */
    int i = st->npop;
    if (st->npop < ATT_POP)
        st->npop++;
    else if (rec->ratio <= st->pop[ATT_POP - 1].ratio)
        i = -1;
    else
        i = ATT_POP - 1;
    if (i >= 0) {
        while (i > 0 && st->pop[i - 1].ratio < rec->ratio) {
            st->pop[i] = st->pop[i - 1];
            i--;
        }
        st->pop[i] = *rec;
    }
    double waste = rec->est - rec->meas;
    i = st->nover;
    if (st->nover < 10)
        st->nover++;
    else if (waste <= st->over[9].est - st->over[9].meas)
        i = -1;
    else
        i = 9;
    if (i >= 0) {
        while (i > 0 && st->over[i - 1].est - st->over[i - 1].meas < waste) {
            st->over[i] = st->over[i - 1];
            i--;
        }
        st->over[i] = *rec;
    }
}

/* A neighbour of @p c: the same image with another job, or a slightly changed image. */
static case_t mutate(rng_t *r, const case_t *c)
{
    case_t m = *c;
    switch (rnd_in(r, 0, 5)) {
    case 0: /* nudge the size */
        m.w = (int)(m.w * (1 + (rnd01(r) - 0.5) * 0.1)) + rnd_in(r, -2, 2);
        m.h = (int)(m.h * (1 + (rnd01(r) - 0.5) * 0.1)) + rnd_in(r, -2, 2);
        break;
    case 1: /* stretch the aspect */
        if (rnd(r) & 1)
            m.w = (int)(m.w * (0.5 + rnd01(r) * 1.5));
        else
            m.h = (int)(m.h * (0.5 + rnd01(r) * 1.5));
        break;
    case 2: /* nudge the box */
        if (m.job.op != IMGPROC_OP_CONVERT) {
            if (m.job.width)
                m.job.width = (uint32_t)fmax(1, m.job.width * (1 + (rnd01(r) - 0.5) * 0.2) +
                                                    rnd_in(r, -1, 1));
            if (m.job.height)
                m.job.height = (uint32_t)fmax(1, m.job.height * (1 + (rnd01(r) - 0.5) * 0.2) +
                                                     rnd_in(r, -1, 1));
        }
        break;
    case 3:
        m.job.out_fmt = random_out(r);
        break;
    case 4:
        m.job = random_job(r, m.w, m.h);
        break;
    default: /* a sibling variant of the same format */
        for (int k = 0; k < 20; k++) {
            variant_t v = (variant_t)rnd_in(r, 0, V__COUNT - 1);
            if (strcmp(variants[v].ext, variants[m.v].ext) == 0) {
                m.v = v;
                break;
            }
        }
        break;
    }
    clamp_shape(m.v, &m.w, &m.h);
    if (m.job.op == IMGPROC_OP_CONVERT && (long)m.w * m.h > 16000000)
        m.job = random_job(r, m.w, m.h);
    if (m.job.naive && (long)m.w * m.h > 16000000)
        m.job.naive = false;
    if (m.orient != 1 && !(m.v == V_JPEG_BASE420 || m.v == V_JPEG_PROG420 || m.v == V_PNG_RGB ||
                           m.v == V_PNG_INTERLACED || m.v == V_WEBP_LOSSY || m.v == V_JPEG_CMYK))
        m.orient = 1;
    return m;
}

/* Plans the job: false when it is not one the server would run (bad job, WebP output over
 * its limit, output over 16384 per side). */
static bool job_runnable(const char *path, imgproc_job_t *job, imgproc_probe_t *probe)
{
    imgproc_err_t err;
    if (imgproc_probe_file(path, probe, &err) != 0)
        return false;
    if (imgproc_plan_check(probe, job, &err) != 0)
        return false;
    uint32_t ow, oh;
    imgproc_output_dims(probe, job, &ow, &oh);
    if (ow > 16384 || oh > 16384)
        return false;
    if (job->out_fmt == IMGPROC_FMT_WEBP && (ow > 16383 || oh > 16383))
        job->out_fmt = IMGPROC_FMT_JPEG;
    /* the whole-output encoders take seconds a megapixel: bigger outputs go to JPEG */
    if ((job->out_fmt == IMGPROC_FMT_AVIF || job->out_fmt == IMGPROC_FMT_JXL ||
         job->out_fmt == IMGPROC_FMT_GIF) &&
        (uint64_t)ow * oh > 4000000)
        job->out_fmt = IMGPROC_FMT_JPEG;
    return true;
}

/* ---- the running server: one request at a time, peak RSS over the RSS before it */

typedef struct {
    pid_t pid;
    int port;
    char dir[4096];
} att_server_t;

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t l = sizeof(a);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &l) != 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    close(fd);
    return ntohs(a.sin_port);
}

/* One HTTP/1.1 request with Connection: close; @p body_fd (or -1) is sent as the body.
 * Returns the status code, -1 on a transport error. The response body is discarded. */
static int http_req(int port, const char *method, const char *path, int body_fd, off_t body_len)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    char hdr[1024];
    int n = snprintf(hdr, sizeof(hdr),
                     "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                     "Content-Length: %lld\r\n\r\n",
                     method, path, (long long)(body_fd >= 0 ? body_len : 0));
    int status = -1;
    if (write(fd, hdr, (size_t)n) != n)
        goto out;
    off_t off = 0;
    while (body_fd >= 0 && off < body_len) {
        char buf[65536];
        ssize_t k = pread(body_fd, buf, sizeof(buf), off);
        if (k <= 0 || write(fd, buf, (size_t)k) != k)
            goto out;
        off += k;
    }
    char buf[65536];
    ssize_t k, got = 0;
    while ((k = read(fd, buf + (got < 64 ? got : 64), sizeof(buf) - 64)) > 0)
        got += k;
    if (got >= 12 && strncmp(buf, "HTTP/1.1 ", 9) == 0)
        status = atoi(buf + 9);
out:
    close(fd);
    return status;
}

static int server_start(att_server_t *s, const char *bin, const char *dir)
{
    if (snprintf(s->dir, sizeof(s->dir), "%.4000s/server", dir) >= (int)sizeof(s->dir))
        return -1;
    mkdir(s->dir, 0755);
    char cfgpath[4200];
    snprintf(cfgpath, sizeof(cfgpath), "%s/thumbgate.yaml", s->dir);
    int admin = free_port();
    s->port = free_port();
    FILE *f = fopen(cfgpath, "w");
    if (!f || s->port < 0 || admin < 0)
        return -1;
    fprintf(f,
            "listen: 127.0.0.1:%d\nadmin_listen: 127.0.0.1:%d\nstorage: {root: %s/data}\n"
            "limits: {max_upload: 1GiB}\nmemory: {queue_timeout: 600s, job_timeout: 600s}\n"
            "output: {jpeg_quality: 80, webp_quality: 75, png_compression: 6}\n"
            "log: {level: warn, access: false}\n"
            /* one request must be one job: a second size of an original would also start
             * its mezzanine level's job (admitted on its own estimate), and its memory
             * would be held against this request's estimate */
            "mezzanine: {enabled: false}\n",
            s->port, admin, s->dir);
    fclose(f);
    char *args[] = {(char *)bin, "-c", cfgpath, NULL};
    if (posix_spawn(&s->pid, bin, NULL, NULL, args, environ) != 0)
        return -1;
    for (int i = 0; i < 300; i++) { /* up to 30 s for the listener */
        if (http_req(s->port, "GET", "/none", -1, 0) > 0)
            return 0;
        struct timespec ts = {0, 100000000};
        nanosleep(&ts, NULL);
    }
    return -1;
}

static void server_stop(att_server_t *s)
{
    if (s->pid > 0) {
        kill(s->pid, SIGTERM);
        waitpid(s->pid, NULL, 0);
        s->pid = 0;
    }
}

/* The derived URL of @p job for the key a<id>.<ext>; false when no URL expresses it. */
static bool derived_url(char *buf, size_t n, unsigned id, const case_t *c)
{
    const char *ext = imgproc_fmt_name(c->job.out_fmt);
    if (c->job.naive)
        return false;
    switch (c->job.op) {
    case IMGPROC_OP_CONVERT:
        if (strcmp(ext, variants[c->v].ext) == 0)
            return false;
        snprintf(buf, n, "/a%u.%s", id, ext);
        return true;
    case IMGPROC_OP_COVER:
    case IMGPROC_OP_SMART:
        snprintf(buf, n, "/a%u_%ux%u%c.%s", id, c->job.width, c->job.height,
                 c->job.op == IMGPROC_OP_SMART ? 's' : 'c', ext);
        return true;
    default:
        if (c->job.width == 0)
            snprintf(buf, n, "/a%u_x%u.%s", id, c->job.height, ext);
        else if (c->job.height == 0)
            snprintf(buf, n, "/a%u_%ux.%s", id, c->job.width, ext);
        else
            snprintf(buf, n, "/a%u_%ux%u.%s", id, c->job.width, c->job.height, ext);
        return true;
    }
}

/* Waits until the server's RSS stops falling (its idle malloc_trim ran). */
static long server_settle(const att_server_t *s)
{
    long prev = proc_kib(s->pid, "VmRSS");
    for (int i = 0; i < 40; i++) {
        struct timespec ts = {0, 25000000};
        nanosleep(&ts, NULL);
        long now = proc_kib(s->pid, "VmRSS");
        if (now >= prev - 64)
            return now;
        prev = now;
    }
    return prev;
}

/* PUTs @p path once as a<id>, then GETs each job; fills srv_meas (bytes) or leaves 0. */
static void server_sample(const att_server_t *s, unsigned id, const char *path, att_rec_t *recs,
                          int nrec)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) != 0) {
        if (fd >= 0)
            close(fd);
        return;
    }
    char key[64];
    snprintf(key, sizeof(key), "/a%u.%s", id, variants[recs[0].c.v].ext);
    int st = http_req(s->port, "PUT", key, fd, sb.st_size);
    close(fd);
    if (st != 201 && st != 200) {
        fprintf(stderr, "attack: server PUT %s: %d\n", key, st);
        return;
    }
    for (int i = 0; i < nrec; i++) {
        char url[128], clr[64];
        if (!derived_url(url, sizeof(url), id, &recs[i].c))
            continue;
        server_settle(s);
        snprintf(clr, sizeof(clr), "/proc/%ld/clear_refs", (long)s->pid);
        int cfd = open(clr, O_WRONLY | O_CLOEXEC);
        if (cfd < 0 || write(cfd, "5", 1) != 1) {
            if (cfd >= 0)
                close(cfd);
            continue;
        }
        close(cfd);
        long base = proc_kib(s->pid, "VmRSS");
        st = http_req(s->port, "GET", url, -1, 0);
        long hwm = proc_kib(s->pid, "VmHWM");
        if (st != 200) {
            fprintf(stderr, "attack: server GET %s: %d\n", url, st);
            recs[i].srv_failed = true;
            continue;
        }
        recs[i].srv_meas = hwm > base ? (double)(hwm - base) * 1024 : 1;
    }
    http_req(s->port, "DELETE", key, -1, 0);
}

/* Runs the jobs of one image in fresh children, @p jobs at a time. */
static void run_children(const char *argv0, const char *path, const char *warm, att_rec_t *recs,
                         int nrec, int jobs)
{
    pid_t pids[16];
    int fds[16], next = 0, inflight = 0;
    char outs[16][1024];
    bool done[16] = {false};
    while (next < nrec || inflight > 0) {
        while (inflight < jobs && next < nrec) {
            case_t *c = &recs[next].c;
            char a[5][32];
            snprintf(a[0], 32, "%d", (int)c->job.op);
            snprintf(a[1], 32, "%u", c->job.width);
            snprintf(a[2], 32, "%u", c->job.height);
            snprintf(a[3], 32, "%d", (int)c->job.out_fmt);
            snprintf(a[4], 32, "%d", (int)c->job.naive);
            char *args[] = {(char *)argv0, "--measure", (char *)path, a[0], a[1], a[2],
                            a[3],          a[4],        (char *)warm, "0",  NULL};
            pids[next] = spawn_child(args, NULL, &fds[next]);
            if (pids[next] < 0)
                done[next] = true, outs[next][0] = '\0';
            else
                inflight++;
            next++;
        }
        if (inflight == 0)
            continue;
        int status;
        pid_t pid = waitpid(-1, &status, 0);
        if (pid < 0 && errno == EINTR)
            continue;
        for (int i = 0; pid > 0 && i < next; i++)
            if (pids[i] == pid && !done[i]) {
                drain(fds[i], outs[i], sizeof(outs[i]));
                if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
                    outs[i][0] = '\0';
                done[i] = true;
                inflight--;
            }
    }
    for (int i = 0; i < nrec; i++) {
        unsigned long long est, meas;
        if (sscanf(outs[i], "RESULT %llu %llu", &est, &meas) == 2) {
            recs[i].est = (double)est;
            recs[i].meas = (double)meas;
            recs[i].ratio = est ? (double)meas / (double)est : 99;
        } else {
            recs[i].est = -1;
            char name[160];
            case_name(&recs[i].c, name, sizeof(name));
            fprintf(stderr, "attack: FAILED %s: %s", name, outs[i][0] ? outs[i] : "(no output)\n");
        }
    }
}

static void att_print(const char *tag, const att_rec_t *r)
{
    char name[160];
    case_name(&r->c, name, sizeof(name));
    printf("%-8s %-64s est %8.2f MiB  meas %8.2f MiB  meas/est %.3f", tag, name, r->est / 1048576.0,
           r->meas / 1048576.0, r->ratio);
    if (r->srv_meas > 0)
        printf("  server %8.2f MiB (%.3f)", r->srv_meas / 1048576.0, r->srv_meas / r->est);
    printf("\n");
}

/* SIGTERM / SIGINT end the attack like its time limit: summary printed, server stopped. */
static volatile sig_atomic_t attack_stop;

static void on_attack_signal(int sig)
{
    (void)sig;
    attack_stop = 1;
}

static int run_attack(const char *argv0, const char *dir_arg, int jobs, double minutes,
                      size_t max_cases, uint64_t seed, const char *server_bin, int server_every)
{
    char dir[4096];
    const char *tmp = getenv("TMPDIR");
    if (dir_arg) {
        snprintf(dir, sizeof(dir), "%s", dir_arg);
        mkdir(dir, 0755);
    } else {
        snprintf(dir, sizeof(dir), "%s/thumbgate-attack-XXXXXX", tmp && *tmp ? tmp : "/tmp");
        if (!mkdtemp(dir))
            return 2;
    }
    if (VIPS_INIT(argv0))
        return 2;
    vips_cache_set_max(0);
    vips_concurrency_set(1); /* the box is shared: generation takes one core */
    if (make_warm(dir) != 0)
        return 2;
    att_state_t st = {.worst = 0};
    char fpath[4200];
    snprintf(fpath, sizeof(fpath), "%s/found.txt", dir);
    st.found = fopen(fpath, "a");
    snprintf(fpath, sizeof(fpath), "%s/cases.tsv", dir);
    st.log = fopen(fpath, "a");
    att_server_t srv = {0};
    if (server_bin && server_start(&srv, server_bin, dir) != 0) {
        fprintf(stderr, "attack: cannot start %s\n", server_bin);
        server_stop(&srv);
        return 2;
    }
    signal(SIGTERM, on_attack_signal);
    signal(SIGINT, on_attack_signal);
    /* without --seed, a new search every run (the seed is printed: --seed replays it) */
    struct timespec rt;
    clock_gettime(CLOCK_REALTIME, &rt);
    uint64_t fresh = ((uint64_t)rt.tv_sec * 1000000000ull + (uint64_t)rt.tv_nsec) ^
                     ((uint64_t)getpid() * 0x9e3779b97f4a7c15ull);
    rng_t r = {seed ? seed : fresh ? fresh : 0x9e3779b97f4a7c15ull};
    struct timespec t0, now;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    fprintf(stderr, "attack: seed=%llu jobs=%d minutes=%.0f cases=%zu dir=%s server=%s\n",
            (unsigned long long)r.s, jobs, minutes, max_cases, dir,
            server_bin ? server_bin : "(none)");
    unsigned images = 0;
    for (;;) {
        clock_gettime(CLOCK_MONOTONIC, &now);
        double el = (now.tv_sec - t0.tv_sec) + (now.tv_nsec - t0.tv_nsec) / 1e9;
        if (el >= minutes * 60 || st.cases >= max_cases || attack_stop)
            break;
        /* one image and up to 4 jobs on it: random, or neighbours of a strong case */
        att_rec_t recs[4];
        int nrec = 0;
        bool climb = st.npop >= 4 && rnd01(&r) < 0.5;
        if (climb) {
            /* favour the best: index from a squared uniform */
            double u = rnd01(&r);
            const case_t *base = &st.pop[(int)(u * u * st.npop)].c;
            case_t m = mutate(&r, base);
            recs[nrec++] = (att_rec_t){.c = m};
            for (int k = 0; k < 2; k++) { /* more jobs on the mutated image */
                case_t m2 = m;
                case_t j = mutate(&r, &m);
                if (j.w == m.w && j.h == m.h && j.v == m.v)
                    m2.job = j.job;
                else
                    m2.job = random_job(&r, m.w, m.h);
                recs[nrec++] = (att_rec_t){.c = m2};
            }
        } else {
            variant_t v;
            int w, h, o;
            random_image(&r, &v, &w, &h, &o);
            for (int k = 0; k < 4; k++)
                recs[nrec++] = (att_rec_t){.c = {v, w, h, o, random_job(&r, w, h)}};
        }
        case_t *c0 = &recs[0].c;
        char path[4200], warm[4200];
        image_path(path, sizeof(path), dir, c0->v, c0->w, c0->h, c0->orient);
        image_path(warm, sizeof(warm), dir, c0->v, 96, 64, c0->orient);
        if ((access(warm, R_OK) != 0 && generate(c0->v, 96, 64, c0->orient, warm) != 0) ||
            (access(path, R_OK) != 0 && generate(c0->v, c0->w, c0->h, c0->orient, path) != 0)) {
            st.gen_failed++; /* the generator's libraries refused the shape: not a finding */
            continue;
        }
        imgproc_probe_t probe;
        int keep = 0;
        for (int i = 0; i < nrec; i++)
            if (job_runnable(path, &recs[i].c.job, &probe))
                recs[keep++] = recs[i];
        nrec = keep;
        if (nrec == 0) {
            unlink(path);
            continue;
        }
        run_children(argv0, path, warm, recs, nrec, jobs);
        images++;
        if (server_bin && images % (unsigned)server_every == 0)
            server_sample(&srv, images, path, recs, nrec);
        for (int i = 0; i < nrec; i++) {
            att_rec_t *x = &recs[i];
            if (x->srv_failed) /* the server failed a job; its fresh child's figure still counts */
                st.failed++;
            if (x->est < 0) {
                st.failed++;
                continue;
            }
            st.cases++;
            bool under = x->meas > x->est;
            if (x->ratio > st.worst)
                st.worst = x->ratio, st.worst_rec = *x;
            if (x->srv_meas > 0) {
                st.srv_cases++;
                double sr = x->srv_meas / x->est;
                if (sr > st.srv_worst)
                    st.srv_worst = sr, st.srv_worst_rec = *x;
                if (sr > 1) {
                    st.srv_under++;
                    under = true;
                }
            }
            if (under) {
                st.under++;
                att_print("UNDER", x);
                if (st.found) {
                    char name[160];
                    case_name(&x->c, name, sizeof(name));
                    fprintf(st.found, "%s est=%.0f meas=%.0f srv=%.0f\n", name, x->est, x->meas,
                            x->srv_meas);
                    fflush(st.found);
                }
            } else if (x->srv_meas > 0) {
                att_print("server", x);
            }
            att_record(&st, x);
            if (st.log) {
                char name[160];
                case_name(&x->c, name, sizeof(name));
                fprintf(st.log, "%s\t%.0f\t%.0f\t%.0f\n", name, x->est, x->meas, x->srv_meas);
            }
        }
        /* images of the population are kept for later climbs; the rest go */
        bool kept = false;
        for (int i = 0; i < st.npop; i++) {
            char p2[4200];
            image_path(p2, sizeof(p2), dir, st.pop[i].c.v, st.pop[i].c.w, st.pop[i].c.h,
                       st.pop[i].c.orient);
            kept |= strcmp(p2, path) == 0;
        }
        if (!kept)
            unlink(path);
        if (st.log)
            fflush(st.log);
        if (images % 25 == 0) {
            fprintf(stderr, "attack: %.0fs cases=%zu under=%zu worst=%.3f server=%zu\n", el,
                    st.cases, st.under, st.worst, st.srv_cases);
            fflush(stdout);
        }
    }
    server_stop(&srv);
    printf("\nhighest measured/estimate (the hill-climbing population):\n");
    for (int i = 0; i < st.npop; i++)
        att_print("top", &st.pop[i]);
    printf("largest overestimates (estimate - measured):\n");
    for (int i = 0; i < st.nover; i++)
        att_print("over", &st.over[i]);
    if (st.srv_cases)
        att_print("srvworst", &st.srv_worst_rec);
    printf("attack: cases=%zu underestimates=%zu worst_meas_over_est=%.3f failed=%zu "
           "not_generated=%zu server_cases=%zu server_underestimates=%zu server_worst=%.3f\n",
           st.cases, st.under, st.worst, st.failed, st.gen_failed, st.srv_cases, st.srv_under,
           st.srv_worst);
    if (st.found)
        fclose(st.found);
    if (st.log)
        fclose(st.log);
    if (!dir_arg)
        rm_rf(dir);
    /* a job that passed the probe and plan check but failed is a bug too (a TIFF regression
     * was found that way) */
    return st.under || st.failed ? 1 : 0;
}

/* calibrate --one VARIANT W H ORIENT OP TW TH FMT [--server BIN] [--dir DIR]: one case, in a
 * fresh child and (with --server) through the running server, 3 times each. OP is fit,
 * cover, smart, convert or naive; FMT jpeg, png or webp. */
static int run_one(const char *argv0, char **a, const char *dir_arg, const char *server_bin)
{
    case_t c = {.orient = atoi(a[3])};
    int v = 0;
    /* VARIANT may be NAME=FILE: an existing file, warmed up like NAME (W H ignored) */
    const char *file = strchr(a[0], '=');
    while (v < V__COUNT &&
           strncmp(variants[v].name, a[0], file ? (size_t)(file - a[0]) : strlen(a[0])) != 0)
        v++;
    if (v == V__COUNT) {
        fprintf(stderr, "unknown variant %s\n", a[0]);
        return 2;
    }
    c.v = (variant_t)v;
    c.w = atoi(a[1]);
    c.h = atoi(a[2]);
    c.job.op = strcmp(a[4], "cover") == 0     ? IMGPROC_OP_COVER
               : strcmp(a[4], "smart") == 0   ? IMGPROC_OP_SMART
               : strcmp(a[4], "convert") == 0 ? IMGPROC_OP_CONVERT
                                              : IMGPROC_OP_FIT;
    c.job.naive = strcmp(a[4], "naive") == 0;
    c.job.width = (uint32_t)atoi(a[5]);
    c.job.height = (uint32_t)atoi(a[6]);
    c.job.out_fmt = imgproc_fmt_from_ext(a[7], strlen(a[7]));
    char dir[4096];
    snprintf(dir, sizeof(dir), "%s", dir_arg ? dir_arg : "/tmp/thumbgate-one");
    mkdir(dir, 0755);
    if (VIPS_INIT(argv0))
        return 2;
    vips_cache_set_max(0);
    char path[4200], warm[4200];
    image_path(path, sizeof(path), dir, c.v, c.w, c.h, c.orient);
    if (file)
        snprintf(path, sizeof(path), "%s", file + 1);
    image_path(warm, sizeof(warm), dir, c.v, 96, 64, c.orient);
    if ((access(warm, R_OK) != 0 && generate(c.v, 96, 64, c.orient, warm) != 0) ||
        (access(path, R_OK) != 0 && generate(c.v, c.w, c.h, c.orient, path) != 0))
        return 2;
    imgproc_probe_t probe;
    if (!job_runnable(path, &c.job, &probe)) {
        fprintf(stderr, "job not runnable\n");
        return 2;
    }
    att_rec_t recs[3] = {{.c = c}, {.c = c}, {.c = c}};
    const char *reps_env = getenv("CALIBRATE_ONE_REPS");
    int reps = reps_env && atoi(reps_env) >= 1 && atoi(reps_env) <= 3 ? atoi(reps_env) : 3;
    run_children(argv0, path, warm, recs, reps, 1);
    att_server_t srv = {0};
    if (server_bin) {
        if (server_start(&srv, server_bin, dir) != 0)
            return 2;
        for (int i = 0; i < reps; i++)
            server_sample(&srv, 900000 + (unsigned)i, path, &recs[i], 1);
        server_stop(&srv);
    }
    for (int i = 0; i < reps; i++)
        att_print("one", &recs[i]);
    return 0;
}

/* --lazy-free MIB (tests/lazyfree_oom.sh runs it in a memory cgroup): the allocator's
 * settings give freed pages back lazily (imgproc/imgproc.c, muzzy_decay_ms:-1), so they
 * stay in RSS; this checks that the kernel takes them when a process of the same cgroup
 * needs the memory, rather than OOM-killing. MIB MiB of 64 KiB blocks (below the oversize
 * threshold: the arenas' decay) are written and freed; once the decay has taken every
 * freed page from the arenas, a child (first in line for the OOM killer) maps and writes
 * MIB MiB of its own. Prints the figures; 0 when the child finished, 1 when it was killed,
 * 77 on a build without jemalloc. */
static int run_lazy_free(size_t mib)
{
#ifndef THUMBGATE_JEMALLOC
    (void)mib;
    puts("lazy_free: not a jemalloc build (nothing to check)");
    return 77;
#else
    const size_t blk = 64 * 1024, n = mib * 1024 * 1024 / blk;
    void **p = malloc(n * sizeof(*p));
    if (!p)
        return 2;
    long base = status_kib("VmRSS");
    for (size_t i = 0; i < n; i++) {
        if (!(p[i] = malloc(blk)))
            return 2;
        memset(p[i], 1, blk);
    }
    long written = status_kib("VmRSS");
    for (size_t i = 0; i < n; i++)
        free(p[i]);
    free(p);
    /* the background threads' decay: until no more than 1 MiB is left dirty (30 s at most;
     * no wait when the decay is off, MALLOC_CONF=dirty_decay_ms:-1: the script's control) */
    ssize_t decay_ms = 0;
    size_t dirty = 0, sz = sizeof(decay_ms);
    if (mallctl("arenas.dirty_decay_ms", &decay_ms, &sz, NULL, 0) != 0)
        decay_ms = 0;
    char key[64];
    snprintf(key, sizeof(key), "stats.arenas.%d.pdirty", MALLCTL_ARENAS_ALL);
    for (int tries = 0; decay_ms >= 0 && tries < 600; tries++) {
        uint64_t epoch = 1;
        mallctl("epoch", NULL, NULL, &epoch, sizeof(epoch));
        sz = sizeof(dirty);
        if (mallctl(key, &dirty, &sz, NULL, 0) != 0 ||
            dirty * (size_t)sysconf(_SC_PAGESIZE) <= 1024 * 1024)
            break;
        nanosleep(&(struct timespec){0, 50 * 1000 * 1000}, NULL);
    }
    long decayed = status_kib("VmRSS");
    fflush(stdout);
    pid_t c = fork();
    if (c == 0) {
        int fd = open("/proc/self/oom_score_adj", O_WRONLY);
        if (fd >= 0) {
            (void)!write(fd, "1000", 4);
            close(fd);
        }
        size_t len = mib * 1024 * 1024;
        char *q = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (q == MAP_FAILED)
            _exit(2);
        memset(q, 2, len);
        _exit(0);
    }
    int ws = 0;
    if (c < 0 || waitpid(c, &ws, 0) != c)
        return 2;
    bool ok = WIFEXITED(ws) && WEXITSTATUS(ws) == 0;
    printf("lazy_free: mib=%zu base_kib=%ld written_kib=%ld after_decay_kib=%ld dirty_pages=%zu "
           "child=%s after_child_kib=%ld\n",
           mib, base, written, decayed, dirty,
           ok                ? "finished"
           : WIFSIGNALED(ws) ? "killed"
                             : "failed",
           status_kib("VmRSS"));
    return ok ? 0 : 1;
#endif
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "--measure") == 0)
        return child_measure(argc, argv);
    if (argc > 1 && strcmp(argv[1], "--burst-child") == 0)
        return child_burst(argc, argv);
    bool reduced = false, cold = false, verbose = false, attack = false;
    const char *dir = NULL, *server = NULL;
    int burst = 0, jobs = 1, server_every = 10;
    double minutes = 30;
    size_t max_cases = (size_t)-1;
    uint64_t seed = 0;
    char **one = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--one") == 0 && i + 8 < argc) {
            one = &argv[i + 1];
            i += 8;
        } else if (strcmp(argv[i], "--reduced") == 0)
            reduced = true;
        else if (strcmp(argv[i], "--cold") == 0)
            cold = true;
        else if (strcmp(argv[i], "-v") == 0)
            verbose = true;
        else if (strcmp(argv[i], "--dir") == 0 && i + 1 < argc)
            dir = argv[++i];
        else if (strcmp(argv[i], "--jobs") == 0 && i + 1 < argc)
            jobs = atoi(argv[++i]) < 1 ? 1 : atoi(argv[i]);
        else if (strcmp(argv[i], "--burst") == 0 && i + 1 < argc)
            burst = atoi(argv[++i]);
        else if (strcmp(argv[i], "--lazy-free") == 0 && i + 1 < argc)
            return run_lazy_free((size_t)atol(argv[++i]));
        else if (strcmp(argv[i], "--attack") == 0)
            attack = true;
        else if (strcmp(argv[i], "--minutes") == 0 && i + 1 < argc)
            minutes = atof(argv[++i]);
        else if (strcmp(argv[i], "--cases") == 0 && i + 1 < argc)
            max_cases = (size_t)atol(argv[++i]);
        else if (strcmp(argv[i], "--seed") == 0 && i + 1 < argc)
            seed = strtoull(argv[++i], NULL, 0);
        else if (strcmp(argv[i], "--server") == 0 && i + 1 < argc)
            server = argv[++i];
        else if (strcmp(argv[i], "--server-every") == 0 && i + 1 < argc)
            server_every = atoi(argv[++i]) < 1 ? 1 : atoi(argv[i]);
        else {
            fprintf(stderr,
                    "usage: %s [--reduced] [--dir DIR] [--jobs N] [--cold] [-v] | --burst N [--dir "
                    "DIR] | --lazy-free MIB | --attack [--minutes M] [--cases N] [--seed S] "
                    "[--jobs N] [--dir DIR] [--server BIN] [--server-every K]\n",
                    argv[0]);
            return 2;
        }
    }
    if (burst > 0)
        return run_burst(argv[0], burst, dir);
    if (one)
        return run_one(argv[0], one, dir, server);
    if (attack)
        return run_attack(argv[0], dir, jobs > 16 ? 16 : jobs, minutes, max_cases, seed, server,
                          server_every);
    return run_grid(argv[0], reduced, dir, cold, verbose, jobs);
}
