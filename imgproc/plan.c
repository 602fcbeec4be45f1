/* The job plan: what libvips 8.14's vips_thumbnail() will do with a given header and
 * request (shrink-on-load factor, intermediate and final sizes), replicated with the same
 * floating-point steps as libvips/resample/thumbnail.c and resize.c so that
 * imgproc_output_dims() is exact; and the memory estimator built on it. */
#include <math.h>
#include <string.h>

#include "imgproc/imgproc_internal.h"

#define MAX_COORD 10000000 /* VIPS_MAX_COORD */

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
    if (!pl->upsize) {
        *hs = fmax(1.0, *hs);
        *vs = fmax(1.0, *vs);
    }
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
        if (tw == 0 || th == 0)
            return -IMGPROC_E_INVALID;
        pl->crop = true;
        pl->upsize = true;
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
    pl->resized_w = resize_len(pl->load_w, hs);
    pl->resized_h = resize_len(pl->load_h, vs);
    uint32_t ow = pl->resized_w, oh = pl->resized_h;
    if (pl->crop) {
        ow = ow < pl->box_w ? ow : pl->box_w;
        oh = oh < pl->box_h ? oh : pl->box_h;
    }
    pl->out_w = pl->swap ? oh : ow;
    pl->out_h = pl->swap ? ow : oh;

    uint32_t alpha = probe->has_alpha ? 1 : 0;
    uint32_t colour = probe->bands - alpha;
    pl->out_bands = (colour >= 3 || probe->has_icc ? 3 : 1) + alpha;
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

uint64_t imgproc_estimate(const imgproc_probe_t *probe, const imgproc_job_t *job)
{
    imgproc__plan_t pl;
    if (imgproc__plan(probe, job, &pl) != 0)
        return 0;
    /* Placeholder until calibrated. */
    return (uint64_t)probe->width * probe->height * 4 + (8u << 20);
}
