/* jpegfast: JPEG to JPEG thumbnails in YCbCr planes (jpegfast.h).
 *
 * libvips 8.14 makes a JPEG thumbnail as: libjpeg decodes at the DCT scale to RGB (chroma
 * upsampled, YCbCr converted), vips_reducev/h box-shrink then Lanczos3-reduce the three RGB
 * bands, and libjpeg converts them back to YCbCr and downsamples the chroma to encode. On
 * the bench's 5120x3200 original to 1920 px that is 228 ms of a core, 150 of them in the
 * resize. Here each plane of the file is resized as it is stored (the chroma planes at
 * their own resolution, a quarter of the pixels at 4:2:0), with libvips' geometry (the box
 * shrink of gap 2, then the Lanczos3 masks and sample grid of lanczos.h), and the result
 * goes to libjpeg's raw encoder as 4:2:0, or 4:4:4 where libvips would write that
 * (imgproc_full_chroma).
 * YCbCr is an affine map of RGB, so resizing the planes is resizing the RGB bands; the
 * only difference is where the chroma is sampled (tests/check_jpegfast.c holds the result
 * to 45 dB PSNR of vips_thumbnail's).
 *
 * Everything streams: one iMCU row of each plane in, a ring of the Lanczos window per plane,
 * and the output rows of at most one encoder iMCU row ahead.
 */
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jpeglib.h>

#include "imgproc/jpegfast.h"
#include "imgproc/lanczos.h"

#define RD_BUF (64 * 1024)
#define WR_BUF (64 * 1024)
#define OUT_CAP 64  /* output rows a plane keeps: an encoder iMCU row and what runs ahead */
#define MAX_TAPS 64 /* Lanczos points of the vertical pass (2 x 3 x residual + 1: 25 at most) */

bool imgproc__jpegfast_takes(const imgproc_probe_t *probe, const imgproc_job_t *job,
                             const imgproc__plan_t *pl)
{
    return probe->fmt == IMGPROC_FMT_JPEG && job->out_fmt == IMGPROC_FMT_JPEG && !job->naive &&
           !probe->progressive && !probe->has_icc && !probe->has_alpha &&
           (probe->bands == 1 || probe->bands == 3) && probe->orientation == 1 && !pl->attention &&
           pl->frames == 1 && !pl->swap;
}

typedef enum { DONE = 0, DECLINE, CANCEL, WRITE_FAIL, NOMEM } why_t;

typedef struct {
    struct jpeg_error_mgr pub;
    jmp_buf jmp;
    why_t why;
} errmgr_t;

static void on_error_exit(j_common_ptr c)
{
    errmgr_t *e = (errmgr_t *)c->err;
    if (e->why == DONE)
        e->why = DECLINE;
    longjmp(e->jmp, 1);
}

/* libjpeg's warnings (corrupt data it works around, a truncated file) hand the job to
 * libvips, whose fail_on policy then decides. */
static void on_emit(j_common_ptr c, int level)
{
    if (level < 0)
        on_error_exit(c);
}

static void on_output(j_common_ptr c)
{
}

typedef struct {
    struct jpeg_source_mgr pub;
    int fd;
    off_t pos;
    JOCTET *buf;
    bool (*cancelled)(void *);
    void *carg;
    errmgr_t *em;
    j_common_ptr owner;
} src_t;

static void src_init(j_decompress_ptr c)
{
}

static boolean src_fill(j_decompress_ptr c)
{
    src_t *s = (src_t *)c->src;
    if (s->cancelled && s->cancelled(s->carg)) {
        s->em->why = CANCEL;
        longjmp(s->em->jmp, 1);
    }
    ssize_t k;
    do
        k = pread(s->fd, s->buf, RD_BUF, s->pos);
    while (k < 0 && errno == EINTR);
    if (k <= 0) /* a read error or the end inside the data: libvips reports it */
        on_error_exit((j_common_ptr)c);
    s->pos += k;
    s->pub.next_input_byte = s->buf;
    s->pub.bytes_in_buffer = (size_t)k;
    return TRUE;
}

