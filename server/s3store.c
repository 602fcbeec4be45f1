/* s3store — the s3 backend (see s3store.h). */
#include "server/s3store.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include "server/iopool.h"

#define XATTR_ETAG "user.thumbgate.etag"
#define OBJ_MAX (STORE_PATH_MAX + 200)
#define SYNC_STRIPES 64 /* checks of names in one stripe run one at a time */

struct s3store {
    store_t *st;
    s3_t *s3;
    uint64_t revalidate_ms;
    uint64_t orig_max;           /* storage.s3.cache_max: local copies of originals */
    _Atomic uint64_t orig_bytes; /* about what orig/ holds (recounted by each eviction) */
    _Atomic bool evicting;
    pthread_mutex_t mu;
    struct fresh_slot {
        uint64_t hash, until_ms;
    } fresh[S3STORE_SLOTS]; /* under mu */
    struct stripe {
        pthread_mutex_t mu;       /* held for the whole of a check */
        _Atomic uint64_t started; /* checks started in this stripe */
        uint64_t hash;            /* the last check in this stripe: its name, */
        uint64_t seq;             /* its number (of started), */
        int ret;                  /* and its outcome */
    } stripe[SYNC_STRIPES];
    _Atomic uint64_t coalesced;
};

static void account(s3store_t *rs, uint64_t bytes);
static void tick(void *arg);

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static uint64_t hash2(char kind, const char *s)
{
    uint64_t h = 1469598103934665603ull;
    h = (h ^ (unsigned char)kind) * 1099511628211ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h | 1; /* 0 marks an empty slot (the low bit is always set: index with h >> 1) */
}

/* the freshness slot of the name hashed to @p h (under mu) */
static struct fresh_slot *slot(s3store_t *rs, uint64_t h)
{
    return &rs->fresh[(h >> 1) % S3STORE_SLOTS];
}

static bool is_fresh(s3store_t *rs, char kind, const char *s)
{
    uint64_t h = hash2(kind, s), now = now_ms();
    pthread_mutex_lock(&rs->mu);
    bool ok = slot(rs, h)->hash == h && slot(rs, h)->until_ms > now;
    pthread_mutex_unlock(&rs->mu);
    return ok;
}

/* @p until: when the check was made (taken before it started: a change after is not missed) */
static void mark(s3store_t *rs, char kind, const char *s, uint64_t checked_ms)
{
    uint64_t h = hash2(kind, s);
    pthread_mutex_lock(&rs->mu);
    slot(rs, h)->hash = h;
    slot(rs, h)->until_ms = checked_ms + rs->revalidate_ms;
    pthread_mutex_unlock(&rs->mu);
}

static void forget(s3store_t *rs, char kind, const char *s)
{
    uint64_t h = hash2(kind, s);
    pthread_mutex_lock(&rs->mu);
    if (slot(rs, h)->hash == h)
        slot(rs, h)->hash = 0;
    pthread_mutex_unlock(&rs->mu);
}

static int map_s3(int r)
{
    return r == S3_OK              ? 0
           : r == S3_E_NOTFOUND    ? -STORE_E_NOTFOUND
           : r == S3_E_UNAVAILABLE ? -STORE_E_UNAVAILABLE
           : r == S3_E_DAMAGED     ? -STORE_E_UNAVAILABLE /* being written: try again */
                                   : -STORE_E_IO;
}

/* The stem of @p key: before the last '.' of its last segment. false without one. */
static bool stem_of(const char *key, char *stem, size_t n)
{
    const char *slash = strrchr(key, '/'), *base = slash ? slash + 1 : key;
    const char *dot = strrchr(base, '.');
    if (dot == NULL || dot == base)
        return false;
    snprintf(stem, n, "%.*s", (int)(dot - key), key);
    return true;
}

/* The validators of a local copy, the same on every node: @p http_etag sent as its ETag
 * (store.h), and @p last_modified (the object's; 0: unknown) as its mtime's seconds. The
 * nanoseconds stay this file's own: with the inode they name the copy's generation of
 * cached results (store.c), which must differ from a replaced one's. */
static void stamp(const char *path, const char *http_etag, time_t last_modified)
{
    setxattr(path, STORE_XATTR_HTTP_ETAG, http_etag, strlen(http_etag), 0);
    struct stat sb;
    if (last_modified > 0 && stat(path, &sb) == 0) {
        struct timespec t[2] = {{.tv_nsec = UTIME_NOW},
                                {.tv_sec = last_modified, .tv_nsec = sb.st_mtim.tv_nsec}};
        utimensat(AT_FDCWD, path, t, 0);
    }
}

