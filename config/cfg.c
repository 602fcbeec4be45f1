/* cfg — loads thumbgate's config. libyaml events become a small node tree that keeps
 * line numbers (as h2o's yoml does); the tree is applied through ONE static table of
 * typed rows with generic setters; THUMBGATE_* environment variables override it; then
 * per-row validators and a few cross-field checks run. Every error is reported as
 * "file:line: key: message" and all of them are reported before NULL is returned. */
#include "config/cfg.h"
#include "config/cfg_internal.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <yaml.h>

#define KIB (UINT64_C(1) << 10)
#define MIB (UINT64_C(1) << 20)
#define GIB (UINT64_C(1) << 30)
#define TIB (UINT64_C(1) << 40)
#define PIB (UINT64_C(1) << 50)
#define SEC UINT64_C(1000)
#define MINUTE (60 * SEC)
#define HOUR (60 * MINUTE)

#define MAX_FILE_BYTES (1u << 20) /* a config file is a few KiB; refuse to slurp a disk */
#define MAX_DEPTH 16              /* our schema is 2 deep; bounds the tree builder's recursion */
#define MAX_ERRORS 50             /* a binary file fed as config should not print 10^5 lines */
#define MAX_KEY 128               /* longest key path we look up; longer ones are unknown */
#define MAX_SIDE 65535            /* largest side in a limits.sizes entry */
#define ENV_PREFIX "THUMBGATE_"

/* Variables that carry the THUMBGATE_ prefix but are not config keys: the test harness
 * sets them. Anything else with the prefix that names no key is reported as a typo. */
static const char *const env_ignored[] = {"THUMBGATE_BIN", "THUMBGATE_SANITIZED", NULL};

/* ---- the node tree ------------------------------------------------------------------ */

typedef enum { NODE_SCALAR, NODE_MAPPING, NODE_SEQUENCE } node_kind_t;

typedef struct node {
    node_kind_t kind;
    unsigned line, column; /* 1-based, from the event's start mark */
    bool plain;            /* scalar written without quotes: only those can be null */
    char *text;            /* scalar: NUL-terminated copy */
    size_t len;            /* scalar: bytes in text ("\0" escapes make it differ from strlen) */
    struct node **kids;    /* sequence: items; mapping: key0, value0, key1, value1, ... */
    size_t nkids, cap;
} node_t;

/* ---- the row table ------------------------------------------------------------------ */

typedef enum {
    ROW_UINT, ROW_SIZE, ROW_DURATION, ROW_MILLI, ROW_BOOL, ROW_STR, ROW_ENUM, ROW_SIZES,
    ROW_PRESETS
} row_type_t; /* ROW_MILLI: a decimal of up to 3 places ("1.333"), held in thousandths */

enum {
    ROW_AUTO = 1,   /* "auto" is accepted and stored as 0 (below min) */
    ROW_SECRET = 2, /* cfg_print shows "<set>" or "" instead of the value */
};

/** Error text of a setter or validator, and the line to blame when it is not the value's. */
typedef struct {
    char msg[256];
    unsigned line;
} set_err_t;

typedef struct cfg_row {
    const char *key;        /* dotted path; rows of one section are adjacent */
    row_type_t type;
    size_t off, width;      /* where in cfg_t, and sizeof the field */
    uint64_t min, max;      /* numeric rows: inclusive bounds (ms for durations) */
    const char *dflt;       /* default, in config syntax: the only place defaults live */
    unsigned flags;         /* ROW_AUTO, ROW_SECRET */
    const char *const *names; /* ROW_ENUM: value i is names[i]; NULL-terminated */
    int (*validate)(const void *field, set_err_t *e); /* runs on the final value */
} cfg_row_t;

static int check_hostport(const void *field, set_err_t *e);
static int check_nonempty(const void *field, set_err_t *e);
static int check_token(const void *field, set_err_t *e);
static int check_url_key(const void *field, set_err_t *e);
static int check_ring_interval(const void *field, set_err_t *e);

static const char *const mode_names[] = {"admit", "naive", NULL};
static const char *const backend_names[] = {"local", "s3", NULL};
static const char *const level_names[] = {"error", "warn", "info", "debug", NULL};

#define ROW(key, type, field, min, max, dflt, flags, names, validate)                              \
    {key, type, offsetof(cfg_t, field), sizeof(((cfg_t *)0)->field), min, max, dflt, flags, names, \
     validate}

static const cfg_row_t rows[] = {
    ROW("listen", ROW_STR, listen, 0, 0, "127.0.0.1:8080", 0, NULL, check_hostport),
    ROW("admin_listen", ROW_STR, admin_listen, 0, 0, "127.0.0.1:8081", 0, NULL, check_hostport),
    ROW("threads", ROW_UINT, threads, 1, 256, "auto", ROW_AUTO, NULL, NULL),
    ROW("workers", ROW_UINT, workers, 1, 1024, "auto", ROW_AUTO, NULL, NULL),

    ROW("storage.root", ROW_STR, storage_root, 0, 0, "./data", 0, NULL, check_nonempty),
    ROW("storage.cache_max", ROW_SIZE, cache_max_bytes, MIB, PIB, "1GiB", 0, NULL, NULL),
    ROW("storage.backend", ROW_ENUM, storage_backend, 0, 1, "local", 0, backend_names, NULL),
    ROW("storage.s3.endpoint", ROW_STR, s3_endpoint, 0, 0, "", 0, NULL, NULL),
    ROW("storage.s3.bucket", ROW_STR, s3_bucket, 0, 0, "", 0, NULL, NULL),
    ROW("storage.s3.region", ROW_STR, s3_region, 0, 0, "us-east-1", 0, NULL, check_nonempty),
    ROW("storage.s3.access_key", ROW_STR, s3_access_key, 0, 0, "", ROW_SECRET, NULL, NULL),
    ROW("storage.s3.secret_key", ROW_STR, s3_secret_key, 0, 0, "", ROW_SECRET, NULL, NULL),
    ROW("storage.s3.access_key_file", ROW_STR, s3_access_key_file, 0, 0, "", 0, NULL, NULL),
    ROW("storage.s3.secret_key_file", ROW_STR, s3_secret_key_file, 0, 0, "", 0, NULL, NULL),
    ROW("storage.s3.path_style", ROW_BOOL, s3_path_style, 0, 1, "true", 0, NULL, NULL),
    ROW("storage.s3.connect_timeout", ROW_DURATION, s3_connect_timeout_ms, 100, MINUTE, "2s", 0,
        NULL, NULL),
    ROW("storage.s3.timeout", ROW_DURATION, s3_timeout_ms, 500, HOUR, "30s", 0, NULL, NULL),
    ROW("storage.s3.transfers", ROW_UINT, s3_transfers, 1, 6, "4", 0, NULL, NULL),
    ROW("storage.s3.buffer", ROW_SIZE, s3_buffer, 16 * KIB, 2 * MIB, "64KiB", 0, NULL, NULL),
    ROW("storage.s3.cache_max", ROW_SIZE, s3_cache_max, MIB, PIB, "4GiB", 0, NULL, NULL),
    ROW("storage.s3.revalidate", ROW_DURATION, s3_revalidate_ms, 0, HOUR, "1s", 0, NULL, NULL),
    ROW("storage.s3.check_interval", ROW_DURATION, s3_check_interval_ms, 100, MINUTE, "2s", 0,
        NULL, NULL),

    ROW("limits.max_upload", ROW_SIZE, max_upload, KIB, TIB, "100MiB", 0, NULL, NULL),
    ROW("limits.max_pixels", ROW_UINT, max_pixels, 1, TIB, "100000000", 0, NULL, NULL),
    ROW("limits.max_frames", ROW_UINT, max_frames, 1, 100000, "1000", 0, NULL, NULL),
    ROW("limits.max_output_width", ROW_UINT, max_output_width, 1, MAX_SIDE, "16384", 0, NULL, NULL),
    ROW("limits.max_output_height", ROW_UINT, max_output_height, 1, MAX_SIDE, "16384", 0, NULL,
        NULL),
    ROW("limits.max_connections", ROW_UINT, max_connections, 1, 1000000, "auto", ROW_AUTO, NULL,
        NULL),
    ROW("limits.max_header_bytes", ROW_SIZE, max_header_bytes, KIB, 400 * KIB, "16KiB", 0, NULL,
        NULL),
    ROW("limits.max_body_inflight", ROW_SIZE, max_body_inflight, KIB, PIB, "auto", ROW_AUTO, NULL,
        NULL),
    ROW("limits.sizes", ROW_SIZES, sizes, 0, 0, "", 0, NULL, NULL),
    ROW("limits.presets_only", ROW_BOOL, presets_only, 0, 1, "false", 0, NULL, NULL),

    ROW("memory.budget", ROW_SIZE, memory_budget, MIB, 16 * TIB, "auto", ROW_AUTO, NULL, NULL),
    ROW("memory.auto_percent", ROW_UINT, memory_budget_percent, 5, 95, "60", 0, NULL, NULL),
    ROW("memory.mode", ROW_ENUM, memory_mode, 0, 1, "admit", 0, mode_names, NULL),
    ROW("memory.queue_max", ROW_UINT, queue_max, 0, 1000000, "64", 0, NULL, NULL),
    ROW("memory.queue_max_bytes", ROW_SIZE, queue_max_bytes, 0, PIB, "0", 0, NULL, NULL),
    ROW("memory.queue_timeout", ROW_DURATION, queue_timeout_ms, 0, HOUR, "10s", 0, NULL, NULL),
    ROW("memory.job_timeout", ROW_DURATION, job_timeout_ms, 1, HOUR, "30s", 0, NULL, NULL),
    ROW("memory.trim_when_idle", ROW_BOOL, malloc_trim_idle, 0, 1, "true", 0, NULL, NULL),

    ROW("http.request_timeout", ROW_DURATION, req_timeout_ms, SEC, 24 * HOUR, "60s", 0, NULL, NULL),
    ROW("http.idle_timeout", ROW_DURATION, idle_timeout_ms, 100, HOUR, "10s", 0, NULL, NULL),
    ROW("http.shutdown_timeout", ROW_DURATION, shutdown_timeout_ms, 0, HOUR, "10s", 0, NULL, NULL),
    ROW("http.upload_spill", ROW_SIZE, upload_spill_bytes, 16 * KIB, GIB, "64KiB", 0, NULL, NULL),
    ROW("http.socket_buffer", ROW_SIZE, socket_buffer, 4 * KIB, 4 * MIB, "16KiB", 0, NULL, NULL),
    ROW("http.hot_results", ROW_SIZE, hot_results, 0, GIB, "4MiB", 0, NULL, NULL),

    ROW("auth.write_token", ROW_STR, write_token, 0, 0, "", ROW_SECRET, NULL, check_token),
    ROW("auth.url_key", ROW_STR, url_key, 0, 0, "", ROW_SECRET, NULL, check_url_key),
    ROW("auth.url_key_file", ROW_STR, url_key_file, 0, 0, "", 0, NULL, NULL),

    ROW("output.jpeg_quality", ROW_UINT, jpeg_quality, 1, 100, "80", 0, NULL, NULL),
    ROW("output.webp_quality", ROW_UINT, webp_quality, 1, 100, "80", 0, NULL, NULL),
    ROW("output.png_compression", ROW_UINT, png_compression, 0, 9, "6", 0, NULL, NULL),
    ROW("output.avif_quality", ROW_UINT, avif_quality, 1, 100, "60", 0, NULL, NULL),
    ROW("output.avif_effort", ROW_UINT, avif_effort, 0, 9, "2", 0, NULL, NULL),
    ROW("output.jxl_quality", ROW_UINT, jxl_quality, 1, 100, "75", 0, NULL, NULL),
    ROW("output.jxl_effort", ROW_UINT, jxl_effort, 3, 7, "7", 0, NULL, NULL),
    ROW("output.keep_icc", ROW_BOOL, keep_icc, 0, 1, "false", 0, NULL, NULL),

    ROW("mezzanine.enabled", ROW_BOOL, mezz_enabled, 0, 1, "true", 0, NULL, NULL),
    ROW("mezzanine.size", ROW_UINT, mezz_size, 256, 8192, "1280", 0, NULL, NULL),
    ROW("mezzanine.k", ROW_MILLI, mezz_k_milli, 1000, 16000, "1.333", 0, NULL, NULL),
    ROW("mezzanine.quality", ROW_UINT, mezz_quality, 50, 100, "95", 0, NULL, NULL),

    ROW("log.level", ROW_ENUM, log_level, 0, 3, "info", 0, level_names, NULL),
    ROW("log.access", ROW_BOOL, access_log, 0, 1, "true", 0, NULL, NULL),

    ROW("flight.path", ROW_STR, flight_path, 0, 0, "", 0, NULL, NULL),
    ROW("flight.interval", ROW_DURATION, flight_interval_ms, 100, HOUR, "1s", 0, NULL, NULL),
    ROW("flight.slots", ROW_UINT, flight_slots, 2, 100000, "300", 0, NULL, NULL),
    ROW("flight.keep_runs", ROW_UINT, flight_keep_runs, 0, 1000, "5", 0, NULL, NULL),
    ROW("flight.max_disk", ROW_SIZE, flight_max_disk, 64 * KIB, TIB, "64MiB", 0, NULL, NULL),

    ROW("heap_ring.interval", ROW_DURATION, heap_ring_interval_ms, 0, HOUR, "0", 0, NULL,
        check_ring_interval),
    ROW("heap_ring.dir", ROW_STR, heap_ring_dir, 0, 0, "", 0, NULL, NULL),
    ROW("heap_ring.keep", ROW_UINT, heap_ring_keep, 1, 10000, "12", 0, NULL, NULL),
    ROW("heap_ring.max_disk", ROW_SIZE, heap_ring_max_disk, 64 * KIB, TIB, "64MiB", 0, NULL, NULL),

    ROW("presets", ROW_PRESETS, presets, 0, 0, "", 0, NULL, NULL),
};

