/* pngfast: the first decode of a PNG thumbnail without full-size pixels (issue 14, item 3).
 *
 * For a non-interlaced PNG of up to 8 bits per sample that is shrunk at least 2x on both
 * axes (imgproc__plan() sets png_shrink_h/_v), libvips 8.14 would decode every row with
 * libpng (zlib inflate) into its line cache, box-average rows and columns in groups
 * (vips_shrinkv/h: the integer part of vips_reducev/h with gap 2) and Lanczos3-reduce the
 * rest. Here:
 *  - rows are decoded one at a time: 8-bit grey, grey+alpha, RGB and RGBA without tRNS or
 *    ICC by our own IDAT reader (ISA-L's igzip inflate, ~1.7x zlib's, CRCs checked, rows
 *    unfiltered here); palette, 1/2/4-bit, tRNS colour keys and ICC files by libspng;
 *  - each row is added to column sums at once (premultiplied first when there is alpha,
 *    as libvips premultiplies before it shrinks), folded into libvips' column groups once
 *    per group of rows, with its edge replication and rounding;
 *  - the Lanczos3 residual runs on that small float image with vips_reducev/h's own masks
 *    and sample grid (offsets from the full-size lengths, so the partial last group lands
 *    where libvips puts it), then unpremultiply and round;
 *  - libvips does the rest of vips_thumbnail on the resized image (ICC to sRGB, centre
 *    crop). The result matches vips_thumbnail: tests/check_pngfast.c, PSNR >= 45 dB for
 *    every kind and mode on detailed content.
 * 16-bit and interlaced PNGs, and shrinks under 2x on an axis, stay on libvips.
 *
 * Memory (imgproc_estimate() counts each term for this path): the decoder's state (ISA-L
 * 85 KiB, or libspng's context and zlib window), a 64 KiB read buffer (our inflate reads
 * IDAT from it in place), three rows of W x bands, the column sums (W x bands x 4 B), the
 * accumulator (pre_w x bands x 8 B), the shrunk image (pre_w x pre_h x bands floats), the
 * vertical pass (pre_w x resized_h x bands floats) and the resized image (uchar).
 * Ancillary chunks are bounded by spng_set_chunk_limits().
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include <isa-l/crc.h>
#include <isa-l/igzip_lib.h>
#include <spng.h>
#include <vips/vips.h>

#include "imgproc/lanczos.h"
#include "imgproc/pngfast.h"

#define RD_BUF (64 * 1024)
#define CHUNK_LIMIT (64u * 1024 * 1024) /* one ancillary chunk (libpng's default is 8 MB) */
#define CACHE_LIMIT (64u * 1024 * 1024) /* all ancillary chunks kept */

typedef struct {
    int fd;
    uint64_t pos, size;
    uint8_t *buf;
    size_t have, off;
    bool (*cancelled)(void *);
    void *arg;
    bool io_error, stopped;
} reader_t;

/* Refills the empty buffer of @p r from the file: 0, or a libspng I/O error. */
static int rd_refill(reader_t *r)
{
    if (r->cancelled && r->cancelled(r->arg)) {
        r->stopped = true;
        return SPNG_IO_ERROR;
    }
    if (r->pos >= r->size)
        return SPNG_IO_EOF;
    size_t want = r->size - r->pos < RD_BUF ? (size_t)(r->size - r->pos) : RD_BUF;
    ssize_t k;
    do
        k = pread(r->fd, r->buf, want, (off_t)r->pos);
    while (k < 0 && errno == EINTR);
    if (k < 0) {
        r->io_error = true;
        return SPNG_IO_ERROR;
    }
    if (k == 0)
        return SPNG_IO_EOF;
    r->pos += (uint64_t)k;
    r->have = (size_t)k;
    r->off = 0;
    return 0;
}

/* libspng asks for exact lengths, often a few bytes (chunk headers): serve them from a
 * buffer refilled with pread. */
static int on_read(spng_ctx *ctx, void *user, void *dst, size_t len)
{
    reader_t *r = user;
    uint8_t *d = dst;
    while (len > 0) {
        int e;
        if (r->off == r->have && (e = rd_refill(r)))
            return e;
        size_t n = r->have - r->off < len ? r->have - r->off : len;
        memcpy(d, r->buf + r->off, n);
        r->off += n;
        d += n;
        len -= n;
    }
    return 0;
}

static void free_pixels(VipsImage *img, void *pixels)
{
    g_free(pixels);
}

