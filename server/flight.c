/* flight — ring file of periodic memory snapshots (see flight.h).
 * Layout: a 4 KiB header, then `slots` fixed 4 KiB records. Record i is rewritten in
 * place with pwrite; a record is valid when its seq is non-zero and its trailing copy
 * of seq matches (a torn write at the kill shows as a mismatch and is skipped). */
#include "server/flight.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#include "server/srv_internal.h"

#define FLIGHT_MAGIC "TGFLIGHT1"
#define SLOT_SIZE 4096
#define WHAT_LEN 120

typedef struct {
    char magic[16];
    uint32_t slot_size, slots;
    uint64_t interval_ms;
    uint64_t pid;
} ring_header_t;

typedef struct {
    uint64_t estimate, elapsed_ms;
    char what[WHAT_LEN];
} ring_job_t;

typedef struct {
    uint64_t seq;
    uint64_t unix_ms;
    uint64_t rss_anon, rss_file, vm_hwm;
    uint64_t budget, in_use, queued_bytes;
    uint32_t queue_len, running, njobs, pad;
    ring_job_t jobs[FLIGHT_MAX_JOBS];
    uint64_t seq_end;
} ring_slot_t;

_Static_assert(sizeof(ring_slot_t) <= SLOT_SIZE, "a snapshot must fit its slot");

struct job_ent {
    const void *id;
    uint64_t estimate, started_ms;
    char what[WHAT_LEN];
};

struct flight {
    struct srv *srv;
    int fd;
    uint32_t slots;
    uint64_t interval_ms, last_ms, seq;
    pthread_mutex_t mu;
    struct job_ent jobs[FLIGHT_MAX_JOBS];
};

flight_t *flight_open(struct srv *srv, char *err, size_t errlen)
{
    const cfg_t *cfg = srv->cfg;
    char path[1100];
    if (cfg->flight_path[0])
        snprintf(path, sizeof(path), "%s", cfg->flight_path);
    else
        snprintf(path, sizeof(path), "%s/flight.ring", cfg->storage_root);
    flight_t *f = calloc(1, sizeof(*f));
    if (f == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    f->srv = srv;
    f->slots = cfg->flight_slots ? cfg->flight_slots : 300;
    f->interval_ms = cfg->flight_interval_ms ? cfg->flight_interval_ms : 1000;
    f->fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    /* preallocate the whole ring now: writing it later never needs more disk */
    off_t size = (off_t)SLOT_SIZE * (f->slots + 1);
    if (f->fd < 0 || ftruncate(f->fd, 0) != 0 || posix_fallocate(f->fd, 0, size) != 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        if (f->fd >= 0)
            close(f->fd);
        free(f);
        return NULL;
    }
    char hdr[SLOT_SIZE] = {0};
    ring_header_t h = {.slot_size = SLOT_SIZE, .slots = f->slots, .interval_ms = f->interval_ms, .pid = (uint64_t)getpid()};
    memcpy(h.magic, FLIGHT_MAGIC, sizeof(FLIGHT_MAGIC));
    memcpy(hdr, &h, sizeof(h));
    if (pwrite(f->fd, hdr, sizeof(hdr), 0) != (ssize_t)sizeof(hdr)) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        close(f->fd);
        free(f);
        return NULL;
    }
    pthread_mutex_init(&f->mu, NULL);
    return f;
}

void flight_close(flight_t *f)
{
    if (f == NULL)
        return;
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
            f->jobs[i].started_ms = srv__now_ms();
            snprintf(f->jobs[i].what, WHAT_LEN, "%s", what);
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
    if (f == NULL || now_ms - f->last_ms < f->interval_ms)
        return;
    f->last_ms = now_ms;
    ring_slot_t s;
    memset(&s, 0, sizeof(s));
    struct timeval tv;
    gettimeofday(&tv, NULL);
    s.seq = ++f->seq;
    s.unix_ms = (uint64_t)tv.tv_sec * 1000 + (uint64_t)tv.tv_usec / 1000;
    metrics_proc_t pm;
    metrics_proc_read(&pm);
    s.rss_anon = pm.rss_anon;
    s.rss_file = pm.rss_file;
    s.vm_hwm = pm.hwm;
    adm_stats_t as;
    adm_stats(f->srv->gate, &as);
    s.budget = as.budget;
    s.in_use = as.in_use;
    s.queued_bytes = as.queued_bytes;
    s.queue_len = as.queue_len;
    s.running = as.running;
    pthread_mutex_lock(&f->mu);
    for (int i = 0; i < FLIGHT_MAX_JOBS; i++)
        if (f->jobs[i].id != NULL) {
            ring_job_t *j = &s.jobs[s.njobs++];
            j->estimate = f->jobs[i].estimate;
            j->elapsed_ms = now_ms - f->jobs[i].started_ms;
            memcpy(j->what, f->jobs[i].what, WHAT_LEN);
        }
    pthread_mutex_unlock(&f->mu);
    s.seq_end = s.seq;
    off_t off = (off_t)SLOT_SIZE * (1 + (s.seq - 1) % f->slots);
    if (pwrite(f->fd, &s, sizeof(s), off) != (ssize_t)sizeof(s))
        return; /* the disk is full or gone: the recorder is best effort */
}

