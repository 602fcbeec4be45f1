/* Header probe: format, dimensions, bands, depth, interlace, frames, orientation and ICC
 * presence of JPEG / PNG / WebP, parsed from the few header bytes without decoding a pixel
 * and without any allocation that depends on the declared image size. Mirrors the checks
 * libjpeg, libpng and libwebp (as used by libvips 8.14) make at header time, so that
 * whatever the probe accepts the decoder will at least start on. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "imgproc/imgproc_internal.h"

/* ---- helpers shared with the rest of the module (kept here so the fuzzer needs no libvips) ----
 */

imgproc_fmt_t imgproc_sniff(const void *buf, size_t len)
{
    const uint8_t *p = buf;
    if (p == NULL)
        return IMGPROC_FMT_UNKNOWN;
    if (len >= 3 && p[0] == 0xFF && p[1] == 0xD8 && p[2] == 0xFF)
        return IMGPROC_FMT_JPEG;
    if (len >= 8 && memcmp(p, "\x89PNG\r\n\x1a\n", 8) == 0)
        return IMGPROC_FMT_PNG;
    if (len >= 12 && memcmp(p, "RIFF", 4) == 0 && memcmp(p + 8, "WEBP", 4) == 0)
        return IMGPROC_FMT_WEBP;
    return IMGPROC_FMT_UNKNOWN;
}

int imgproc__fail(imgproc_err_t *err, int code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        err->code = code;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
        va_end(ap);
    }
    return -code;
}

/* ---- byte source: a whole buffer, or a file served from a prefix plus bounded preads ---- */

enum { RD_OK = 0, RD_SHORT, RD_BUDGET, RD_IO };

typedef struct {
    const uint8_t *buf; /* the whole data (buffer mode) or the prefix (file mode) */
    size_t buf_len;
    uint64_t size; /* total size of the data */
    int fd;        /* -1 in buffer mode */
    uint8_t *win;  /* pread window (file mode), allocated on first use */
    size_t win_len;
    uint64_t win_off;
    unsigned preads;
    uint64_t extra;
    int status; /* RD_* of the first failed get */
} rd_t;

#define RD_WIN_CAP (66 * 1024) /* the largest single request is a 64 KiB EXIF body */
#define RD_MIN_PREAD 4096

/* Pointer to @p n bytes at @p off, valid until the next call; NULL when they are not
 * there (r->status says why). */
static const uint8_t *rd_get(rd_t *r, uint64_t off, size_t n)
{
    if (off > r->size || n > r->size - off) {
        r->status = RD_SHORT;
        return NULL;
    }
    if (off + n <= r->buf_len)
        return r->buf + off;
    if (r->fd < 0 || n > RD_WIN_CAP) {
        r->status = RD_SHORT;
        return NULL;
    }
    if (r->win_len > 0 && off >= r->win_off && off + n <= r->win_off + r->win_len)
        return r->win + (off - r->win_off);
    size_t want = n < RD_MIN_PREAD ? RD_MIN_PREAD : n;
    if (want > r->size - off)
        want = (size_t)(r->size - off);
    if (want > RD_WIN_CAP)
        want = RD_WIN_CAP;
    if (r->preads >= IMGPROC__PROBE_MAX_PREADS || r->extra + want > IMGPROC__PROBE_MAX_EXTRA) {
        r->status = RD_BUDGET;
        return NULL;
    }
    if (!r->win && !(r->win = malloc(RD_WIN_CAP))) {
        r->status = RD_IO;
        errno = ENOMEM;
        return NULL;
    }
    r->preads++;
    r->extra += want;
    size_t got = 0;
    while (got < want) {
        ssize_t k = pread(r->fd, r->win + got, want - got, (off_t)(off + got));
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0) {
            r->win_len = 0;
            r->status = k < 0 ? RD_IO : RD_SHORT;
            return NULL;
        }
        got += (size_t)k;
    }
    r->win_off = off;
    r->win_len = got;
    return r->win;
}

static int rd_fail(const rd_t *r, imgproc_err_t *err, const char *fmt)
{
    switch (r->status) {
    case RD_BUDGET:
        return imgproc__fail(err, IMGPROC_E_CORRUPT, "%s: header not found within the read bounds",
                             fmt);
    case RD_IO:
        return imgproc__fail(err, IMGPROC_E_IO, "%s: read error: %s", fmt, strerror(errno));
    default:
        return imgproc__fail(err, IMGPROC_E_CORRUPT, "%s: truncated header", fmt);
    }
}