static void src_skip(j_decompress_ptr c, long n)
{
    src_t *s = (src_t *)c->src;
    if (n <= 0)
        return;
    if ((size_t)n <= s->pub.bytes_in_buffer) {
        s->pub.next_input_byte += n;
        s->pub.bytes_in_buffer -= (size_t)n;
        return;
    }
    s->pos += (off_t)((size_t)n - s->pub.bytes_in_buffer);
    s->pub.bytes_in_buffer = 0;
}

static void src_term(j_decompress_ptr c)
{
}

typedef struct {
    struct jpeg_destination_mgr pub;
    JOCTET *buf;
    int (*write)(void *, const void *, size_t);
    void *warg;
    errmgr_t *em;
} dst_t;

static void dst_init(j_compress_ptr c)
{
    dst_t *d = (dst_t *)c->dest;
    d->pub.next_output_byte = d->buf;
    d->pub.free_in_buffer = WR_BUF;
}

static boolean dst_empty(j_compress_ptr c)
{
    dst_t *d = (dst_t *)c->dest;
    if (d->write(d->warg, d->buf, WR_BUF) != 0) {
        d->em->why = WRITE_FAIL;
        longjmp(d->em->jmp, 1);
    }
    dst_init(c);
    return TRUE;
}

static void dst_term(j_compress_ptr c)
{
    dst_t *d = (dst_t *)c->dest;
    size_t n = WR_BUF - d->pub.free_in_buffer;
    if (n && d->write(d->warg, d->buf, n) != 0) {
        d->em->why = WRITE_FAIL;
        longjmp(d->em->jmp, 1);
    }
}

/* One plane: box shrink (bh x bv, libvips' shrinkh/v with ceil: a partial last group takes
 * copies of the last sample), then the vertical Lanczos pass as soon as its window of box
 * rows is there, the horizontal pass, and the output ring the encoder reads. */
typedef struct {
    uint32_t iw, ih, bh, bv, pw, ph, ow, oh;
    double x0, y0;  /* where the output starts on the resized grid (a centre crop) */
    double last_dy; /* moves the last output row (a chroma row of an odd output height) */
    imgproc__axis_t v, h;
    uint32_t *acc; /* pw sums of the box group being filled */
    uint32_t acc_rows, in_rows;
    float *ring; /* ring_n box rows of pw, each sample a whole number 0..255 (libvips' uchar
                    box result), in floats once rather than at each of the v.n taps */
    uint32_t ring_n, pre_rows;
    const uint8_t *last_in; /* the last input row pushed (copies close a partial group) */
    uint8_t *last_copy;
    float *vacc; /* margin + pw + margin */
    int margin;
    int *hfirst;
    const float **hmask;
    uint8_t *out; /* OUT_CAP rows of stride */
    uint32_t stride, produced, group;
    uint64_t recip; /* 2^32 / (bh * bv), rounded up: the box mean without a division */
} plane_t;

static void plane_free(plane_t *p)
{
    imgproc__axis_free(&p->v);
    imgproc__axis_free(&p->h);
    free(p->acc);
    free(p->ring);
    free(p->last_copy);
    free(p->vacc);
    free(p->hfirst);
    free(p->hmask);
    free(p->out);
}

/* The box shrink of a plane, before its Lanczos3 pass: libvips' (vips_reduceh/v with gap
 * 2, so a Lanczos residual of 2 to 4) for the luma and 4:4:4 chroma. A chroma plane made
 * for a 4:2:0 output and reduced 2x or more is box-shrunk by at least 2 first, leaving a
 * residual of 1 to 2: what libjpeg's own 4:2:0 downsampling of libvips' RGB result does,
 * at a third to a half of the Lanczos points (a 4:4:4 level to a 1600 px JPEG: 11 points
 * a sample instead of 21). A 4:4:4 output keeps libvips' filter: its chroma is seen whole
 * (box 2 there cost 8 dB at quality 100, 400 px from 2003). */
