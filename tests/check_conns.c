/* Integration tests of connguard against the real binary: the body-bytes reservation
 * refuses a body before it is read and frees it when the connection ends, an oversize
 * request head is refused, an unauthenticated write is refused before its body, and
 * limits.max_connections: a connection doing nothing useful makes room, a new one waits
 * in the accept queue while nobody can be closed yet, and is answered 503 when nobody can
 * be for long. Every wait is on a metric or on the server's answer, never on time. */
#include <check.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <unistd.h>
#include <vips/vips.h>

#include "tests/tg_harness.h"

static tg_server_t S;

static void teardown(void)
{
    tg_cleanup(&S);
}

/* Opens a connection and sends a PUT head declaring @p declared bytes and @p send of them. */
static int put_partial(const char *path, size_t declared, size_t send, const char *extra_hdr)
{
    char head[512];
    int n =
        snprintf(head, sizeof(head), "PUT %s HTTP/1.1\r\nHost: x\r\n%sContent-Length: %zu\r\n\r\n",
                 path, extra_hdr ? extra_hdr : "", declared);
    int fd = tg_connect(&S);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, head, (size_t)n), n);
    char *body = calloc(1, send ? send : 1);
    size_t off = 0;
    while (off < send) {
        ssize_t w = write(fd, body + off, send - off);
        ck_assert_int_gt(w, 0);
        off += (size_t)w;
    }
    free(body);
    return fd;
}

/* Reads the answer on @p fd: its status, and the body of the JSON error in @p out. */
static int read_status(int fd, char *out, size_t cap)
{
    size_t n = tg_read_all(fd, out, cap, 20000);
    int status = 0;
    if (n < 12 || sscanf(out, "HTTP/1.1 %d", &status) != 1)
        return -1;
    return status;
}

START_TEST(test_conns_body_reservation_refuses_before_the_body)
{
    const char *env[] = {"THUMBGATE_LIMITS_MAX_UPLOAD=1MiB",
                         "THUMBGATE_LIMITS_MAX_BODY_INFLIGHT=1MiB", NULL};
    tg_start(&S, env, NULL);
    /* A declares 800 000 bytes and sends a part: its reservation is taken from the head */
    int a = put_partial("/a.jpg", 800000, 100000, NULL);
    ck_assert(tg_wait_metric(&S, "thumbgate_body_reserved_bytes", 800000, 20000));
    /* B's declared body does not fit beside A's: answered before a byte of it is sent */
    int b = put_partial("/b.jpg", 800000, 0, NULL);
    char buf[2048];
    ck_assert_int_eq(read_status(b, buf, sizeof(buf)), 503);
    ck_assert_ptr_nonnull(strstr(buf, "Retry-After: "));
    ck_assert_ptr_nonnull(strstr(buf, "\"error\":\"busy\""));
    ck_assert_ptr_nonnull(strstr(buf, "max_body_inflight"));
    close(b);
    ck_assert_int_eq(tg_metric(&S, "thumbgate_conn_refused_total{reason=\"body_bytes_in_flight\"}"),
                     1);
    /* A gives up: its reservation is returned, and a whole upload goes through */
    close(a);
    ck_assert(tg_wait_metric_at_most(&S, "thumbgate_body_reserved_bytes", 0, 20000));
    tg_put_image(&S, "/c.jpg", 200, 150, "jpg");
    tg_resp_t r;
    ck_assert_int_eq(tg_http(&S, "GET", "/a.jpg", NULL, 0, NULL, &r), 404);
    tg_resp_free(&r);
    ck_assert_int_eq(tg_http(&S, "GET", "/c.jpg", NULL, 0, NULL, &r), 200);
    tg_resp_free(&r);
    /* the completed upload's reservation is returned once its connection is idle again */
    ck_assert(tg_wait_metric_at_most(&S, "thumbgate_body_reserved_bytes", 0, 20000));
}
END_TEST

