/* adm — admission gate and worker pool (policy in adm.h). One mutex guards the
 * queue and the budget; workers sleep on one condition variable with a timed wait
 * until the earliest queue deadline, so expiry needs no timer thread of its own. */
#include "server/adm.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <stdlib.h>
#include <time.h>

enum { JOB_IDLE = 0, JOB_WAITING, JOB_RUNNING, JOB_DONE };

struct adm_gate {
    adm_config_t cfg;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    adm_job_t *head, *tail;             /**< waiting for budget, FIFO, each with a deadline */
    adm_job_t *ready_head, *ready_tail; /**< admitted at submit (budget taken), not yet picked up */
    uint32_t nthreads;
    pthread_t *threads;
    struct worker_arg *args;
    bool stopping;
    adm_stats_t st;
    /* drain rate: completions counted in 1-second buckets, smoothed */
    uint64_t bucket_start_ms, bucket_count;
    double drain;
};

uint64_t adm_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

const char *adm_strerror(int code)
{
    switch (code < 0 ? -code : code) {
    case ADM_OK:
        return "ok";
    case ADM_E_TOO_BIG:
        return "the job needs more memory than the whole budget";
    case ADM_E_QUEUE_FULL:
        return "the memory budget is in use and the wait queue is full";
    case ADM_E_EXPIRED:
        return "the job waited too long for memory budget";
    case ADM_E_SHUTDOWN:
        return "the server is shutting down";
    }
    return "unknown admission error";
}

static void unlink_job(adm_gate_t *g, adm_job_t *job)
{
    if (job->_prev)
        job->_prev->_next = job->_next;
    else
        g->head = job->_next;
    if (job->_next)
        job->_next->_prev = job->_prev;
    else
        g->tail = job->_prev;
    job->_next = job->_prev = NULL;
    g->st.queue_len--;
    g->st.queued_bytes -= job->estimate;
}

static void note_completion(adm_gate_t *g, uint64_t now)
{
    if (now - g->bucket_start_ms >= 1000) {
        double secs = (double)(now - g->bucket_start_ms) / 1000.0;
        double rate = (double)g->bucket_count / secs;
        g->drain = g->drain == 0 ? rate : 0.7 * g->drain + 0.3 * rate;
        g->bucket_start_ms = now;
        g->bucket_count = 0;
    }
    g->bucket_count++;
    g->st.completed++;
}

static void take_budget(adm_gate_t *g, adm_job_t *job)
{
    job->_state = JOB_RUNNING;
    g->st.in_use += job->estimate;
    g->st.running++;
    if (g->st.in_use > g->st.in_use_highwater)
        g->st.in_use_highwater = g->st.in_use;
    g->st.admitted++;
}

static void give_budget(adm_gate_t *g, adm_job_t *job, uint64_t estimate)
{
    g->st.in_use -= estimate;
    g->st.running--;
    note_completion(g, adm_now_ms());
    (void)job;
}

/* Workers run jobs and expire waits; the reaper (worker index 0 of nthreads+1) only
 * expires, so waits still end on time while every worker is busy with a long job. */
struct worker_arg {
    adm_gate_t *g;
    bool reaper;
};

