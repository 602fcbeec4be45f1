/* auth — write authorization (see auth.h). */
#include "server/auth.h"

#include <stdbool.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "server/conns.h"
#include "server/errors.h"

static bool is_loopback(h2o_req_t *req)
{
    struct sockaddr_storage ss;
    socklen_t len = req->conn->callbacks->get_peername(req->conn, (struct sockaddr *)&ss);
    return len != 0 && conns_is_loopback(&ss);
}

/* Constant-time comparison, so the token cannot be guessed byte by byte from timing. */
static bool token_equals(const char *a, size_t alen, const char *b, size_t blen)
{
    unsigned char diff = alen != blen;
    for (size_t i = 0; i < alen; i++)
        diff |= (unsigned char)(a[i] ^ b[i % (blen ? blen : 1)]);
    return diff == 0;
}

int auth_write(const char *token, h2o_req_t *req, const char **msg)
{
    if (token[0] == '\0') {
        if (is_loopback(req))
            return 0;
        *msg = "writes are accepted only from loopback when no write token is set";
        return ERR_AUTH_NOT_LOOPBACK;
    }
    ssize_t i = h2o_find_header(&req->headers, H2O_TOKEN_AUTHORIZATION, -1);
    if (i == -1) {
        *msg = "this server needs Authorization: Bearer <token> for writes";
        return ERR_AUTH_NO_TOKEN;
    }
    h2o_iovec_t v = req->headers.entries[i].value;
    if (v.len < 7 || strncasecmp(v.base, "Bearer ", 7) != 0 ||
        !token_equals(v.base + 7, v.len - 7, token, strlen(token))) {
        *msg = "the write token is wrong";
        return ERR_AUTH_BAD_TOKEN;
    }
    return 0;
}