static inline uint32_t be16(const uint8_t *p)
{
    return (uint32_t)p[0] << 8 | p[1];
}
static inline uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static inline uint32_t le16(const uint8_t *p)
{
    return (uint32_t)p[1] << 8 | p[0];
}
static inline uint32_t le24(const uint8_t *p)
{
    return (uint32_t)p[2] << 16 | (uint32_t)p[1] << 8 | p[0];
}
static inline uint32_t le32(const uint8_t *p)
{
    return le24(p) | (uint32_t)p[3] << 24;
}

/* ---- EXIF: just the orientation tag of IFD0 ---- */

/* Orientation from a TIFF-structured EXIF block (with or without the "Exif\0\0" prefix).
 * Anything unreadable or out of 1..8 is 1, as vips_image_get_orientation() does. */
static uint32_t exif_orientation(const uint8_t *t, size_t n)
{
    if (n >= 6 && memcmp(t, "Exif\0\0", 6) == 0) {
        t += 6;
        n -= 6;
    }
    if (n < 8)
        return 1;
    bool le;
    if (t[0] == 'I' && t[1] == 'I')
        le = true;
    else if (t[0] == 'M' && t[1] == 'M')
        le = false;
    else
        return 1;
#define U16(p) (le ? le16(p) : be16(p))
#define U32(p) (le ? le32(p) : be32(p))
    if (U16(t + 2) != 42)
        return 1;
    uint32_t ifd = U32(t + 4);
    if (ifd > n || n - ifd < 2)
        return 1;
    uint32_t count = U16(t + ifd);
    uint32_t v = 1;
    for (uint32_t i = 0; i < count; i++) {
        size_t e = (size_t)ifd + 2 + (size_t)i * 12;
        if (e + 12 > n)
            break;
        if (U16(t + e) != 0x0112)
            continue;
        uint32_t type = U16(t + e + 2), cnt = U32(t + e + 4);
        if (cnt < 1)
            break;
        if (type == 3 || type == 8) /* SHORT, SSHORT */
            v = U16(t + e + 8);
        else if (type == 4 || type == 9) /* LONG, SLONG */
            v = U32(t + e + 8);
        break;
    }
#undef U16
#undef U32
    return v >= 1 && v <= 8 ? v : 1;
}

/* ---- JPEG ---- */

#define JPEG_MAX_MARKERS 65536
#define JPEG_MAX_GARBAGE (1024 * 1024)

static bool jpeg_is_sof(uint32_t m)
{
    return m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC;
}

