/* jobmeter — the group bound of jobmeter.h: one sampler thread, one list of running jobs.
 * Cost: one read of /proc/self/statm (a few microseconds) per period while jobs run, and
 * a walk of the running list (at most the worker count) under the mutex; nothing when
 * idle but one wake-up per quiet period. */
#include "server/jobmeter.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "server/json.h"

struct jobmeter {
    jobmeter_opts_t o;
    double scale; /* TG_TEST_ESTIMATE_SCALE; 1 when unset */
    int statm_fd;
    long page;
    pthread_t tid;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stop;
    jobmeter_job_t *head; /* running jobs */
    unsigned n;
    uint64_t set_est;   /* sum of their estimates */
    uint64_t ended_est; /* estimates of jobs ended since the last trim began (with trim) */
    uint64_t floor;     /* anon bytes with no job running; 0 = not read yet */
    uint64_t begins;    /* jobs begun so far: a floor read raced by a start is dropped */
    bool trim_wanted;   /* a job ended since the last trim */
    bool floor_fresh;   /* re-read since the last job ended (nothing to do until one runs) */
    struct timespec last_end, last_trim;
};

/* Anonymous resident bytes of this process: resident - shared pages (statm). */
static uint64_t read_anon(jobmeter_t *m)
{
    char buf[128];
    ssize_t k = pread(m->statm_fd, buf, sizeof(buf) - 1, 0);
    if (k <= 0)
        return 0;
    buf[k] = '\0';
    unsigned long long size, res, shared;
    if (sscanf(buf, "%llu %llu %llu", &size, &res, &shared) != 3 || shared > res)
        return 0;
    return (uint64_t)(res - shared) * (uint64_t)m->page;
}

/* One sample against the running set. Called with the mutex held. */
static void sample_locked(jobmeter_t *m, uint64_t anon)
{
    if (m->head == NULL || m->set_est == 0 || anon == 0)
        return;
    uint64_t excess = anon > m->floor ? anon - m->floor : 0;
    /* what ended jobs freed may be resident until the next trim: their estimates too */
    uint64_t charged = m->set_est + m->ended_est;
    double ratio = (double)excess / (double)charged;
    bool co_done = false;
    char co[256];
    for (jobmeter_job_t *j = m->head; j; j = j->_next) {
        if (ratio <= j->_max)
            continue;
        j->_max = ratio;
        j->_excess_at = excess;
        j->_set_est_at = charged;
        j->_set_n_at = m->n;
        if (ratio <= 1)
            continue;
        if (!co_done) { /* the running set, for the log line: "what:estimate; ..." */
            size_t off = 0;
            co[0] = '\0';
            for (jobmeter_job_t *c = m->head; c && off < sizeof(co) - 1; c = c->_next) {
                int w = snprintf(co + off, sizeof(co) - off, "%s%s:%llu", off ? "; " : "",
                                 c->what ? c->what : "?", (unsigned long long)c->estimate);
                off = w < 0 ? sizeof(co) - 1 : off + (size_t)w;
            }
            co_done = true;
        }
        snprintf(j->_co, sizeof(j->_co), "%s", co);
    }
}

static void add_ms(struct timespec *ts, uint32_t ms)
{
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

static bool reached(const struct timespec *t)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return now.tv_sec > t->tv_sec || (now.tv_sec == t->tv_sec && now.tv_nsec >= t->tv_nsec);
}

static void *sampler_main(void *arg)
{
    jobmeter_t *m = arg;
    pthread_mutex_lock(&m->mu);
    while (!m->stop) {
        struct timespec until, due = m->last_trim;
        add_ms(&due, m->o.trim_every_ms);
        if (m->trim_wanted && m->o.trim && !reached(&due) && m->head == NULL) {
            pthread_cond_timedwait(&m->cv, &m->mu, &due); /* nothing to sample meanwhile */
            continue;
        }
        if (m->trim_wanted && m->o.trim && reached(&due)) {
            /* jobs ended: the heap they freed goes back, here rather than on the worker (a
             * trim takes milliseconds; ends during one are covered by the next), so it is
             * neither charged to the jobs still running nor hidden in the floor. At most
             * one trim per trim_every_ms: until it, the ended jobs stay charged */
            m->trim_wanted = false;
            uint64_t begins = m->begins, covered = m->ended_est;
            pthread_mutex_unlock(&m->mu);
            struct timespec t0, t1;
            clock_gettime(CLOCK_MONOTONIC, &t0);
            m->o.trim();
            clock_gettime(CLOCK_MONOTONIC, &t1);
            uint64_t anon = read_anon(m);
            if (m->o.metrics)
                atomic_fetch_add_explicit(&m->o.metrics->est_trim_us,
                                          (uint64_t)((t1.tv_sec - t0.tv_sec) * 1000000 +
                                                     (t1.tv_nsec - t0.tv_nsec) / 1000),
                                          memory_order_relaxed);
            pthread_mutex_lock(&m->mu);
            m->ended_est -= covered;
            m->last_trim = t1;
            /* idle since before the trim: what stays is the server's; a job that started
             * meanwhile may already use some of it, so then the floor stays */
            if (m->head == NULL && m->begins == begins && !m->trim_wanted && anon != 0) {
                m->floor = anon;
                m->floor_fresh = true;
            }
            continue;
        }
        if (m->head == NULL) {
            if (m->floor_fresh || m->o.trim) { /* with trim, the floor is read after it */
                pthread_cond_wait(&m->cv, &m->mu);
                continue;
            }
            until = m->last_end;
            add_ms(&until, m->o.quiet_ms);
            if (pthread_cond_timedwait(&m->cv, &m->mu, &until) == ETIMEDOUT && m->head == NULL) {
                /* quiet long enough: what is resident now is the server's, not a job's */
                m->floor = read_anon(m);
                m->floor_fresh = true;
            }
            continue;
        }
        pthread_mutex_unlock(&m->mu);
        uint64_t anon = read_anon(m);
        pthread_mutex_lock(&m->mu);
        sample_locked(m, anon);
        clock_gettime(CLOCK_MONOTONIC, &until);
        add_ms(&until, m->o.period_ms);
        while (!m->stop && pthread_cond_timedwait(&m->cv, &m->mu, &until) != ETIMEDOUT)
            ;
    }
    pthread_mutex_unlock(&m->mu);
    return NULL;
}

