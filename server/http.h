/* http — INTERNAL to server/: the responses every room sends through: JSON errors (status
 * and code from errors.c, the one table), JSON bodies, stored files (h2o's file handler:
 * ETag, Last-Modified, 304, Range, HEAD, the loop's filecache), the filter that turns h2o's
 * own text errors into JSON, and the access log with the request metrics. */
#ifndef THUMBGATE_HTTP_H
#define THUMBGATE_HTTP_H

#include <h2o.h>
#include <stdbool.h>
#include <sys/stat.h>

#include "imgproc/imgproc.h"
#include "server/errors.h"
#include "server/room.h"

/** Registers the JSON-error filter and the access logger on @p pathconf (borrows @p s:
 *  metrics, the gate for Retry-After, cfg's access_log switch). */
void http_register(h2o_pathconf_t *pathconf, const room_services_t *s);

/** Writes the calling loop thread's buffered access lines to stderr: after every loop
 *  iteration and before the loop thread ends. */
void http_log_flush(void);

/** Sends the JSON error {"error","message"} of module error @p err of @p domain: status and
 *  code come from errors_http() (the one table); a 503 carries Retry-After. */
void srv__send_err(h2o_req_t *req, err_domain_t domain, int err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/** Sends a JSON body with @p status (borrows @p json; copied into the pool). */
void srv__send_json(h2o_req_t *req, int status, const char *json, size_t len);
/** GET/HEAD of a stored file (an original or a cached result) through h2o's file handler
 *  and the loop's filecache: our ETag and If-None-Match, h2o's Last-Modified,
 *  If-Modified-Since, Range (206/416) and HEAD. @p fmt: the file's format when known, else
 *  IMGPROC_FMT_UNKNOWN (sniffed). false when there is no such file (nothing sent). @p sb
 *  (optional) receives the file's stat when it is served. */
bool srv__serve_path(h2o_req_t *req, const char *path, imgproc_fmt_t fmt, struct stat *sb);
/** srv__serve_path for a cached result (store_cache_path: a path that never names other
 *  bytes): its descriptor may stay in the loop's filecache after this iteration. */
bool srv__serve_result(h2o_req_t *req, const char *path, imgproc_fmt_t fmt, struct stat *sb);

/** A hot result: a small cached result's bytes and response headers in memory, owned by
 *  the loop that read it (h2o's shared chunk: each response being sent from it holds a
 *  reference, so it outlives an owner that lets it go). */
typedef struct srv_hot srv_hot_t;
#define SRV_HOT_MAX (64u << 10) /**< larger results always go through the file handler */
/** Reads the cached result at @p path (format @p fmt) into memory when it is at most
 *  SRV_HOT_MAX bytes and every hot result alive, this one with its allocation included,
 *  stays within @p cap bytes (`http.hot_results`). NULL otherwise. */
srv_hot_t *srv__hot_read(h2o_req_t *req, const char *path, imgproc_fmt_t fmt, uint64_t cap);
/** The owner lets @p h go (NULL: nothing); freed when no response holds it any more. */
void srv__hot_release(srv_hot_t *h);
/** Answers GET/HEAD @p req from @p h with what srv__serve_result sends for its file: our
 *  ETag, Last-Modified, If-None-Match and If-Modified-Since (304). false, nothing sent,
 *  for a request with a Range (the file handler answers those). */
bool srv__serve_hot(h2o_req_t *req, srv_hot_t *h);
/** Bytes held by hot results now, all loops (allocations included). */
uint64_t srv__hot_bytes(void);
/** After every loop iteration: empties the loop's filecache unless it holds only results,
 *  opened since the store's @p epoch last changed and within the last second. */
void http_filecache_sweep(h2o_context_t *ctx, uint64_t epoch, uint64_t now_ms);
/** True when the peer of @p req has closed or reset its connection (safe from any thread). */
bool srv__client_gone_fd(int fd);
int srv__req_fd(h2o_req_t *req);
/** Sets a per-request value the access logger reads (TG_ROUTE, TG_ADMISSION, TG_WAIT_MS,
 *  TG_ESTIMATE, TG_ERROR); @p name and @p fmt must be static. The formatted value is
 *  copied into the pool; a @p fmt without conversions is used as it is (no copy). */
void srv__set_env(h2o_req_t *req, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/** Adds a Server-Timing / diagnostic header (name must be static). */
void srv__add_header(h2o_req_t *req, const char *name, const char *value);

#endif
