/* s3 — a small client of an S3-compatible object store over libcurl: PUT of a file, GET
 * into a file, HEAD, DELETE and ListObjectsV2. Requests are signed by libcurl
 * (CURLOPT_AWS_SIGV4), never by hand. Every transfer is bounded by
 * storage.s3.connect_timeout and storage.s3.timeout, so a store that is down or slow
 * costs a caller at most that long. Blocking: call it from io threads, never from an
 * event loop. Thread-safe.
 *
 * Memory: at most storage.s3.transfers + 1 easy handles exist (a pool; the +1 is the
 * readiness checker's), each with curl's receive and upload buffers of storage.s3.buffer
 * bytes; bodies stream between the socket and a file, never whole in RAM. A listing
 * reads at most S3_LIST_MAX bytes of XML per page. memplan.c counts it (S3 term). */
#ifndef THUMBGATE_S3_H
#define THUMBGATE_S3_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "config/cfg.h"

#define S3_LIST_MAX (256u << 10)               /**< bytes of one ListObjectsV2 page (100 keys) */
#define S3_META_MD5 "x-amz-meta-thumbgate-md5" /**< hex MD5 of the body put */
#define S3_HANDLE_BYTES (256u << 10)           /**< one easy handle + its connection + TLS state */

typedef struct s3 s3_t;

enum {
    S3_OK = 0,
    S3_E_NOTFOUND = 1,    /**< 404 */
    S3_E_UNAVAILABLE = 2, /**< no answer within the bounds, a connection error, 5xx, 429 */
    S3_E_DENIED = 3,      /**< any other 4xx (credentials, bucket missing) */
    S3_E_LOCAL = 4,       /**< the local file could not be read or written */
    S3_E_DAMAGED = 5,     /**< GET: the body is not what the object was put with (s3_get_file) */
};

/** What a HEAD, GET or PUT learnt about an object. etag without quotes. */
typedef struct {
    char etag[80];
    uint64_t size;
    time_t last_modified;
    bool checked; /**< GET: the body has the MD5 that s3_put_file stored with the object */
} s3_meta_t;

/** What requests went to the store: by operation (the bucket checks apart) and outcome
 *  (S3_OK .. S3_E_DAMAGED). */
typedef enum {
    S3_OP_GET,
    S3_OP_PUT,
    S3_OP_HEAD,
    S3_OP_DELETE,
    S3_OP_LIST,
    S3_OP_CHECK,
    S3_OP__N
} s3_op_t;
#define S3_RESULTS 6
typedef struct {
    uint64_t n[S3_OP__N][S3_RESULTS];
} s3_stats_t;
void s3_stats(const s3_t *s3, s3_stats_t *out);
const char *s3_op_name(s3_op_t op);
const char *s3_result_name(int result);

/** Reads the credentials (the *_file keys when a key is empty), starts the readiness
 *  checker. NULL with a message in @p err. */
s3_t *s3_create(const cfg_t *cfg, char *err, size_t errlen);
void s3_destroy(s3_t *s3);

/** Uploads the file at @p path as @p key (Content-Length from the file; streamed). Its MD5
 *  (one read of the file first) goes as Content-MD5, so that the store refuses a body
 *  damaged on the way, and as the object's metadata S3_META_MD5, so that s3_get_file can
 *  check the body it gets (an object's ETag is its MD5 only for some uploads). */
int s3_put_file(s3_t *s3, const char *key, const char *path, s3_meta_t *meta);
/** Downloads @p key into the (existing, truncated here) file @p path. S3_E_DAMAGED when the
 *  body is shorter than its Content-Length or its MD5 is not the object's S3_META_MD5 (a
 *  store that serves a PUT still being written; a damaged copy); meta->checked when it is. */
int s3_get_file(s3_t *s3, const char *key, const char *path, s3_meta_t *meta);
int s3_head(s3_t *s3, const char *key, s3_meta_t *meta);
/** Uploads @p len (> 0) bytes from memory as @p key (small objects). */
int s3_put_data(s3_t *s3, const char *key, const void *data, size_t len);
/** Downloads @p key into @p buf (NUL-terminated; *@p len bytes); an object that does not
 *  fit in @p cap - 1 bytes is S3_E_LOCAL (small objects). */
int s3_get_data(s3_t *s3, const char *key, char *buf, size_t cap, size_t *len);
/** Deletes @p key (absent: S3_OK, as S3 does). */
int s3_delete(s3_t *s3, const char *key);
/** Calls @p fn for every object under @p prefix (all pages). @p fn returns non-zero to stop. */
int s3_list(s3_t *s3, const char *prefix,
            int (*fn)(void *arg, const char *key, const char *etag, time_t last_modified),
            void *arg);
/** Deletes every object under @p prefix; @p except (may be NULL) is a substring that keeps
 *  the objects whose key contains it. */
int s3_delete_prefix(s3_t *s3, const char *prefix, const char *except);

/** True when the last check of the bucket (or the last transfer) got an answer. */
bool s3_ready(const s3_t *s3);
/** True when the last check or transfer got none (false before the first check). */
bool s3_down(const s3_t *s3);
/** @p fn runs on the checker thread after each check (every storage.s3.check_interval). */
void s3_set_tick(s3_t *s3, void (*fn)(void *arg), void *arg);

/** The URL of @p key (with @p query, may be NULL) as requests use it (tests). */
void s3_url(const s3_t *s3, const char *key, const char *query, char *out, size_t outlen);

#endif
