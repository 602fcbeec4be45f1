/* imgproc internals shared between the files of the module (probe.c, plan.c, run.c,
 * imgproc.c) and its tests/tools. Nothing outside imgproc/ and tests/ includes this. */
#ifndef THUMBGATE_IMGPROC_INTERNAL_H
#define THUMBGATE_IMGPROC_INTERNAL_H

#include "imgproc/imgproc.h"

/* Bits of imgproc_probe_t._flags: facts the estimator needs that are not public API. */
enum {
    IMGPROC__F_WEBP_NOSCALE = 1u << 0, /**< animated WebP with a frame not covering the canvas:
                                            libvips turns shrink-on-load off */
    IMGPROC__F_WEBP_ALPH = 1u << 1,    /**< lossy WebP with an ALPH chunk (libwebp decodes the
                                            whole alpha plane at full size) */
};

/** Largest prefix imgproc_probe_file() reads in one go; further header bytes (a JPEG SOF
 *  after big APP segments, WebP chunks) are fetched with small bounded preads. */
#define IMGPROC__PROBE_PREFIX (64 * 1024)
/** Bounds on the extra reads a file probe may make beyond the prefix. */
#define IMGPROC__PROBE_MAX_PREADS 4096
#define IMGPROC__PROBE_MAX_EXTRA (4u * 1024 * 1024)

/** libvips limits we mirror in the probe so that admission never admits what the
 *  decoder would refuse. */
#define IMGPROC__JPEG_MAX_DIM 65500u   /* libjpeg JPEG_MAX_DIMENSION */
#define IMGPROC__PNG_MAX_DIM 10000000u /* VIPS_MAX_COORD, set as libpng user limit */
#define IMGPROC__WEBP_MAX_DIM 16383u   /* webp2vips / webpsave */
/* CPU time of libwebp decoding one WebP frame, per source pixel (scaling does not shorten it):
 * measured 39 ns/px on a 100 MP noise lossy file (Q90) and 26 ns/px on a 16 MP noise
 * lossless one on this machine (`vips thumbnail x.webp t.jpg 290`, user time), x1.5 */
#define IMGPROC__WEBP_DECODE_NS_PX 60.0
#define IMGPROC__WEBP_MAX_FRAMES 10000u

/**
 * What libvips will do for a job, derived from the probe alone. Shared by
 * imgproc_output_dims(), imgproc_estimate() and imgproc_run() so the three always agree.
 * All sizes are in the stored (pre-orientation) frame unless named otherwise.
 */
typedef struct {
    bool swap;               /**< orientation 5..8: width and height trade places */
    uint32_t box_w, box_h;   /**< thumbnail target in stored orientation (VIPS_MAX_COORD = free) */
    bool crop;               /**< centre crop to box after the resize (never enlarging) */
    bool attention;          /**< SMART: the crop window placed by attention, not centred */
    uint32_t jpeg_shrink;    /**< libjpeg DCT scaling 1, 2, 4, 8 (1 for other formats) */
    double webp_scale;       /**< libwebp scaling (1.0 = none) */
    uint32_t load_w, load_h; /**< image as the loader delivers it (after shrink-on-load) */
    uint32_t resized_w, resized_h; /**< after vips_resize */
    double load_hshrink, load_vshrink; /**< vips_thumbnail's resize factors on the loaded image */
    uint32_t out_w, out_h;         /**< final output, after crop and orientation */
    uint32_t out_bands;            /**< bands of the pipeline after sRGB conversion (1..4) */
    uint32_t frames; /**< frames of the output: the source's pages for an animated GIF/WebP
                          written as an animated format (webp, gif), else 1; the sizes above
                          are those of one frame */
    /* pngfast.c (issue 14): a non-interlaced PNG of <= 8 bits shrunk >= 2x on both axes is
     * decoded by libspng with the integer part of libvips' reduce done in the decoder. */
    uint32_t png_shrink_h, png_shrink_v; /**< box factors in the decoder; 0 = libvips decodes */
    uint32_t png_pre_w, png_pre_h;       /**< the image as it leaves the decoder */
    double png_hshrink, png_vshrink;     /**< vips_thumbnail's whole shrink on each axis */
} imgproc__plan_t;

/** The read buffer in front of libvips' small reads of the source (run.c), bytes. */
#define IMGPROC__SRC_BUF (64 * 1024)

/** Fills @p plan for @p job on @p probe. 0, -IMGPROC_E_INVALID (bad job) or
 *  -IMGPROC_E_TOO_LARGE (an image of the pipeline over job->max_pixels; @p plan filled). */
int imgproc__plan(const imgproc_probe_t *probe, const imgproc_job_t *job, imgproc__plan_t *plan);

/** imgproc_probe_file() on an open descriptor (borrowed; read with pread only). */
int imgproc__probe_fd(int fd, imgproc_probe_t *out, imgproc_err_t *err);

/** Fills @p err (may be NULL) and returns -code. printf-style message. */
int imgproc__fail(imgproc_err_t *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/** Copies and clears the libvips error buffer into @p err with @p code; returns -code. */
int imgproc__fail_vips(imgproc_err_t *err, int code, const char *what);

/** imgproc__fail_vips() for a failed decode pipeline: -IMGPROC_E_NOMEM when libvips'
 *  allocator reported "out of memory", else -IMGPROC_E_CORRUPT (bad input). */
int imgproc__fail_vips_decode(imgproc_err_t *err, const char *what);

#endif
