/* check_s3 — storage.backend s3 against a real S3-compatible server on loopback: s3rver
 * (npm, pinned in tests/s3rver/package.json; `make deps` installs it), started and stopped
 * by PID on a free port for each test. Originals, derived results, conditional GET,
 * DELETE removing the derived objects, a store that goes down and comes back mid-run, and
 * two nodes that share nothing but the bucket. Objects are checked in s3rver's directory
 * (<dir>/<bucket>/<key>._S3rver_object). Skipped, with a message, only when node or the
 * s3rver package is absent. */
#include <check.h>
#include <fcntl.h>
#include <ftw.h>
#include <glib.h>
#include <libgen.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "config/cfg.h"
#include "server/memplan.h"
#include "server/s3.h"
#include "tests/tg_harness.h"

#define BUCKET "tg"

typedef struct {
    pid_t pid;
    int port;
    char dir[256];
} s3rver_t;

static s3rver_t R;
static tg_server_t A, B;
static char script[1024];

/* The double's entry script (tests/s3rver/atomic.js: s3rver with S3's PUT) beside this
 * checkout (THUMBGATE_BIN is <repo>/build/<v>/thumbgate), or in the current directory;
 * false when node or the s3rver package is missing. */
static bool find_s3rver(void)
{
    if (system("node --version >/dev/null 2>&1") != 0)
        return false;
    const char *bin = getenv("THUMBGATE_BIN");
    char repo[900] = ".", pkg[1024];
    if (bin != NULL) {
        char b[900];
        snprintf(b, sizeof(b), "%s", bin);
        snprintf(repo, sizeof(repo), "%s/../../..", dirname(b));
    }
    for (int i = 0; i < 2; i++) {
        const char *r = i == 0 ? repo : ".";
        snprintf(pkg, sizeof(pkg), "%s/tests/s3rver/node_modules/s3rver/bin/s3rver.js", r);
        snprintf(script, sizeof(script), "%s/tests/s3rver/atomic.js", r);
        if (access(pkg, R_OK) == 0 && access(script, R_OK) == 0)
            return true;
    }
    return false;
}

#define NEED_S3RVER()                                                                              \
    do {                                                                                           \
        if (!find_s3rver()) {                                                                      \
            fprintf(stderr,                                                                        \
                    "check_s3: SKIPPED %s: node or tests/s3rver/node_modules (s3rver) "            \
                    "is missing; run `make deps`\n",                                               \
                    __func__);                                                                     \
            return;                                                                                \
        }                                                                                          \
    } while (0)

/* Starts s3rver on R.port (a new free one when 0) over R.dir; waits until it accepts. */
static void s3rver_start(void)
{
    if (R.dir[0] == '\0')
        tg_mkdtemp(R.dir, sizeof(R.dir), "tg-s3rver");
    if (R.port == 0)
        R.port = tg_free_port();
    pid_t parent = getpid();
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent)
            _exit(127);
        char port[16], log[300];
        snprintf(port, sizeof(port), "%d", R.port);
        snprintf(log, sizeof(log), "%s.log", R.dir);
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        dup2(fd, 1);
        dup2(fd, 2);
        execlp("node", "node", script, "-d", R.dir, "-a", "127.0.0.1", "-p", port, "-s",
               "--configure-bucket", BUCKET, (char *)NULL);
        _exit(127);
    }
    R.pid = pid;
    uint64_t deadline = tg_now_ms() + 60000;
    for (int delay = 5; !tg_port_open(R.port); delay = delay < 100 ? delay * 2 : 100) {
        int st;
        ck_assert_msg(waitpid(pid, &st, WNOHANG) != pid, "s3rver exited; see %s.log", R.dir);
        ck_assert_msg(tg_now_ms() < deadline, "s3rver did not listen; see %s.log", R.dir);
        poll(NULL, 0, delay);
    }
}

static void s3rver_stop(void)
{
    if (R.pid > 0) {
        kill(R.pid, SIGTERM);
        waitpid(R.pid, NULL, 0);
        R.pid = 0;
    }
}

static void setup(void)
{
    tg_fixture_setup();
    memset(&R, 0, sizeof(R));
    memset(&A, 0, sizeof(A));
    memset(&B, 0, sizeof(B));
}

static void teardown(void)
{
    tg_stop(&A);
    tg_stop(&B);
    if (A.root[0])
        tg_cleanup(&A);
    if (B.root[0])
        tg_cleanup(&B);
    s3rver_stop();
    if (R.dir[0]) {
        char p[300];
        tg_rmtree(R.dir);
        snprintf(p, sizeof(p), "%s.log", R.dir);
        unlink(p);
        snprintf(p, sizeof(p), "%s.secret", R.dir);
        unlink(p);
    }
}

/* A thumbgate node on the bucket; @p revalidate: storage.s3.revalidate */
static void node_start_env(tg_server_t *s, const char *revalidate, const char *extra);
static void node_start(tg_server_t *s, const char *revalidate)
{
    node_start_env(s, revalidate, NULL);
}

