/* jpegfast: JPEG to JPEG thumbnails in YCbCr planes (issue 14). libjpeg decodes the raw
 * planes at the plan's DCT scale (no colour conversion, no chroma upsampling), each plane
 * is resized with libvips' box + Lanczos3 geometry (lanczos.h) and streamed into libjpeg's
 * raw encoder as 4:2:0 (no conversion back, no chroma downsampling): libvips' RGB resize
 * and its two colour conversions were most of a large output's time. */
#ifndef THUMBGATE_IMGPROC_JPEGFAST_H
#define THUMBGATE_IMGPROC_JPEGFAST_H

#include <stdbool.h>
#include <stddef.h>

#include "imgproc/imgproc_internal.h"

/** imgproc__jpegfast() left the job to libvips; nothing it wrote is valid. */
#define IMGPROC__JPEGFAST_DECLINED 1

/**
 * Whether the job can take the fast path at all: a baseline 8-bit JPEG, grey or colour,
 * without ICC profile or EXIF orientation, resized to fit or centre-cropped (no smart
 * crop) into a JPEG. The file itself may still decline (its colour space, sampling factors, chroma
 * it would have to scale up, any libjpeg warning).
 */
bool imgproc__jpegfast_takes(const imgproc_probe_t *probe, const imgproc_job_t *job,
                             const imgproc__plan_t *pl);

/**
 * Decodes the JPEG on @p fd (borrowed, read with pread) and writes the thumbnail of @p pl
 * as a JPEG of @p quality, 4:4:4 when @p full_chroma (imgproc_full_chroma) else 4:2:0,
 * through @p write (returns 0, or -1 with errno set).
 * @p cancelled (may be NULL) is asked between reads and rows; true stops with TIMEOUT.
 * 0; IMGPROC__JPEGFAST_DECLINED when the file is not one the path handles or libjpeg
 * warned or failed (libvips then does the job, and reports bad data itself: the output
 * written so far must be discarded); or -IMGPROC_E_TIMEOUT, -IMGPROC_E_IO (a write),
 * -IMGPROC_E_NOMEM with @p err filled.
 * Memory: libjpeg's decoder and encoder state, one iMCU row of each plane in and out
 * (<= 64 rows of the output width a plane), a ring of Lanczos window rows per plane and the
 * masks: under a MiB for outputs up to 2048 px wide; no image is held whole.
 */
int imgproc__jpegfast(int fd, const imgproc__plan_t *pl, int quality, bool full_chroma,
                      bool (*cancelled)(void *), void *carg,
                      int (*write)(void *, const void *, size_t), void *warg, imgproc_err_t *err);

#endif