static int probe_jpeg(rd_t *r, imgproc_probe_t *out, imgproc_err_t *err)
{
    uint64_t off = 2; /* after SOI */
    bool have_sof = false, have_exif = false;
    uint32_t ncomp = 0, hs[4] = {0}, vs[4] = {0};
    uint64_t garbage = 0;

    for (unsigned nm = 0;; nm++) {
        if (nm >= JPEG_MAX_MARKERS)
            return imgproc__fail(err, IMGPROC_E_CORRUPT, "jpeg: too many markers");
        /* libjpeg's next_marker(): skip (and warn about) garbage up to an 0xFF, then any
         * number of 0xFF fill bytes. */
        const uint8_t *p;
        for (;;) {
            if (!(p = rd_get(r, off, 1)))
                return rd_fail(r, err, "jpeg");
            if (p[0] == 0xFF)
                break;
            if (++garbage > JPEG_MAX_GARBAGE)
                return imgproc__fail(err, IMGPROC_E_CORRUPT, "jpeg: no marker found");
            off++;
        }
        uint32_t m;
        do {
            off++;
            if (!(p = rd_get(r, off, 1)))
                return rd_fail(r, err, "jpeg");
            m = p[0];
        } while (m == 0xFF);
        off++;
        if (m == 0x00) { /* stuffed zero: garbage, keep scanning */
            continue;
        }
        if (m == 0xD8)
            return imgproc__fail(err, IMGPROC_E_CORRUPT, "jpeg: duplicate SOI");
        if (m == 0xD9)
            return imgproc__fail(err, IMGPROC_E_CORRUPT, "jpeg: no image before EOI");
        if ((m >= 0xD0 && m <= 0xD7) || m == 0x01)
            continue; /* RSTn, TEM: no length */

        if (!(p = rd_get(r, off, 2)))
            return rd_fail(r, err, "jpeg");
        uint32_t len = be16(p);
        if (len < 2)
            return imgproc__fail(err, IMGPROC_E_CORRUPT, "jpeg: bad marker length");
        uint32_t body = len - 2;

        if (jpeg_is_sof(m)) {
            if (have_sof)
                return imgproc__fail(err, IMGPROC_E_CORRUPT, "jpeg: duplicate SOF");
            if (m != 0xC0 && m != 0xC1 && m != 0xC2 && m != 0xC9 && m != 0xCA)
                return imgproc__fail(err, IMGPROC_E_UNSUPPORTED,
                                     "jpeg: lossless/hierarchical JPEG (SOF%u) not supported",
                                     m - 0xC0);
            if (body < 6 || !(p = rd_get(r, off + 2, body)))
                return body < 6 ? imgproc__fail(err, IMGPROC_E_CORRUPT, "jpeg: short SOF")
                                : rd_fail(r, err, "jpeg");
            uint32_t prec = p[0], h = be16(p + 1), w = be16(p + 3);
            ncomp = p[5];
            if (body != 6 + 3 * ncomp)
                return imgproc__fail(err, IMGPROC_E_CORRUPT, "jpeg: bad SOF length");
            if (w == 0 || h == 0 || ncomp == 0)
                return imgproc__fail(err, IMGPROC_E_CORRUPT, "jpeg: empty image");
            if (prec != 8)
                return imgproc__fail(err, IMGPROC_E_UNSUPPORTED, "jpeg: %u-bit precision", prec);
            if (ncomp != 1 && ncomp != 3 && ncomp != 4)
                return imgproc__fail(err, IMGPROC_E_UNSUPPORTED, "jpeg: %u components", ncomp);
            if (w > IMGPROC__JPEG_MAX_DIM || h > IMGPROC__JPEG_MAX_DIM)
                return imgproc__fail(err, IMGPROC_E_TOO_LARGE, "jpeg: %ux%u over 65500", w, h);
            uint32_t hmax = 1, vmax = 1, mcu_blocks = 0;
            for (uint32_t c = 0; c < ncomp; c++) {
                hs[c] = p[6 + 3 * c + 1] >> 4;
                vs[c] = p[6 + 3 * c + 1] & 15;
                if (hs[c] < 1 || hs[c] > 4 || vs[c] < 1 || vs[c] > 4)
                    return imgproc__fail(err, IMGPROC_E_CORRUPT, "jpeg: bad sampling factors");
                hmax = hs[c] > hmax ? hs[c] : hmax;
                vmax = vs[c] > vmax ? vs[c] : vmax;
                mcu_blocks += hs[c] * vs[c];
            }
            /* libjpeg refuses fractional upsampling and MCUs over 10 blocks when it
             * starts decoding; refuse them here rather than admit a doomed job. */
            for (uint32_t c = 0; c < ncomp; c++)
                if (hmax % hs[c] || vmax % vs[c])
                    return imgproc__fail(err, IMGPROC_E_UNSUPPORTED,
                                         "jpeg: fractional chroma sampling");
            if (ncomp > 1 && mcu_blocks > 10)
                return imgproc__fail(err, IMGPROC_E_CORRUPT, "jpeg: MCU too large");
            /* The whole-image coefficient buffer libjpeg allocates for multi-scan images:
             * per component, blocks rounded up to whole MCUs, 64 16-bit coefficients each. */
            uint64_t coef = 0;
            for (uint32_t c = 0; c < ncomp; c++) {
                uint64_t bw = ((uint64_t)w * hs[c] + hmax * 8 - 1) / (hmax * 8);
                uint64_t bh = ((uint64_t)h * vs[c] + vmax * 8 - 1) / (vmax * 8);
                bw = (bw + hs[c] - 1) / hs[c] * hs[c];
                bh = (bh + vs[c] - 1) / vs[c] * vs[c];
                coef += bw * bh * 128;
            }
            out->width = w;
            out->height = h;
            out->bands = ncomp;
            out->bit_depth = 8;
            out->chroma_h = ncomp == 1 ? 1 : hmax;
            out->chroma_v = ncomp == 1 ? 1 : vmax;
            out->progressive = (m == 0xC2 || m == 0xCA);
            out->_jpeg_coef_bytes = coef;
            have_sof = true;
        } else if (m == 0xDA) {
            if (!have_sof)
                return imgproc__fail(err, IMGPROC_E_CORRUPT, "jpeg: SOS before SOF");
            if (body < 1 || !(p = rd_get(r, off + 2, 1)))
                return body < 1 ? imgproc__fail(err, IMGPROC_E_CORRUPT, "jpeg: short SOS")
                                : rd_fail(r, err, "jpeg");
            uint32_t ns = p[0];
            if (ns < 1 || ns > 4 || body != 4 + 2 * ns)
                return imgproc__fail(err, IMGPROC_E_CORRUPT, "jpeg: bad SOS");
            /* jpeg_has_multiple_scans(): progressive, or a first scan that does not carry
             * every component; either way libjpeg buffers the whole image. */
            if (ns < ncomp)
                out->progressive = true;
            return 0;
        }
        if (m == 0xE1 || m == 0xE2 || m == 0xED || m == 0xEE)
            out->_meta_bytes += len; /* jpeg2vips saves these markers */
        if (m == 0xE1 && !have_exif && body >= 6) {
            uint32_t n = body;
            if (!(p = rd_get(r, off + 2, n)))
                return rd_fail(r, err, "jpeg");
            if (memcmp(p, "Exif", 4) == 0) {
                have_exif = true;
                out->orientation = exif_orientation(p, n);
            }
        } else if (m == 0xE2 && !out->has_icc && body >= 12) {
            if (!(p = rd_get(r, off + 2, 12)))
                return rd_fail(r, err, "jpeg");
            if (memcmp(p, "ICC_PROFILE\0", 12) == 0)
                out->has_icc = true;
        }
        off += len;
    }
}