static void node_start_env(tg_server_t *s, const char *revalidate, const char *extra)
{
    static char ep[128], rv[64], keyfile[400];
    snprintf(ep, sizeof(ep), "THUMBGATE_STORAGE_S3_ENDPOINT=http://127.0.0.1:%d", R.port);
    snprintf(rv, sizeof(rv), "THUMBGATE_STORAGE_S3_REVALIDATE=%s", revalidate);
    /* the secret comes from a file, as from a mounted Secret (with its trailing newline) */
    char path[300];
    snprintf(path, sizeof(path), "%s.secret", R.dir);
    tg_write_file(path, "S3RVER\n", 7);
    snprintf(keyfile, sizeof(keyfile), "THUMBGATE_STORAGE_S3_SECRET_KEY_FILE=%s", path);
    const char *env[] = {"THUMBGATE_STORAGE_BACKEND=s3",
                         ep,
                         "THUMBGATE_STORAGE_S3_BUCKET=" BUCKET,
                         "THUMBGATE_STORAGE_S3_ACCESS_KEY=S3RVER",
                         keyfile,
                         "THUMBGATE_STORAGE_S3_CONNECT_TIMEOUT=1s",
                         "THUMBGATE_STORAGE_S3_TIMEOUT=10s",
                         "THUMBGATE_STORAGE_S3_CHECK_INTERVAL=100ms",
                         rv,
                         extra,
                         NULL};
    char root[256]; /* tg_start clears *s first */
    snprintf(root, sizeof(root), "%s", s->root);
    tg_start(s, env, root[0] ? root : NULL);
}

/* Polls /readyz until its status is @p want (bounded). */
static bool wait_ready(tg_server_t *s, long want)
{
    uint64_t deadline = tg_now_ms() + 30000;
    for (;;) {
        tg_resp_t r;
        long st = tg_admin(s, "/readyz", &r);
        bool store = r.body && strstr(r.body, "\"store_ready\":true");
        tg_resp_free(&r);
        if (st == want && store == (want == 200))
            return true;
        if (tg_now_ms() > deadline)
            return false;
        poll(NULL, 0, 20);
    }
}

static bool bucket_has(const char *key)
{
    char p[1200];
    snprintf(p, sizeof(p), "%s/%s/%s._S3rver_object", R.dir, BUCKET, key);
    return access(p, F_OK) == 0;
}

/* Number of objects under @p prefix/ (a directory in s3rver's tree) */
static int bucket_count(const char *prefix)
{
    char cmd[1400];
    snprintf(cmd, sizeof(cmd), "find '%s/%s/%s' -name '*._S3rver_object' 2>/dev/null | wc -l",
             R.dir, BUCKET, prefix);
    FILE *f = popen(cmd, "r");
    int n = -1;
    if (f != NULL) {
        if (fscanf(f, "%d", &n) != 1)
            n = -1;
        pclose(f);
    }
    return n;
}

static bool wait_bucket_count(const char *prefix, int want)
{
    uint64_t deadline = tg_now_ms() + 30000;
    while (bucket_count(prefix) != want) {
        if (tg_now_ms() > deadline)
            return false;
        poll(NULL, 0, 20);
    }
    return true;
}

static void put_bytes(tg_server_t *s, const char *path, const void *buf, size_t len, long want)
{
    tg_resp_t r;
    long st = tg_http(s, "PUT", path, buf, len, NULL, &r);
    ck_assert_msg(st == want, "PUT %s: %ld %s", path, st, r.body ? r.body : "");
    tg_resp_free(&r);
}

static void expect_dims(tg_server_t *s, const char *path, int w, int h)
{
    tg_resp_t r;
    long st = tg_http(s, "GET", path, NULL, 0, NULL, &r);
    ck_assert_msg(st == 200, "GET %s: %ld %s", path, st, r.body ? r.body : "");
    int gw, gh;
    ck_assert(tg_dims(r.body, r.len, &gw, &gh));
    ck_assert_int_eq(gw, w);
    ck_assert_int_eq(gh, h);
    tg_resp_free(&r);
}

static long get_status(tg_server_t *s, const char *path)
{
    tg_resp_t r;
    long st = tg_http(s, "GET", path, NULL, 0, NULL, &r);
    tg_resp_free(&r);
    return st;
}

