/* imgproc_is_complete(): structural end-of-image checks on an upload, so a truncated
 * file is refused when it arrives rather than costing a partial decode on every request
 * for it. Walks markers/chunks only; never looks at pixels. */
#include <stdint.h>
#include <string.h>

#include "imgproc/imgproc.h"

static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint32_t le32(const unsigned char *p)
{
    return (uint32_t)p[3] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[1] << 8 | p[0];
}

/* Segments with a length up to SOS, then entropy-coded data in which a marker is an
 * 0xFF not followed by 0x00, 0xFF (fill) or RSTn; progressive files have several scans. */
static bool jpeg_complete(const unsigned char *p, size_t len)
{
    size_t i = 2; /* after SOI */
    while (i + 4 <= len) {
        if (p[i] != 0xFF)
            return false;
        unsigned char m = p[i + 1];
        if (m == 0xFF) { /* fill byte */
            i++;
            continue;
        }
        if (m == 0xD9)
            return true; /* EOI */
        if (m == 0x01 || (m >= 0xD0 && m <= 0xD7)) {
            i += 2;
            continue;
        }
        size_t seglen = (size_t)p[i + 2] << 8 | p[i + 3];
        if (seglen < 2 || i + 2 + seglen > len)
            return false;
        i += 2 + seglen;
        if (m != 0xDA)
            continue;
        /* entropy-coded data after SOS: find the next real marker */
        for (;;) {
            const unsigned char *ff = memchr(p + i, 0xFF, len - i);
            if (ff == NULL)
                return false;
            i = (size_t)(ff - p);
            if (i + 1 >= len)
                return false;
            unsigned char n = p[i + 1];
            if (n == 0x00 || (n >= 0xD0 && n <= 0xD7)) {
                i += 2;
                continue;
            }
            if (n == 0xFF) {
                i += 1;
                continue;
            }
            break; /* a marker: back to the segment walk */
        }
    }
    return i + 2 <= len && p[i] == 0xFF && p[i + 1] == 0xD9;
}

static bool png_complete(const unsigned char *p, size_t len)
{
    size_t i = 8; /* after the signature */
    while (i + 12 <= len) {
        uint32_t clen = be32(p + i);
        if (clen > 0x7fffffffu || i + 12 + (size_t)clen > len)
            return false;
        if (memcmp(p + i + 4, "IEND", 4) == 0)
            return true;
        i += 12 + (size_t)clen;
    }
    return false;
}

static bool webp_complete(const unsigned char *p, size_t len)
{
    if (len < 12)
        return false;
    uint64_t riff = (uint64_t)le32(p + 4) + 8;
    if (riff > len || riff < 20)
        return false;
    /* every chunk inside the RIFF must fit it */
    size_t i = 12;
    while (i + 8 <= riff) {
        uint64_t clen = le32(p + i + 4);
        uint64_t next = i + 8 + clen + (clen & 1);
        if (i + 8 + clen > riff)
            return false;
        i = (size_t)next;
    }
    return i >= riff;
}

/* GIF: the probe walks every block and needs the trailer. */
static bool gif_complete(const unsigned char *p, size_t len)
{
    imgproc_probe_t probe;
    return imgproc_probe_buf(p, len, &probe, NULL) == 0;
}

/* HEIF: the top-level boxes tile the file (the last one, usually mdat, ends within it). */
static bool heif_complete(const unsigned char *p, size_t len)
{
    size_t off = 0;
    unsigned n = 0;
    while (off < len) {
        if (len - off < 8 || ++n > 4096)
            return false;
        uint64_t size = be32(p + off);
        if (size == 1) {
            if (len - off < 16)
                return false;
            size = (uint64_t)be32(p + off + 8) << 32 | be32(p + off + 12);
        } else if (size == 0) {
            size = len - off;
        }
        if (size < 8 || size > len - off)
            return false;
        off += (size_t)size;
    }
    return true;
}

/* TIFF: every strip or tile of the first page (the one we decode) lies within the file. */
static bool tiff_complete(const unsigned char *p, size_t len)
{
    if (len < 8)
        return false;
    bool le = p[0] == 'I';
#define T16(q) (le ? (uint32_t)(q)[0] | (uint32_t)(q)[1] << 8 : (uint32_t)(q)[0] << 8 | (q)[1])
#define T32(q) (le ? le32(q) : be32(q))
    uint64_t ifd = T32(p + 4);
    if (ifd > len || len - ifd < 2)
        return false;
    uint32_t n = T16(p + ifd);
    if (len - ifd - 2 < (uint64_t)n * 12)
        return false;
    const unsigned char *offs = NULL, *cnts = NULL;
    uint32_t ocount = 0, ccount = 0, otype = 0, ctype = 0;
    for (uint32_t i = 0; i < n; i++) {
        const unsigned char *e = p + ifd + 2 + (size_t)i * 12;
        uint32_t tag = T16(e), type = T16(e + 2), cnt = T32(e + 4);
        size_t sz = type == 3 ? 2 : 4;
        if (tag != 273 && tag != 279 && tag != 324 && tag != 325)
            continue;
        const unsigned char *v = e + 8;
        if ((uint64_t)cnt * sz > 4) {
            uint64_t at = T32(e + 8);
            if (at > len || (uint64_t)cnt * sz > len - at)
                return false;
            v = p + at;
        }
        if (tag == 273 || tag == 324) {
            offs = v;
            otype = type;
            ocount = cnt;
        } else {
            cnts = v;
            ctype = type;
            ccount = cnt;
        }
    }
    if (!offs || !cnts || ocount == 0 || ocount != ccount)
        return false;
    for (uint32_t i = 0; i < ocount; i++) {
        uint64_t o = otype == 3 ? T16(offs + 2 * i) : T32(offs + 4 * i);
        uint64_t c = ctype == 3 ? T16(cnts + 2 * i) : T32(cnts + 4 * i);
        if (o > len || c > len - o)
            return false;
    }
#undef T16
#undef T32
    return true;
}

bool imgproc_is_complete(const void *buf, size_t len, imgproc_fmt_t fmt)
{
    const unsigned char *p = buf;
    if (p == NULL || imgproc_sniff(buf, len) != fmt)
        return false;
    switch (fmt) {
    case IMGPROC_FMT_JPEG:
        return jpeg_complete(p, len);
    case IMGPROC_FMT_PNG:
        return png_complete(p, len);
    case IMGPROC_FMT_WEBP:
        return webp_complete(p, len);
    case IMGPROC_FMT_GIF:
        return gif_complete(p, len);
    case IMGPROC_FMT_TIFF:
        return tiff_complete(p, len);
    case IMGPROC_FMT_HEIC:
    case IMGPROC_FMT_AVIF:
        return heif_complete(p, len);
    default:
        return false;
    }
}
