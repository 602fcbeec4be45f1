/* store — the storage root on disk:
 *   orig/<key>@            originals ('@' is outside the key charset, so key "a" and
 *                          key "a/b" never collide as file vs directory); a key segment
 *                          longer than 250 bytes is cut into directories ending in '~'
 *                          so no file name exceeds NAME_MAX (store.c, map_segment)
 *   stem/<stem>@           symlink to the basename of the original a derived URL uses
 *   cache/<stem>@/<gen>/<variant>  derived results; <gen> = source inode + mtime, so a
 *                          replaced or deleted original makes old results unreachable
 *   cache/<stem>@/<gen>/@level-<size>.jpg  the original's mezzanine level (mezz.h): a
 *                          cache file like the results, counted apart (store_level_stats)
 *   tmp/<instance>/        temp files (uploads, results, h2o body spill) of one running
 *                          instance; same filesystem, never shared between instances
 * Writes (originals, results, stem links) are temp file + fsync + rename + directory
 * fsync; new directories are fsynced into their parents. Thread-safe. */
#ifndef THUMBGATE_STORE_H
#define THUMBGATE_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#define STORE_PATH_MAX 1400
/** First character of a cached file name that is a mezzanine level, not a result. */
#define STORE_LEVEL_MARK '@'

typedef struct store store_t;

enum {
    STORE_OK = 0,
    STORE_E_NOTFOUND = 1,
    STORE_E_CONFLICT = 2, /**< key collides with an existing directory */
    STORE_E_NOSPACE = 3,  /**< ENOSPC / EDQUOT */
    STORE_E_IO = 4,
    STORE_E_CHANGED = 5,     /**< the source of a result was replaced while the result was made */
    STORE_E_UNAVAILABLE = 6, /**< the object store (s3 backend) is down or too slow: 503 */
};

struct s3store;

/** Creates the layout under @p root (mkdir -p), removes stale temp files, sizes the cache.
 *  NULL on failure with a message in @p err. Caller frees with store_destroy. */
store_t *store_create(const char *root, uint64_t cache_max, char *err, size_t errlen);
void store_destroy(store_t *st);

/** Path of the original of @p key. */
void store_orig_path(const store_t *st, const char *key, char *out, size_t outlen);
/** mkstemp template for h2o's body spill files (under tmp/). */
const char *store_spill_template(const store_t *st);
/** This instance's own temp directory (tmp/<host>.<pid>.<random>), where the spill files,
 * results and new originals are made before they are renamed into place. */
const char *store_tmp_dir(const store_t *st);

/**
 * Stores @p len bytes at @p data as the original of @p key (borrows data): temp file,
 * fsync, rename over the old version, directory fsync; then points the stem index at it
 * and drops the stem's cached results. *replaced tells whether a version existed.
 * 0 or -STORE_E_*; on failure the previous version is untouched and no temp file remains.
 */
int store_put(store_t *st, const char *key, const void *data, size_t len, bool *replaced, char *err,
              size_t errlen);

/** Removes the original of @p key and every derived result of its stem. 0 or -STORE_E_NOTFOUND /
 * -STORE_E_IO. */
int store_delete(store_t *st, const char *key);

/** Finds the original a derived URL of @p stem uses. 0 with @p path / @p sb filled, or
 * -STORE_E_NOTFOUND. */
int store_find_source(const store_t *st, const char *stem, char *path, size_t pathlen,
                      struct stat *sb);

/** Cache path of @p variant of @p stem whose source is described by @p src. */
void store_cache_path(const store_t *st, const char *stem, const struct stat *src,
                      const char *variant, char *out, size_t outlen);

/** A new empty temp file path under tmp/ (the file exists, mode 0644). 0 or -STORE_E_IO. */
int store_tmp_file(const store_t *st, char *out, size_t outlen);

