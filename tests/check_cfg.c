/* Unit tests of config/: unit parsing, every row type's good and bad values, error
 * messages with their "file:line: key:" prefixes, environment overrides, the embedded
 * default file against the table defaults, and the cfg_print -> reload round trip. */
#include <check.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config/cfg.h"
#include "config/cfg_internal.h"

Suite *cfg_suite(void);

#define KIB (UINT64_C(1) << 10)
#define MIB (UINT64_C(1) << 20)
#define GIB (UINT64_C(1) << 30)
#define TIB (UINT64_C(1) << 40)

/* ---- helpers ------------------------------------------------------------------------ */

/** Loads @p yaml as "t.yaml" with @p env; the error text goes to *errs (caller frees). */
static const cfg_t *load_env(const char *yaml, char *const *env, char **errs)
{
    size_t len = 0;
    FILE *f = open_memstream(errs, &len);
    ck_assert_ptr_nonnull(f);
    const cfg_t *c = cfg_load_string(yaml, "t.yaml", env, f);
    fclose(f);
    return c;
}

/** Loads @p yaml, which must be valid; the caller frees with cfg_free. */
static const cfg_t *ok_env(const char *yaml, char *const *env)
{
    char *errs = NULL;
    const cfg_t *c = load_env(yaml, env, &errs);
    ck_assert_msg(c != NULL, "unexpected errors for:\n%s\n---\n%s", yaml, errs);
    ck_assert_str_eq(errs, "");
    free(errs);
    return c;
}

static const cfg_t *ok(const char *yaml)
{
    return ok_env(yaml, NULL);
}

/** @p yaml must fail, and the error output must equal @p want exactly. */
static void fails_exactly_env(const char *yaml, char *const *env, const char *want)
{
    char *errs = NULL;
    const cfg_t *c = load_env(yaml, env, &errs);
    ck_assert_msg(c == NULL, "accepted:\n%s", yaml);
    ck_assert_msg(strcmp(errs, want) == 0, "for:\n%s\nwant:\n%sgot:\n%s", yaml, want, errs);
    free(errs);
}

static void fails_exactly(const char *yaml, const char *want)
{
    fails_exactly_env(yaml, NULL, want);
}

/** @p yaml must fail with @p want somewhere in the error output. */
static void fails_with_env(const char *yaml, char *const *env, const char *want)
{
    char *errs = NULL;
    const cfg_t *c = load_env(yaml, env, &errs);
    ck_assert_msg(c == NULL, "accepted:\n%s", yaml);
    ck_assert_msg(strstr(errs, want) != NULL, "for:\n%s\nwant: %s\ngot:\n%s", yaml, want, errs);
    free(errs);
}

static void fails_with(const char *yaml, const char *want)
{
    fails_with_env(yaml, NULL, want);
}

static unsigned count_lines(const char *s)
{
    unsigned n = 0;
    for (; *s != '\0'; s++)
        n += *s == '\n';
    return n;
}

/** The config with its source name cleared, so that two loads compare with memcmp. */
static cfg_t comparable(const cfg_t *c)
{
    cfg_t copy = *c;
    memset(copy.source, 0, sizeof(copy.source));
    return copy;
}

static char *print_to_string(const cfg_t *c)
{
    char *out = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&out, &len);
    ck_assert_ptr_nonnull(f);
    cfg_print(c, f);
    fclose(f);
    return out;
}

/** Byte-equal configs (cfg_t comes from calloc and setters clear whole fields, so padding
 * and string tails are zero in both); on a mismatch both are printed. */
static void assert_same_config(const cfg_t *a, const cfg_t *b)
{
    cfg_t x = comparable(a), y = comparable(b);
    if (memcmp(&x, &y, sizeof(x)) != 0) {
        char *ta = print_to_string(a), *tb = print_to_string(b);
        ck_abort_msg("configs differ:\n%s---\n%s", ta, tb);
    }
}

/* ---- cfg_parse_size / cfg_parse_duration ------------------------------------------------ */

START_TEST(test_cfg_parse_size_accepts_units)
{
    static const struct {
        const char *s;
        uint64_t want;
    } cases[] = {
        {"0", 0},
        {"1024", 1024},
        {"12B", 12},
        {"10k", 10 * KIB},
        {"10K", 10 * KIB},
        {"1KiB", KIB},
        {"1kb", 1000},
        {"1KB", 1000},
        {"512MiB", 512 * MIB},
        {"512M", 512 * MIB},
        {"3MB", 3000000},
        {"2GB", 2000000000},
        {"2GiB", 2 * GIB},
        {"2g", 2 * GIB},
        {"1TiB", TIB},
        {"1TB", UINT64_C(1000000000000)},
        {"18446744073709551615", UINT64_MAX},
        {"16777215TiB", UINT64_C(16777215) << 40},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint64_t v = 1;
        ck_assert_msg(cfg_parse_size(cases[i].s, &v) == 0, "rejected %s", cases[i].s);
        ck_assert_msg(v == cases[i].want, "%s: %llu", cases[i].s, (unsigned long long)v);
    }
}
END_TEST

START_TEST(test_cfg_parse_size_rejects_bad_and_overflow)
{
    static const char *const bad[] = {
        "",
        "MiB",
        "-1",
        "+1",
        "1.5GiB",
        "12XB",
        "1 MiB",
        " 1",
        "1 ",
        "1iB",
        "1KIBB",
        "0x10",
        "1e6",
        "1MiBs",
        "GiB1",
        "1Pi",
        "18446744073709551616",
        "17179869184GiB",
        "16777216TiB",
        "99999999999999999999999999k",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        uint64_t v = 7;
        ck_assert_msg(cfg_parse_size(bad[i], &v) == -1, "accepted %s", bad[i]);
        ck_assert_msg(v == 7, "%s: output written on failure", bad[i]);
    }
    ck_assert_int_eq(cfg_parse_size(NULL, &(uint64_t){0}), -1);
}
END_TEST

START_TEST(test_cfg_parse_duration_accepts_units)
{
    static const struct {
        const char *s;
        uint64_t want;
    } cases[] = {
        {"0", 0},
        {"500ms", 500},
        {"30s", 30000},
        {"2m", 120000},
        {"1h", 3600000},
        {"1500", 1500}, /* bare = ms, per cfg.h; the config setter insists on a unit */
        {"0s", 0},
        {"5124095576030h", UINT64_C(5124095576030) * 3600000},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint64_t v = 1;
        ck_assert_msg(cfg_parse_duration(cases[i].s, &v) == 0, "rejected %s", cases[i].s);
        ck_assert_msg(v == cases[i].want, "%s: %llu", cases[i].s, (unsigned long long)v);
    }
}
END_TEST

START_TEST(test_cfg_parse_duration_rejects_bad_and_overflow)
{
    static const char *const bad[] = {"",
                                      "s",
                                      "ms",
                                      "1d",
                                      "-1s",
                                      "1.5s",
                                      "5 s",
                                      "1S",
                                      "1H",
                                      "1sec",
                                      "1hm",
                                      "s1",
                                      "5124095576031h",
                                      "18446744073709551616",
                                      "18446744073709552s"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        uint64_t v = 7;
        ck_assert_msg(cfg_parse_duration(bad[i], &v) == -1, "accepted %s", bad[i]);
        ck_assert_msg(v == 7, "%s: output written on failure", bad[i]);
    }
}
END_TEST

/* ---- the row types ------------------------------------------------------------------- */

