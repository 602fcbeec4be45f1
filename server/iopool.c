/* iopool — the io threads (see iopool.h). */
#include "server/iopool.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>

#define IOPOOL_MAX 8

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    iopool_task_t *head, *tail;
    pthread_t threads[IOPOOL_MAX];
    unsigned started;
    bool stop;
} io = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

struct detached {
    iopool_task_t super;
    void (*fn)(void *arg);
    void *arg;
};

static void *io_main(void *unused)
{
    pthread_mutex_lock(&io.mu);
    for (;;) {
        while (io.head == NULL && !io.stop)
            pthread_cond_wait(&io.cv, &io.mu);
        if (io.head == NULL)
            break;
        iopool_task_t *t = io.head;
        io.head = t->_next;
        if (io.head == NULL)
            io.tail = NULL;
        pthread_mutex_unlock(&io.mu);
        t->run(t);
        if (t->reply_to != NULL)
            h2o_multithread_send_message(t->reply_to, &t->msg);
        else
            free(t); /* detached: nobody waits for it */
        pthread_mutex_lock(&io.mu);
    }
    pthread_mutex_unlock(&io.mu);
    return NULL;
}

int iopool_start(unsigned n)
{
    io.stop = false;
    for (unsigned i = 0; i < n && io.started < IOPOOL_MAX; i++)
        io.started += pthread_create(&io.threads[io.started], NULL, io_main, NULL) == 0;
    return io.started > 0 ? 0 : -1;
}

void iopool_stop(void)
{
    pthread_mutex_lock(&io.mu);
    io.stop = true;
    pthread_cond_broadcast(&io.cv);
    pthread_mutex_unlock(&io.mu);
    for (unsigned i = 0; i < io.started; i++)
        pthread_join(io.threads[i], NULL);
    io.started = 0;
}

static void on_done(h2o_multithread_receiver_t *rx, h2o_linklist_t *messages)
{
    while (!h2o_linklist_is_empty(messages)) {
        h2o_multithread_message_t *m =
            H2O_STRUCT_FROM_MEMBER(h2o_multithread_message_t, link, messages->next);
        h2o_linklist_unlink(&m->link);
        iopool_task_t *t = H2O_STRUCT_FROM_MEMBER(iopool_task_t, msg, m);
        t->done(t);
    }
}

void iopool_init_loop(h2o_multithread_queue_t *queue, h2o_multithread_receiver_t *rx)
{
    h2o_multithread_register_receiver(queue, rx, on_done);
}

void iopool_submit(iopool_task_t *task)
{
    task->_next = NULL;
    pthread_mutex_lock(&io.mu);
    if (io.tail)
        io.tail->_next = task;
    else
        io.head = task;
    io.tail = task;
    pthread_cond_signal(&io.cv);
    pthread_mutex_unlock(&io.mu);
}

static void run_detached(iopool_task_t *t)
{
    struct detached *d = (void *)t;
    d->fn(d->arg);
}

void iopool_submit_detached(void (*fn)(void *arg), void *arg)
{
    struct detached *d = calloc(1, sizeof(*d));
    if (d == NULL)
        return; /* best effort: the next caller tries again */
    d->super.run = run_detached;
    d->fn = fn;
    d->arg = arg;
    iopool_submit(&d->super);
}