/* One decoded row into the column sums: @p n = W x bands samples. Opaque rows are added
 * 16 samples at a time with SSE2 where there is SSE2 (every x86-64); with alpha, colour is
 * summed premultiplied (c x a) as libvips premultiplies before it shrinks. A sum takes at
 * most 255 (opaque) or 255 x 255 per row: fold() is called before 32 bits overflow. */
static void add_row(uint32_t *col, const uint8_t *row, size_t n, uint32_t nb, bool alpha)
{
    size_t i = 0;
    if (!alpha) {
#ifdef __SSE2__
        const __m128i z = _mm_setzero_si128();
        for (; i + 16 <= n; i += 16) {
            __m128i b = _mm_loadu_si128((const __m128i *)(row + i));
            __m128i lo = _mm_unpacklo_epi8(b, z), hi = _mm_unpackhi_epi8(b, z);
            __m128i *c = (__m128i *)(col + i);
            _mm_storeu_si128(c, _mm_add_epi32(_mm_loadu_si128(c), _mm_unpacklo_epi16(lo, z)));
            _mm_storeu_si128(c + 1,
                             _mm_add_epi32(_mm_loadu_si128(c + 1), _mm_unpackhi_epi16(lo, z)));
            _mm_storeu_si128(c + 2,
                             _mm_add_epi32(_mm_loadu_si128(c + 2), _mm_unpacklo_epi16(hi, z)));
            _mm_storeu_si128(c + 3,
                             _mm_add_epi32(_mm_loadu_si128(c + 3), _mm_unpackhi_epi16(hi, z)));
        }
#endif
        for (; i < n; i++)
            col[i] += row[i];
        return;
    }
    for (; i < n; i += nb) {
        uint32_t av = row[i + nb - 1];
        for (uint32_t b = 0; b + 1 < nb; b++)
            col[i + b] += row[i + b] * av;
        col[i + nb - 1] += av;
    }
}

/* Rows a column sum can take before it could overflow 32 bits. */
static uint64_t rows_per_fold(bool alpha)
{
    return UINT32_MAX / (alpha ? 255u * 255u : 255u);
}

/* The column sums into the accumulator in column groups of @p sh samples, the last group
 * completed with copies of the last column (vips_shrinkh with ceil embeds with
 * VIPS_EXTEND_COPY); the sums start again from 0. Once per group of rows: the per-row
 * work is add_row's alone (it was 18% of a first PNG decode summed per row here). */
static void fold(uint64_t *acc, uint32_t *col, uint32_t w, uint32_t pw, uint32_t sh, uint32_t nb)
{
    for (uint32_t ox = 0; ox < pw; ox++) {
        uint64_t *a = acc + (size_t)ox * nb;
        uint32_t x0 = ox * sh;
        for (uint32_t k = 0; k < sh; k++) {
            const uint32_t *p = col + (size_t)(x0 + k < w ? x0 + k : w - 1) * nb;
            for (uint32_t b = 0; b < nb; b++)
                a[b] += p[b];
        }
    }
    memset(col, 0, (size_t)w * nb * sizeof(*col));
}

/* The accumulated groups into one row of the shrunk image, as vips_shrink leaves it: uchar
 * averages rounded ((sum + n/2) / n); with alpha, libvips premultiplies first (c x a / 255,
 * float) and averages without rounding, so that is kept as float here too. */
static void emit_row(uint64_t *acc, float *out, uint32_t pw, uint32_t nb, bool alpha, uint64_t n)
{
    for (uint32_t ox = 0; ox < pw; ox++) {
        uint64_t *a = acc + (size_t)ox * nb;
        float *q = out + (size_t)ox * nb;
        if (alpha) {
            for (uint32_t b = 0; b + 1 < nb; b++)
                q[b] = (float)((double)a[b] / (255.0 * (double)n));
            q[nb - 1] = (float)((double)a[nb - 1] / (double)n);
        } else {
            for (uint32_t b = 0; b < nb; b++)
                q[b] = (float)((a[b] + n / 2) / n);
        }
        memset(a, 0, nb * sizeof(*a));
    }
}

static inline int clampi(int v, int hi)
{
    return v < 0 ? 0 : v > hi ? hi : v;
}

/* The 8-bit kinds whose stored samples are the output samples (grey, grey+alpha, RGB, RGBA,
 * no palette, no tRNS colour key, no ICC profile to read) skip libspng: IDAT is inflated
 * with ISA-L (Debian libisal, igzip: ~1.7x zlib's inflate, which is most of libspng's
 * time) and unfiltered here. CRCs of IHDR and IDAT are checked, as libpng does. */