/* An original's copy: the object's ETag (XATTR_ETAG, compared with the bucket's) and its
 * validators. */
static void stamp_original(const char *path, const s3_meta_t *m)
{
    setxattr(path, XATTR_ETAG, m->etag, strlen(m->etag), 0);
    char tag[sizeof(m->etag) + 2];
    snprintf(tag, sizeof(tag), "\"%s\"", m->etag);
    stamp(path, tag, m->last_modified);
}

static bool local_etag(const char *path, char *etag, size_t n)
{
    ssize_t l = getxattr(path, XATTR_ETAG, etag, n - 1);
    if (l <= 0)
        return false;
    etag[l] = '\0';
    return true;
}

/* Deletes from the bucket the results of @p stem's original whose ETag was @p etag. */
static int drop_results(s3store_t *rs, const char *stem, const char *etag)
{
    char prefix[OBJ_MAX];
    snprintf(prefix, sizeof(prefix), "derived/%s~/%s/", stem, etag);
    return s3_delete_prefix(rs->s3, prefix, NULL);
}

s3store_t *s3store_create(store_t *st, s3_t *s3, uint64_t revalidate_ms, uint64_t orig_max)
{
    s3store_t *rs = calloc(1, sizeof(*rs));
    if (rs == NULL)
        return NULL;
    rs->st = st;
    rs->s3 = s3;
    rs->revalidate_ms = revalidate_ms;
    rs->orig_max = orig_max;
    pthread_mutex_init(&rs->mu, NULL);
    for (int i = 0; i < SYNC_STRIPES; i++)
        pthread_mutex_init(&rs->stripe[i].mu, NULL);
    atomic_store(&rs->orig_bytes, store_orig_evict(st, orig_max)); /* counts, trims if over */
    s3_set_tick(s3, tick, rs); /* copies kept for being in use are evicted later */
    return rs;
}

static void evict_run(void *arg)
{
    s3store_t *rs = arg;
    uint64_t before = atomic_load(&rs->orig_bytes);
    uint64_t left = store_orig_evict(rs->st, rs->orig_max);
    atomic_store(&rs->orig_bytes, left);
    if (left < before) { /* an evicted copy must be fetched again, not trusted as fresh */
        pthread_mutex_lock(&rs->mu);
        memset(rs->fresh, 0, sizeof(rs->fresh));
        pthread_mutex_unlock(&rs->mu);
    }
    atomic_store(&rs->evicting, false);
}

/* the checker's cadence: still over the bound (copies kept because in use), try again */
static void tick(void *arg)
{
    account(arg, 0);
}

/* @p bytes more local copies: over storage.s3.cache_max, the oldest go (off this thread) */
static void account(s3store_t *rs, uint64_t bytes)
{
    bool no = false;
    if (atomic_fetch_add(&rs->orig_bytes, bytes) + bytes > rs->orig_max &&
        atomic_compare_exchange_strong(&rs->evicting, &no, true))
        iopool_submit_detached(evict_run, rs);
}

void s3store_destroy(s3store_t *rs)
{
    if (rs == NULL)
        return;
    pthread_mutex_destroy(&rs->mu);
    for (int i = 0; i < SYNC_STRIPES; i++)
        pthread_mutex_destroy(&rs->stripe[i].mu);
    free(rs);
}

bool s3store_ready(s3store_t *rs)
{
    return s3_ready(rs->s3);
}

bool s3store_down(s3store_t *rs)
{
    return s3_down(rs->s3);
}

