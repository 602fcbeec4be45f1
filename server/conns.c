/* conns — listeners, accept with the limit, answers on the socket (see conns.h). */
#include "server/conns.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "server/connguard.h"
#include "server/errors.h"
#include "server/json.h"
#include "server/memplan.h"

struct conns {
    h2o_context_t *ctx;
    h2o_accept_ctx_t *accept_ctx;
    h2o_socket_t *listener;
    conns_conf_t conf;
};

conns_t *conns_create(h2o_context_t *ctx, h2o_accept_ctx_t *accept_ctx, const conns_conf_t *conf)
{
    conns_t *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->ctx = ctx;
    c->accept_ctx = accept_ctx;
    c->conf = *conf;
    return c;
}

void conns_destroy(conns_t *c)
{
    if (c == NULL)
        return;
    free(c);
}

static void on_accept(h2o_socket_t *listener, const char *err)
{
    conns_t *c = listener->data;
    if (err != NULL)
        return;
    for (int i = 0; i < 16; i++) {
        /* every slot taken and nobody to close yet: the listener is off the loop and new
         * connections wait in the accept queue (MEMPLAN_BACKLOG) until connguard starts it */
        if (!connguard_admit(c->conf.guard, c->conf.loop, listener, on_accept))
            return;
        h2o_socket_t *sock = h2o_evloop_socket_accept(listener);
        if (sock == NULL)
            break;
        if (connguard_accept(c->conf.guard, sock, c->conf.loop))
            h2o_accept(c->accept_ctx, sock);
    }
}

void conns_listen(conns_t *c, int fd)
{
    c->listener = h2o_evloop_socket_create(c->ctx->loop, fd, H2O_SOCKET_FLAG_DONT_READ);
    c->listener->data = c;
    h2o_socket_read_start(c->listener, on_accept);
}

void conns_stop_listening(conns_t *c)
{
    if (c->listener == NULL)
        return;
    connguard_forget_listener(c->conf.guard, c->conf.loop);
    h2o_socket_read_stop(c->listener);
    h2o_socket_close(c->listener);
    c->listener = NULL;
}

static void on_plain_accept(h2o_socket_t *listener, const char *err)
{
    h2o_socket_t *sock;
    if (err == NULL && (sock = h2o_evloop_socket_accept(listener)) != NULL)
        h2o_accept(listener->data, sock);
}

h2o_socket_t *conns_listen_plain(h2o_evloop_t *loop, int fd, h2o_accept_ctx_t *accept_ctx)
{
    h2o_socket_t *l = h2o_evloop_socket_create(loop, fd, H2O_SOCKET_FLAG_DONT_READ);
    l->data = accept_ctx;
    h2o_socket_read_start(l, on_plain_accept);
    return l;
}

static h2o_socket_t *sock_of(h2o_req_t *req)
{
    return req->conn->callbacks->get_socket ? req->conn->callbacks->get_socket(req->conn) : NULL;
}

/* Bytes the kernel holds for @p sock that the loop has not read yet. */
static int unread_in_kernel(h2o_socket_t *sock)
{
    int n = 0;
    return ioctl(h2o_socket_get_fd(sock), FIONREAD, &n) == 0 ? n : 0;
}

static int is_busy(h2o_req_t *req, void *cbdata)
{
    h2o_socket_t *sock = sock_of(req);
    /* a connection with a parsed request or unread bytes, in h2o's buffer or still in the
     * kernel's (accepted, not yet read: closing it would reset a client mid-upload), is
     * mid-request */
    return req->input.method.base != NULL ||
           (sock != NULL && (sock->input->size != 0 || unread_in_kernel(sock) > 0));
}

bool conns_all_idle(const conns_t *c)
{
    return c->ctx->globalconf->http1.callbacks.foreach_request(c->ctx, is_busy, NULL) == 0;
}

/* --- answers on the socket ----------------------------------------------------------- */

