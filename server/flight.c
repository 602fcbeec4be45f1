/* flight — ring files of periodic memory snapshots, kept across restarts (see flight.h).
 * Layout: a 4 KiB header, then `slots` fixed 4 KiB records. Record i is rewritten in
 * place with pwrite; a record is valid when its seq is non-zero and its trailing copy of
 * seq matches (a torn write at the kill shows as a mismatch and is skipped). The running
 * process holds an exclusive flock on its ring: a reader that cannot take a shared one
 * knows the run is alive. Readers hold 16 bytes per slot, never the whole ring. */
#include "server/flight.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define FLIGHT_MAGIC "TGFLIGHT2"
#define SLOT_SIZE CFG_FLIGHT_SLOT_BYTES
#define MAX_SLOTS 1000000u
#define MAX_RUNS 4096 /* kept rings looked at in one directory scan */

typedef struct {
    char magic[16];
    uint32_t slot_size, slots;
    uint64_t interval_ms;
    uint64_t pid;
    uint64_t run;
    uint64_t started_unix_ms;
    uint64_t stopped_unix_ms; /* set by a clean stop */
    uint32_t clean;
    uint32_t oom_known;
    uint64_t oom_kills_start;
    char oom_file[512]; /* the cgroup file the OOM-kill counter is read from */
} ring_header_t;

typedef struct {
    uint64_t seq;
    uint64_t unix_ms;
    uint64_t rss_anon, rss_file, vm_hwm;
    uint64_t budget, in_use, queued_bytes;
    uint32_t queue_len, running, njobs, oom_known;
    uint64_t oom_kills;
    uint64_t conns, body_reserved, input_spill, plan_total;
    flight_job_t jobs[FLIGHT_MAX_JOBS];
    uint64_t seq_end;
} ring_slot_t;

_Static_assert(sizeof(ring_header_t) <= SLOT_SIZE, "the header must fit its page");
_Static_assert(sizeof(ring_slot_t) <= SLOT_SIZE, "a snapshot must fit its slot");

struct job_ent {
    const void *id;
    uint64_t estimate, started_ms;
    char what[FLIGHT_WHAT_LEN];
};

struct flight {
    flight_opts_t o;
    int fd;
    ring_header_t h;
    uint64_t last_ms, seq;
    bool ticked;
    bool has_prev;
    flight_prev_t prev;
    char prev_kept[1200]; /* where the previous ring was kept; "" when it was deleted */
    pthread_mutex_t mu;
    struct job_ent jobs[FLIGHT_MAX_JOBS];
};

/* ---- small helpers ---------------------------------------------------------------------- */

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static uint64_t unix_ms(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (uint64_t)tv.tv_sec * 1000 + (uint64_t)tv.tv_usec / 1000;
}

static void fmt_time(char *buf, size_t n, uint64_t ms)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    char s[32];
    gmtime_r(&t, &tm);
    strftime(s, sizeof(s), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf, n, "%s.%03uZ", s, (unsigned)(ms % 1000));
}

/** A JSON string: keys are [A-Za-z0-9._/-], but a ring read back may hold anything. */
static void json_str(FILE *out, const char *s, size_t max)
{
    fputc('"', out);
    for (size_t i = 0; i < max && s[i] != '\0'; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\')
            fprintf(out, "\\%c", c);
        else if (c < 0x20 || c >= 0x7f)
            fprintf(out, "\\u%04x", c);
        else
            fputc(c, out);
    }
    fputc('"', out);
}

static void json_time(FILE *out, uint64_t ms)
{
    char ts[48];
    if (ms == 0) {
        fputs("null", out);
        return;
    }
    fmt_time(ts, sizeof(ts), ms);
    fprintf(out, "\"%s\"", ts);
}

/* ---- the cgroup's OOM-kill counter ----------------------------------------------------- */

