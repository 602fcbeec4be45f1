/* heap — jemalloc's statistics, heap profiles and the profile ring (heap.h); its settings
 * (malloc_conf) are in imgproc/imgproc.c beside the glibc policy, so every program that
 * links imgproc runs on them. Everything jemalloc-specific sits under THUMBGATE_JEMALLOC
 * (set by the Makefile unless a sanitizer owns malloc). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "server/adm.h"
#include "server/heap.h"

#ifdef THUMBGATE_JEMALLOC
#include <jemalloc/jemalloc.h>

bool heap_available(void)
{
    return true;
}

bool heap_profiling(void)
{
    bool on = false;
    size_t sz = sizeof(on);
    return mallctl("opt.prof", &on, &sz, NULL, 0) == 0 && on;
}

static uint64_t stat_of(const char *name)
{
    size_t v = 0, sz = sizeof(v);
    return mallctl(name, &v, &sz, NULL, 0) == 0 ? (uint64_t)v : 0;
}

int heap_stats(heap_stats_t *out)
{
    uint64_t epoch = 1;
    size_t sz = sizeof(epoch);
    memset(out, 0, sizeof(*out));
    if (mallctl("epoch", &epoch, &sz, &epoch, sz) != 0)
        return -EIO;
    out->allocated = stat_of("stats.allocated");
    out->active = stat_of("stats.active");
    out->resident = stat_of("stats.resident");
    out->retained = stat_of("stats.retained");
    out->mapped = stat_of("stats.mapped");
    out->metadata = stat_of("stats.metadata");
    return 0;
}

int heap_dump(const char *path)
{
    if (!heap_profiling())
        return -ENOTSUP;
    const char *p = path;
    int rc = mallctl("prof.dump", NULL, NULL, (void *)&p, sizeof(p));
    return rc == 0 ? 0 : -(rc == EFAULT ? EIO : rc);
}
#else /* no jemalloc: a sanitizer build */
bool heap_available(void)
{
    return false;
}

bool heap_profiling(void)
{
    return false;
}

int heap_stats(heap_stats_t *out)
{
    memset(out, 0, sizeof(*out));
    return -ENOTSUP;
}

int heap_dump(const char *path)
{
    (void)path;
    return -ENOTSUP;
}
#endif

#define HEAP_DUMP_MAX (64u << 20) /* a profile read back for /debug/heap, at most */

int heap_dump_read(const char *dir, char **buf, size_t *len)
{
    char path[1200];
    *buf = NULL;
    *len = 0;
    if (!heap_profiling())
        return -ENOTSUP;
    snprintf(path, sizeof(path), "%s/heap.XXXXXX", dir);
    int fd = mkstemp(path);
    if (fd < 0)
        return -errno;
    int rc = heap_dump(path); /* jemalloc reopens the name and truncates it */
    struct stat st;
    if (rc == 0 && fstat(fd, &st) != 0)
        rc = -errno;
    if (rc == 0 && st.st_size > (off_t)HEAP_DUMP_MAX)
        rc = -EFBIG;
    char *b = NULL;
    if (rc == 0 && (b = malloc((size_t)st.st_size + 1)) == NULL)
        rc = -ENOMEM;
    size_t got = 0;
    while (rc == 0 && got < (size_t)st.st_size) {
        ssize_t n = pread(fd, b + got, (size_t)st.st_size - got, (off_t)got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            rc = n < 0 ? -errno : -EIO;
        else
            got += (size_t)n;
    }
    close(fd);
    unlink(path);
    if (rc != 0) {
        free(b);
        return rc;
    }
    b[got] = '\0';
    *buf = b;
    *len = got;
    return 0;
}

/* ---- the ring ------------------------------------------------------------------------- */

void heap_ring_opts_init(heap_ring_opts_t *o, const cfg_t *cfg)
{
    memset(o, 0, sizeof(*o));
    if (cfg->heap_ring_dir[0])
        snprintf(o->dir, sizeof(o->dir), "%s", cfg->heap_ring_dir);
    else
        snprintf(o->dir, sizeof(o->dir), "%s/heap", cfg->storage_root);
    o->interval_ms = cfg->heap_ring_interval_ms;
    o->keep = cfg->heap_ring_keep;
    o->max_disk = cfg->heap_ring_max_disk;
}

/* heap.<13 digits of unix ms>.<host>.<pid>.heap: names sort by age across runs and nodes */
static bool is_profile_name(const char *n)
{
    size_t l = strlen(n);
    return strncmp(n, "heap.", 5) == 0 && l > 10 && strcmp(n + l - 5, ".heap") == 0 &&
           n[5] >= '0' && n[5] <= '9';
}

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int heap_ring_prune(const char *dir, uint32_t keep, uint64_t max_disk, uint64_t *files,
                    uint64_t *bytes)
{
    *files = *bytes = 0;
    DIR *d = opendir(dir);
    if (d == NULL)
        return -errno;
    char **names = NULL;
    size_t n = 0, cap = 0;
    int rc = 0;
    struct dirent *e;
    time_t now = time(NULL);
    while ((e = readdir(d)) != NULL) {
        struct stat st;
        /* a profile half-written when its server was killed: no writer takes an hour */
        if (strncmp(e->d_name, ".heap.tmp.", 10) == 0 &&
            fstatat(dirfd(d), e->d_name, &st, 0) == 0 && st.st_mtime + 3600 < now)
            unlinkat(dirfd(d), e->d_name, 0);
        if (!is_profile_name(e->d_name))
            continue;
        if (n == cap) {
            char **nn = realloc(names, (cap = cap ? cap * 2 : 64) * sizeof(*names));
            if (nn == NULL) {
                rc = -ENOMEM;
                break;
            }
            names = nn;
        }
        if ((names[n] = strdup(e->d_name)) == NULL) {
            rc = -ENOMEM;
            break;
        }
        n++;
    }
    if (rc == 0 && n > 0) {
        qsort(names, n, sizeof(*names), by_name);
        /* newest first: keep while both bounds hold, delete everything older */
        uint64_t kept = 0, total = 0;
        bool full = false;
        for (size_t i = n; i-- > 0;) {
            struct stat st;
            if (fstatat(dirfd(d), names[i], &st, 0) != 0)
                continue;
            full = full || kept >= keep || total + (uint64_t)st.st_size > max_disk;
            if (!full) {
                kept++;
                total += (uint64_t)st.st_size;
            } else {
                unlinkat(dirfd(d), names[i], 0);
            }
        }
        *files = kept;
        *bytes = total;
    }
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    closedir(d);
    return rc;
}

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t tid;
    bool running, stop;
    char host[65]; /* nodes sharing storage.root share the ring's directory */
    heap_ring_opts_t o;
    heap_ring_stats_t st;
} ring = {.mu = PTHREAD_MUTEX_INITIALIZER};