jobmeter_t *jobmeter_create(const jobmeter_opts_t *opts)
{
    jobmeter_t *m = calloc(1, sizeof(*m));
    if (m == NULL)
        return NULL;
    m->o = *opts;
    if (m->o.period_ms == 0)
        m->o.period_ms = 5;
    m->scale = 1;
    const char *s = getenv("TG_TEST_ESTIMATE_SCALE"); /* test only, read once */
    if (s && *s) {
        double v = strtod(s, NULL);
        if (v > 0 && v <= 1)
            m->scale = v;
    }
    m->page = sysconf(_SC_PAGESIZE);
    m->statm_fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&m->cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&m->mu, NULL);
    m->floor_fresh = true;
    if (m->statm_fd < 0 || m->page <= 0 || pthread_create(&m->tid, NULL, sampler_main, m) != 0) {
        if (m->statm_fd >= 0)
            close(m->statm_fd);
        pthread_cond_destroy(&m->cv);
        pthread_mutex_destroy(&m->mu);
        free(m);
        return NULL;
    }
    return m;
}

void jobmeter_destroy(jobmeter_t *m)
{
    if (m == NULL)
        return;
    pthread_mutex_lock(&m->mu);
    m->stop = true;
    pthread_cond_broadcast(&m->cv);
    pthread_mutex_unlock(&m->mu);
    pthread_join(m->tid, NULL);
    close(m->statm_fd);
    pthread_cond_destroy(&m->cv);
    pthread_mutex_destroy(&m->mu);
    free(m);
}

uint64_t jobmeter_scaled(const jobmeter_t *m, uint64_t estimate)
{
    if (m == NULL || m->scale >= 1)
        return estimate;
    return (uint64_t)((double)estimate * m->scale);
}

void jobmeter_begin(jobmeter_t *m, jobmeter_job_t *job)
{
    job->_next = job->_prev = NULL;
    job->_max = 0;
    job->_excess_at = job->_set_est_at = 0;
    job->_set_n_at = 0;
    job->_co[0] = '\0';
    if (m == NULL)
        return;
    pthread_mutex_lock(&m->mu);
    if (m->head == NULL) {
        /* the first job on an idle server: nothing of a job's is resident now */
        uint64_t anon = read_anon(m);
        if (m->floor == 0 || (anon != 0 && anon < m->floor))
            m->floor = anon;
    }
    m->begins++;
    job->_next = m->head;
    if (m->head)
        m->head->_prev = job;
    m->head = job;
    m->n++;
    m->set_est += job->estimate;
    pthread_cond_broadcast(&m->cv);
    pthread_mutex_unlock(&m->mu);
}

static void log_under(jobmeter_t *m, const jobmeter_job_t *job)
{
    char line[1024];
    json_t j;
    json_begin(&j, line, sizeof(line));
    json_str(&j, "log", "estimate_under");
    json_str(&j, "job", job->what ? job->what : "?");
    json_u64(&j, "estimate", job->estimate);
    json_fixed3(&j, "ratio", job->_max);
    json_u64(&j, "anon_over_floor", job->_excess_at);
    json_u64(&j, "set_estimates", job->_set_est_at);
    json_u64(&j, "set_jobs", job->_set_n_at);
    json_str(&j, "running", job->_co);
    fwrite(line, 1, json_end(&j), m->o.log);
}

double jobmeter_end(jobmeter_t *m, jobmeter_job_t *job)
{
    if (m == NULL)
        return 0;
    uint64_t anon = read_anon(m);
    pthread_mutex_lock(&m->mu);
    sample_locked(m, anon);
    if (job->_prev)
        job->_prev->_next = job->_next;
    else
        m->head = job->_next;
    if (job->_next)
        job->_next->_prev = job->_prev;
    m->n--;
    m->set_est -= job->estimate;
    if (m->head == NULL) {
        clock_gettime(CLOCK_MONOTONIC, &m->last_end);
        m->floor_fresh = false;
    }
    if (m->o.trim)
        m->ended_est += job->estimate;
    m->trim_wanted = true;
    pthread_cond_broadcast(&m->cv);
    pthread_mutex_unlock(&m->mu);
    metrics_t *mt = m->o.metrics;
    double ratio = job->_max;
    if (mt) {
        /* estimate / measured, in the histogram's fixed point (x 1e6); none seen: +Inf */
        double inv = ratio > 1e-6 ? 1.0 / ratio : 1e6;
        metrics_hist_observe(&mt->est_ratio, (uint64_t)(inv * 1e6));
        if (ratio > 1)
            atomic_fetch_add_explicit(&mt->est_under, 1, memory_order_relaxed);
    }
    if (ratio > 1 && m->o.log)
        log_under(m, job);
    return ratio;
}