#define NROWS (sizeof(rows) / sizeof(rows[0]))

/* The generic setters store enums as uint32_t and bools as one byte. */
_Static_assert(sizeof(cfg_mode_t) == sizeof(uint32_t), "enum width");
_Static_assert(sizeof(cfg_log_level_t) == sizeof(uint32_t), "enum width");
_Static_assert(sizeof(cfg_backend_t) == sizeof(uint32_t), "enum width");
_Static_assert(sizeof(bool) == 1, "bool width");

/* ---- load state and error reporting -------------------------------------------------- */

/** Where a value came from: a line of the file, an environment variable, or the table. */
typedef struct {
    unsigned line;   /* 0 = not from the file */
    const char *env; /* "NAME=value" entry of envp, or NULL */
    size_t envlen;   /* length of NAME */
} origin_t;

typedef struct {
    const char *name; /* the file, as named in messages */
    FILE *errs;
    unsigned nerrors;
    origin_t origin[NROWS];
    struct {
        char path[MAX_KEY];
        unsigned line;
    } sections[16]; /* sections opened by the file, to refuse `memory:` twice */
    size_t nsections;
} loader_t;

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n, size);
    if (p == NULL) {
        fputs("thumbgate: out of memory\n", stderr);
        abort();
    }
    return p;
}

static void *xrealloc(void *p, size_t size)
{
    p = realloc(p, size);
    if (p == NULL) {
        fputs("thumbgate: out of memory\n", stderr);
        abort();
    }
    return p;
}

static origin_t at_line(unsigned line)
{
    return (origin_t){.line = line};
}

/** Writes @p s as a quoted, escaped string capped at about 64 characters, so that a
 * hostile value cannot break the one-error-per-line output. Returns @p buf. */
static const char *quote(char *buf, size_t n, const char *s, size_t len)
{
    size_t o = 0;
    assert(n >= 16);
    buf[o++] = '"';
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (o + 8 >= n) {
            memcpy(buf + o, "...", 3);
            o += 3;
            break;
        }
        if (ch == '"' || ch == '\\') {
            buf[o++] = '\\';
            buf[o++] = (char)ch;
        } else if (ch < 0x20 || ch >= 0x7f) {
            o += (size_t)snprintf(buf + o, n - o, "\\x%02x", ch);
        } else {
            buf[o++] = (char)ch;
        }
    }
    buf[o++] = '"';
    buf[o] = '\0';
    return buf;
}

#define QUOTE_SIZE 96
#define Q(buf, s) quote(buf, sizeof(buf), s, strlen(s))

