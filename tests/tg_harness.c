/* Integration-test harness (see tg_harness.h). The server is a child process found by
 * THUMBGATE_BIN; readiness is awaited by connecting (bounded retries), never by sleeping
 * a fixed time. */
#include "tests/tg_harness.h"

#include <arpa/inet.h>
#include <check.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <math.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <vips/vips.h>

int tg_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t l = sizeof(a);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    getsockname(fd, (struct sockaddr *)&a, &l);
    close(fd);
    return ntohs(a.sin_port);
}

static int connect_port(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

bool tg_port_open(int port)
{
    int fd = connect_port(port);
    if (fd < 0)
        return false;
    close(fd);
    return true;
}

uint64_t tg_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static size_t discard_body(char *p, size_t size, size_t n, void *arg)
{
    (void)p;
    (void)arg;
    return size * n;
}

void tg_start(tg_server_t *s, const char *const *env, const char *root)
{
    const char *bin = getenv("THUMBGATE_BIN");
    ck_assert_msg(bin != NULL, "THUMBGATE_BIN is not set (run through make test)");
    memset(s, 0, sizeof(*s));
    if (root != NULL) {
        snprintf(s->root, sizeof(s->root), "%s", root);
    } else {
        snprintf(s->root, sizeof(s->root), "/tmp/tgtest.XXXXXX");
        ck_assert_ptr_nonnull(mkdtemp(s->root));
    }
    snprintf(s->log, sizeof(s->log), "%s.log", s->root);
    /* two free ports; a rare clash with another process shows as a start failure below */
    s->port = tg_free_port();
    do
        s->admin_port = tg_free_port();
    while (s->admin_port == s->port);

    /* tests/s3-api.sh: the suites again on the s3 backend, a bucket of each root's own
     * (a restart on the same root finds its bucket; no test sees another's results) */
    const char *s3 = getenv("TG_S3_ENDPOINT");
    char s3env[2][400] = {{0}};
    if (s3 != NULL) {
        uint64_t h = 1469598103934665603ull;
        for (const char *c = s->root; *c; c++)
            h = (h ^ (unsigned char)*c) * 1099511628211ull;
        char url[600];
        snprintf(s3env[0], sizeof(s3env[0]), "THUMBGATE_STORAGE_S3_BUCKET=tg-%016" PRIx64, h);
        snprintf(url, sizeof(url), "%s/tg-%016" PRIx64, s3, h);
        CURL *c = curl_easy_init(); /* s3rver creates a bucket for an unsigned PUT */
        curl_easy_setopt(c, CURLOPT_URL, url);
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, "PUT");
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard_body); /* exists already: fine */
        curl_easy_setopt(c, CURLOPT_TIMEOUT, 30L);
        ck_assert_msg(curl_easy_perform(c) == CURLE_OK, "no S3 store at %s", s3);
        curl_easy_cleanup(c);
        snprintf(s3env[1], sizeof(s3env[1]), "THUMBGATE_STORAGE_S3_ENDPOINT=%s", s3);
    }

    pid_t parent = getpid();
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        /* Check runs each test in a forked child and skips the teardown of a failing one:
         * the server dies with its test process instead of outliving it */
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent)
            _exit(127);
        char listen[64], admin[64], rootenv[300];
        snprintf(listen, sizeof(listen), "THUMBGATE_LISTEN=127.0.0.1:%d", s->port);
        snprintf(admin, sizeof(admin), "THUMBGATE_ADMIN_LISTEN=127.0.0.1:%d", s->admin_port);
        snprintf(rootenv, sizeof(rootenv), "THUMBGATE_STORAGE_ROOT=%s", s->root);
        putenv(listen);
        putenv(admin);
        putenv(rootenv);
        putenv("THUMBGATE_THREADS=2");
        putenv("THUMBGATE_LOG_ACCESS=false");
        if (s3 != NULL) { /* before the test's own, which may name another store */
            putenv(s3env[0]);
            putenv(s3env[1]);
            putenv("THUMBGATE_STORAGE_BACKEND=s3");
            putenv("THUMBGATE_STORAGE_S3_ACCESS_KEY=S3RVER");
            putenv("THUMBGATE_STORAGE_S3_SECRET_KEY=S3RVER");
        }
        for (size_t i = 0; env && env[i]; i++)
            putenv((char *)env[i]);
        const char *host = getenv("TG_LISTEN_HOST"); /* test-only: listen on another address */
        if (host != NULL) {
            snprintf(listen, sizeof(listen), "THUMBGATE_LISTEN=%s:%d", host, s->port);
            putenv(listen);
        }
        int fd = open(s->log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        dup2(fd, 2);
        dup2(fd, 1);
        execl(bin, bin, (char *)NULL);
        _exit(127);
    }
    s->pid = pid;
    /* generous: under a loaded box (or with every allocation sampled by the heap profiler)
     * start-up has taken over 20 s; a server that cannot start still fails here, and one that
     * exits is seen at once by the waitpid below */
    uint64_t deadline = tg_now_ms() + 120000;
    for (int delay = 1;; delay = delay < 50 ? delay * 2 : 50) {
        int a = connect_port(s->port), b = connect_port(s->admin_port);
        if (a >= 0)
            close(a);
        if (b >= 0)
            close(b);
        if (a >= 0 && b >= 0)
            return;
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid)
            ck_abort_msg("thumbgate exited during start (status %d); see %s", st, s->log);
        ck_assert_msg(tg_now_ms() < deadline, "thumbgate did not start listening; see %s", s->log);
        poll(NULL, 0, delay); /* bounded back-off while polling the readiness condition */
    }
}

