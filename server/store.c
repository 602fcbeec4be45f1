/* store — originals, stem index and derived-result cache on disk (layout in store.h).
 * Every write goes through a temp file in tmp/ (same filesystem), fsync and rename,
 * so a failed or interrupted write never damages a stored original. */
#include "server/store.h"

#include "server/s3store.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#define ROOT_MAX 600 /* keeps every derived path under STORE_PATH_MAX */

struct store {
    char root[ROOT_MAX];
    char tmpdir[ROOT_MAX + 96]; /* tmp/<host>.<pid>.<random>: this instance's own temp files */
    char spill_template[ROOT_MAX + 128];
    uint64_t cache_max;
    _Atomic uint64_t cache_bytes;
    _Atomic uint64_t level_bytes, level_files; /* the part of the cache that is levels */
    _Atomic uint64_t evictions;
    _Atomic uint64_t seq;
    _Atomic uint64_t epoch; /* bumped by every change a served file may depend on */
    pthread_mutex_t evict_mu;
    struct s3store *remote; /* s3 backend: writes go through it first; NULL: local */
};

static int map_errno(int e)
{
    if (e == ENOENT)
        return -STORE_E_NOTFOUND;
    if (e == ENOSPC || e == EDQUOT)
        return -STORE_E_NOSPACE;
    if (e == ENOTDIR || e == EISDIR || e == EEXIST)
        return -STORE_E_CONFLICT;
    return -STORE_E_IO;
}

static void fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
}

/* fsync of the directory holding @p path: makes a rename or a new entry in it durable. */
static void fsync_parent(const char *path)
{
    char buf[STORE_PATH_MAX];
    snprintf(buf, sizeof(buf), "%s", path);
    char *slash = strrchr(buf, '/');
    if (slash == NULL)
        return;
    *slash = '\0';
    fsync_dir(buf);
}

/* mkdir of @p dir; a new directory is recorded durably in its parent. */
static int mkdir_durable(const char *dir)
{
    if (mkdir(dir, 0755) != 0)
        return errno == EEXIST ? 0 : -1;
    fsync_parent(dir);
    return 0;
}

/* mkdir -p of every directory above the last '/' of @p path. */
static int mkdir_parents(const char *path)
{
    char buf[STORE_PATH_MAX];
    snprintf(buf, sizeof(buf), "%s", path);
    char *slash = strrchr(buf, '/');
    if (slash == NULL)
        return 0;
    *slash = '\0';
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir_durable(buf) != 0)
            return -1;
        *p = '/';
    }
    return mkdir_durable(buf);
}

/* Removes empty directories from the parent of @p path up to (not including) @p stop. */
static void prune_empty_parents(const char *path, const char *stop)
{
    char buf[STORE_PATH_MAX];
    snprintf(buf, sizeof(buf), "%s", path);
    size_t stoplen = strlen(stop);
    char *slash;
    while ((slash = strrchr(buf, '/')) != NULL) {
        *slash = '\0';
        if (strlen(buf) <= stoplen || rmdir(buf) != 0)
            break;
    }
}

static _Thread_local uint64_t tl_freed; /* bytes removed by the current remove_tree walk */
/* bytes and files of mezzanine levels removed or counted by the current walk */
static _Thread_local uint64_t tl_level_bytes, tl_level_files;

/* A cached file named "@..." is a mezzanine level (mezz.h), not a result. */
static bool is_level(const char *path)
{
    const char *b = strrchr(path, '/');
    return b != NULL && b[1] == STORE_LEVEL_MARK;
}

static void level_count(const char *path, const struct stat *sb)
{
    if (is_level(path)) {
        tl_level_bytes += (uint64_t)sb->st_size;
        tl_level_files++;
    }
}

static void atomic_sub_floor(_Atomic uint64_t *v, uint64_t n)
{
    uint64_t cur = atomic_load(v);
    while (!atomic_compare_exchange_weak(v, &cur, cur > n ? cur - n : 0))
        ;
}

/* Takes the levels the last walk removed off the level counters. */
static void level_sub_walk(store_t *st)
{
    atomic_sub_floor(&st->level_bytes, tl_level_bytes);
    atomic_sub_floor(&st->level_files, tl_level_files);
}