START_TEST(test_cfg_uint_good_and_bad)
{
    const cfg_t *c = ok("limits:\n  max_connections: 10\n  max_pixels: 1099511627776\n");
    ck_assert_uint_eq(c->max_connections, 10);
    ck_assert_uint_eq(c->max_pixels, TIB);
    cfg_free(c);

    fails_exactly("limits:\n  max_connections: ten\n",
                  "t.yaml:2: limits.max_connections: bad number \"ten\"\n");
    fails_with("limits: {max_connections: -1}\n", "bad number \"-1\"");
    fails_with("limits: {max_connections: 1.5}\n", "bad number \"1.5\"");
    fails_with("limits: {max_connections: 0x10}\n", "bad number \"0x10\"");
    fails_with("limits: {max_connections: 10k}\n", "bad number \"10k\"");
    fails_with("limits: {max_connections: 4294967296}\n",
               "\"4294967296\" is out of range 1..1000000");
    fails_with("limits: {max_pixels: 99999999999999999999999}\n",
               "number \"99999999999999999999999\" is too large");
    fails_exactly("limits:\n  max_connections:\n",
                  "t.yaml:2: limits.max_connections: missing value\n");
    fails_with("limits: {max_connections: \"\"}\n", "missing value");
    fails_with("output: {jpeg_quality: auto}\n", "bad number \"auto\"");
    c = ok("flight: {keep_runs: 0}\n");
    ck_assert_uint_eq(c->flight_keep_runs, 0);
    cfg_free(c);
    c = ok("flight: {keep_runs: 1000}\n");
    ck_assert_uint_eq(c->flight_keep_runs, 1000);
    cfg_free(c);
    fails_exactly("flight:\n  keep_runs: 1001\n",
                  "t.yaml:2: flight.keep_runs: \"1001\" is out of range 0..1000\n");
    fails_with("flight: {keep_runs: -1}\n", "bad number \"-1\"");
}
END_TEST

START_TEST(test_cfg_size_good_and_bad)
{
    const cfg_t *c = ok("limits: {max_upload: 2GB}\nstorage: {cache_max: 10G}\n"
                        "http: {upload_spill: 64KiB}\nmemory: {queue_max_bytes: 0}\n");
    ck_assert_uint_eq(c->max_upload, 2000000000);
    ck_assert_uint_eq(c->cache_max_bytes, 10 * GIB);
    ck_assert_uint_eq(c->upload_spill_bytes, 64 * KIB);
    ck_assert_uint_eq(c->queue_max_bytes, 0);
    cfg_free(c);

    fails_exactly("memory:\n  budget: 12XB\n", "t.yaml:2: memory.budget: bad size \"12XB\"\n");
    fails_with("memory: {budget: 1.5GiB}\n", "bad size \"1.5GiB\"");
    fails_with("memory: {budget: 99999999999TiB}\n", "size \"99999999999TiB\" is too large");
    fails_exactly("http:\n  upload_spill: 1000\n",
                  "t.yaml:2: http.upload_spill: \"1000\" is out of range 16KiB..1GiB\n");
    fails_with("limits: {max_header_bytes: 500KiB}\n", "\"500KiB\" is out of range 1KiB..400KiB");
    fails_with("http: {socket_buffer: 1KiB}\n", "\"1KiB\" is out of range 4KiB..4MiB");
    fails_with("limits: {max_upload: 2TiB}\n", "\"2TiB\" is out of range 1KiB..1TiB");
    fails_with("flight: {max_disk: 60KiB}\n", "\"60KiB\" is out of range 64KiB..1TiB");
    c = ok("flight: {max_disk: 1GiB}\n");
    ck_assert_uint_eq(c->flight_max_disk, GIB);
    cfg_free(c);
}
END_TEST

START_TEST(test_cfg_duration_good_and_bad)
{
    const cfg_t *c =
        ok("memory: {queue_timeout: 500ms, job_timeout: 2s}\nhttp: {request_timeout: 2m,"
           " shutdown_timeout: 0, idle_timeout: 1h}\nflight: {interval: 250ms}\n");
    ck_assert_uint_eq(c->queue_timeout_ms, 500);
    ck_assert_uint_eq(c->job_timeout_ms, 2000);
    ck_assert_uint_eq(c->req_timeout_ms, 120000);
    ck_assert_uint_eq(c->shutdown_timeout_ms, 0);
    ck_assert_uint_eq(c->idle_timeout_ms, 3600000);
    ck_assert_uint_eq(c->flight_interval_ms, 250);
    cfg_free(c);

    fails_exactly("http:\n  request_timeout: 60\n",
                  "t.yaml:2: http.request_timeout: duration \"60\" needs a unit: ms, s, m or h\n");
    fails_with("http: {request_timeout: 1d}\n", "bad duration \"1d\"");
    fails_with("http: {request_timeout: 1.5s}\n", "bad duration \"1.5s\"");
    fails_with("http: {request_timeout: 500ms}\n", "\"500ms\" is out of range 1s..24h");
    fails_with("memory: {job_timeout: 0}\n", "\"0\" is out of range 1ms..1h");
    fails_with("http: {idle_timeout: 99999999999999999999h}\n", "is too large");
}
END_TEST

/* mezzanine.k: a decimal of up to 3 places, held in thousandths; printed back as written */
START_TEST(test_cfg_decimal_good_and_bad)
{
    static const struct {
        const char *text;
        uint32_t milli;
        const char *printed;
    } good[] = {{"1.333", 1333, "1.333"}, {"2", 2000, "2"},  {"1.5", 1500, "1.5"},
                {"1.05", 1050, "1.05"},   {"16", 16000, "16"}, {"1.000", 1000, "1"}};
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        char yaml[64], line[64];
        snprintf(yaml, sizeof(yaml), "mezzanine: {k: %s}\n", good[i].text);
        const cfg_t *c = ok(yaml);
        ck_assert_uint_eq(c->mezz_k_milli, good[i].milli);
        char *text = print_to_string(c);
        snprintf(line, sizeof(line), "\n  k: %s\n", good[i].printed);
        ck_assert_msg(strstr(text, line) != NULL, "%s printed as: %s", good[i].text, text);
        free(text);
        cfg_free(c);
    }
    fails_exactly("mezzanine:\n  k: 1.3333\n",
                  "t.yaml:2: mezzanine.k: bad decimal \"1.3333\"\n");
    fails_with("mezzanine: {k: 1.}\n", "bad decimal \"1.\"");
    fails_with("mezzanine: {k: .5}\n", "bad decimal \".5\"");
    fails_with("mezzanine: {k: \"1,5\"}\n", "bad decimal \"1,5\"");
    fails_with("mezzanine: {k: -1}\n", "bad decimal \"-1\"");
    fails_with("mezzanine: {k: 0.999}\n", "\"0.999\" is out of range 1..16");
    fails_with("mezzanine: {k: 16.001}\n", "\"16.001\" is out of range 1..16");
    fails_with("mezzanine: {k: 99999999999999999999}\n", "is too large");
}
END_TEST

/* heap_ring.*: off by default; an interval is 0 or at least a second (a profile takes
 * milliseconds to write); the environment sets it like any key */
START_TEST(test_cfg_heap_ring)
{
    const cfg_t *c = ok("");
    ck_assert_uint_eq(c->heap_ring_interval_ms, 0);
    ck_assert_uint_eq(c->heap_ring_keep, 12);
    ck_assert_uint_eq(c->heap_ring_max_disk, 64 * MIB);
    ck_assert_str_eq(c->heap_ring_dir, "");
    cfg_free(c);
    c = ok("heap_ring: {interval: 10s, keep: 3, max_disk: 1MiB, dir: /var/tmp/h}\n");
    ck_assert_uint_eq(c->heap_ring_interval_ms, 10000);
    ck_assert_uint_eq(c->heap_ring_keep, 3);
    ck_assert_uint_eq(c->heap_ring_max_disk, MIB);
    ck_assert_str_eq(c->heap_ring_dir, "/var/tmp/h");
    cfg_free(c);
    fails_exactly("heap_ring:\n  interval: 500ms\n",
                  "t.yaml:2: heap_ring.interval: must be 0 (off) or at least 1s\n");
    fails_with("heap_ring: {keep: 0}\n", "\"0\" is out of range 1..10000");
    fails_with("heap_ring: {max_disk: 1KiB}\n", "\"1KiB\" is out of range 64KiB..1TiB");
    char *env[] = {"THUMBGATE_HEAP_RING_INTERVAL=1m", "THUMBGATE_HEAP_RING_KEEP=5", NULL};
    c = ok_env("heap_ring: {interval: 10s}\n", env);
    ck_assert_uint_eq(c->heap_ring_interval_ms, 60000);
    ck_assert_uint_eq(c->heap_ring_keep, 5);
    cfg_free(c);
}
END_TEST

