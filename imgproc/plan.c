/* The job plan: what libvips 8.14's vips_thumbnail() will do with a given header and
 * request (shrink-on-load factor, intermediate and final sizes), replicated with the same
 * floating-point steps as libvips/resample/thumbnail.c and resize.c so that
 * imgproc_output_dims() is exact; and the memory estimator built on it. */
#include <math.h>
#include <string.h>

#include "imgproc/imgproc_internal.h"

#define MAX_COORD 10000000 /* VIPS_MAX_COORD */

/* Wall time of libheif's AV1 encode per output pixel (ns) by effort, strong noise, this
 * machine (`vips copy noise.png x.avif[effort=E]`, 2000x1500), x1.5 */
static const double avif_enc_ns_px[10] = {1100,  1500,  1900,  3800,   7200,
                                          15000, 31000, 60000, 100000, 145000};
/* Wall time of libjxl 0.7's encode per output pixel (ns) by effort 3..7, the same noise,
 * one vips thread (`VIPS_CONCURRENCY=1 vips copy noise.png x.jxl[effort=E]`, less the PNG
 * decode), at load 4.5: 390-430 ns/px, x1.6. libvips hands libjxl the whole image and
 * libjxl encodes it in calls that never look at the kill flag. */
#define JXL_ENC_NS_PX 700.0
/* Wall time of libheif's decode of a HEIC (x265) or AVIF (aom) image per source pixel: one
 * call for the whole primary image at the job's start (they are decoded at full size),
 * measured 160-220 ns/px on noise (`vips copy x.heic y.v`, one thread, load 4.5), x1.5 */
#define HEIF_DECODE_NS_PX 330.0

/* vips_thumbnail_calculate_shrink() with auto-rotate off (we orient ourselves). */
static void thumb_shrink(const imgproc__plan_t *pl, double in_w, double in_h, double *hs,
                         double *vs)
{
    *hs = in_w / pl->box_w;
    *vs = in_h / pl->box_h;
    /* crop fills the box (h < v: use hshrink); fit stays inside it (h < v: use vshrink). */
    bool horizontal = pl->crop ? *hs < *vs : !(*hs < *vs);
    if (horizontal)
        *vs = *hs;
    else
        *hs = *vs;
    /* VIPS_SIZE_DOWN for every mode: nothing is ever enlarged. */
    *hs = fmax(1.0, *hs);
    *vs = fmax(1.0, *vs);
    *hs = fmin(*hs, in_w);
    *vs = fmin(*vs, in_h);
}

/* Output length of vips_resize() along one axis for a shrink factor. */
static uint32_t resize_len(uint32_t in, double shrink)
{
    double scale = 1.0 / shrink;
    scale = fmax(scale, 1.0 / in);
    if (scale < 1.0)
        return (uint32_t)((double)in / (1.0 / scale) + 0.5); /* reduce: VIPS_ROUND_UINT */
    if (scale > 1.0) {
        double r = in * scale; /* affine: VIPS_ROUND_INT of the mapped extent */
        return (uint32_t)(r + 0.5);
    }
    return in;
}

/* pngfast.c: vips_resize(1 / shrink) reduces by 1 / max(1 / shrink, 1 / in), and
 * vips_reduceh/v with gap 2 first box-shrinks by floor(in / out / 2), where out is the
 * reduce's output length, resize_len(in, shrink), passed in; 1 when there is no such
 * shrink. @p reduce gets the whole factor. */
static uint32_t box_factor(uint32_t in, double shrink, uint32_t out, double *reduce)
{
    double scale = fmax(1.0 / shrink, 1.0 / in);
    *reduce = 1.0;
    if (scale >= 1.0)
        return 1;
    *reduce = 1.0 / scale;
    double f = out ? floor((double)in / out / 2.0) : 1;
    return f < 1 ? 1 : (uint32_t)f;
}

/* The PNG decoder does the box part itself when it is at least 2 on both axes (else the
 * shrunk image would be most of the full one, and libvips streams that better). A PNG
 * has no shrink-on-load, so the resize runs on W x H and pl->resized_w/h are its output. */
static void pngfast_plan(imgproc__plan_t *pl, uint32_t W, uint32_t H, double hs, double vs)
{
    double rh, rv;
    uint32_t sh = box_factor(W, hs, pl->resized_w, &rh), sv = box_factor(H, vs, pl->resized_h, &rv);
    if (sh < 2 || sv < 2)
        return;
    pl->png_shrink_h = sh;
    pl->png_shrink_v = sv;
    pl->png_pre_w = (W + sh - 1) / sh; /* vips_shrinkh/v with ceil */
    pl->png_pre_h = (H + sv - 1) / sv;
    pl->png_hshrink = rh;
    pl->png_vshrink = rv;
}