/* ---- PNG ---- */

#define PNG_MAX_CHUNKS 100000
#define PNG_READ_CAP (64 * 1024) /* ancillary chunk bodies we read to check CRC / parse */
#define PNG_TEXT_MAX 8000000ull  /* libpng's default chunk allocation limit */

/* CRC of a chunk whose type+data+crc are at @p p (type at p, data at p+4). */
static bool png_crc_ok(const uint8_t *p, uint32_t len)
{
    uLong c = crc32(0L, Z_NULL, 0);
    c = crc32(c, p, (uInt)len + 4);
    return (uint32_t)c == be32(p + 4 + len);
}

static int probe_png(rd_t *r, imgproc_probe_t *out, imgproc_err_t *err)
{
    const uint8_t *p;
    if (!(p = rd_get(r, 8, 8 + 13 + 4)))
        return rd_fail(r, err, "png");
    if (be32(p) != 13 || memcmp(p + 4, "IHDR", 4) != 0)
        return imgproc__fail(err, IMGPROC_E_CORRUPT, "png: IHDR missing");
    if (!png_crc_ok(p + 4, 13))
        return imgproc__fail(err, IMGPROC_E_CORRUPT, "png: IHDR CRC error");
    const uint8_t *ih = p + 8;
    uint32_t w = be32(ih), h = be32(ih + 4), depth = ih[8], ctype = ih[9];
    if (w == 0 || h == 0 || w > 0x7FFFFFFFu || h > 0x7FFFFFFFu)
        return imgproc__fail(err, IMGPROC_E_CORRUPT, "png: bad dimensions");
    if (ih[10] != 0 || ih[11] != 0 || ih[12] > 1)
        return imgproc__fail(err, IMGPROC_E_CORRUPT, "png: bad compression/filter/interlace");
    uint32_t bands;
    bool depth_ok, inherent_alpha = false;
    switch (ctype) {
    case 0:
        bands = 1;
        depth_ok = depth == 1 || depth == 2 || depth == 4 || depth == 8 || depth == 16;
        break;
    case 2:
        bands = 3;
        depth_ok = depth == 8 || depth == 16;
        break;
    case 3:
        bands = 3;
        depth_ok = depth == 1 || depth == 2 || depth == 4 || depth == 8;
        break;
    case 4:
        bands = 1;
        inherent_alpha = true;
        depth_ok = depth == 8 || depth == 16;
        break;
    case 6:
        bands = 3;
        inherent_alpha = true;
        depth_ok = depth == 8 || depth == 16;
        break;
    default:
        return imgproc__fail(err, IMGPROC_E_CORRUPT, "png: bad colour type %u", ctype);
    }
    if (!depth_ok)
        return imgproc__fail(err, IMGPROC_E_CORRUPT, "png: bad bit depth %u", depth);
    if (w > IMGPROC__PNG_MAX_DIM || h > IMGPROC__PNG_MAX_DIM)
        return imgproc__fail(err, IMGPROC_E_TOO_LARGE, "png: %ux%u over libpng limits", w, h);

    /* Walk the chunks before IDAT, as png_read_info() does. */
    uint64_t off = 8 + 8 + 13 + 4;
    uint32_t n_palette = 0;
    bool have_plte = false, have_trns = false, have_exif = false;
    for (unsigned nc = 0;; nc++) {
        if (nc >= PNG_MAX_CHUNKS)
            return imgproc__fail(err, IMGPROC_E_CORRUPT, "png: too many chunks");
        if (!(p = rd_get(r, off, 8)))
            return rd_fail(r, err, "png");
        uint32_t len = be32(p);
        char type[4];
        memcpy(type, p + 4, 4);
        if (len > 0x7FFFFFFFu)
            return imgproc__fail(err, IMGPROC_E_CORRUPT, "png: bad chunk length");
        if (memcmp(type, "IDAT", 4) == 0)
            break;
        if (memcmp(type, "IEND", 4) == 0)
            return imgproc__fail(err, IMGPROC_E_CORRUPT, "png: no image data");
        if (memcmp(type, "PLTE", 4) == 0) {
            if (have_plte || len % 3 != 0 || len == 0 || len > 256 * 3) {
                if (ctype == 3)
                    return imgproc__fail(err, IMGPROC_E_CORRUPT, "png: bad palette");
            } else {
                have_plte = true;
                n_palette = len / 3;
            }
        } else if (memcmp(type, "tRNS", 4) == 0 && !have_trns && !inherent_alpha && len <= 256) {
            /* libpng drops (with a warning) a tRNS of the wrong size, before PLTE, or
             * with a bad CRC; only a valid one gives libvips an alpha band. */
            bool size_ok = (ctype == 0 && len == 2) || (ctype == 2 && len == 6) ||
                           (ctype == 3 && have_plte && len >= 1 && len <= n_palette);
            if (size_ok) {
                if (!(p = rd_get(r, off + 4, len + 8)))
                    return rd_fail(r, err, "png");
                have_trns = png_crc_ok(p, len);
            }
        } else if (memcmp(type, "iCCP", 4) == 0) {
            out->has_icc = true;
            out->_meta_bytes += 4ull * len; /* inflated by libpng */
        } else if (memcmp(type, "zTXt", 4) == 0 || memcmp(type, "iTXt", 4) == 0) {
            /* deflate inflates up to 1032:1 and libpng accepts up to 8 MB a chunk; without
             * inflating here (no allocation in the probe), assume the worst for compressed
             * text (attack: a 6 KiB zTXt of 1 MiB text). iTXt: keyword, NUL, flag. */
            bool compressed = type[0] == 'z';
            if (!compressed) {
                uint32_t n = len < 82 ? len : 82;
                if (!(p = rd_get(r, off + 8, n)))
                    return rd_fail(r, err, "png");
                const uint8_t *nul = memchr(p, 0, n);
                compressed = nul && nul + 1 < p + n && nul[1] != 0;
            }
            uint64_t inflated = compressed ? 1032ull * len : len;
            out->_meta_bytes += inflated < PNG_TEXT_MAX ? inflated : PNG_TEXT_MAX;
        } else if (memcmp(type, "tEXt", 4) == 0) {
            out->_meta_bytes += len;
        } else if (memcmp(type, "eXIf", 4) == 0 && !have_exif && len >= 8) {
            uint32_t n = len > PNG_READ_CAP ? PNG_READ_CAP : len;
            if (!(p = rd_get(r, off + 8, n)))
                return rd_fail(r, err, "png");
            have_exif = true;
            out->orientation = exif_orientation(p, n);
            out->_meta_bytes += len;
        }
        off += (uint64_t)len + 12;
    }
    if (ctype == 3 && !have_plte)
        return imgproc__fail(err, IMGPROC_E_CORRUPT, "png: palette image without PLTE");

    out->width = w;
    out->height = h;
    out->has_alpha = inherent_alpha || have_trns;
    out->bands = bands + (out->has_alpha ? 1 : 0);
    out->bit_depth = depth;
    out->progressive = ih[12] == 1;
    return 0;
}