START_TEST(test_cfg_bool_good_and_bad)
{
    static const struct {
        const char *text;
        bool want;
    } cases[] = {{"true", true}, {"false", false}, {"yes", true},  {"no", false},
                 {"on", true},   {"off", false},   {"True", true}, {"OFF", false}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char yaml[64];
        snprintf(yaml, sizeof(yaml), "output: {keep_icc: %s}\n", cases[i].text);
        const cfg_t *c = ok(yaml);
        ck_assert_msg(c->keep_icc == cases[i].want, "%s", cases[i].text);
        cfg_free(c);
    }
    fails_exactly("log:\n  access: maybe\n", "t.yaml:2: log.access: bad boolean \"maybe\" "
                                             "(use true/false, yes/no or on/off)\n");
    fails_with("log: {access: 1}\n", "bad boolean \"1\"");
    fails_with("log: {access: }\n", "missing value");
}
END_TEST

START_TEST(test_cfg_string_good_and_bad)
{
    char yaml[1200], root[600];
    const cfg_t *c = ok("storage:\n  root: \"/var/lib/thumb \\\"gate\\\"\"\nflight: {path: ''}\n");
    ck_assert_str_eq(c->storage_root, "/var/lib/thumb \"gate\"");
    ck_assert_str_eq(c->flight_path, "");
    cfg_free(c);

    /* 511 bytes fit in char[512]; 512 do not */
    memset(root, 'a', 511);
    root[511] = '\0';
    snprintf(yaml, sizeof(yaml), "storage: {root: %s}\n", root);
    c = ok(yaml);
    ck_assert_uint_eq(strlen(c->storage_root), 511);
    cfg_free(c);
    snprintf(yaml, sizeof(yaml), "storage: {root: %sb}\n", root);
    fails_exactly(yaml, "t.yaml:1: storage.root: too long (512 bytes, at most 511)\n");

    fails_with("storage: {root: \"a\\x01b\"}\n", "contains a control character (byte 1)");
    fails_with("storage: {root: \"a\\0b\"}\n", "contains a control character (byte 1)");
    fails_with("storage: {root: \"\"}\n", "storage.root: must not be empty");
    fails_with("auth: {write_token: \"two words\"}\n", "must be printable ASCII without spaces");
}
END_TEST

START_TEST(test_cfg_enum_good_and_bad)
{
    const cfg_t *c = ok("memory: {mode: naive}\nlog: {level: debug}\n");
    ck_assert_int_eq(c->memory_mode, CFG_MODE_NAIVE);
    ck_assert_int_eq(c->log_level, CFG_LOG_DEBUG);
    cfg_free(c);
    c = ok("memory: {mode: Admit}\nlog: {level: WARN}\n");
    ck_assert_int_eq(c->memory_mode, CFG_MODE_ADMIT);
    ck_assert_int_eq(c->log_level, CFG_LOG_WARN);
    cfg_free(c);

    fails_exactly("memory:\n  mode: lazy\n",
                  "t.yaml:2: memory.mode: bad value \"lazy\" (expected admit|naive)\n");
    fails_with("log: {level: verbose}\n", "bad value \"verbose\" (expected error|warn|info|debug)");
}
END_TEST

START_TEST(test_cfg_auto_values)
{
    const cfg_t *c = ok("threads: 4\nworkers: 8\nmemory: {budget: 512MiB}\n");
    ck_assert_uint_eq(c->threads, 4);
    ck_assert_uint_eq(c->workers, 8);
    ck_assert_uint_eq(c->memory_budget, 512 * MIB);
    cfg_free(c);
    c = ok("threads: auto\nworkers: AUTO\nmemory: {budget: \"auto\"}\n");
    ck_assert_uint_eq(c->threads, 0);
    ck_assert_uint_eq(c->workers, 0);
    ck_assert_uint_eq(c->memory_budget, 0);
    cfg_free(c);

    fails_exactly("threads: 0\n", "t.yaml:1: threads: \"0\" is out of range 1..256 or auto\n");
    fails_with("memory: {budget: 0}\n", "\"0\" is out of range 1MiB..16TiB or auto");
    fails_with("memory: {auto_percent: 99}\n", "\"99\" is out of range 5..95");
    fails_with("memory: {auto_percent: 4}\n", "\"4\" is out of range 5..95");
}
END_TEST

/* ---- limits.sizes -------------------------------------------------------------------- */

START_TEST(test_cfg_sizes_sequence_and_string)
{
    const cfg_t *c = ok("limits:\n  sizes: [290x290, 100x, x64, 640x480c]\n");
    ck_assert_uint_eq(c->nsizes, 4);
    ck_assert_uint_eq(c->sizes[0].width, 290);
    ck_assert_uint_eq(c->sizes[0].height, 290);
    ck_assert(!c->sizes[0].crop);
    ck_assert_uint_eq(c->sizes[1].width, 100);
    ck_assert_uint_eq(c->sizes[1].height, 0);
    ck_assert_uint_eq(c->sizes[2].width, 0);
    ck_assert_uint_eq(c->sizes[2].height, 64);
    ck_assert_uint_eq(c->sizes[3].width, 640);
    ck_assert_uint_eq(c->sizes[3].height, 480);
    ck_assert(c->sizes[3].crop);
    cfg_free(c);

    c = ok("limits:\n  sizes:\n    - 290x290\n    - 16384x16384c\n");
    ck_assert_uint_eq(c->nsizes, 2);
    ck_assert_uint_eq(c->sizes[1].width, 16384);
    cfg_free(c);

    c = ok("limits: {sizes: \" 290x290 ,100x,\tx50 \"}\n");
    ck_assert_uint_eq(c->nsizes, 3);
    ck_assert_uint_eq(c->sizes[2].height, 50);
    cfg_free(c);

    static const char *const empty[] = {"limits: {sizes: []}\n", "limits: {sizes: \"\"}\n",
                                        "limits: {sizes: }\n", "limits: {sizes: \"  \"}\n"};
    for (size_t i = 0; i < sizeof(empty) / sizeof(empty[0]); i++) {
        c = ok(empty[i]);
        ck_assert_uint_eq(c->nsizes, 0);
        cfg_free(c);
    }
}
END_TEST