static int on_remove(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
    if (type == FTW_F || type == FTW_SL) {
        if (unlink(path) == 0 && type == FTW_F) {
            tl_freed += (uint64_t)sb->st_size;
            level_count(path, sb);
        }
    } else if (type == FTW_DP) {
        rmdir(path);
    }
    return 0;
}

/* rm -rf; returns the bytes of regular files removed. */
static uint64_t remove_tree(const char *path)
{
    tl_freed = tl_level_bytes = tl_level_files = 0;
    nftw(path, on_remove, 16, FTW_DEPTH | FTW_PHYS);
    return tl_freed;
}

/* True when tmp/ entry @p name ("<host>.<pid>.<random>") belongs to a process of this
 * host that no longer exists: its files were never published and can go at once. */
static bool owner_is_dead(const char *name, const char *host)
{
    size_t hl = strlen(host);
    if (strncmp(name, host, hl) != 0 || name[hl] != '.')
        return false;
    char *end;
    long pid = strtol(name + hl + 1, &end, 10);
    if (pid <= 0 || *end != '.' || pid == (long)getpid())
        return false;
    return kill((pid_t)pid, 0) != 0 && errno == ESRCH;
}

/* Removes entries of tmp/ not modified for @p max_age seconds, and at once those of
 * instances on this host that died (kill -9, OOM) with a write half done. */
static void remove_stale_tmp(const char *root, const char *host, time_t max_age)
{
    char tmp[ROOT_MAX + 16], p[ROOT_MAX + 300];
    snprintf(tmp, sizeof(tmp), "%s/tmp", root);
    DIR *d = opendir(tmp);
    struct dirent *e;
    time_t now = time(NULL);
    while (d != NULL && (e = readdir(d)) != NULL) {
        struct stat sb;
        if (e->d_name[0] == '.')
            continue;
        snprintf(p, sizeof(p), "%s/%s", tmp, e->d_name);
        if (lstat(p, &sb) == 0 && (now - sb.st_mtime > max_age || owner_is_dead(e->d_name, host)))
            remove_tree(p);
    }
    if (d)
        closedir(d);
}

void store_maintain(store_t *st)
{
    /* another instance may have aged our directory out while we were idle */
    if (access(st->tmpdir, F_OK) != 0)
        mkdir(st->tmpdir, 0755);
    utimensat(AT_FDCWD, st->tmpdir, NULL, 0);
}

static void cache_sub(store_t *st, uint64_t n)
{
    uint64_t cur = atomic_load(&st->cache_bytes);
    while (!atomic_compare_exchange_weak(&st->cache_bytes, &cur, cur > n ? cur - n : 0))
        ;
}

static _Thread_local uint64_t tl_sum;
static int on_sum(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
    if (type == FTW_F) {
        tl_sum += (uint64_t)sb->st_size;
        level_count(path, sb);
    }
    return 0;
}

