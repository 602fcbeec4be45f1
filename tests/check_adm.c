/* Unit tests of server/adm.c: admission is exact (in_use returns to 0 after every kind
 * of outcome), FIFO holds large jobs ahead of small ones, the queue is bounded by length
 * and bytes, waits expire, cancelled jobs never run. Jobs block on a gate the test
 * controls, so no test sleeps to synchronise. */
#include <check.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#include "server/adm.h"

#define MiB (1024ull * 1024)

typedef struct {
    adm_job_t super;
    pthread_mutex_t *mu;
    pthread_cond_t *cv;
    bool *release; /* the job returns once *release is true */
    atomic_int started, expired;
    int order; /* position in which it started */
    atomic_int *counter;
} tjob_t;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static bool release_all;
static atomic_int started_count, expired_count, start_seq;

static void tjob_run(adm_job_t *j)
{
    tjob_t *t = (void *)j;
    t->order = atomic_fetch_add(&start_seq, 1);
    atomic_store(&t->started, 1);
    pthread_mutex_lock(&mu);
    atomic_fetch_add(&started_count, 1);
    pthread_cond_broadcast(&cv);
    while (!release_all)
        pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);
}

static void tjob_expire(adm_job_t *j)
{
    tjob_t *t = (void *)j;
    atomic_store(&t->expired, 1);
    pthread_mutex_lock(&mu);
    atomic_fetch_add(&expired_count, 1);
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
}

static void tjob_init(tjob_t *t, uint64_t estimate)
{
    memset(t, 0, sizeof(*t));
    t->super.estimate = estimate;
    t->super.run = tjob_run;
    t->super.on_expire = tjob_expire;
}

static void wait_started(int n)
{
    pthread_mutex_lock(&mu);
    while (atomic_load(&started_count) < n)
        pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);
}

static void wait_expired(int n)
{
    pthread_mutex_lock(&mu);
    while (atomic_load(&expired_count) < n)
        pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);
}

static void release(void)
{
    pthread_mutex_lock(&mu);
    release_all = true;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
}

static void setup(void)
{
    release_all = false;
    atomic_store(&started_count, 0);
    atomic_store(&expired_count, 0);
    atomic_store(&start_seq, 0);
}

static adm_gate_t *gate(uint64_t budget, uint32_t workers, uint32_t qmax, uint64_t qbytes,
                        uint64_t timeout)
{
    adm_config_t c = {.budget = budget,
                      .workers = workers,
                      .queue_max = qmax,
                      .queue_max_bytes = qbytes,
                      .queue_timeout_ms = timeout};
    adm_gate_t *g = adm_create(&c);
    ck_assert_ptr_nonnull(g);
    return g;
}

/* Waits until every admitted job has released its budget (completion is counted by the
 * worker after run returns, so poll the gate's own figure under its lock). */
static void wait_idle(adm_gate_t *g)
{
    for (;;) {
        adm_stats_t s;
        adm_stats(g, &s);
        if (s.running == 0 && s.queue_len == 0)
            return;
        sched_yield();
    }
}

START_TEST(test_adm_submit_too_big_refused_at_once)
{
    adm_gate_t *g = gate(100 * MiB, 2, 8, 400 * MiB, 10000);
    tjob_t j;
    tjob_init(&j, 101 * MiB);
    ck_assert_int_eq(adm_submit(g, &j.super, adm_now_ms(), NULL), -ADM_E_TOO_BIG);
    adm_stats_t s;
    adm_stats(g, &s);
    ck_assert_uint_eq(s.rejected_too_big, 1);
    ck_assert_uint_eq(s.in_use, 0);
    ck_assert(!atomic_load(&j.started));
    adm_destroy(g);
}
END_TEST

START_TEST(test_adm_budget_bounds_running_jobs)
{
    adm_gate_t *g = gate(100 * MiB, 4, 8, 400 * MiB, 60000);
    tjob_t j[3];
    for (int i = 0; i < 3; i++)
        tjob_init(&j[i], 40 * MiB);
    bool q[3];
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(adm_submit(g, &j[i].super, adm_now_ms(), &q[i]), 0);
    wait_started(2);
    adm_stats_t s;
    adm_stats(g, &s);
    /* 2 x 40 fit in 100, the third would not: it waits although a worker is free */
    ck_assert_uint_eq(s.in_use, 80 * MiB);
    ck_assert_uint_eq(s.running, 2);
    ck_assert_uint_eq(s.queue_len, 1);
    ck_assert(q[2]);
    ck_assert(!atomic_load(&j[2].started));
    release();
    wait_idle(g);
    adm_stats(g, &s);
    ck_assert_uint_eq(s.in_use, 0);
    ck_assert_uint_eq(s.completed, 3);
    ck_assert_uint_le(s.in_use_highwater, 100 * MiB);
    adm_destroy(g);
}
END_TEST