static uint32_t box_of(uint32_t in, uint32_t out, bool chroma)
{
    uint32_t f = in / out / 2;
    if (chroma && f < 2 && in >= 2 * out)
        f = 2;
    return f < 1 ? 1 : f;
}

/* A plane of @p iw x @p ih resized to @p rw x @p rh (@p whole: the reduce factors libvips
 * would use) of which the @p ow x @p oh starting at (@p x0, @p y0) is the output. */
static int plane_init(plane_t *p, uint32_t iw, uint32_t ih, uint32_t rw, uint32_t rh,
                      double whole_h, double whole_v, double x0, double y0, uint32_t ow,
                      uint32_t oh, double last_dx, double last_dy, uint32_t group, bool chroma)
{
    p->last_dy = last_dy;
    p->iw = iw;
    p->ih = ih;
    p->ow = ow;
    p->oh = oh;
    p->x0 = x0;
    p->y0 = y0;
    p->group = group;
    p->bh = box_of(iw, rw, chroma);
    p->bv = box_of(ih, rh, chroma);
    p->pw = (iw + p->bh - 1) / p->bh;
    p->recip = ((1ull << 32) + p->bh * p->bv - 1) / (p->bh * p->bv);
    p->ph = (ih + p->bv - 1) / p->bv;
    if (imgproc__axis_init(&p->v, whole_v, p->bv, ih, rh) ||
        imgproc__axis_init(&p->h, whole_h, p->bh, iw, rw))
        return -1;
    if (p->v.n > MAX_TAPS)
        return -2;
    p->ring_n = (uint32_t)p->v.n + 1;
    p->margin = p->h.stride + 1; /* a mask's padding reads past its n points */
    p->stride = (ow + 15) & ~15u;
    p->acc = calloc(p->pw, sizeof(*p->acc));
    p->ring = malloc((size_t)p->ring_n * p->pw * sizeof(*p->ring));
    p->last_copy = malloc(iw);
    p->vacc = malloc(((size_t)p->pw + 2 * (size_t)p->margin) * sizeof(*p->vacc));
    p->hfirst = malloc(ow * sizeof(*p->hfirst));
    p->hmask = malloc(ow * sizeof(*p->hmask));
    p->out = malloc((size_t)OUT_CAP * p->stride);
    if (!p->acc || !p->ring || !p->last_copy || !p->vacc || !p->hfirst || !p->hmask || !p->out)
        return -1;
    for (uint32_t x = 0; x < ow; x++) {
        p->hmask[x] = imgproc__axis_at(&p->h, x0 + x + (x + 1 == ow ? last_dx : 0), &p->hfirst[x]);
        if (p->hfirst[x] < -p->margin || p->hfirst[x] + p->h.stride > (int)p->pw + p->margin)
            return -2; /* a window past the margins: libvips' job */
    }
    return 0;
}

static uint8_t *out_row(plane_t *p, uint32_t y)
{
    return p->out + (size_t)(y % OUT_CAP) * p->stride;
}