START_TEST(test_s3_originals_derived_conditional)
{
    NEED_S3RVER();
    s3rver_start();
    node_start(&A, "1s");
    ck_assert(wait_ready(&A, 200));
    size_t len;
    void *img = tg_image(800, 600, 3, "jpg", &len);
    put_bytes(&A, "/img/cat.jpg", img, len, 201);
    /* the object is the upload, byte for byte */
    char obj[600];
    snprintf(obj, sizeof(obj), "%s/%s/orig/img/cat.jpg._S3rver_object", R.dir, BUCKET);
    size_t olen;
    void *stored = tg_read_file(obj, &olen);
    ck_assert_uint_eq(olen, len);
    ck_assert(memcmp(stored, img, len) == 0);
    free(stored);
    tg_resp_t r;
    tg_expect_bytes(&A, "/img/cat.jpg", img, len);

    /* derived: made here, served, and published to the bucket for the other nodes */
    expect_dims(&A, "/img/cat_400x400.jpg", 400, 300);
    ck_assert(wait_bucket_count("derived/img/cat~", 1));
    /* conditional GET from the cached result */
    char etag[128], h[200];
    ck_assert_int_eq(tg_http(&A, "GET", "/img/cat_400x400.jpg", NULL, 0, NULL, &r), 200);
    ck_assert(tg_header(&r, "etag", etag, sizeof(etag)));
    tg_resp_free(&r);
    snprintf(h, sizeof(h), "If-None-Match: %s", etag);
    const char *inm[] = {h, NULL};
    ck_assert_int_eq(tg_http(&A, "GET", "/img/cat_400x400.jpg", NULL, 0, inm, &r), 304);
    tg_resp_free(&r);

    /* a replacement replaces the object, and the old results in the bucket go */
    void *img2 = tg_image(500, 500, 3, "jpg", &len);
    put_bytes(&A, "/img/cat.jpg", img2, len, 200);
    ck_assert(wait_bucket_count("derived/img/cat~", 0));
    expect_dims(&A, "/img/cat_400x400.jpg", 400, 400);
    g_free(img2);

    /* a restart keeps the local copies and reads the bucket for what it lacks */
    ck_assert_int_eq(tg_stop(&A), 0);
    node_start(&A, "1s");
    expect_dims(&A, "/img/cat_400x400.jpg", 400, 400);
    g_free(img);
    ck_assert_int_eq(tg_stop(&A), 0); /* clean exit: no leak, no crash in the drain */
}
END_TEST

static uint64_t tree_bytes;
static int on_file(const char *p, const struct stat *sb, int type, struct FTW *f)
{
    if (type == FTW_F)
        tree_bytes += (uint64_t)sb->st_size;
    return 0;
}

static uint64_t local_orig_bytes(const tg_server_t *s)
{
    char dir[300];
    snprintf(dir, sizeof(dir), "%s/orig", s->root);
    tree_bytes = 0;
    nftw(dir, on_file, 16, FTW_PHYS);
    return tree_bytes;
}

/* storage.s3.cache_max bounds the local copies of originals; an evicted one is fetched
 * again when asked for */
START_TEST(test_s3_local_copies_bounded)
{
    NEED_S3RVER();
    s3rver_start();
    node_start_env(&A, "1s", "THUMBGATE_STORAGE_S3_CACHE_MAX=1MiB");
    ck_assert(wait_ready(&A, 200));
    size_t len[8];
    void *img[8];
    uint64_t sum = 0;
    char path[64];
    for (int i = 0; i < 8; i++) {
        img[i] = tg_image(800, 600, 3, "jpg", &len[i]);
        sum += len[i];
        snprintf(path, sizeof(path), "/lru/p%d.jpg", i);
        put_bytes(&A, path, img[i], len[i], 201);
    }
    ck_assert_uint_gt(sum, 1u << 20); /* the bound is really exceeded */
    /* copies used in the last 10 s are kept; the checker's tick evicts them after */
    uint64_t deadline = tg_now_ms() + 90000;
    while (local_orig_bytes(&A) > (1u << 20)) {
        ck_assert_msg(tg_now_ms() < deadline, "local originals stay at %llu bytes",
                      (unsigned long long)local_orig_bytes(&A));
        poll(NULL, 0, 20);
    }
    /* (eviction goes by atime buckets: copies stored within one bucket may all go, which is
     * allowed — they are fetched again below; under ASan at load 8 all eight went) */
    for (int i = 0; i < 8; i++) {
        snprintf(path, sizeof(path), "/lru/p%d.jpg", i);
        tg_expect_bytes(&A, path, img[i], len[i]);
        g_free(img[i]);
    }
    deadline = tg_now_ms() + 90000;
    while (local_orig_bytes(&A) > (1u << 20)) {
        ck_assert_msg(tg_now_ms() < deadline, "the bound is not kept after reads");
        poll(NULL, 0, 20);
    }
    ck_assert_int_eq(tg_stop(&A), 0);
}
END_TEST

START_TEST(test_s3_delete_removes_derived)
{
    NEED_S3RVER();
    s3rver_start();
    node_start(&A, "1s");
    tg_put_image(&A, "/d/dog.jpg", 200, 200, "jpg"); /* an older original of the stem */
    tg_put_image(&A, "/d/dog.png", 300, 200, "png");
    expect_dims(&A, "/d/dog_100x100.jpg", 100, 67);
    expect_dims(&A, "/d/dog_50x50c.webp", 50, 50);
    ck_assert(wait_bucket_count("derived/d/dog~", 2));
    ck_assert(bucket_has("orig/d/dog.png"));
    tg_resp_t r;
    /* deleting the older original leaves the current one's results */
    ck_assert_int_eq(tg_http(&A, "DELETE", "/d/dog.jpg", NULL, 0, NULL, &r), 204);
    tg_resp_free(&r);
    ck_assert_int_eq(bucket_count("derived/d/dog~"), 2);
    expect_dims(&A, "/d/dog_100x100.jpg", 100, 67);
    ck_assert_int_eq(tg_http(&A, "DELETE", "/d/dog.png", NULL, 0, NULL, &r), 204);
    tg_resp_free(&r);
    ck_assert(!bucket_has("orig/d/dog.png"));
    ck_assert_int_eq(bucket_count("derived/d/dog~"), 0);
    ck_assert_int_eq(get_status(&A, "/d/dog.png"), 404);
    ck_assert_int_eq(get_status(&A, "/d/dog_100x100.jpg"), 404);
    ck_assert_int_eq(tg_http(&A, "DELETE", "/d/dog.png", NULL, 0, NULL, &r), 404);
    tg_resp_free(&r);
    ck_assert_int_eq(tg_stop(&A), 0);
}
END_TEST