/* ---- WebP ---- */

#define WEBP_MAX_CHUNKS 100000

/* Dimensions (and alpha bit) of a "VP8 " or "VP8L" bitstream chunk payload at @p off. */
static int webp_bitstream(rd_t *r, const uint8_t *fourcc, uint64_t off, uint32_t len, uint32_t *w,
                          uint32_t *h, bool *alpha, imgproc_err_t *err)
{
    const uint8_t *p;
    if (memcmp(fourcc, "VP8 ", 4) == 0) {
        if (len < 10)
            return imgproc__fail(err, IMGPROC_E_CORRUPT, "webp: short VP8 chunk");
        if (!(p = rd_get(r, off, 10)))
            return rd_fail(r, err, "webp");
        uint32_t bits = le24(p);
        if ((bits & 1) != 0 || ((bits >> 1) & 7) > 3 || !((bits >> 4) & 1))
            return imgproc__fail(err, IMGPROC_E_CORRUPT, "webp: not a VP8 key frame");
        if (p[3] != 0x9d || p[4] != 0x01 || p[5] != 0x2a)
            return imgproc__fail(err, IMGPROC_E_CORRUPT, "webp: bad VP8 start code");
        if ((bits >> 5) >= len)
            return imgproc__fail(err, IMGPROC_E_CORRUPT, "webp: bad VP8 partition");
        *w = le16(p + 6) & 0x3FFF;
        *h = le16(p + 8) & 0x3FFF;
        *alpha = false;
    } else {
        if (len < 5)
            return imgproc__fail(err, IMGPROC_E_CORRUPT, "webp: short VP8L chunk");
        if (!(p = rd_get(r, off, 5)))
            return rd_fail(r, err, "webp");
        if (p[0] != 0x2F)
            return imgproc__fail(err, IMGPROC_E_CORRUPT, "webp: bad VP8L signature");
        uint32_t bits = le32(p + 1);
        if ((bits >> 29) != 0)
            return imgproc__fail(err, IMGPROC_E_CORRUPT, "webp: bad VP8L version");
        *w = (bits & 0x3FFF) + 1;
        *h = ((bits >> 14) & 0x3FFF) + 1;
        *alpha = (bits >> 28) & 1;
    }
    if (*w == 0 || *h == 0)
        return imgproc__fail(err, IMGPROC_E_CORRUPT, "webp: empty image");
    return 0;
}