store_t *store_create(const char *root, uint64_t cache_max, char *err, size_t errlen)
{
    store_t *st = calloc(1, sizeof(*st));
    if (st == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    char probe[PATH_MAX], real[PATH_MAX];
    snprintf(probe, sizeof(probe), "%s/x", root);
    if (mkdir_parents(probe) != 0 || realpath(root, real) == NULL) {
        snprintf(err, errlen, "storage.root %s: %s", root, strerror(errno));
        free(st);
        return NULL;
    }
    if (strlen(real) >= ROOT_MAX) {
        snprintf(err, errlen, "storage.root %s: the path is longer than %d bytes", real,
                 ROOT_MAX - 1);
        free(st);
        return NULL;
    }
    memcpy(st->root, real, strlen(real) + 1);
    static const char *const subdirs[] = {"orig", "stem", "cache", "tmp"};
    for (size_t i = 0; i < sizeof(subdirs) / sizeof(subdirs[0]); i++) {
        char d[ROOT_MAX + 16];
        snprintf(d, sizeof(d), "%s/%s", st->root, subdirs[i]);
        if (mkdir(d, 0755) != 0 && errno != EEXIST) {
            snprintf(err, errlen, "storage.root: cannot create %s: %s", d, strerror(errno));
            free(st);
            return NULL;
        }
    }
    /* Each instance writes its temp files in a directory of its own, so instances that
     * share storage.root never delete or collide with each other's files. Directories
     * untouched for an hour belong to instances that died: no rename ever published
     * their contents, so they are garbage. */
    char host[41] = "host";
    gethostname(host, sizeof(host) - 1);
    host[strcspn(host, "/.")] = '\0';
    static _Atomic unsigned instances; /* several stores in one process (tests) */
    unsigned rnd = (unsigned)time(NULL) ^ ((unsigned)getpid() << 16) ^ (unsigned)(uintptr_t)st ^
                   (atomic_fetch_add(&instances, 1) * 0x9e3779b9u);
    snprintf(st->tmpdir, sizeof(st->tmpdir), "%s/tmp/%s.%ld.%08x", st->root, host, (long)getpid(),
             rnd);
    remove_stale_tmp(st->root, host, 3600);
    if (mkdir(st->tmpdir, 0755) != 0) {
        snprintf(err, errlen, "storage.root: cannot create %s: %s", st->tmpdir, strerror(errno));
        free(st);
        return NULL;
    }
    snprintf(st->spill_template, sizeof(st->spill_template), "%s/body.XXXXXX", st->tmpdir);
    st->cache_max = cache_max;
    char cache[ROOT_MAX + 16];
    snprintf(cache, sizeof(cache), "%s/cache", st->root);
    tl_sum = tl_level_bytes = tl_level_files = 0;
    nftw(cache, on_sum, 16, FTW_PHYS);
    atomic_store(&st->cache_bytes, tl_sum);
    atomic_store(&st->level_bytes, tl_level_bytes);
    atomic_store(&st->level_files, tl_level_files);
    pthread_mutex_init(&st->evict_mu, NULL);
    return st;
}

void store_destroy(store_t *st)
{
    if (st == NULL)
        return;
    pthread_mutex_destroy(&st->evict_mu);
    free(st);
}

/* Key to file names. A key may hold a segment of up to 512 bytes, over NAME_MAX: such a
 * segment is cut into directories of SEG_CHUNK bytes each ending in '~' (outside the key
 * charset, so the mapping is one-to-one). The cut is made in the part before the last '.'
 * and the rest keeps its extension, so originals of one stem ("<stem>.jpg", "<stem>.png")
 * share a directory whenever their extensions are up to 50 bytes. Every component stays
 * at most SEG_TAIL + 1 ('@') bytes. */
#define SEG_CHUNK 200
#define SEG_TAIL 250

static size_t map_segment(const char *seg, size_t len, char *out, size_t cap)
{
    size_t o = 0;
    const char *dot = NULL;
    for (size_t i = len; i > 1; i--)
        if (seg[i - 1] == '.') {
            dot = seg + i - 1;
            break;
        }
    size_t base = dot ? (size_t)(dot - seg) : len, p = 0;
    while (base - p > SEG_CHUNK && o + SEG_CHUNK + 2 < cap) {
        memcpy(out + o, seg + p, SEG_CHUNK);
        o += SEG_CHUNK;
        out[o++] = '~';
        out[o++] = '/';
        p += SEG_CHUNK;
    }
    while (len - p > SEG_TAIL && o + SEG_CHUNK + 2 < cap) {
        memcpy(out + o, seg + p, SEG_CHUNK);
        o += SEG_CHUNK;
        out[o++] = '~';
        out[o++] = '/';
        p += SEG_CHUNK;
    }
    size_t n = len - p < cap - o ? len - p : cap - o;
    memcpy(out + o, seg + p, n);
    return o + n;
}

/* "<root>/<tree>/<mapped key><suffix>" */
static void map_path(const store_t *st, const char *tree, const char *key, const char *suffix,
                     char *out, size_t outlen)
{
    int n = snprintf(out, outlen, "%s/%s/", st->root, tree);
    size_t o = n > 0 && (size_t)n < outlen ? (size_t)n : 0;
    const char *seg = key;
    for (;;) {
        const char *slash = strchr(seg, '/');
        size_t len = slash ? (size_t)(slash - seg) : strlen(seg);
        o += map_segment(seg, len, out + o, outlen - o - 1);
        if (slash == NULL || o + 2 >= outlen)
            break;
        out[o++] = '/';
        seg = slash + 1;
    }
    snprintf(out + o, outlen - o, "%s", suffix);
}

void store_orig_path(const store_t *st, const char *key, char *out, size_t outlen)
{
    map_path(st, "orig", key, "@", out, outlen);
}

const char *store_spill_template(const store_t *st)
{
    return st->spill_template;
}

const char *store_tmp_dir(const store_t *st)
{
    return st->tmpdir;
}

static void stem_link_path(const store_t *st, const char *stem, char *out, size_t outlen)
{
    map_path(st, "stem", stem, "@", out, outlen);
}

static void stem_cache_dir(const store_t *st, const char *stem, char *out, size_t outlen)
{
    map_path(st, "cache", stem, "@", out, outlen);
}

/* The stem of a key: everything before the last '.' of its last segment (NULL-free copy). */
static bool key_stem(const char *key, char *stem, size_t stemlen, const char **base)
{
    const char *slash = strrchr(key, '/');
    *base = slash ? slash + 1 : key;
    const char *dot = strrchr(*base, '.');
    if (dot == NULL || dot == *base)
        return false;
    snprintf(stem, stemlen, "%.*s", (int)(dot - key), key);
    return true;
}

static int point_stem(store_t *st, const char *stem, const char *base)
{
    char link[STORE_PATH_MAX], tmp[STORE_PATH_MAX];
    stem_link_path(st, stem, link, sizeof(link));
    snprintf(tmp, sizeof(tmp), "%s/link.%llu", st->tmpdir,
             (unsigned long long)atomic_fetch_add(&st->seq, 1));
    if (mkdir_parents(link) != 0 || symlink(base, tmp) != 0)
        return map_errno(errno);
    if (rename(tmp, link) != 0) {
        int e = errno;
        unlink(tmp);
        return map_errno(e);
    }
    fsync_parent(link);
    return 0;
}

static void gen_name(const struct stat *src, char *out, size_t outlen)
{
    snprintf(out, outlen, "%llx-%llx.%lx", (unsigned long long)src->st_ino,
             (unsigned long long)src->st_mtim.tv_sec, (unsigned long)src->st_mtim.tv_nsec);
}

/* Removes the stem's cached results of every source generation but @p keep (NULL: all).
 * Results already made from the current original stay. */
static void drop_stem_cache(store_t *st, const char *stem, const char *keep)
{
    char dir[STORE_PATH_MAX], p[STORE_PATH_MAX + 260];
    stem_cache_dir(st, stem, dir, sizeof(dir));
    DIR *d = opendir(dir);
    struct dirent *e;
    while (d != NULL && (e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.' || (keep != NULL && strcmp(e->d_name, keep) == 0))
            continue;
        snprintf(p, sizeof(p), "%s/%s", dir, e->d_name);
        cache_sub(st, remove_tree(p));
        level_sub_walk(st);
    }
    if (d)
        closedir(d);
    rmdir(dir); /* only when empty */
}

/* mkdir -p + rename, once more when a concurrent prune removed the new parent between. */
static int rename_into(const char *from, const char *to)
{
    for (int attempt = 0; attempt < 2; attempt++) {
        if (mkdir_parents(to) != 0)
            return -1;
        if (rename(from, to) == 0)
            return 0;
        if (errno != ENOENT)
            return -1;
    }
    return -1;
}

static ssize_t write_all(int fd, const char *p, size_t len)
{
    size_t done = 0;
    while (done < len) {
        /* bounded chunks: the source is usually h2o's mmap'd body file, and smaller
         * writes let the kernel drop its pages as it goes */
        size_t n = len - done > (8u << 20) ? (8u << 20) : len - done;
        ssize_t w = write(fd, p + done, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        done += (size_t)w;
    }
    return (ssize_t)done;
}

int store_put(store_t *st, const char *key, const void *data, size_t len, bool *replaced, char *err,
              size_t errlen)
{
    char final[STORE_PATH_MAX], tmp[STORE_PATH_MAX];
    int fd = -1, ret = 0;
    store_orig_path(st, key, final, sizeof(final));
    snprintf(tmp, sizeof(tmp), "%s/put.XXXXXX", st->tmpdir);
    if ((fd = mkstemp(tmp)) < 0) {
        ret = map_errno(errno);
        snprintf(err, errlen, "create temp file: %s", strerror(errno));
        return ret;
    }
    if (write_all(fd, data, len) < 0 || fsync(fd) != 0 || fchmod(fd, 0644) != 0) {
        ret = map_errno(errno);
        snprintf(err, errlen, "write: %s", strerror(errno));
        goto out_unlink;
    }
    if (close(fd) != 0) {
        fd = -1;
        ret = map_errno(errno);
        snprintf(err, errlen, "close: %s", strerror(errno));
        goto out_unlink;
    }
    fd = -1;
    if (st->remote != NULL && (ret = s3store_put(st->remote, key, tmp)) != 0) {
        snprintf(err, errlen, "%s", ret == -STORE_E_UNAVAILABLE ? "the object store did not answer"
                                                                : "the object store refused it");
        goto out_unlink;
    }
    if ((ret = store_install_original(st, key, tmp, replaced)) != 0) {
        snprintf(err, errlen, "rename: %s", strerror(errno));
        goto out_unlink;
    }
    return 0;

out_unlink:
    if (fd >= 0)
        close(fd);
    unlink(tmp);
    return ret;
}

int store_install_original(store_t *st, const char *key, const char *tmp, bool *replaced)
{
    char final[STORE_PATH_MAX];
    store_orig_path(st, key, final, sizeof(final));
    *replaced = access(final, F_OK) == 0;
    if (rename_into(tmp, final) != 0)
        return map_errno(errno);
    atomic_fetch_add(&st->epoch, 1);
    fsync_parent(final);

    char stem[520]; /* keys are at most 512 bytes */
    const char *base;
    struct stat now;
    if (key_stem(key, stem, sizeof(stem), &base) && stat(final, &now) == 0) {
        char gen[64];
        gen_name(&now, gen, sizeof(gen));
        point_stem(st, stem, base);
        drop_stem_cache(st, stem, gen);
    }
    atomic_fetch_add(&st->epoch, 1);
    return 0;
}

#define LINK_MAX 600 /* a stem link holds the last segment of a key: at most 512 bytes */

/* After deleting @p key (last segment @p base), repoint the stem link at another
 * "<stem>.*" original or remove it. The siblings share the deleted file's directory. */
static void repair_stem(store_t *st, const char *key, const char *stem, const char *base)
{
    char link[STORE_PATH_MAX], target[LINK_MAX];
    stem_link_path(st, stem, link, sizeof(link));
    ssize_t n = readlink(link, target, sizeof(target) - 1);
    if (n < 0)
        return;
    target[n] = '\0';
    if (strcmp(target, base) != 0)
        return; /* points at another original of the same stem: still right */
    char dir[STORE_PATH_MAX];
    store_orig_path(st, key, dir, sizeof(dir));
    char *name = strrchr(dir, '/');
    *name++ = '\0';
    const char *ldot = strrchr(name, '.');
    size_t prefix_len = ldot ? (size_t)(ldot - name) + 1 : 0; /* "<last chunk of stem>." */
    const char *stembase = stem + (base - key);
    char other[LINK_MAX] = "";
    DIR *d = prefix_len ? opendir(dir) : NULL;
    struct dirent *e;
    while (d != NULL && (e = readdir(d)) != NULL) {
        size_t l = strlen(e->d_name);
        if (l > prefix_len + 1 && strncmp(e->d_name, name, prefix_len) == 0 &&
            e->d_name[l - 1] == '@' &&
            memchr(e->d_name + prefix_len, '.', l - prefix_len) == NULL) {
            snprintf(other, sizeof(other), "%s.%.*s", stembase, (int)(l - 1 - prefix_len),
                     e->d_name + prefix_len);
            break;
        }
    }
    if (d)
        closedir(d);
    if (other[0] != '\0')
        point_stem(st, stem, other);
    else
        unlink(link);
}

int store_delete(store_t *st, const char *key)
{
    if (st->remote == NULL)
        return store_delete_local(st, key);
    int r = s3store_delete(st->remote, key);
    if (r != 0 && r != -STORE_E_NOTFOUND)
        return r;
    int l = store_delete_local(st, key);
    return r == 0 ? 0 : l; /* found in the bucket or here */
}

int store_delete_local(store_t *st, const char *key)
{
    char final[STORE_PATH_MAX];
    store_orig_path(st, key, final, sizeof(final));
    if (unlink(final) != 0)
        return map_errno(errno);
    atomic_fetch_add(&st->epoch, 1);
    fsync_parent(final);
    char orig_root[STORE_PATH_MAX];
    snprintf(orig_root, sizeof(orig_root), "%s/orig", st->root);
    prune_empty_parents(final, orig_root);
    char stem[520]; /* keys are at most 512 bytes */
    const char *base;
    if (key_stem(key, stem, sizeof(stem), &base)) {
        repair_stem(st, key, stem, base);
        char path[STORE_PATH_MAX], gen[64];
        struct stat src;
        bool other = store_find_source(st, stem, path, sizeof(path), &src) == 0;
        if (other)
            gen_name(&src, gen, sizeof(gen));
        drop_stem_cache(st, stem, other ? gen : NULL);
    }
    atomic_fetch_add(&st->epoch, 1);
    return 0;
}

int store_find_source(const store_t *st, const char *stem, char *path, size_t pathlen,
                      struct stat *sb)
{
    char link[STORE_PATH_MAX], target[LINK_MAX], key[LINK_MAX + 520];
    stem_link_path(st, stem, link, sizeof(link));
    ssize_t n = readlink(link, target, sizeof(target) - 1);
    if (n <= 0)
        return -STORE_E_NOTFOUND;
    target[n] = '\0';
    if (strchr(target, '/') != NULL)
        return -STORE_E_NOTFOUND; /* we only ever write last segments */
    const char *slash = strrchr(stem, '/');
    int dirlen = slash ? (int)(slash - stem + 1) : 0;
    snprintf(key, sizeof(key), "%.*s%s", dirlen, stem, target);
    store_orig_path(st, key, path, pathlen);
    if (stat(path, sb) != 0 || !S_ISREG(sb->st_mode))
        return -STORE_E_NOTFOUND;
    return 0;
}

int store_stem_key(const store_t *st, const char *stem, char *key, size_t keylen)
{
    char link[STORE_PATH_MAX], target[LINK_MAX];
    stem_link_path(st, stem, link, sizeof(link));
    ssize_t n = readlink(link, target, sizeof(target) - 1);
    if (n <= 0)
        return -STORE_E_NOTFOUND;
    target[n] = '\0';
    const char *slash = strrchr(stem, '/');
    int dirlen = slash ? (int)(slash - stem + 1) : 0;
    snprintf(key, keylen, "%.*s%s", dirlen, stem, target);
    return 0;
}

void store_point_stem(store_t *st, const char *key)
{
    char stem[520];
    const char *base;
    if (key_stem(key, stem, sizeof(stem), &base))
        point_stem(st, stem, base);
}

int store_key_of_path(const store_t *st, const char *path, char *key, size_t keylen)
{
    size_t rl = strlen(st->root), n = strlen(path);
    if (strncmp(path, st->root, rl) != 0 || strncmp(path + rl, "/orig/", 6) != 0 || n < rl + 7 ||
        path[n - 1] != '@')
        return -1;
    size_t o = 0;
    for (const char *p = path + rl + 6; p < path + n - 1 && o + 1 < keylen; p++) {
        if (p[0] == '~' && p[1] == '/') { /* a cut of a long segment (map_segment) */
            p++;
            continue;
        }
        key[o++] = *p;
    }
    key[o] = '\0';
    return 0;
}

void store_set_remote(store_t *st, struct s3store *rs)
{
    st->remote = rs;
}

struct s3store *store_remote(const store_t *st)
{
    return st->remote;
}

bool store_ready(const store_t *st)
{
    return st->remote == NULL || s3store_ready(st->remote);
}

void store_result_made(store_t *st, const char *src_path, const char *cache_path)
{
    if (st->remote != NULL)
        s3store_result_made(st->remote, src_path, cache_path);
}

void store_cache_path(const store_t *st, const char *stem, const struct stat *src,
                      const char *variant, char *out, size_t outlen)
{
    char gen[64], suffix[160];
    gen_name(src, gen, sizeof(gen));
    snprintf(suffix, sizeof(suffix), "@/%s/%s", gen, variant);
    map_path(st, "cache", stem, suffix, out, outlen);
}

int store_tmp_file(const store_t *st, char *out, size_t outlen)
{
    snprintf(out, outlen, "%s/res.XXXXXX", st->tmpdir);
    int fd = mkstemp(out);
    if (fd < 0)
        return map_errno(errno);
    fchmod(fd, 0644);
    close(fd);
    return 0;
}

/* Eviction walks the cache three times with constant memory, however many files it
 * holds: (1) total bytes and the atime range, which also corrects the byte count
 * (several instances may share the cache); (2) bytes per atime bucket; (3) remove the
 * files in the oldest buckets until the cache is under 90% of its bound. */
#define EVICT_BUCKETS 256

static _Thread_local struct {
    uint64_t total, freed, files_removed;
    time_t tmin, tmax, cutoff;
    uint64_t bucket[EVICT_BUCKETS];
    const char *stop;
    time_t keep_after; /* files used after this are kept (0: none) */
} ev;

static unsigned bucket_of(time_t t)
{
    if (ev.tmax <= ev.tmin)
        return 0;
    uint64_t b = (uint64_t)(t - ev.tmin) * EVICT_BUCKETS / (uint64_t)(ev.tmax - ev.tmin + 1);
    return b < EVICT_BUCKETS ? (unsigned)b : EVICT_BUCKETS - 1;
}

static int on_ev_range(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
    if (type == FTW_F) {
        ev.total += (uint64_t)sb->st_size;
        level_count(path, sb);
        if (ev.tmin == 0 || sb->st_atime < ev.tmin)
            ev.tmin = sb->st_atime;
        if (sb->st_atime > ev.tmax)
            ev.tmax = sb->st_atime;
    }
    return 0;
}

static int on_ev_bucket(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
    if (type == FTW_F)
        ev.bucket[bucket_of(sb->st_atime)] += (uint64_t)sb->st_size;
    return 0;
}

static int on_ev_remove(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
    if (type == FTW_F && bucket_of(sb->st_atime) <= (unsigned)ev.cutoff &&
        (ev.keep_after == 0 || sb->st_atime <= ev.keep_after) && unlink(path) == 0) {
        ev.freed += (uint64_t)sb->st_size;
        level_count(path, sb);
        ev.files_removed++;
        prune_empty_parents(path, ev.stop);
    }
    return 0;
}

bool store_cache_over_bound(store_t *st)
{
    return atomic_load(&st->cache_bytes) > st->cache_max;
}

/* Evicts the least recently used files under <root>/<tree> to 90% of @p bound; ev.total
 * and ev.freed tell what it held and removed, tl_level_bytes/files the mezzanine levels
 * left under it. */
static void evict_tree(store_t *st, const char *tree, uint64_t bound, time_t keep_after)
{
    char dir[ROOT_MAX + 16];
    snprintf(dir, sizeof(dir), "%s/%s", st->root, tree);
    memset(&ev, 0, sizeof(ev));
    ev.stop = dir;
    ev.keep_after = keep_after;
    tl_level_bytes = tl_level_files = 0; /* mezzanine levels seen (level_count) */
    nftw(dir, on_ev_range, 16, FTW_PHYS);
    if (ev.total > bound) {
        uint64_t level_bytes = tl_level_bytes, level_files = tl_level_files;
        nftw(dir, on_ev_bucket, 16, FTW_PHYS);
        uint64_t need = ev.total - bound / 10 * 9, sum = 0;
        ev.cutoff = 0;
        for (unsigned i = 0; i < EVICT_BUCKETS; i++) {
            sum += ev.bucket[i];
            ev.cutoff = (time_t)i;
            if (sum >= need)
                break;
        }
        tl_level_bytes = tl_level_files = 0; /* now: the levels removed */
        nftw(dir, on_ev_remove, 16, FTW_DEPTH | FTW_PHYS);
        tl_level_bytes = level_bytes - tl_level_bytes; /* the levels left */
        tl_level_files = level_files - tl_level_files;
        atomic_fetch_add(&st->epoch, 1);
    }
}

void store_cache_evict(store_t *st)
{
    if (pthread_mutex_trylock(&st->evict_mu) != 0)
        return; /* someone else is evicting */
    evict_tree(st, "cache", st->cache_max, 0);
    atomic_store(&st->cache_bytes, ev.total - ev.freed); /* recounted from disk */
    atomic_store(&st->level_bytes, tl_level_bytes);
    atomic_store(&st->level_files, tl_level_files);
    atomic_fetch_add(&st->evictions, ev.files_removed);
    pthread_mutex_unlock(&st->evict_mu);
}

#define ORIG_KEEP_S 10

uint64_t store_orig_evict(store_t *st, uint64_t bound)
{
    pthread_mutex_lock(&st->evict_mu);
    /* a copy used in the last ORIG_KEEP_S seconds stays: it may be about to be served or
     * decoded (a derive job re-checks its source when it commits) */
    evict_tree(st, "orig", bound, time(NULL) - ORIG_KEEP_S);
    uint64_t left = ev.total - ev.freed;
    pthread_mutex_unlock(&st->evict_mu);
    return left;
}

int store_cache_commit(store_t *st, const char *tmp, const char *final, const char *src_path,
                       const struct stat *src)
{
    struct stat now, res;
    if (stat(src_path, &now) != 0) {
        unlink(tmp); /* the original was deleted while we worked */
        return -STORE_E_NOTFOUND;
    }
    if (now.st_ino != src->st_ino || now.st_mtim.tv_sec != src->st_mtim.tv_sec ||
        now.st_mtim.tv_nsec != src->st_mtim.tv_nsec) {
        unlink(tmp); /* the original changed while we worked: this result is for nobody */
        return -STORE_E_CHANGED;
    }
    if (st->remote != NULL) /* the same validators as the other nodes' copies */
        s3store_stamp_result(st->remote, src_path, tmp, final);
    struct stat old;
    bool replacing = stat(final, &old) == 0;
    /* durable before it is visible: the bytes, then the rename (new directories are
     * recorded in their parents by mkdir_parents) */
    int fd = open(tmp, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || fstat(fd, &res) != 0 || fsync(fd) != 0 || rename_into(tmp, final) != 0) {
        int ret = map_errno(errno);
        if (fd >= 0)
            close(fd);
        unlink(tmp);
        return ret;
    }
    close(fd);
    fsync_parent(final);
    atomic_fetch_add(&st->cache_bytes, (uint64_t)res.st_size);
    if (replacing) /* the same result made twice: count it once */
        cache_sub(st, (uint64_t)old.st_size);
    if (is_level(final)) {
        atomic_fetch_add(&st->level_bytes, (uint64_t)res.st_size);
        if (replacing)
            atomic_sub_floor(&st->level_bytes, (uint64_t)old.st_size);
        else
            atomic_fetch_add(&st->level_files, 1);
    }
    return 0;
}

void store_cache_touch(const char *path, const struct stat *sb)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    /* recency lives in atime so mtime (ETag, Last-Modified) never changes */
    if (ts.tv_sec - sb->st_atime > 60) {
        struct timespec times[2] = {ts, {.tv_nsec = UTIME_OMIT}};
        utimensat(AT_FDCWD, path, times, 0);
    }
}

bool store_out_of_space(const store_t *st)
{
    struct statvfs vfs;
    if (statvfs(st->tmpdir, &vfs) != 0)
        return false;
    /* a write that failed for space leaves (nearly) no free block or no free inode */
    return (uint64_t)vfs.f_bfree * vfs.f_frsize < (64u << 10) || vfs.f_ffree == 0;
}

uint64_t store_epoch(const store_t *st)
{
    return atomic_load_explicit(&((store_t *)st)->epoch, memory_order_acquire);
}

void store_cache_stats(store_t *st, uint64_t *bytes, uint64_t *evictions)
{
    *bytes = atomic_load(&st->cache_bytes);
    *evictions = atomic_load(&st->evictions);
}

void store_level_stats(store_t *st, uint64_t *bytes, uint64_t *files)
{
    *bytes = atomic_load(&st->level_bytes);
    *files = atomic_load(&st->level_files);
}