static void report(loader_t *ld, origin_t at, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void report(loader_t *ld, origin_t at, const char *key, const char *fmt, ...)
{
    va_list ap;

    ld->nerrors++;
    if (ld->errs == NULL)
        return;
    if (ld->nerrors > MAX_ERRORS) {
        if (ld->nerrors == MAX_ERRORS + 1)
            fprintf(ld->errs, "%s: too many errors, the rest are not shown\n", ld->name);
        return;
    }
    if (at.env != NULL)
        fprintf(ld->errs, "env:%.*s: ", (int)at.envlen, at.env);
    else if (at.line != 0)
        fprintf(ld->errs, "%s:%u: ", ld->name, at.line);
    else
        fprintf(ld->errs, "%s: ", ld->name);
    if (key != NULL)
        fprintf(ld->errs, "%s: ", key);
    va_start(ap, fmt);
    vfprintf(ld->errs, fmt, ap);
    va_end(ap);
    fputc('\n', ld->errs);
}

static int fail(set_err_t *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int fail(set_err_t *e, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
    va_end(ap);
    return -1;
}

/* ---- number and unit parsing ----------------------------------------------------------- */

enum { PARSE_OK = 0, PARSE_BAD = -1, PARSE_TOO_LARGE = -2, PARSE_NO_UNIT = -3 };

/** Reads decimal digits at *sp into *out; sets *overflow instead of wrapping. */
static int scan_digits(const char **sp, uint64_t *out, bool *overflow)
{
    const char *s = *sp;
    uint64_t n = 0;

    *overflow = false;
    if (*s < '0' || *s > '9')
        return PARSE_BAD;
    for (; *s >= '0' && *s <= '9'; s++) {
        unsigned d = (unsigned)(*s - '0');
        if (n > (UINT64_MAX - d) / 10)
            *overflow = true;
        else
            n = n * 10 + d;
    }
    *sp = s;
    *out = n;
    return PARSE_OK;
}

static int parse_uint(const char *s, uint64_t *out)
{
    bool overflow;
    if (scan_digits(&s, out, &overflow) != PARSE_OK || *s != '\0')
        return PARSE_BAD;
    return overflow ? PARSE_TOO_LARGE : PARSE_OK;
}

/* "1", "1.5", "1.333": thousandths. More places are refused rather than rounded. */
static int parse_milli(const char *s, uint64_t *out)
{
    uint64_t n, frac = 0;
    bool overflow;
    if (scan_digits(&s, &n, &overflow) != PARSE_OK)
        return PARSE_BAD;
    if (*s == '.') {
        s++;
        int places = 0;
        for (; *s >= '0' && *s <= '9' && places < 3; s++, places++)
            frac = frac * 10 + (uint64_t)(*s - '0');
        if (places == 0)
            return PARSE_BAD;
        for (; places < 3; places++)
            frac *= 10;
    }
    if (*s != '\0')
        return PARSE_BAD;
    if (overflow || n > (UINT64_MAX - frac) / 1000)
        return PARSE_TOO_LARGE;
    *out = n * 1000 + frac;
    return PARSE_OK;
}

static int parse_size(const char *s, uint64_t *out)
{
    /* One-letter units are binary as in nginx and systemd; "KB" is the SI kilobyte. */
    static const struct {
        const char *unit;
        uint64_t mult;
    } units[] = {
        {"", 1},           {"b", 1},
        {"k", KIB},        {"kib", KIB},      {"kb", UINT64_C(1000)},
        {"m", MIB},        {"mib", MIB},      {"mb", UINT64_C(1000000)},
        {"g", GIB},        {"gib", GIB},      {"gb", UINT64_C(1000000000)},
        {"t", TIB},        {"tib", TIB},      {"tb", UINT64_C(1000000000000)},
    };
    uint64_t n;
    bool overflow;

    if (scan_digits(&s, &n, &overflow) != PARSE_OK)
        return PARSE_BAD;
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (strcasecmp(s, units[i].unit) != 0)
            continue;
        if (overflow || n > UINT64_MAX / units[i].mult)
            return PARSE_TOO_LARGE;
        *out = n * units[i].mult;
        return PARSE_OK;
    }
    return PARSE_BAD;
}

/** Durations into ms. A bare number is ms; PARSE_NO_UNIT tells the config setter, which
 * insists on a unit (a bare `60` meaning 60 ms is a trap), that none was given. */
static int parse_duration(const char *s, uint64_t *out)
{
    static const struct {
        const char *unit;
        uint64_t mult;
    } units[] = {{"ms", 1}, {"s", SEC}, {"m", MINUTE}, {"h", HOUR}};
    uint64_t n;
    bool overflow;

    if (scan_digits(&s, &n, &overflow) != PARSE_OK)
        return PARSE_BAD;
    if (*s == '\0') {
        if (overflow)
            return PARSE_TOO_LARGE;
        *out = n;
        return n == 0 ? PARSE_OK : PARSE_NO_UNIT;
    }
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (strcmp(s, units[i].unit) != 0)
            continue;
        if (overflow || n > UINT64_MAX / units[i].mult)
            return PARSE_TOO_LARGE;
        *out = n * units[i].mult;
        return PARSE_OK;
    }
    return PARSE_BAD;
}

int cfg_parse_size(const char *s, uint64_t *out)
{
    uint64_t v;
    if (s == NULL || parse_size(s, &v) != PARSE_OK)
        return -1;
    *out = v;
    return 0;
}

int cfg_parse_duration(const char *s, uint64_t *out)
{
    uint64_t v;
    int rc;
    if (s == NULL)
        return -1;
    rc = parse_duration(s, &v);
    if (rc != PARSE_OK && rc != PARSE_NO_UNIT)
        return -1;
    *out = v;
    return 0;
}

/** Largest binary unit that divides @p v exactly: 1073741824 -> "1GiB". */
static const char *fmt_size(char *buf, size_t n, uint64_t v)
{
    static const struct {
        const char *unit;
        uint64_t mult;
    } units[] = {{"PiB", PIB}, {"TiB", TIB}, {"GiB", GIB}, {"MiB", MIB}, {"KiB", KIB}};
    for (size_t i = 0; v != 0 && i < sizeof(units) / sizeof(units[0]); i++) {
        if (v % units[i].mult == 0) {
            snprintf(buf, n, "%" PRIu64 "%s", v / units[i].mult, units[i].unit);
            return buf;
        }
    }
    snprintf(buf, n, "%" PRIu64, v);
    return buf;
}

/** Largest unit that divides @p ms exactly: 120000 -> "2m". */
static const char *fmt_duration(char *buf, size_t n, uint64_t ms)
{
    if (ms == 0)
        snprintf(buf, n, "0");
    else if (ms % HOUR == 0)
        snprintf(buf, n, "%" PRIu64 "h", ms / HOUR);
    else if (ms % MINUTE == 0)
        snprintf(buf, n, "%" PRIu64 "m", ms / MINUTE);
    else if (ms % SEC == 0)
        snprintf(buf, n, "%" PRIu64 "s", ms / SEC);
    else
        snprintf(buf, n, "%" PRIu64 "ms", ms);
    return buf;
}

static const char *fmt_number(char *buf, size_t n, row_type_t type, uint64_t v)
{
    if (type == ROW_SIZE)
        return fmt_size(buf, n, v);
    if (type == ROW_DURATION)
        return fmt_duration(buf, n, v);
    if (type == ROW_MILLI && v % 1000 != 0) { /* the places it has: 1.5, 1.333 */
        unsigned frac = (unsigned)(v % 1000), places = 3;
        for (; frac % 10 == 0; frac /= 10)
            places--;
        snprintf(buf, n, "%" PRIu64 ".%0*u", v / 1000, (int)places, frac);
        return buf;
    }
    if (type == ROW_MILLI)
        v /= 1000;
    snprintf(buf, n, "%" PRIu64, v);
    return buf;
}

/* ---- field access ------------------------------------------------------------------- */

static void *field_of(cfg_t *c, const cfg_row_t *r)
{
    return (char *)c + r->off;
}

static const void *cfield_of(const cfg_t *c, const cfg_row_t *r)
{
    return (const char *)c + r->off;
}

static void put_uint(cfg_t *c, const cfg_row_t *r, uint64_t v)
{
    void *p = field_of(c, r);
    switch (r->width) {
    case 1: {
        bool b = v != 0;
        memcpy(p, &b, 1);
        break;
    }
    case 4: {
        uint32_t x = (uint32_t)v;
        memcpy(p, &x, 4);
        break;
    }
    case 8:
        memcpy(p, &v, 8);
        break;
    default:
        assert(!"numeric field of unexpected width");
    }
}

static uint64_t get_uint(const cfg_t *c, const cfg_row_t *r)
{
    const void *p = cfield_of(c, r);
    switch (r->width) {
    case 1: {
        bool b;
        memcpy(&b, p, 1);
        return b;
    }
    case 4: {
        uint32_t x;
        memcpy(&x, p, 4);
        return x;
    }
    case 8: {
        uint64_t x;
        memcpy(&x, p, 8);
        return x;
    }
    default:
        assert(!"numeric field of unexpected width");
        return 0;
    }
}

/* ---- setters: node -> field, or an error without touching the field --------------------- */

static const char *kind_name(node_kind_t k)
{
    return k == NODE_MAPPING ? "mapping" : k == NODE_SEQUENCE ? "sequence" : "scalar";
}

/** `key:` with nothing after it, `~` or `null`, unquoted. */
static bool is_null(const node_t *n)
{
    if (n->kind != NODE_SCALAR || !n->plain)
        return false;
    return n->len == 0 || strcmp(n->text, "~") == 0 || strcmp(n->text, "null") == 0 ||
           strcmp(n->text, "Null") == 0 || strcmp(n->text, "NULL") == 0;
}

/** Common checks for a one-value row: a scalar, not empty, no NUL bytes. */
static int need_scalar(const node_t *v, set_err_t *e)
{
    if (v->kind != NODE_SCALAR)
        return fail(e, "expected a single value, got a %s", kind_name(v->kind));
    if (is_null(v) || v->len == 0)
        return fail(e, "missing value");
    if (strlen(v->text) != v->len)
        return fail(e, "value contains a NUL byte");
    return 0;
}

static int set_number(cfg_t *c, const cfg_row_t *r, const node_t *v, set_err_t *e)
{
    const char *what = r->type == ROW_SIZE       ? "size"
                       : r->type == ROW_DURATION ? "duration"
                       : r->type == ROW_MILLI    ? "decimal"
                                                 : "number";
    char q[QUOTE_SIZE], lo[32], hi[32];
    uint64_t n = 0;
    int rc;

    if (need_scalar(v, e) != 0)
        return -1;
    if ((r->flags & ROW_AUTO) && strcasecmp(v->text, "auto") == 0) {
        put_uint(c, r, 0);
        return 0;
    }
    rc = r->type == ROW_SIZE ? parse_size(v->text, &n)
         : r->type == ROW_DURATION ? parse_duration(v->text, &n)
         : r->type == ROW_MILLI    ? parse_milli(v->text, &n)
                                   : parse_uint(v->text, &n);
    switch (rc) {
    case PARSE_OK:
        break;
    case PARSE_TOO_LARGE:
        return fail(e, "%s %s is too large", what, Q(q, v->text));
    case PARSE_NO_UNIT:
        return fail(e, "duration %s needs a unit: ms, s, m or h", Q(q, v->text));
    default:
        return fail(e, "bad %s %s", what, Q(q, v->text));
    }
    if (n < r->min || n > r->max)
        return fail(e, "%s is out of range %s..%s%s", Q(q, v->text),
                    fmt_number(lo, sizeof(lo), r->type, r->min),
                    fmt_number(hi, sizeof(hi), r->type, r->max),
                    (r->flags & ROW_AUTO) ? " or auto" : "");
    put_uint(c, r, n);
    return 0;
}