START_TEST(test_adm_fifo_large_job_not_overtaken)
{
    adm_gate_t *g = gate(100 * MiB, 4, 8, 1000 * MiB, 60000);
    tjob_t first, large, small;
    tjob_init(&first, 60 * MiB);
    tjob_init(&large,
              95 * MiB); /* small cannot run beside large: their order is the gate's, not a race */
    tjob_init(&small, 10 * MiB);
    ck_assert_int_eq(adm_submit(g, &first.super, adm_now_ms(), NULL), 0);
    wait_started(1);
    ck_assert_int_eq(adm_submit(g, &large.super, adm_now_ms(), NULL), 0);
    /* small would fit beside first (70 <= 100) but must not overtake large */
    ck_assert_int_eq(adm_submit(g, &small.super, adm_now_ms(), NULL), 0);
    adm_stats_t s;
    adm_stats(g, &s);
    ck_assert_uint_eq(s.queue_len, 2);
    ck_assert(!atomic_load(&small.started));
    release();
    wait_idle(g);
    ck_assert_int_lt(large.order, small.order);
    adm_destroy(g);
}
END_TEST

START_TEST(test_adm_queue_bounded_by_length_and_bytes)
{
    adm_gate_t *g = gate(100 * MiB, 1, 2, 140 * MiB, 60000);
    tjob_t run, a, b, c, big;
    tjob_init(&run, 100 * MiB);
    tjob_init(&a, 50 * MiB);
    tjob_init(&b, 50 * MiB);
    tjob_init(&c, 10 * MiB);
    tjob_init(&big, 99 * MiB);
    ck_assert_int_eq(adm_submit(g, &run.super, adm_now_ms(), NULL), 0);
    wait_started(1);
    ck_assert_int_eq(adm_submit(g, &a.super, adm_now_ms(), NULL), 0);
    ck_assert_int_eq(adm_submit(g, &big.super, adm_now_ms(), NULL),
                     -ADM_E_QUEUE_FULL); /* 50+99 > 140 bytes */
    ck_assert_int_eq(adm_submit(g, &b.super, adm_now_ms(), NULL), 0);
    ck_assert_int_eq(adm_submit(g, &c.super, adm_now_ms(), NULL), -ADM_E_QUEUE_FULL); /* length 2 */
    adm_stats_t s;
    adm_stats(g, &s);
    ck_assert_uint_eq(s.rejected_queue_full, 2);
    ck_assert_uint_eq(s.queued_bytes, 100 * MiB);
    ck_assert_uint_ge(adm_retry_after(g), 1);
    ck_assert_uint_le(adm_retry_after(g), 60);
    release();
    wait_idle(g);
    adm_stats(g, &s);
    ck_assert_uint_eq(s.in_use, 0);
    ck_assert_uint_eq(s.queued_bytes, 0);
    adm_destroy(g);
}
END_TEST

START_TEST(test_adm_wait_expires_and_frees_place)
{
    adm_gate_t *g = gate(100 * MiB, 1, 4, 400 * MiB, 50);
    tjob_t run, w;
    tjob_init(&run, 100 * MiB);
    tjob_init(&w, 10 * MiB);
    ck_assert_int_eq(adm_submit(g, &run.super, adm_now_ms(), NULL), 0);
    wait_started(1);
    uint64_t t0 = adm_now_ms();
    ck_assert_int_eq(adm_submit(g, &w.super, t0, NULL), 0);
    wait_expired(1);
    ck_assert_uint_ge(adm_now_ms() - t0, 50);
    ck_assert(!atomic_load(&w.started));
    adm_stats_t s;
    adm_stats(g, &s);
    ck_assert_uint_eq(s.expired, 1);
    ck_assert_uint_eq(s.queue_len, 0);
    ck_assert_uint_eq(s.queued_bytes, 0);
    release();
    wait_idle(g);
    adm_stats(g, &s);
    ck_assert_uint_eq(s.in_use, 0);
    adm_destroy(g);
}
END_TEST

START_TEST(test_adm_cancel_waiting_job_never_runs)
{
    adm_gate_t *g = gate(100 * MiB, 1, 4, 400 * MiB, 60000);
    tjob_t run, w;
    tjob_init(&run, 100 * MiB);
    tjob_init(&w, 10 * MiB);
    ck_assert_int_eq(adm_submit(g, &run.super, adm_now_ms(), NULL), 0);
    wait_started(1);
    ck_assert_int_eq(adm_submit(g, &w.super, adm_now_ms(), NULL), 0);
    ck_assert(adm_cancel(g, &w.super));
    ck_assert(!adm_cancel(g, &w.super));   /* second cancel: already gone */
    ck_assert(!adm_cancel(g, &run.super)); /* running: cannot be cancelled */
    release();
    wait_idle(g);
    ck_assert(!atomic_load(&w.started));
    adm_stats_t s;
    adm_stats(g, &s);
    ck_assert_uint_eq(s.cancelled, 1);
    ck_assert_uint_eq(s.in_use, 0);
    ck_assert_uint_eq(s.completed, 1);
    adm_destroy(g);
}
END_TEST