START_TEST(test_s3_store_down_then_back)
{
    NEED_S3RVER();
    s3rver_start();
    node_start(&A, "0"); /* every GET asks the bucket */
    ck_assert(wait_ready(&A, 200));
    tg_put_image(&A, "/k/one.jpg", 320, 240, "jpg");

    s3rver_stop();
    size_t len;
    void *img = tg_image(200, 100, 3, "jpg", &len);
    tg_resp_t r;
    char ra[32];
    ck_assert_int_eq(tg_http(&A, "PUT", "/k/two.jpg", img, len, NULL, &r), 503);
    ck_assert(tg_header(&r, "retry-after", ra, sizeof(ra)));
    ck_assert(strstr(r.body, "store_unavailable") != NULL);
    tg_resp_free(&r);
    /* no partial original anywhere: not here, not in the bucket, no temp file left */
    char p[600];
    snprintf(p, sizeof(p), "%s/orig/k/two.jpg@", A.root);
    ck_assert_int_ne(access(p, F_OK), 0);
    ck_assert(!bucket_has("orig/k/two.jpg"));
    char cmd[700];
    snprintf(cmd, sizeof(cmd), "test -z \"$(find '%s/tmp' -name 'put.*')\"", A.root);
    ck_assert_int_eq(system(cmd), 0);
    /* reads that need the bucket: 503 with Retry-After, never a hang */
    ck_assert_int_eq(tg_http(&A, "GET", "/k/one_100x100.jpg", NULL, 0, NULL, &r), 503);
    ck_assert(tg_header(&r, "retry-after", ra, sizeof(ra)));
    tg_resp_free(&r);
    ck_assert(wait_ready(&A, 503));

    s3rver_start(); /* same port, same data */
    ck_assert(wait_ready(&A, 200));
    put_bytes(&A, "/k/two.jpg", img, len, 201);
    expect_dims(&A, "/k/one_100x100.jpg", 100, 75);
    expect_dims(&A, "/k/two_100x100.jpg", 100, 50);
    g_free(img);
    ck_assert_int_eq(tg_stop(&A), 0);
}
END_TEST

/* The ETag and Last-Modified of a 200 GET of @p path (lm may be NULL). */
static bool get_validators(tg_server_t *s, const char *path, char *etag, char *lm)
{
    tg_resp_t r;
    bool ok = tg_http(s, "GET", path, NULL, 0, NULL, &r) == 200 &&
              tg_header(&r, "etag", etag, 128) &&
              (lm == NULL || tg_header(&r, "last-modified", lm, 64));
    tg_resp_free(&r);
    return ok;
}

/* Nodes A and B send the same ETag for @p path (a weak one for a result, which may be
 * made from a mezzanine level on one node and the original on the other) and each node
 * answers the other's with 304; an original also the same Last-Modified (a result's is
 * when the node made or fetched it). */
static void expect_same_validators(const char *path, bool weak)
{
    char ea[128], eb[128], la[64], lb[64], h[200];
    ck_assert_msg(get_validators(&A, path, ea, la), "A: GET %s", path);
    ck_assert_msg(get_validators(&B, path, eb, lb), "B: GET %s", path);
    ck_assert_msg(strcmp(ea, eb) == 0, "%s: ETag %s on A, %s on B", path, ea, eb);
    ck_assert_msg(weak || strcmp(la, lb) == 0, "%s: Last-Modified %s on A, %s on B", path, la, lb);
    ck_assert_int_eq(strncmp(ea, "W/", 2) == 0, weak);
    tg_server_t *nodes[] = {&A, &B};
    for (int i = 0; i < 2; i++) {
        tg_resp_t r;
        snprintf(h, sizeof(h), "If-None-Match: %s", i == 0 ? eb : ea);
        const char *inm[] = {h, NULL};
        ck_assert_int_eq(tg_http(nodes[i], "GET", path, NULL, 0, inm, &r), 304);
        tg_resp_free(&r);
        if (weak)
            continue;
        snprintf(h, sizeof(h), "If-Modified-Since: %s", i == 0 ? lb : la);
        const char *ims[] = {h, NULL};
        ck_assert_int_eq(tg_http(nodes[i], "GET", path, NULL, 0, ims, &r), 304);
        tg_resp_free(&r);
    }
    /* If-Range compares strongly: a weak tag never matches, and the whole body is sent */
    char ir[200];
    snprintf(ir, sizeof(ir), "If-Range: %s", ea);
    const char *ranged[] = {"Range: bytes=0-9", ir, NULL};
    tg_resp_t r;
    ck_assert_int_eq(tg_http(&B, "GET", path, NULL, 0, ranged, &r), weak ? 200 : 206);
    ck_assert(weak ? r.len > 10 : r.len == 10);
    tg_resp_free(&r);
}

