/* auth — write authorization (see auth.h). */
#include "server/auth.h"

#include <stdbool.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

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

int auth_url_sign(const char *key, const char *path, size_t len, char out[AUTH_SIG_LEN + 1])
{
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int maclen = 0;
    if (HMAC(EVP_sha256(), key, (int)strlen(key), (const unsigned char *)path, len, mac, &maclen) ==
            NULL ||
        maclen != 32)
        return -1;
    unsigned char b64[48]; /* 4 * ceil(32 / 3) + NUL */
    if (EVP_EncodeBlock(b64, mac, 32) != 44)
        return -1;
    /* base64 to base64url, without the one '=' of padding */
    for (size_t i = 0; i < AUTH_SIG_LEN; i++)
        out[i] = b64[i] == '+' ? '-' : b64[i] == '/' ? '_' : (char)b64[i];
    out[AUTH_SIG_LEN] = '\0';
    return 0;
}

/* The value of the first "sig" parameter of the query of @p req; NULL when there is none. */
static const char *find_sig(h2o_req_t *req, size_t *len)
{
    if (req->query_at == SIZE_MAX)
        return NULL;
    const char *q = req->path.base + req->query_at + 1, *end = req->path.base + req->path.len;
    while (q < end) {
        const char *amp = memchr(q, '&', (size_t)(end - q)), *stop = amp ? amp : end;
        if (stop - q >= 4 && memcmp(q, "sig=", 4) == 0) {
            *len = (size_t)(stop - q - 4);
            return q + 4;
        }
        q = stop + 1;
    }
    return NULL;
}

int auth_url_check(const char *key, h2o_req_t *req, const char **msg)
{
    if (key[0] == '\0')
        return 0;
    size_t len = 0;
    const char *sig = find_sig(req, &len);
    if (sig == NULL) {
        *msg = "this server needs signed URLs: add ?sig=<base64url HMAC-SHA256 of the path>";
        return ERR_AUTH_BAD_SIG;
    }
    size_t pathlen = req->query_at != SIZE_MAX ? req->query_at : req->path.len;
    char want[AUTH_SIG_LEN + 1];
    if (auth_url_sign(key, req->path.base, pathlen, want) != 0) {
        *msg = "the signature could not be computed";
        return ERR_AUTH_BAD_SIG;
    }
    /* the length is no secret (every signature has 43 characters); the bytes are compared
     * in constant time */
    if (len != AUTH_SIG_LEN || CRYPTO_memcmp(sig, want, AUTH_SIG_LEN) != 0) {
        *msg = "the signature does not match the path";
        return ERR_AUTH_BAD_SIG;
    }
    return 0;
}