int s3store_put(s3store_t *rs, const char *key, const char *tmp)
{
    char obj[OBJ_MAX], stem[520];
    uint64_t t0 = now_ms();
    snprintf(obj, sizeof(obj), "orig/%s", key);
    s3_meta_t m = {0};
    int r = s3_put_file(rs->s3, obj, tmp, &m);
    if (r != S3_OK)
        return map_s3(r);
    if (m.etag[0] != '\0') {
        /* a PUT's answer has no Last-Modified: the object's comes from a HEAD, so that
         * this node sends the date the others read from the bucket */
        s3_meta_t h = {0};
        if (s3_head(rs->s3, obj, &h) == S3_OK && strcmp(h.etag, m.etag) == 0)
            m.last_modified = h.last_modified;
        stamp_original(tmp, &m);
    }
    account(rs, m.size);
    bool has_stem = stem_of(key, stem, sizeof(stem));
    if (has_stem) {
        /* the stem now means this key, for every node: its pointer object, written after
         * the original so that it never names an object that was not there */
        char ptr[OBJ_MAX];
        snprintf(ptr, sizeof(ptr), "stems/%s", stem);
        if (s3_put_data(rs->s3, ptr, key, strlen(key)) != S3_OK)
            s3_delete(rs->s3, ptr); /* the original is stored: without a pointer (best
                                      effort) the listing's newest decides */
    }
    mark(rs, 'k', key, t0);
    if (has_stem) {
        mark(rs, 's', stem, t0);
        /* the local copy this replaces loses its ETag first: a result of it still being
         * uploaded then finds its original gone and takes its object back (publish_run),
         * whether its upload ends before the listing below or after it */
        char path[STORE_PATH_MAX];
        store_orig_path(rs->st, key, path, sizeof(path));
        removexattr(path, XATTR_ETAG);
        /* results of the stem's older originals are for nobody now (best effort) */
        char prefix[OBJ_MAX], keep[120];
        snprintf(prefix, sizeof(prefix), "derived/%s~/", stem);
        snprintf(keep, sizeof(keep), "~/%s/", m.etag);
        s3_delete_prefix(rs->s3, prefix, m.etag[0] ? keep : NULL);
    }
    return 0;
}

int s3store_delete(s3store_t *rs, const char *key)
{
    char obj[OBJ_MAX], stem[520];
    snprintf(obj, sizeof(obj), "orig/%s", key);
    /* the local copy's ETag names results too: those published here when the object was
     * already gone (deleted through another node, or a retry of a DELETE that failed after
     * the object went). It is removed once the object is gone, before the results are
     * listed (as in s3store_put), and put back if this DELETE then fails. */
    char path[STORE_PATH_MAX], have[100] = "";
    store_orig_path(rs->st, key, path, sizeof(path));
    local_etag(path, have, sizeof(have));
    s3_meta_t m = {0};
    int r = s3_head(rs->s3, obj, &m);
    if (r == S3_OK)
        r = s3_delete(rs->s3, obj);
    if (r != S3_OK && r != S3_E_NOTFOUND)
        return map_s3(r);
    removexattr(path, XATTR_ETAG);
    bool found = r == S3_OK;
    if (stem_of(key, stem, sizeof(stem))) {
        char ptr[OBJ_MAX], cur[1100];
        size_t n;
        snprintf(ptr, sizeof(ptr), "stems/%s", stem);
        int p = s3_get_data(rs->s3, ptr, cur, sizeof(cur), &n);
        if (p == S3_OK && strcmp(cur, key) == 0)
            p = s3_delete(rs->s3, ptr); /* the stem falls back to the newest left */
        if (p != S3_OK && p != S3_E_NOTFOUND) {
            const char *label = found ? m.etag : have;
            setxattr(path, XATTR_ETAG, label, strlen(label), 0);
            return map_s3(p);
        }
        /* its results: those named after its ETag, the bucket's or this copy's (another
         * original of the stem keeps its own) */
        const char *tags[2] = {found ? m.etag : "", strcmp(have, m.etag) != 0 ? have : ""};
        for (int i = 0; i < 2; i++) {
            if (tags[i][0] == '\0')
                continue;
            int d = drop_results(rs, stem, tags[i]);
            if (d != S3_OK) {
                setxattr(path, XATTR_ETAG, tags[i], strlen(tags[i]), 0);
                return map_s3(d);
            }
        }
        forget(rs, 's', stem);
    }
    forget(rs, 'k', key);
    return found ? 0 : -STORE_E_NOTFOUND;
}

/* The local copy of @p key follows the bucket. @p listed_etag: the object's ETag from a
 * listing (no HEAD needed), or NULL. */