static bool is_bitstream(const uint8_t *fourcc)
{
    return memcmp(fourcc, "VP8 ", 4) == 0 || memcmp(fourcc, "VP8L", 4) == 0;
}

/* An ANMF payload at @p off (@p len bytes): frame rectangle and its image sub-chunks. */
static int webp_anmf(rd_t *r, uint64_t off, uint32_t len, uint32_t cw, uint32_t ch, bool *alpha,
                     bool *partial, imgproc_err_t *err)
{
    const uint8_t *p;
    if (len < 16 + 8)
        return imgproc__fail(err, IMGPROC_E_CORRUPT, "webp: short ANMF");
    if (!(p = rd_get(r, off, 16)))
        return rd_fail(r, err, "webp");
    uint64_t fx = 2ull * le24(p), fy = 2ull * le24(p + 3);
    uint64_t fw = (uint64_t)le24(p + 6) + 1, fh = (uint64_t)le24(p + 9) + 1;
    if (fx + fw > cw || fy + fh > ch)
        return imgproc__fail(err, IMGPROC_E_CORRUPT, "webp: frame outside canvas");
    *partial = fx != 0 || fy != 0 || fw != cw || fh != ch;
    *alpha = false;
    uint64_t end = off + len, sub = off + 16;
    bool have_image = false;
    while (sub + 8 <= end && !have_image) {
        if (!(p = rd_get(r, sub, 8)))
            return rd_fail(r, err, "webp");
        uint8_t fourcc[4];
        memcpy(fourcc, p, 4);
        uint32_t sl = le32(p + 4);
        if (sl > end - sub - 8)
            return imgproc__fail(err, IMGPROC_E_CORRUPT, "webp: ANMF sub-chunk overflows");
        if (memcmp(fourcc, "ALPH", 4) == 0) {
            *alpha = true;
        } else if (is_bitstream(fourcc)) {
            uint32_t bw, bh;
            bool balpha;
            int rc = webp_bitstream(r, fourcc, sub + 8, sl, &bw, &bh, &balpha, err);
            if (rc)
                return rc;
            if (bw != fw || bh != fh)
                return imgproc__fail(err, IMGPROC_E_CORRUPT, "webp: frame size mismatch");
            *alpha = *alpha || balpha;
            have_image = true;
        }
        sub += 8 + (uint64_t)sl + (sl & 1);
    }
    if (!have_image)
        return imgproc__fail(err, IMGPROC_E_CORRUPT, "webp: ANMF without image");
    return 0;
}