static int set_bool(cfg_t *c, const cfg_row_t *r, const node_t *v, set_err_t *e)
{
    static const char *const yes[] = {"true", "yes", "on"}, *const no[] = {"false", "no", "off"};
    char q[QUOTE_SIZE];

    if (need_scalar(v, e) != 0)
        return -1;
    for (size_t i = 0; i < 3; i++) {
        if (strcasecmp(v->text, yes[i]) == 0 || strcasecmp(v->text, no[i]) == 0) {
            put_uint(c, r, strcasecmp(v->text, yes[i]) == 0);
            return 0;
        }
    }
    return fail(e, "bad boolean %s (use true/false, yes/no or on/off)", Q(q, v->text));
}

static int set_str(cfg_t *c, const cfg_row_t *r, const node_t *v, set_err_t *e)
{
    char *field = field_of(c, r);

    if (v->kind != NODE_SCALAR)
        return fail(e, "expected a single value, got a %s", kind_name(v->kind));
    if (is_null(v)) {
        memset(field, 0, r->width);
        return 0;
    }
    if (v->len >= r->width)
        return fail(e, "too long (%zu bytes, at most %zu)", v->len, r->width - 1);
    /* Control characters (NUL included) have no business in addresses, paths or tokens,
     * and refusing them keeps cfg_print's output a plain double-quoted string. */
    for (size_t i = 0; i < v->len; i++) {
        unsigned char ch = (unsigned char)v->text[i];
        if (ch < 0x20 || ch == 0x7f)
            return fail(e, "contains a control character (byte %zu)", i);
    }
    memset(field, 0, r->width);
    memcpy(field, v->text, v->len);
    return 0;
}

static int set_enum(cfg_t *c, const cfg_row_t *r, const node_t *v, set_err_t *e)
{
    char q[QUOTE_SIZE], expected[128];
    size_t o = 0;

    if (need_scalar(v, e) != 0)
        return -1;
    for (size_t i = 0; r->names[i] != NULL; i++) {
        if (strcasecmp(v->text, r->names[i]) == 0) {
            put_uint(c, r, i);
            return 0;
        }
        o += (size_t)snprintf(expected + o, sizeof(expected) - o, "%s%s", i ? "|" : "",
                              r->names[i]);
        if (o >= sizeof(expected))
            o = sizeof(expected) - 1;
    }
    return fail(e, "bad value %s (expected %s)", Q(q, v->text), expected);
}

/** Reads one side of a sizes entry; a missing side is 0 with *present false. */
static int scan_side(const char **sp, const char *end, uint32_t *out, bool *present)
{
    const char *s = *sp;
    uint64_t n = 0;

    *present = false;
    for (; s < end && *s >= '0' && *s <= '9'; s++) {
        n = n * 10 + (uint64_t)(*s - '0');
        if (n > MAX_SIDE)
            return -1; /* stops before the product can overflow */
        *present = true;
    }
    *sp = s;
    *out = (uint32_t)n;
    return 0;
}

/** Parses "WxH", "Wx", "xH" or "WxHc" (@p len bytes at @p s). */
static int parse_size_entry(const char *s, size_t len, cfg_size_t *out, set_err_t *e)
{
    const char *p = s, *end = s + len;
    char q[QUOTE_SIZE];
    bool has_w, has_h;
    cfg_size_t sz = {0, 0, false};

    quote(q, sizeof(q), s, len);
    if (scan_side(&p, end, &sz.width, &has_w) != 0)
        return fail(e, "bad entry %s: a side is larger than %u", q, MAX_SIDE);
    if (p == end || *p != 'x')
        return fail(e, "bad entry %s: expected WxH, Wx, xH or WxHc", q);
    p++;
    if (scan_side(&p, end, &sz.height, &has_h) != 0)
        return fail(e, "bad entry %s: a side is larger than %u", q, MAX_SIDE);
    if (p < end && *p == 'c') {
        sz.crop = true;
        p++;
    }
    if (p != end)
        return fail(e, "bad entry %s: expected WxH, Wx, xH or WxHc", q);
    if (!has_w && !has_h)
        return fail(e, "bad entry %s: needs a width, a height or both", q);
    if ((has_w && sz.width == 0) || (has_h && sz.height == 0))
        return fail(e, "bad entry %s: 0 is not a size (leave that side out, e.g. x290)", q);
    if (sz.crop && !(has_w && has_h))
        return fail(e, "bad entry %s: crop (c) needs both width and height", q);
    *out = sz;
    return 0;
}

static int add_size_entry(cfg_size_t *list, uint32_t *n, const char *s, size_t len, set_err_t *e)
{
    cfg_size_t sz = {0, 0, false};
    char q[QUOTE_SIZE];

    if (parse_size_entry(s, len, &sz, e) != 0)
        return -1;
    for (uint32_t i = 0; i < *n; i++)
        if (list[i].width == sz.width && list[i].height == sz.height && list[i].crop == sz.crop)
            return fail(e, "entry %s is listed twice", quote(q, sizeof(q), s, len));
    if (*n == CFG_MAX_SIZES)
        return fail(e, "more than %d entries", CFG_MAX_SIZES);
    /* field by field: a struct assignment may leave the padding after `crop` undefined,
     * and cfg_t is compared byte-wise (tests) */
    list[*n].width = sz.width;
    list[*n].height = sz.height;
    list[*n].crop = sz.crop;
    (*n)++;
    return 0;
}

/** limits.sizes: a YAML sequence of entries, or one string "290x290, 100x". */
static int set_sizes(cfg_t *c, const cfg_row_t *r, const node_t *v, set_err_t *e)
{
    cfg_size_t list[CFG_MAX_SIZES];
    uint32_t n = 0;

    memset(list, 0, sizeof(list));

    if (v->kind == NODE_MAPPING)
        return fail(e, "expected a list of sizes, got a mapping");
    if (v->kind == NODE_SEQUENCE) {
        for (size_t i = 0; i < v->nkids; i++) {
            const node_t *item = v->kids[i];
            e->line = item->line;
            if (item->kind != NODE_SCALAR)
                return fail(e, "entry %zu: expected WxH, got a %s", i + 1, kind_name(item->kind));
            if (add_size_entry(list, &n, item->text, item->len, e) != 0)
                return -1;
        }
    } else if (!is_null(v)) {
        const char *s = v->text, *end = v->text + v->len;
        /* blank = empty list; otherwise comma-separated, blanks around entries ignored */
        while (s < end && (*s == ' ' || *s == '\t'))
            s++;
        while (s < end) {
            const char *comma = memchr(s, ',', (size_t)(end - s));
            const char *stop = comma ? comma : end, *a = s, *b = stop;
            while (a < b && (*a == ' ' || *a == '\t'))
                a++;
            while (b > a && (b[-1] == ' ' || b[-1] == '\t'))
                b--;
            if (a == b)
                return fail(e, "empty entry in the list");
            if (add_size_entry(list, &n, a, (size_t)(b - a), e) != 0)
                return -1;
            if (comma == NULL)
                break;
            s = comma + 1;
            if (s == end)
                return fail(e, "empty entry in the list");
        }
    }
    memset(c->sizes, 0, sizeof(c->sizes));
    memcpy(c->sizes, list, n * sizeof(list[0]));
    c->nsizes = n;
    (void)r;
    return 0;
}

/* ---- presets: name -> "size:mode:format[:quality]" ------------------------------------- */

static const char *const preset_modes[] = {"fit", "cover", "smart", NULL};
static const char *const preset_formats[] = {"jpg",  "jpeg", "png", "webp",
                                             "avif", "jxl",  "gif", NULL};

/** Copies @p len bytes at @p s into @p buf (of @p n) as a string; -1 when too long. */
static int copy_part(char *buf, size_t n, const char *s, size_t len)
{
    if (len >= n)
        return -1;
    memcpy(buf, s, len);
    buf[len] = '\0';
    return 0;
}

static int find_name(const char *const *names, const char *s)
{
    for (int i = 0; names[i] != NULL; i++)
        if (strcasecmp(names[i], s) == 0)
            return i;
    return -1;
}

