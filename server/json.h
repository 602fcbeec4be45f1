/* json — the one JSON writer of the server: error bodies, PUT replies, log lines and
 * admin answers are built with it, so every string in them is escaped the same way
 * (quotes, backslashes, control bytes and non-ASCII bytes become \uXXXX).
 * A json_t writes into a caller's fixed buffer: a string that does not fit is cut (never
 * inside an escape), the members after it are dropped, and the object still closes
 * (j.truncated tells). */
#ifndef THUMBGATE_JSON_H
#define THUMBGATE_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    char *buf;
    size_t cap, len;
    bool first, truncated;
} json_t;

/** Starts an object "{" in @p buf (cap bytes; at least 8). */
void json_begin(json_t *j, char *buf, size_t cap);
/** "key":"value" with @p len bytes of @p val escaped. */
void json_strn(json_t *j, const char *key, const char *val, size_t len);
void json_str(json_t *j, const char *key, const char *val);
void json_u64(json_t *j, const char *key, uint64_t v);
void json_i64(json_t *j, const char *key, int64_t v);
/** A number with 3 decimals (milliseconds, seconds). */
void json_fixed3(json_t *j, const char *key, double v);
/** @p thousandths / 1000 with three decimals, as json_fixed3 writes it, without printf. */
void json_milli(json_t *j, const char *key, int64_t thousandths);
void json_bool(json_t *j, const char *key, bool v);
/** Closes the object and appends "\n"; returns the length (the buffer is NUL-terminated). */
size_t json_end(json_t *j);

/** Escapes @p len bytes of @p s for a JSON string body into @p out (NUL-terminated, cut at a
 *  whole escape to fit); returns the bytes written. */
size_t json_escape(char *out, size_t cap, const char *s, size_t len);

#endif