int imgproc__plan(const imgproc_probe_t *probe, const imgproc_job_t *job, imgproc__plan_t *pl)
{
    memset(pl, 0, sizeof(*pl));
    if (!probe || !job || probe->width == 0 || probe->height == 0)
        return -IMGPROC_E_INVALID;
    uint32_t W = probe->width, H = probe->height;
    pl->swap = probe->orientation >= 5 && probe->orientation <= 8;

    uint32_t tw = job->width, th = job->height; /* display orientation */
    switch (job->op) {
    case IMGPROC_OP_FIT:
        if (tw == 0 && th == 0)
            return -IMGPROC_E_INVALID;
        if (tw == 0)
            tw = MAX_COORD;
        if (th == 0)
            th = MAX_COORD;
        break;
    case IMGPROC_OP_COVER:
    case IMGPROC_OP_SMART:
        if (tw == 0 || th == 0)
            return -IMGPROC_E_INVALID;
        pl->crop = true;
        pl->attention = job->op == IMGPROC_OP_SMART;
        break;
    case IMGPROC_OP_CONVERT:
        tw = pl->swap ? H : W;
        th = pl->swap ? W : H;
        break;
    default:
        return -IMGPROC_E_INVALID;
    }
    if (tw > MAX_COORD || th > MAX_COORD)
        return -IMGPROC_E_INVALID;
    pl->box_w = pl->swap ? th : tw;
    pl->box_h = pl->swap ? tw : th;

    /* Shrink-on-load, vips_thumbnail_open(). Naive jobs decode at full size. */
    double hs, vs;
    thumb_shrink(pl, W, H, &hs, &vs);
    double common = fmin(hs, vs);
    pl->jpeg_shrink = 1;
    pl->webp_scale = 1.0;
    pl->load_w = W;
    pl->load_h = H;
    if (!job->naive && probe->fmt == IMGPROC_FMT_JPEG) {
        pl->jpeg_shrink = common >= 16 ? 8 : common >= 8 ? 4 : common >= 4 ? 2 : 1;
        pl->load_w = W / pl->jpeg_shrink;
        pl->load_h = H / pl->jpeg_shrink;
    } else if (!job->naive && probe->fmt == IMGPROC_FMT_WEBP &&
               !(probe->_flags & IMGPROC__F_WEBP_NOSCALE)) {
        double factor = fmax(1.0, common);
        pl->webp_scale = 1.0 / factor;
        if (pl->webp_scale != 1.0) {
            pl->load_w = (uint32_t)rint(W * pl->webp_scale);
            pl->load_h = (uint32_t)rint(H * pl->webp_scale);
        }
    }
    if (pl->load_w == 0 || pl->load_h == 0)
        return -IMGPROC_E_INVALID;

    /* The main resize on the pre-shrunk image, then the centre crop. */
    thumb_shrink(pl, pl->load_w, pl->load_h, &hs, &vs);
    pl->load_hshrink = hs;
    pl->load_vshrink = vs;
    pl->resized_w = resize_len(pl->load_w, hs);
    pl->resized_h = resize_len(pl->load_h, vs);
    if (probe->fmt == IMGPROC_FMT_PNG && !probe->progressive && !job->naive &&
        probe->bit_depth <= 8)
        pngfast_plan(pl, W, H, hs, vs);
    uint32_t ow = pl->resized_w, oh = pl->resized_h;
    if (pl->crop) {
        ow = ow < pl->box_w ? ow : pl->box_w;
        oh = oh < pl->box_h ? oh : pl->box_h;
    }
    pl->out_w = pl->swap ? oh : ow;
    pl->out_h = pl->swap ? ow : oh;

    /* Animated outputs keep every frame of a GIF/WebP source, each resized to the same box.
     * EXIF orientation is applied to stills only: an oriented animation gives its first frame. */
    pl->frames = 1;
    if (!job->naive && (probe->fmt == IMGPROC_FMT_GIF || probe->fmt == IMGPROC_FMT_WEBP) &&
        probe->pages > 1 && imgproc_fmt_is_animated(job->out_fmt) && probe->orientation == 1)
        pl->frames = probe->pages;

    uint32_t alpha = probe->has_alpha ? 1 : 0;
    uint32_t colour = probe->bands - alpha;
    pl->out_bands = (colour >= 3 || probe->has_icc ? 3 : 1) + alpha;

    /* Belt and braces: with SIZE_DOWN no image of the pipeline is larger than the source,
     * but a plan must never be admitted with one over the caller's pixel bound. */
    /* An animation is held whole at each stage: its frames count together. */
    uint64_t mp = job->max_pixels;
    if (mp &&
        ((uint64_t)W * H * pl->frames > mp || (uint64_t)pl->load_w * pl->load_h > mp ||
         (uint64_t)pl->resized_w * pl->resized_h > mp || (uint64_t)pl->out_w * pl->out_h > mp))
        return -IMGPROC_E_TOO_LARGE;
    return 0;
}