/** The "oom_kill N" field of a memory.events (v2) or memory.oom_control (v1) file. */
static bool read_oom_kills(const char *file, uint64_t *out)
{
    char buf[1024];
    int fd = open(file, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return false;
    buf[n] = '\0';
    for (char *line = buf; line != NULL && *line != '\0';) {
        if (sscanf(line, "oom_kill %" SCNu64, out) == 1)
            return true;
        line = strchr(line, '\n');
        line = line ? line + 1 : NULL;
    }
    return false;
}

static bool try_oom_file(char *file, size_t n, const char *dir, const char *name)
{
    uint64_t v;
    int len = snprintf(file, n, "%s/%s", dir, name);
    return len > 0 && (size_t)len < n && read_oom_kills(file, &v);
}

/** Finds the file holding this process's cgroup OOM-kill counter; "" when there is none
 *  (no memory cgroup, or a kernel without the field). */
static void find_oom_file(const char *cgroup_dir, char *file, size_t n)
{
    char line[1024], dir[1100];
    if (cgroup_dir[0] != '\0') {
        if (!try_oom_file(file, n, cgroup_dir, "memory.events") &&
            !try_oom_file(file, n, cgroup_dir, "memory.oom_control"))
            file[0] = '\0';
        return;
    }
    file[0] = '\0';
    FILE *f = fopen("/proc/self/cgroup", "r");
    while (f != NULL && file[0] == '\0' && fgets(line, sizeof(line), f) != NULL) {
        line[strcspn(line, "\n")] = '\0';
        char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (c2 == NULL)
            continue;
        *c2 = '\0';
        const char *ctrls = c1 + 1, *cg = c2 + 1;
        if (strcmp(line, "0") == 0 && *ctrls == '\0') {
            snprintf(dir, sizeof(dir), "/sys/fs/cgroup%s", strcmp(cg, "/") ? cg : "");
            if (!try_oom_file(file, n, dir, "memory.events"))
                file[0] = '\0';
        } else if (strstr(ctrls, "memory") != NULL) {
            snprintf(dir, sizeof(dir), "/sys/fs/cgroup/memory%s", strcmp(cg, "/") ? cg : "");
            if (!try_oom_file(file, n, dir, "memory.oom_control"))
                file[0] = '\0';
        }
    }
    if (f)
        fclose(f);
}

/* ---- reading rings -------------------------------------------------------------------- */

typedef struct {
    uint64_t seq;
    uint32_t idx;
} slot_ref_t;

/** A ring opened for reading: its header and its valid slots, newest first. */
typedef struct {
    int fd;
    ring_header_t h;
    slot_ref_t *refs; /* 16 bytes per valid slot */
    unsigned n;
    bool running; /* its writer still holds the lock */
} ring_t;

static int by_seq_desc(const void *a, const void *b)
{
    const slot_ref_t *x = a, *y = b;
    return (x->seq < y->seq) - (x->seq > y->seq);
}

static bool slot_read(const ring_t *r, uint32_t idx, ring_slot_t *s)
{
    return pread(r->fd, s, sizeof(*s), (off_t)SLOT_SIZE * (1 + idx)) == (ssize_t)sizeof(*s) &&
           s->seq != 0 && s->seq == s->seq_end && s->njobs <= FLIGHT_MAX_JOBS;
}

static void ring_close(ring_t *r)
{
    if (r->fd >= 0)
        close(r->fd);
    free(r->refs);
    r->fd = -1;
    r->refs = NULL;
}

/** Opens the ring at @p path; 0, or -1 with a message in @p err. */
static int ring_open(ring_t *r, const char *path, char *err, size_t errlen)
{
    memset(r, 0, sizeof(*r));
    r->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (r->fd < 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    if (pread(r->fd, &r->h, sizeof(r->h), 0) != (ssize_t)sizeof(r->h) ||
        memcmp(r->h.magic, FLIGHT_MAGIC, sizeof(FLIGHT_MAGIC)) != 0 ||
        r->h.slot_size != SLOT_SIZE || r->h.slots == 0 || r->h.slots > MAX_SLOTS) {
        snprintf(err, errlen, "%s is not a flight recorder ring", path);
        ring_close(r);
        return -1;
    }
    r->h.oom_file[sizeof(r->h.oom_file) - 1] = '\0';
    if (flock(r->fd, LOCK_SH | LOCK_NB) != 0)
        r->running = errno == EWOULDBLOCK;
    else
        flock(r->fd, LOCK_UN);
    r->refs = malloc(sizeof(*r->refs) * r->h.slots);
    if (r->refs == NULL) {
        snprintf(err, errlen, "out of memory");
        ring_close(r);
        return -1;
    }
    for (uint32_t i = 0; i < r->h.slots; i++) {
        ring_slot_t s;
        if (slot_read(r, i, &s))
            r->refs[r->n++] = (slot_ref_t){s.seq, i};
    }
    if (r->n > 1)
        qsort(r->refs, r->n, sizeof(*r->refs), by_seq_desc);
    return 0;
}

/** Kept rings beside @p path ("path.<run>"), with their sizes. Returns how many. */
typedef struct {
    uint64_t run;
    uint64_t bytes;
    char file[1200];
} kept_t;

static int by_run_desc(const void *a, const void *b)
{
    const kept_t *x = a, *y = b;
    return (x->run < y->run) - (x->run > y->run);
}

static unsigned scan_kept(const char *path, kept_t **out)
{
    char dbuf[1100], bbuf[1100];
    snprintf(dbuf, sizeof(dbuf), "%s", path);
    snprintf(bbuf, sizeof(bbuf), "%s", path);
    const char *dir = dirname(dbuf), *base = basename(bbuf);
    size_t blen = strlen(base);
    unsigned n = 0, cap = 0;
    kept_t *k = NULL;
    DIR *d = opendir(dir);
    struct dirent *e;
    while (d != NULL && n < MAX_RUNS && (e = readdir(d)) != NULL) {
        const char *name = e->d_name;
        if (strncmp(name, base, blen) != 0 || name[blen] != '.' || name[blen + 1] == '\0' ||
            strspn(name + blen + 1, "0123456789") != strlen(name + blen + 1) ||
            strlen(name + blen + 1) > 18)
            continue;
        if (n == cap) {
            kept_t *nk = realloc(k, sizeof(*k) * (cap = cap ? cap * 2 : 8));
            if (nk == NULL)
                break;
            k = nk;
        }
        struct stat st;
        snprintf(k[n].file, sizeof(k[n].file), "%s/%s", dir, name);
        if (stat(k[n].file, &st) != 0 || !S_ISREG(st.st_mode))
            continue;
        k[n].run = strtoull(name + blen + 1, NULL, 10);
        k[n].bytes = (uint64_t)st.st_size;
        n++;
    }
    if (d)
        closedir(d);
    if (n > 1)
        qsort(k, n, sizeof(*k), by_run_desc);
    *out = k;
    return n;
}

/* ---- the previous run ----------------------------------------------------------------- */

static void prev_from_ring(flight_prev_t *p, const ring_t *r)
{
    memset(p, 0, sizeof(*p));
    p->run = r->h.run;
    p->pid = r->h.pid;
    p->clean = r->h.clean != 0;
    p->started_unix_ms = r->h.started_unix_ms;
    p->oom_kills_then = r->h.oom_kills_start;
    p->oom_known = r->h.oom_known != 0;
    ring_slot_t s;
    if (r->n > 0 && slot_read(r, r->refs[0].idx, &s)) {
        p->last_snapshot_unix_ms = s.unix_ms;
        p->njobs = s.njobs;
        memcpy(p->jobs, s.jobs, sizeof(s.jobs[0]) * s.njobs);
        for (uint32_t j = 0; j < s.njobs; j++)
            p->jobs[j].what[FLIGHT_WHAT_LEN - 1] = '\0';
        if (s.oom_known) {
            p->oom_kills_then = s.oom_kills;
            p->oom_known = true;
        }
    }
}

/** Compares the counter a run recorded last with the one read after it (same file only).
 *  A run that stopped cleanly was not OOM-killed, whatever else the cgroup lost. */
static void prev_compare_oom(flight_prev_t *p, const char *then_file, bool now_known, uint64_t now,
                             const char *now_file)
{
    p->oom_kills_now = now;
    p->oom_known = p->oom_known && now_known && strcmp(then_file, now_file) == 0;
    p->oom_killed = !p->clean && p->oom_known && now > p->oom_kills_then;
}

/* ---- writing -------------------------------------------------------------------------- */

void flight_opts_init(flight_opts_t *o, const cfg_t *cfg)
{
    memset(o, 0, sizeof(*o));
    if (cfg->flight_path[0])
        snprintf(o->path, sizeof(o->path), "%s", cfg->flight_path);
    else
        snprintf(o->path, sizeof(o->path), "%s/flight.ring", cfg->storage_root);
    o->slots = cfg->flight_slots;
    o->interval_ms = cfg->flight_interval_ms;
    o->keep_runs = cfg->flight_keep_runs;
    o->max_disk = cfg->flight_max_disk;
}

/** Keeps the ring at o->path as path.<run> and reports it; deletes kept rings beyond
 *  keep_runs or max_disk. Returns the highest run number seen, or -1 with @p err set
 *  when a live process owns the ring. */
static int64_t rotate(flight_t *f, char *err, size_t errlen)
{
    const flight_opts_t *o = &f->o;
    int64_t top = 0;
    ring_t r;
    char rerr[64];
    if (ring_open(&r, o->path, rerr, sizeof(rerr)) == 0) {
        if (r.running) {
            snprintf(err, errlen, "%s is in use by a running thumbgate (pid %" PRIu64 ")", o->path,
                     r.h.pid);
            ring_close(&r);
            return -1;
        }
        f->has_prev = true;
        prev_from_ring(&f->prev, &r);
        prev_compare_oom(&f->prev, r.h.oom_file, f->h.oom_known, f->h.oom_kills_start,
                         f->h.oom_file);
        top = (int64_t)r.h.run;
        snprintf(f->prev_kept, sizeof(f->prev_kept), "%s.%" PRIu64, o->path, r.h.run);
        if (rename(o->path, f->prev_kept) != 0)
            f->prev_kept[0] = '\0'; /* the new ring replaces it below */
        ring_close(&r);
    }
    kept_t *k;
    unsigned n = scan_kept(o->path, &k);
    uint64_t used = ((uint64_t)o->slots + 1) * SLOT_SIZE, kept = 0;
    for (unsigned i = 0; i < n; i++) {
        if ((int64_t)k[i].run > top)
            top = (int64_t)k[i].run;
        if (kept < o->keep_runs && used + k[i].bytes <= o->max_disk) {
            kept++;
            used += k[i].bytes;
        } else {
            unlink(k[i].file);
            if (strcmp(k[i].file, f->prev_kept) == 0)
                f->prev_kept[0] = '\0';
        }
    }
    free(k);
    return top;
}

flight_t *flight_open(const flight_opts_t *opts, char *err, size_t errlen)
{
    flight_t *f = calloc(1, sizeof(*f));
    if (f == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    f->o = *opts;
    f->fd = -1;
    if (f->o.slots < 2)
        f->o.slots = 2;
    if (f->o.interval_ms == 0)
        f->o.interval_ms = 1000;
    ring_header_t *h = &f->h;
    memcpy(h->magic, FLIGHT_MAGIC, sizeof(FLIGHT_MAGIC));
    h->slot_size = SLOT_SIZE;
    h->slots = f->o.slots;
    h->interval_ms = f->o.interval_ms;
    h->pid = (uint64_t)getpid();
    h->started_unix_ms = unix_ms();
    find_oom_file(f->o.cgroup_dir, h->oom_file, sizeof(h->oom_file));
    h->oom_known = h->oom_file[0] != '\0' && read_oom_kills(h->oom_file, &h->oom_kills_start);

    int64_t top = rotate(f, err, errlen);
    if (top < 0)
        goto out_free;
    h->run = (uint64_t)top + 1;
    f->fd = open(f->o.path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (f->fd < 0)
        goto out_errno;
    if (flock(f->fd, LOCK_EX | LOCK_NB) != 0) {
        snprintf(err, errlen, "%s is in use by another process", f->o.path);
        goto out_close;
    }
    /* preallocate the whole ring now: writing it later never needs more disk */
    off_t size = (off_t)SLOT_SIZE * (f->o.slots + 1);
    char page[SLOT_SIZE] = {0};
    memcpy(page, h, sizeof(*h));
    if (ftruncate(f->fd, 0) != 0 || posix_fallocate(f->fd, 0, size) != 0 ||
        pwrite(f->fd, page, sizeof(page), 0) != (ssize_t)sizeof(page))
        goto out_errno;
    pthread_mutex_init(&f->mu, NULL);
    return f;
out_errno:
    snprintf(err, errlen, "%s: %s", f->o.path, strerror(errno));
out_close:
    if (f->fd >= 0)
        close(f->fd);
out_free:
    free(f);
    return NULL;
}

void flight_mark_clean(flight_t *f)
{
    if (f == NULL || f->h.clean)
        return;
    f->h.clean = 1;
    f->h.stopped_unix_ms = unix_ms();
    if (pwrite(f->fd, &f->h, sizeof(f->h), 0) == (ssize_t)sizeof(f->h))
        fdatasync(f->fd);
}

void flight_close(flight_t *f)
{
    if (f == NULL)
        return;
    flight_mark_clean(f);
    close(f->fd);
    pthread_mutex_destroy(&f->mu);
    free(f);
}

void flight_job_begin(flight_t *f, const void *id, const char *what, uint64_t estimate)
{
    if (f == NULL)
        return;
    pthread_mutex_lock(&f->mu);
    for (int i = 0; i < FLIGHT_MAX_JOBS; i++)
        if (f->jobs[i].id == NULL) {
            f->jobs[i].id = id;
            f->jobs[i].estimate = estimate;
            f->jobs[i].started_ms = mono_ms();
            snprintf(f->jobs[i].what, FLIGHT_WHAT_LEN, "%s", what);
            break;
        }
    pthread_mutex_unlock(&f->mu);
}

void flight_job_end(flight_t *f, const void *id)
{
    if (f == NULL)
        return;
    pthread_mutex_lock(&f->mu);
    for (int i = 0; i < FLIGHT_MAX_JOBS; i++)
        if (f->jobs[i].id == id)
            f->jobs[i].id = NULL;
    pthread_mutex_unlock(&f->mu);
}

void flight_tick(flight_t *f, uint64_t now_ms)
{
    if (f == NULL || (f->ticked && now_ms - f->last_ms < f->o.interval_ms))
        return;
    f->ticked = true;
    f->last_ms = now_ms;
    ring_slot_t s;
    memset(&s, 0, sizeof(s));
    s.seq = ++f->seq;
    s.unix_ms = unix_ms();
    flight_sample_t fs = {0};
    if (f->o.sample != NULL)
        f->o.sample(f->o.ctx, &fs);
    s.rss_anon = fs.rss_anon;
    s.rss_file = fs.rss_file;
    s.vm_hwm = fs.vm_hwm;
    s.budget = fs.budget;
    s.in_use = fs.in_use;
    s.queued_bytes = fs.queued_bytes;
    s.queue_len = fs.queue_len;
    s.running = fs.running;
    s.conns = fs.conns;
    s.body_reserved = fs.body_reserved;
    s.input_spill = fs.input_spill;
    s.plan_total = fs.plan_total;
    s.oom_known = f->h.oom_known && read_oom_kills(f->h.oom_file, &s.oom_kills);
    uint64_t mono = mono_ms();
    pthread_mutex_lock(&f->mu);
    for (int i = 0; i < FLIGHT_MAX_JOBS; i++)
        if (f->jobs[i].id != NULL) {
            flight_job_t *j = &s.jobs[s.njobs++];
            j->estimate = f->jobs[i].estimate;
            j->elapsed_ms = mono - f->jobs[i].started_ms;
            memcpy(j->what, f->jobs[i].what, FLIGHT_WHAT_LEN);
        }
    pthread_mutex_unlock(&f->mu);
    s.seq_end = s.seq;
    off_t off = (off_t)SLOT_SIZE * (1 + (s.seq - 1) % f->o.slots);
    if (pwrite(f->fd, &s, sizeof(s), off) != (ssize_t)sizeof(s))
        return; /* the disk is full or gone: the recorder is best effort */
}

/* ---- the previous run: log line and metrics --------------------------------------------- */

const flight_prev_t *flight_previous(const flight_t *f)
{
    return f != NULL && f->has_prev ? &f->prev : NULL;
}

static void jobs_json(FILE *out, const flight_job_t *jobs, uint32_t n)
{
    fputc('[', out);
    for (uint32_t j = 0; j < n; j++) {
        fputs(j ? ",{\"what\":" : "{\"what\":", out);
        json_str(out, jobs[j].what, FLIGHT_WHAT_LEN);
        fprintf(out, ",\"estimate\":%" PRIu64 ",\"elapsed_ms\":%" PRIu64 "}", jobs[j].estimate,
                jobs[j].elapsed_ms);
    }
    fputc(']', out);
}

void flight_log_previous(const flight_t *f, FILE *out)
{
    const flight_prev_t *p = flight_previous(f);
    if (p == NULL || p->clean)
        return;
    fprintf(out,
            "{\"log\":\"previous_run\",\"run\":%" PRIu64 ",\"pid\":%" PRIu64 ",\"clean\":false,"
            "\"started\":",
            p->run, p->pid);
    json_time(out, p->started_unix_ms);
    fputs(",\"last_snapshot\":", out);
    json_time(out, p->last_snapshot_unix_ms);
    fputs(",\"jobs\":", out);
    jobs_json(out, p->jobs, p->njobs);
    fprintf(out, ",\"oom_kill\":%s,\"oom_kill_counter\":", p->oom_killed ? "true" : "false");
    if (p->oom_known)
        fprintf(out, "{\"then\":%" PRIu64 ",\"now\":%" PRIu64 "}", p->oom_kills_then,
                p->oom_kills_now);
    else
        fputs("null", out);
    fputs(",\"ring\":", out);
    if (f->prev_kept[0])
        json_str(out, f->prev_kept, sizeof(f->prev_kept));
    else
        fputs("null", out);
    fputs("}\n", out);
    fflush(out);
}

static void gauge(FILE *o, const char *name, const char *help, double v)
{
    fprintf(o, "# HELP %s %s\n# TYPE %s gauge\n%s %.17g\n", name, help, name, name, v);
}

void flight_render_metrics(const flight_t *f, FILE *out)
{
    const flight_prev_t *p = flight_previous(f);
    if (p == NULL)
        return;
    gauge(out, "thumbgate_previous_run_clean",
          "1 when the previous run was stopped cleanly, 0 when it was killed.", p->clean);
    gauge(out, "thumbgate_previous_run_oom_killed",
          "1 when the cgroup's OOM-kill counter rose after the previous run's last snapshot.",
          p->oom_killed);
    gauge(out, "thumbgate_previous_run_jobs_in_flight",
          "Jobs in flight at the previous run's last snapshot.", p->njobs);
    gauge(out, "thumbgate_previous_run_last_snapshot_timestamp_seconds",
          "Time of the previous run's last snapshot (0: none).",
          (double)p->last_snapshot_unix_ms / 1000.0);
}

/* ---- thumbgate flight ------------------------------------------------------------------ */

/** The file of run @p run at @p path: path itself or a kept path.<run>. */
static int find_run(const char *path, long run, char *file, size_t n, char *err, size_t errlen)
{
    ring_header_t h;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    bool match = fd >= 0 && pread(fd, &h, sizeof(h), 0) == (ssize_t)sizeof(h) &&
                 memcmp(h.magic, FLIGHT_MAGIC, sizeof(FLIGHT_MAGIC)) == 0 && h.run == (uint64_t)run;
    if (fd >= 0)
        close(fd);
    if (match) {
        snprintf(file, n, "%s", path);
        return 0;
    }
    snprintf(file, n, "%s.%ld", path, run);
    if (access(file, F_OK) == 0)
        return 0;
    snprintf(err, errlen, "no run %ld at %s (see thumbgate flight --list)", run, path);
    return -1;
}

static const char *ending(const ring_t *r)
{
    return r->running ? "running" : r->h.clean ? "clean" : "killed";
}

int flight_dump(const char *path, long run, FILE *out, bool json, unsigned max, char *err,
                size_t errlen)
{
    char file[1200];
    ring_t r;
    if (run >= 0 && find_run(path, run, file, sizeof(file), err, errlen) != 0)
        return -1;
    if (ring_open(&r, run >= 0 ? file : path, err, errlen) != 0)
        return -1;
    if (max == 0 || max > r.n)
        max = r.n;
    if (json)
        fputc('[', out);
    else
        fprintf(out,
                "flight recorder run %" PRIu64 " of pid %" PRIu64
                " (%s): %u snapshots every %" PRIu64 " ms, newest first\n",
                r.h.run, r.h.pid, ending(&r), r.n, r.h.interval_ms);
    for (unsigned i = 0; i < max; i++) {
        ring_slot_t s;
        if (!slot_read(&r, r.refs[i].idx, &s))
            continue; /* rewritten since it was listed: the ring is live */
        for (uint32_t j = 0; j < s.njobs; j++)
            s.jobs[j].what[FLIGHT_WHAT_LEN - 1] = '\0';
        if (json) {
            fprintf(out,
                    "%s{\"seq\":%" PRIu64 ",\"unix_ms\":%" PRIu64 ",\"rss_anon\":%" PRIu64
                    ",\"rss_file\":%" PRIu64 ",\"vm_hwm\":%" PRIu64 ",\"budget\":%" PRIu64
                    ",\"in_use\":%" PRIu64 ",\"queue_len\":%u,\"queued_bytes\":%" PRIu64
                    ",\"running\":%u,\"conns\":%" PRIu64 ",\"body_reserved\":%" PRIu64
                    ",\"input_spill\":%" PRIu64 ",\"plan_total\":%" PRIu64 ",\"jobs\":",
                    i ? "," : "", s.seq, s.unix_ms, s.rss_anon, s.rss_file, s.vm_hwm, s.budget,
                    s.in_use, s.queue_len, s.queued_bytes, s.running, s.conns, s.body_reserved,
                    s.input_spill, s.plan_total);
            jobs_json(out, s.jobs, s.njobs);
            fputc('}', out);
        } else {
            char ts[48];
            fmt_time(ts, sizeof(ts), s.unix_ms);
            fprintf(out,
                    "%s #%" PRIu64 " rss_anon=%.1fMiB rss_file=%.1fMiB hwm=%.1fMiB "
                    "budget_in_use=%.1f/%.1fMiB queue=%u (%.1fMiB) running=%u conns=%" PRIu64
                    " bodies=%.1fMiB spill=%.1fMiB plan=%.1fMiB\n",
                    ts, s.seq, s.rss_anon / 1048576.0, s.rss_file / 1048576.0, s.vm_hwm / 1048576.0,
                    s.in_use / 1048576.0, s.budget / 1048576.0, s.queue_len,
                    s.queued_bytes / 1048576.0, s.running, s.conns, s.body_reserved / 1048576.0,
                    s.input_spill / 1048576.0, s.plan_total / 1048576.0);
            for (uint32_t j = 0; j < s.njobs; j++)
                fprintf(out, "    in flight: %s estimate=%.1fMiB elapsed=%" PRIu64 "ms\n",
                        s.jobs[j].what, s.jobs[j].estimate / 1048576.0, s.jobs[j].elapsed_ms);
        }
    }
    if (json)
        fputs("]\n", out);
    ring_close(&r);
    return 0;
}

/** One run of the list; @p next is the run after it (NULL for the current one), whose
 *  start-up counter tells whether the cgroup OOM-killed in between. */
static void list_one(FILE *out, bool json, bool first, const ring_t *r, const ring_t *next)
{
    flight_prev_t p;
    prev_from_ring(&p, r);
    if (next != NULL)
        prev_compare_oom(&p, r->h.oom_file, next->h.oom_known, next->h.oom_kills_start,
                         next->h.oom_file);
    else
        p.oom_known = false;
    if (json) {
        fprintf(out,
                "%s{\"run\":%" PRIu64 ",\"pid\":%" PRIu64 ",\"ended\":\"%s\",\"clean\":%s,"
                "\"snapshots\":%u,\"started\":",
                first ? "" : ",", p.run, p.pid, ending(r), p.clean ? "true" : "false", r->n);
        json_time(out, p.started_unix_ms);
        fputs(",\"last_snapshot\":", out);
        json_time(out, p.last_snapshot_unix_ms);
        fputs(",\"jobs\":", out);
        jobs_json(out, p.jobs, p.njobs);
        fprintf(out, ",\"oom_kill\":%s}", !p.oom_known ? "null" : p.oom_killed ? "true" : "false");
        return;
    }
    char st[48], last[48] = "-";
    fmt_time(st, sizeof(st), p.started_unix_ms);
    if (p.last_snapshot_unix_ms)
        fmt_time(last, sizeof(last), p.last_snapshot_unix_ms);
    fprintf(out, "%-6" PRIu64 " %-8" PRIu64 " %-24s %-24s %9u %4u  %s%s\n", p.run, p.pid, st, last,
            r->n, p.njobs, ending(r), p.oom_killed ? ", oom_kill" : "");
}

int flight_list(const char *path, FILE *out, bool json, char *err, size_t errlen)
{
    kept_t *k;
    unsigned n = scan_kept(path, &k);
    ring_t cur, older[2];
    bool have_cur = ring_open(&cur, path, err, errlen) == 0;
    if (!have_cur && n == 0) {
        free(k);
        return -1;
    }
    fputs(json ? "["
               : "run    pid      started                  last snapshot            "
                 "snapshots jobs  ended\n",
          out);
    bool first = true;
    if (have_cur) {
        list_one(out, json, first, &cur, NULL);
        first = false;
    }
    /* newest first; each run is compared with the one that started after it */
    ring_t *next = have_cur ? &cur : NULL;
    int slot = 0;
    for (unsigned i = 0; i < n; i++) {
        ring_t *r = &older[slot];
        char e[64];
        if (ring_open(r, k[i].file, e, sizeof(e)) != 0)
            continue;
        list_one(out, json, first, r, next != NULL && next->h.run > r->h.run ? next : NULL);
        first = false;
        if (next != NULL)
            ring_close(next);
        next = r;
        slot ^= 1;
    }
    if (next != NULL)
        ring_close(next);
    if (json)
        fputs("]\n", out);
    free(k);
    return 0;
}