START_TEST(test_conns_oversize_head_refused)
{
    const char *env[] = {"THUMBGATE_LIMITS_MAX_HEADER_BYTES=4KiB", NULL};
    tg_start(&S, env, NULL);
    int fd = tg_connect(&S);
    ck_assert_int_ge(fd, 0);
    char line[1100];
    memset(line, 'a', sizeof(line));
    memcpy(line, "X-Pad: ", 7);
    line[sizeof(line) - 2] = '\r';
    line[sizeof(line) - 1] = '\n';
    const char *start = "GET /x.jpg HTTP/1.1\r\nHost: x\r\n";
    ck_assert_int_eq(write(fd, start, strlen(start)), (ssize_t)strlen(start));
    /* a head that never ends: it is cut once it passes max_header_bytes */
    for (int i = 0; i < 8; i++)
        ck_assert_int_eq(write(fd, line, sizeof(line)), (ssize_t)sizeof(line));
    char buf[2048];
    ck_assert_int_eq(read_status(fd, buf, sizeof(buf)), 431);
    ck_assert_ptr_nonnull(strstr(buf, "\"error\":\"header_too_large\""));
    close(fd);
    ck_assert_int_eq(tg_metric(&S, "thumbgate_conn_refused_total{reason=\"header_too_large\"}"), 1);
    /* a head under the bound is served as usual */
    tg_resp_t r;
    const char *hdrs[] = {"X-Small: yes", NULL};
    ck_assert_int_eq(tg_http(&S, "GET", "/nothing.jpg", NULL, 0, hdrs, &r), 404);
    tg_resp_free(&r);
}
END_TEST

START_TEST(test_conns_unauthenticated_write_refused_before_its_body)
{
    const char *env[] = {"THUMBGATE_AUTH_WRITE_TOKEN=s3cret", NULL};
    tg_start(&S, env, NULL);
    char buf[2048];
    /* 50 MB declared, 64 KiB sent: the answer comes without the rest of the body */
    int fd = put_partial("/big.jpg", 50000000, 65536, NULL);
    ck_assert_int_eq(read_status(fd, buf, sizeof(buf)), 401);
    ck_assert_ptr_nonnull(strstr(buf, "\"error\":\"unauthorized\""));
    ck_assert_ptr_nonnull(strstr(buf, "WWW-Authenticate: Bearer"));
    close(fd);
    fd = put_partial("/big.jpg", 50000000, 65536, "Authorization: Bearer wrong\r\n");
    ck_assert_int_eq(read_status(fd, buf, sizeof(buf)), 403);
    ck_assert_ptr_nonnull(strstr(buf, "\"error\":\"forbidden\""));
    close(fd);
    ck_assert_int_eq(tg_metric(&S, "thumbgate_conn_refused_total{reason=\"unauthorized\"}"), 2);
    ck_assert(tg_wait_metric_at_most(&S, "thumbgate_body_reserved_bytes", 0, 20000));
    /* the right token still uploads */
    size_t len;
    void *img = tg_image(64, 48, 3, "jpg", &len);
    const char *ok[] = {"Authorization: Bearer s3cret", NULL};
    tg_resp_t r;
    ck_assert_int_eq(tg_http(&S, "PUT", "/small.jpg", img, len, ok, &r), 201);
    tg_resp_free(&r);
    g_free(img);
}
END_TEST

