/* pngfast: the PNG thumbnail path that never holds full-size pixels (row decode by ISA-L
 * inflate or libspng with an in-loop box shrink, the Lanczos residual on the shrunk image,
 * libvips for ICC and crop). Taken when
 * imgproc__plan() sets png_shrink_h/_v; run.c calls it in place of vips_thumbnail_source(). */
#ifndef THUMBGATE_IMGPROC_PNGFAST_H
#define THUMBGATE_IMGPROC_PNGFAST_H

#include <vips/vips.h>

#include "imgproc/imgproc_internal.h"

/**
 * Decodes the PNG on @p fd (borrowed, read with pread from offset 0) shrunk by the plan's
 * box factors and returns in @p out a new reference to the image vips_thumbnail_source()
 * would give for @p pl: resized to pl->resized_w x resized_h, alpha premultiplied around
 * the resize, through the embedded ICC profile to @p export_profile (NULL: none), centre
 * crop when pl->crop. @p cancelled (may be NULL) is asked between reads and row groups;
 * true stops with TIMEOUT. 0 or -IMGPROC_E_* (CORRUPT for bad data, IO, NOMEM, TIMEOUT).
 */
int imgproc__pngfast(int fd, const imgproc_probe_t *probe, const imgproc__plan_t *pl,
                     const char *export_profile, bool (*cancelled)(void *), void *arg,
                     VipsImage **out, imgproc_err_t *err);

#endif
