/* lanczos: libvips 8.14's Lanczos3 reduce geometry on one axis (lanczos.h). */
#include <math.h>
#include <stdlib.h>

#include "imgproc/lanczos.h"

/* vips_reduceh/v's Lanczos3 mask for a shrink and a sub-pixel position (templates.h,
 * calculate_coefficients_lanczos). Returns the number of points. */
#define LANCZOS_A 3
#define TSCALE 64 /* VIPS_TRANSFORM_SCALE */
static int lanczos_mask(float *c, double shrink, double x)
{
    int n = 2 * (int)rint(LANCZOS_A * shrink) + 1;
    double half = x + n / 2.0 - 1, sum = 0;
    double *d = malloc((size_t)n * sizeof(*d));
    if (!d)
        return -1;
    for (int i = 0; i < n; i++) {
        double xp = (i - half) / shrink, l;
        if (xp == 0.0)
            l = 1.0;
        else if (xp < -LANCZOS_A || xp > LANCZOS_A)
            l = 0.0;
        else
            l = LANCZOS_A * sin(M_PI * xp) * sin(M_PI * xp / LANCZOS_A) / (M_PI * M_PI * xp * xp);
        d[i] = l;
        sum += l;
    }
    for (int i = 0; i < n; i++)
        c[i] = (float)(d[i] / sum);
    free(d);
    return n;
}

/* The geometry of vips_reducev/h on one axis after their integer shrink (lanczos.h). */
int imgproc__axis_init(imgproc__axis_t *ax, double whole, uint32_t box, uint32_t in_full, uint32_t out)
{
    double extra = out * whole - in_full;
    ax->shrink = whole / box;
    extra /= box;
    ax->offset = (1 + extra) / 2.0 - 1;
    ax->n = 2 * (int)rint(LANCZOS_A * ax->shrink) + 1;
    ax->pad = (int)ceil(ax->n / 2.0) - 1;
    ax->stride = (ax->n + IMGPROC__MASK_ALIGN - 1) / IMGPROC__MASK_ALIGN * IMGPROC__MASK_ALIGN;
    ax->masks = calloc((size_t)(TSCALE + 1) * (size_t)ax->stride, sizeof(float));
    if (!ax->masks)
        return -1;
    for (int t = 0; t <= TSCALE; t++)
        if (lanczos_mask(ax->masks + (size_t)t * ax->stride, ax->shrink, (double)t / TSCALE) != ax->n)
            return -1;
    return 0;
}

/* First input index (in the edge-extended input) and mask of output position @p o. */
const float *imgproc__axis_at(const imgproc__axis_t *ax, double o, int *first)
{
    /* floor, not truncation: a shifted grid (jpegfast's chroma) can start before sample 0.
     * For pos >= 0 this is libvips' (int)(pos * 128) & 127: pos - floor(pos) is exact. */
    double pos = (o + 0.5) * ax->shrink - 0.5 - ax->offset, fl = floor(pos);
    int s = (int)((pos - fl) * TSCALE * 2);
    *first = (int)fl - ax->pad;
    return ax->masks + (size_t)((s + 1) >> 1) * ax->stride;
}

void imgproc__axis_free(imgproc__axis_t *ax)
{
    free(ax->masks);
    ax->masks = NULL;
}
