/* route — key validation and the derived-URL grammar. Everything here is a pure
 * function of its input so it can be unit-tested with hostile strings. */
#include "server/route.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

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
    /* every segment valid: this also rejects "//", a trailing '/', NUL, '%' and '\'; the
     * last one may hold '@' (a preset or a pixel ratio), which no stored key has */
    size_t start = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i == len || path[i] == '/') {
            const char *seg = path + start;
            size_t n = i - start;
            const char *at = i == len ? memchr(seg, '@', n) : NULL;
            if (at != NULL) {
                /* valid around every '@': "a@b", "a_1x1@2x.jpg"; not "@", "a@", "a@@b" */
                for (const char *p = seg, *e = seg + n; p <= e;) {
                    const char *next = memchr(p, '@', (size_t)(e - p));
                    const char *stop = next ? next : e;
                    if (!route_segment_is_valid(p, (size_t)(stop - p)))
                        return -ROUTE_E_BADKEY;
                    p = stop + 1;
                }
                out->at = true;
            } else if (!route_segment_is_valid(seg, n)) {
                return -ROUTE_E_BADKEY;
            }
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

static bool is_preset_char(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-';
}

int route_variant(const imgproc_job_t *job, char *out, size_t n)
{
    const char *ext = imgproc_fmt_name(job->out_fmt);
    if (ext == NULL)
        return -1;
    if (strcmp(ext, "jpeg") == 0)
        ext = "jpg";
    char q[16] = "";
    if (job->quality)
        snprintf(q, sizeof(q), "_q%u", job->quality);
    const char *mode = job->op == IMGPROC_OP_COVER ? "c" : job->op == IMGPROC_OP_SMART ? "s" : "";
    int k;
    if (job->op == IMGPROC_OP_CONVERT)
        k = snprintf(out, n, "full%s.%s", q, ext);
    else if (job->width && job->height)
        k = snprintf(out, n, "%ux%u%s%s.%s", job->width, job->height, mode, q, ext);
    else if (job->width)
        k = snprintf(out, n, "%ux%s.%s", job->width, q, ext);
    else
        k = snprintf(out, n, "x%u%s.%s", job->height, q, ext);
    return k < 0 || (size_t)k >= n ? -1 : 0;
}

/* <stem>@<name>: the name is 1..ROUTE_PRESET_MAX of [A-Za-z0-9_-] (no dot: "a@2x.jpg" is a
 * pixel ratio). 1 when it matched. */
static int parse_preset(route_t *rt, const char *seg)
{
    const char *at = strrchr(seg, '@');
    if (at == NULL || at == seg || strchr(at, '.') != NULL)
        return 0;
    size_t n = strlen(at + 1);
    if (n == 0 || n > ROUTE_PRESET_MAX)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!is_preset_char((unsigned char)at[1 + i]))
            return 0;
    if (!route_segment_is_valid(seg, (size_t)(at - seg)) || memchr(seg, '@', (size_t)(at - seg)))
        return 0;
    size_t stemlen = (size_t)(at - rt->key);
    memcpy(rt->stem, rt->key, stemlen);
    rt->stem[stemlen] = '\0';
    memcpy(rt->preset, at + 1, n + 1);
    rt->dpr = 1;
    rt->derived = true;
    return 1;
}