/** One preset from its parts (each NUL-terminated; quality may be NULL). */
static int make_preset(const char *name, const char *size, const char *mode, const char *format,
                       const char *quality, cfg_preset_t *out, set_err_t *e)
{
    char q[QUOTE_SIZE];
    cfg_preset_t p;
    memset(&p, 0, sizeof(p));
    size_t nlen = strlen(name);
    if (nlen == 0 || nlen > CFG_PRESET_NAME_MAX)
        return fail(e, "preset name %s: 1..%d characters", Q(q, name), CFG_PRESET_NAME_MAX);
    for (size_t i = 0; i < nlen; i++) {
        char ch = name[i];
        if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
              ch == '_' || ch == '-'))
            return fail(e, "preset name %s: use [A-Za-z0-9_-]", Q(q, name));
    }
    memcpy(p.name, name, nlen);
    cfg_size_t sz;
    if (size == NULL || parse_size_entry(size, strlen(size), &sz, e) != 0)
        return size == NULL ? fail(e, "preset %s: needs a size (WxH, Wx or xH)", name) : -1;
    if (sz.crop)
        return fail(e, "preset %s: write the crop as mode: cover, not %s", name, Q(q, size));
    int m = mode == NULL ? CFG_PRESET_FIT : find_name(preset_modes, mode);
    if (m < 0)
        return fail(e, "preset %s: bad mode %s (expected fit|cover|smart)", name, Q(q, mode));
    if (m != CFG_PRESET_FIT && (sz.width == 0 || sz.height == 0))
        return fail(e, "preset %s: mode %s needs both width and height", name, mode);
    int f = format == NULL ? -1 : find_name(preset_formats, format);
    if (f < 0)
        return fail(e, "preset %s: bad format %s (expected jpg|png|webp|avif|jxl|gif)", name,
                    format ? Q(q, format) : "(none)");
    uint64_t qv = 0;
    if (quality != NULL && (parse_uint(quality, &qv) != PARSE_OK || qv < 1 || qv > 100))
        return fail(e, "preset %s: quality %s is out of range 1..100", name, Q(q, quality));
    p.width = sz.width;
    p.height = sz.height;
    p.mode = (uint32_t)m;
    snprintf(p.format, sizeof(p.format), "%s", preset_formats[f]);
    p.quality = (uint32_t)qv;
    memcpy(out, &p, sizeof(p));
    return 0;
}

/** "size:mode:format[:quality]" (@p len bytes) as preset @p name. */
static int preset_from_spec(const char *name, const char *s, size_t len, cfg_preset_t *out,
                            set_err_t *e)
{
    char parts[4][24], q[QUOTE_SIZE];
    size_t np = 0;
    const char *end = s + len;
    while (np < 4) {
        const char *colon = memchr(s, ':', (size_t)(end - s)), *stop = colon ? colon : end;
        if (copy_part(parts[np], sizeof(parts[np]), s, (size_t)(stop - s)) != 0)
            return fail(e, "preset %s: part %zu is too long", name, np + 1);
        np++;
        if (colon == NULL)
            break;
        s = colon + 1;
        if (np == 4)
            return fail(e, "preset %s: expected size:mode:format[:quality], got %s", name,
                        quote(q, sizeof(q), s, (size_t)(end - s)));
    }
    if (np < 3)
        return fail(
            e, "preset %s: expected size:mode:format[:quality] (e.g. 290x290:cover:webp:75)", name);
    return make_preset(name, parts[0], parts[1], parts[2], np == 4 ? parts[3] : NULL, out, e);
}

/** A preset written as a mapping {size, mode, format, quality}. */
static int preset_from_mapping(const char *name, const node_t *v, cfg_preset_t *out, set_err_t *e)
{
    static const char *const fields[] = {"size", "mode", "format", "quality"};
    const char *val[4] = {NULL, NULL, NULL, NULL};
    char q[QUOTE_SIZE];
    for (size_t i = 0; i + 1 < v->nkids; i += 2) {
        const node_t *k = v->kids[i], *x = v->kids[i + 1];
        size_t f = 0;
        while (f < 4 && (k->kind != NODE_SCALAR || strcmp(k->text, fields[f]) != 0))
            f++;
        e->line = k->line;
        if (f == 4)
            return fail(e, "preset %s: unknown field %s (size, mode, format, quality)", name,
                        k->kind == NODE_SCALAR ? Q(q, k->text) : "?");
        if (val[f] != NULL)
            return fail(e, "preset %s: %s given twice", name, fields[f]);
        if (need_scalar(x, e) != 0)
            return -1;
        val[f] = x->text;
    }
    return make_preset(name, val[0], val[1], val[2], val[3], out, e);
}

static int add_preset(cfg_preset_t *list, uint32_t *n, const cfg_preset_t *p, set_err_t *e)
{
    for (uint32_t i = 0; i < *n; i++)
        if (strcmp(list[i].name, p->name) == 0)
            return fail(e, "preset %s is defined twice", p->name);
    if (*n == CFG_MAX_PRESETS)
        return fail(e, "more than %d presets", CFG_MAX_PRESETS);
    memcpy(&list[(*n)++], p, sizeof(*p));
    return 0;
}

/** presets: a mapping of name -> mapping or "size:mode:format[:quality]"; or (environment)
 * one string "thumb=290x290:cover:webp:75, hero=1200x:fit:jpg". */
static int set_presets(cfg_t *c, const cfg_row_t *r, const node_t *v, set_err_t *e)
{
    cfg_preset_t list[CFG_MAX_PRESETS], p;
    uint32_t n = 0;
    char name[CFG_PRESET_NAME_MAX + 2];

    memset(list, 0, sizeof(list));
    if (v->kind == NODE_SEQUENCE)
        return fail(e, "expected a mapping of name: size:mode:format[:quality], got a sequence");
    if (v->kind == NODE_MAPPING) {
        for (size_t i = 0; i + 1 < v->nkids; i += 2) {
            const node_t *k = v->kids[i], *x = v->kids[i + 1];
            e->line = k->line;
            if (k->kind != NODE_SCALAR || copy_part(name, sizeof(name), k->text, k->len) != 0)
                return fail(e, "a preset name is 1..%d characters of [A-Za-z0-9_-]",
                            CFG_PRESET_NAME_MAX);
            int rc =
                x->kind == NODE_MAPPING ? preset_from_mapping(name, x, &p, e)
                : x->kind == NODE_SCALAR
                    ? (need_scalar(x, e) != 0 ? -1 : preset_from_spec(name, x->text, x->len, &p, e))
                    : fail(e, "preset %s: expected a mapping or a string", name);
            if (rc != 0 || add_preset(list, &n, &p, e) != 0)
                return -1;
        }
    } else if (!is_null(v)) {
        if (strlen(v->text) != v->len)
            return fail(e, "value contains a NUL byte");
        const char *s = v->text, *end = v->text + v->len;
        while (s < end) {
            const char *comma = memchr(s, ',', (size_t)(end - s)), *stop = comma ? comma : end;
            while (s < stop && (*s == ' ' || *s == '\t'))
                s++;
            const char *b = stop;
            while (b > s && (b[-1] == ' ' || b[-1] == '\t'))
                b--;
            const char *eq = b > s ? memchr(s, '=', (size_t)(b - s)) : NULL;
            if (s == b && comma == NULL)
                break; /* blank, or a trailing comma */
            if (eq == NULL || copy_part(name, sizeof(name), s, (size_t)(eq - s)) != 0)
                return fail(e, "expected name=size:mode:format[:quality], comma-separated");
            if (preset_from_spec(name, eq + 1, (size_t)(b - eq - 1), &p, e) != 0 ||
                add_preset(list, &n, &p, e) != 0)
                return -1;
            if (comma == NULL)
                break;
            s = comma + 1;
        }
    }
    memset(c->presets, 0, sizeof(c->presets));
    memcpy(c->presets, list, n * sizeof(list[0]));
    c->npresets = n;
    (void)r;
    return 0;
}

static int (*const setters[])(cfg_t *, const cfg_row_t *, const node_t *, set_err_t *) = {
    [ROW_UINT] = set_number, [ROW_SIZE] = set_number,     [ROW_DURATION] = set_number,
    [ROW_MILLI] = set_number,
    [ROW_BOOL] = set_bool,   [ROW_STR] = set_str,         [ROW_ENUM] = set_enum,
    [ROW_SIZES] = set_sizes, [ROW_PRESETS] = set_presets,
};

/* ---- validators: run once on the final value (after the environment) -------------------- */

/** "host:port" or "[v6]:port", port 1..65535, no blanks. */
static int check_hostport(const void *field, set_err_t *e)
{
    const char *s = field, *colon = strrchr(s, ':');
    char q[QUOTE_SIZE];
    unsigned long port = 0;
    size_t hostlen;

    if (colon == NULL || colon == s || colon[1] == '\0' || strlen(colon + 1) > 5 ||
        strpbrk(s, " \t") != NULL)
        goto bad;
    for (const char *p = colon + 1; *p != '\0'; p++) {
        if (*p < '0' || *p > '9')
            goto bad;
        port = port * 10 + (unsigned long)(*p - '0');
    }
    if (port == 0 || port > 65535)
        return fail(e, "port of %s is out of range 1..65535", Q(q, s));
    hostlen = (size_t)(colon - s);
    if (s[0] == '[') {
        if (hostlen < 3 || s[hostlen - 1] != ']' || memchr(s + 1, '[', hostlen - 1) ||
            memchr(s + 1, ']', hostlen - 2))
            goto bad;
    } else if (memchr(s, ':', hostlen) || memchr(s, '[', hostlen) || memchr(s, ']', hostlen)) {
        goto bad;
    }
    return 0;
bad:
    return fail(e, "%s is not host:port (e.g. 127.0.0.1:8080, 0.0.0.0:8080, [::1]:8080)", Q(q, s));
}

static int check_nonempty(const void *field, set_err_t *e)
{
    return *(const char *)field != '\0' ? 0 : fail(e, "must not be empty");
}

#define TOKEN_PLACEHOLDER "<set>"