/** The xattr holding a stored file's HTTP ETag, exactly as sent, where every node must
 *  send the same one (the s3 backend, s3store.c: from the object's ETag). http.c sends
 *  it instead of its own inode-based tag; a file without it gets the inode one. */
#define STORE_XATTR_HTTP_ETAG "user.thumbgate.http-etag"

/**
 * Moves the finished result @p tmp to @p final (creating its directories) if the source
 * @p src_path still has the identity @p src; otherwise discards it. Accounts the bytes and
 * (eviction is separate: store_cache_over_bound / store_cache_evict). 0 or -STORE_E_*:
 * NOTFOUND when the source is gone, CHANGED when it was replaced (the result is dropped).
 */
int store_cache_commit(store_t *st, const char *tmp, const char *final, const char *src_path,
                       const struct stat *src);

/** True when the cached results exceed storage.cache_max (then call store_cache_evict). */
bool store_cache_over_bound(store_t *st);
/** Evicts least-recently-used results to 90% of the bound; recounts the cache from disk.
 *  Slow (walks the cache): call it off the event loops and outside any job's budget. */
void store_cache_evict(store_t *st);
/** Periodic upkeep (every few seconds): recreates this instance's temp directory if it vanished. */
void store_maintain(store_t *st);

/** Marks a cached result as used now (cheap; at most once a minute per file). */
void store_cache_touch(const char *path, const struct stat *sb);

/** True when the storage filesystem has (nearly) no free block or inode left: tells a
 *  failed result write that ran out of space (507) from other I/O errors. */
bool store_out_of_space(const store_t *st);

/** A number that changes whenever this instance stores, replaces or deletes an original or
 *  evicts results: what a file chosen for a URL before may depend on. (Other instances
 *  sharing the root do not change it.) */
uint64_t store_epoch(const store_t *st);

/** Bytes currently held by cached results, and the number of evictions so far. */
void store_cache_stats(store_t *st, uint64_t *bytes, uint64_t *evictions);

/* --- the s3 backend seam (s3store.h): the local tree above becomes a cache of a bucket --- */

/** Makes @p st write through to (and be checked against) @p rs; NULL: local only. */
void store_set_remote(store_t *st, struct s3store *rs);
/** The remote half, or NULL with the local backend. */
struct s3store *store_remote(const store_t *st);
/** False while the object store does not answer (always true when local). */
bool store_ready(const store_t *st);

/** Installs the complete file @p tmp (in this instance's tmp/) as the original of @p key:
 *  rename, stem index, the stem's old results dropped. 0 or -STORE_E_*. */
int store_install_original(store_t *st, const char *key, const char *tmp, bool *replaced);
/** store_delete without the remote half: the local copy and its results. */
int store_delete_local(store_t *st, const char *key);
/** The key of the original the stem index of @p stem names (0), or -STORE_E_NOTFOUND. */
int store_stem_key(const store_t *st, const char *stem, char *key, size_t keylen);
/** Points the stem index of @p key's stem at @p key. */
void store_point_stem(store_t *st, const char *key);
/** The key whose original is at @p path (store_orig_path's inverse). 0 or -1. */
int store_key_of_path(const store_t *st, const char *path, char *key, size_t keylen);
/** s3 backend: the local originals are copies; evicts the least recently used (atime) to
 *  90% of @p bound, but none used in the last 10 s (it may be in use). Returns the bytes
 *  left. Slow (walks orig/): off the event loops. */
uint64_t store_orig_evict(store_t *st, uint64_t bound);
/** A derived result at @p cache_path was made from @p src_path: published to the bucket
 *  (in the background) when remote; nothing when local. */
void store_result_made(store_t *st, const char *src_path, const char *cache_path);

/** The part of the cache that is mezzanine levels (cached files named "@...", mezz.h):
 *  bytes and files. Counted in store_cache_stats' bytes too, and evicted like results. */
void store_level_stats(store_t *st, uint64_t *bytes, uint64_t *files);

#endif