int tg_stop(tg_server_t *s)
{
    if (s->pid <= 0)
        return 0;
    int st = 0;
    kill(s->pid, SIGTERM);
    waitpid(s->pid, &st, 0);
    s->pid = 0;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -WTERMSIG(st);
}

static int rm_entry(const char *p, const struct stat *sb, int type, struct FTW *f)
{
    return remove(p);
}

int tg_rmtree(const char *dir)
{
    return nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

unsigned tg_log_lines(const char *log, const char *needle, char *first, size_t n)
{
    FILE *f = fopen(log, "r");
    char line[8192];
    unsigned c = 0;
    while (f && fgets(line, sizeof(line), f))
        if (strstr(line, needle) && c++ == 0 && first)
            snprintf(first, n, "%s", line);
    if (f)
        fclose(f);
    return c;
}

unsigned tg_wait_log_line(const char *log, const char *needle, char *first, size_t n,
                          int timeout_ms)
{
    uint64_t deadline = tg_now_ms() + (uint64_t)timeout_ms;
    unsigned c;
    for (int delay = 1; (c = tg_log_lines(log, needle, first, n)) == 0 && tg_now_ms() < deadline;
         delay = delay < 20 ? delay * 2 : 20)
        poll(NULL, 0, delay);
    return c;
}

void tg_mkdtemp(char *dir, size_t len, const char *prefix)
{
    const char *t = getenv("TMPDIR");
    ck_assert_int_lt(snprintf(dir, len, "%s/%s-XXXXXX", t && *t ? t : "/tmp", prefix), (int)len);
    ck_assert_ptr_nonnull(mkdtemp(dir));
}

void *tg_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    ck_assert_ptr_nonnull(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    void *buf = malloc((size_t)n + 1);
    ck_assert_ptr_nonnull(buf);
    ck_assert_uint_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return buf;
}

void tg_write_file(const char *path, const void *buf, size_t len)
{
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(buf, 1, len, f), len);
    ck_assert_int_eq(fclose(f), 0);
}