typedef struct {
    reader_t *rd;
    struct inflate_state *st;
    uint32_t chunk_left; /* bytes of the current IDAT not read yet */
    uint32_t crc;
    uint8_t *cur, *prev; /* filter byte + row, this one and the one before */
    size_t rowbytes;
    uint32_t bpp;
    const char *why; /* set on corrupt data */
} idat_t;

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int rd_exact(reader_t *r, void *dst, size_t n)
{
    return on_read(NULL, r, dst, n);
}

static int rd_skip(reader_t *r, uint64_t n)
{
    uint64_t inbuf = r->have - r->off;
    if (n <= inbuf) {
        r->off += (size_t)n;
        return 0;
    }
    r->pos += n - inbuf;
    r->have = r->off = 0;
    return r->pos > r->size ? SPNG_IO_EOF : 0;
}

/* Reads chunk headers up to the next IDAT (skipping the others); checks the CRC of the
 * chunk just finished when @p finish. */
static int idat_next(idat_t *d, bool finish, bool first)
{
    uint8_t h[8];
    if (finish) {
        if (rd_exact(d->rd, h, 4))
            return -1;
        if (be32(h) != d->crc) {
            d->why = "IDAT CRC mismatch";
            return -1;
        }
    }
    for (;;) {
        if (rd_exact(d->rd, h, 8))
            return -1;
        uint32_t len = be32(h);
        if (len > 0x7fffffffu) {
            d->why = "bad chunk length";
            return -1;
        }
        if (memcmp(h + 4, "IDAT", 4) == 0) {
            d->chunk_left = len;
            d->crc = crc32_gzip_refl(0, h + 4, 4); /* PNG's CRC, zlib's crc32 */
            return 0;
        }
        if (!first || memcmp(h + 4, "IEND", 4) == 0) {
            d->why = "pixel data ends early";
            return -1;
        }
        if (rd_skip(d->rd, (uint64_t)len + 4)) /* data + CRC */
            return -1;
    }
}

/* Points the inflate input at the next bytes of the current IDAT in the read buffer
 * (refilled when empty; none when the chunk is used up), adding them to the chunk's CRC.
 * Inflate reads them in place: the buffer is refilled only once they are all consumed. */
static int idat_fill(idat_t *d)
{
    reader_t *r = d->rd;
    if (d->chunk_left > 0 && r->off == r->have && rd_refill(r))
        return -1;
    size_t inbuf = r->have - r->off;
    uint32_t n = d->chunk_left < inbuf ? d->chunk_left : (uint32_t)inbuf;
    d->crc = crc32_gzip_refl(d->crc, r->buf + r->off, n);
    d->st->next_in = r->buf + r->off;
    d->st->avail_in = n;
    r->off += n;
    d->chunk_left -= n;
    return 0;
}

static inline uint8_t paeth(int a, int b, int c)
{
    int pa = abs(b - c), pb = abs(a - c), pc = abs(a + b - 2 * c);
    return (uint8_t)(pa <= pb && pa <= pc ? a : pb <= pc ? b : c);
}

#ifdef __SSE2__
/* One pixel of @p bpp bytes as 16-bit lanes, and back (the low byte of each lane); the
 * bytes go through a register, not through memcpy to the stack, whose narrow stores a
 * 4-byte load then waits for. */
static inline __m128i px_load(const uint8_t *p, uint32_t bpp)
{
    uint32_t v;
    uint16_t lo;
    if (bpp == 4) {
        memcpy(&v, p, 4);
    } else {
        memcpy(&lo, p, 2);
        v = bpp == 3 ? lo | (uint32_t)p[2] << 16 : lo;
    }
    return _mm_unpacklo_epi8(_mm_cvtsi32_si128((int)v), _mm_setzero_si128());
}

static inline void px_store(uint8_t *p, __m128i v, uint32_t bpp)
{
    uint32_t w = (uint32_t)_mm_cvtsi128_si32(_mm_packus_epi16(v, v));
    if (bpp == 4) {
        memcpy(p, &w, 4);
        return;
    }
    uint16_t lo = (uint16_t)w;
    memcpy(p, &lo, 2);
    if (bpp == 3)
        p[2] = (uint8_t)(w >> 16);
}

