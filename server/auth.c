/* auth — write authorization (see auth.h). */
#include "server/auth.h"

#include <netinet/in.h>
#include <stdbool.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

static bool is_loopback(h2o_req_t *req)
{
    struct sockaddr_storage ss;
    socklen_t len = req->conn->callbacks->get_peername(req->conn, (struct sockaddr *)&ss);
    if (len == 0)
        return false;
    if (ss.ss_family == AF_INET)
        return (ntohl(((struct sockaddr_in *)&ss)->sin_addr.s_addr) >> 24) == 127;
    if (ss.ss_family == AF_INET6) {
        const struct in6_addr *a = &((struct sockaddr_in6 *)&ss)->sin6_addr;
        if (IN6_IS_ADDR_LOOPBACK(a))
            return true;
        return IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127;
    }
    return false;
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
        return 403;
    }
    ssize_t i = h2o_find_header(&req->headers, H2O_TOKEN_AUTHORIZATION, -1);
    if (i == -1) {
        *msg = "this server needs Authorization: Bearer <token> for writes";
        return 401;
    }
    h2o_iovec_t v = req->headers.entries[i].value;
    if (v.len < 7 || strncasecmp(v.base, "Bearer ", 7) != 0 ||
        !token_equals(v.base + 7, v.len - 7, token, strlen(token))) {
        *msg = "the write token is wrong";
        return 403;
    }
    return 0;
}
