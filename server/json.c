/* json — one escaper, one object writer (see json.h). */
#include "server/json.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

size_t json_escape(char *out, size_t cap, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    if (cap == 0)
        return 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        char e[7];
        size_t n;
        if (c == '"' || c == '\\') {
            e[0] = '\\', e[1] = (char)c, n = 2;
        } else if (c < 0x20 || c >= 0x7f) {
            memcpy(e, "\\u00", 4);
            e[4] = hex[c >> 4], e[5] = hex[c & 15], n = 6;
        } else {
            e[0] = (char)c, n = 1;
        }
        if (o + n >= cap)
            break;
        memcpy(out + o, e, n);
        o += n;
    }
    out[o] = '\0';
    return o;
}

void json_begin(json_t *j, char *buf, size_t cap)
{
    j->buf = buf;
    j->cap = cap;
    j->len = 0;
    j->first = true;
    j->truncated = false;
    buf[j->len++] = '{';
    buf[j->len] = '\0';
}

/* Room kept for the closing "}\n" and NUL. */
#define TAIL 3

static bool key(json_t *j, const char *k, size_t need)
{
    size_t kl = strlen(k);
    if (j->truncated || j->len + kl + 4 + need + TAIL > j->cap) {
        j->truncated = true;
        return false;
    }
    if (!j->first)
        j->buf[j->len++] = ',';
    j->first = false;
    j->buf[j->len++] = '"';
    memcpy(j->buf + j->len, k, kl); /* keys are literals of the code: no escaping */
    j->len += kl;
    j->buf[j->len++] = '"';
    j->buf[j->len++] = ':';
    return true;
}

void json_strn(json_t *j, const char *k, const char *val, size_t len)
{
    if (!key(j, k, 2))
        return;
    j->buf[j->len++] = '"';
    size_t room = j->cap - j->len - 1 - TAIL;
    size_t n = json_escape(j->buf + j->len, room + 1, val ? val : "", val ? len : 0);
    j->len += n;
    j->buf[j->len++] = '"';
    j->buf[j->len] = '\0';
}

void json_str(json_t *j, const char *k, const char *val)
{
    json_strn(j, k, val, val ? strlen(val) : 0);
}

static void raw(json_t *j, const char *k, const char *text)
{
    if (!key(j, k, strlen(text)))
        return;
    size_t n = strlen(text);
    memcpy(j->buf + j->len, text, n + 1);
    j->len += n;
}

/* @p v in decimal, ending at @p end (no NUL): where it starts. The access log writes
 * several numbers a request, and snprintf was a measurable share of a cached hit. */
static char *digits(char *end, uint64_t v)
{
    do {
        *--end = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    return end;
}

static void raw_n(json_t *j, const char *k, const char *text, size_t n)
{
    if (!key(j, k, n))
        return;
    memcpy(j->buf + j->len, text, n);
    j->len += n;
    j->buf[j->len] = '\0';
}

void json_u64(json_t *j, const char *k, uint64_t v)
{
    char t[24], *p = digits(t + sizeof(t), v);
    raw_n(j, k, p, (size_t)(t + sizeof(t) - p));
}

void json_i64(json_t *j, const char *k, int64_t v)
{
    char t[24], *p = digits(t + sizeof(t), v < 0 ? 0 - (uint64_t)v : (uint64_t)v);
    if (v < 0)
        *--p = '-';
    raw_n(j, k, p, (size_t)(t + sizeof(t) - p));
}

void json_milli(json_t *j, const char *k, int64_t thousandths)
{
    uint64_t a = thousandths < 0 ? 0 - (uint64_t)thousandths : (uint64_t)thousandths;
    char t[32], *end = t + sizeof(t), *p = digits(end - 4, a / 1000);
    char *f = digits(end, 1000 + a % 1000); /* "1ddd": the fraction with its zeros */
    f[0] = '.';
    if (thousandths < 0)
        *--p = '-';
    raw_n(j, k, p, (size_t)(end - p));
}

void json_fixed3(json_t *j, const char *k, double v)
{
    char t[40];
    snprintf(t, sizeof(t), "%.3f", v);
    raw(j, k, t);
}

void json_bool(json_t *j, const char *k, bool v)
{
    raw(j, k, v ? "true" : "false");
}

size_t json_end(json_t *j)
{
    j->buf[j->len++] = '}';
    j->buf[j->len++] = '\n';
    j->buf[j->len] = '\0';
    return j->len;
}