START_TEST(test_adm_destroy_expires_waiting_jobs)
{
    adm_gate_t *g = gate(100 * MiB, 1, 4, 400 * MiB, 60000);
    tjob_t run, w;
    tjob_init(&run, 100 * MiB);
    tjob_init(&w, 10 * MiB);
    ck_assert_int_eq(adm_submit(g, &run.super, adm_now_ms(), NULL), 0);
    wait_started(1);
    ck_assert_int_eq(adm_submit(g, &w.super, adm_now_ms(), NULL), 0);
    release();
    adm_destroy(g);
    /* either it ran after run finished or it expired at destroy: never both, never neither */
    ck_assert_int_eq(atomic_load(&w.started) + atomic_load(&w.expired), 1);
}
END_TEST

START_TEST(test_adm_naive_runs_everything_at_once)
{
    adm_config_t c = {
        .budget = 10 * MiB, .workers = 1, .queue_max = 1, .queue_max_bytes = 1, .naive = true};
    adm_gate_t *g = adm_create(&c);
    tjob_t j[4];
    for (int i = 0; i < 4; i++) {
        tjob_init(&j[i], 100 * MiB);
        ck_assert_int_eq(adm_submit(g, &j[i].super, adm_now_ms(), NULL), 0);
    }
    wait_started(4); /* no budget, no queue: all four run concurrently */
    adm_stats_t s;
    adm_stats(g, &s);
    ck_assert_uint_eq(s.running, 4);
    ck_assert_uint_eq(s.in_use, 400 * MiB);
    release();
    adm_destroy(g); /* waits for the detached threads */
}
END_TEST

/* Bug 1: queue_max 0 ("never wait"): a job that finds a free worker and budget runs even
 * when it arrives before a worker has picked up the job ahead of it. */
START_TEST(test_adm_queue_max_zero_admits_while_workers_free)
{
    for (int round = 0; round < 20; round++) {
        setup();
        adm_gate_t *g = gate(100 * MiB, 2, 0, 0, 10000);
        tjob_t a, b, c;
        tjob_init(&a, 10 * MiB);
        tjob_init(&b, 10 * MiB);
        tjob_init(&c, 10 * MiB);
        ck_assert_int_eq(adm_submit(g, &a.super, adm_now_ms(), NULL), 0);
        ck_assert_int_eq(adm_submit(g, &b.super, adm_now_ms(), NULL), 0);
        wait_started(2);
        /* both workers busy now: a third job may not wait */
        ck_assert_int_eq(adm_submit(g, &c.super, adm_now_ms(), NULL), -ADM_E_QUEUE_FULL);
        release();
        wait_idle(g);
        adm_destroy(g);
    }
}
END_TEST

/* Bug 2: queue_timeout 0: jobs that can start at once run; only waiting ones expire. */
START_TEST(test_adm_queue_timeout_zero_runs_jobs_that_fit)
{
    adm_gate_t *g = gate(100 * MiB, 1, 8, 400 * MiB, 0);
    tjob_t a, b;
    tjob_init(&a, 10 * MiB);
    tjob_init(&b, 10 * MiB);
    ck_assert_int_eq(adm_submit(g, &a.super, adm_now_ms(), NULL), 0);
    wait_started(1);
    ck_assert(atomic_load(&a.started));
    bool queued = false;
    ck_assert_int_eq(adm_submit(g, &b.super, adm_now_ms(), &queued), 0);
    ck_assert(queued);
    wait_expired(1); /* it would have had to wait: it expires at once */
    ck_assert(!atomic_load(&b.started));
    release();
    wait_idle(g);
    adm_stats_t s;
    adm_stats(g, &s);
    ck_assert_uint_eq(s.in_use, 0);
    ck_assert_uint_eq(s.expired, 1);
    adm_destroy(g);
}
END_TEST

Suite *adm_suite(void); /* called by check_main.c */
Suite *adm_suite(void)
{
    Suite *s = suite_create("adm");
    TCase *t = tcase_create("gate");
    tcase_add_checked_fixture(t, setup, NULL);
    tcase_set_timeout(t, 20);
    tcase_add_test(t, test_adm_submit_too_big_refused_at_once);
    tcase_add_test(t, test_adm_budget_bounds_running_jobs);
    tcase_add_test(t, test_adm_fifo_large_job_not_overtaken);
    tcase_add_test(t, test_adm_queue_bounded_by_length_and_bytes);
    tcase_add_test(t, test_adm_wait_expires_and_frees_place);
    tcase_add_test(t, test_adm_cancel_waiting_job_never_runs);
    tcase_add_test(t, test_adm_destroy_expires_waiting_jobs);
    tcase_add_test(t, test_adm_naive_runs_everything_at_once);
    tcase_add_test(t, test_adm_queue_max_zero_admits_while_workers_free);
    tcase_add_test(t, test_adm_queue_timeout_zero_runs_jobs_that_fit);
    suite_add_tcase(s, t);
    return s;
}