START_TEST(test_conns_max_connections_answered)
{
    const char *env[] = {"THUMBGATE_LIMITS_MAX_CONNECTIONS=3", NULL};
    tg_start(&S, env, NULL);
    /* the harness's own readiness probes must be gone before the count starts */
    ck_assert(tg_wait_metric_at_most(&S, "thumbgate_open_connections", 0, 20000));
    /* three uploads under way: a body being received is never closed to make room */
    int fds[3];
    char path[32];
    for (int i = 0; i < 3; i++) {
        snprintf(path, sizeof(path), "/up%d.jpg", i);
        fds[i] = put_partial(path, 100000, 1000, NULL);
    }
    ck_assert(tg_wait_metric(&S, "thumbgate_body_reserved_bytes", 300000, 20000));
    int over = tg_connect(&S);
    ck_assert_int_ge(over, 0);
    char buf[2048];
    ck_assert_int_eq(read_status(over, buf, sizeof(buf)), 503);
    ck_assert_ptr_nonnull(strstr(buf, "\"error\":\"too_many_connections\""));
    ck_assert_ptr_nonnull(strstr(buf, "Retry-After: "));
    close(over);
    ck_assert_int_ge(tg_metric(&S, "thumbgate_conn_refused_total{reason=\"max_connections\"}"), 1);
    close(fds[0]);
    ck_assert(tg_wait_metric_at_most(&S, "thumbgate_open_connections", 2, 20000));
    tg_resp_t r;
    ck_assert_int_eq(tg_http(&S, "GET", "/none.jpg", NULL, 0, NULL, &r), 404);
    tg_resp_free(&r);
    close(fds[1]);
    close(fds[2]);
}
END_TEST

/* GET /none.jpg until it is served (404), polling with an overall bound. */
static bool served_within(int timeout_ms)
{
    for (int waited = 0; waited < timeout_ms; waited += 50) {
        tg_resp_t r;
        long st = tg_http(&S, "GET", "/none.jpg", NULL, 0, NULL, &r);
        tg_resp_free(&r);
        if (st == 404)
            return true;
        poll(NULL, 0, 50);
    }
    return false;
}

/* A server limited to two connections on one loop, and two idle connections open on it. */
static void start_full_of_idle(int idle[2])
{
    /* one loop: a victim is looked for on the loop that accepts */
    const char *env[] = {"THUMBGATE_LIMITS_MAX_CONNECTIONS=2", "THUMBGATE_THREADS=1", NULL};
    tg_start(&S, env, NULL);
    ck_assert(tg_wait_metric_at_most(&S, "thumbgate_open_connections", 0, 20000));
    for (int i = 0; i < 2; i++) {
        idle[i] = tg_connect(&S);
        ck_assert_int_ge(idle[i], 0);
    }
    ck_assert(tg_wait_metric(&S, "thumbgate_open_connections", 2, 20000));
}

/* At the limit, a connection idle for a while makes room for a new one instead of the
 * new one being refused: an idle flood cannot lock clients out. */
START_TEST(test_conns_idle_connection_makes_room)
{
    int idle[2];
    start_full_of_idle(idle);
    /* refused while they have been idle for less than a second, served after */
    ck_assert(served_within(20000));
    ck_assert_int_eq(tg_metric(&S, "thumbgate_conn_refused_total{reason=\"idle_closed\"}"), 1);
    /* the one idle the longest was closed: it reads the end of the stream */
    char buf[64];
    ck_assert_uint_eq(tg_read_all(idle[0], buf, sizeof(buf), 20000), 0);
    close(idle[0]);
    close(idle[1]);
}
END_TEST

/* At the limit with nobody to close yet (both connections fresh), a new connection is not
 * turned away: it waits in the accept queue until one of them has been idle long enough
 * to make room, and its first request is served. Before the listener was held, it was
 * answered 503 at once. */
START_TEST(test_conns_full_waits_for_room)
{
    int idle[2];
    start_full_of_idle(idle);
    tg_resp_t r;
    ck_assert_int_eq(tg_http(&S, "GET", "/none.jpg", NULL, 0, NULL, &r), 404);
    tg_resp_free(&r);
    ck_assert_int_eq(tg_metric(&S, "thumbgate_conn_refused_total{reason=\"max_connections\"}"), 0);
    ck_assert_int_eq(tg_metric(&S, "thumbgate_conn_refused_total{reason=\"idle_closed\"}"), 1);
    char buf[64];
    ck_assert_uint_eq(tg_read_all(idle[0], buf, sizeof(buf), 20000), 0);
    close(idle[0]);
    close(idle[1]);
}
END_TEST