static int probe_webp(rd_t *r, imgproc_probe_t *out, imgproc_err_t *err)
{
    const uint8_t *p;
    if (!(p = rd_get(r, 0, 12 + 8)))
        return rd_fail(r, err, "webp");
    uint64_t riff_end = (uint64_t)le32(p + 4) + 8;
    if (riff_end < 12 + 8)
        return imgproc__fail(err, IMGPROC_E_CORRUPT, "webp: bad RIFF size");
    if (riff_end > r->size)
        return imgproc__fail(err, IMGPROC_E_CORRUPT, "webp: truncated (RIFF says %llu bytes)",
                             (unsigned long long)riff_end);
    uint8_t fourcc[4];
    memcpy(fourcc, p + 12, 4);
    uint32_t len = le32(p + 16);
    if (len > riff_end - 20)
        return imgproc__fail(err, IMGPROC_E_CORRUPT, "webp: chunk overflows RIFF");

    out->bit_depth = 8;
    out->pages = 1;
    if (is_bitstream(fourcc)) {
        uint32_t w, h;
        bool alpha;
        int rc = webp_bitstream(r, fourcc, 20, len, &w, &h, &alpha, err);
        if (rc)
            return rc;
        out->width = w;
        out->height = h;
        out->has_alpha = alpha;
        out->lossless = fourcc[3] == 'L';
    } else if (memcmp(fourcc, "VP8X", 4) == 0) {
        if (len < 10 || !(p = rd_get(r, 20, 10)))
            return len < 10 ? imgproc__fail(err, IMGPROC_E_CORRUPT, "webp: short VP8X")
                            : rd_fail(r, err, "webp");
        uint32_t flags = p[0];
        uint32_t cw = le24(p + 4) + 1, ch = le24(p + 7) + 1;
        bool animated = flags & 0x02;
        if ((uint64_t)cw * ch >= (1ull << 32))
            return imgproc__fail(err, IMGPROC_E_CORRUPT, "webp: canvas too large");
        out->width = cw;
        out->height = ch;
        out->has_alpha = flags & 0x10;
        out->pages = 0;
        bool have_exif = false, have_image = false, have_alph = false;
        uint64_t off = 20 + (uint64_t)len + (len & 1);
        for (unsigned nc = 0; off + 8 <= riff_end; nc++) {
            if (nc >= WEBP_MAX_CHUNKS)
                return imgproc__fail(err, IMGPROC_E_CORRUPT, "webp: too many chunks");
            if (!(p = rd_get(r, off, 8)))
                return rd_fail(r, err, "webp");
            memcpy(fourcc, p, 4);
            uint32_t cl = le32(p + 4);
            if (cl > riff_end - off - 8)
                return imgproc__fail(err, IMGPROC_E_CORRUPT, "webp: chunk overflows RIFF");
            if (memcmp(fourcc, "ICCP", 4) == 0 || memcmp(fourcc, "EXIF", 4) == 0 ||
                memcmp(fourcc, "XMP ", 4) == 0)
                out->_meta_bytes += cl; /* webp2vips copies these chunks */
            if (memcmp(fourcc, "ICCP", 4) == 0) {
                out->has_icc = true;
            } else if (memcmp(fourcc, "EXIF", 4) == 0 && !have_exif) {
                uint32_t n = cl > 65536 ? 65536 : cl;
                if (!(p = rd_get(r, off + 8, n)))
                    return rd_fail(r, err, "webp");
                have_exif = true;
                out->orientation = exif_orientation(p, n);
            } else if (animated && memcmp(fourcc, "ANMF", 4) == 0) {
                bool falpha = false, partial = false;
                int rc = webp_anmf(r, off + 8, cl, cw, ch, &falpha, &partial, err);
                if (rc)
                    return rc;
                if (++out->pages > IMGPROC__WEBP_MAX_FRAMES)
                    return imgproc__fail(err, IMGPROC_E_TOO_LARGE, "webp: too many frames");
                /* webp2vips: alpha if any frame has it or leaves canvas uncovered, and
                 * no shrink-on-load if any frame leaves canvas uncovered. */
                if (falpha || partial)
                    out->has_alpha = true;
                if (partial)
                    out->_flags |= IMGPROC__F_WEBP_NOSCALE;
            } else if (!animated && memcmp(fourcc, "ALPH", 4) == 0) {
                have_alph = true;
            } else if (!animated && !have_image && is_bitstream(fourcc)) {
                uint32_t w, h;
                bool alpha;
                int rc = webp_bitstream(r, fourcc, off + 8, cl, &w, &h, &alpha, err);
                if (rc)
                    return rc;
                if (w != cw || h != ch)
                    return imgproc__fail(err, IMGPROC_E_CORRUPT, "webp: image/canvas mismatch");
                out->lossless = fourcc[3] == 'L';
                if (have_alph && !out->lossless)
                    out->_flags |= IMGPROC__F_WEBP_ALPH;
                have_image = true;
            }
            off += 8 + (uint64_t)cl + (cl & 1);
        }
        if (animated ? out->pages == 0 : !have_image)
            return imgproc__fail(err, IMGPROC_E_CORRUPT, "webp: no image data");
        if (!animated)
            out->pages = 1;
    } else {
        return imgproc__fail(err, IMGPROC_E_CORRUPT, "webp: unknown first chunk");
    }
    if (out->width > IMGPROC__WEBP_MAX_DIM || out->height > IMGPROC__WEBP_MAX_DIM)
        return imgproc__fail(err, IMGPROC_E_TOO_LARGE, "webp: %ux%u over 16383", out->width,
                             out->height);
    out->bands = out->has_alpha ? 4 : 3;
    return 0;
}