int imgproc_plan_check(const imgproc_probe_t *probe, const imgproc_job_t *job, imgproc_err_t *err)
{
    imgproc__plan_t pl;
    int rc = imgproc__plan(probe, job, &pl);
    if (rc == -IMGPROC_E_TOO_LARGE)
        return pl.frames > 1
                   ? imgproc__fail(err, IMGPROC_E_TOO_LARGE,
                                   "%u frames of %ux%u are over %llu pixels", pl.frames,
                                   probe->width, probe->height, (unsigned long long)job->max_pixels)
                   : imgproc__fail(err, IMGPROC_E_TOO_LARGE,
                                   "a %ux%u source as %ux%u (via %ux%u) is over %llu pixels",
                                   probe->width, probe->height, pl.out_w, pl.out_h, pl.resized_w,
                                   pl.resized_h, (unsigned long long)job->max_pixels);
    if (rc != 0)
        return imgproc__fail(err, IMGPROC_E_INVALID, "bad job for a %ux%u image",
                             probe ? probe->width : 0, probe ? probe->height : 0);
    /* animated sources (GIF, WebP): a frame count over the limit is refused whatever the
     * output, before any decoding (TIFF pages are not frames: only the first is read) */
    if (job->max_frames && probe->pages > job->max_frames &&
        (probe->fmt == IMGPROC_FMT_GIF || probe->fmt == IMGPROC_FMT_WEBP))
        return imgproc__fail(err, IMGPROC_E_TOO_LARGE, "%u frames, over limits.max_frames %u",
                             probe->pages, job->max_frames);
    /* libvips decodes a WebP frame in one libwebp call that its kill flag cannot stop, at the
     * job's start: a frame that cannot decode within the deadline would overrun it by the
     * rest of the call, so it is refused before admission instead */
    if (probe->fmt == IMGPROC_FMT_WEBP && job->timeout_ms) {
        double ms = (double)probe->width * probe->height * IMGPROC__WEBP_DECODE_NS_PX / 1e6;
        if (ms > job->timeout_ms)
            return imgproc__fail(err, IMGPROC_E_TOO_LARGE,
                                 "a %ux%u WebP decodes in one uninterruptible step of about %.0f "
                                 "ms, longer than the job deadline (%u ms)",
                                 probe->width, probe->height, ms, job->timeout_ms);
    }
    /* libheif decodes a HEIC/AVIF source in one call too */
    if ((probe->fmt == IMGPROC_FMT_HEIC || probe->fmt == IMGPROC_FMT_AVIF) && job->timeout_ms) {
        double ms = (double)probe->width * probe->height * HEIF_DECODE_NS_PX *
                    (probe->has_alpha ? 2 : 1) / 1e6; /* alpha: a second image (as AVIF) */
        if (ms > job->timeout_ms)
            return imgproc__fail(err, IMGPROC_E_TOO_LARGE,
                                 "a %ux%u %s decodes in one uninterruptible step of about %.0f "
                                 "ms, longer than the job deadline (%u ms)",
                                 probe->width, probe->height,
                                 probe->fmt == IMGPROC_FMT_HEIC ? "HEIC" : "AVIF", ms,
                                 job->timeout_ms);
    }
    /* and libjxl encodes a JPEG XL without looking at the kill flag */
    if (job->out_fmt == IMGPROC_FMT_JXL && job->timeout_ms) {
        double ms = (double)pl.out_w * pl.out_h * JXL_ENC_NS_PX * (probe->has_alpha ? 2 : 1) /
                    1e6; /* alpha: measured on RGB only, so counted as a second image */
        if (ms > job->timeout_ms)
            return imgproc__fail(err, IMGPROC_E_TOO_LARGE,
                                 "a %ux%u JPEG XL encodes in one uninterruptible step of about "
                                 "%.0f ms, longer than the job deadline (%u ms)",
                                 pl.out_w, pl.out_h, ms, job->timeout_ms);
    }
    /* libheif encodes the whole AVIF in one call at the end of the job, which the deadline
     * cannot stop either */
    if (job->out_fmt == IMGPROC_FMT_AVIF && job->timeout_ms) {
        double ms = (double)pl.out_w * pl.out_h *
                    avif_enc_ns_px[job->avif_effort > 9 ? 9 : job->avif_effort] *
                    (probe->has_alpha ? 2 : 1) / 1e6;
        if (ms > job->timeout_ms)
            return imgproc__fail(err, IMGPROC_E_TOO_LARGE,
                                 "a %ux%u AVIF encodes in one uninterruptible step of about %.0f "
                                 "ms at effort %u, longer than the job deadline (%u ms)",
                                 pl.out_w, pl.out_h, ms, job->avif_effort, job->timeout_ms);
    }
    return 0;
}