static int check_token(const void *field, set_err_t *e)
{
    const char *s = field;

    /* cfg_print writes this instead of the secret; a printed config fed back must not
     * silently run with "<set>" as the token. */
    if (strcmp(s, TOKEN_PLACEHOLDER) == 0)
        return fail(e, "\"" TOKEN_PLACEHOLDER "\" is the placeholder --check-config prints; put "
                       "the real token here or in THUMBGATE_AUTH_WRITE_TOKEN");
    for (; *s != '\0'; s++)
        if (*s <= ' ' || *s == 0x7f)
            return fail(e, "must be printable ASCII without spaces");
    return 0;
}

static int check_url_key(const void *field, set_err_t *e)
{
    const char *s = field;
    if (strcmp(s, TOKEN_PLACEHOLDER) == 0)
        return fail(e, "\"" TOKEN_PLACEHOLDER "\" is the placeholder --check-config prints; put "
                       "the real key here, in THUMBGATE_AUTH_URL_KEY or in auth.url_key_file");
    if (*s != '\0' && strlen(s) < CFG_URL_KEY_MIN)
        return fail(e,
                    "shorter than %d characters: a short key can be guessed (e.g. `openssl "
                    "rand -hex 32`)",
                    CFG_URL_KEY_MIN);
    for (; *s != '\0'; s++)
        if (*s <= ' ' || *s == 0x7f)
            return fail(e, "must be printable ASCII without spaces");
    return 0;
}

static origin_t origin_of(const loader_t *ld, const char *key);

/** auth.url_key_file: the key read from a file (one line; a final newline is dropped), so
 * the secret stays out of the config and the environment. Sets c->url_secret. */
static void load_url_key(loader_t *ld, cfg_t *c)
{
    const char *key = "auth.url_key_file";
    char buf[sizeof(c->url_secret) + 2];
    set_err_t e = {.line = 0};
    if (c->url_key_file[0] == '\0') {
        memcpy(c->url_secret, c->url_key, sizeof(c->url_secret));
        return;
    }
    if (c->url_key[0] != '\0') {
        report(ld, origin_of(ld, key), key, "auth.url_key is set too: set one of them");
        return;
    }
    FILE *f = fopen(c->url_key_file, "rb");
    if (f == NULL) {
        report(ld, origin_of(ld, key), key, "cannot open %s: %s", c->url_key_file, strerror(errno));
        return;
    }
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    bool more = fgetc(f) != EOF;
    fclose(f);
    buf[n] = '\0';
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        buf[--n] = '\0';
    if (more || n >= sizeof(c->url_secret)) {
        report(ld, origin_of(ld, key), key, "%s holds more than %zu bytes", c->url_key_file,
               sizeof(c->url_secret) - 1);
        return;
    }
    if (strlen(buf) != n ||
        (n == 0 ? fail(&e, "the file is empty") : check_url_key(buf, &e)) != 0) {
        report(ld, origin_of(ld, key), key, "%s: %s", c->url_key_file,
               n == 0 || strlen(buf) == n ? e.msg : "contains a NUL byte");
        return;
    }
    memcpy(c->url_secret, buf, n + 1);
}

/** 0 (off) or at least 1 s: a profile takes milliseconds to write (README, "Heap profiles"). */
static int check_ring_interval(const void *field, set_err_t *e)
{
    uint64_t ms = *(const uint64_t *)field;
    return ms == 0 || ms >= SEC ? 0 : fail(e, "must be 0 (off) or at least 1s");
}

/* ---- YAML text -> node tree ----------------------------------------------------------- */

static void node_free(node_t *n)
{
    if (n == NULL)
        return;
    for (size_t i = 0; i < n->nkids; i++)
        node_free(n->kids[i]);
    free(n->kids);
    free(n->text);
    free(n);
}

static void node_push(node_t *parent, node_t *kid)
{
    if (parent->nkids == parent->cap) {
        parent->cap = parent->cap ? parent->cap * 2 : 8;
        parent->kids = xrealloc(parent->kids, parent->cap * sizeof(parent->kids[0]));
    }
    parent->kids[parent->nkids++] = kid;
}

/** Next event, or a reported syntax error. Returns 0 / -1. */
static int next_event(loader_t *ld, yaml_parser_t *p, yaml_event_t *ev)
{
    if (yaml_parser_parse(p, ev))
        return 0;
    if (p->error == YAML_MEMORY_ERROR) {
        report(ld, at_line(0), NULL, "out of memory while parsing YAML");
    } else if (p->context != NULL) {
        report(ld, at_line((unsigned)p->problem_mark.line + 1), NULL,
               "YAML syntax error: %s (%s started at line %u)",
               p->problem ? p->problem : "unknown problem", p->context,
               (unsigned)p->context_mark.line + 1);
    } else {
        report(ld, at_line((unsigned)p->problem_mark.line + 1), NULL, "YAML syntax error: %s",
               p->problem ? p->problem : "unknown problem");
    }
    return -1;
}

/** Builds the node that starts with @p ev (takes ownership of the event). NULL after a
 * reported error. */
static node_t *build(loader_t *ld, yaml_parser_t *p, yaml_event_t *ev, unsigned depth)
{
    node_t *n = xcalloc(1, sizeof(*n));
    yaml_event_type_t end;

    n->line = (unsigned)ev->start_mark.line + 1;
    n->column = (unsigned)ev->start_mark.column + 1;
    switch (ev->type) {
    case YAML_SCALAR_EVENT:
        n->kind = NODE_SCALAR;
        n->plain = ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
        n->len = ev->data.scalar.length;
        n->text = xcalloc(1, n->len + 1);
        memcpy(n->text, ev->data.scalar.value, n->len);
        yaml_event_delete(ev);
        return n;
    case YAML_SEQUENCE_START_EVENT:
        n->kind = NODE_SEQUENCE;
        end = YAML_SEQUENCE_END_EVENT;
        break;
    case YAML_MAPPING_START_EVENT:
        n->kind = NODE_MAPPING;
        end = YAML_MAPPING_END_EVENT;
        break;
    case YAML_ALIAS_EVENT:
        report(ld, at_line(n->line), NULL, "YAML aliases (*%s) are not supported",
               (const char *)ev->data.alias.anchor);
        goto out_free;
    default:
        report(ld, at_line(n->line), NULL, "unexpected YAML event");
        goto out_free;
    }
    yaml_event_delete(ev);
    if (depth >= MAX_DEPTH) {
        report(ld, at_line(n->line), NULL, "YAML nested too deeply");
        node_free(n);
        return NULL;
    }
    for (;;) {
        yaml_event_t kid_ev;
        node_t *kid;
        if (next_event(ld, p, &kid_ev) != 0)
            break;
        if (kid_ev.type == end) {
            yaml_event_delete(&kid_ev);
            return n;
        }
        if ((kid = build(ld, p, &kid_ev, depth + 1)) == NULL)
            break;
        node_push(n, kid);
    }
    node_free(n);
    return NULL;
out_free:
    yaml_event_delete(ev);
    node_free(n);
    return NULL;
}

/** Parses one YAML document into *root (NULL for an empty stream). 0 / -1 (reported). */
static int parse_yaml(loader_t *ld, const char *text, size_t len, node_t **root)
{
    yaml_parser_t p;
    yaml_event_t ev;
    int rc = -1;

    *root = NULL;
    if (!yaml_parser_initialize(&p)) {
        report(ld, at_line(0), NULL, "out of memory");
        return -1;
    }
    yaml_parser_set_input_string(&p, (const unsigned char *)text, len);
    if (next_event(ld, &p, &ev) != 0) /* STREAM-START */
        goto out_parser;
    yaml_event_delete(&ev);
    if (next_event(ld, &p, &ev) != 0)
        goto out_parser;
    if (ev.type == YAML_STREAM_END_EVENT) { /* nothing but comments: all defaults */
        yaml_event_delete(&ev);
        rc = 0;
        goto out_parser;
    }
    yaml_event_delete(&ev); /* DOCUMENT-START */
    if (next_event(ld, &p, &ev) != 0)
        goto out_parser;
    if ((*root = build(ld, &p, &ev, 0)) == NULL)
        goto out_parser;
    if (next_event(ld, &p, &ev) != 0) /* DOCUMENT-END */
        goto out_root;
    yaml_event_delete(&ev);
    if (next_event(ld, &p, &ev) != 0)
        goto out_root;
    if (ev.type != YAML_STREAM_END_EVENT) {
        report(ld, at_line((unsigned)ev.start_mark.line + 1), NULL,
               "more than one YAML document (one config per file)");
        yaml_event_delete(&ev);
        goto out_root;
    }
    yaml_event_delete(&ev);
    rc = 0;
    goto out_parser;
out_root:
    node_free(*root);
    *root = NULL;
out_parser:
    yaml_parser_delete(&p);
    return rc;
}

/* ---- node tree -> cfg_t ------------------------------------------------------------- */

static const cfg_row_t *find_row(const char *path)
{
    for (size_t i = 0; i < NROWS; i++)
        if (strcmp(rows[i].key, path) == 0)
            return &rows[i];
    return NULL;
}

/** True when @p path is a section: a proper prefix of some key, ending at a dot. */
static bool is_section(const char *path)
{
    size_t n = strlen(path);
    for (size_t i = 0; i < NROWS; i++)
        if (strncmp(rows[i].key, path, n) == 0 && rows[i].key[n] == '.')
            return true;
    return false;
}

