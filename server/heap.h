/* heap — the allocator room. thumbgate runs on jemalloc (Debian libjemalloc2, built with
 * profiling; its settings, the malloc_conf string, are in imgproc/imgproc.c beside the
 * glibc policy); this room holds its statistics for /metrics, heap profiles on demand (/debug/heap)
 * and the optional ring of periodic profiles on disk (heap_ring.*), which survives a kill.
 *
 * A build without THUMBGATE_JEMALLOC (the sanitizer builds: ASan owns malloc) keeps the
 * same calls: heap_available() is false, the others answer -ENOTSUP and do nothing.
 *
 * A profile is jemalloc's text heap profile (sampled allocations by call stack, plus
 * /proc/self/maps), read by `jeprof --text|--svg <thumbgate binary> <profile>`. */
#ifndef THUMBGATE_HEAP_H
#define THUMBGATE_HEAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/cfg.h"

/** jemalloc's figures, bytes (stats.*, refreshed by heap_stats). */
typedef struct {
    uint64_t allocated; /**< in live allocations: what the program holds */
    uint64_t active;    /**< in pages holding live allocations (>= allocated) */
    uint64_t resident;  /**< in resident pages of the allocator: active, dirty unused pages,
                             metadata (>= active; an upper bound of its share of RSS) */
    uint64_t retained;  /**< address space kept for reuse but given back to the kernel (not RSS) */
    uint64_t mapped;    /**< in mapped extents (>= active) */
    uint64_t metadata;  /**< the allocator's own structures */
} heap_stats_t;

/** True when jemalloc is the allocator of this build. */
bool heap_available(void);

/** True when heap profiles can be taken (jemalloc, started with prof:true). */
bool heap_profiling(void);

/** Refreshes jemalloc's statistics (the `epoch` mallctl, which merges the per-arena
 *  counters) and fills @p out. 0, or -ENOTSUP. */
int heap_stats(heap_stats_t *out);

/** Writes a heap profile to @p path (jemalloc creates or truncates it). 0, -ENOTSUP when
 *  profiling is off, or -errno. */
int heap_dump(const char *path);

/** Takes a profile into a temporary file in @p dir, reads it back and removes the file.
 *  On success *@p buf (caller frees with free) holds *@p len bytes. 0, -ENOTSUP, -EFBIG
 *  (over 64 MiB), or -errno. */
int heap_dump_read(const char *dir, char **buf, size_t *len);

/* ---- the ring: a profile every interval, the newest `keep` kept, within max_disk ---- */

typedef struct {
    char dir[1100];       /**< where the profiles go: heap.<unix ms>.<host>.<pid>.heap */
    uint64_t interval_ms; /**< 0 = no ring */
    uint32_t keep;        /**< profiles kept at most (all runs together) */
    uint64_t max_disk;    /**< bytes the kept profiles may take together */
} heap_ring_opts_t;

typedef struct {
    uint64_t dumps;   /**< profiles written */
    uint64_t failed;  /**< profiles that could not be written, or alone exceeded max_disk */
    uint64_t files;   /**< profiles on disk after the last pass */
    uint64_t bytes;   /**< their size */
    uint64_t last_ms; /**< duration of the last dump and prune, milliseconds */
} heap_ring_stats_t;

/** Fills @p o from the config's heap_ring.* keys (dir "" = <storage.root>/heap). */
void heap_ring_opts_init(heap_ring_opts_t *o, const cfg_t *cfg);

/** Starts the process's one ring thread (the profile is the whole process's). 0 when
 *  started or when the ring is off (interval 0); -ENOTSUP without profiling; -errno when
 *  the directory or the thread cannot be made (@p err says which). */
int heap_ring_start(const heap_ring_opts_t *o, char *err, size_t errlen);

/** Stops and joins the ring thread; the profiles stay on disk. Safe when not started. */
void heap_ring_stop(void);

/** The ring's counters (zeros when it never ran). */
void heap_ring_stats(heap_ring_stats_t *out);

/** Deletes the oldest profiles in @p dir (by the time in their names, whichever run or node
 *  wrote them) until at most @p keep remain and they take at most @p max_disk bytes, and
 *  temporary files over an hour old (a dump cut by a kill); fills @p files and @p bytes
 *  with what is left. The ring calls it after every dump. 0 or -errno. */
int heap_ring_prune(const char *dir, uint32_t keep, uint64_t max_disk, uint64_t *files,
                    uint64_t *bytes);

#endif