void imgproc_output_dims(const imgproc_probe_t *probe, const imgproc_job_t *job, uint32_t *w,
                         uint32_t *h)
{
    imgproc__plan_t pl;
    if (imgproc__plan(probe, job, &pl) != 0) {
        pl.out_w = 0;
        pl.out_h = 0;
    }
    if (w)
        *w = pl.out_w;
    if (h)
        *h = pl.out_h;
}

/*
 * The estimator. Peak bytes a job adds to the process (VmHWM delta in a warm process,
 * libvips-tracked or not), as the sum of
 *
 *  exact terms — buffers whose size follows from the header alone:
 *   - libjpeg's whole-image coefficient buffer for multi-scan JPEG (64 x int16 per block,
 *     blocks rounded to whole MCUs): needed even with DCT scaling, so a progressive
 *     6000x4000 4:2:0 costs ~69 MiB whatever the target size;
 *   - the whole image for Adam7 PNG (vipspng loads interlaced files into memory);
 *   - WebP: the file (read whole), libvips' two RGBA frames at the decode scale, and
 *     libwebp's full-resolution ARGB buffer for lossless (4 B/px) or for the lossless-coded
 *     ALPH plane of lossy+alpha (5 B/px), which scaling does not shrink;
 *   - naive jobs: the whole decoded image;
 *   - materialised images: the resized image before a centre crop, the output before an
 *     EXIF rotation;
 *   - decoder-held metadata (EXIF/ICC/XMP/text blobs);
 *
 *  modelled terms — libvips' strip pipeline, calibrated with `make calibrate`:
 *   - lines of the image as loaded (after shrink-on-load) held by the loader's line cache
 *     (EST_CACHE_LINES of the loader's pixel size) and by the resize regions
 *     (EST_RESIZE_LINES of the processing pixel size; EST_COPY_LINES when there is no
 *     resize). Processing is 1 or 3 uchar bands (+alpha), or 4-byte floats when alpha is
 *     premultiplied for resizing. Both are capped by the image height for short images;
 *   - a floor per band (small images really use less: a 320x240 job adds ~0.3 MiB, but the
 *     floor costs little against any real budget), lcms for CMYK and ICC transforms, the
 *     PNG encoder's zlib state,
 *     and libwebp's encoder (picture, analysis, output), which works on the whole output.
 *
 * Exact terms get EST_MARGIN_EXACT, modelled ones EST_MARGIN_MODEL. The constants were fitted
 * on repeated runs of the full calibration grid (759 cases: 0 under, median 1.26, worst 2.69),
 * then corrected for what `make estimator-attack` found (issue 12, 884 cases, 298 under, worst
 * measured/estimate 8.07): images a few hundred lines tall or less are held whole by every
 * stage of the pipeline plus kernel margins (EST_SHORT_*; the old cap of 0.55 x height was 1.2-8x
 * under on 7490x615 ... 21999x37 PNGs, 16-bit grey worst), and metadata costs ~4x its size
 * (EST_META; 1 MiB ICC, PNG text). The cases are in calibrate.c's found[] and run in every
 * `make test`. Medium PNGs (1600x1000) now estimate 1.3-2.7x their peak: the price of the
 * short-image cap, which does not yet know that taller images stream. Re-run `make calibrate`
 * and `make estimator-attack` after any libvips or codec upgrade.
 */
#define MIB (1024.0 * 1024.0)
#define EST_FIXED (0.2 * MIB)
#define EST_FIXED_PER_BAND (0.48 * MIB)
#define EST_CACHE_LINES 500.0
#define EST_RESIZE_LINES 1200.0
#define EST_COPY_LINES 280.0
#define EST_NAIVE_LINES 2200.0
#define EST_SHORT_CAP 1.1 /* line cap: x (image height + EST_SHORT_LINES) */
#define EST_SHORT_LINES                                                                            \
    80.0 /* buffers of a short image: every stage holds all of it                                  \
            plus its kernel's margin (attack: 6379x36 cover) */
#define EST_SHORT_GREY16                                                                           \
    150.0                            /* ... more for 16-bit grey, processed through a              \
                                        wider format (attack: 21999x37 grey16, 8x under) */