static int sync_key(s3store_t *rs, const char *key, const char *listed_etag)
{
    char obj[OBJ_MAX], path[STORE_PATH_MAX], have[100] = "";
    snprintf(obj, sizeof(obj), "orig/%s", key);
    store_orig_path(rs->st, key, path, sizeof(path));
    struct stat sb;
    bool local = stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
    if (local)
        local_etag(path, have, sizeof(have));
    s3_meta_t m = {0};
    int r = S3_OK;
    if (listed_etag != NULL)
        snprintf(m.etag, sizeof(m.etag), "%s", listed_etag);
    else
        r = s3_head(rs->s3, obj, &m);
    if (r == S3_E_NOTFOUND) {
        char stem[520];
        if (local) {
            store_delete_local(rs->st, key); /* deleted through another node */
            /* and the results this node may have published of it after that node's
             * DELETE cleared them (a result finished within revalidate); one still being
             * uploaded is taken back by publish_run, which finds the copy gone */
            if (have[0] != '\0' && stem_of(key, stem, sizeof(stem)))
                drop_results(rs, stem, have);
        }
        return 0;
    }
    if (r != S3_OK)
        return map_s3(r);
    if (local && have[0] != '\0' && strcmp(have, m.etag) == 0) {
        store_cache_touch(path, &sb); /* recency for the copies' LRU */
        return 0;
    }
    char tmp[STORE_PATH_MAX];
    int e = store_tmp_file(rs->st, tmp, sizeof(tmp));
    if (e != 0)
        return e;
    if ((r = s3_get_file(rs->s3, obj, tmp, &m)) != S3_OK) {
        unlink(tmp);
        return r == S3_E_NOTFOUND ? 0 : map_s3(r);
    }
    stamp_original(tmp, &m);
    bool replaced;
    if ((e = store_install_original(rs->st, key, tmp, &replaced)) != 0) {
        unlink(tmp);
        return e;
    }
    account(rs, m.size);
    /* replaced through another node: what this node published of the old copy since that
     * node's PUT cleared the old results goes too (one still uploading finds the new
     * copy's ETag and takes its object back) */
    char stem[520];
    if (have[0] != '\0' && strcmp(have, m.etag) != 0 && stem_of(key, stem, sizeof(stem)))
        drop_results(rs, stem, have);
    return 0;
}

typedef struct {
    size_t prefix_len;
    char best[1100], etag[100];
    time_t best_lm;
} pick_t;

/* the newest "<stem>.<ext>" (ext without '.' or '/') under the listed prefix */
static int on_candidate(void *arg, const char *key, const char *etag, time_t lm)
{
    pick_t *p = arg;
    const char *ext = key + p->prefix_len;
    if (*ext == '\0' || strpbrk(ext, "./") != NULL)
        return 0;
    if (p->best[0] == '\0' || lm > p->best_lm) {
        snprintf(p->best, sizeof(p->best), "%s", key + 5); /* without "orig/" */
        snprintf(p->etag, sizeof(p->etag), "%s", etag);
        p->best_lm = lm;
    }
    return 0;
}

/* The stem's pointer object names its current key (written by the last PUT of one, on any
 * node): that key is synced and the stem pointed at it. 1 when there is no usable pointer
 * (objects written before it existed, or its key deleted): the listing decides. */
static int sync_stem_pointer(s3store_t *rs, const char *stem)
{
    char ptr[OBJ_MAX], key[1100], path[STORE_PATH_MAX];
    size_t n, sl = strlen(stem);
    snprintf(ptr, sizeof(ptr), "stems/%s", stem);
    int r = s3_get_data(rs->s3, ptr, key, sizeof(key), &n);
    if (r == S3_E_NOTFOUND || r == S3_E_LOCAL) /* none, or too big to be a key */
        return 1;
    if (r != S3_OK)
        return map_s3(r);
    if (n <= sl + 1 || strncmp(key, stem, sl) != 0 || key[sl] != '.' || strpbrk(key + sl + 1, "./"))
        return 1; /* not a key of this stem: ignored */
    if ((r = sync_key(rs, key, NULL)) != 0)
        return r;
    store_orig_path(rs->st, key, path, sizeof(path));
    if (access(path, F_OK) != 0)
        return 1;
    store_point_stem(rs->st, key);
    return 0;
}

static int sync_stem(s3store_t *rs, const char *stem)
{
    int pr = sync_stem_pointer(rs, stem);
    if (pr <= 0)
        return pr;
    char prefix[OBJ_MAX];
    snprintf(prefix, sizeof(prefix), "orig/%s.", stem);
    pick_t p = {.prefix_len = strlen(prefix)};
    int r = s3_list(rs->s3, prefix, on_candidate, &p);
    if (r != S3_OK)
        return map_s3(r);
    if (p.best[0] == '\0') {
        char lkey[1100];
        if (store_stem_key(rs->st, stem, lkey, sizeof(lkey)) == 0)
            return sync_key(rs, lkey, NULL); /* gone from the bucket: goes here too */
        return 0;
    }
    if ((r = sync_key(rs, p.best, p.etag[0] ? p.etag : NULL)) != 0)
        return r;
    store_point_stem(rs->st, p.best);
    return 0;
}