START_TEST(test_s3_two_nodes_share_the_bucket)
{
    NEED_S3RVER();
    s3rver_start();
    node_start(&A, "100ms");
    node_start(&B, "100ms");
    ck_assert_str_ne(A.root, B.root);
    size_t len;
    void *img = tg_image(640, 480, 3, "jpg", &len);
    put_bytes(&A, "/n/bird.jpg", img, len, 201);
    /* B never saw the upload: it reads the original and derives from the bucket */
    tg_resp_t r;
    tg_expect_bytes(&B, "/n/bird.jpg", img, len);
    expect_dims(&B, "/n/bird_160x160.webp", 160, 120);
    /* a result B published is served by A from the bucket, not decoded again */
    ck_assert(wait_bucket_count("derived/n/bird~", 1));
    double admitted = tg_metric(&A, "thumbgate_jobs_admitted_total");
    expect_dims(&A, "/n/bird_160x160.webp", 160, 120);
    ck_assert_double_eq(tg_metric(&A, "thumbgate_jobs_admitted_total"), admitted);
    /* validators come from the bucket: a tag or date one node gave is honoured by the
     * other, for the original (uploaded to A, fetched by B), for a result B made and A
     * fetched, and for one each node makes itself */
    expect_same_validators("/n/bird.jpg", false);
    char tag[128], want[100];
    gchar *md5 = g_compute_checksum_for_data(G_CHECKSUM_MD5, img, len);
    snprintf(want, sizeof(want), "\"%s\"", md5); /* the object's ETag (one-part PUT) */
    g_free(md5);
    ck_assert(get_validators(&B, "/n/bird.jpg", tag, NULL));
    ck_assert_str_eq(tag, want);
    expect_same_validators("/n/bird_160x160.webp", true);
    expect_dims(&A, "/n/bird_120x120.png", 120, 90);
    expect_dims(&B, "/n/bird_120x120.png", 120, 90);
    expect_same_validators("/n/bird_120x120.png", true);
    /* a replacement through B: A's old tag no longer matches, on A */
    char old[128], h[200];
    ck_assert(get_validators(&A, "/n/bird.jpg", old, NULL));
    void *img2 = tg_image(300, 300, 3, "jpg", &len);
    put_bytes(&B, "/n/bird.jpg", img2, len, 200);
    g_free(img2);
    snprintf(h, sizeof(h), "If-None-Match: %s", old);
    const char *inm[] = {h, NULL};
    uint64_t until = tg_now_ms() + 30000;
    while (tg_http(&A, "GET", "/n/bird.jpg", NULL, 0, inm, &r) != 200) {
        tg_resp_free(&r);
        ck_assert_msg(tg_now_ms() < until, "node A still answers 304 for a replaced original");
        poll(NULL, 0, 20);
    }
    ck_assert_uint_eq(r.len, len);
    tg_resp_free(&r);
    expect_same_validators("/n/bird.jpg", false);
    /* DELETE through A: gone for B too (within storage.s3.revalidate: polled) */
    ck_assert_int_eq(tg_http(&A, "DELETE", "/n/bird.jpg", NULL, 0, NULL, &r), 204);
    tg_resp_free(&r);
    uint64_t deadline = tg_now_ms() + 30000;
    while (get_status(&B, "/n/bird_160x160.webp") != 404 || get_status(&B, "/n/bird.jpg") != 404) {
        ck_assert_msg(tg_now_ms() < deadline, "node B still serves a deleted original");
        poll(NULL, 0, 20);
    }
    ck_assert_int_eq(bucket_count("derived/n/bird~"), 0);
    g_free(img);
    ck_assert_int_eq(tg_stop(&A), 0);
    ck_assert_int_eq(tg_stop(&B), 0);
}
END_TEST

/* A node that has not seen another's DELETE or PUT yet (revalidate 1h) still derives from
 * its copy and publishes the result after that node cleared the original's results. What
 * it published goes when it learns: a DELETE through it, which finds the object gone,
 * clears the results named after its copy's ETag; a sync that finds the copy replaced
 * clears those of the old copy. */