START_TEST(test_cfg_sizes_hostile_entries)
{
    static const struct {
        const char *list, *want;
    } cases[] = {
        {"0x0", "bad entry \"0x0\": 0 is not a size"},
        {"0x10", "bad entry \"0x10\": 0 is not a size"},
        {"10x0", "bad entry \"10x0\": 0 is not a size"},
        {"x", "bad entry \"x\": needs a width, a height or both"},
        {"xc", "bad entry \"xc\": needs a width, a height or both"},
        {"10xc", "bad entry \"10xc\": crop (c) needs both width and height"},
        {"x10c", "bad entry \"x10c\": crop (c) needs both width and height"},
        {"10", "bad entry \"10\": expected WxH, Wx, xH or WxHc"},
        {"10X10", "bad entry \"10X10\": expected WxH"},
        {"1x2x3", "bad entry \"1x2x3\": expected WxH"},
        {"10x10cc", "bad entry \"10x10cc\": expected WxH"},
        {"axb", "bad entry \"axb\": expected WxH"},
        {"-1x10", "bad entry \"-1x10\": expected WxH"},
        {"65536x10", "bad entry \"65536x10\": a side is larger than 65535"},
        {"99999999999999999999x1", "a side is larger than 65535"},
        {"1x18446744073709551617", "a side is larger than 65535"},
        {"4294967297x4294967297", "a side is larger than 65535"},
        {"10x10,", "empty entry in the list"},
        {",10x10", "empty entry in the list"},
        {"10x10,,20x20", "empty entry in the list"},
        {"10x10, 10x10", "entry \"10x10\" is listed twice"},
        {"20000x100", "limits.sizes: entry 20000x100 is larger than limits.max_output_width"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char yaml[256];
        snprintf(yaml, sizeof(yaml), "limits:\n  sizes: \"%s\"\n", cases[i].list);
        fails_with(yaml, cases[i].want);
    }
    /* in a sequence the error names the item's own line */
    fails_exactly("limits:\n  sizes:\n    - 10x10\n    - 0x0\n",
                  "t.yaml:4: limits.sizes: bad entry \"0x0\": 0 is not a size "
                  "(leave that side out, e.g. x290)\n");
    fails_exactly("limits:\n  sizes:\n    - 10x10\n    - [1, 2]\n",
                  "t.yaml:4: limits.sizes: entry 2: expected WxH, got a sequence\n");
    fails_exactly("limits:\n  sizes: {a: 1}\n",
                  "t.yaml:2: limits.sizes: expected a list of sizes, got a mapping\n");

    /* more than CFG_MAX_SIZES entries */
    char yaml[2048];
    size_t o = (size_t)snprintf(yaml, sizeof(yaml), "limits:\n  sizes: \"");
    for (int i = 1; i <= CFG_MAX_SIZES + 1; i++)
        o += (size_t)snprintf(yaml + o, sizeof(yaml) - o, "%s%dx", i > 1 ? "," : "", i);
    snprintf(yaml + o, sizeof(yaml) - o, "\"\n");
    fails_with(yaml, "more than 64 entries");
    /* exactly CFG_MAX_SIZES is fine */
    o = (size_t)snprintf(yaml, sizeof(yaml), "limits:\n  sizes: [");
    for (int i = 1; i <= CFG_MAX_SIZES; i++)
        o += (size_t)snprintf(yaml + o, sizeof(yaml) - o, "%s%dx", i > 1 ? "," : "", i);
    snprintf(yaml + o, sizeof(yaml) - o, "]\n");
    const cfg_t *c = ok(yaml);
    ck_assert_uint_eq(c->nsizes, CFG_MAX_SIZES);
    ck_assert_uint_eq(c->sizes[CFG_MAX_SIZES - 1].width, CFG_MAX_SIZES);
    cfg_free(c);
}
END_TEST

/* ---- structural errors ---------------------------------------------------------------- */

START_TEST(test_cfg_unknown_keys)
{
    fails_exactly("memory:\n  budgte: 1GiB\n", "t.yaml:2: memory.budgte: unknown key\n");
    fails_exactly("limits:\n  budget: 1GiB\n",
                  "t.yaml:2: limits.budget: unknown key (did you mean memory.budget?)\n");
    fails_exactly("listen: 127.0.0.1:80\ncolour: blue\n", "t.yaml:2: colour: unknown key\n");
    fails_exactly("nope:\n  a: 1\n  b: 2\n", "t.yaml:1: nope: unknown key\n");
    fails_exactly("memory:\n  budget:\n    soft: 1GiB\n",
                  "t.yaml:3: memory.budget: expected a single value, got a mapping\n");
    /* hostile key text is escaped and stays on one line */
    fails_exactly("\"evil\\nkey\": 1\n", "t.yaml:1: \"evil\\x0akey\": unknown key\n");
    fails_exactly("\"\": 1\n", "t.yaml:1: \"\": unknown key\n");
    fails_exactly("\"a\\0b\": 1\n", "t.yaml:1: \"a\\x00b\": unknown key\n");
    char yaml[400];
    memset(yaml, 'k', 300);
    memcpy(yaml + 300, ": 1\n", 5);
    char *errs = NULL;
    ck_assert_ptr_null(load_env(yaml, NULL, &errs));
    ck_assert_uint_eq(count_lines(errs), 1);
    ck_assert(strncmp(errs, "t.yaml:1: \"kkkk", 15) == 0);
    ck_assert(strstr(errs, ": unknown key\n") != NULL);
    free(errs);
}
END_TEST

START_TEST(test_cfg_duplicate_keys)
{
    fails_exactly("listen: 127.0.0.1:1000\nlisten: 127.0.0.1:2000\n",
                  "t.yaml:2: listen: duplicate key (first set at line 1)\n");
    fails_exactly("memory:\n  budget: 1GiB\n  budget: 2GiB\n",
                  "t.yaml:3: memory.budget: duplicate key (first set at line 2)\n");
    fails_exactly("memory:\n  mode: admit\nlog: {level: info}\nmemory:\n  budget: 1GiB\n",
                  "t.yaml:4: memory: duplicate key (first at line 1)\n");
    /* the flat dotted spelling and the nested one name the same key */
    fails_exactly("memory:\n  budget: 1GiB\nmemory.budget: 2GiB\n",
                  "t.yaml:3: memory.budget: duplicate key (first set at line 2)\n");
}
END_TEST

START_TEST(test_cfg_flat_dotted_keys)
{
    const cfg_t *c = ok("memory.budget: 1GiB\nmemory:\n  mode: naive\nlimits.max_upload: 1MiB\n");
    ck_assert_uint_eq(c->memory_budget, GIB);
    ck_assert_int_eq(c->memory_mode, CFG_MODE_NAIVE);
    ck_assert_uint_eq(c->max_upload, MIB);
    cfg_free(c);
    fails_exactly("memory.nope: 1\n", "t.yaml:1: memory.nope: unknown key\n");
}
END_TEST

START_TEST(test_cfg_wrong_node_types)
{
    fails_exactly("memory: 5\n", "t.yaml:1: memory: expected a mapping of keys, got a scalar\n");
    fails_exactly("memory:\n  - budget\n",
                  "t.yaml:2: memory: expected a mapping of keys, got a sequence\n");
    fails_exactly("listen:\n  host: x\n",
                  "t.yaml:2: listen: expected a single value, got a mapping\n");
    fails_exactly("listen: [a, b]\n",
                  "t.yaml:1: listen: expected a single value, got a sequence\n");
    fails_exactly("? [a, b]\n: 1\n", "t.yaml:1: a key must be a plain word, not a sequence\n");
    fails_exactly("- listen\n- admin_listen\n",
                  "t.yaml:1: the top level must be a mapping of keys (key: value), "
                  "got a sequence\n");
    fails_exactly("hello\n",
                  "t.yaml:1: the top level must be a mapping of keys (key: value), got a scalar\n");
    /* an empty section is allowed (all its keys commented out) */
    const cfg_t *c = ok("memory:\n  # budget: 1GiB\nlog:\n");
    cfg_free(c);
}
END_TEST

START_TEST(test_cfg_empty_documents_mean_defaults)
{
    static const char *const texts[] = {"", "# only a comment\n", "---\n", "---\n...\n", "{}\n"};
    const cfg_t *d = ok("");
    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
        const cfg_t *c = ok(texts[i]);
        assert_same_config(c, d);
        cfg_free(c);
    }
    cfg_free(d);
}
END_TEST

