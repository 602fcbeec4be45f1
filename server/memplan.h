/* memplan — the whole process's memory, term by term, worked out at start from the
 * config and the memory limit. Every term is a worst case that something enforces:
 *
 *   baseline      code, libvips/glib/h2o state, the threads' touched stacks
 *   image budget  sum of running image jobs' estimates (adm.c admits against it)
 *   connections   max_connections x the per-connection worst case: h2o's connection and
 *                 request pool, the input buffer's RAM part (h2o moves a buffer to its
 *                 spill file when it would reach http.upload_spill, so RAM <= half of it),
 *                 the request head h2o copies into the pool (connguard refuses a head over
 *                 limits.max_header_bytes; one read of http.socket_buffer x 2 can land
 *                 first) and a file response's read buffer
 *   bodies        request-body bytes in flight, in RAM and in spill files (page cache
 *                 until written back): limits.max_body_inflight, reserved by connguard
 *                 from the declared length before the body arrives; a body larger than
 *                 the cap is taken only when no other is in flight (so max_upload is
 *                 never refused for good), its spill pages written back by the kernel
 *   flight ring   flight.slots x one page
 *   hot results   http.hot_results: small cached results held in memory (http.h
 *                 srv__hot_read counts each copy until its last response is sent)
 *   s3            storage.backend s3 only: (storage.s3.transfers + 1) x (an easy handle
 *                 with its connection and TLS state, S3_HANDLE_BYTES, + curl's receive
 *                 and upload buffers, 2 x storage.s3.buffer) + one listing page
 *                 (S3_LIST_MAX) per transfer + the freshness table; and the transfers'
 *                 io threads (in the baseline, with every other thread)
 *   kernel        on cgroup v2 only (v2 charges socket buffers to the cgroup):
 *                 max_connections x (receive + send buffer) as the kernel sizes them
 *   slack         allocator slack: 1/20 of the image budget
 *
 * Not in the total: connections waiting in the listeners' accept queues (MEMPLAN_BACKLOG
 * per event loop; connguard holds the listener when every slot is taken and nobody can
 * be closed yet). Each is a kernel socket (~4 KiB) plus what its client sent before
 * accept, up to its receive buffer (2 x http.socket_buffer); that is kernel memory the
 * process does not hold: cgroup v1 does not charge it (without kmem.tcp accounting), v2
 * charges a socket to the cgroup when it is accepted, i.e. when it enters the kernel
 * term above. The plan reports it as "backlog" so it can be seen beside the rest.
 *
 * With memory.budget: auto the image budget is what remains of the limit after every
 * other term (less the slack), capped at memory.auto_percent of the limit. With an
 * explicit budget, a plan over the limit is an error that names the keys to lower.
 * Pure arithmetic: no I/O, so --check-config prints the same plan the server logs. */
#ifndef THUMBGATE_MEMPLAN_H
#define THUMBGATE_MEMPLAN_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "config/cfg.h"

/** Fixed parts of the plan, each measured (README "Memory model" gives the figures). */
#define MEMPLAN_BASELINE (48u << 20)   /**< idle RSS after start: 37 MiB measured, rounded up */
#define MEMPLAN_THREAD (256u << 10)    /**< touched stack and thread-local state per thread */
#define MEMPLAN_CONN_BASE (16u << 10)  /**< h2o connection + socket + request pool + ours */
#define MEMPLAN_RESPONSE (64u << 10)   /**< a file response's read buffer (64 KiB chunks) */
#define MEMPLAN_MIN_BUDGET (16u << 20) /**< an auto budget below this is an error */
#define MEMPLAN_BACKLOG 1024           /**< listen() backlog per event loop (conns.c) */
#define MEMPLAN_SOCK_KERNEL (4u << 10) /**< a kernel TCP socket without its buffers */

typedef struct memplan {
    uint64_t limit;           /**< the memory limit the plan must fit */
    const char *limit_source; /**< where it came from (borrowed) */
    bool kernel_charged;      /**< cgroup v2: socket buffers count against the limit */

    uint32_t max_connections; /**< resolved (auto worked out) */
    uint64_t max_body_inflight;
    uint64_t per_conn;        /**< worst case of one connection in process memory */
    uint64_t per_conn_kernel; /**< its socket buffers in the kernel */

    uint64_t baseline, budget, connections, bodies, flight, hot, kernel, s3, slack;
    uint64_t total;
    uint32_t backlog;        /**< connections that can wait in the accept queues */
    uint64_t backlog_kernel; /**< their kernel memory, outside the process (not in total) */
    bool budget_auto;
    bool budget_by_percent; /**< auto budget capped by memory.auto_percent */
} memplan_t;

/**
 * Works out the plan for @p cfg under @p limit bytes (from @p source; @p kernel_charged
 * on cgroup v2) with @p threads event loops and @p workers image workers. 0 on success;
 * -1 when the plan cannot fit, with a message naming the keys to lower in @p err.
 */
int memplan_compute(const cfg_t *cfg, uint64_t limit, const char *source, bool kernel_charged,
                    unsigned threads, unsigned workers, memplan_t *plan, char *err, size_t errlen);

/** Writes the plan as one JSON log line {"log":"memory_plan",...}. */
void memplan_log(const memplan_t *plan, FILE *out);

/** Writes the plan as a table with its arithmetic (for --check-config). */
void memplan_print(const memplan_t *plan, FILE *out);

#endif
