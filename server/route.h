/* route — request path to key, and the derived-image suffix grammar of DESIGN.md:
 * <stem>_<W>x<H>.<ext>, _<W>x<H>c. (cover), _<W>x<H>s. (smart crop), _<W>x., _x<H>.,
 * each optionally with a device pixel ratio before the extension (_<W>x<H>@2x.<ext>), the
 * extension "auto" (format from Accept, chosen by the caller), <stem>.<ext> (conversion)
 * and <stem>@<preset>. Pure functions: no I/O, no HTTP. */
#ifndef THUMBGATE_ROUTE_H
#define THUMBGATE_ROUTE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "imgproc/imgproc.h"

#define ROUTE_KEY_MAX 512
#define ROUTE_DIM_MAX 100000u /**< larger side values are a bad request, not a job */
#define ROUTE_DPR_MAX 4u      /**< @1x .. @4x */
#define ROUTE_PRESET_MAX 32   /**< longest preset name ([A-Za-z0-9_-]) */

enum {
    ROUTE_OK = 0,
    ROUTE_E_BADKEY = 1,  /**< not a valid key (charset, length, dot segments, empty segment) */
    ROUTE_E_BADSIZE = 2, /**< suffix looks like a size but is zero or too large, or a bad
                              pixel ratio (@0x, @9x, @x) */
};

typedef struct {
    char key[ROUTE_KEY_MAX + 1]; /**< the key, without the leading '/' and query */
    size_t keylen;
    bool at;      /**< the last segment holds an '@' (a preset or a pixel ratio): never a
                       key that can be stored, only requested */
    bool derived; /**< the last segment matched the derived grammar */
    char stem[ROUTE_KEY_MAX + 1];      /**< for derived: the source key without its extension */
    imgproc_job_t job;                 /**< for derived: op, box (pixel ratio applied), format
                                            (UNKNOWN for .auto and presets) */
    uint32_t base_w, base_h;           /**< for derived: the box as written, before the ratio */
    uint32_t dpr;                      /**< for derived: the pixel ratio, 1..ROUTE_DPR_MAX */
    bool auto_fmt;                     /**< for derived: ".auto", the caller picks the format */
    char preset[ROUTE_PRESET_MAX + 1]; /**< for derived: <stem>@<preset>; job not filled */
    char variant[48]; /**< for derived: canonical name, e.g. "290x290c.webp", "full.png";
                           empty for .auto and presets until route_variant() is called */
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

/**
 * The canonical cache name of @p job into @p out: "290x290c.webp", "290x290s_q70.jpg",
 * "290x.png", "x150.jpg", "full.webp" (the box after the pixel ratio, so _290x290@2x and
 * _580x580 share one result). 0, or -1 when the format has no name or @p n is too small.
 */
int route_variant(const imgproc_job_t *job, char *out, size_t n);

/**
 * The q-value (0..1000) an Accept header value (@p len bytes) gives the media type @p type
 * ("image/webp") by an entry that names it exactly; -1 when no entry does (wildcards
 * such as image/ * or * / * are not counted: they do not say the client decodes WebP or
 * AVIF). Malformed q-values count as 0. Case-insensitive.
 */
int route_accept_q(const char *accept, size_t len, const char *type);

/** True when @p seg (len bytes) is a valid key segment. */
bool route_segment_is_valid(const char *seg, size_t len);

#endif