static inline __m128i abs16(__m128i v)
{
    return _mm_max_epi16(v, _mm_sub_epi16(_mm_setzero_si128(), v));
}

/* Sub (1), Average (3) and Paeth (4) need the pixel to the left decoded first, so they run
 * a pixel at a time; this does every band of a pixel at once, without branches. Paeth was
 * 70% of a first decode of an adaptively filtered 12 MP photo byte by byte. @p bpp (2-4)
 * and @p type are constants at each call. */
static inline __attribute__((always_inline)) void
unfilter_px(uint8_t *x, const uint8_t *u, size_t n, const uint32_t bpp, const int type)
{
    const __m128i lowbyte = _mm_set1_epi16(0xff);
    __m128i a = _mm_setzero_si128(), c = _mm_setzero_si128(); /* left, up-left */
    for (size_t i = 0; i < n; i += bpp) {
        __m128i b = px_load(u + i, bpp), pred;
        if (type == 1) {
            pred = a;
        } else if (type == 3) {
            pred = _mm_srli_epi16(_mm_add_epi16(a, b), 1);
        } else { /* the nearest of a, b, c to a + b - c; ties to a, then b */
            __m128i bc = _mm_sub_epi16(b, c), ac = _mm_sub_epi16(a, c);
            __m128i pa = abs16(bc), pb = abs16(ac), pc = abs16(_mm_add_epi16(bc, ac));
            __m128i lo = _mm_min_epi16(pc, _mm_min_epi16(pa, pb));
            __m128i is_b = _mm_cmpeq_epi16(pb, lo), is_a = _mm_cmpeq_epi16(pa, lo);
            pred = _mm_or_si128(_mm_and_si128(is_b, b), _mm_andnot_si128(is_b, c));
            pred = _mm_or_si128(_mm_and_si128(is_a, a), _mm_andnot_si128(is_a, pred));
        }
        a = _mm_and_si128(_mm_add_epi16(px_load(x + i, bpp), pred), lowbyte);
        px_store(x + i, a, bpp);
        c = b;
    }
}

/* unfilter_px with constant arguments; false when it does not take this row. */
static bool unfilter_simd(uint8_t *x, const uint8_t *u, size_t n, uint32_t bpp, int type)
{
    if (type != 1 && type != 3 && type != 4)
        return false;
#define UNFILTER_PX(B)                                                                             \
    (type == 1   ? unfilter_px(x, u, n, B, 1)                                                      \
     : type == 3 ? unfilter_px(x, u, n, B, 3)                                                      \
                 : unfilter_px(x, u, n, B, 4))
    switch (bpp) {
    case 2:
        UNFILTER_PX(2);
        return true;
    case 3:
        UNFILTER_PX(3);
        return true;
    case 4:
        UNFILTER_PX(4);
        return true;
    default:
        return false;
    }
#undef UNFILTER_PX
}
#else
static bool unfilter_simd(uint8_t *x, const uint8_t *u, size_t n, uint32_t bpp, int type)
{
    return false;
}
#endif

static int unfilter(uint8_t *cur, const uint8_t *prev, size_t n, uint32_t bpp)
{
    uint8_t *x = cur + 1;
    const uint8_t *u = prev + 1;
    typedef uint8_t v16u8 __attribute__((vector_size(16)));
    size_t i;
    if (unfilter_simd(x, u, n, bpp, cur[0]))
        return 0;
    switch (cur[0]) {
    case 0:
        break;
    case 1:
        for (i = bpp; i < n; i++)
            x[i] = (uint8_t)(x[i] + x[i - bpp]);
        break;
    case 2: /* GCC's -O2 leaves the plain loop scalar */
        for (i = 0; i + 16 <= n; i += 16) {
            v16u8 xv, uv;
            memcpy(&xv, x + i, sizeof(xv));
            memcpy(&uv, u + i, sizeof(uv));
            xv += uv;
            memcpy(x + i, &xv, sizeof(xv));
        }
        for (; i < n; i++)
            x[i] = (uint8_t)(x[i] + u[i]);
        break;
    case 3:
        for (i = 0; i < bpp; i++)
            x[i] = (uint8_t)(x[i] + (u[i] >> 1));
        for (; i < n; i++)
            x[i] = (uint8_t)(x[i] + ((x[i - bpp] + u[i]) >> 1));
        break;
    case 4:
        for (i = 0; i < bpp; i++)
            x[i] = (uint8_t)(x[i] + u[i]);
        for (; i < n; i++)
            x[i] = (uint8_t)(x[i] + paeth(x[i - bpp], u[i], u[i - bpp]));
        break;
    default:
        return -1;
    }
    return 0;
}