/** A row whose last component is the last component of @p path: `budget` misplaced
 * under `limits:` suggests memory.budget. */
static const cfg_row_t *find_leaf(const char *path)
{
    const char *leaf = strrchr(path, '.');
    leaf = leaf ? leaf + 1 : path;
    for (size_t i = 0; i < NROWS; i++) {
        const char *l = strrchr(rows[i].key, '.');
        if (strcmp(l ? l + 1 : rows[i].key, leaf) == 0)
            return &rows[i];
    }
    return NULL;
}

/** A key from the file as shown in messages: as is when it is a plain word, quoted and
 * escaped otherwise (it is user text and must not break the one-line format). */
static const char *show_key(char *buf, size_t n, const char *key)
{
    if (*key == '\0')
        return quote(buf, n, key, 0);
    for (const char *p = key; *p != '\0'; p++)
        if (*p <= ' ' || *p >= 0x7f || *p == '"' || *p == '\\' || *p == ':')
            return quote(buf, n, key, strlen(key));
    snprintf(buf, n, "%s", key);
    return buf;
}

static void apply_value(loader_t *ld, cfg_t *c, const cfg_row_t *r, const node_t *k,
                        const node_t *v)
{
    origin_t *o = &ld->origin[r - rows];
    /* an empty value's mark is wherever the next token starts: blame the key's line */
    set_err_t e = {.line = is_null(v) ? k->line : v->line};

    if (o->line != 0) {
        report(ld, at_line(k->line), r->key, "duplicate key (first set at line %u)", o->line);
        return;
    }
    o->line = k->line;
    if (setters[r->type](c, r, v, &e) != 0)
        report(ld, at_line(e.line), r->key, "%s", e.msg);
}

static void apply_mapping(loader_t *ld, cfg_t *c, const node_t *map, const char *prefix);

static void apply_section(loader_t *ld, cfg_t *c, const char *path, const node_t *k,
                          const node_t *v)
{
    size_t i;

    for (i = 0; i < ld->nsections; i++) {
        if (strcmp(ld->sections[i].path, path) == 0) {
            report(ld, at_line(k->line), path, "duplicate key (first at line %u)",
                   ld->sections[i].line);
            return;
        }
    }
    if (i < sizeof(ld->sections) / sizeof(ld->sections[0])) {
        snprintf(ld->sections[i].path, sizeof(ld->sections[i].path), "%s", path);
        ld->sections[i].line = k->line;
        ld->nsections++;
    }
    if (v->kind == NODE_MAPPING)
        apply_mapping(ld, c, v, path);
    else if (!is_null(v)) /* `memory:` with every key commented out is fine */
        report(ld, at_line(v->line), path, "expected a mapping of keys, got a %s",
               kind_name(v->kind));
}

static void apply_mapping(loader_t *ld, cfg_t *c, const node_t *map, const char *prefix)
{
    for (size_t i = 0; i + 1 < map->nkids; i += 2) {
        const node_t *k = map->kids[i], *v = map->kids[i + 1];
        char path[MAX_KEY], shown[QUOTE_SIZE];
        const cfg_row_t *r;
        int n;

        if (k->kind != NODE_SCALAR) {
            report(ld, at_line(k->line), prefix[0] ? prefix : NULL,
                   "a key must be a plain word, not a %s", kind_name(k->kind));
            continue;
        }
        n = snprintf(path, sizeof(path), "%s%s%s", prefix, prefix[0] ? "." : "", k->text);
        if (n < 0 || (size_t)n >= sizeof(path) || strlen(k->text) != k->len) {
            /* too long for any key, or a NUL inside: show the raw text, escaped */
            report(ld, at_line(k->line), quote(shown, sizeof(shown), k->text, k->len),
                   "unknown key");
            continue;
        }
        if ((r = find_row(path)) != NULL) {
            apply_value(ld, c, r, k, v);
        } else if (is_section(path)) {
            apply_section(ld, c, path, k, v);
        } else if ((r = find_leaf(path)) != NULL) {
            report(ld, at_line(k->line), show_key(shown, sizeof(shown), path),
                   "unknown key (did you mean %s?)", r->key);
        } else {
            report(ld, at_line(k->line), show_key(shown, sizeof(shown), path), "unknown key");
        }
    }
}

static void apply_defaults(loader_t *ld, cfg_t *c)
{
    for (size_t i = 0; i < NROWS; i++) {
        const cfg_row_t *r = &rows[i];
        node_t v = {.kind = NODE_SCALAR, .plain = true, .text = (char *)r->dflt,
                    .len = strlen(r->dflt)};
        set_err_t e = {.line = 0};
        if (setters[r->type](c, r, &v, &e) != 0) /* a bug in the table; tests catch it */
            report(ld, at_line(0), r->key, "bad built-in default: %s", e.msg);
    }
}

/** Does env name @p name (@p n bytes, prefix included) belong to key @p key? */
static bool env_matches(const char *key, const char *name, size_t n)
{
    size_t plen = sizeof(ENV_PREFIX) - 1;
    if (n != plen + strlen(key) || strncmp(name, ENV_PREFIX, plen) != 0)
        return false;
    for (size_t i = 0; key[i] != '\0'; i++) {
        char want = key[i] == '.' ? '_' : (key[i] >= 'a' && key[i] <= 'z') ? (char)(key[i] - 32)
                                                                            : key[i];
        if (name[plen + i] != want)
            return false;
    }
    return true;
}

static void apply_env(loader_t *ld, cfg_t *c, char *const *envp)
{
    for (; envp != NULL && *envp != NULL; envp++) {
        const char *entry = *envp, *eq = strchr(entry, '=');
        const cfg_row_t *r = NULL;
        origin_t at;
        bool ignored = false;

        if (eq == NULL || strncmp(entry, ENV_PREFIX, sizeof(ENV_PREFIX) - 1) != 0)
            continue;
        at = (origin_t){.env = entry, .envlen = (size_t)(eq - entry)};
        for (size_t i = 0; env_ignored[i] != NULL; i++)
            if (strlen(env_ignored[i]) == at.envlen &&
                strncmp(entry, env_ignored[i], at.envlen) == 0)
                ignored = true;
        if (ignored)
            continue;
        for (size_t i = 0; i < NROWS && r == NULL; i++)
            if (env_matches(rows[i].key, entry, at.envlen))
                r = &rows[i];
        if (r == NULL) {
            report(ld, at, NULL, "unknown variable: no config key is named like it "
                                 "(e.g. THUMBGATE_MEMORY_BUDGET sets memory.budget)");
            continue;
        }
        /* quoted-style: an empty value is "" (clears a string), never YAML null */
        node_t v = {.kind = NODE_SCALAR, .plain = false, .text = (char *)(eq + 1),
                    .len = strlen(eq + 1)};
        set_err_t e = {.line = 0};
        if (setters[r->type](c, r, &v, &e) != 0)
            report(ld, at, r->key, "%s", e.msg);
        else
            ld->origin[r - rows] = at;
    }
}

static origin_t origin_of(const loader_t *ld, const char *key)
{
    const cfg_row_t *r = find_row(key);
    assert(r != NULL);
    return ld->origin[r - rows];
}

static bool origin_is_default(origin_t o)
{
    return o.line == 0 && o.env == NULL;
}

/** Port number of a validated "host:port", and whether the host is a wildcard. */
static unsigned long port_of(const char *hostport, bool *wildcard)
{
    const char *colon = strrchr(hostport, ':');
    size_t hostlen = colon ? (size_t)(colon - hostport) : 0;
    *wildcard = (hostlen == 7 && strncmp(hostport, "0.0.0.0", 7) == 0) ||
                (hostlen == 4 && strncmp(hostport, "[::]", 4) == 0);
    return colon ? strtoul(colon + 1, NULL, 10) : 0;
}