#define EST_SHORT_PER_LINE 12.0      /* ... but a strip of a few lines has a few times that */
#define EST_SHORT_CAP_NAIVE 2.5      /* ... thumbnail of an in-memory image, x height */
#define EST_LCMS_CMYK (5.0 * MIB)    /* CMYK -> sRGB through lcms, measured ~3-4 MiB */
#define EST_LCMS_ICC (0.2 * MIB)     /* an RGB/grey profile to sRGB (cheap once lcms is warm) */
#define EST_PNG_OUT (0.2 * MIB)      /* zlib deflate state and libpng rows */
#define EST_WEBP_ROW 96.0            /* libwebp VP8 decoder rows and rescaler, per source column */
#define EST_JPEG_ROW 64.0            /* libjpeg full-width state even with DCT scaling */
#define EST_WEBP_FIXED (-0.25 * MIB) /* WebP decodes straight at the target size: less floor */
#define EST_WEBP_OUT (0.1 * MIB)
#define EST_WEBP_ALPHA_PX 21.0 /* ... extra when the output has alpha (lossless-coded alpha) */
#define EST_BPP16 2.0          /* 16-bit PNG pipelines, per output band */
#define EST_META 4.0
#define EST_PNGFAST_FIXED (0.4 * MIB) /* ISA-L 85 KiB or libspng + zlib; 64 KiB */
/* Smart crop (IMGPROC_OP_SMART): vips_smartcrop's attention search runs on the resized image
 * already held in memory (the crop term above) through a resize to a small thumbnail, edge,
 * skin and saturation maps of that: a few MiB whatever the size. Measured over the same job
 * as a centre crop (`calibrate --one VARIANT W H 1 smart|cover TW TH jpeg`): +0.7..2.6 MiB
 * on 1600x1000 sources cropped to 290x290 and 400x200 (reduced grid), +1.9 MiB webp-lossy
 * 1600x1000 to 1200x1200, +0.0 png-rgb 1600x1000 to 1000x1000, +0.8 MiB webp-lossy 4000x3000
 * to 4000x2000: below the decode's peak on large jobs, on top of it on small ones. */
#define EST_ATTENTION (3.0 * MIB)
/* ... and with alpha, per column of the image searched: its shrink to 32x32 (291x by 7x on a
 * 9317x241) works on premultiplied floats. Smart over cover crop, `calibrate --one png-rgba
 * W H 1 smart|cover 300 4000 png`: +23.5 MiB at 12000x120, +20.3 at 9317x241, +10.0 at
 * 4000x241 (2.5 KiB a column), +1.3 at 2000x2000; none without alpha (attack: a 9317x241
 * GIF with alpha, smart 562x1241, 1.02x) */
#define EST_ATTENTION_ALPHA_COL 2560.0
#define EST_SERVER_SHARE 1.2
#define EST_SERVER_FIXED (4.0 * MIB)
#define EST_MARGIN_EXACT 1.04
#define EST_MARGIN_MODEL 1.08

/* libwebp's lossy encoder, bytes per output pixel with the RGB copy libvips hands it: its
 * token buffer (every coded coefficient's bit decisions) and its output grow with the
 * coefficients the quality keeps and with the content's entropy, which no header tells.
 * Fitted on strong noise (the costliest content) at 2000x1500 and 3000x2000 (`calibrate
 * --one jpeg-noise ... convert webp` with CALIBRATE_QUALITY): measured 7.5, 13.7, 15.8,
 * 20.7, 23.6, 26.9 B/px at quality 1, 50, 75, 90, 95, 100, over the margins below; smooth
 * photos use about half (Q75: 7.9 B/px). Found by the per-job meter (issue 12 item 4): a
 * 3000x2000 noise JPEG to WebP was estimated 67 MiB and peaked 87 MiB. */
static double webp_enc_px(uint32_t quality)
{
    static const struct {
        double q, px;
    } t[] = {{0, 6.0}, {50, 11.2}, {75, 13.2}, {90, 17.5}, {95, 20.0}, {100, 22.8}};
    double q = quality == 0 || quality > 100 ? 100 : quality;
    size_t i = 1;
    while (i < sizeof(t) / sizeof(t[0]) - 1 && q > t[i].q)
        i++;
    return t[i - 1].px + (t[i].px - t[i - 1].px) * (q - t[i - 1].q) / (t[i].q - t[i - 1].q);
}

