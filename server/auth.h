/* auth — who may write (PUT/DELETE): the Bearer token of auth.write_token when one is
 * set, else loopback clients only. Used by the originals handler and, before a body is
 * read, by connguard. */
#ifndef THUMBGATE_AUTH_H
#define THUMBGATE_AUTH_H

#include <h2o.h>

/** 0 when @p req may write; else an ERR_AUTH_* code (errors.h) with *msg a sentence. */
int auth_write(const char *token, h2o_req_t *req, const char **msg);

#endif