/* One profile: written under a temporary name and renamed, so a kill mid-dump never leaves
 * a truncated profile among the kept ones; then the ring is pruned. */
static void ring_pass(void)
{
    char tmp[1300], path[1300]; /* dir (1100) + name (at most ~120) */
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    uint64_t t0 = adm_now_ms();
    unsigned long long ms = (unsigned long long)now.tv_sec * 1000 + now.tv_nsec / 1000000;
    snprintf(path, sizeof(path), "%s/heap.%013llu.%s.%ld.heap", ring.o.dir, ms, ring.host,
             (long)getpid());
    snprintf(tmp, sizeof(tmp), "%s/.heap.tmp.%s.%ld", ring.o.dir, ring.host, (long)getpid());
    bool ok = heap_dump(tmp) == 0 && rename(tmp, path) == 0;
    if (!ok)
        unlink(tmp);
    uint64_t files = 0, bytes = 0;
    heap_ring_prune(ring.o.dir, ring.o.keep, ring.o.max_disk, &files, &bytes);
    /* a profile that alone exceeds max_disk was deleted by the prune: count it as failed */
    if (ok && access(path, F_OK) != 0)
        ok = false;
    pthread_mutex_lock(&ring.mu);
    ring.st.dumps += ok;
    ring.st.failed += !ok;
    ring.st.files = files;
    ring.st.bytes = bytes;
    ring.st.last_ms = adm_now_ms() - t0;
    pthread_mutex_unlock(&ring.mu);
}

static void *ring_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&ring.mu);
    while (!ring.stop) {
        struct timespec dl;
        clock_gettime(CLOCK_MONOTONIC, &dl);
        uint64_t ns = (uint64_t)dl.tv_nsec + (ring.o.interval_ms % 1000) * 1000000;
        dl.tv_sec += (time_t)(ring.o.interval_ms / 1000 + ns / 1000000000);
        dl.tv_nsec = (long)(ns % 1000000000);
        while (!ring.stop && pthread_cond_timedwait(&ring.cv, &ring.mu, &dl) != ETIMEDOUT)
            ;
        if (ring.stop)
            break;
        pthread_mutex_unlock(&ring.mu);
        ring_pass();
        pthread_mutex_lock(&ring.mu);
    }
    pthread_mutex_unlock(&ring.mu);
    return NULL;
}

int heap_ring_start(const heap_ring_opts_t *o, char *err, size_t errlen)
{
    if (o->interval_ms == 0)
        return 0;
    if (!heap_profiling()) {
        snprintf(err, errlen, "heap_ring: heap profiles need jemalloc with profiling");
        return -ENOTSUP;
    }
    if (mkdir(o->dir, 0755) != 0 && errno != EEXIST) {
        int e = errno;
        snprintf(err, errlen, "heap_ring.dir: cannot create %s: %s", o->dir, strerror(e));
        return -e;
    }
    pthread_mutex_lock(&ring.mu);
    if (ring.running) {
        pthread_mutex_unlock(&ring.mu);
        snprintf(err, errlen, "heap_ring: already running");
        return -EBUSY;
    }
    ring.o = *o;
    ring.stop = false;
    if (gethostname(ring.host, sizeof(ring.host) - 1) != 0 || ring.host[0] == '\0')
        snprintf(ring.host, sizeof(ring.host), "host");
    for (char *c = ring.host; *c; c++) /* a file name part */
        if (*c == '/' || *c == ' ')
            *c = '_';
    memset(&ring.st, 0, sizeof(ring.st));
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&ring.cv, &ca);
    pthread_condattr_destroy(&ca);
    int rc = pthread_create(&ring.tid, NULL, ring_main, NULL);
    ring.running = rc == 0;
    pthread_mutex_unlock(&ring.mu);
    if (rc != 0) {
        snprintf(err, errlen, "heap_ring: cannot start its thread: %s", strerror(rc));
        return -rc;
    }
    return 0;
}

void heap_ring_stop(void)
{
    pthread_mutex_lock(&ring.mu);
    if (!ring.running) {
        pthread_mutex_unlock(&ring.mu);
        return;
    }
    ring.stop = true;
    pthread_cond_signal(&ring.cv);
    pthread_mutex_unlock(&ring.mu);
    pthread_join(ring.tid, NULL);
    pthread_mutex_lock(&ring.mu);
    ring.running = false;
    pthread_cond_destroy(&ring.cv);
    pthread_mutex_unlock(&ring.mu);
}

void heap_ring_stats(heap_ring_stats_t *out)
{
    pthread_mutex_lock(&ring.mu);
    *out = ring.st;
    pthread_mutex_unlock(&ring.mu);
}