START_TEST(test_s3_results_published_after_the_original_went_are_cleared)
{
    NEED_S3RVER();
    s3rver_start();
    node_start(&A, "1h");
    node_start(&B, "100ms");
    tg_put_image(&A, "/o/fox.png", 300, 200, "png");
    tg_put_image(&A, "/o/owl.png", 300, 200, "png");
    tg_resp_t r;
    ck_assert_int_eq(tg_http(&B, "DELETE", "/o/fox.png", NULL, 0, NULL, &r), 204);
    tg_resp_free(&r);
    tg_put_image(&B, "/o/owl.png", 200, 200, "png");
    expect_dims(&A, "/o/fox_100x100.jpg", 100, 67); /* from A's copies: published */
    expect_dims(&A, "/o/owl_100x100.jpg", 100, 67);
    ck_assert(wait_bucket_count("derived/o/fox~", 1));
    ck_assert(wait_bucket_count("derived/o/owl~", 1));
    ck_assert_int_eq(tg_http(&A, "DELETE", "/o/fox.png", NULL, 0, NULL, &r), 204);
    tg_resp_free(&r);
    ck_assert_int_eq(bucket_count("derived/o/fox~"), 0);
    /* a restarted A checks its copy of owl.png again, finds it replaced, and fetches it */
    ck_assert_int_eq(tg_stop(&A), 0);
    node_start(&A, "1h");
    expect_dims(&A, "/o/owl.png", 200, 200);
    ck_assert_int_eq(bucket_count("derived/o/owl~"), 0);
    ck_assert_int_eq(tg_stop(&A), 0);
    ck_assert_int_eq(tg_stop(&B), 0);
}
END_TEST

/* The path of the one object under @p prefix in s3rver's tree, into @p out. */
static bool bucket_one(const char *prefix, char *out, size_t n)
{
    char cmd[1400];
    snprintf(cmd, sizeof(cmd), "find '%s/%s/%s' -name '*._S3rver_object' 2>/dev/null", R.dir,
             BUCKET, prefix);
    FILE *f = popen(cmd, "r");
    bool ok = f != NULL && fgets(out, (int)n, f) != NULL;
    if (f != NULL)
        pclose(f);
    out[strcspn(out, "\n")] = '\0';
    return ok && out[0] != '\0';
}

/* Flips bytes in the middle of the object file @p path (its length and metadata stay), as a
 * store that served a PUT still being written, or a damaged copy; returns the bytes. */
static void *damage(const char *path, size_t *len)
{
    void *good = tg_read_file(path, len);
    ck_assert_ptr_nonnull(good);
    unsigned char *bad = g_memdup2(good, *len);
    for (size_t i = *len / 2; i < *len / 2 + 16 && i < *len; i++)
        bad[i] ^= 0x5a;
    tg_write_file(path, bad, *len);
    g_free(bad);
    return good;
}

/* A body from the bucket is kept only when its MD5 is the one put with it: a damaged result
 * is made again on the node (and published again), a damaged original is 503 until the
 * bucket gives the original bytes. */
START_TEST(test_s3_damaged_objects_are_not_kept)
{
    NEED_S3RVER();
    s3rver_start();
    node_start(&A, "1h");
    node_start(&B, "1h");
    size_t len, glen;
    void *img = tg_image(600, 300, 3, "png", &len);
    put_bytes(&A, "/d/cow.png", img, len, 201);
    put_bytes(&A, "/d/hen.png", img, len, 201);
    expect_dims(&A, "/d/cow_100x100.png", 100, 50);
    ck_assert(wait_bucket_count("derived/d/cow~", 1));
    char obj[1400];
    ck_assert(bucket_one("derived/d/cow~", obj, sizeof(obj)));
    void *good = damage(obj, &glen);
    const char *damaged = "thumbgate_s3_requests_total{op=\"get\",result=\"damaged\"}";
    tg_resp_t r;
    ck_assert_int_eq(tg_http(&B, "GET", "/d/cow_100x100.png", NULL, 0, NULL, &r), 200);
    int w = 0, h = 0;
    ck_assert(tg_dims(r.body, r.len, &w, &h) && w == 100 && h == 50);
    /* made on B: the bytes A made (the same code on the same original), not the damaged */
    ck_assert(r.len == glen && memcmp(r.body, good, glen) == 0);
    ck_assert_double_eq(tg_metric(&B, damaged), 1);
    g_free(good);
    /* and published again by B: the bucket holds the bytes B served */
    uint64_t until = tg_now_ms() + 30000;
    for (;;) {
        size_t l;
        void *now = tg_read_file(obj, &l);
        bool same = now != NULL && l == r.len && memcmp(now, r.body, l) == 0;
        g_free(now);
        if (same)
            break;
        ck_assert_msg(tg_now_ms() < until, "the damaged result was not published again");
        poll(NULL, 0, 20);
    }
    tg_resp_free(&r);
    /* an original that B has no copy of: its damaged object is never served or kept */
    snprintf(obj, sizeof(obj), "%s/%s/orig/d/hen.png._S3rver_object", R.dir, BUCKET);
    good = damage(obj, &glen);
    ck_assert_int_eq(get_status(&B, "/d/hen.png"), 503);
    ck_assert_int_eq(get_status(&B, "/d/hen_100x100.png"), 503);
    ck_assert_double_eq(tg_metric(&B, damaged), 3);
    tg_write_file(obj, good, glen); /* the store gives the right bytes again */
    tg_expect_bytes(&B, "/d/hen.png", img, len);
    g_free(good);
    g_free(img);
    ck_assert_int_eq(tg_stop(&A), 0);
    ck_assert_int_eq(tg_stop(&B), 0);
}
END_TEST

/* A burst of GETs for an original a node has not seen: one HEAD and one download, the
 * others wait for them (s3store_sync coalesces by name), and every GET gets the bytes. */
#define BURST 12
struct burst {
    pthread_barrier_t *go;
    const char *path;
    long status;
    size_t len;
};