static void validate(loader_t *ld, const cfg_t *c)
{
    unsigned before = ld->nerrors;

    for (size_t i = 0; i < NROWS; i++) {
        set_err_t e = {.line = 0};
        if (rows[i].validate != NULL && rows[i].validate(cfield_of(c, &rows[i]), &e) != 0)
            report(ld, ld->origin[i], rows[i].key, "%s", e.msg);
    }
    if (ld->nerrors != before)
        return; /* cross checks on values already known to be bad would only add noise */

    /* Two listeners on one address cannot both bind (a wildcard covers every host). */
    bool wild_a, wild_b;
    unsigned long pa = port_of(c->listen, &wild_a), pb = port_of(c->admin_listen, &wild_b);
    if (pa == pb && (wild_a || wild_b || strcmp(c->listen, c->admin_listen) == 0)) {
        origin_t o = origin_of(ld, "admin_listen");
        bool blame_admin = !origin_is_default(o);
        report(ld, blame_admin ? o : origin_of(ld, "listen"),
               blame_admin ? "admin_listen" : "listen",
               "%s and %s would share a port: listen and admin_listen must differ", c->listen,
               c->admin_listen);
    }

    /* The current run's ring alone must fit the flight recorder's disk bound; older rings
     * are deleted at start until the total fits (server/flight.c). */
    uint64_t ring = ((uint64_t)c->flight_slots + 1) * CFG_FLIGHT_SLOT_BYTES;
    if (ring > c->flight_max_disk) {
        origin_t o = origin_of(ld, "flight.max_disk");
        bool blame_disk = !origin_is_default(o);
        report(ld, blame_disk ? o : origin_of(ld, "flight.slots"),
               blame_disk ? "flight.max_disk" : "flight.slots",
               "a ring of %" PRIu32 " slots takes %" PRIu64 " bytes, more than flight.max_disk "
               "(%" PRIu64 ")",
               c->flight_slots, ring, c->flight_max_disk);
    }

    /* The s3 backend cannot start without a place to talk to. */
    if (c->storage_backend == CFG_BACKEND_S3) {
        if (c->s3_endpoint[0] == '\0' || (strncmp(c->s3_endpoint, "http://", 7) != 0 &&
                                          strncmp(c->s3_endpoint, "https://", 8) != 0))
            report(ld, origin_of(ld, "storage.s3.endpoint"), "storage.s3.endpoint",
                   "storage.backend s3 needs an endpoint http://host[:port] or https://...");
        if (c->s3_bucket[0] == '\0')
            report(ld, origin_of(ld, "storage.s3.bucket"), "storage.s3.bucket",
                   "storage.backend s3 needs a bucket");
    }

    /* An allowed size that could never be served is a typo. */
    for (uint32_t i = 0; i < c->nsizes; i++) {
        const cfg_size_t *s = &c->sizes[i];
        if (s->width > c->max_output_width || s->height > c->max_output_height) {
            report(ld, origin_of(ld, "limits.sizes"), "limits.sizes",
                   "entry %" PRIu32 "x%" PRIu32 "%s is larger than limits.max_output_width x "
                   "max_output_height (%" PRIu32 "x%" PRIu32 ")",
                   s->width, s->height, s->crop ? "c" : "", c->max_output_width,
                   c->max_output_height);
            break;
        }
    }
    for (uint32_t i = 0; i < c->npresets; i++) {
        const cfg_preset_t *p = &c->presets[i];
        if (p->width > c->max_output_width || p->height > c->max_output_height) {
            report(ld, origin_of(ld, "presets"), "presets",
                   "preset %s (%" PRIu32 "x%" PRIu32 ") is larger than limits.max_output_width x "
                   "max_output_height (%" PRIu32 "x%" PRIu32 ")",
                   p->name, p->width, p->height, c->max_output_width, c->max_output_height);
            break;
        }
    }
}

/* ---- public API ----------------------------------------------------------------------- */

const cfg_t *cfg__load_buffer(const char *yaml, size_t len, const char *name,
                              char *const *envp, FILE *errs, unsigned *file_lines)
{
    loader_t *ld = xcalloc(1, sizeof(*ld));
    cfg_t *c = xcalloc(1, sizeof(*c));
    node_t *root = NULL;

    ld->name = name != NULL ? name : "<string>";
    ld->errs = errs;
    snprintf(c->source, sizeof(c->source), "%s", ld->name);
    apply_defaults(ld, c);
    if (parse_yaml(ld, yaml, len, &root) == 0 && root != NULL) {
        if (root->kind == NODE_MAPPING)
            apply_mapping(ld, c, root, "");
        else if (!is_null(root))
            report(ld, at_line(root->line), NULL,
                   "the top level must be a mapping of keys (key: value), got a %s",
                   kind_name(root->kind));
    }
    node_free(root);
    apply_env(ld, c, envp);
    validate(ld, c);
    if (ld->nerrors == 0)
        load_url_key(ld, c);
    if (file_lines != NULL)
        for (size_t i = 0; i < NROWS; i++)
            file_lines[i] = ld->origin[i].env == NULL ? ld->origin[i].line : 0;
    if (ld->nerrors != 0) {
        free(c);
        c = NULL;
    }
    free(ld);
    return c;
}

const cfg_t *cfg_load_string(const char *yaml, const char *name, char *const *envp, FILE *errs)
{
    assert(yaml != NULL);
    return cfg__load_buffer(yaml, strlen(yaml), name, envp, errs, NULL);
}

const cfg_t *cfg_load(const char *path, char *const *envp, FILE *errs)
{
    FILE *f;
    char *buf;
    size_t len;
    const cfg_t *c = NULL;

    if (path == NULL)
        return cfg__load_buffer(cfg_default_yaml, strlen(cfg_default_yaml), "<embedded>", envp,
                                errs, NULL);
    if ((f = fopen(path, "rb")) == NULL) {
        if (errs != NULL)
            fprintf(errs, "%s: cannot open: %s\n", path, strerror(errno));
        return NULL;
    }
    buf = xcalloc(1, MAX_FILE_BYTES + 1);
    len = fread(buf, 1, MAX_FILE_BYTES + 1, f);
    if (ferror(f)) {
        if (errs != NULL)
            fprintf(errs, "%s: cannot read: %s\n", path, strerror(errno));
    } else if (len > MAX_FILE_BYTES) {
        if (errs != NULL)
            fprintf(errs, "%s: larger than %u bytes: not a config file\n", path, MAX_FILE_BYTES);
    } else {
        c = cfg__load_buffer(buf, len, path, envp, errs, NULL);
    }
    free(buf);
    fclose(f);
    return c;
}

void cfg_free(const cfg_t *cfg)
{
    free((void *)cfg);
}

static void print_value(FILE *out, const cfg_t *c, const cfg_row_t *r)
{
    char buf[64];
    uint64_t v;

    switch (r->type) {
    case ROW_UINT:
    case ROW_SIZE:
    case ROW_DURATION:
    case ROW_MILLI:
        v = get_uint(c, r);
        fputs((r->flags & ROW_AUTO) && v == 0 ? "auto" : fmt_number(buf, sizeof(buf), r->type, v),
              out);
        break;
    case ROW_BOOL:
        fputs(get_uint(c, r) ? "true" : "false", out);
        break;
    case ROW_ENUM:
        v = get_uint(c, r);
        fputs(v <= r->max ? r->names[v] : "?", out);
        break;
    case ROW_STR: {
        const char *s = cfield_of(c, r);
        if (r->flags & ROW_SECRET)
            s = *s != '\0' ? TOKEN_PLACEHOLDER : "";
        /* set_str refused control characters: escaping " and \ is all YAML needs */
        fputc('"', out);
        for (; *s != '\0'; s++) {
            if (*s == '"' || *s == '\\')
                fputc('\\', out);
            fputc(*s, out);
        }
        fputc('"', out);
        break;
    }
    case ROW_SIZES:
        fputc('[', out);
        for (uint32_t i = 0; i < c->nsizes; i++) {
            const cfg_size_t *s = &c->sizes[i];
            fputs(i ? ", " : "", out);
            if (s->width)
                fprintf(out, "%" PRIu32, s->width);
            fputc('x', out);
            if (s->height)
                fprintf(out, "%" PRIu32, s->height);
            if (s->crop)
                fputc('c', out);
        }
        fputc(']', out);
        break;
    case ROW_PRESETS:
        fputc('{', out);
        for (uint32_t i = 0; i < c->npresets; i++) {
            const cfg_preset_t *p = &c->presets[i];
            fprintf(out, "%s%s: \"", i ? ", " : "", p->name);
            if (p->width)
                fprintf(out, "%" PRIu32, p->width);
            fputc('x', out);
            if (p->height)
                fprintf(out, "%" PRIu32, p->height);
            fprintf(out, ":%s:%s", preset_modes[p->mode < 3 ? p->mode : 0], p->format);
            if (p->quality)
                fprintf(out, ":%" PRIu32, p->quality);
            fputc('"', out);
        }
        fputc('}', out);
        break;
    }
}

void cfg_print(const cfg_t *cfg, FILE *out)
{
    char src[QUOTE_SIZE * 2];
    const char *prev = "";

    fprintf(out, "# thumbgate effective config, from %s\n",
            quote(src, sizeof(src), cfg->source, strlen(cfg->source)));
    for (size_t i = 0; i < NROWS; i++) {
        const cfg_row_t *r = &rows[i];
        /* sections this key opens that the previous key did not (keys may nest: a.b.c) */
        size_t same = 0; /* length of the section prefix shared with the previous key */
        for (size_t k = 0; r->key[k] != '\0' && r->key[k] == prev[k]; k++)
            if (r->key[k] == '.')
                same = k + 1;
        unsigned depth = 0;
        const char *leaf = r->key;
        for (const char *d = r->key; (d = strchr(d, '.')) != NULL; d++) {
            if ((size_t)(d - r->key) >= same)
                fprintf(out, "%*s%.*s:\n", (int)(2 * depth), "", (int)(d - leaf), leaf);
            depth++;
            leaf = d + 1;
        }
        fprintf(out, "%*s%s: ", (int)(2 * depth), "", leaf);
        print_value(out, cfg, r);
        fputc('\n', out);
        prev = r->key;
    }
}

size_t cfg__row_count(void)
{
    return NROWS;
}

const char *cfg__row_key(size_t i)
{
    return i < NROWS ? rows[i].key : NULL;
}

int cfg__row_env(size_t i, char *buf, size_t n)
{
    size_t plen = sizeof(ENV_PREFIX) - 1, klen;
    if (i >= NROWS || n < plen + (klen = strlen(rows[i].key)) + 1)
        return -1;
    memcpy(buf, ENV_PREFIX, plen);
    for (size_t j = 0; j <= klen; j++) {
        char ch = rows[i].key[j];
        buf[plen + j] = ch == '.' ? '_' : (ch >= 'a' && ch <= 'z') ? (char)(ch - 32) : ch;
    }
    return 0;
}