START_TEST(test_cfg_malformed_yaml)
{
    fails_with("listen: 127.0.0.1:8080\nmemory:\n  budget: 1GiB\n mode: admit\n", "t.yaml:4: ");
    fails_with("memory: {budget: 1GiB\n", "YAML syntax error");
    fails_exactly("listen: \"unterminated\n",
                  "t.yaml:2: YAML syntax error: found unexpected end of stream "
                  "(while scanning a quoted scalar started at line 1)\n");
    fails_exactly("a: &x 1\nb: *x\n", "t.yaml:2: YAML aliases (*x) are not supported\n");
    fails_exactly("listen: 127.0.0.1:8080\n---\nlisten: 127.0.0.1:9090\n",
                  "t.yaml:2: more than one YAML document (one config per file)\n");
    /* deep nesting is refused before it can exhaust the stack */
    char deep[512];
    size_t o = 0;
    for (int i = 0; i < 100; i++)
        deep[o++] = '[';
    deep[o] = '\0';
    fails_with(deep, "YAML");
    fails_with("a: b\nc: \xff\n", "YAML syntax error: invalid leading UTF-8 octet");
}
END_TEST

START_TEST(test_cfg_reports_every_error_with_its_line)
{
    fails_exactly("listen: nowhere\n"              /* 1 */
                  "memory:\n"                      /* 2 */
                  "  budget: 12XB\n"               /* 3 */
                  "  mode: lazy\n"                 /* 4 */
                  "  bogus: 1\n"                   /* 5 */
                  "output:\n"                      /* 6 */
                  "  jpeg_quality: 101\n"          /* 7 */
                  "  jpeg_quality: 90\n"           /* 8 */
                  "log:\n"                         /* 9 */
                  "  level: [info]\n"              /* 10 */
                  "http: {request_timeout: 10}\n", /* 11 */
                  "t.yaml:3: memory.budget: bad size \"12XB\"\n"
                  "t.yaml:4: memory.mode: bad value \"lazy\" (expected admit|naive)\n"
                  "t.yaml:5: memory.bogus: unknown key\n"
                  "t.yaml:7: output.jpeg_quality: \"101\" is out of range 1..100\n"
                  "t.yaml:8: output.jpeg_quality: duplicate key (first set at line 7)\n"
                  "t.yaml:10: log.level: expected a single value, got a sequence\n"
                  "t.yaml:11: http.request_timeout: duration \"10\" needs a unit: ms, s, m or h\n"
                  "t.yaml:1: listen: \"nowhere\" is not host:port "
                  "(e.g. 127.0.0.1:8080, 0.0.0.0:8080, [::1]:8080)\n");
}
END_TEST

START_TEST(test_cfg_error_flood_is_capped)
{
    char *yaml = malloc(200 * 16), *errs = NULL;
    size_t o = 0;
    for (int i = 0; i < 200; i++)
        o += (size_t)sprintf(yaml + o, "k%d: 1\n", i);
    ck_assert_ptr_null(load_env(yaml, NULL, &errs));
    ck_assert_uint_eq(count_lines(errs), 51);
    ck_assert(strstr(errs, "t.yaml: too many errors, the rest are not shown\n") != NULL);
    free(errs);
    free(yaml);
}
END_TEST

/* ---- validators and cross-field checks ------------------------------------------------ */

START_TEST(test_cfg_listen_addresses)
{
    static const char *const good[] = {"127.0.0.1:1", "0.0.0.0:65535",  "[::1]:8080",
                                       "[::]:9000",   "localhost:8080", "host.example:443"};
    static const char *const bad[] = {
        "localhost",   "8080",     ":8080",     "host:", "host:0",   "host:65536",
        "host:123456", "::1:8080", "[::1:8080", "[]:80", "host:80a", "a b:80"};
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        char yaml[128];
        snprintf(yaml, sizeof(yaml), "listen: \"%s\"\nadmin_listen: 127.0.0.1:9\n", good[i]);
        const cfg_t *c = ok(yaml);
        ck_assert_str_eq(c->listen, good[i]);
        cfg_free(c);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char yaml[128];
        snprintf(yaml, sizeof(yaml), "listen: \"%s\"\n", bad[i]);
        fails_with(yaml, "t.yaml:1: listen: ");
    }
    fails_exactly("listen: 127.0.0.1:0\n",
                  "t.yaml:1: listen: port of \"127.0.0.1:0\" is out of range 1..65535\n");
}
END_TEST

START_TEST(test_cfg_cross_field_checks)
{
    fails_exactly("listen: 127.0.0.1:9000\nadmin_listen: 127.0.0.1:9000\n",
                  "t.yaml:2: admin_listen: 127.0.0.1:9000 and 127.0.0.1:9000 would share a port: "
                  "listen and admin_listen must differ\n");
    fails_with("listen: 0.0.0.0:8081\n", "t.yaml:1: listen: 0.0.0.0:8081 and 127.0.0.1:8081");
    const cfg_t *c = ok("listen: 127.0.0.1:8081\nadmin_listen: 127.0.0.2:8081\n");
    cfg_free(c);
    fails_exactly("limits:\n  max_output_width: 1000\n  sizes: [500x500, 2000x10]\n",
                  "t.yaml:3: limits.sizes: entry 2000x10 is larger than "
                  "limits.max_output_width x max_output_height (1000x16384)\n");
    /* the flight recorder's disk bound must hold the current ring: (slots + 1) x 4 KiB */
    fails_exactly("flight:\n  slots: 100\n  max_disk: 256KiB\n",
                  "t.yaml:3: flight.max_disk: a ring of 100 slots takes 413696 bytes, more than "
                  "flight.max_disk (262144)\n");
    fails_exactly("flight:\n  slots: 20000\n",
                  "t.yaml:2: flight.slots: a ring of 20000 slots takes 81924096 bytes, more than "
                  "flight.max_disk (67108864)\n");
    c = ok("flight: {slots: 63, max_disk: 256KiB}\n"); /* 64 x 4 KiB: exactly full */
    ck_assert_uint_eq(c->flight_max_disk, 256 * KIB);
    cfg_free(c);
    fails_with("flight: {slots: 64, max_disk: 256KiB}\n", "a ring of 64 slots takes 266240 bytes");
    /* upload_spill above max_upload is allowed (the spill simply never happens) */
    c = ok("limits: {max_upload: 64KiB}\nhttp: {upload_spill: 1MiB}\n");
    cfg_free(c);
}
END_TEST

/* ---- environment ---------------------------------------------------------------------- */

START_TEST(test_cfg_env_overrides_file)
{
    char *env[] = {"PATH=/usr/bin",
                   "THUMBGATE_MEMORY_BUDGET=2GiB",
                   "THUMBGATE_LISTEN=0.0.0.0:9000",
                   "THUMBGATE_ADMIN_LISTEN=127.0.0.1:9001",
                   "THUMBGATE_STORAGE_ROOT=/srv/thumbs",
                   "THUMBGATE_AUTH_WRITE_TOKEN=s3cret-token",
                   "THUMBGATE_LIMITS_MAX_UPLOAD=5MB",
                   "THUMBGATE_MEMORY_MODE=naive",
                   "THUMBGATE_LIMITS_SIZES=290x290, 100x",
                   "THUMBGATE_HTTP_REQUEST_TIMEOUT=5m",
                   "THUMBGATE_OUTPUT_KEEP_ICC=yes",
                   "THUMBGATE_WORKERS=auto",
                   "THUMBGATE_BIN=/tmp/thumbgate",
                   "THUMBGATE_SANITIZED=1",
                   NULL};
    const cfg_t *c = ok_env("memory:\n  budget: 1GiB\n  mode: admit\nworkers: 3\n"
                            "listen: 127.0.0.1:1234\n",
                            env);
    ck_assert_uint_eq(c->memory_budget, 2 * GIB);
    ck_assert_str_eq(c->listen, "0.0.0.0:9000");
    ck_assert_str_eq(c->admin_listen, "127.0.0.1:9001");
    ck_assert_str_eq(c->storage_root, "/srv/thumbs");
    ck_assert_str_eq(c->write_token, "s3cret-token");
    ck_assert_uint_eq(c->max_upload, 5000000);
    ck_assert_int_eq(c->memory_mode, CFG_MODE_NAIVE);
    ck_assert_uint_eq(c->nsizes, 2);
    ck_assert_uint_eq(c->req_timeout_ms, 300000);
    ck_assert(c->keep_icc);
    ck_assert_uint_eq(c->workers, 0);
    cfg_free(c);

    /* an empty value clears a string */
    char *clear[] = {"THUMBGATE_AUTH_WRITE_TOKEN=", NULL};
    c = ok_env("auth: {write_token: abc}\n", clear);
    ck_assert_str_eq(c->write_token, "");
    cfg_free(c);
}
END_TEST