/* At the limit, the slowest request head is answered 408 and closed to make room. */
START_TEST(test_conns_slow_head_makes_room)
{
    const char *env[] = {"THUMBGATE_LIMITS_MAX_CONNECTIONS=2", "THUMBGATE_THREADS=1", NULL};
    tg_start(&S, env, NULL);
    ck_assert(tg_wait_metric_at_most(&S, "thumbgate_open_connections", 0, 20000));
    int slow[2];
    for (int i = 0; i < 2; i++) {
        slow[i] = tg_connect(&S);
        ck_assert_int_ge(slow[i], 0);
        ck_assert_int_eq(write(slow[i], "GET /x.jpg HTTP/1.1\r\n", 21), 21);
        /* each head seen before the next starts, so their order is known */
        ck_assert(tg_wait_metric(&S, "thumbgate_open_connections", i + 1, 20000));
    }
    ck_assert(served_within(20000));
    ck_assert_int_eq(tg_metric(&S, "thumbgate_conn_refused_total{reason=\"slow_head_closed\"}"), 1);
    char buf[2048];
    ck_assert_int_eq(read_status(slow[0], buf, sizeof(buf)), 408);
    ck_assert_ptr_nonnull(strstr(buf, "\"error\":\"request_timeout\""));
    close(slow[0]);
    close(slow[1]);
}
END_TEST

/* A body that would have to spill to a full disk is answered 507 from its head: h2o
 * itself would drop the connection without a word when its spill file cannot grow. */
START_TEST(test_conns_large_body_to_full_disk_is_507)
{
    char dir[64];
    if (!tg_mount_tmpfs("8m", dir, sizeof(dir))) {
        fprintf(stderr,
                "test_conns_large_body_to_full_disk_is_507: cannot mount a tmpfs: skipped\n");
        return;
    }
    char root[128], filler[128];
    snprintf(root, sizeof(root), "%s/store", dir);
    snprintf(filler, sizeof(filler), "%s/filler", dir);
    tg_start(&S, NULL, root);
    tg_fill_disk(filler);
    int fd = put_partial("/big.jpg", 2000000, 0, NULL);
    char buf[2048];
    int st = read_status(fd, buf, sizeof(buf));
    ck_assert_msg(st == 507, "got %d: %s (disk_full %g, reserved %g, open %g)", st, buf,
                  tg_metric(&S, "thumbgate_conn_refused_total{reason=\"disk_full\"}"),
                  tg_metric(&S, "thumbgate_body_reserved_bytes"),
                  tg_metric(&S, "thumbgate_open_connections"));
    ck_assert_ptr_nonnull(strstr(buf, "\"error\":\"storage_full\""));
    close(fd);
    ck_assert_int_eq(tg_metric(&S, "thumbgate_conn_refused_total{reason=\"disk_full\"}"), 1);
    /* room again: the same upload is taken */
    unlink(filler);
    size_t len;
    void *img = tg_image(600, 400, 3, "png", &len);
    tg_resp_t r;
    ck_assert_int_eq(tg_http(&S, "PUT", "/big.png", img, len, NULL, &r), 201);
    tg_resp_free(&r);
    g_free(img);
    tg_cleanup(&S);
    umount2(dir, MNT_DETACH);
    rmdir(dir);
}
END_TEST

Suite *conns_suite(void); /* called by check_main.c */
Suite *conns_suite(void)
{
    Suite *s = suite_create("conns");
    TCase *t = tcase_create("connguard");
    tcase_add_checked_fixture(t, tg_fixture_setup, teardown);
    tcase_set_timeout(t, 90);
    tcase_add_test(t, test_conns_body_reservation_refuses_before_the_body);
    tcase_add_test(t, test_conns_oversize_head_refused);
    tcase_add_test(t, test_conns_unauthenticated_write_refused_before_its_body);
    tcase_add_test(t, test_conns_max_connections_answered);
    tcase_add_test(t, test_conns_idle_connection_makes_room);
    tcase_add_test(t, test_conns_full_waits_for_room);
    tcase_add_test(t, test_conns_slow_head_makes_room);
    tcase_add_test(t, test_conns_large_body_to_full_disk_is_507);
    suite_add_tcase(s, t);
    return s;
}
