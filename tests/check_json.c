/* Unit tests of server/json.c (the one JSON writer) and server/errors.c (the one error
 * table): hostile strings stay valid JSON, a full buffer still closes the object, and
 * every module error has its status and code. */
#include <check.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "imgproc/imgproc.h"
#include "server/adm.h"
#include "server/errors.h"
#include "server/json.h"
#include "server/route.h"
#include "server/store.h"

START_TEST(test_json_escapes_hostile_strings)
{
    char out[256];
    /* a libvips message or a path holding a quote, a backslash, a newline, UTF-8 */
    json_escape(out, sizeof(out), "a\"b\\c\nd\x01\xc3\xa9", 10);
    ck_assert_str_eq(out, "a\\\"b\\\\c\\u000ad\\u0001\\u00c3\\u00a9");
    char line[200];
    json_t j;
    json_begin(&j, line, sizeof(line));
    json_str(&j, "log", "error");
    json_str(&j, "src", "/data/orig/we\"ird@");
    json_u64(&j, "status", 500);
    json_bool(&j, "ok", false);
    json_end(&j);
    ck_assert_str_eq(
        line,
        "{\"log\":\"error\",\"src\":\"/data/orig/we\\\"ird@\",\"status\":500,\"ok\":false}\n");
}
END_TEST

START_TEST(test_json_truncates_inside_a_closed_object)
{
    char line[40];
    json_t j;
    json_begin(&j, line, sizeof(line));
    json_str(&j, "a", "0123456789");
    json_str(&j, "b", "0123456789012345678901234567890123456789"); /* does not fit */
    json_u64(&j, "c", 7);                                          /* nor anything after it */
    size_t n = json_end(&j);
    ck_assert(j.truncated);
    ck_assert_uint_lt(n, sizeof(line));
    /* the long string is cut, what follows is dropped, the object closes */
    ck_assert_str_eq(line, "{\"a\":\"0123456789\",\"b\":\"0123456789012\"}\n");
    /* an escape is never cut in half */
    char out[8];
    json_escape(out, sizeof(out), "ab\"\"\"", 5);
    ck_assert_str_eq(out, "ab\\\"\\\"");
}
END_TEST

/* The numbers are written without printf (the access log's cost per request): each must
 * read exactly as printf writes it, edges included. */
static void number_is(void (*put)(json_t *, const char *, int64_t), int64_t v, const char *want)
{
    char line[64], expect_line[64];
    json_t j;
    json_begin(&j, line, sizeof(line));
    put(&j, "n", v);
    json_end(&j);
    snprintf(expect_line, sizeof(expect_line), "{\"n\":%s}\n", want);
    ck_assert_str_eq(line, expect_line);
}

static void put_i64(json_t *j, const char *k, int64_t v)
{
    json_i64(j, k, v);
}

static void put_u64(json_t *j, const char *k, int64_t v)
{
    json_u64(j, k, (uint64_t)v);
}

START_TEST(test_json_numbers_read_as_printf_writes_them)
{
    const int64_t ints[] = {0, 1, -1, 9, 10, -10, 999, 1000, 123456789, INT64_MAX, INT64_MIN};
    char want[48];
    for (size_t i = 0; i < sizeof(ints) / sizeof(ints[0]); i++) {
        snprintf(want, sizeof(want), "%" PRId64, ints[i]);
        number_is(put_i64, ints[i], want);
        snprintf(want, sizeof(want), "%" PRIu64, (uint64_t)ints[i]); /* -1: UINT64_MAX */
        number_is(put_u64, ints[i], want);
    }
    /* thousandths with three decimals: as json_fixed3 (printf's %.3f) writes them */
    const int64_t millis[] = {
        0,  1,    9,     10,    99,    100,     999,           1000,     1001,     1234,
        -1, -999, -1000, -1234, 59999, 1000000, 1764676800123, 86400000, -86400001};
    for (size_t i = 0; i < sizeof(millis) / sizeof(millis[0]); i++) {
        char a[64], b[64];
        json_t j;
        json_begin(&j, a, sizeof(a));
        json_milli(&j, "n", millis[i]);
        json_end(&j);
        json_begin(&j, b, sizeof(b));
        json_fixed3(&j, "n", (double)millis[i] / 1000.0);
        json_end(&j);
        ck_assert_msg(strcmp(a, b) == 0, "%" PRId64 ": %s against %s", millis[i], a, b);
    }
}
END_TEST

