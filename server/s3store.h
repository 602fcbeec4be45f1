/* s3store — the s3 backend: the local store (store.h) becomes a cache of a bucket.
 *
 * Objects:   orig/<key>                          an original, written whole by one PUT
 *            derived/<stem>~/<etag>/<variant>    a result of the original whose ETag is
 *                                                <etag> ('~' is outside the key charset)
 *            stems/<stem>                        the key of the stem's current original,
 *                                                written after each PUT of one (the last
 *                                                writer wins, on every node alike)
 * Writes go to the bucket first, then to the local tree (store_put calls s3store_put
 * before its rename; store_delete calls s3store_delete first), so what a node serves
 * was stored in the bucket, and nothing is visible anywhere before it is complete
 * (an S3 PUT is atomic). Reads are checked against the bucket: a key (or a derived URL's
 * stem) not checked within storage.s3.revalidate is synced by s3store_sync on an io
 * thread (HEAD; a changed or missing local copy is downloaded to a temp file and renamed
 * in, one deleted in the bucket is deleted here), then served from the local file by the
 * usual paths. The ETag of a local copy is kept in its user.thumbgate.etag xattr, and the
 * validators sent for it (the same on every node) in STORE_XATTR_HTTP_ETAG and its mtime.
 *
 * Memory: the freshness table (S3STORE_SLOTS x 16 bytes) and the s3 client's (s3.h). */
#ifndef THUMBGATE_S3STORE_H
#define THUMBGATE_S3STORE_H

#include <stdbool.h>
#include <stdint.h>

#include "server/s3.h"
#include "server/store.h"

#define S3STORE_SLOTS 4096

typedef struct s3store s3store_t;

/** @p orig_max: storage.s3.cache_max, the disk the local copies of originals may take
 *  (least recently used are evicted beyond it; a copy is fetched again when needed). */
s3store_t *s3store_create(store_t *st, s3_t *s3, uint64_t revalidate_ms, uint64_t orig_max);
void s3store_destroy(s3store_t *rs);

/** Uploads the complete temp file @p tmp as the original of @p key and records its ETag
 *  on it. 0, -STORE_E_UNAVAILABLE or -STORE_E_IO. (Blocking: io threads.) */
int s3store_put(s3store_t *rs, const char *key, const char *tmp);
/** Deletes the original of @p key and every derived object of its stem from the bucket.
 *  0, -STORE_E_NOTFOUND (no such object), -STORE_E_UNAVAILABLE. (Blocking.) */
int s3store_delete(s3store_t *rs, const char *key);

/** True when @p key (and @p stem, may be NULL) were checked within the revalidate time.
 *  Cheap: event loops call it on every GET. */
bool s3store_fresh(s3store_t *rs, const char *key, const char *stem);
/** Brings the local copy of @p key — and, for a derived URL, of @p stem's original and
 *  its result @p variant — in line with the bucket. 0 or -STORE_E_UNAVAILABLE. (Blocking.)
 *  Coalesced: one check of a name runs at a time, and a caller that waited for a check
 *  started after it arrived takes that check's outcome, success or failure, so a burst of
 *  requests for a cold key costs one HEAD and one download, and a store that is down
 *  costs the burst one timeout, not one each. */
int s3store_sync(s3store_t *rs, const char *key, const char *stem, const char *variant);

/** Before the result @p tmp of the local original @p src_path becomes @p final: gives it
 *  the validators every node gives it, whether made here or fetched: a weak ETag from the
 *  original's object ETag and the variant (a result made from a mezzanine level is not
 *  byte-identical to one made from the original). Its Last-Modified stays its own. */
void s3store_stamp_result(s3store_t *rs, const char *src_path, const char *tmp, const char *final);

/** Publishes a result made here (background io task; best effort). */
void s3store_result_made(s3store_t *rs, const char *src_path, const char *cache_path);

/** The client's requests by operation and outcome, and the syncs that took the outcome
 *  of another's instead of asking the bucket again (s3store_sync). */
void s3store_stats(s3store_t *rs, s3_stats_t *out, uint64_t *coalesced);

bool s3store_ready(s3store_t *rs);
/** True when the store was seen not to answer (false before the first check). */
bool s3store_down(s3store_t *rs);

#endif