/* The encoders of issue 15, bytes per output pixel, all fitted on strong noise (the costliest
 * content) with `calibrate --one jpeg-noise W H 1 convert 0 0 FMT` (2000x1500, 1000x750 and
 * 290x217 outputs) and png-noise-rgba for alpha; they hold the whole output whatever the
 * pipeline streams:
 *  - AVIF (libheif + libaom, 8-bit 4:2:0): libheif's YUV copy, aom's frame buffers, lookahead
 *    and token buffers: 23 B/px at effort 0..2, 36 at 3..4, 39 at 5..9 (3 MP RGB); alpha is a
 *    second AV1 image with its own encoder: 84 B/px for RGBA at effort 2 (1 MP);
 *  - JPEG XL (libjxl 0.7, effort <= 7): float planes and its own group buffers, 48 B/px RGB,
 *    66 B/px RGBA on those sizes (effort 8 and 9 took 4x that: refused by opts). Not on
 *    every image: `make estimator-attack` found cover crops to 1881x1881 measured at 275
 *    MiB for 243 estimated, and square noise from 301 to 1721 px (`calibrate --one
 *    jpeg-noise N N 1 convert 0 0 jxl`) peaks at 79-102 B/px, RGBA 85-116, in no pattern
 *    of size (1560x1561 123 MiB, 1561x1561 232): the same image always the same, so it is
 *    libjxl's choices on the content. The per-pixel terms are the worst of those;
 *  - both encoders also pay per row (JPEG XL) or per row and column (AVIF, whose frame
 *    buffers carry wide borders) whatever the pixel count, which the attack found on 1-px-wide
 *    images (`make estimator-attack`: a 1x10730 WebP to JPEG XL measured 21 MiB for an
 *    estimate of 10.5, to AVIF 16.5 for 11.4). Measured with `calibrate --one png-noise W H 1
 *    convert 0 0 FMT`: AVIF 4.9, 9.3, 17.1 and 24.7 MiB for 1x2000, 1x5000, 1x10730 and
 *    1x16000, 18.3 and 25.7 for 10730x1 and 16000x1 (1.4 KiB per unit of length); JPEG XL
 *    5.7, 9.1, 20.8 and 21.5 MiB for 1x2000, 1x5000, 1x10730 and 1x16383 (up to 1.7 KiB per
 *    row), 8.3 for 16000x1 (columns cost nothing extra);
 *  - GIF (cgif + libimagequant): the RGBA image, the palette index image and the quantiser's
 *    histogram, which grows with the number of distinct colours (up to ~24 MiB on noise):
 *    35 B/px plus that. */
#define EST_GIF_CANVAS 8.0 /* two RGBA canvases */
#define EST_TIFF_CHUNK 2.0 /* libtiff's decoded strip and libvips' copy of it */
#define EST_HEIF_YUV 4.5   /* 4:2:0 planes, three of them live (decoded, reference, copy) */
/* An AVIF's decode (dav1d) also pays per source row and column, whatever the pixel count:
 * its frame buffers are padded to whole superblocks plus borders. `make estimator-attack`
 * found a 3x7994 AVIF measured at 9.0 MiB for an estimate of 6.4 (1.40x, through the server
 * too); `calibrate --one avif W H 1 convert 0 0 png`: 9.1, 17.4 and 17.5 MiB for 1x8000,
 * 1x16000 and 16x16000 (1.1 KiB a row), 6.0 and 11.3 for 8000x1 and 16000x1 (0.7 KiB a
 * column). A HEIC (libde265) does not: 3.2 MiB for 64x8000. */
#define EST_AVIF_DEC_EDGE 1152.0
#define EST_AVIF_FIXED (4.0 * MIB)
#define EST_AVIF_ALPHA_X 3.8        /* RGBA per pixel over RGB */
#define EST_AVIF_SCREEN_PX 104.0    /* few-colour content, efforts 2-3 (measured 98) */
#define EST_AVIF_SCREEN_PX_HI 124.0 /* ... efforts 4-9 (measured 119) */
#define EST_JXL_FIXED (3.0 * MIB)
#define EST_JXL_PX 90.0
#define EST_JXL_ALPHA_PX 105.0
#define EST_AVIF_EDGE 1280.0 /* per output row and per output column, alpha or not */
#define EST_JXL_ROW 1536.0   /* per output row */
#define EST_GIF_PX 40.0
#define EST_GIF_HIST_PX 100.0
#define EST_GIF_HIST_MAX (24.0 * MIB)

/* Animated outputs, per output pixel of every frame: libwebp's animation encoder keeps each
 * coded frame and its candidate canvases (measured 52 MiB for 10 frames of 1600x1000, 3.3 B/px;
 * `calibrate --one gif-anim10 1600 1000 1 convert 0 0 webp`); cgif writes frame by frame and
 * keeps little (6 MiB for 50 frames of 400x300 GIF to GIF) beyond a fixed cost. */
#define EST_ANIM_WEBP_PX 6.0
#define EST_ANIM_GIF_PX 4.0
/* the lowest margin of the reduced grid was 1.16 without it: 10 frames of 400x300 as 100x75 GIF
 * (11.1 MiB) */
#define EST_ANIM_GIF_FIXED (2.0 * MIB)

/* Per output pixel of an AVIF encode (libaom). A photo takes 24-40 B/px by effort. Content of
 * few colours (a palette PNG, a GIF, a screenshot) turns on libaom's screen-content tools from
 * effort 2: 98 B/px at efforts 2-3 and 119 at 4-9 (`vips heifsave` of a 2000x2000 4-colour RGB
 * PNG: 430 and 513 MiB peak, a photo 126-193; the attack found a palette PNG to AVIF at 2.1x).
 * The same image as a JPEG, even at Q100, did not turn them on (129 MiB), nor did a large flat
 * area (106): so the worst case is taken for sources stored losslessly (@p lossless). The
 * alpha plane is a second encode: x3.8 over RGB for a photo, added on top. */
