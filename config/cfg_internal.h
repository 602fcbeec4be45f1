/* cfg internals shared with tests/check_cfg.c: a view of the row table and a loader
 * that also says where each key was set. Not for the rest of the server. */
#ifndef THUMBGATE_CFG_INTERNAL_H
#define THUMBGATE_CFG_INTERNAL_H

#include <stddef.h>

#include "config/cfg.h"

/** Number of rows in the config table (= keys). */
size_t cfg__row_count(void);

/** Key path of row @p i ("memory.budget"); static storage. */
const char *cfg__row_key(size_t i);

/** Writes the environment variable name of row @p i ("THUMBGATE_MEMORY_BUDGET") into
 * @p buf; returns 0, or -1 when @p n is too small. */
int cfg__row_env(size_t i, char *buf, size_t n);

/**
 * cfg_load_string on @p len bytes. When @p file_lines is not NULL it must hold
 * cfg__row_count() entries; entry i receives the line where the YAML text set row i
 * (0 = not set by the text: default or environment), on success and on failure.
 */
const cfg_t *cfg__load_buffer(const char *yaml, size_t len, const char *name,
                              char *const *envp, FILE *errs, unsigned *file_lines);

#endif