START_TEST(test_cfg_env_bad_values)
{
    char *env[] = {"THUMBGATE_MEMORY_BUDGET=12XB", NULL};
    fails_exactly_env("", env, "env:THUMBGATE_MEMORY_BUDGET: memory.budget: bad size \"12XB\"\n");
    char *env2[] = {"THUMBGATE_OUTPUT_JPEG_QUALITY=0",
                    "THUMBGATE_HTTP_IDLE_TIMEOUT=", "THUMBGATE_LISTEN=nowhere", NULL};
    fails_exactly_env("", env2,
                      "env:THUMBGATE_OUTPUT_JPEG_QUALITY: output.jpeg_quality: \"0\" is out of "
                      "range 1..100\n"
                      "env:THUMBGATE_HTTP_IDLE_TIMEOUT: http.idle_timeout: missing value\n"
                      "env:THUMBGATE_LISTEN: listen: \"nowhere\" is not host:port "
                      "(e.g. 127.0.0.1:8080, 0.0.0.0:8080, [::1]:8080)\n");
    /* the env value is quoted in the message, so a newline cannot forge a line */
    char *env3[] = {"THUMBGATE_MEMORY_MODE=admit\nt.yaml:1: forged", NULL};
    char *errs = NULL;
    ck_assert_ptr_null(load_env("", env3, &errs));
    ck_assert_uint_eq(count_lines(errs), 1);
    ck_assert(strstr(errs, "\\x0a") != NULL);
    free(errs);
    /* file errors and env errors are reported together, file first */
    fails_exactly_env("memory: {budget: 1XB}\n", env,
                      "t.yaml:1: memory.budget: bad size \"1XB\"\n"
                      "env:THUMBGATE_MEMORY_BUDGET: memory.budget: bad size \"12XB\"\n");
}
END_TEST

START_TEST(test_cfg_env_unknown_variable)
{
    char *env[] = {"THUMBGATE_MEMORY_BUGDET=1GiB",
                   "THUMBGATE_BIN=/x",
                   "THUMBGATE_SANITIZED=1",
                   "THUMBGATEWAY=1",
                   "XTHUMBGATE_FOO=1",
                   "THUMBGATE_listen=127.0.0.1:1",
                   NULL};
    fails_exactly_env("", env,
                      "env:THUMBGATE_MEMORY_BUGDET: unknown variable: no config key is named like "
                      "it (e.g. THUMBGATE_MEMORY_BUDGET sets memory.budget)\n"
                      "env:THUMBGATE_listen: unknown variable: no config key is named like it "
                      "(e.g. THUMBGATE_MEMORY_BUDGET sets memory.budget)\n");
}
END_TEST

START_TEST(test_cfg_env_names_are_unique_and_match)
{
    size_t n = cfg__row_count();
    char a[128], b[128];
    ck_assert_uint_gt(n, 30);
    for (size_t i = 0; i < n; i++) {
        ck_assert_int_eq(cfg__row_env(i, a, sizeof(a)), 0);
        /* every variable really sets its key */
        char entry[200];
        snprintf(entry, sizeof(entry), "%s=%s", a, "bad\x01value");
        char *env[] = {entry, NULL};
        char *errs = NULL;
        ck_assert_ptr_null(load_env("", env, &errs));
        char want[256];
        snprintf(want, sizeof(want), "env:%s: %s: ", a, cfg__row_key(i));
        ck_assert_msg(strncmp(errs, want, strlen(want)) == 0, "%s", errs);
        free(errs);
        for (size_t j = 0; j < i; j++) {
            ck_assert_int_eq(cfg__row_env(j, b, sizeof(b)), 0);
            ck_assert_str_ne(a, b);
        }
    }
    ck_assert_int_eq(cfg__row_env(0, a, 5), -1);
    ck_assert_int_eq(cfg__row_env(n, a, sizeof(a)), -1);
    ck_assert_int_eq(cfg__row_env(3, a, sizeof(a)), 0);
    ck_assert_str_eq(a, "THUMBGATE_WORKERS");
}
END_TEST

/* ---- the embedded default file ------------------------------------------------------------ */

START_TEST(test_cfg_embedded_default_equals_table)
{
    char *errs = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&errs, &len);
    const cfg_t *emb = cfg_load(NULL, NULL, f);
    fclose(f);
    ck_assert_msg(emb != NULL, "%s", errs);
    ck_assert_str_eq(errs, "");
    free(errs);
    ck_assert_str_eq(emb->source, "<embedded>");

    const cfg_t *table = ok(""); /* nothing set: every value comes from the table */
    assert_same_config(emb, table);
    cfg_free(table);

    /* the documented defaults, as promised to operators */
    ck_assert_str_eq(emb->listen, "127.0.0.1:8080");
    ck_assert_str_eq(emb->admin_listen, "127.0.0.1:8081");
    ck_assert_uint_eq(emb->threads, 0);
    ck_assert_uint_eq(emb->workers, 0);
    ck_assert_str_eq(emb->storage_root, "./data");
    ck_assert_uint_eq(emb->cache_max_bytes, GIB);
    ck_assert_uint_eq(emb->max_upload, 100 * MIB);
    ck_assert_uint_eq(emb->max_pixels, 100000000);
    ck_assert_uint_eq(emb->max_output_width, 16384);
    ck_assert_uint_eq(emb->max_output_height, 16384);
    ck_assert_uint_eq(emb->max_connections, 0); /* auto: the memory plan works it out */
    ck_assert_uint_eq(emb->max_header_bytes, 16 * KIB);
    ck_assert_uint_eq(emb->max_body_inflight, 0); /* auto */
    ck_assert_uint_eq(emb->nsizes, 0);
    ck_assert_uint_eq(emb->memory_budget, 0);
    ck_assert_uint_eq(emb->memory_budget_percent, 60);
    ck_assert_int_eq(emb->memory_mode, CFG_MODE_ADMIT);
    ck_assert_uint_eq(emb->queue_max, 64);
    ck_assert_uint_eq(emb->queue_max_bytes, 0);
    ck_assert_uint_eq(emb->queue_timeout_ms, 10000);
    ck_assert_uint_eq(emb->job_timeout_ms, 30000);
    ck_assert(emb->malloc_trim_idle);
    ck_assert_uint_eq(emb->req_timeout_ms, 60000);
    ck_assert_uint_eq(emb->idle_timeout_ms, 10000);
    ck_assert_uint_eq(emb->shutdown_timeout_ms, 10000);
    ck_assert_uint_eq(emb->upload_spill_bytes, 64 * KIB);
    ck_assert_uint_eq(emb->socket_buffer, 16 * KIB);
    ck_assert_uint_eq(emb->hot_results, 4 * MIB);
    ck_assert_str_eq(emb->write_token, "");
    ck_assert_uint_eq(emb->jpeg_quality, 80);
    ck_assert_uint_eq(emb->webp_quality, 80);
    ck_assert_uint_eq(emb->png_compression, 6);
    ck_assert(!emb->keep_icc);
    ck_assert_int_eq(emb->log_level, CFG_LOG_INFO);
    ck_assert(emb->access_log);
    ck_assert_str_eq(emb->flight_path, "");
    ck_assert_uint_eq(emb->flight_interval_ms, 1000);
    ck_assert_uint_eq(emb->flight_slots, 300);
    ck_assert_uint_eq(emb->flight_keep_runs, 5);
    ck_assert_uint_eq(emb->flight_max_disk, 64 * MIB);
    cfg_free(emb);
}
END_TEST