static int by_seq_desc(const void *a, const void *b)
{
    const ring_slot_t *x = a, *y = b;
    return (x->seq < y->seq) - (x->seq > y->seq);
}

int flight_dump(const char *path, FILE *out, bool json, unsigned max)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    ring_header_t h;
    if (fd < 0 || pread(fd, &h, sizeof(h), 0) != (ssize_t)sizeof(h) || memcmp(h.magic, FLIGHT_MAGIC, sizeof(FLIGHT_MAGIC)) ||
        h.slot_size != SLOT_SIZE || h.slots == 0 || h.slots > 1000000) {
        fprintf(stderr, "thumbgate flight: %s is not a flight recorder ring\n", path);
        if (fd >= 0)
            close(fd);
        return -1;
    }
    ring_slot_t *slots = calloc(h.slots, sizeof(*slots));
    unsigned n = 0;
    for (uint32_t i = 0; slots != NULL && i < h.slots; i++) {
        ring_slot_t s;
        if (pread(fd, &s, sizeof(s), (off_t)SLOT_SIZE * (1 + i)) == (ssize_t)sizeof(s) && s.seq != 0 &&
            s.seq == s.seq_end && s.njobs <= FLIGHT_MAX_JOBS)
            slots[n++] = s;
    }
    close(fd);
    qsort(slots, n, sizeof(*slots), by_seq_desc);
    if (max == 0 || max > n)
        max = n;
    if (json)
        fputc('[', out);
    else
        fprintf(out, "flight recorder of pid %" PRIu64 ": %u snapshots every %" PRIu64 " ms, newest first\n", h.pid, n,
                h.interval_ms);
    for (unsigned i = 0; i < max; i++) {
        ring_slot_t *s = &slots[i];
        if (json) {
            fprintf(out,
                    "%s{\"seq\":%" PRIu64 ",\"unix_ms\":%" PRIu64 ",\"rss_anon\":%" PRIu64 ",\"rss_file\":%" PRIu64
                    ",\"vm_hwm\":%" PRIu64 ",\"budget\":%" PRIu64 ",\"in_use\":%" PRIu64 ",\"queue_len\":%u,"
                    "\"queued_bytes\":%" PRIu64 ",\"running\":%u,\"jobs\":[",
                    i ? "," : "", s->seq, s->unix_ms, s->rss_anon, s->rss_file, s->vm_hwm, s->budget, s->in_use,
                    s->queue_len, s->queued_bytes, s->running);
            for (uint32_t j = 0; j < s->njobs; j++) {
                s->jobs[j].what[WHAT_LEN - 1] = '\0';
                fprintf(out, "%s{\"what\":\"", j ? "," : "");
                for (const char *c = s->jobs[j].what; *c; c++) /* keys are [A-Za-z0-9._/-]: nothing to escape */
                    if (*c != '"' && *c != '\\' && (unsigned char)*c >= 0x20)
                        fputc(*c, out);
                fprintf(out, "\",\"estimate\":%" PRIu64 ",\"elapsed_ms\":%" PRIu64 "}", s->jobs[j].estimate,
                        s->jobs[j].elapsed_ms);
            }
            fputs("]}", out);
        } else {
            time_t t = (time_t)(s->unix_ms / 1000);
            struct tm tm;
            char ts[32];
            gmtime_r(&t, &tm);
            strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
            fprintf(out,
                    "%s.%03uZ #%" PRIu64 " rss_anon=%.1fMiB rss_file=%.1fMiB hwm=%.1fMiB budget_in_use=%.1f/%.1fMiB "
                    "queue=%u (%.1fMiB) running=%u\n",
                    ts, (unsigned)(s->unix_ms % 1000), s->seq, s->rss_anon / 1048576.0, s->rss_file / 1048576.0,
                    s->vm_hwm / 1048576.0, s->in_use / 1048576.0, s->budget / 1048576.0, s->queue_len,
                    s->queued_bytes / 1048576.0, s->running);
            for (uint32_t j = 0; j < s->njobs; j++) {
                s->jobs[j].what[WHAT_LEN - 1] = '\0';
                fprintf(out, "    in flight: %s estimate=%.1fMiB elapsed=%" PRIu64 "ms\n", s->jobs[j].what,
                        s->jobs[j].estimate / 1048576.0, s->jobs[j].elapsed_ms);
            }
        }
    }
    if (json)
        fputs("]\n", out);
    free(slots);
    return 0;
}