/* Makes every output row whose window of box rows is complete (all of them once the input
 * has ended). -1 when the ring would overrun a row the encoder has not taken yet. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) &&                             \
    !defined(__SANITIZE_ADDRESS__)
#define WIDE_SIMD __attribute__((target_clones("avx2", "default")))
#else
#define WIDE_SIMD
#endif

typedef float vec8_t __attribute__((vector_size(8 * sizeof(float))));
_Static_assert(IMGPROC__MASK_ALIGN == 8, "the horizontal pass takes masks in vectors of 8");

static inline uint8_t to_u8(float v)
{
    long r = lrintf(v);
    return (uint8_t)(r < 0 ? 0 : r > 255 ? 255 : r);
}

WIDE_SIMD static int plane_emit(plane_t *p, bool ended, uint32_t enc_base)
{
    const float *vm;
    int first;
    while (p->produced < p->oh) {
        uint32_t y = p->produced;
        vm = imgproc__axis_at(&p->v, p->y0 + y + (y + 1 == p->oh ? p->last_dy : 0), &first);
        int last = first + p->v.n - 1;
        if (last > (int)p->ph - 1)
            last = (int)p->ph - 1;
        if (!ended && last >= (int)p->pre_rows)
            return 0;
        if (y >= enc_base + OUT_CAP)
            return -1;
        /* the vertical pass: 8 samples at a time summed over the window's rows in
         * registers, written once */
        float *va = p->vacc + p->margin;
        const uint32_t pw = p->pw;
        const int vn = p->v.n;
        const float *rows[MAX_TAPS];
        for (int i = 0; i < vn; i++) {
            int r = first + i;
            r = r < 0 ? 0 : r > (int)p->ph - 1 ? (int)p->ph - 1 : r;
            rows[i] = p->ring + (size_t)((uint32_t)r % p->ring_n) * pw;
        }
        uint32_t x = 0;
        for (; x + 8 <= pw; x += 8) {
            vec8_t a = {0};
            for (int i = 0; i < vn; i++) {
                vec8_t sv;
                memcpy(&sv, rows[i] + x, sizeof(sv));
                a += vm[i] * sv;
            }
            memcpy(va + x, &a, sizeof(a));
        }
        for (; x < pw; x++) {
            float a = 0;
            for (int i = 0; i < vn; i++)
                a += vm[i] * rows[i][x];
            va[x] = a;
        }
        for (int m = 1; m <= p->margin; m++) {
            va[-m] = va[0];
            va[pw - 1 + (uint32_t)m] = va[pw - 1];
        }
        /* the horizontal pass: a dot product of whole vectors per output sample (the
         * masks are padded with zeros to IMGPROC__MASK_ALIGN floats) */
        uint8_t *o = out_row(p, y);
        const int hs = p->h.stride;
        for (uint32_t ox = 0; ox < p->ow; ox++) {
            const float *c = p->hmask[ox];
            const float *sp = va + p->hfirst[ox];
            vec8_t a = {0};
            for (int j = 0; j < hs; j += 8) {
                vec8_t cv, sv;
                memcpy(&cv, c + j, sizeof(cv));
                memcpy(&sv, sp + j, sizeof(sv));
                a += cv * sv;
            }
            o[ox] = to_u8((a[0] + a[4]) + (a[1] + a[5]) + (a[2] + a[6]) + (a[3] + a[7]));
        }
        for (uint32_t x = p->ow; x < p->stride; x++)
            o[x] = o[p->ow - 1];
        p->produced++;
    }
    return 0;
}

/* The box sums of the group as one box row into the ring: each rounded mean (sum + n/2)
 * / n as a multiply by recip, exact while (sum + n/2) * n < 2^32, i.e. for n up to 4096
 * (a sum is at most 255 n); larger boxes divide. */
static void plane_box_row(plane_t *p)
{
    float *dst = p->ring + (size_t)(p->pre_rows % p->ring_n) * p->pw;
    const uint32_t n = p->bh * p->bv, half = n / 2;
    if (n <= 4096) {
        const uint64_t m = p->recip;
        for (uint32_t x = 0; x < p->pw; x++)
            dst[x] = (float)(uint32_t)(((p->acc[x] + half) * m) >> 32);
    } else {
        for (uint32_t x = 0; x < p->pw; x++)
            dst[x] = (float)((p->acc[x] + half) / n);
    }
    memset(p->acc, 0, p->pw * sizeof(*p->acc));
    p->acc_rows = 0;
    p->pre_rows++;
}

WIDE_SIMD static void plane_add(plane_t *p, const uint8_t *row)
{
    uint32_t x = 0, bx = 0;
    if (p->bh == 1) {
        for (; x < p->iw; x++)
            p->acc[x] += row[x];
    } else if (p->bh == 2) {
        const uint32_t full = p->iw / 2;
        uint32_t *acc = p->acc;
        for (bx = 0; bx < full; bx++)
            acc[bx] += (uint32_t)row[2 * bx] + row[2 * bx + 1];
        if (p->iw & 1)
            acc[bx] += 2u * row[p->iw - 1];
    } else {
        for (; x + p->bh <= p->iw; x += p->bh, bx++) {
            uint32_t s = 0;
            for (uint32_t k = 0; k < p->bh; k++)
                s += row[x + k];
            p->acc[bx] += s;
        }
        if (x < p->iw) { /* the partial last group: copies of the last column */
            uint32_t s = 0;
            for (uint32_t k = 0; k < p->bh; k++)
                s += row[x + k < p->iw ? x + k : p->iw - 1];
            p->acc[bx] += s;
        }
    }
}