/* The next unfiltered row (pointer into d->prev after the swap), or NULL. */
static const uint8_t *idat_row(idat_t *d)
{
    struct inflate_state *st = d->st;
    st->next_out = d->cur;
    st->avail_out = (uint32_t)(d->rowbytes + 1);
    for (;;) {
        int r = isal_inflate(st);
        if (r < 0) {
            d->why = "bad deflate data";
            return NULL;
        }
        if (st->avail_out == 0)
            break;
        if (st->block_state == ISAL_BLOCK_FINISH) {
            d->why = "pixel data ends early";
            return NULL;
        }
        if (st->avail_in == 0) {
            if (d->chunk_left == 0 && idat_next(d, true, false))
                return NULL;
            if (idat_fill(d))
                return NULL;
        }
    }
    if (unfilter(d->cur, d->prev, d->rowbytes, d->bpp)) {
        d->why = "bad filter type";
        return NULL;
    }
    uint8_t *t = d->prev;
    d->prev = d->cur;
    d->cur = t;
    return d->prev + 1;
}

/* After the last row: the rest of the current IDAT goes through inflate (its end and the
 * zlib checksum are checked) and its CRC is compared, as libpng reads to the end. */
static int idat_finish(idat_t *d)
{
    struct inflate_state *st = d->st;
    uint8_t scratch[256];
    for (;;) {
        if (st->avail_in == 0 && d->chunk_left > 0 && idat_fill(d))
            return -1;
        if (st->block_state == ISAL_BLOCK_FINISH || st->avail_in == 0)
            break;
        st->next_out = scratch;
        st->avail_out = sizeof(scratch);
        if (isal_inflate(st) < 0) {
            d->why = "bad deflate data or checksum";
            return -1;
        }
    }
    uint8_t c[4];
    if (rd_exact(d->rd, c, 4))
        return -1;
    if (be32(c) != d->crc) {
        d->why = "IDAT CRC mismatch";
        return -1;
    }
    return 0;
}

/* Stored channels of an 8-bit colour type whose samples are the output's, else 0. */
static uint32_t direct_channels(const imgproc_probe_t *probe, const struct spng_ihdr *h)
{
    uint32_t ch = h->color_type == SPNG_COLOR_TYPE_GRAYSCALE         ? 1
                  : h->color_type == SPNG_COLOR_TYPE_GRAYSCALE_ALPHA ? 2
                  : h->color_type == SPNG_COLOR_TYPE_TRUECOLOR       ? 3
                  : h->color_type == SPNG_COLOR_TYPE_TRUECOLOR_ALPHA ? 4
                                                                     : 0;
    return h->bit_depth == 8 && ch == probe->bands && !probe->has_icc ? ch : 0;
}

/* libspng's output format for the bands the probe (and libvips) give this PNG. */
static int pick_fmt(const struct spng_ihdr *h, uint32_t bands, int *fmt, int *flags)
{
    bool trns_alpha = false;
    *flags = 0;
    switch (h->color_type) {
    case SPNG_COLOR_TYPE_GRAYSCALE:
        trns_alpha = bands == 2;
        *fmt = trns_alpha ? SPNG_FMT_GA8 : SPNG_FMT_G8;
        break;
    case SPNG_COLOR_TYPE_TRUECOLOR:
    case SPNG_COLOR_TYPE_INDEXED:
        trns_alpha = bands == 4;
        *fmt = trns_alpha ? SPNG_FMT_RGBA8 : SPNG_FMT_RGB8;
        break;
    case SPNG_COLOR_TYPE_GRAYSCALE_ALPHA:
        *fmt = SPNG_FMT_PNG; /* 8-bit G,A as stored */
        if (bands != 2)
            return -1;
        break;
    case SPNG_COLOR_TYPE_TRUECOLOR_ALPHA:
        *fmt = SPNG_FMT_RGBA8;
        if (bands != 4)
            return -1;
        break;
    default:
        return -1;
    }
    if (trns_alpha)
        *flags = SPNG_DECODE_TRNS;
    return 0;
}