static const char *reason_phrase(int status)
{
    switch (status) {
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 408:
        return "Request Timeout";
    case 431:
        return "Request Header Fields Too Large";
    case 503:
        return "Service Unavailable";
    case 507:
        return "Insufficient Storage";
    default:
        return "Error";
    }
}

void conns_answer(int fd, err_domain_t domain, int code, const char *msg)
{
    err_http_t h = errors_http(domain, code);
    char body[512], res[1024];
    json_t j;
    json_begin(&j, body, sizeof(body));
    json_str(&j, "error", h.code);
    json_str(&j, "message", msg);
    size_t bl = json_end(&j);
    int n =
        snprintf(res, sizeof(res),
                 "HTTP/1.1 %d %s\r\nServer: thumbgate\r\nContent-Type: application/json\r\n"
                 "Content-Length: %zu\r\nConnection: close\r\n%s%s\r\n%s",
                 h.status, reason_phrase(h.status), bl, h.status == 503 ? "Retry-After: 1\r\n" : "",
                 h.status == 401 ? "WWW-Authenticate: Bearer\r\n" : "", body);
    if (n > 0 && (size_t)n < sizeof(res)) {
        ssize_t w = send(fd, res, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT);
        (void)w; /* best effort: the connection ends either way */
    }
}

/* --- addresses and listening sockets ----------------------------------------------------- */

int conns_parse_hostport(const char *s, struct sockaddr_storage *ss, socklen_t *len)
{
    char host[128];
    const char *colon = strrchr(s, ':');
    if (colon == NULL || (size_t)(colon - s) >= sizeof(host))
        return -1;
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = '\0';
    char *h = host;
    if (h[0] == '[') { /* [::1]:8080 */
        h++;
        h[strcspn(h, "]")] = '\0';
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_NUMERICSERV},
                    *res;
    if (getaddrinfo(*h ? h : NULL, colon + 1, &hints, &res) != 0)
        return -1;
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    *len = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

/* SO_REUSEPORT would let a second thumbgate (or anything of the same user) share the
 * port silently and take half the traffic: bind once without it to prove the address
 * is free before the per-thread listeners join it. */
int conns_probe_free(const struct sockaddr_storage *ss, socklen_t len)
{
    int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0), ret = -1;
    if (fd < 0)
        return -1;
    int on = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on)); /* TIME_WAIT leftovers are fine */
    if (bind(fd, (const struct sockaddr *)ss, len) == 0)
        ret = 0;
    close(fd);
    return ret;
}

bool conns_port_is_zero(const struct sockaddr_storage *ss)
{
    return ss->ss_family == AF_INET6 ? ((const struct sockaddr_in6 *)ss)->sin6_port == 0
                                     : ((const struct sockaddr_in *)ss)->sin_port == 0;
}

int conns_open_listener(struct sockaddr_storage *ss, socklen_t len)
{
    int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -1;
    int on = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof(on));
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
    if (bind(fd, (struct sockaddr *)ss, len) != 0 || listen(fd, MEMPLAN_BACKLOG) != 0) {
        close(fd);
        return -1;
    }
    /* port 0: the first bind picks the port, the other threads join it */
    socklen_t l = len;
    getsockname(fd, (struct sockaddr *)ss, &l);
    return fd;
}

bool conns_is_loopback(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET)
        return (ntohl(((const struct sockaddr_in *)ss)->sin_addr.s_addr) >> 24) == 127;
    if (ss->ss_family == AF_INET6) {
        const struct in6_addr *a = &((const struct sockaddr_in6 *)ss)->sin6_addr;
        return IN6_IS_ADDR_LOOPBACK(a) || (IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127);
    }
    return false;
}

void conns_addr_str(const struct sockaddr_storage *ss, char *out, size_t len)
{
    char host[INET6_ADDRSTRLEN] = "?";
    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const void *)ss;
        inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof(host));
        snprintf(out, len, "[%s]:%u", host, ntohs(a->sin6_port));
    } else {
        const struct sockaddr_in *a = (const void *)ss;
        inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host));
        snprintf(out, len, "%s:%u", host, ntohs(a->sin_port));
    }
}
