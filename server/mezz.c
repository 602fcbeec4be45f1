/* mezz — which originals get a level, and which requests a level may serve (mezz.h). */
#include "server/mezz.h"

#include <stdio.h>

#include "server/store.h"

void mezz_variant(const cfg_t *cfg, bool small, char *out, size_t outlen)
{
    snprintf(out, outlen, "%clevel-%u%s.jpg", STORE_LEVEL_MARK, cfg->mezz_size,
             small ? "-half" : "");
}

/* Width and height as displayed (after EXIF orientation). */
static void display_dims(const imgproc_probe_t *p, double *w, double *h)
{
    bool swap = p->orientation >= 5 && p->orientation <= 8;
    *w = swap ? p->height : p->width;
    *h = swap ? p->width : p->height;
}

bool mezz_level_job(const cfg_t *cfg, const imgproc_probe_t *orig, imgproc_job_t *job)
{
    if (!cfg->mezz_enabled || cfg->memory_mode == CFG_MODE_NAIVE || orig->pages > 1 ||
        orig->bit_depth > 8 || orig->has_alpha)
        return false;
    uint32_t longside = orig->width > orig->height ? orig->width : orig->height;
    uint32_t side = longside / 2 > cfg->mezz_size ? longside / 2 : cfg->mezz_size;
    if ((uint64_t)longside * 2 < (uint64_t)side * 3)
        return false; /* the level would be most of the original: little to gain */
    *job = (imgproc_job_t){
        .op = IMGPROC_OP_FIT, .width = side, .height = side, .out_fmt = IMGPROC_FMT_JPEG};
    return true;
}

bool mezz_small_job(const imgproc_probe_t *lvl, imgproc_job_t *job)
{
    uint32_t half = (lvl->width > lvl->height ? lvl->width : lvl->height) / 2;
    if (half < MEZZ_SMALL_MIN)
        return false;
    *job = (imgproc_job_t){
        .op = IMGPROC_OP_FIT, .width = half, .height = half, .out_fmt = IMGPROC_FMT_JPEG};
    return true;
}

void mezz_level_probe(const imgproc_probe_t *orig, const imgproc_job_t *lj, imgproc_probe_t *lvl)
{
    uint32_t w, h;
    imgproc_output_dims(orig, lj, &w, &h);
    *lvl = (imgproc_probe_t){.fmt = IMGPROC_FMT_JPEG,
                             .width = w,
                             .height = h,
                             .bands = orig->bands < 3 ? 1 : 3,
                             .bit_depth = 8,
                             .pages = 1,
                             .orientation = 1,
                             .chroma_h = orig->bands < 3 ? 1 : 2, /* jpeg_420 */
                             .chroma_v = orig->bands < 3 ? 1 : 2};
}

static bool gives(const imgproc_probe_t *lvl, const imgproc_job_t *j, uint32_t ow, uint32_t oh)
{
    imgproc_err_t err;
    uint32_t w, h;
    if (imgproc_plan_check(lvl, j, &err) != 0)
        return false;
    imgproc_output_dims(lvl, j, &w, &h);
    return w == ow && h == oh;
}

bool mezz_job_on_level(const cfg_t *cfg, const imgproc_opts_t *opts, const imgproc_probe_t *orig,
                       const imgproc_job_t *req, const imgproc_probe_t *lvl, imgproc_job_t *out)
{
    if (!cfg->mezz_enabled || req->op == IMGPROC_OP_CONVERT || req->naive)
        return false;
    uint32_t ow, oh;
    imgproc_output_dims(orig, req, &ow, &oh);
    if (ow == 0 || oh == 0)
        return false;
    double W, H, lw, lh;
    display_dims(orig, &W, &H);
    display_dims(lvl, &lw, &lh);
    /* the output's scale against the original (a cover's is the larger axis), and the
     * level's on each axis: the level must be k times finer */
    double s = ow / W > oh / H ? ow / W : oh / H, k = cfg->mezz_k_milli / 1000.0;
    /* and its chroma finer than the output's: a full-chroma output of a level whose
     * chroma is subsampled takes the level at its chroma's size, and at least
     * MEZZ_CHROMA_RATIO times finer */
    if (lvl->bands >= 3 && (lvl->chroma_h > 1 || lvl->chroma_v > 1) &&
        imgproc_full_chroma(req, opts)) {
        lw /= lvl->chroma_h;
        lh /= lvl->chroma_v;
        k = k > MEZZ_CHROMA_RATIO ? k : MEZZ_CHROMA_RATIO;
    }
    if (lw < k * s * W || lh < k * s * H)
        return false;
    /* the request itself, else a fit whose rounding lands on the same size, else the
     * cover-crop to it (which may shift the content by a fraction of a pixel) */
    const imgproc_job_t tries[] = {
        *req,
        {.op = IMGPROC_OP_FIT, .width = ow, .height = 0},
        {.op = IMGPROC_OP_FIT, .width = 0, .height = oh},
        {.op = IMGPROC_OP_FIT, .width = ow, .height = oh},
        {.op = IMGPROC_OP_COVER, .width = ow, .height = oh},
    };
    for (size_t i = 0; i < sizeof(tries) / sizeof(tries[0]); i++) {
        *out = *req;
        out->op = tries[i].op;
        out->width = tries[i].width;
        out->height = tries[i].height;
        if (gives(lvl, out, ow, oh))
            return true;
    }
    return false;
}