/* Decodes and box-shrinks the whole image into a new g_malloc'd buffer. */
static int decode_shrunk(int fd, const imgproc_probe_t *probe, const imgproc__plan_t *pl,
                         bool (*cancelled)(void *), void *arg, float **pixels, void **icc,
                         size_t *icc_len, imgproc_err_t *err)
{
    const uint32_t W = probe->width, H = probe->height, nb = probe->bands;
    const uint32_t sh = pl->png_shrink_h, sv = pl->png_shrink_v;
    const uint32_t pw = pl->png_pre_w, ph = pl->png_pre_h;
    const bool alpha = probe->has_alpha;
    int rc = 0, fmt, flags;
    reader_t rd = {.fd = fd, .size = probe->file_bytes, .cancelled = cancelled, .arg = arg};
    uint8_t *row = NULL;
    float *out = NULL;
    uint64_t *acc = NULL;
    uint32_t *col = NULL;
    spng_ctx *ctx = spng_ctx_new(0);
    struct spng_ihdr ih;
    idat_t d = {0};

    *pixels = NULL;
    *icc = NULL;
    *icc_len = 0;
    rd.buf = malloc(RD_BUF);
    if (!ctx || !rd.buf) {
        rc = imgproc__fail(err, IMGPROC_E_NOMEM, "png: decoder state");
        goto out;
    }
    spng_set_chunk_limits(ctx, CHUNK_LIMIT, CACHE_LIMIT);
    spng_set_image_limits(ctx, IMGPROC__PNG_MAX_DIM, IMGPROC__PNG_MAX_DIM);
    int e = spng_set_png_stream(ctx, on_read, &rd);
    if (!e)
        e = spng_get_ihdr(ctx, &ih);
    if (e)
        goto spng_fail;
    /* The file must be the one the plan was made for (probed on this descriptor). */
    if (ih.width != W || ih.height != H || ih.bit_depth > 8 || ih.interlace_method != 0 ||
        pick_fmt(&ih, nb, &fmt, &flags) != 0) {
        rc = imgproc__fail(err, IMGPROC_E_CORRUPT, "png: header differs from the probe");
        goto out;
    }
    struct spng_iccp iccp;
    if (probe->has_icc && spng_get_iccp(ctx, &iccp) == 0 && iccp.profile_len > 0) {
        if (!(*icc = g_try_malloc(iccp.profile_len))) {
            rc = imgproc__fail(err, IMGPROC_E_NOMEM, "png: ICC profile");
            goto out;
        }
        memcpy(*icc, iccp.profile, iccp.profile_len);
        *icc_len = iccp.profile_len;
    }

    /* one decoded row only when libspng decodes: our own inflate has its row buffers */
    const bool direct = direct_channels(probe, &ih) != 0;
    if (!direct)
        row = malloc((size_t)W * nb);
    acc = calloc((size_t)pw * nb, sizeof(*acc));
    col = calloc((size_t)W * nb, sizeof(*col));
    out = malloc((size_t)pw * ph * nb * sizeof(*out));
    if ((!direct && !row) || !acc || !col || !out) {
        rc = imgproc__fail(err, IMGPROC_E_NOMEM, "png: %ux%u shrunk image", pw, ph);
        goto out;
    }
    d.rd = &rd;
    d.rowbytes = (size_t)W * nb;
    d.bpp = nb;
    if (direct) {
        /* IHDR (13 bytes, checked by libspng) ends at 33: our own reads go on from there,
         * in the bytes already buffered when libspng's reads took them in */
        uint64_t start = rd.pos - rd.have;
        if (start <= 33 && rd.pos >= 33) {
            rd.off = (size_t)(33 - start);
        } else {
            rd.pos = 33;
            rd.have = rd.off = 0;
        }
        d.st = malloc(sizeof(*d.st));
        d.cur = calloc(d.rowbytes + 1, 1);
        d.prev = calloc(d.rowbytes + 1, 1);
        if (!d.st || !d.cur || !d.prev) {
            rc = imgproc__fail(err, IMGPROC_E_NOMEM, "png: inflate state");
            goto out;
        }
        isal_inflate_init(d.st);
        d.st->crc_flag = ISAL_ZLIB;
        if (idat_next(&d, false, true))
            goto idat_fail;
    } else if ((e = spng_decode_image(ctx, NULL, 0, fmt, flags | SPNG_DECODE_PROGRESSIVE))) {
        goto spng_fail;
    }
    uint32_t in_group = 0, oy = 0;
    uint64_t in_col = 0; /* rows in the column sums */
    for (uint32_t y = 0; y < H; y++) {
        const uint8_t *px = row;
        if (d.st) {
            if (!(px = idat_row(&d)))
                goto idat_fail;
        } else if ((e = spng_decode_row(ctx, row, (size_t)W * nb)) && e != SPNG_EOI) {
            goto spng_fail;
        }
        /* the last group of rows is completed with copies of the last row */
        for (uint32_t copies = y == H - 1 ? sv - in_group : 1; copies > 0; copies--) {
            add_row(col, px, (size_t)W * nb, nb, alpha);
            if (++in_col == rows_per_fold(alpha)) {
                fold(acc, col, W, pw, sh, nb);
                in_col = 0;
            }
        }
        in_group = y == H - 1 ? sv : in_group + 1;
        if (in_group == sv) {
            fold(acc, col, W, pw, sh, nb);
            in_col = 0;
            emit_row(acc, out + (size_t)oy * pw * nb, pw, nb, alpha, (uint64_t)sh * sv);
            oy++;
            in_group = 0;
            if (cancelled && cancelled(arg)) {
                rd.stopped = true;
                goto spng_fail;
            }
        }
    }
    if (d.st && idat_finish(&d))
        goto idat_fail;
    if (oy != ph) {
        rc = imgproc__fail(err, IMGPROC_E_CORRUPT, "png: %u rows of %u", oy, ph);
        goto out;
    }
    *pixels = out;
    out = NULL;
    goto out;

idat_fail:
    if (!rd.stopped && !rd.io_error) {
        rc = imgproc__fail(err, IMGPROC_E_CORRUPT, "png: %s",
                           d.why ? d.why : "truncated pixel data");
        goto out;
    }
spng_fail:
    if (rd.stopped)
        rc = imgproc__fail(err, IMGPROC_E_TIMEOUT, "png: cancelled at the job deadline");
    else if (rd.io_error)
        rc = imgproc__fail(err, IMGPROC_E_IO, "png: read source: %s", strerror(errno));
    else if (e == SPNG_EMEM)
        rc = imgproc__fail(err, IMGPROC_E_NOMEM, "png: %s", spng_strerror(e));
    else
        rc = imgproc__fail(err, IMGPROC_E_CORRUPT, "png: %s", spng_strerror(e));
out:
    if (rc) {
        g_free(*icc);
        *icc = NULL;
    }
    free(d.st);
    free(d.cur);
    free(d.prev);
    free(out);
    free(acc);
    free(col);
    free(row);
    free(rd.buf);
    spng_ctx_free(ctx);
    return rc;
}

