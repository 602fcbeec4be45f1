/* route — request path to key, and the derived-image suffix grammar of DESIGN.md:
 * <stem>_<W>x<H>.<ext>, _<W>x<H>c., _<W>x., _x<H>., and <stem>.<ext> (conversion).
 * Pure functions: no I/O, no HTTP. */
#ifndef THUMBGATE_ROUTE_H
#define THUMBGATE_ROUTE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "imgproc/imgproc.h"

#define ROUTE_KEY_MAX 512
#define ROUTE_DIM_MAX 100000u /**< larger side values are a bad request, not a job */

enum {
    ROUTE_OK = 0,
    ROUTE_E_BADKEY = 1,  /**< not a valid key (charset, length, dot segments, empty segment) */
    ROUTE_E_BADSIZE = 2, /**< suffix looks like a size but is zero or too large */
};

typedef struct {
    char key[ROUTE_KEY_MAX + 1]; /**< the key, without the leading '/' and query */
    size_t keylen;
    bool derived;                 /**< the last segment matched the derived grammar */
    char stem[ROUTE_KEY_MAX + 1]; /**< for derived: the source key without its extension */
    imgproc_job_t job;            /**< for derived: op, box and output format */
    char variant[48]; /**< for derived: canonical name, e.g. "290x290c.webp", "full.png" */
} route_t;

/**
 * Parses a request path ("/a/b.jpg?x=1": query ignored) into @p out. Returns 0 or
 * -ROUTE_E_BADKEY. Does not look at the derived grammar.
 */
int route_parse_key(const char *path, size_t len, route_t *out);

/**
 * Applies the derived grammar to @p rt->key. Returns 0 (rt->derived tells whether it
 * matched) or -ROUTE_E_BADSIZE for a size-shaped suffix with a zero/overlong side.
 */
int route_parse_derived(route_t *rt);

/** True when @p seg (len bytes) is a valid key segment. */
bool route_segment_is_valid(const char *seg, size_t len);

#endif