/* One input row of the plane (rows past its height are ignored). */
static int plane_push(plane_t *p, const uint8_t *row, uint32_t enc_base)
{
    if (p->in_rows >= p->ih)
        return 0;
    p->in_rows++;
    if (p->bh == 1 && p->bv == 1) { /* no box: the row is the box row */
        float *dst = p->ring + (size_t)(p->pre_rows++ % p->ring_n) * p->pw;
        for (uint32_t x = 0; x < p->pw; x++)
            dst[x] = row[x];
        return plane_emit(p, false, enc_base);
    }
    if (p->in_rows == p->ih) { /* kept for the copies that close a partial group */
        memcpy(p->last_copy, row, p->iw);
        p->last_in = p->last_copy;
    }
    plane_add(p, row);
    if (++p->acc_rows == p->bv)
        plane_box_row(p);
    return plane_emit(p, false, enc_base);
}

static int plane_end(plane_t *p, uint32_t enc_base)
{
    if (p->acc_rows) {
        while (p->acc_rows < p->bv) {
            plane_add(p, p->last_in);
            p->acc_rows++;
        }
        plane_box_row(p);
    }
    return plane_emit(p, p->in_rows == p->ih, enc_base);
}

typedef struct {
    struct jpeg_decompress_struct d;
    struct jpeg_compress_struct e;
    bool d_made, e_made;
    errmgr_t em;
    src_t src;
    dst_t dst;
    plane_t pl[3];
    int nplanes;
    JSAMPLE *inbuf;
    JSAMPROW *inrows;
    JSAMPARRAY in[3]; /* each component's rows of one iMCU row, in inrows */
    JSAMPROW outrows[3][16];
} fast_t;

static int fail(fast_t *f, imgproc_err_t *err)
{
    switch (f->em.why) {
    case CANCEL:
        return imgproc__fail(err, IMGPROC_E_TIMEOUT, "jpeg: cancelled at the job deadline");
    case WRITE_FAIL:
        return imgproc__fail(err, IMGPROC_E_IO, "write output: %s", strerror(errno));
    case NOMEM:
        return imgproc__fail(err, IMGPROC_E_NOMEM, "jpeg: plane buffers");
    default:
        return IMGPROC__JPEGFAST_DECLINED;
    }
}

/* Input rows until every plane has made the rows of encoder iMCU row @p g. */
static int fill_group(fast_t *f, uint32_t g)
{
    struct jpeg_decompress_struct *d = &f->d;
    const uint32_t rows_in = (uint32_t)(d->max_v_samp_factor * d->min_DCT_scaled_size);
    for (;;) {
        bool short_ = false;
        for (int i = 0; i < f->nplanes; i++) {
            plane_t *p = &f->pl[i];
            uint32_t need = (g + 1) * p->group;
            if (p->produced < (need < p->oh ? need : p->oh))
                short_ = true;
        }
        if (!short_)
            return 0;
        if (d->output_scanline >= d->output_height) {
            for (int i = 0; i < f->nplanes; i++)
                if (plane_end(&f->pl[i], g * f->pl[i].group))
                    return -1;
            for (int i = 0; i < f->nplanes; i++)
                if (f->pl[i].produced < f->pl[i].oh)
                    return -1;
            return 0;
        }
        if (f->src.cancelled && f->src.cancelled(f->src.carg)) {
            f->em.why = CANCEL;
            longjmp(f->em.jmp, 1);
        }
        if (jpeg_read_raw_data(d, f->in, rows_in) != rows_in) {
            f->em.why = DECLINE;
            longjmp(f->em.jmp, 1);
        }
        for (int ci = 0; ci < f->nplanes; ci++) {
            jpeg_component_info *c = &d->comp_info[ci];
            uint32_t n = (uint32_t)(c->v_samp_factor * c->DCT_scaled_size);
            for (uint32_t k = 0; k < n; k++)
                if (plane_push(&f->pl[ci], f->in[ci][k], g * f->pl[ci].group))
                    return -1;
        }
    }
}

