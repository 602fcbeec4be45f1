/* flight — the memory flight recorder: every flight.interval a snapshot (time, RSS,
 * budget in use, queue, every in-flight job with its estimate and elapsed time) goes
 * into a fixed-size ring in a preallocated file written in place, so it costs no
 * growing memory or disk and survives a SIGKILL (the page cache belongs to the kernel).
 * `thumbgate flight FILE` reads it back, newest first. */
#ifndef THUMBGATE_FLIGHT_H
#define THUMBGATE_FLIGHT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

struct srv;
typedef struct flight flight_t;

#define FLIGHT_MAX_JOBS 24

/** Opens (creating and preallocating) the ring named by the config. NULL on failure. */
flight_t *flight_open(struct srv *srv, char *err, size_t errlen);
/** Accepts NULL. */
void flight_close(flight_t *f);
/** Called often (every 100 ms) from one loop; writes a snapshot when the interval has passed. */
void flight_tick(flight_t *f, uint64_t now_ms);
/** Registers / unregisters an in-flight job (any thread; @p id is an opaque pointer). */
void flight_job_begin(flight_t *f, const void *id, const char *what, uint64_t estimate);
void flight_job_end(flight_t *f, const void *id);

/**
 * Prints the ring at @p path, newest snapshot first, at most @p max snapshots, as text
 * or (json) a JSON array. 0, or -1 with a message on stderr when the file is not a ring.
 */
int flight_dump(const char *path, FILE *out, bool json, unsigned max);

#endif