START_TEST(test_cfg_embedded_default_sets_every_key)
{
    size_t n = cfg__row_count();
    unsigned *lines = calloc(n, sizeof(*lines));
    const cfg_t *c = cfg__load_buffer(cfg_default_yaml, strlen(cfg_default_yaml), "<embedded>",
                                      NULL, NULL, lines);
    ck_assert_ptr_nonnull(c);
    for (size_t i = 0; i < n; i++)
        ck_assert_msg(lines[i] > 0, "config/thumbgate.yaml does not set %s", cfg__row_key(i));
    cfg_free(c);
    free(lines);
}
END_TEST

/* ---- cfg_print ------------------------------------------------------------------------- */

START_TEST(test_cfg_print_round_trip_defaults)
{
    const cfg_t *c = ok("");
    char *text = print_to_string(c);
    const cfg_t *again = ok(text);
    assert_same_config(c, again);
    ck_assert(strstr(text, "\nmemory:\n  budget: auto\n") != NULL);
    ck_assert(strstr(text, "  write_token: \"\"\n") != NULL);
    free(text);
    cfg_free(again);
    cfg_free(c);
}
END_TEST

START_TEST(test_cfg_print_round_trip_everything_changed)
{
    char *env[] = {"THUMBGATE_AUTH_WRITE_TOKEN=s3cret-token", NULL};
    const cfg_t *c = ok_env("listen: \"[::1]:8443\"\nadmin_listen: 0.0.0.0:9100\nthreads: 3\n"
                            "workers: 5\n"
                            "storage: {root: \"/data/a \\\"b\\\" \\\\c\", cache_max: 1500MB}\n"
                            "limits: {max_upload: 12345, max_pixels: 77, max_output_width: 4000,"
                            " max_output_height: 3000, max_connections: 10,"
                            " sizes: \"290x290, 100x, x64, 640x480c\"}\n"
                            "memory: {budget: 3GiB, auto_percent: 5, mode: naive, queue_max: 0,"
                            " queue_max_bytes: 10MB, queue_timeout: 90s, trim_when_idle: off}\n"
                            "http: {request_timeout: 1001ms, idle_timeout: 1h,"
                            " shutdown_timeout: 0, upload_spill: 65537}\n"
                            "output: {jpeg_quality: 1, webp_quality: 100, png_compression: 0,"
                            " keep_icc: yes}\n"
                            "log: {level: error, access: no}\n"
                            "flight: {path: /tmp/f.ring, interval: 100ms, slots: 2, keep_runs: 0,"
                            " max_disk: 100KiB}\n"
                            "heap_ring: {interval: 2m, dir: /tmp/h, keep: 1, max_disk: 65MiB}\n",
                            env);
    char *text = print_to_string(c);
    /* the secret never appears; the placeholder does */
    ck_assert_ptr_null(strstr(text, "s3cret"));
    ck_assert(strstr(text, "  write_token: \"<set>\"\n") != NULL);
    ck_assert(strstr(text, "  sizes: [290x290, 100x, x64, 640x480c]\n") != NULL);
    ck_assert(strstr(text, "  cache_max: 1500000000\n") != NULL);
    ck_assert(strstr(text, "  queue_timeout: 90s\n") != NULL);

    /* fed back as is, the placeholder is refused rather than used as the token */
    fails_with(text, "auth.write_token: \"<set>\" is the placeholder --check-config prints");
    /* with the real token from the environment it is the same config */
    const cfg_t *again = ok_env(text, env);
    assert_same_config(c, again);
    free(text);
    cfg_free(again);
    cfg_free(c);
}
END_TEST

/* ---- files ------------------------------------------------------------------------------ */

START_TEST(test_cfg_load_file)
{
    char path[] = "/tmp/check_cfg_XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    FILE *f = fdopen(fd, "w");
    fputs("memory:\n  budget: 64MiB\n  mode: lazy\n", f);
    fclose(f);

    char *errs = NULL;
    size_t len = 0;
    FILE *e = open_memstream(&errs, &len);
    ck_assert_ptr_null(cfg_load(path, NULL, e));
    fclose(e);
    char want[256];
    snprintf(want, sizeof(want), "%s:3: memory.mode: bad value \"lazy\" (expected admit|naive)\n",
             path);
    ck_assert_str_eq(errs, want);
    free(errs);

    f = fopen(path, "w");
    fputs("memory:\n  budget: 64MiB\n", f);
    fclose(f);
    const cfg_t *c = cfg_load(path, NULL, NULL);
    ck_assert_ptr_nonnull(c);
    ck_assert_uint_eq(c->memory_budget, 64 * MIB);
    ck_assert_str_eq(c->source, path);
    cfg_free(c);
    unlink(path);

    e = open_memstream(&errs, &len);
    ck_assert_ptr_null(cfg_load("/nonexistent/thumbgate.yaml", NULL, e));
    fclose(e);
    ck_assert_str_eq(errs, "/nonexistent/thumbgate.yaml: cannot open: No such file or directory\n");
    free(errs);

    cfg_free(NULL);
}
END_TEST

/* ---- issue 15: presets and signed URLs ---------------------------------------------------- */