/* The residual Lanczos3 reduce of vips_reducev then vips_reduceh, with their sample grid
 * (offsets from the full-size lengths, so the partial last box group lands where libvips
 * puts it), on the float shrunk image; then unpremultiply and round to uchar. */
static uint8_t *reduce(const float *pre, const imgproc_probe_t *probe, const imgproc__plan_t *pl)
{
    typedef float v4f __attribute__((vector_size(16)));
    const uint32_t nb = probe->bands, pw = pl->png_pre_w, ph = pl->png_pre_h;
    const uint32_t ow = pl->resized_w, oh = pl->resized_h;
    const size_t rowlen = (size_t)pw * nb;
    imgproc__axis_t v = {0}, h = {0};
    float *mid = NULL;
    uint8_t *out = NULL;
    if (imgproc__axis_init(&v, pl->png_vshrink, pl->png_shrink_v, probe->height, oh) ||
        imgproc__axis_init(&h, pl->png_hshrink, pl->png_shrink_h, probe->width, ow))
        goto done;
    mid = malloc((size_t)oh * rowlen * sizeof(*mid));
    out = g_try_malloc((size_t)ow * oh * nb);
    if (!mid || !out)
        goto fail;
    for (uint32_t y = 0; y < oh; y++) {
        int first;
        const float *c = imgproc__axis_at(&v, y, &first);
        float *q = mid + (size_t)y * rowlen;
        memset(q, 0, rowlen * sizeof(*q));
        for (int i = 0; i < v.n; i++) {
            const float *p = pre + (size_t)clampi(first + i, (int)ph - 1) * rowlen;
            float w = c[i];
            size_t e = 0;
            for (; e + 4 <= rowlen; e += 4) { /* GCC's -O2 leaves this loop scalar */
                v4f a, b;
                memcpy(&a, q + e, sizeof(a));
                memcpy(&b, p + e, sizeof(b));
                a += w * b;
                memcpy(q + e, &a, sizeof(a));
            }
            for (; e < rowlen; e++)
                q[e] += w * p[e];
        }
    }
    const bool alpha = probe->has_alpha;
    for (uint32_t y = 0; y < oh; y++) {
        const float *p = mid + (size_t)y * rowlen;
        uint8_t *q = out + (size_t)y * ow * nb;
        for (uint32_t x = 0; x < ow; x++) {
            int first;
            const float *c = imgproc__axis_at(&h, x, &first);
            float acc[4] = {0, 0, 0, 0};
            for (int i = 0; i < h.n; i++) {
                const float *s = p + (size_t)clampi(first + i, (int)pw - 1) * nb;
                for (uint32_t b = 0; b < nb; b++)
                    acc[b] += c[i] * s[b];
            }
            if (alpha) { /* vips_unpremultiply: x 255 / alpha, 0 where alpha is 0 */
                float a = acc[nb - 1], f = a == 0 ? 0 : 255.0f / a;
                for (uint32_t b = 0; b + 1 < nb; b++)
                    acc[b] *= f;
            }
            for (uint32_t b = 0; b < nb; b++) {
                float r = rintf(acc[b]);
                q[(size_t)x * nb + b] = (uint8_t)(r < 0 ? 0 : r > 255 ? 255 : r);
            }
        }
    }
    goto done;
fail:
    g_free(out);
    out = NULL;
done:
    free(mid);
    imgproc__axis_free(&v);
    imgproc__axis_free(&h);
    return out;
}