double tg_psnr(VipsImage *a, VipsImage *b)
{
    ck_assert_int_eq(a->Xsize, b->Xsize);
    ck_assert_int_eq(a->Ysize, b->Ysize);
    ck_assert_int_eq(a->Bands, b->Bands);
    VipsImage *ctx = vips_image_new();
    VipsImage **t = (VipsImage **)vips_object_local_array(VIPS_OBJECT(ctx), 4);
    double mse;
    ck_assert_int_eq(vips_subtract(a, b, &t[0], NULL), 0);
    ck_assert_int_eq(vips_multiply(t[0], t[0], &t[1], NULL), 0);
    ck_assert_msg(vips_avg(t[1], &mse, NULL) == 0, "avg: %s", vips_error_buffer());
    g_object_unref(ctx);
    return mse == 0 ? 1000.0 : 10.0 * log10(255.0 * 255.0 / mse);
}

VipsImage *tg_detail_image(int w, int h, int bands, bool alpha)
{
    VipsImage *ctx = vips_image_new();
    VipsImage **t = (VipsImage **)vips_object_local_array(VIPS_OBJECT(ctx), 16);
    VipsImage *b[4];
    for (int i = 0; i < bands + (alpha ? 1 : 0) && i < 4; i++) {
        ck_assert_int_eq(
            vips_gaussnoise(&t[3 * i], w, h, "mean", 128.0, "sigma", 60.0, "seed", 17 + i, NULL),
            0);
        ck_assert_int_eq(vips_gaussblur(t[3 * i], &t[3 * i + 1], 0.8, NULL), 0);
        b[i] = t[3 * i + 1];
    }
    int n = bands + (alpha ? 1 : 0);
    ck_assert_int_eq(vips_bandjoin(b, &t[12], n, NULL), 0);
    ck_assert_int_eq(vips_xyz(&t[13], w, h, NULL), 0);
    ck_assert_int_eq(vips_extract_band(t[13], &t[14], 0, NULL), 0);
    /* a ramp over the image, a quarter of the range */
    ck_assert_int_eq(vips_linear1(t[14], &t[15], 64.0 / w, -32, NULL), 0);
    VipsImage *sum, *out;
    ck_assert_int_eq(vips_add(t[12], t[15], &sum, NULL), 0);
    ck_assert_int_eq(vips_cast(sum, &out, VIPS_FORMAT_UCHAR, NULL), 0);
    g_object_unref(sum);
    g_object_unref(ctx);
    return out;
}

void tg_cleanup(tg_server_t *s)
{
    if (s->pid > 0) {
        kill(s->pid, SIGKILL);
        waitpid(s->pid, NULL, 0);
        s->pid = 0;
    }
    tg_rmtree(s->root);
    unlink(s->log);
}

/* The response body grows geometrically: a 16 MiB GET arrives in ~16 KiB pieces, and a
 * realloc per piece made it quadratic (minutes under ASan, whose realloc always copies). */
struct sink {
    tg_resp_t *r;
    size_t cap;
};

static size_t on_body(char *p, size_t sz, size_t n, void *ud)
{
    struct sink *k = ud;
    tg_resp_t *r = k->r;
    size_t add = sz * n;
    if (r->len + add + 1 > k->cap) {
        size_t cap = k->cap ? k->cap : 4096;
        while (cap < r->len + add + 1)
            cap *= 2;
        char *b = realloc(r->body, cap);
        if (b == NULL)
            return 0;
        r->body = b;
        k->cap = cap;
    }
    memcpy(r->body + r->len, p, add);
    r->len += add;
    r->body[r->len] = '\0';
    return add;
}

static size_t on_header(char *p, size_t sz, size_t n, void *ud)
{
    tg_resp_t *r = ud;
    size_t have = strlen(r->headers), add = sz * n;
    if (have + add < sizeof(r->headers)) {
        memcpy(r->headers + have, p, add);
        r->headers[have + add] = '\0';
    }
    return add;
}

static long do_http(int port, const char *method, const char *path, const void *body, size_t len,
                    const char *const *hdrs, tg_resp_t *r)
{
    memset(r, 0, sizeof(*r));
    CURL *c = curl_easy_init();
    char url[1200];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", port, path);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_PATH_AS_IS, 1L);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    if (strcmp(method, "HEAD") == 0)
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    if (body != NULL) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    }
    struct curl_slist *h = curl_slist_append(NULL, "Expect:");
    for (size_t i = 0; hdrs && hdrs[i]; i++)
        h = curl_slist_append(h, hdrs[i]);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    struct sink sink = {.r = r};
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &sink);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 60L);
    CURLcode rc = curl_easy_perform(c);
    if (rc == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
    else
        r->status = -(long)rc;
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    return r->status;
}