static void *worker_main(void *arg)
{
    adm_gate_t *g = ((struct worker_arg *)arg)->g;
    bool reaper = ((struct worker_arg *)arg)->reaper;
    /* image work yields the CPU to the event loops: cached hits and uploads keep their
     * latency while every core decodes (Linux applies a tid's nice to that thread only;
     * libvips threads started from here inherit it) */
    setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), 10);
    pthread_mutex_lock(&g->mu);
    for (;;) {
        uint64_t now = adm_now_ms();
        /* jobs admitted at submit hold their budget already: run them first */
        adm_job_t *job = g->ready_head;
        if (!reaper && job != NULL) {
            g->ready_head = job->_next;
            if (g->ready_head == NULL)
                g->ready_tail = NULL;
            job->_next = NULL;
            uint64_t e = job->estimate;
            pthread_mutex_unlock(&g->mu);
            job->run(job); /* the job may be freed from here on */
            pthread_mutex_lock(&g->mu);
            give_budget(g, NULL, e);
            pthread_cond_broadcast(&g->cv);
            continue;
        }
        /* expire waiting jobs past their deadline, oldest first */
        job = g->head;
        if (job != NULL && job->_deadline_ms <= now) {
            unlink_job(g, job);
            job->_state = JOB_DONE;
            g->st.expired++;
            pthread_mutex_unlock(&g->mu);
            job->on_expire(job); /* the job may be freed from here on */
            pthread_mutex_lock(&g->mu);
            continue;
        }
        if (!reaper && job != NULL && g->st.in_use + job->estimate <= g->cfg.budget) {
            unlink_job(g, job);
            take_budget(g, job);
            uint64_t e = job->estimate;
            pthread_mutex_unlock(&g->mu);
            job->run(job); /* the job may be freed from here on */
            pthread_mutex_lock(&g->mu);
            give_budget(g, NULL, e);
            pthread_cond_broadcast(&g->cv); /* budget freed: the head may fit now */
            continue;
        }
        if (g->stopping && g->head == NULL && g->ready_head == NULL)
            break;
        if (job != NULL) {
            /* wait for budget or the head's deadline, whichever comes first */
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            uint64_t wait = job->_deadline_ms - now;
            ts.tv_sec += (time_t)(wait / 1000);
            ts.tv_nsec += (long)(wait % 1000) * 1000000L;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&g->cv, &g->mu, &ts);
        } else {
            pthread_cond_wait(&g->cv, &g->mu);
        }
    }
    pthread_mutex_unlock(&g->mu);
    return NULL;
}

adm_gate_t *adm_create(const adm_config_t *cfg)
{
    adm_gate_t *g = calloc(1, sizeof(*g));
    if (g == NULL)
        return NULL;
    g->cfg = *cfg;
    if (g->cfg.workers == 0)
        g->cfg.workers = 1;
    g->st.budget = cfg->budget;
    g->st.workers = g->cfg.workers;
    g->bucket_start_ms = adm_now_ms();
    pthread_mutex_init(&g->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&g->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (cfg->naive)
        return g; /* naive: a thread per job, no pool */
    g->threads = calloc(g->cfg.workers + 1, sizeof(*g->threads));
    g->args = calloc(g->cfg.workers + 1, sizeof(*g->args));
    if (g->threads == NULL || g->args == NULL)
        goto out_free;
    for (; g->nthreads < g->cfg.workers + 1; g->nthreads++) {
        g->args[g->nthreads] = (struct worker_arg){g, g->nthreads == 0};
        if (pthread_create(&g->threads[g->nthreads], NULL, worker_main, &g->args[g->nthreads]) != 0)
            goto out_stop;
    }
    return g;

out_stop:
    adm_destroy(g);
    return NULL;
out_free:
    free(g->threads);
    free(g->args);
    pthread_cond_destroy(&g->cv);
    pthread_mutex_destroy(&g->mu);
    free(g);
    return NULL;
}

void adm_destroy(adm_gate_t *g)
{
    if (g == NULL)
        return;
    pthread_mutex_lock(&g->mu);
    g->stopping = true;
    /* waiting jobs will never get budget now: expire them */
    for (adm_job_t *j = g->head; j != NULL; j = j->_next)
        j->_deadline_ms = 0;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
    for (uint32_t i = 0; i < g->nthreads; i++)
        pthread_join(g->threads[i], NULL);
    /* naive threads are detached; wait for them to drain so none outlives the gate */
    pthread_mutex_lock(&g->mu);
    while (g->st.running > 0)
        pthread_cond_wait(&g->cv, &g->mu);
    pthread_mutex_unlock(&g->mu);
    free(g->threads);
    free(g->args);
    pthread_cond_destroy(&g->cv);
    pthread_mutex_destroy(&g->mu);
    free(g);
}

static void *naive_main(void *arg)
{
    setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), 10);
    adm_job_t *job = arg;
    adm_gate_t *g = (adm_gate_t *)job->_next; /* stashed by adm_submit */
    uint64_t e = job->estimate;
    job->_next = NULL;
    job->run(job);
    pthread_mutex_lock(&g->mu);
    give_budget(g, NULL, e);
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
    return NULL;
}