int imgproc__pngfast(int fd, const imgproc_probe_t *probe, const imgproc__plan_t *pl,
                     const char *export_profile, bool (*cancelled)(void *), void *arg,
                     VipsImage **out, imgproc_err_t *err)
{
    float *pre;
    void *icc;
    size_t icc_len;
    *out = NULL;
    int rc = decode_shrunk(fd, probe, pl, cancelled, arg, &pre, &icc, &icc_len, err);
    if (rc)
        return rc;
    uint8_t *pixels = reduce(pre, probe, pl);
    free(pre);
    if (!pixels) {
        g_free(icc);
        return imgproc__fail(err, IMGPROC_E_NOMEM, "png: %ux%u resize", pl->resized_w,
                             pl->resized_h);
    }

    const uint32_t nb = probe->bands, ow = pl->resized_w, oh = pl->resized_h;
    VipsImage *ctx = vips_image_new();
    VipsImage **t = (VipsImage **)vips_object_local_array(VIPS_OBJECT(ctx), 4);
    VipsImage *in;
    t[0] = vips_image_new_from_memory(pixels, (size_t)ow * oh * nb, (int)ow, (int)oh, (int)nb,
                                      VIPS_FORMAT_UCHAR);
    if (!t[0]) {
        g_free(pixels);
        goto fail;
    }
    g_signal_connect(t[0], "postclose", G_CALLBACK(free_pixels), pixels);
    if (vips_copy(t[0], &t[1], "interpretation",
                  nb < 3 ? VIPS_INTERPRETATION_B_W : VIPS_INTERPRETATION_sRGB, NULL))
        goto fail;
    in = t[1];
    if (icc)
        vips_image_set_blob_copy(in, VIPS_META_ICC_NAME, icc, icc_len);
    g_free(icc);
    icc = NULL;
    /* vips_thumbnail's tail: the embedded profile to sRGB, then the centre crop. */
    if (export_profile && vips_image_get_typeof(in, VIPS_META_ICC_NAME)) {
        if (vips_icc_transform(in, &t[2], export_profile, "embedded", TRUE, NULL))
            goto fail;
        in = t[2];
    }
    if (pl->crop) {
        int cw = VIPS_MIN((int)pl->box_w, in->Xsize), ch = VIPS_MIN((int)pl->box_h, in->Ysize);
        VipsImage *mem = vips_image_copy_memory(in);
        if (!mem)
            goto fail;
        vips_object_local(ctx, mem);
        if (vips_smartcrop(mem, &t[3], cw, ch, "interesting",
                           pl->attention ? VIPS_INTERESTING_ATTENTION : VIPS_INTERESTING_CENTRE,
                           NULL))
            goto fail;
        in = t[3];
    }
    g_object_ref(in);
    *out = in;
    g_object_unref(ctx);
    return 0;

fail:
    g_free(icc);
    g_object_unref(ctx);
    return imgproc__fail_vips_decode(err, "png");
}