int imgproc__jpegfast(int fd, const imgproc__plan_t *pl, int quality, bool full_chroma,
                      bool (*cancelled)(void *), void *carg,
                      int (*write)(void *, const void *, size_t), void *warg, imgproc_err_t *err)
{
    fast_t *f = calloc(1, sizeof(*f));
    if (!f)
        return imgproc__fail(err, IMGPROC_E_NOMEM, "jpeg: state");
    int rc = 0;
    struct jpeg_decompress_struct *d = &f->d;
    struct jpeg_compress_struct *e = &f->e;

    d->err = jpeg_std_error(&f->em.pub);
    e->err = &f->em.pub;
    f->em.pub.error_exit = on_error_exit;
    f->em.pub.emit_message = on_emit;
    f->em.pub.output_message = on_output;
    f->src.buf = malloc(RD_BUF);
    f->dst.buf = malloc(WR_BUF);
    if (!f->src.buf || !f->dst.buf) {
        f->em.why = NOMEM;
        goto out;
    }
    if (setjmp(f->em.jmp)) {
        rc = fail(f, err);
        goto out;
    }
    jpeg_create_decompress(d);
    f->d_made = true;
    f->src.pub.init_source = src_init;
    f->src.pub.fill_input_buffer = src_fill;
    f->src.pub.skip_input_data = src_skip;
    f->src.pub.resync_to_restart = jpeg_resync_to_restart;
    f->src.pub.term_source = src_term;
    f->src.fd = fd;
    f->src.cancelled = cancelled;
    f->src.carg = carg;
    f->src.em = &f->em;
    d->src = &f->src.pub;
    jpeg_read_header(d, TRUE);

    /* What the planes are: grey, or YCbCr with the chroma at (1, 1) and luma at 1 or 2
     * each way. Anything else (RGB or CMYK JPEGs, odd sampling) is libvips'. */
    jpeg_component_info *c = d->comp_info;
    int hmax = d->max_h_samp_factor, vmax = d->max_v_samp_factor;
    bool grey = d->jpeg_color_space == JCS_GRAYSCALE && d->num_components == 1;
    bool ycc = d->jpeg_color_space == JCS_YCbCr && d->num_components == 3 &&
               c[0].h_samp_factor <= 2 && c[0].v_samp_factor <= 2 && c[1].h_samp_factor == 1 &&
               c[1].v_samp_factor == 1 && c[2].h_samp_factor == 1 && c[2].v_samp_factor == 1;
    if ((!grey && !ycc) || d->progressive_mode || d->data_precision != 8 ||
        d->image_width / pl->jpeg_shrink != pl->load_w ||
        d->image_height / pl->jpeg_shrink != pl->load_h) {
        rc = IMGPROC__JPEGFAST_DECLINED;
        goto out;
    }
    d->scale_num = 1;
    d->scale_denom = pl->jpeg_shrink;
    d->raw_data_out = TRUE;
    d->out_color_space = grey ? JCS_GRAYSCALE : JCS_YCbCr;
    jpeg_start_decompress(d);

    /* The planes, in libvips' geometry: the luma factors of vips_thumbnail on the loaded
     * size (vips_resize reduces by at most the whole length); a chroma plane goes from the
     * resolution libjpeg gives it (at a DCT scale under 1 it scales the chroma up in the
     * IDCT, often to the luma's) to half the output's. */
    const uint32_t W = pl->load_w, H = pl->load_h, rw = pl->resized_w, rh = pl->resized_h;
    const uint32_t ow = pl->out_w, oh = pl->out_h;
    const double sh = 1.0 / fmax(1.0 / pl->load_hshrink, 1.0 / W);
    const double sv = 1.0 / fmax(1.0 / pl->load_vshrink, 1.0 / H);
    /* Outputs under 4 px on a side keep libvips: there one chroma sample of an odd length
     * is most of the image, and ours spans two output samples where libjpeg's
     * downsampling of libvips' RGB result spans one (37x1 to 1x1: 23.6 dB from the
     * lossless result against 52.9). */
    if (!grey && (ow < 4 || oh < 4)) {
        rc = IMGPROC__JPEGFAST_DECLINED;
        goto out;
    }
    /* a centre crop, as vips_smartcrop's: (resized - out) / 2, rounded down */
    const uint32_t left = (rw - ow) / 2, top = (rh - oh) / 2;
    /* the output's chroma: half the luma each way (4:2:0), or all of it (4:4:4) */
    const uint32_t fo = full_chroma ? 1 : 2;
    const int mh = hmax * d->min_DCT_scaled_size, mv = vmax * d->min_DCT_scaled_size;
    f->nplanes = grey ? 1 : 3;
    size_t inrows_n = 0, inbuf_n = 0;
    for (int ci = 0; ci < f->nplanes; ci++) {
        int sz = c[ci].DCT_scaled_size;
        int hs = mh / (c[ci].h_samp_factor * sz), vs = mv / (c[ci].v_samp_factor * sz);
        if (hs < 1 || vs < 1 || hs * c[ci].h_samp_factor * sz != mh ||
            vs * c[ci].v_samp_factor * sz != mv) {
            rc = IMGPROC__JPEGFAST_DECLINED;
            goto out;
        }
        uint32_t iw = (W + (uint32_t)hs - 1) / (uint32_t)hs,
                 ih = (H + (uint32_t)vs - 1) / (uint32_t)vs;
        /* A chroma plane is resized to the output chroma's grid, 1/fo of the luma's, each
         * output sample centred on the fo luma samples it covers. Its own grid (centred on
         * prw samples from iw) is shifted onto that: by a quarter sample when fo is 2 and
         * the resized luma is odd (prw covers one luma sample more), back when the stored
         * chroma is (iw covers one more), and by the crop's start, half a sample when fo
         * is 2 and the luma's is odd. The last chroma sample of an odd output length at
         * 4:2:0 covers its last luma sample only (libjpeg's downsampling replicates the
         * edge): a quarter sample back. */
        const uint32_t cf = ci ? fo : 1;
        uint32_t prw = (rw + cf - 1) / cf, prh = (rh + cf - 1) / cf;
        uint32_t pow_ = (ow + cf - 1) / cf, poh = (oh + cf - 1) / cf;
        double wh = sh * cf / hs, wv = sv * cf / vs;
        double x0 = left, y0 = top;
        if (ci) {
            x0 = (double)left / cf + (prw - (double)rw / cf) / 2 - (iw - (double)W / hs) / (2 * wh);
            y0 = (double)top / cf + (prh - (double)rh / cf) / 2 - (ih - (double)H / vs) / (2 * wv);
        }
        /* a chroma plane under the output's chroma resolution would be scaled up, and a
         * 4:4:4 output from subsampled chroma is libvips' (it upsamples the chroma to the
         * luma's with libjpeg's triangle filter first: 2.3 dB apart at quality 90). At a
         * DCT scale under 1 libjpeg often gives the chroma at the luma's resolution
         * itself (hs = vs = 1): then the planes are what libvips decodes. */
        if (iw < prw || ih < prh || (ci && cf == 1 && (hs > 1 || vs > 1))) {
            rc = IMGPROC__JPEGFAST_DECLINED;
            goto out;
        }
        double ldx = cf == 2 && (ow & 1) ? -0.25 : 0, ldy = cf == 2 && (oh & 1) ? -0.25 : 0;
        int prc = plane_init(&f->pl[ci], iw, ih, prw, prh, wh, wv, x0, y0, pow_, poh, ldx, ldy,
                             grey || fo == 1 || ci ? 8 : 16, cf == 2);
        if (prc) {
            rc = prc == -2
                     ? IMGPROC__JPEGFAST_DECLINED
                     : imgproc__fail(err, IMGPROC_E_NOMEM, "jpeg: plane %d of %ux%u", ci, ow, oh);
            goto out;
        }
        size_t rows = (size_t)(c[ci].v_samp_factor * c[ci].DCT_scaled_size);
        inrows_n += rows;
        inbuf_n += rows * c[ci].width_in_blocks * (size_t)c[ci].DCT_scaled_size;
    }
    f->inrows = malloc(inrows_n * sizeof(*f->inrows));
    f->inbuf = malloc(inbuf_n);
    if (!f->inrows || !f->inbuf) {
        rc = imgproc__fail(err, IMGPROC_E_NOMEM, "jpeg: input rows");
        goto out;
    }
    {
        JSAMPROW *r = f->inrows;
        JSAMPLE *b = f->inbuf;
        for (int ci = 0; ci < f->nplanes; ci++) {
            size_t rows = (size_t)(c[ci].v_samp_factor * c[ci].DCT_scaled_size);
            size_t w = c[ci].width_in_blocks * (size_t)c[ci].DCT_scaled_size;
            f->in[ci] = r;
            for (size_t k = 0; k < rows; k++, b += w)
                *r++ = b;
        }
    }

    jpeg_create_compress(e);
    f->e_made = true;
    f->dst.pub.init_destination = dst_init;
    f->dst.pub.empty_output_buffer = dst_empty;
    f->dst.pub.term_destination = dst_term;
    f->dst.write = write;
    f->dst.warg = warg;
    f->dst.em = &f->em;
    e->dest = &f->dst.pub;
    e->image_width = ow;
    e->image_height = oh;
    e->input_components = f->nplanes;
    e->in_color_space = grey ? JCS_GRAYSCALE : JCS_YCbCr;
    jpeg_set_defaults(e);
    jpeg_set_quality(e, quality, TRUE);
    e->raw_data_in = TRUE;
    if (!grey) { /* 4:2:0 or 4:4:4, as libvips' jpegsave */
        e->comp_info[0].h_samp_factor = e->comp_info[0].v_samp_factor = (int)fo;
        for (int ci = 1; ci < 3; ci++)
            e->comp_info[ci].h_samp_factor = e->comp_info[ci].v_samp_factor = 1;
    }
    jpeg_start_compress(e, TRUE);

    const uint32_t groups = (oh + f->pl[0].group - 1) / f->pl[0].group;
    for (uint32_t g = 0; g < groups; g++) {
        if (fill_group(f, g)) { /* a plane ran OUT_CAP rows ahead: never seen */
            rc = IMGPROC__JPEGFAST_DECLINED;
            goto out;
        }
        JSAMPARRAY planes[3];
        for (int ci = 0; ci < f->nplanes; ci++) {
            plane_t *p = &f->pl[ci];
            for (uint32_t k = 0; k < p->group; k++) {
                uint32_t y = g * p->group + k;
                f->outrows[ci][k] = out_row(p, y < p->oh ? y : p->oh - 1);
            }
            planes[ci] = f->outrows[ci];
        }
        jpeg_write_raw_data(e, planes, f->pl[0].group);
    }
    /* The rest of the file is decoded too, so that damage anywhere in it is libvips'
     * to report, as it would be without this path. */
    while (d->output_scanline < d->output_height)
        jpeg_read_raw_data(d, f->in, (JDIMENSION)(vmax * d->min_DCT_scaled_size));
    jpeg_finish_decompress(d);
    jpeg_finish_compress(e);
    rc = 0;

out:
    if (f->e_made)
        jpeg_destroy_compress(e);
    if (f->d_made)
        jpeg_destroy_decompress(d);
    for (int i = 0; i < 3; i++)
        plane_free(&f->pl[i]);
    free(f->inrows);
    free(f->inbuf);
    free(f->src.buf);
    free(f->dst.buf);
    if (rc == 0 && f->em.why == NOMEM)
        rc = imgproc__fail(err, IMGPROC_E_NOMEM, "jpeg: buffers");
    free(f);
    return rc;
}