int adm_submit(adm_gate_t *g, adm_job_t *job, uint64_t now_ms, bool *queued)
{
    int ret = 0;
    bool q = false;
    pthread_mutex_lock(&g->mu);
    if (g->stopping) {
        ret = -ADM_E_SHUTDOWN;
        goto out_unlock;
    }
    if (g->cfg.naive) {
        take_budget(g, job);
        job->_next = (adm_job_t *)g;
        pthread_t t;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        if (pthread_create(&t, &attr, naive_main, job) != 0) {
            give_budget(g, job, job->estimate);
            ret = -ADM_E_QUEUE_FULL;
        }
        pthread_attr_destroy(&attr);
        goto out_unlock;
    }
    if (job->estimate > g->cfg.budget) {
        g->st.rejected_too_big++;
        ret = -ADM_E_TOO_BIG;
        goto out_unlock;
    }
    /* a job that fits, with a worker free and nothing waiting ahead, is admitted here and
     * now (its budget and worker reserved), so it never waits, expires or counts against
     * the queue however soon the next job arrives; anything else waits, bounded below */
    q = !(g->head == NULL && g->st.in_use + job->estimate <= g->cfg.budget &&
          g->st.running < g->cfg.workers);
    if (q && (g->st.queue_len >= g->cfg.queue_max ||
              g->st.queued_bytes + job->estimate > g->cfg.queue_max_bytes)) {
        g->st.rejected_queue_full++;
        ret = -ADM_E_QUEUE_FULL;
        goto out_unlock;
    }
    job->_enqueued_ms = now_ms;
    job->_next = NULL;
    if (!q) {
        take_budget(g, job);
        if (g->ready_tail)
            g->ready_tail->_next = job;
        else
            g->ready_head = job;
        g->ready_tail = job;
    } else {
        job->_state = JOB_WAITING;
        job->_deadline_ms = now_ms + g->cfg.queue_timeout_ms;
        job->_prev = g->tail;
        if (g->tail)
            g->tail->_next = job;
        else
            g->head = job;
        g->tail = job;
        g->st.queue_len++;
        g->st.queued_bytes += job->estimate;
        g->st.queued++;
    }
    /* broadcast: a signal could wake only the reaper, which never runs jobs */
    pthread_cond_broadcast(&g->cv);
out_unlock:
    pthread_mutex_unlock(&g->mu);
    if (queued)
        *queued = q;
    return ret;
}

bool adm_cancel(adm_gate_t *g, adm_job_t *job)
{
    bool removed = false;
    pthread_mutex_lock(&g->mu);
    if (job->_state == JOB_WAITING) {
        unlink_job(g, job);
        job->_state = JOB_DONE;
        g->st.cancelled++;
        removed = true;
        pthread_cond_broadcast(&g->cv); /* the job behind it may be able to start */
    }
    pthread_mutex_unlock(&g->mu);
    return removed;
}

void adm_stats(adm_gate_t *g, adm_stats_t *out)
{
    pthread_mutex_lock(&g->mu);
    *out = g->st;
    out->drain_per_sec = g->drain;
    pthread_mutex_unlock(&g->mu);
}

uint32_t adm_retry_after(adm_gate_t *g)
{
    pthread_mutex_lock(&g->mu);
    double rate = g->drain;
    uint32_t waiting = g->st.queue_len + g->st.running;
    pthread_mutex_unlock(&g->mu);
    /* time for what is ahead to drain at the recent rate; 1 s when we know nothing */
    double secs = rate > 0.05 ? ceil((double)waiting / rate) : 1.0;
    if (secs < 1)
        secs = 1;
    if (secs > 60)
        secs = 60;
    return (uint32_t)secs;
}