/* ---- entry points ---- */

static int probe_rd(rd_t *r, imgproc_probe_t *out, imgproc_err_t *err)
{
    memset(out, 0, sizeof(*out));
    out->orientation = 1;
    out->pages = 1;
    out->file_bytes = r->size;
    imgproc_fmt_t fmt = imgproc_sniff(r->buf, r->buf_len);
    int rc;
    switch (fmt) {
    case IMGPROC_FMT_JPEG:
        rc = probe_jpeg(r, out, err);
        break;
    case IMGPROC_FMT_PNG:
        rc = probe_png(r, out, err);
        break;
    case IMGPROC_FMT_WEBP:
        rc = probe_webp(r, out, err);
        break;
    default:
        return imgproc__fail(err, IMGPROC_E_UNSUPPORTED, "not a JPEG, PNG or WebP image");
    }
    if (rc == 0)
        out->fmt = fmt;
    return rc;
}

int imgproc_probe_buf(const void *buf, size_t len, imgproc_probe_t *out, imgproc_err_t *err)
{
    rd_t r = {.buf = buf, .buf_len = len, .size = len, .fd = -1};
    if (buf == NULL)
        r.buf_len = r.size = 0;
    return probe_rd(&r, out, err);
}

int imgproc__probe_fd(int fd, imgproc_probe_t *out, imgproc_err_t *err)
{
    int rc;
    uint8_t *mem = NULL;
    struct stat st;

    memset(out, 0, sizeof(*out));
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))
        return imgproc__fail(err, IMGPROC_E_IO, "not a regular file");
    size_t want = st.st_size < IMGPROC__PROBE_PREFIX ? (size_t)st.st_size : IMGPROC__PROBE_PREFIX;
    if (!(mem = malloc(want ? want : 1)))
        return imgproc__fail(err, IMGPROC_E_NOMEM, "probe buffer");
    size_t got = 0;
    while (got < want) {
        ssize_t k = pread(fd, mem + got, want - got, (off_t)got);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0) {
            rc = imgproc__fail(err, IMGPROC_E_IO, "read: %s", strerror(errno));
            goto out_free;
        }
        if (k == 0)
            break;
        got += (size_t)k;
    }
    rd_t r = {
        .buf = mem, .buf_len = got, .size = got < want ? got : (uint64_t)st.st_size, .fd = fd};
    rc = probe_rd(&r, out, err);
    free(r.win);
out_free:
    free(mem);
    return rc;
}

int imgproc_probe_file(const char *path, imgproc_probe_t *out, imgproc_err_t *err)
{
    int fd, rc;

    memset(out, 0, sizeof(*out));
    if (!path)
        return imgproc__fail(err, IMGPROC_E_INVALID, "no path");
    if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
        return imgproc__fail(err, IMGPROC_E_IO, "open %s: %s", path, strerror(errno));
    rc = imgproc__probe_fd(fd, out, err);
    close(fd);
    return rc;
}