static void expect(err_domain_t d, int code, int status, const char *name)
{
    err_http_t h = errors_http(d, code);
    ck_assert_msg(h.status == status && strcmp(h.code, name) == 0,
                  "domain %d code %d: %d %s, want %d %s", d, code, h.status, h.code, status, name);
    h = errors_http(d, -code); /* modules return their errors negated */
    ck_assert_int_eq(h.status, status);
}

START_TEST(test_errors_every_module_error_has_a_status)
{
    expect(ERR_IMGPROC, IMGPROC_E_UNSUPPORTED, 415, "unsupported_format");
    expect(ERR_IMGPROC, IMGPROC_E_CORRUPT, 415, "corrupt_image");
    expect(ERR_IMGPROC, IMGPROC_E_TOO_LARGE, 413, "too_many_pixels");
    expect(ERR_IMGPROC, IMGPROC_E_IO, 500, "processing_error");
    expect(ERR_IMGPROC, IMGPROC_E_NOMEM, 503, "busy");
    expect(ERR_IMGPROC, IMGPROC_E_INVALID, 400, "bad_request");
    expect(ERR_STORE, STORE_E_NOTFOUND, 404, "not_found");
    expect(ERR_STORE, STORE_E_CONFLICT, 409, "key_conflict");
    expect(ERR_STORE, STORE_E_NOSPACE, 507, "storage_full");
    expect(ERR_STORE, STORE_E_IO, 500, "storage_error");
    expect(ERR_STORE, STORE_E_CHANGED, 503, "source_changed");
    expect(ERR_ADM, ADM_E_TOO_BIG, 413, "over_budget");
    expect(ERR_ADM, ADM_E_QUEUE_FULL, 503, "over_budget");
    expect(ERR_ADM, ADM_E_EXPIRED, 503, "over_budget");
    expect(ERR_ADM, ADM_E_SHUTDOWN, 503, "shutting_down");
    expect(ERR_ROUTE, ROUTE_E_BADKEY, 400, "bad_key");
    expect(ERR_ROUTE, ROUTE_E_BADSIZE, 400, "bad_size");
    expect(ERR_AUTH, ERR_AUTH_NO_TOKEN, 401, "unauthorized");
    expect(ERR_AUTH, ERR_AUTH_BAD_TOKEN, 403, "forbidden");
    expect(ERR_REQ, ERR_REQ_TIMEOUT, 408, "request_timeout");
    expect(ERR_REQ, ERR_REQ_CLIENT_GONE, 499, "client_gone");
    expect(ERR_REQ, ERR_REQ_OUTPUT_TOO_LARGE, 400, "output_too_large");
    expect(ERR_H2O, 413, 413, "body_too_large");
    /* unknown: a 500, never a made-up status */
    expect(ERR_STORE, 99, 500, "internal_error");
    ck_assert_int_eq(errors_http(ERR_H2O, 502).status, 502);
}
END_TEST

Suite *json_suite(void); /* called by check_main.c */
Suite *json_suite(void)
{
    Suite *s = suite_create("json");
    TCase *t = tcase_create("json");
    tcase_add_test(t, test_json_escapes_hostile_strings);
    tcase_add_test(t, test_json_truncates_inside_a_closed_object);
    tcase_add_test(t, test_json_numbers_read_as_printf_writes_them);
    tcase_add_test(t, test_errors_every_module_error_has_a_status);
    suite_add_tcase(s, t);
    return s;
}