START_TEST(test_cfg_presets)
{
    const cfg_t *c = ok("presets:\n"
                        "  thumb: {size: 290x290, mode: cover, format: webp, quality: 75}\n"
                        "  hero: \"1200x:fit:jpg:85\"\n"
                        "  face: 200x200:smart:png\n");
    ck_assert_uint_eq(c->npresets, 3);
    ck_assert_str_eq(c->presets[0].name, "thumb");
    ck_assert_uint_eq(c->presets[0].width, 290);
    ck_assert_uint_eq(c->presets[0].height, 290);
    ck_assert_uint_eq(c->presets[0].mode, CFG_PRESET_COVER);
    ck_assert_str_eq(c->presets[0].format, "webp");
    ck_assert_uint_eq(c->presets[0].quality, 75);
    ck_assert_uint_eq(c->presets[1].width, 1200);
    ck_assert_uint_eq(c->presets[1].height, 0);
    ck_assert_uint_eq(c->presets[1].mode, CFG_PRESET_FIT);
    ck_assert_str_eq(c->presets[1].format, "jpg");
    ck_assert_uint_eq(c->presets[2].mode, CFG_PRESET_SMART);
    ck_assert_uint_eq(c->presets[2].quality, 0);
    /* printed and read back: the same config */
    char *text = print_to_string(c);
    ck_assert_msg(strstr(text, "presets: {thumb: \"290x290:cover:webp:75\", hero: "
                               "\"1200x:fit:jpg:85\", face: \"200x200:smart:png\"}\n") != NULL,
                  "%s", text);
    const cfg_t *again = ok(text);
    assert_same_config(c, again);
    free(text);
    cfg_free(again);
    cfg_free(c);

    /* the environment replaces them all */
    char *env[] = {"THUMBGATE_PRESETS= a=10x10:cover:jpg , b=x20:fit:webp:1,", NULL};
    c = ok_env("presets: {thumb: 1x1:fit:jpg}\n", env);
    ck_assert_uint_eq(c->npresets, 2);
    ck_assert_str_eq(c->presets[0].name, "a");
    ck_assert_str_eq(c->presets[1].name, "b");
    ck_assert_uint_eq(c->presets[1].height, 20);
    ck_assert_uint_eq(c->presets[1].quality, 1);
    cfg_free(c);

    fails_with("presets: {t: 10x10:crop:jpg}\n", "preset t: bad mode \"crop\"");
    fails_with("presets: {t: 10x:cover:jpg}\n", "preset t: mode cover needs both width and height");
    fails_with("presets: {t: 10x10:fit:bmp}\n", "preset t: bad format \"bmp\"");
    fails_with("presets: {t: 10x10:fit:jpg:0}\n", "preset t: quality \"0\" is out of range 1..100");
    fails_with("presets: {t: 10x10:fit:jpg:101}\n", "out of range 1..100");
    fails_with("presets: {t: 10x10c:fit:jpg}\n", "write the crop as mode: cover");
    fails_with("presets: {t: 10x10}\n", "expected size:mode:format[:quality]");
    fails_with("presets: {t: 10x10:fit:jpg:1:2}\n", "expected size:mode:format[:quality]");
    fails_with("presets: {t: {size: 10x10, colour: red}}\n", "unknown field \"colour\"");
    fails_with("presets: {t: {size: 10x10, mode: fit}}\n", "bad format (none)");
    fails_with("presets: {\"a.b\": 10x10:fit:jpg}\n", "use [A-Za-z0-9_-]");
    fails_with("presets: [a, b]\n", "expected a mapping");
    fails_exactly("presets:\n  t: 10x10:fit:jpg\n  t: 20x20:fit:jpg\n",
                  "t.yaml:3: presets: preset t is defined twice\n");
    fails_with("limits: {max_output_width: 100}\npresets: {t: 200x10:fit:jpg}\n",
               "preset t (200x10) is larger than limits.max_output_width");
    char *bad[] = {"THUMBGATE_PRESETS=a:10x10:fit:jpg", NULL};
    fails_with_env("", bad, "env:THUMBGATE_PRESETS: presets: expected name=size:mode:format");
}
END_TEST

START_TEST(test_cfg_url_key)
{
    const cfg_t *c = ok("auth: {url_key: 0123456789abcdef}\n");
    ck_assert_str_eq(c->url_secret, "0123456789abcdef");
    char *text = print_to_string(c);
    ck_assert_ptr_null(strstr(text, "0123456789abcdef")); /* a secret is never printed */
    ck_assert(strstr(text, "  url_key: \"<set>\"\n") != NULL);
    fails_with(text, "auth.url_key: \"<set>\" is the placeholder");
    free(text);
    cfg_free(c);
    fails_with("auth: {url_key: short}\n", "auth.url_key: shorter than 16 characters");
    fails_with("auth: {url_key: \"0123456789 abcdef\"}\n", "printable ASCII without spaces");

    /* from a file: one line, the newline dropped */
    char path[] = "/tmp/check_cfg_key_XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, "fedcba9876543210fedc\n", 21), 21);
    close(fd);
    char yaml[256];
    snprintf(yaml, sizeof(yaml), "auth: {url_key_file: %s}\n", path);
    c = ok(yaml);
    ck_assert_str_eq(c->url_secret, "fedcba9876543210fedc");
    ck_assert_str_eq(c->url_key, "");
    cfg_free(c);
    snprintf(yaml, sizeof(yaml), "auth: {url_key_file: %s, url_key: 0123456789abcdef}\n", path);
    fails_with(yaml, "auth.url_key_file: auth.url_key is set too");
    fd = open(path, O_WRONLY | O_TRUNC);
    ck_assert_int_eq(write(fd, "short\n", 6), 6);
    close(fd);
    snprintf(yaml, sizeof(yaml), "auth: {url_key_file: %s}\n", path);
    fails_with(yaml, "shorter than 16 characters");
    fd = open(path, O_WRONLY | O_TRUNC);
    close(fd);
    fails_with(yaml, "the file is empty");
    unlink(path);
    fails_with(yaml, "cannot open");
    /* no key: nothing to sign with */
    c = ok("");
    ck_assert_str_eq(c->url_secret, "");
    cfg_free(c);
}
END_TEST

Suite *cfg_suite(void)
{
    Suite *s = suite_create("cfg");
    TCase *tc;

    tc = tcase_create("units");
    tcase_add_test(tc, test_cfg_parse_size_accepts_units);
    tcase_add_test(tc, test_cfg_parse_size_rejects_bad_and_overflow);
    tcase_add_test(tc, test_cfg_parse_duration_accepts_units);
    tcase_add_test(tc, test_cfg_parse_duration_rejects_bad_and_overflow);
    suite_add_tcase(s, tc);

    tc = tcase_create("types");
    tcase_add_test(tc, test_cfg_uint_good_and_bad);
    tcase_add_test(tc, test_cfg_size_good_and_bad);
    tcase_add_test(tc, test_cfg_duration_good_and_bad);
    tcase_add_test(tc, test_cfg_decimal_good_and_bad);
    tcase_add_test(tc, test_cfg_heap_ring);
    tcase_add_test(tc, test_cfg_bool_good_and_bad);
    tcase_add_test(tc, test_cfg_string_good_and_bad);
    tcase_add_test(tc, test_cfg_enum_good_and_bad);
    tcase_add_test(tc, test_cfg_auto_values);
    suite_add_tcase(s, tc);

    tc = tcase_create("sizes");
    tcase_add_test(tc, test_cfg_sizes_sequence_and_string);
    tcase_add_test(tc, test_cfg_sizes_hostile_entries);
    suite_add_tcase(s, tc);

    tc = tcase_create("structure");
    tcase_add_test(tc, test_cfg_unknown_keys);
    tcase_add_test(tc, test_cfg_duplicate_keys);
    tcase_add_test(tc, test_cfg_flat_dotted_keys);
    tcase_add_test(tc, test_cfg_wrong_node_types);
    tcase_add_test(tc, test_cfg_empty_documents_mean_defaults);
    tcase_add_test(tc, test_cfg_malformed_yaml);
    tcase_add_test(tc, test_cfg_reports_every_error_with_its_line);
    tcase_add_test(tc, test_cfg_error_flood_is_capped);
    suite_add_tcase(s, tc);

    tc = tcase_create("validation");
    tcase_add_test(tc, test_cfg_listen_addresses);
    tcase_add_test(tc, test_cfg_cross_field_checks);
    suite_add_tcase(s, tc);

    tc = tcase_create("env");
    tcase_add_test(tc, test_cfg_env_overrides_file);
    tcase_add_test(tc, test_cfg_env_bad_values);
    tcase_add_test(tc, test_cfg_env_unknown_variable);
    tcase_add_test(tc, test_cfg_env_names_are_unique_and_match);
    suite_add_tcase(s, tc);

    tc = tcase_create("default");
    tcase_add_test(tc, test_cfg_embedded_default_equals_table);
    tcase_add_test(tc, test_cfg_embedded_default_sets_every_key);
    suite_add_tcase(s, tc);

    tc = tcase_create("print");
    tcase_add_test(tc, test_cfg_print_round_trip_defaults);
    tcase_add_test(tc, test_cfg_print_round_trip_everything_changed);
    suite_add_tcase(s, tc);

    tc = tcase_create("file");
    tcase_add_test(tc, test_cfg_load_file);
    suite_add_tcase(s, tc);

    tc = tcase_create("url");
    tcase_add_test(tc, test_cfg_presets);
    tcase_add_test(tc, test_cfg_url_key);
    suite_add_tcase(s, tc);

    return s;
}
