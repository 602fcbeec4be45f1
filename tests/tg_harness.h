/* Test harness for integration tests: starts the real ./thumbgate (THUMBGATE_BIN) on
 * free loopback ports with a temp storage root, speaks HTTP to it with libcurl or raw
 * sockets, and stops it by PID. Images are generated with libvips in the test. */
#ifndef THUMBGATE_TG_HARNESS_H
#define THUMBGATE_TG_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct _VipsImage; /* VipsImage, for tg_psnr() without <vips/vips.h> here */

typedef struct {
    pid_t pid;
    int port, admin_port;
    char root[256];
    char log[300];
} tg_server_t;

typedef struct {
    long status;
    char *body;
    size_t len;
    char headers[4096];
} tg_resp_t;

/** Starts the server with extra "KEY=VALUE" environment entries (NULL-terminated list,
 *  may be NULL; "TG_LISTEN_HOST=<addr>" makes it listen on <addr> instead of 127.0.0.1).
 *  The server gets SIGKILL when the test process that started it dies. @p root: storage root to
 * reuse, or NULL for a new temp dir. Waits until both listeners accept. Fails the test on error. */
void tg_start(tg_server_t *s, const char *const *env, const char *root);
/** SIGTERM, wait; returns the exit status (or -signal). */
int tg_stop(tg_server_t *s);
/** Removes the storage root. */
void tg_cleanup(tg_server_t *s);
/** GET @p path: 200, Content-Type @p mime and @p w x @p h, where a free side may round
 *  either way by one pixel (217.5: 217 or 218) but one side is exact. Fails the test. */
void tg_expect_dims(tg_server_t *s, const char *path, int w, int h, const char *mime);
/** GET @p path: 200 with exactly the @p len bytes of @p want. Fails the test. */
void tg_expect_bytes(tg_server_t *s, const char *path, const void *want, size_t len);
/** A loopback TCP port that was free a moment ago (bound, read, closed). */
int tg_free_port(void);
/** True when something accepts connections on loopback @p port. */
bool tg_port_open(int port);
/** CLOCK_MONOTONIC in milliseconds (overall deadlines of polling loops). */
uint64_t tg_now_ms(void);
/** Number of lines of the log file @p log that contain @p needle; the first of them goes to
 *  @p first (of @p n bytes) when @p first is not NULL. 0 when the file cannot be read. */
unsigned tg_log_lines(const char *log, const char *needle, char *first, size_t n);
/** Waits until @p log has a line containing @p needle (up to @p timeout_ms, polling as
 *  tg_wait_metric does): an access line is written after its response has gone, once per
 *  loop iteration, so a client can read the response before it. The count at the end. */
unsigned tg_wait_log_line(const char *log, const char *needle, char *first, size_t n,
                          int timeout_ms);
/** Removes @p dir and everything below it (no shell); 0 when all of it is gone. */
int tg_rmtree(const char *dir);
/** Makes a new directory $TMPDIR/@p prefix-XXXXXX (/tmp without TMPDIR) into @p dir (of
 *  @p len bytes); fails the test on error. Remove it with tg_rmtree(). */
void tg_mkdtemp(char *dir, size_t len, const char *prefix);
/** The whole file at @p path in a new malloc'd buffer (one spare byte); fails the test on
 *  error. */
void *tg_read_file(const char *path, size_t *len);
/** Creates or truncates @p path with @p len bytes of @p buf; fails the test on error. */
void tg_write_file(const char *path, const void *buf, size_t len);
/** PSNR over every band of two images of one size and band count (dB; 1000 when
 *  identical); fails the test when they differ in size or bands. */
double tg_psnr(struct _VipsImage *a, struct _VipsImage *b);
/** Photo-like detail for the fast decoders' tests: Gaussian noise blurred a little, distinct
 *  per band, plus a gradient, so a misplaced sample grid or a wrong average shows in the
 *  PSNR; alpha (after @p bands) is a ramp with noise. A new uchar image. */
struct _VipsImage *tg_detail_image(int w, int h, int bands, bool alpha);

/** One request. @p hdrs NULL-terminated "Name: value" list or NULL. */
long tg_http(tg_server_t *s, const char *method, const char *path, const void *body, size_t len,
             const char *const *hdrs, tg_resp_t *r);
long tg_admin(tg_server_t *s, const char *path, tg_resp_t *r);
void tg_resp_free(tg_resp_t *r);
/** Value of header @p name in @p r (case-insensitive) into @p out; false if absent. */
bool tg_header(const tg_resp_t *r, const char *name, char *out, size_t outlen);
/** Value of a Prometheus sample line (exact name incl. labels) from /metrics; -1 if absent. */
double tg_metric(tg_server_t *s, const char *sample);
/** Value of @p sample in a /metrics body already fetched (tg_admin); -1 if absent. */
double tg_metric_in(const char *body, const char *sample);
/** Waits (polling the admin endpoint, bounded by @p timeout_ms) until @p sample >= @p v. */
bool tg_wait_metric(tg_server_t *s, const char *sample, double v, int timeout_ms);
/** The same, until @p sample is present and <= @p v. */
bool tg_wait_metric_at_most(tg_server_t *s, const char *sample, double v, int timeout_ms);
/** Waits (polling as tg_wait_metric does, bounded by @p timeout_ms) until GET @p path on the
 *  admin port answers @p status with a body containing @p needle. */
bool tg_wait_admin(tg_server_t *s, const char *path, long status, const char *needle,
                   int timeout_ms);

/** Raw TCP connection to the public port; -1 on failure. */
int tg_connect(tg_server_t *s);
/** Opens a connection and sends "GET @p path" on it without reading the answer (for tests
 *  that hold requests in flight); returns the socket. Fails the test on error. */
int tg_send_get(tg_server_t *s, const char *path);
/** Reads until EOF or @p cap bytes; returns bytes read. */
size_t tg_read_all(int fd, char *buf, size_t cap, int timeout_ms);

/** Mounts a tmpfs of @p size (e.g. "16m") on a new temp dir written to @p dir; false when
 *  it cannot (not root): the caller skips. Unmount with umount2(dir, MNT_DETACH). */
bool tg_mount_tmpfs(const char *size, char *dir, size_t dirlen);
/** Writes @p path until the disk is full, down to the last byte. */
void tg_fill_disk(const char *path);

/** Checked-fixture set-up for integration tests: libvips and libcurl in the forked child. */
void tg_fixture_setup(void);

/** PUTs a generated @p w x @p h image of @p fmt at @p path; fails the test unless 201. */
void tg_put_image(tg_server_t *s, const char *path, int w, int h, const char *fmt);

/** Encoded test image (noise, so sizes are realistic) of @p w x @p h in "jpg", "png", "webp";
 *  @p opts appended to the saver (e.g. "[Q=90,interlace]"). Caller frees with g_free. */
void *tg_image(int w, int h, int bands, const char *fmt, size_t *len);
/** Decodes @p buf and returns its dimensions; false if not decodable. */
bool tg_dims(const void *buf, size_t len, int *w, int *h);

#endif