int route_parse_derived(route_t *rt)
{
    rt->derived = false;
    const char *last = strrchr(rt->key, '/');
    const char *seg = last ? last + 1 : rt->key;
    if (parse_preset(rt, seg))
        return 0;
    const char *dot = strrchr(seg, '.');
    if (dot == NULL || dot == seg || dot[1] == '\0')
        return 0;
    bool autofmt = strcmp(dot + 1, "auto") == 0;
    imgproc_fmt_t fmt =
        autofmt ? IMGPROC_FMT_UNKNOWN : imgproc_fmt_from_ext(dot + 1, strlen(dot + 1));
    if (fmt == IMGPROC_FMT_UNKNOWN && !autofmt)
        return 0;

    /* a pixel ratio sits between the size and the extension: _290x290@2x.jpg */
    const char *size_end = dot, *ratio = NULL;
    for (const char *p = dot - 1; p > seg; p--)
        if (*p == '@') {
            ratio = p + 1;
            size_end = p;
            break;
        }
    const char *name_end = dot; /* stem ends here unless a size suffix is found */
    imgproc_job_t job = {.op = IMGPROC_OP_CONVERT, .out_fmt = fmt};
    uint32_t dpr = 1;
    const char *us = NULL;
    for (const char *p = size_end - 1; p > seg; p--)
        if (*p == '_') {
            us = p;
            break;
        }
    if (us != NULL) {
        const char *s = us + 1;
        size_t slen = (size_t)(size_end - s);
        char mode = slen > 0 && (s[slen - 1] == 'c' || s[slen - 1] == 's') ? s[slen - 1] : 0;
        if (mode)
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
                if (mode && (w == 0 || h == 0))
                    return -ROUTE_E_BADSIZE;
                if (ratio != NULL) {
                    /* "<d>x", d in 1..ROUTE_DPR_MAX; anything else after a size is a bad ratio */
                    size_t rl = (size_t)(dot - ratio);
                    if (rl != 2 || ratio[1] != 'x' || ratio[0] < '1' ||
                        ratio[0] > '0' + (char)ROUTE_DPR_MAX)
                        return -ROUTE_E_BADSIZE;
                    dpr = (uint32_t)(ratio[0] - '0');
                }
                job.op = mode == 'c'   ? IMGPROC_OP_COVER
                         : mode == 's' ? IMGPROC_OP_SMART
                                       : IMGPROC_OP_FIT;
                job.width = w * dpr;
                job.height = h * dpr;
                rt->base_w = w;
                rt->base_h = h;
                name_end = us;
            }
        }
    }
    if (ratio != NULL && name_end != us)
        return 0; /* an '@' without a size before it: no grammar of ours */
    size_t stemlen = (size_t)(name_end - rt->key);
    if (name_end == seg || !route_segment_is_valid(seg, (size_t)(name_end - seg)))
        return 0;
    memcpy(rt->stem, rt->key, stemlen);
    rt->stem[stemlen] = '\0';
    rt->variant[0] = '\0';
    if (!autofmt && route_variant(&job, rt->variant, sizeof(rt->variant)) != 0)
        return 0;
    rt->job = job;
    rt->dpr = dpr;
    rt->auto_fmt = autofmt;
    rt->derived = true;
    return 0;
}

/* "1", "0.8", "0.125", "1.000" -> 0..1000; -1 when malformed (RFC 9110 qvalue). */
static int parse_q(const char *s, size_t n)
{
    if (n == 0 || n > 5 || (s[0] != '0' && s[0] != '1') || (n > 1 && s[1] != '.'))
        return -1;
    int v = (s[0] - '0') * 1000, scale = 100;
    for (size_t i = 2; i < n; i++, scale /= 10) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v += (s[i] - '0') * scale;
    }
    return v > 1000 ? -1 : v;
}

static void trim(const char **a, const char **b)
{
    while (*a < *b && (**a == ' ' || **a == '\t'))
        (*a)++;
    while (*b > *a && ((*b)[-1] == ' ' || (*b)[-1] == '\t'))
        (*b)--;
}

int route_accept_q(const char *accept, size_t len, const char *type)
{
    const char *p = accept, *end = accept + len;
    size_t tlen = strlen(type);
    int best = -1;
    while (p < end) {
        const char *comma = memchr(p, ',', (size_t)(end - p)), *stop = comma ? comma : end;
        const char *semi = memchr(p, ';', (size_t)(stop - p));
        const char *a = p, *b = semi ? semi : stop;
        trim(&a, &b);
        if ((size_t)(b - a) == tlen && strncasecmp(a, type, tlen) == 0) {
            int q = 1000;
            /* parameters: only q matters */
            for (const char *s = semi; s != NULL && s < stop;) {
                const char *next = memchr(s + 1, ';', (size_t)(stop - s - 1));
                const char *x = s + 1, *y = next ? next : stop;
                trim(&x, &y);
                if (y - x >= 2 && (x[0] == 'q' || x[0] == 'Q') && x[1] == '=') {
                    int v = parse_q(x + 2, (size_t)(y - x - 2));
                    q = v < 0 ? 0 : v;
                }
                s = next;
            }
            if (q > best)
                best = q;
        }
        p = stop + 1;
    }
    return best;
}
