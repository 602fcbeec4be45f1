/* auth — who may write (PUT/DELETE): the Bearer token of auth.write_token when one is
 * set, else loopback clients only. Used by the originals handler and, before a body is
 * read, by connguard. And who may ask for derived images when auth.url_key is set: URLs
 * signed with ?sig=<base64url, unpadded, of HMAC-SHA256(key, path without the query)>. */
#ifndef THUMBGATE_AUTH_H
#define THUMBGATE_AUTH_H

#include <h2o.h>

/** 0 when @p req may write; else an ERR_AUTH_* code (errors.h) with *msg a sentence. */
int auth_write(const char *token, h2o_req_t *req, const char **msg);

/** Length of a URL signature: 32 bytes of HMAC-SHA256 in unpadded base64url. */
#define AUTH_SIG_LEN 43

/** The signature of @p path (@p len bytes, the URL path without its query, e.g.
 *  "/img/cat_290x290.webp") under @p key, into @p out (NUL-terminated). 0, or -1 when
 *  libcrypto fails. HMAC-SHA256 is OpenSSL's (libcrypto, linked for h2o already). */
int auth_url_sign(const char *key, const char *path, size_t len, char out[AUTH_SIG_LEN + 1]);

/** 0 when @p req (a derived URL) carries the right ?sig= for @p key (an empty key: no
 *  signing, always 0); else ERR_AUTH_BAD_SIG with *msg a sentence. The comparison
 *  takes the same time wherever the signatures differ. */
int auth_url_check(const char *key, h2o_req_t *req, const char **msg);

#endif