static double avif_enc_px(uint32_t effort, bool alpha, bool lossless)
{
    double photo = effort <= 2 ? 24.0 : effort <= 4 ? 37.0 : 40.0;
    double screen = !lossless || effort <= 1 ? photo
                    : effort <= 3            ? EST_AVIF_SCREEN_PX
                                             : EST_AVIF_SCREEN_PX_HI;
    return fmax(photo, screen) + (alpha ? (EST_AVIF_ALPHA_X - 1) * photo : 0);
}

uint64_t imgproc_estimate(const imgproc_probe_t *probe, const imgproc_job_t *job)
{
    imgproc__plan_t pl;
    if (imgproc__plan(probe, job, &pl) != 0)
        return 0;

    const double W = probe->width, H = probe->height;
    double lw = pl.load_w, lh = pl.load_h;
    const double rw = pl.resized_w, rh = pl.resized_h;
    const double ow = pl.out_w, oh = pl.out_h;
    const double alpha = probe->has_alpha ? 1 : 0;
    const double ob = pl.out_bands;
    const bool jpeg = probe->fmt == IMGPROC_FMT_JPEG, png = probe->fmt == IMGPROC_FMT_PNG;
    const bool webp = probe->fmt == IMGPROC_FMT_WEBP;
    const bool cmyk = jpeg && probe->bands == 4;
    /* stored without loss: its content may be of few colours (see avif_enc_px) */
    const bool lossless = png || probe->fmt == IMGPROC_FMT_GIF || probe->fmt == IMGPROC_FMT_TIFF ||
                          (webp && probe->lossless);

    /* Bytes per pixel as the loader delivers it: WebP frames are RGB(A) bytes, 16-bit PNG
     * two bytes a sample. */
    double bpl = webp ? 3 + alpha : probe->bands * (probe->bit_depth > 8 ? 2.0 : 1.0);
    bool resize = pl.load_w != pl.resized_w || pl.load_h != pl.resized_h;
    bool premultiply = probe->has_alpha && resize;
    double bpp = premultiply ? 4 * ob : ob * (probe->bit_depth > 8 ? EST_BPP16 : 1.0);

    /* Metadata: the decoder's copy, libvips' copy, lcms' parse of an ICC profile, the
     * saver's look at it (attack: 1 MiB ICC in a 98x158 JPEG, 2 MiB of PNG text). */
    double exact = EST_META * (double)probe->_meta_bytes + IMGPROC__SRC_BUF;
    bool streamed = true; /* loader feeds the pipeline through a line cache */
    if (jpeg && probe->progressive)
        exact += (double)probe->_jpeg_coef_bytes;
    if (png && probe->progressive) {
        exact += W * H * bpl;
        streamed = false;
    }
    if (pl.png_shrink_h) {
        /* pngfast.c: libspng's state and scanlines, our read buffer, one decoded row, the
         * column sums (32 bits), the accumulator, the shrunk image (float), the vertical
         * pass (float) and the resized image (uchar); libvips then works on that image in
         * memory. */
        const double pw = pl.png_pre_w, ph = pl.png_pre_h;
        exact += EST_PNGFAST_FIXED + 3 * W * bpl + 4 * W * bpl + pw * bpl * 8 + pw * ph * bpl * 4 +
                 pw * rh * bpl * 4 + rw * rh * bpl;
        lw = pl.png_pre_w;
        lh = pl.png_pre_h;
        streamed = false;
    }
    if (webp) {
        double internal = probe->lossless                          ? 4 * W * H
                          : (probe->_flags & IMGPROC__F_WEBP_ALPH) ? 5 * W * H
                                                                   : 0;
        exact += (double)probe->file_bytes + 4 * lw * lh + fmax(4 * lw * lh, internal);
    }
    const double sample = probe->bit_depth > 8 ? 2.0 : 1.0;
    if (probe->fmt == IMGPROC_FMT_GIF) {
        /* libvips reads the whole file into memory; libnsgif decodes into an RGBA canvas
         * and the loader keeps the previous frame for disposal */
        exact += (double)probe->file_bytes + EST_GIF_CANVAS * W * H;
        streamed = false;
    }
    if (probe->fmt == IMGPROC_FMT_TIFF)
        exact += EST_TIFF_CHUNK * (double)probe->_chunk_bytes;
    if (probe->fmt == IMGPROC_FMT_HEIC || probe->fmt == IMGPROC_FMT_AVIF) {
        /* libheif decodes the whole primary image: the codec's YUV planes and reference
         * frame (libde265 / dav1d), then the interleaved RGB(A) image libvips reads from;
         * the file's boxes and mdat are read whole */
        exact += (double)probe->file_bytes + W * H * sample * (EST_HEIF_YUV + probe->bands);
        streamed = false;
    }
    if (job->naive) {
        /* The thumbnail then runs on the decoded image in its stored sample format. */
        exact += W * H * bpl;
        streamed = false;
        bpp = fmax(bpp, bpl);
    }
    /* Animated outputs (pl.frames > 1): libwebp's demuxer and libvips' WebP loader hold every
     * frame decoded at full size (measured 33 MiB for 50 frames of 400x300); a crop holds the
     * resized roll (every frame); the encoders keep each output frame (coded, or its palette
     * index). */
    const double frames = pl.frames;
    if (frames > 1 && webp)
        exact += frames * W * H * 4;
    if (frames > 1)
        exact += frames * ow * oh *
                     (job->out_fmt == IMGPROC_FMT_WEBP ? EST_ANIM_WEBP_PX : EST_ANIM_GIF_PX) +
                 (job->out_fmt == IMGPROC_FMT_GIF ? EST_ANIM_GIF_FIXED : 0);
    if (pl.crop)
        exact += frames * rw * rh * ob;
    if (probe->orientation != 1)
        exact += ow * oh * ob;

    double model = EST_FIXED + EST_FIXED_PER_BAND * ob;
    if (probe->fmt == IMGPROC_FMT_AVIF) /* dav1d's padded frame buffers */
        model += EST_AVIF_DEC_EDGE * (W + H);
    double lines =
        EST_CACHE_LINES * bpl * (streamed ? 1 : 0) +
        (resize ? (job->naive ? EST_NAIVE_LINES : EST_RESIZE_LINES) : EST_COPY_LINES) * bpp;
    /* Short images (below a few strips) are held whole by every stage of the pipeline:
     * the cap is the whole image plus kernel margins, not a fraction of it. */
    bool grey16 = probe->bit_depth > 8 && probe->bands - alpha < 3;
    /* An animation's frames are one tall roll to the pipeline: short frames do not make a
     * short image (attack: 50 frames of 9237x5 to a 134x1 WebP took 48 MiB, estimated 20.6;
     * 50 of 2000x100 to 134x7, 36 MiB for 17.3) */
    double roll = frames * lh;
    double margin =
        fmin(EST_SHORT_LINES + (grey16 ? EST_SHORT_GREY16 : 0), EST_SHORT_PER_LINE * roll);
    double cap_lines = EST_SHORT_CAP * (roll + margin);
    /* The in-memory image of a naive job feeds the pipeline like a loader's cache. */
    double cap_bytes = bpl * (streamed || job->naive ? 1 : 0) + bpp;
    if (job->naive)
        cap_lines = fmax(cap_lines, EST_SHORT_CAP_NAIVE * lh);
    model += lw * fmin(lines, cap_lines * cap_bytes);
    if (webp && !probe->lossless)
        model += EST_WEBP_ROW * W;
    if (webp)
        model += EST_WEBP_FIXED;
    if (jpeg)
        model += EST_JPEG_ROW * W;
    if (pl.attention)
        model += EST_ATTENTION + (probe->has_alpha ? EST_ATTENTION_ALPHA_COL * rw : 0);
    if (cmyk)
        model += EST_LCMS_CMYK;
    else if (probe->has_icc)
        model += EST_LCMS_ICC;
    switch (job->out_fmt) {
    case IMGPROC_FMT_PNG:
        model += EST_PNG_OUT;
        break;
    case IMGPROC_FMT_WEBP: {
        /* webpsave takes RGB or RGBA: the alpha byte and its lossless coding come on top */
        model += EST_WEBP_OUT + ow * oh *
                                    (webp_enc_px(job->quality ? job->quality : job->webp_quality) +
                                     (alpha ? 1 + EST_WEBP_ALPHA_PX : 0));
        break;
    }
    case IMGPROC_FMT_AVIF:
        model += EST_AVIF_FIXED + EST_AVIF_EDGE * (ow + oh) +
                 ow * oh * avif_enc_px(job->avif_effort, alpha, lossless);
        break;
    case IMGPROC_FMT_JXL:
        model +=
            EST_JXL_FIXED + EST_JXL_ROW * oh + ow * oh * (alpha ? EST_JXL_ALPHA_PX : EST_JXL_PX);
        break;
    case IMGPROC_FMT_GIF:
        model += ow * oh * EST_GIF_PX + fmin(EST_GIF_HIST_MAX, ow * oh * EST_GIF_HIST_PX);
        break;
    default:
        break;
    }

    /* A long-running server's heap: measured through the running server by the attack
     * (one request at a time, VmHWM over the RSS before it), jobs peaked 12-35% (+5..8 MiB)
     * above the same job in a fresh process, and issue 12 saw +17 MiB on a 71 MiB job;
     * fresh processes never show it. Allocator state (arenas reused by the worker and
     * libvips threads after many jobs) is the suspect; until it is pinned down, it is paid
     * here. */
    double total =
        (exact * EST_MARGIN_EXACT + model * EST_MARGIN_MODEL) * EST_SERVER_SHARE + EST_SERVER_FIXED;
    return total >= 1.8e19 ? UINT64_MAX : (uint64_t)total;
}
