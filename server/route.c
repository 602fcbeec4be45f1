/* route — key validation and the derived-URL grammar. Everything here is a pure
 * function of its input so it can be unit-tested with hostile strings. */
#include "server/route.h"

#include <stdio.h>
#include <string.h>

static bool is_key_char(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '-';
}

bool route_segment_is_valid(const char *seg, size_t len)
{
    if (len == 0)
        return false;
    if ((len == 1 && seg[0] == '.') || (len == 2 && seg[0] == '.' && seg[1] == '.'))
        return false;
    for (size_t i = 0; i < len; i++)
        if (!is_key_char((unsigned char)seg[i]))
            return false;
    return true;
}

int route_parse_key(const char *path, size_t len, route_t *out)
{
    memset(out, 0, sizeof(*out));
    const char *q = memchr(path, '?', len);
    if (q != NULL)
        len = (size_t)(q - path);
    if (len < 2 || path[0] != '/')
        return -ROUTE_E_BADKEY;
    path++, len--;
    if (len > ROUTE_KEY_MAX)
        return -ROUTE_E_BADKEY;
    /* every segment valid: this also rejects "//", a trailing '/', NUL, '%' and '\' */
    size_t start = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i == len || path[i] == '/') {
            if (!route_segment_is_valid(path + start, i - start))
                return -ROUTE_E_BADKEY;
            start = i + 1;
        }
    }
    memcpy(out->key, path, len);
    out->key[len] = '\0';
    out->keylen = len;
    return 0;
}

/* Parses 1..6 decimal digits without a leading zero; 0 = not a number here. */
static int parse_dim(const char *s, size_t len, uint32_t *out)
{
    if (len == 0 || len > 6)
        return len == 0 ? 0 : -1;
    uint32_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return 0;
        v = v * 10 + (uint32_t)(s[i] - '0');
    }
    if (v == 0 || v > ROUTE_DIM_MAX || s[0] == '0')
        return -1;
    *out = v;
    return 1;
}

static bool all_digits(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (s[i] < '0' || s[i] > '9')
            return false;
    return len > 0;
}

int route_parse_derived(route_t *rt)
{
    rt->derived = false;
    const char *last = strrchr(rt->key, '/');
    const char *seg = last ? last + 1 : rt->key;
    const char *dot = strrchr(seg, '.');
    if (dot == NULL || dot == seg || dot[1] == '\0')
        return 0;
    imgproc_fmt_t fmt = imgproc_fmt_from_ext(dot + 1, strlen(dot + 1));
    if (fmt == IMGPROC_FMT_UNKNOWN)
        return 0;

    const char *name_end = dot; /* stem ends here unless a size suffix is found */
    imgproc_job_t job = {.op = IMGPROC_OP_CONVERT, .out_fmt = fmt};
    const char *us = NULL;
    for (const char *p = dot - 1; p > seg; p--)
        if (*p == '_') {
            us = p;
            break;
        }
    if (us != NULL) {
        const char *s = us + 1;
        size_t slen = (size_t)(dot - s);
        bool crop = slen > 0 && s[slen - 1] == 'c';
        if (crop)
            slen--;
        const char *x = memchr(s, 'x', slen);
        if (x != NULL) {
            size_t wl = (size_t)(x - s), hl = slen - wl - 1;
            /* size-shaped: digits 'x' digits with at least one side present */
            if ((wl == 0 || all_digits(s, wl)) && (hl == 0 || all_digits(x + 1, hl)) &&
                wl + hl > 0) {
                uint32_t w = 0, h = 0;
                if ((wl && parse_dim(s, wl, &w) != 1) || (hl && parse_dim(x + 1, hl, &h) != 1))
                    return -ROUTE_E_BADSIZE;
                if (crop && (w == 0 || h == 0))
                    return -ROUTE_E_BADSIZE;
                job.op = crop ? IMGPROC_OP_COVER : IMGPROC_OP_FIT;
                job.width = w;
                job.height = h;
                name_end = us;
            }
        }
    }
    size_t stemlen = (size_t)(name_end - rt->key);
    if (name_end == seg || !route_segment_is_valid(seg, (size_t)(name_end - seg)))
        return 0;
    memcpy(rt->stem, rt->key, stemlen);
    rt->stem[stemlen] = '\0';
    const char *ext = imgproc_fmt_name(fmt);
    if (strcmp(ext, "jpeg") == 0)
        ext = "jpg";
    if (job.op == IMGPROC_OP_CONVERT)
        snprintf(rt->variant, sizeof(rt->variant), "full.%s", ext);
    else if (job.width && job.height)
        snprintf(rt->variant, sizeof(rt->variant), "%ux%u%s.%s", job.width, job.height,
                 job.op == IMGPROC_OP_COVER ? "c" : "", ext);
    else if (job.width)
        snprintf(rt->variant, sizeof(rt->variant), "%ux.%s", job.width, ext);
    else
        snprintf(rt->variant, sizeof(rt->variant), "x%u.%s", job.height, ext);
    rt->job = job;
    rt->derived = true;
    return 0;
}