long tg_http(tg_server_t *s, const char *method, const char *path, const void *body, size_t len,
             const char *const *hdrs, tg_resp_t *r)
{
    return do_http(s->port, method, path, body, len, hdrs, r);
}

long tg_admin(tg_server_t *s, const char *path, tg_resp_t *r)
{
    return do_http(s->admin_port, "GET", path, NULL, 0, NULL, r);
}

void tg_resp_free(tg_resp_t *r)
{
    free(r->body);
    r->body = NULL;
}

bool tg_header(const tg_resp_t *r, const char *name, char *out, size_t outlen)
{
    size_t nl = strlen(name);
    for (const char *p = r->headers; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL) {
        if (strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
            const char *v = p + nl + 1;
            while (*v == ' ')
                v++;
            size_t l = strcspn(v, "\r\n");
            snprintf(out, outlen, "%.*s", (int)l, v);
            return true;
        }
    }
    return false;
}

double tg_metric_in(const char *body, const char *sample)
{
    size_t l = strlen(sample);
    for (const char *p = body; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
        if (strncmp(p, sample, l) == 0 && p[l] == ' ')
            return strtod(p + l + 1, NULL);
    return -1;
}

double tg_metric(tg_server_t *s, const char *sample)
{
    tg_resp_t r;
    double v = -1;
    if (tg_admin(s, "/metrics", &r) == 200 && r.body)
        v = tg_metric_in(r.body, sample);
    tg_resp_free(&r);
    return v;
}

bool tg_wait_metric(tg_server_t *s, const char *sample, double v, int timeout_ms)
{
    uint64_t deadline = tg_now_ms() + (uint64_t)timeout_ms;
    for (int delay = 1; tg_now_ms() < deadline; delay = delay < 20 ? delay * 2 : 20) {
        if (tg_metric(s, sample) >= v)
            return true;
        poll(NULL, 0, delay);
    }
    return tg_metric(s, sample) >= v;
}

bool tg_wait_metric_at_most(tg_server_t *s, const char *sample, double v, int timeout_ms)
{
    uint64_t deadline = tg_now_ms() + (uint64_t)timeout_ms;
    for (int delay = 1;; delay = delay < 20 ? delay * 2 : 20) {
        double m = tg_metric(s, sample);
        if (m >= 0 && m <= v)
            return true;
        if (tg_now_ms() >= deadline)
            return false;
        poll(NULL, 0, delay);
    }
}

static bool admin_has(tg_server_t *s, const char *path, long status, const char *needle)
{
    tg_resp_t r = {0};
    bool has = tg_admin(s, path, &r) == status && r.body && strstr(r.body, needle);
    tg_resp_free(&r);
    return has;
}

bool tg_wait_admin(tg_server_t *s, const char *path, long status, const char *needle,
                   int timeout_ms)
{
    uint64_t deadline = tg_now_ms() + (uint64_t)timeout_ms;
    for (int delay = 1; tg_now_ms() < deadline; delay = delay < 20 ? delay * 2 : 20) {
        if (admin_has(s, path, status, needle))
            return true;
        poll(NULL, 0, delay);
    }
    return admin_has(s, path, status, needle);
}

int tg_connect(tg_server_t *s)
{
    return connect_port(s->port);
}

int tg_send_get(tg_server_t *s, const char *path)
{
    char req[600];
    int n = snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", path);
    int fd = tg_connect(s);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, req, (size_t)n), n);
    return fd;
}

size_t tg_read_all(int fd, char *buf, size_t cap, int timeout_ms)
{
    size_t n = 0;
    while (n + 1 < cap) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, timeout_ms) <= 0)
            break;
        ssize_t r = read(fd, buf + n, cap - 1 - n);
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    buf[n] = '\0';
    return n;
}