/* A result another node made and published: copied into the local cache. */
static int fetch_derived(s3store_t *rs, const char *stem, const char *variant)
{
    char src[STORE_PATH_MAX], cache[STORE_PATH_MAX], etag[100], obj[OBJ_MAX + 200];
    struct stat sb;
    if (store_find_source(rs->st, stem, src, sizeof(src), &sb) != 0 ||
        !local_etag(src, etag, sizeof(etag)))
        return 0;
    store_cache_path(rs->st, stem, &sb, variant, cache, sizeof(cache));
    if (access(cache, F_OK) == 0)
        return 0;
    snprintf(obj, sizeof(obj), "derived/%s~/%s/%s", stem, etag, variant);
    char tmp[STORE_PATH_MAX];
    if (store_tmp_file(rs->st, tmp, sizeof(tmp)) != 0)
        return 0;
    /* kept only when its bytes are the ones published (checked against the MD5 put with
     * them): a result is served from the cache for as long as its original stays, so a
     * damaged or half-written copy is made here instead (and published again) */
    s3_meta_t m;
    int r = s3_get_file(rs->s3, obj, tmp, &m);
    if (r == S3_OK && m.checked)
        store_cache_commit(rs->st, tmp, cache, src, &sb);
    else
        unlink(tmp);
    return r == S3_E_UNAVAILABLE ? -STORE_E_UNAVAILABLE : 0;
}

bool s3store_fresh(s3store_t *rs, const char *key, const char *stem)
{
    return is_fresh(rs, 'k', key) && (stem == NULL || is_fresh(rs, 's', stem));
}

static int check_key(s3store_t *rs, const char *key)
{
    return sync_key(rs, key, NULL);
}

/* @p name: "<stem>/<variant>" (a variant has no '/') */
static int check_derived(s3store_t *rs, const char *name)
{
    char stem[STORE_PATH_MAX];
    const char *slash = strrchr(name, '/');
    snprintf(stem, sizeof(stem), "%.*s", (int)(slash - name), name);
    return fetch_derived(rs, stem, slash + 1);
}

/* Checks the name @p s of @p kind against the bucket with @p check, unless it is fresh or
 * a check of it that started after this call did is what the wait was for. */
static int coalesced_check(s3store_t *rs, char kind, const char *s,
                           int (*check)(s3store_t *, const char *))
{
    uint64_t h = hash2(kind, s);
    if (is_fresh(rs, kind, s))
        return 0;
    struct stripe *sp = &rs->stripe[(h >> 1) % SYNC_STRIPES];
    uint64_t arrived = atomic_load(&sp->started); /* a check numbered above began later */
    pthread_mutex_lock(&sp->mu);
    int r;
    if (is_fresh(rs, kind, s)) { /* checked while we waited (revalidate > 0) */
        r = 0;
        atomic_fetch_add(&rs->coalesced, 1);
    } else if (sp->hash == h && sp->seq > arrived) { /* its outcome is ours */
        r = sp->ret;
        atomic_fetch_add(&rs->coalesced, 1);
    } else {
        uint64_t t0 = now_ms(), seq = atomic_fetch_add(&sp->started, 1) + 1;
        r = check(rs, s);
        if (r == 0)
            mark(rs, kind, s, t0);
        sp->hash = h;
        sp->seq = seq;
        sp->ret = r;
    }
    pthread_mutex_unlock(&sp->mu);
    return r;
}

int s3store_sync(s3store_t *rs, const char *key, const char *stem, const char *variant)
{
    int r;
    if ((r = coalesced_check(rs, 'k', key, check_key)) != 0)
        return r;
    if (stem == NULL)
        return 0;
    char path[STORE_PATH_MAX];
    store_orig_path(rs->st, key, path, sizeof(path));
    if (access(path, F_OK) == 0)
        return 0; /* an exact key wins over the derived grammar */
    if ((r = coalesced_check(rs, 's', stem, sync_stem)) != 0 || variant == NULL)
        return r;
    char name[STORE_PATH_MAX + 200];
    snprintf(name, sizeof(name), "%s/%s", stem, variant);
    return coalesced_check(rs, 'v', name, check_derived);
}

void s3store_stats(s3store_t *rs, s3_stats_t *out, uint64_t *coalesced)
{
    s3_stats(rs->s3, out);
    *coalesced = atomic_load(&rs->coalesced);
}

