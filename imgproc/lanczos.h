/* lanczos: libvips 8.14's Lanczos3 reduce geometry on one axis (vips_reduceh/v after their
 * integer box shrink with gap 2): the masks and the sample grid, so that the fast decoders
 * (pngfast.c, jpegfast.c) resize as vips_thumbnail would. */
#ifndef THUMBGATE_IMGPROC_LANCZOS_H
#define THUMBGATE_IMGPROC_LANCZOS_H

#include <stdint.h>

/** A mask's floats are padded with zeros to a multiple of this, so that a dot product
 *  over it runs in whole vectors (jpegfast.c). */
#define IMGPROC__MASK_ALIGN 8

typedef struct {
    double shrink, offset; /**< residual factor after the box shrink; grid offset */
    int n, pad;            /**< points of a mask; how far a mask reaches before its centre */
    int stride;            /**< floats from one mask to the next: n rounded up to a multiple of
                                IMGPROC__MASK_ALIGN, the points past n zero */
    float *masks;          /**< (IMGPROC__TSCALE + 1) masks of stride, each summing to 1 */
} imgproc__axis_t;

/**
 * Fills @p ax for a reduce by @p whole (the factor asked for, before the box shrink @p box)
 * from @p in_full samples (the length before the box shrink) to @p out. 0, or -1 when out
 * of memory. Free with imgproc__axis_free() (also after a failure).
 */
int imgproc__axis_init(imgproc__axis_t *ax, double whole, uint32_t box, uint32_t in_full,
                       uint32_t out);

/** The mask of output position @p o and in @p first its first input index (in the
 *  edge-extended input: clamp each index to the input). @p o may fall between two output
 *  samples (a crop of a subsampled plane that starts at an odd luma offset). */
const float *imgproc__axis_at(const imgproc__axis_t *ax, double o, int *first);

void imgproc__axis_free(imgproc__axis_t *ax);

#endif