void *tg_image(int w, int h, int bands, const char *fmt, size_t *len)
{
    VipsImage *noise = NULL, *cast = NULL, *joined = NULL;
    void *buf = NULL;
    /* smooth gradient plus noise: compresses like a photo, not like a flat fill */
    ck_assert_int_eq(vips_gaussnoise(&noise, w, h, "mean", 128.0, "sigma", 40.0, NULL), 0);
    ck_assert_int_eq(vips_cast_uchar(noise, &cast, NULL), 0);
    VipsImage *in = cast;
    if (bands > 1) {
        VipsImage *arr[4] = {cast, cast, cast, cast};
        ck_assert_int_eq(vips_bandjoin(arr, &joined, bands, NULL), 0);
        in = joined;
        if (bands >= 3)
            in->Type = VIPS_INTERPRETATION_sRGB;
    }
    char suffix[32];
    snprintf(suffix, sizeof(suffix), ".%s", fmt);
    ck_assert_int_eq(vips_image_write_to_buffer(in, suffix, &buf, len, NULL), 0);
    g_object_unref(noise);
    g_object_unref(cast);
    if (joined)
        g_object_unref(joined);
    return buf;
}

bool tg_dims(const void *buf, size_t len, int *w, int *h)
{
    VipsImage *im = vips_image_new_from_buffer(buf, len, "", NULL);
    if (im == NULL) {
        vips_error_clear();
        return false;
    }
    *w = vips_image_get_width(im);
    *h = vips_image_get_height(im);
    g_object_unref(im);
    return true;
}

void tg_fixture_setup(void)
{
    ck_assert_int_eq(VIPS_INIT("thumbgate-tests"), 0);
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

void tg_put_image(tg_server_t *s, const char *path, int w, int h, const char *fmt)
{
    size_t len;
    void *img = tg_image(w, h, 3, fmt, &len);
    tg_resp_t r;
    ck_assert_msg(tg_http(s, "PUT", path, img, len, NULL, &r) == 201, "PUT %s: %ld", path,
                  r.status);
    tg_resp_free(&r);
    g_free(img);
}

bool tg_mount_tmpfs(const char *size, char *dir, size_t dirlen)
{
    snprintf(dir, dirlen, "/tmp/tgfull.XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
    char opts[64];
    snprintf(opts, sizeof(opts), "size=%s", size);
    if (mount("tmpfs", dir, "tmpfs", 0, opts) != 0) {
        rmdir(dir);
        return false;
    }
    return true;
}

void tg_fill_disk(const char *path)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ck_assert_int_ge(fd, 0);
    static char block[65536];
    while (write(fd, block, sizeof(block)) > 0)
        ;
    while (write(fd, block, 512) > 0)
        ;
    while (write(fd, block, 1) > 0)
        ;
    close(fd);
}

void tg_expect_bytes(tg_server_t *s, const char *path, const void *want, size_t len)
{
    tg_resp_t r;
    long st = tg_http(s, "GET", path, NULL, 0, NULL, &r);
    ck_assert_msg(st == 200, "GET %s: %ld", path, st);
    ck_assert_uint_eq(r.len, len);
    ck_assert(memcmp(r.body, want, len) == 0);
    tg_resp_free(&r);
}

void tg_expect_dims(tg_server_t *s, const char *path, int w, int h, const char *mime)
{
    tg_resp_t r;
    char ct[64];
    ck_assert_msg(tg_http(s, "GET", path, NULL, 0, NULL, &r) == 200, "%s: %ld %s", path, r.status,
                  r.body);
    ck_assert(tg_header(&r, "content-type", ct, sizeof(ct)));
    ck_assert_str_eq(ct, mime);
    int gw, gh;
    ck_assert_msg(tg_dims(r.body, r.len, &gw, &gh), "%s: not decodable", path);
    ck_assert_msg(abs(gw - w) <= 1 && abs(gh - h) <= 1 && (gw == w || gh == h),
                  "%s: got %dx%d want %dx%d", path, gw, gh, w, h);
    tg_resp_free(&r);
}
