/* charts — /debug/charts on the admin listener: one self-contained HTML page that polls
 * /metrics on the same listener every second and draws live memory charts in the browser
 * (RSS, budget, the memory plan, queue, connections, allocator, jobs and refusals). The
 * page is server/charts.html, compiled in by the Makefile; the server only sends it. */
#ifndef THUMBGATE_CHARTS_H
#define THUMBGATE_CHARTS_H

#include <stdio.h>

/** Writes the page (text/html; charset=utf-8) to @p o. The bytes are static and
 *  constant: serving costs one copy of the page (about 20 KiB) per request, nothing kept. */
void charts_write(FILE *o);

#endif
