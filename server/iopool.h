/* iopool — a few threads for disk-heavy work (the write and fsync of an upload, deletes,
 * cache eviction) off the event loops. A task runs on an io thread, then finishes on the
 * event loop that submitted it, through the `done` callback its submitter owns: the pool
 * knows no handler. Memory: the tasks queued (owned by their submitters). */
#ifndef THUMBGATE_IOPOOL_H
#define THUMBGATE_IOPOOL_H

#include <h2o.h>

typedef struct iopool_task iopool_task_t;
struct iopool_task {
    h2o_multithread_message_t msg;        /**< posted to reply_to when run returns */
    h2o_multithread_receiver_t *reply_to; /**< the submitting loop's iopool receiver */
    void (*run)(iopool_task_t *task);     /**< on an io thread */
    void (*done)(iopool_task_t *task);    /**< back on the submitting loop */
    iopool_task_t *_next;
};

/** Starts @p n io threads. 0, or -1 when none could start. */
int iopool_start(unsigned n);
/** Runs the tasks already queued, then joins the threads. */
void iopool_stop(void);
/** Registers the receiver of a loop's completions (@p rx, in the loop's struct). */
void iopool_init_loop(h2o_multithread_queue_t *queue, h2o_multithread_receiver_t *rx);
/** Queues @p task; set run, done and reply_to first. */
void iopool_submit(iopool_task_t *task);
/** Runs fn(arg) on an io thread with no completion (background upkeep; best effort). */
void iopool_submit_detached(void (*fn)(void *arg), void *arg);

#endif