static void *burst_get(void *arg)
{
    struct burst *b = arg;
    tg_resp_t r;
    pthread_barrier_wait(b->go);
    b->status = tg_http(&B, "GET", b->path, NULL, 0, NULL, &r);
    b->len = r.len;
    tg_resp_free(&r);
    return NULL;
}

START_TEST(test_s3_cold_burst_is_one_fetch)
{
    NEED_S3RVER();
    s3rver_start();
    node_start(&A, "1h");
    node_start(&B, "1h");
    size_t len;
    void *img = tg_image(2400, 1800, 3, "png", &len); /* a few MB: the download takes a while */
    put_bytes(&A, "/c/big.png", img, len, 201);
    g_free(img);
    pthread_barrier_t go;
    pthread_barrier_init(&go, NULL, BURST);
    pthread_t th[BURST];
    struct burst b[BURST];
    for (int i = 0; i < BURST; i++) {
        b[i] = (struct burst){.go = &go, .path = "/c/big.png"};
        ck_assert_int_eq(pthread_create(&th[i], NULL, burst_get, &b[i]), 0);
    }
    for (int i = 0; i < BURST; i++) {
        pthread_join(th[i], NULL);
        ck_assert_int_eq(b[i].status, 200);
        ck_assert_uint_eq(b[i].len, len);
    }
    pthread_barrier_destroy(&go);
    ck_assert_double_eq(tg_metric(&B, "thumbgate_s3_requests_total{op=\"head\",result=\"ok\"}"), 1);
    ck_assert_double_eq(tg_metric(&B, "thumbgate_s3_requests_total{op=\"get\",result=\"ok\"}"), 1);
    double coalesced = tg_metric(&B, "thumbgate_s3_checks_coalesced_total");
    printf("s3 cold burst: %d GETs, 1 HEAD, 1 download, %.0f waited for them\n", BURST, coalesced);
    ck_assert_int_eq(tg_stop(&A), 0);
    ck_assert_int_eq(tg_stop(&B), 0);
}
END_TEST

/* Originals of one stem put within the same second, through one node and then the
 * other: the stem means the last one put, on both nodes (the listing's dates cannot
 * order them; the stem's pointer object does). */
static void expect_stem_dims(const char *path, int w, int h)
{
    tg_server_t *nodes[] = {&A, &B};
    for (int i = 0; i < 2; i++) {
        uint64_t until = tg_now_ms() + 30000; /* B sees A's write within revalidate */
        for (;;) {
            tg_resp_t r;
            int gw = 0, gh = 0;
            long st = tg_http(nodes[i], "GET", path, NULL, 0, NULL, &r);
            bool ok = st == 200 && tg_dims(r.body, r.len, &gw, &gh) && gw == w && gh == h;
            tg_resp_free(&r);
            if (ok)
                break;
            ck_assert_msg(tg_now_ms() < until, "node %c: %s is %ld %dx%d, want %dx%d", "AB"[i],
                          path, st, gw, gh, w, h);
            poll(NULL, 0, 20);
        }
    }
}

START_TEST(test_s3_last_put_of_a_stem_wins)
{
    NEED_S3RVER();
    s3rver_start();
    node_start(&A, "100ms");
    node_start(&B, "100ms");
    size_t l1, l2;
    void *wide = tg_image(800, 400, 3, "jpg", &l1), *tall = tg_image(400, 800, 3, "webp", &l2);
    put_bytes(&A, "/s/x.jpg", wide, l1, 201);
    expect_stem_dims("/s/x_100x100.png", 100, 50);
    put_bytes(&B, "/s/x.webp", tall, l2, 201);
    expect_stem_dims("/s/x_100x100.png", 50, 100);
    put_bytes(&A, "/s/x.jpg", wide, l1, 200);
    expect_stem_dims("/s/x_100x100.png", 100, 50);
    /* deleting the current one: the stem falls back to the other original */
    tg_resp_t r;
    ck_assert_int_eq(tg_http(&B, "DELETE", "/s/x.jpg", NULL, 0, NULL, &r), 204);
    tg_resp_free(&r);
    expect_stem_dims("/s/x_100x100.png", 50, 100);
    g_free(wide);
    g_free(tall);
    ck_assert_int_eq(tg_stop(&A), 0);
    ck_assert_int_eq(tg_stop(&B), 0);
}
END_TEST

/* A store that accepts connections and never answers: every wait is bounded by
 * storage.s3.timeout, then 503 + Retry-After; /readyz is not ready; nothing is stored. */