/* The object ETag and the stem of the original whose result is @p cache_path, read from
 * the original at @p src_path only while it is still that generation of it (the cache
 * path names the generation: store.c). One descriptor is checked and read, so a
 * replacement cannot slip in between: a result is never labelled or published with
 * the ETag of an original it was not made from. false when it changed or has none. */
static bool result_source(s3store_t *rs, const char *src_path, const char *cache_path, char *etag,
                          size_t n, char *stem, size_t stemn, char key[static 1100])
{
    char expect[STORE_PATH_MAX];
    const char *variant = strrchr(cache_path, '/');
    if (variant == NULL || store_key_of_path(rs->st, src_path, key, 1100) != 0 ||
        !stem_of(key, stem, stemn))
        return false;
    int fd = open(src_path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    struct stat sb;
    ssize_t l = fstat(fd, &sb) == 0 ? fgetxattr(fd, XATTR_ETAG, etag, n - 1) : -1;
    close(fd);
    if (l <= 0)
        return false;
    etag[l] = '\0';
    store_cache_path(rs->st, stem, &sb, variant + 1, expect, sizeof(expect));
    return strcmp(expect, cache_path) == 0;
}

void s3store_stamp_result(s3store_t *rs, const char *src_path, const char *tmp, const char *final)
{
    char etag[100], tag[160], stem[1100], key[1100];
    const char *variant = strrchr(final, '/');
    if (!result_source(rs, src_path, final, etag, sizeof(etag), stem, sizeof(stem), key))
        return; /* the inode-based ETag, on this node only */
    snprintf(tag, sizeof(tag), "W/\"%s-%016" PRIx64 "\"", etag, hash2('v', variant + 1));
    /* the date stays the result's own (when it was made here): the original's would go
     * backwards when a stem falls back to an older original, and If-Modified-Since would
     * then keep a client on the deleted one's result */
    stamp(tmp, tag, 0);
}

struct publish {
    s3store_t *rs;
    char src[STORE_PATH_MAX], cache[STORE_PATH_MAX], obj[OBJ_MAX + 200], etag[100], key[1100];
};

/* The original the result of @p p is named after is still the local copy (the same bytes
 * put again keep its ETag). */
static bool publish_wanted(const struct publish *p)
{
    char etag[100];
    return local_etag(p->src, etag, sizeof(etag)) && strcmp(etag, p->etag) == 0;
}

/* ... or, after the upload, it is gone: the local copy has another ETag, or has none (a PUT
 * or DELETE here removes it first) or is gone (evicted, deleted) and the bucket no longer
 * holds that ETag under the key. */
static bool publish_orphaned(const struct publish *p)
{
    char etag[100], obj[OBJ_MAX];
    if (local_etag(p->src, etag, sizeof(etag)))
        return strcmp(etag, p->etag) != 0;
    s3_meta_t m = {0};
    snprintf(obj, sizeof(obj), "orig/%s", p->key);
    int r = s3_head(p->rs->s3, obj, &m);
    return r == S3_E_NOTFOUND || (r == S3_OK && strcmp(m.etag, p->etag) != 0);
}

static void publish_run(void *arg)
{
    struct publish *p = arg;
    /* not for an original replaced or deleted since (its PUT or DELETE has cleared the
     * bucket's results already), and taken back if that happened during the upload */
    if (publish_wanted(p) && s3_put_file(p->rs->s3, p->obj, p->cache, NULL) == S3_OK &&
        publish_orphaned(p))
        s3_delete(p->rs->s3, p->obj);
    free(p);
}

void s3store_result_made(s3store_t *rs, const char *src_path, const char *cache_path)
{
    /* the object's name is settled now, on the job's thread, from the original the
     * result was made from; a replacement after this gets its own results */
    char etag[100], stem[1100], key[1100];
    if (!result_source(rs, src_path, cache_path, etag, sizeof(etag), stem, sizeof(stem), key))
        return;
    struct publish *p = malloc(sizeof(*p));
    if (p == NULL)
        return;
    p->rs = rs;
    snprintf(p->src, sizeof(p->src), "%s", src_path);
    snprintf(p->cache, sizeof(p->cache), "%s", cache_path);
    snprintf(p->etag, sizeof(p->etag), "%s", etag);
    snprintf(p->key, sizeof(p->key), "%s", key);
    snprintf(p->obj, sizeof(p->obj), "derived/%s~/%s/%s", stem, etag, strrchr(cache_path, '/') + 1);
    iopool_submit_detached(publish_run, p);
}
