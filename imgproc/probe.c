/* Header probe: format, dimensions, bands, depth, interlace, frames, orientation and ICC
 * presence of JPEG / PNG / WebP / GIF / TIFF / HEIF (HEIC, AVIF), parsed from the few header bytes
 * without decoding a pixel and without any allocation that depends on the declared image size.
 * Mirrors the checks libjpeg, libpng and libwebp (as used by libvips 8.14) make at header time, so
 * that whatever the probe accepts the decoder will at least start on. */
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
    /* JPEG XL: a bare codestream or the ISOBMFF container (we write it, never read it) */
    if ((len >= 2 && p[0] == 0xFF && p[1] == 0x0A) ||
        (len >= 12 && memcmp(p, "\0\0\0\x0cJXL \r\n\x87\n", 12) == 0))
        return IMGPROC_FMT_JXL;
    if (len >= 6 && (memcmp(p, "GIF87a", 6) == 0 || memcmp(p, "GIF89a", 6) == 0))
        return IMGPROC_FMT_GIF;
    if (len >= 4 && (memcmp(p, "II*\0", 4) == 0 || memcmp(p, "MM\0*", 4) == 0))
        return IMGPROC_FMT_TIFF;
    if (len >= 12 && memcmp(p + 4, "ftyp", 4) == 0) {
        /* the major brand, or a compatible one: AVIF before HEIC (mif1 is either) */
        uint32_t box = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
        size_t end = box < len ? box : len;
        bool heic = false;
        for (size_t o = 8; o + 4 <= end; o += o == 8 ? 8 : 4) {
            if (memcmp(p + o, "avif", 4) == 0 || memcmp(p + o, "avis", 4) == 0)
                return IMGPROC_FMT_AVIF;
            if (memcmp(p + o, "heic", 4) == 0 || memcmp(p + o, "heix", 4) == 0 ||
                memcmp(p + o, "heim", 4) == 0 || memcmp(p + o, "heis", 4) == 0 ||
                memcmp(p + o, "hevc", 4) == 0 || memcmp(p + o, "hevx", 4) == 0 ||
                memcmp(p + o, "mif1", 4) == 0 || memcmp(p + o, "msf1", 4) == 0)
                heic = true;
        }
        if (heic)
            return IMGPROC_FMT_HEIC;
    }
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
    uint64_t extra_cap; /* 0 = IMGPROC__PROBE_MAX_EXTRA and MAX_PREADS; else bytes only (GIF) */
    int status;         /* RD_* of the first failed get */
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
    uint64_t cap = r->extra_cap ? r->extra_cap : IMGPROC__PROBE_MAX_EXTRA;
    if ((r->preads >= IMGPROC__PROBE_MAX_PREADS && !r->extra_cap) || r->extra + want > cap) {
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

/* ---- GIF: logical screen and every frame descriptor (libnsgif) ---- */

#define GIF_MAX_FRAMES 100000u

/* Skips a chain of data sub-blocks starting at @p off; 0 with @p off past its terminator. */
static int gif_skip_blocks(rd_t *r, uint64_t *off, imgproc_err_t *err)
{
    const uint8_t *p;
    for (;;) {
        if (!(p = rd_get(r, *off, 1)))
            return rd_fail(r, err, "gif");
        *off += 1 + (uint64_t)p[0];
        if (p[0] == 0)
            return 0;
    }
}

static int probe_gif(rd_t *r, imgproc_probe_t *out, imgproc_err_t *err)
{
    const uint8_t *p;
    if (!(p = rd_get(r, 0, 13)))
        return rd_fail(r, err, "gif");
    if (memcmp(p, "GIF87a", 6) != 0 && memcmp(p, "GIF89a", 6) != 0)
        return imgproc__fail(err, IMGPROC_E_CORRUPT, "gif: bad signature");
    uint32_t sw = le16(p + 6), sh = le16(p + 8), flags = p[10];
    uint64_t off = 13;
    if (flags & 0x80)
        off += 3u << ((flags & 7) + 1);
    bool transparent = false;
    uint32_t w = sw, h = sh;
    out->pages = 0;
    for (;;) {
        if (!(p = rd_get(r, off, 1)))
            return rd_fail(r, err, "gif"); /* no trailer: truncated */
        if (p[0] == 0x3B)                  /* trailer */
            break;
        if (p[0] == 0x21) { /* extension: label, then sub-blocks */
            if (!(p = rd_get(r, off, 3)))
                return rd_fail(r, err, "gif");
            if (p[1] == 0xF9 && p[2] >= 4) { /* graphic control: transparency flag */
                if (!(p = rd_get(r, off + 3, 1)))
                    return rd_fail(r, err, "gif");
                if (p[0] & 1)
                    transparent = true;
            }
            off += 2;
            int rc = gif_skip_blocks(r, &off, err);
            if (rc)
                return rc;
        } else if (p[0] == 0x2C) { /* image descriptor */
            if (!(p = rd_get(r, off, 10)))
                return rd_fail(r, err, "gif");
            uint32_t fx = le16(p + 1), fy = le16(p + 3), fw = le16(p + 5), fh = le16(p + 7);
            uint32_t fflags = p[9];
            if (fw == 0 || fh == 0)
                return imgproc__fail(err, IMGPROC_E_CORRUPT, "gif: empty frame");
            /* libnsgif grows the screen to hold every frame */
            if (fx + fw > w)
                w = fx + fw;
            if (fy + fh > h)
                h = fy + fh;
            /* a frame not covering the screen shows what is under it: transparent */
            if (fx > 0 || fy > 0 || fw < sw || fh < sh)
                transparent = transparent || out->pages == 0;
            off += 10;
            if (fflags & 0x80)
                off += 3u << ((fflags & 7) + 1);
            off += 1; /* LZW minimum code size */
            int rc = gif_skip_blocks(r, &off, err);
            if (rc)
                return rc;
            if (++out->pages > GIF_MAX_FRAMES)
                return imgproc__fail(err, IMGPROC_E_TOO_LARGE, "gif: over %u frames",
                                     GIF_MAX_FRAMES);
        } else {
            break; /* garbage after the last frame: libnsgif stops there too */
        }
    }
    if (out->pages == 0)
        return imgproc__fail(err, IMGPROC_E_CORRUPT, "gif: no frame");
    if (w == 0 || h == 0)
        return imgproc__fail(err, IMGPROC_E_CORRUPT, "gif: empty screen");
    out->width = w;
    out->height = h;
    out->bit_depth = 8;
    out->has_alpha = transparent;
    out->bands = transparent ? 4 : 3;
    return 0;
}

/* ---- TIFF: IFD0 (the first page) and the length of the IFD chain ---- */

#define TIFF_MAX_ENTRIES 4096u
#define TIFF_MAX_PAGES 10000u
#define TIFF_MAX_DIM 1000000u

typedef struct {
    bool le;
} tiff_t;

static uint32_t t16(const tiff_t *t, const uint8_t *p)
{
    return t->le ? le16(p) : be16(p);
}
static uint32_t t32(const tiff_t *t, const uint8_t *p)
{
    return t->le ? le32(p) : be32(p);
}

/* First value of a SHORT or LONG entry (values of other types read as 0). */
static uint32_t tiff_value(const tiff_t *t, rd_t *r, const uint8_t *e, bool *ok)
{
    uint32_t type = t16(t, e + 2), count = t32(t, e + 4);
    if (count == 0)
        return 0;
    size_t sz = type == 3 ? 2 : type == 4 ? 4 : 0;
    if (sz == 0)
        return 0;
    const uint8_t *v = e + 8;
    if ((uint64_t)sz * count > 4) {
        if (!(v = rd_get(r, t32(t, e + 8), sz))) {
            *ok = false;
            return 0;
        }
    }
    return sz == 2 ? t16(t, v) : t32(t, v);
}

static int probe_tiff(rd_t *r, imgproc_probe_t *out, imgproc_err_t *err)
{
    const uint8_t *p;
    if (!(p = rd_get(r, 0, 8)))
        return rd_fail(r, err, "tiff");
    tiff_t t = {.le = p[0] == 'I'};
    if (t16(&t, p + 2) != 42)
        return imgproc__fail(err, IMGPROC_E_UNSUPPORTED, "tiff: BigTIFF is not supported");
    uint64_t ifd = t32(&t, p + 4);
    if (!(p = rd_get(r, ifd, 2)))
        return rd_fail(r, err, "tiff");
    uint32_t n = t16(&t, p);
    if (n == 0 || n > TIFF_MAX_ENTRIES)
        return imgproc__fail(err, IMGPROC_E_CORRUPT, "tiff: %u IFD entries", n);
    uint32_t w = 0, h = 0, bits = 1, spp = 1, comp = 1, photo = 2, rps = UINT32_MAX, tw = 0, th = 0,
             extra = 0, planar = 1, fmt = 1, orient = 1;
    bool ok = true;
    for (uint32_t i = 0; i < n && ok; i++) {
        uint8_t e[12];
        if (!(p = rd_get(r, ifd + 2 + (uint64_t)i * 12, 12)))
            return rd_fail(r, err, "tiff");
        memcpy(e, p, 12);
        uint32_t tag = t16(&t, e);
        switch (tag) {
        case 256:
            w = tiff_value(&t, r, e, &ok);
            break;
        case 257:
            h = tiff_value(&t, r, e, &ok);
            break;
        case 258:
            bits = tiff_value(&t, r, e, &ok);
            break;
        case 259:
            comp = tiff_value(&t, r, e, &ok);
            break;
        case 262:
            photo = tiff_value(&t, r, e, &ok);
            break;
        case 274:
            orient = tiff_value(&t, r, e, &ok);
            break;
        case 277:
            spp = tiff_value(&t, r, e, &ok);
            break;
        case 278:
            rps = tiff_value(&t, r, e, &ok);
            break;
        case 284:
            planar = tiff_value(&t, r, e, &ok);
            break;
        case 322:
            tw = tiff_value(&t, r, e, &ok);
            break;
        case 323:
            th = tiff_value(&t, r, e, &ok);
            break;
        case 338:
            extra = t32(&t, e + 4);
            break;
        case 339:
            fmt = tiff_value(&t, r, e, &ok);
            break;
        case 34675: /* ICC profile */
            out->has_icc = true;
            out->_meta_bytes += t32(&t, e + 4);
            break;
        case 700:   /* XMP */
        case 33723: /* IPTC */
            out->_meta_bytes += t32(&t, e + 4);
            break;
        default:
            break;
        }
    }
    if (!ok)
        return rd_fail(r, err, "tiff");
    if (w == 0 || h == 0)
        return imgproc__fail(err, IMGPROC_E_CORRUPT, "tiff: no image size");
    if (w > TIFF_MAX_DIM || h > TIFF_MAX_DIM)
        return imgproc__fail(err, IMGPROC_E_TOO_LARGE, "tiff: %ux%u", w, h);
    if (fmt != 1 || planar != 1 ||
        !(bits == 1 || bits == 2 || bits == 4 || bits == 8 || bits == 16) || spp < 1 || spp > 4)
        return imgproc__fail(err, IMGPROC_E_UNSUPPORTED,
                             "tiff: %u samples of %u bits (format %u, planar %u) not supported",
                             spp, bits, fmt, planar);
    /* greyscale, RGB, palette, CMYK and YCbCr (JPEG-compressed) */
    if (!(photo <= 3 || photo == 5 || photo == 6))
        return imgproc__fail(err, IMGPROC_E_UNSUPPORTED, "tiff: photometric %u not supported",
                             photo);
    /* the other pages: their number only */
    uint32_t pages = 1;
    uint64_t next_at = ifd + 2 + (uint64_t)n * 12;
    for (;;) {
        if (!(p = rd_get(r, next_at, 4)))
            break; /* a missing next pointer ends the chain */
        uint64_t next = t32(&t, p);
        if (next == 0 || next <= ifd || pages >= TIFF_MAX_PAGES)
            break; /* forward only: no loops */
        if (!(p = rd_get(r, next, 2)))
            break;
        uint32_t k = t16(&t, p);
        if (k == 0 || k > TIFF_MAX_ENTRIES)
            break;
        ifd = next;
        next_at = ifd + 2 + (uint64_t)k * 12;
        pages++;
    }
    r->status = RD_OK;
    uint32_t colour = photo == 3 ? 3 : photo <= 1 ? 1 : photo == 5 ? 4 : 3;
    bool alpha = extra > 0 || (photo <= 1 && spp == 2) || (photo == 2 && spp == 4);
    out->width = w;
    out->height = h;
    out->bit_depth = photo == 3 ? 8 : bits < 8 ? 8 : bits;
    out->has_alpha = alpha && photo != 5;
    out->bands = colour + (out->has_alpha ? 1 : 0);
    out->orientation = orient >= 1 && orient <= 8 ? orient : 1;
    out->pages = pages;
    /* libtiff decodes a whole strip (or a tile; libvips reads a row of tiles) at a time */
    uint64_t row = ((uint64_t)w * spp * bits + 7) / 8;
    uint64_t lines = tw && th ? th : rps < h ? rps : h;
    out->_chunk_bytes = tw && th ? ((uint64_t)w + tw) * spp * bits / 8 * lines : row * lines;
    out->lossless = comp != 7;
    return 0;
}

/* ---- HEIF (HEIC, AVIF): ISOBMFF boxes of the primary item ---- */

#define HEIF_MAX_BOXES 4096u
#define HEIF_MAX_PROPS 1024u
/* Debian 12's libheif 1.15 decodes no side over 16384 ("Security limit exceeded: Image size
 * 16385x2 exceeds the maximum image size 16384x16384"): such a file is refused at upload */
#define HEIF_MAX_DIM 16384u

typedef struct {
    uint64_t at, size; /* payload offset and length */
    uint8_t type[4];
} box_t;

/* Reads the box header at @p off within [.., end); 0, or -1 on a malformed header. */
static int box_at(rd_t *r, uint64_t off, uint64_t end, box_t *b)
{
    const uint8_t *p;
    if (end - off < 8 || !(p = rd_get(r, off, 8)))
        return -1;
    uint64_t size = be32(p), hdr = 8;
    memcpy(b->type, p + 4, 4);
    if (size == 1) {
        if (end - off < 16 || !(p = rd_get(r, off + 8, 8)))
            return -1;
        size = (uint64_t)be32(p) << 32 | be32(p + 4);
        hdr = 16;
    } else if (size == 0) {
        size = end - off;
    }
    if (size < hdr || size > end - off)
        return -1;
    b->at = off + hdr;
    b->size = size - hdr;
    return 0;
}

/* Finds the first child box of @p type in [at, at + len). */
static int box_find(rd_t *r, uint64_t at, uint64_t len, const char *type, box_t *out)
{
    uint64_t off = at, end = at + len;
    for (unsigned n = 0; off < end && n < HEIF_MAX_BOXES; n++) {
        if (box_at(r, off, end, out) != 0)
            return -1;
        if (memcmp(out->type, type, 4) == 0)
            return 0;
        off = out->at + out->size;
    }
    return -1;
}

static int probe_heif(rd_t *r, imgproc_probe_t *out, imgproc_err_t *err)
{
    box_t ftyp, meta, b;
    const uint8_t *p;
    if (box_at(r, 0, r->size, &ftyp) != 0 || memcmp(ftyp.type, "ftyp", 4) != 0)
        return imgproc__fail(err, IMGPROC_E_CORRUPT, "heif: no ftyp box");
    /* the meta box, at top level */
    uint64_t off = ftyp.at + ftyp.size;
    if (box_find(r, off, r->size - off, "meta", &meta) != 0 || meta.size < 4)
        return imgproc__fail(err, IMGPROC_E_CORRUPT, "heif: no meta box");
    uint64_t m_at = meta.at + 4, m_len = meta.size - 4; /* full box */
    /* primary item */
    if (box_find(r, m_at, m_len, "pitm", &b) != 0 || b.size < 6 || !(p = rd_get(r, b.at, 1)))
        return imgproc__fail(err, IMGPROC_E_CORRUPT, "heif: no primary item");
    size_t pitm_len = p[0] == 0 ? 6 : 8; /* full box header, then a 16- or 32-bit item id */
    if (b.size < pitm_len || !(p = rd_get(r, b.at, pitm_len)))
        return imgproc__fail(err, IMGPROC_E_CORRUPT, "heif: no primary item");
    uint32_t primary = pitm_len == 6 ? be16(p + 4) : be32(p + 4);
    /* properties and their associations */
    box_t iprp, ipco, ipma;
    if (box_find(r, m_at, m_len, "iprp", &iprp) != 0 ||
        box_find(r, iprp.at, iprp.size, "ipco", &ipco) != 0 ||
        box_find(r, iprp.at, iprp.size, "ipma", &ipma) != 0 || ipma.size < 8)
        return imgproc__fail(err, IMGPROC_E_CORRUPT, "heif: no item properties");
    /* offsets of the ipco children, 1-based */
    uint64_t props[HEIF_MAX_PROPS + 1];
    uint32_t nprops = 0;
    for (uint64_t o = ipco.at; o < ipco.at + ipco.size && nprops < HEIF_MAX_PROPS;) {
        if (box_at(r, o, ipco.at + ipco.size, &b) != 0)
            return imgproc__fail(err, IMGPROC_E_CORRUPT, "heif: bad property box");
        props[++nprops] = o;
        o = b.at + b.size;
    }
    if (!(p = rd_get(r, ipma.at, 8)))
        return rd_fail(r, err, "heif");
    uint32_t version = p[0], flags = p[3], entries = be32(p + 4);
    uint64_t o = ipma.at + 8, end = ipma.at + ipma.size;
    uint32_t w = 0, h = 0, bits = 8, channels = 3, rot = 0;
    bool found = false;
    for (uint32_t i = 0; i < entries && i < HEIF_MAX_BOXES && !found; i++) {
        size_t idl = version < 1 ? 2 : 4;
        if (end - o < idl + 1 || !(p = rd_get(r, o, idl + 1)))
            return imgproc__fail(err, IMGPROC_E_CORRUPT, "heif: bad ipma");
        uint32_t item = idl == 2 ? be16(p) : be32(p), na = p[idl];
        o += idl + 1;
        size_t al = flags & 1 ? 2 : 1;
        if (end - o < (uint64_t)na * al)
            return imgproc__fail(err, IMGPROC_E_CORRUPT, "heif: bad ipma");
        for (uint32_t k = 0; k < na; k++, o += al) {
            if (item != primary)
                continue;
            found = true;
            if (!(p = rd_get(r, o, al)))
                return rd_fail(r, err, "heif");
            uint32_t idx = al == 2 ? be16(p) & 0x7FFF : p[0] & 0x7F;
            if (idx == 0 || idx > nprops || box_at(r, props[idx], ipco.at + ipco.size, &b) != 0)
                continue;
            if (memcmp(b.type, "ispe", 4) == 0 && b.size >= 12 && (p = rd_get(r, b.at, 12))) {
                w = be32(p + 4);
                h = be32(p + 8);
            } else if (memcmp(b.type, "pixi", 4) == 0 && b.size >= 6 && (p = rd_get(r, b.at, 6))) {
                channels = p[4];
                bits = p[5];
            } else if (memcmp(b.type, "irot", 4) == 0 && b.size >= 1 && (p = rd_get(r, b.at, 1))) {
                rot = p[0] & 3;
            } else if (memcmp(b.type, "colr", 4) == 0 && b.size >= 4 && (p = rd_get(r, b.at, 4)) &&
                       (memcmp(p, "prof", 4) == 0 || memcmp(p, "rICC", 4) == 0)) {
                out->has_icc = true;
                out->_meta_bytes += b.size;
            }
        }
    }
    if (!found || w == 0 || h == 0)
        return imgproc__fail(err, IMGPROC_E_CORRUPT, "heif: no size for the primary image");
    if (w > HEIF_MAX_DIM || h > HEIF_MAX_DIM)
        return imgproc__fail(err, IMGPROC_E_TOO_LARGE,
                             "heif: %ux%u: libheif decodes no side over %u", w, h, HEIF_MAX_DIM);
    /* an alpha plane: an auxC property naming alpha anywhere in ipco (an auxiliary image) */
    for (uint32_t i = 1; i <= nprops; i++)
        if (box_at(r, props[i], ipco.at + ipco.size, &b) == 0 && memcmp(b.type, "auxC", 4) == 0 &&
            b.size >= 10) {
            size_t l = b.size > 64 ? 64 : (size_t)b.size;
            if ((p = rd_get(r, b.at, l)) && memmem(p, l, "alpha", 5))
                out->has_alpha = true;
        }
    /* libheif applies the rotation: the image libvips sees is turned */
    out->width = rot & 1 ? h : w;
    out->height = rot & 1 ? w : h;
    out->bit_depth = bits > 8 ? 16 : 8;
    out->bands = (channels == 1 ? 1 : 3) + (out->has_alpha ? 1 : 0);
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
    case IMGPROC_FMT_GIF:
        r->extra_cap = UINT64_MAX; /* frames are counted through the whole file */
        rc = probe_gif(r, out, err);
        break;
    case IMGPROC_FMT_TIFF:
        rc = probe_tiff(r, out, err);
        break;
    case IMGPROC_FMT_AVIF:
    case IMGPROC_FMT_HEIC:
        rc = probe_heif(r, out, err);
        break;
    default:
        return imgproc__fail(err, IMGPROC_E_UNSUPPORTED,
                             "not a JPEG, PNG, WebP, GIF, TIFF, HEIC or AVIF image");
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