START_TEST(test_s3_silent_store_is_bounded)
{
    tg_mkdtemp(R.dir, sizeof(R.dir), "tg-s3silent"); /* no s3rver: a socket that is silent */
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t l = sizeof(a);
    ck_assert_int_eq(bind(ls, (struct sockaddr *)&a, sizeof(a)), 0);
    ck_assert_int_eq(listen(ls, 64), 0); /* the kernel completes handshakes; nobody reads */
    getsockname(ls, (struct sockaddr *)&a, &l);
    R.port = ntohs(a.sin_port);
    node_start_env(&A, "0", "THUMBGATE_STORAGE_S3_TIMEOUT=1s");
    ck_assert(wait_ready(&A, 503));
    size_t len;
    void *img = tg_image(64, 48, 3, "jpg", &len);
    tg_resp_t r;
    char ra[32];
    ck_assert_int_eq(tg_http(&A, "PUT", "/s/one.jpg", img, len, NULL, &r), 503);
    ck_assert(tg_header(&r, "retry-after", ra, sizeof(ra)));
    tg_resp_free(&r);
    ck_assert_int_eq(tg_http(&A, "GET", "/s/one_10x10.jpg", NULL, 0, NULL, &r), 503);
    ck_assert(tg_header(&r, "retry-after", ra, sizeof(ra)));
    tg_resp_free(&r);
    char p[600];
    snprintf(p, sizeof(p), "%s/orig/s/one.jpg@", A.root);
    ck_assert_int_ne(access(p, F_OK), 0);
    ck_assert_int_eq(tg_stop(&A), 0); /* the drain is not held by the silent store */
    close(ls);
    g_free(img);
}
END_TEST

/* Config and memory plan: no server needed. */
START_TEST(test_s3_config_and_plan)
{
    char *errs = NULL;
    size_t elen = 0;
    FILE *e = open_memstream(&errs, &elen);
    ck_assert_ptr_null(cfg_load_string("storage:\n  backend: s3\n", "t.yaml", NULL, e));
    fclose(e);
    ck_assert_msg(strstr(errs, "storage.s3.endpoint") && strstr(errs, "storage.s3.bucket"), "%s",
                  errs);
    free(errs);

    char *const env[] = {"THUMBGATE_STORAGE_S3_ENDPOINT=http://store.example:9000",
                         "THUMBGATE_STORAGE_S3_PATH_STYLE=false", NULL};
    const cfg_t *c = cfg_load_string("storage:\n  backend: s3\n  s3:\n    bucket: pics\n", "t.yaml",
                                     env, stderr);
    ck_assert_ptr_nonnull(c);
    char err[256], url[512];
    s3_t *s3 = s3_create(c, err, sizeof(err));
    ck_assert_ptr_nonnull(s3);
    s3_url(s3, "orig/a/b.jpg", NULL, url, sizeof(url));
    ck_assert_str_eq(url, "http://pics.store.example:9000/orig/a/b.jpg");
    s3_destroy(s3);
    cfg_t c2 = *c;
    c2.s3_path_style = true;
    s3 = s3_create(&c2, err, sizeof(err));
    s3_url(s3, "orig/a b.jpg", "list-type=2", url, sizeof(url));
    ck_assert_str_eq(url, "http://store.example:9000/pics/orig/a%20b.jpg?list-type=2");
    s3_destroy(s3);

    /* the store's buffers are a term of the plan, and grow with transfers and buffer */
    memplan_t local, s3p, more;
    cfg_t lc = *c;
    lc.storage_backend = CFG_BACKEND_LOCAL;
    ck_assert_int_eq(memplan_compute(&lc, 768ull << 20, "t", false, 2, 2, &local, err, 256), 0);
    ck_assert_int_eq(memplan_compute(c, 768ull << 20, "t", false, 2, 2, &s3p, err, 256), 0);
    c2 = *c;
    c2.s3_transfers = 6;
    c2.s3_buffer = 1 << 20;
    ck_assert_int_eq(memplan_compute(&c2, 768ull << 20, "t", false, 2, 2, &more, err, 256), 0);
    ck_assert_uint_eq(local.s3, 0);
    ck_assert_uint_gt(s3p.s3, (uint64_t)(c->s3_transfers + 1) * 2 * c->s3_buffer);
    ck_assert_uint_gt(more.s3, s3p.s3 + 12 * (1u << 20) - 1);
    ck_assert_uint_gt(s3p.baseline, local.baseline); /* the transfers' threads */
    ck_assert_uint_lt(s3p.budget, local.budget);     /* auto budget: paid for by the images */
    cfg_free(c);
}
END_TEST

Suite *s3_suite(void); /* called by check_main.c */
Suite *s3_suite(void)
{
    Suite *s = suite_create("s3");
    TCase *t = tcase_create("s3");
    tcase_add_checked_fixture(t, setup, teardown);
    tcase_set_timeout(t, 180);
    tcase_add_test(t, test_s3_config_and_plan);
    tcase_add_test(t, test_s3_originals_derived_conditional);
    tcase_add_test(t, test_s3_delete_removes_derived);
    tcase_add_test(t, test_s3_local_copies_bounded);
    tcase_add_test(t, test_s3_store_down_then_back);
    tcase_add_test(t, test_s3_two_nodes_share_the_bucket);
    tcase_add_test(t, test_s3_results_published_after_the_original_went_are_cleared);
    tcase_add_test(t, test_s3_damaged_objects_are_not_kept);
    tcase_add_test(t, test_s3_cold_burst_is_one_fetch);
    tcase_add_test(t, test_s3_last_put_of_a_stem_wins);
    tcase_add_test(t, test_s3_silent_store_is_bounded);
    suite_add_tcase(s, t);
    return s;
}
