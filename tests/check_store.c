/* Unit tests of server/store.c: originals round trip and replace, the stem index, keys
 * whose segments are longer than NAME_MAX, derived results made durable (fsync of the file
 * and of every directory a commit creates), and LRU eviction of the result cache. */
#include <check.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "server/store.h"
#include "tests/tg_harness.h"

/* fsync as seen by store.c: every call is recorded (device and inode) and then made. */
static struct {
    dev_t dev;
    ino_t ino;
} synced[4096];
static size_t nsynced;

int fsync(int fd)
{
    struct stat sb;
    if (fstat(fd, &sb) == 0 && nsynced < sizeof(synced) / sizeof(synced[0])) {
        synced[nsynced].dev = sb.st_dev;
        synced[nsynced].ino = sb.st_ino;
        nsynced++;
    }
    return (int)syscall(SYS_fsync, fd);
}

static bool was_synced(const char *path)
{
    struct stat sb;
    ck_assert_msg(stat(path, &sb) == 0, "%s missing", path);
    for (size_t i = 0; i < nsynced; i++)
        if (synced[i].dev == sb.st_dev && synced[i].ino == sb.st_ino)
            return true;
    return false;
}

static char root[64];
static store_t *st;

static void setup(void)
{
    snprintf(root, sizeof(root), "/tmp/tgstore.XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(root));
    char err[256];
    st = store_create(root, 1u << 30, err, sizeof(err));
    ck_assert_msg(st != NULL, "%s", err);
    nsynced = 0;
}

static void teardown(void)
{
    store_destroy(st);
    tg_rmtree(root);
}

static void put(const char *key, const char *data)
{
    bool replaced;
    char err[256];
    ck_assert_msg(store_put(st, key, data, strlen(data), &replaced, err, sizeof(err)) == 0,
                  "%s: %s", key, err);
}

static char *slurp(const char *path)
{
    static char buf[4096];
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return NULL;
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    buf[n < 0 ? 0 : n] = '\0';
    return buf;
}

START_TEST(test_store_put_replace_delete)
{
    bool replaced = true;
    char err[256], path[STORE_PATH_MAX], src[STORE_PATH_MAX];
    ck_assert_int_eq(store_put(st, "a/cat.jpg", "one", 3, &replaced, err, sizeof(err)), 0);
    ck_assert(!replaced);
    ck_assert_int_eq(store_put(st, "a/cat.jpg", "two!", 4, &replaced, err, sizeof(err)), 0);
    ck_assert(replaced);
    store_orig_path(st, "a/cat.jpg", path, sizeof(path));
    ck_assert_str_eq(slurp(path), "two!");
    struct stat sb;
    ck_assert_int_eq(store_find_source(st, "a/cat", src, sizeof(src), &sb), 0);
    ck_assert_str_eq(src, path);
    ck_assert_int_eq(store_find_source(st, "a/dog", src, sizeof(src), &sb), -STORE_E_NOTFOUND);
    /* a key below another key's name is a key of its own ('@' ends every file name) */
    ck_assert_int_eq(store_put(st, "a/cat.jpg/x", "y", 1, &replaced, err, sizeof(err)), 0);
    ck_assert_str_eq(slurp(path), "two!");
    ck_assert_int_eq(store_delete(st, "a/cat.jpg"), 0);
    ck_assert_int_eq(store_delete(st, "a/cat.jpg"), -STORE_E_NOTFOUND);
    ck_assert_int_eq(store_find_source(st, "a/cat", src, sizeof(src), &sb), -STORE_E_NOTFOUND);
}
END_TEST

/* A stem with two originals: deleting the one the index points at repoints it. */
START_TEST(test_store_stem_repointed_on_delete)
{
    put("s/pic.png", "png");
    put("s/pic.jpg", "jpg");
    char src[STORE_PATH_MAX];
    struct stat sb;
    ck_assert_int_eq(store_find_source(st, "s/pic", src, sizeof(src), &sb), 0);
    ck_assert_str_eq(slurp(src), "jpg");
    ck_assert_int_eq(store_delete(st, "s/pic.jpg"), 0);
    ck_assert_int_eq(store_find_source(st, "s/pic", src, sizeof(src), &sb), 0);
    ck_assert_str_eq(slurp(src), "png");
}
END_TEST

static size_t max_component;
static int longest(const char *p, const struct stat *sb, int type, struct FTW *f)
{
    size_t l = strlen(p + f->base);
    if (l > max_component)
        max_component = l;
    return 0;
}

/* Bug 8: no key the contract allows makes a path component longer than NAME_MAX, and
 * long keys keep their stem index (also across two originals of one long stem). */
START_TEST(test_store_long_segments_fit_name_max)
{
    char key[1024], stem[600], other[1024], src[STORE_PATH_MAX], path[STORE_PATH_MAX];
    memset(stem, 'x', 508);
    stem[508] = '\0';
    snprintf(key, sizeof(key), "%s.jpg", stem);
    put(key, "long");
    snprintf(other, sizeof(other), "%.*s/%.*s.webp", 200, stem, 300, stem);
    put(other, "other");
    struct stat sb;
    ck_assert_int_eq(store_find_source(st, stem, src, sizeof(src), &sb), 0);
    ck_assert_str_eq(slurp(src), "long");
    store_orig_path(st, key, path, sizeof(path));
    ck_assert_str_eq(src, path);
    store_cache_path(st, stem, &sb, "100x100c.webp", path, sizeof(path));
    char tmp[STORE_PATH_MAX];
    ck_assert_int_eq(store_tmp_file(st, tmp, sizeof(tmp)), 0);
    ck_assert_int_eq(store_cache_commit(st, tmp, path, src, &sb), 0);
    /* two originals of one long stem: deleting one leaves the other indexed */
    snprintf(other, sizeof(other), "%s.png", stem);
    ck_assert_uint_eq(strlen(other), 512);
    put(other, "png");
    ck_assert_int_eq(store_delete(st, key), 0);
    ck_assert_int_eq(store_find_source(st, stem, src, sizeof(src), &sb), 0);
    ck_assert_str_eq(slurp(src), "png");
    max_component = 0;
    nftw(root, longest, 16, FTW_PHYS);
    ck_assert_uint_le(max_component, NAME_MAX);
}
END_TEST

/* Bug 7: a committed result is durable: the file, its new directories and the directories
 * holding them are fsynced; so is the stem index of a new key. */
START_TEST(test_store_commit_and_stem_are_fsynced)
{
    put("d/new/photo.jpg", "src");
    char link[STORE_PATH_MAX];
    snprintf(link, sizeof(link), "%s/stem/d/new", root);
    ck_assert_msg(was_synced(link), "the stem link's directory was not fsynced");
    snprintf(link, sizeof(link), "%s/stem/d", root);
    ck_assert_msg(was_synced(link), "the stem link's new directory was not recorded in its parent");

    char src[STORE_PATH_MAX], final[STORE_PATH_MAX], tmp[STORE_PATH_MAX];
    struct stat sb;
    ck_assert_int_eq(store_find_source(st, "d/new/photo", src, sizeof(src), &sb), 0);
    store_cache_path(st, "d/new/photo", &sb, "10x10.png", final, sizeof(final));
    ck_assert_int_eq(store_tmp_file(st, tmp, sizeof(tmp)), 0);
    int fd = open(tmp, O_WRONLY);
    ck_assert_int_eq(write(fd, "result", 6), 6);
    close(fd);
    nsynced = 0;
    ck_assert_int_eq(store_cache_commit(st, tmp, final, src, &sb), 0);
    ck_assert_msg(was_synced(final), "the result file was not fsynced");
    /* every directory from the result's up to cache/ itself */
    char dir[STORE_PATH_MAX], cache[STORE_PATH_MAX];
    snprintf(dir, sizeof(dir), "%s", final);
    snprintf(cache, sizeof(cache), "%s/cache", root);
    while (strlen(dir) > strlen(cache)) {
        *strrchr(dir, '/') = '\0';
        ck_assert_msg(was_synced(dir), "%s was not fsynced", dir);
    }
}
END_TEST

static void commit_result(const char *stem, const char *variant, size_t bytes, time_t atime)
{
    char src[STORE_PATH_MAX], final[STORE_PATH_MAX], tmp[STORE_PATH_MAX];
    struct stat sb;
    ck_assert_int_eq(store_find_source(st, stem, src, sizeof(src), &sb), 0);
    store_cache_path(st, stem, &sb, variant, final, sizeof(final));
    ck_assert_int_eq(store_tmp_file(st, tmp, sizeof(tmp)), 0);
    char *data = calloc(1, bytes);
    int fd = open(tmp, O_WRONLY);
    ck_assert_int_eq(write(fd, data, bytes), (ssize_t)bytes);
    close(fd);
    free(data);
    ck_assert_int_eq(store_cache_commit(st, tmp, final, src, &sb), 0);
    struct timespec t[2] = {{.tv_sec = atime}, {.tv_nsec = UTIME_OMIT}};
    ck_assert_int_eq(utimensat(AT_FDCWD, final, t, 0), 0);
}

static bool result_exists(const char *stem, const char *variant)
{
    char src[STORE_PATH_MAX], final[STORE_PATH_MAX];
    struct stat sb;
    ck_assert_int_eq(store_find_source(st, stem, src, sizeof(src), &sb), 0);
    store_cache_path(st, stem, &sb, variant, final, sizeof(final));
    return access(final, F_OK) == 0;
}

/* The cache is trimmed to 90% of storage.cache_max, least recently used first. */
START_TEST(test_store_cache_evicts_least_recently_used)
{
    store_destroy(st);
    char err[256];
    st = store_create(root, 100 * 1000, err, sizeof(err)); /* 100 kB */
    ck_assert_ptr_nonnull(st);
    put("e/a.jpg", "a");
    put("e/b.jpg", "b");
    time_t now = time(NULL);
    uint64_t bytes, evictions;
    /* 12 results of 10 kB, used from oldest (i = 0) to newest */
    for (int i = 0; i < 12; i++) {
        char v[32];
        snprintf(v, sizeof(v), "%dx.png", 100 + i);
        commit_result(i % 2 ? "e/b" : "e/a", v, 10000, now - 10000 + i * 600);
    }
    store_cache_stats(st, &bytes, &evictions);
    ck_assert_uint_eq(bytes, 120000);
    ck_assert(store_cache_over_bound(st));
    store_cache_evict(st);
    store_cache_stats(st, &bytes, &evictions);
    ck_assert_uint_le(bytes, 90000);
    ck_assert_uint_ge(evictions, 3);
    ck_assert(!store_cache_over_bound(st));
    /* the oldest three are gone, the newest ones stay */
    for (int i = 0; i < 12; i++) {
        char v[32];
        snprintf(v, sizeof(v), "%dx.png", 100 + i);
        bool exists = result_exists(i % 2 ? "e/b" : "e/a", v);
        if (i < 3)
            ck_assert_msg(!exists, "result %d (old) survived", i);
        if (i >= 12 - (int)(bytes / 10000))
            ck_assert_msg(exists, "result %d (recent) was evicted", i);
    }
    ck_assert_uint_eq(evictions, 12 - bytes / 10000);
    /* a second pass under the bound removes nothing */
    store_cache_evict(st);
    uint64_t ev2;
    store_cache_stats(st, &bytes, &ev2);
    ck_assert_uint_eq(ev2, evictions);
}
END_TEST

Suite *store_suite(void); /* called by check_main.c */
Suite *store_suite(void)
{
    Suite *s = suite_create("store");
    TCase *t = tcase_create("store");
    tcase_add_checked_fixture(t, setup, teardown);
    tcase_add_test(t, test_store_put_replace_delete);
    tcase_add_test(t, test_store_stem_repointed_on_delete);
    tcase_add_test(t, test_store_long_segments_fit_name_max);
    tcase_add_test(t, test_store_commit_and_stem_are_fsynced);
    tcase_add_test(t, test_store_cache_evicts_least_recently_used);
    suite_add_tcase(s, t);
    return s;
}
