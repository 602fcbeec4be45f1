/* tgconns — holds many bad client connections open against one server (loopback):
 *   idle    connects and sends nothing;
 *   slow    sends a request header one byte every --slow-ms, never finishing it;
 *   noread  sends a complete GET for a large file with a tiny receive buffer and never
 *           reads the response.
 * Connections are opened at --rate per second, then held until --hold seconds after the
 * start. Each one is watched (poll, POLLRDHUP) for the server closing it. At the end it
 * closes everything and prints KEY=VALUE lines per kind: opened, refused (connect
 * failed or closed before anything was sent), closed by the server, median and max
 * time until the server closed it, and still open.
 *
 *   tgconns HOST:PORT [--idle N] [--slow N] [--noread N] [--path /KEY] [--hold S]
 *           [--rate N] [--slow-ms MS] */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { IDLE, SLOW, NOREAD, NKIND };
static const char *kind_name[NKIND] = {"idle", "slow", "noread"};

typedef struct {
    int fd;
    int kind;
    double opened, closed; /* seconds since start; closed < 0: still open */
    size_t sent;           /* bytes of the request sent so far (slow) */
    double next_send;
    bool connected;
} conn_t;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: tgconns HOST:PORT [--idle N] [--slow N] [--noread N] [--path /KEY] [--hold S] [--rate N] "
                        "[--slow-ms MS]\n");
        return 2;
    }
    char host[64];
    const char *c = strrchr(argv[1], ':');
    if (c == NULL || (size_t)(c - argv[1]) >= sizeof(host))
        return 2;
    memcpy(host, argv[1], (size_t)(c - argv[1]));
    host[c - argv[1]] = 0;
    int port = atoi(c + 1);
    long want[NKIND] = {0, 0, 0};
    const char *path = "/";
    double hold = 20, rate = 2000, slow_ms = 1000;
    for (int i = 2; i + 1 < argc; i += 2) {
        const char *a = argv[i], *v = argv[i + 1];
        if (!strcmp(a, "--idle"))
            want[IDLE] = atol(v);
        else if (!strcmp(a, "--slow"))
            want[SLOW] = atol(v);
        else if (!strcmp(a, "--noread"))
            want[NOREAD] = atol(v);
        else if (!strcmp(a, "--path"))
            path = v;
        else if (!strcmp(a, "--hold"))
            hold = atof(v);
        else if (!strcmp(a, "--rate"))
            rate = atof(v);
        else if (!strcmp(a, "--slow-ms"))
            slow_ms = atof(v);
    }
    long n = want[IDLE] + want[SLOW] + want[NOREAD];
    if (n <= 0 || n > 60000 || hold > 3600)
        return 2;
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    char noreq[600], slowreq[600];
    snprintf(noreq, sizeof(noreq), "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: tgconns-noread\r\n\r\n", path);
    /* a header that never ends: after the fixed part, one more 'a' every slow_ms */
    snprintf(slowreq, sizeof(slowreq), "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ", path);
    size_t slowlen = strlen(slowreq);

    conn_t *cs = calloc((size_t)n, sizeof(*cs));
    struct pollfd *pf = calloc((size_t)n, sizeof(*pf));
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port)};
    inet_pton(AF_INET, host, &addr.sin_addr);
    /* interleave the kinds so each is spread over the whole opening phase */
    long made[NKIND] = {0, 0, 0}, opened = 0;
    double t0 = now_s();
    char sink[65536];
    double last_report = 0;
    for (;;) {
        double t = now_s() - t0;
        if (t >= hold)
            break;
        /* open the connections due by now */
        while (opened < n && opened < (long)(t * rate) + 1) {
            int k = (int)(opened % 3);
            for (int tries = 0; tries < 3 && made[k] >= want[k]; tries++)
                k = (k + 1) % 3;
            conn_t *x = &cs[opened++];
            x->kind = k;
            made[k]++;
            x->opened = t;
            x->closed = -1;
            x->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
            if (x->fd < 0) {
                x->closed = t;
                continue;
            }
            if (k == NOREAD) {
                int small = 4096;
                setsockopt(x->fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
            }
            if (connect(x->fd, (struct sockaddr *)&addr, sizeof(addr)) != 0 && errno != EINPROGRESS) {
                close(x->fd);
                x->fd = -1;
                x->closed = t;
                continue;
            }
            x->next_send = t;
        }
        /* poll every open connection */
        long np = 0;
        for (long i = 0; i < opened; i++) {
            conn_t *x = &cs[i];
            if (x->fd < 0 || x->closed >= 0)
                continue;
            pf[np].fd = x->fd;
            pf[np].events = POLLRDHUP | (x->kind == NOREAD ? 0 : POLLIN);
            if (!x->connected || (x->kind == SLOW && t >= x->next_send) || (x->kind == NOREAD && x->sent == 0))
                pf[np].events |= POLLOUT;
            pf[np].revents = 0;
            np++;
        }
        if (np > 0)
            poll(pf, (nfds_t)np, 20);
        else {
            struct timespec ts = {0, 20 * 1000000};
            nanosleep(&ts, NULL);
        }
        t = now_s() - t0;
        long j = 0;
        for (long i = 0; i < opened && j < np; i++) {
            conn_t *x = &cs[i];
            if (x->fd < 0 || x->closed >= 0)
                continue;
            short re = pf[j++].revents;
            if (re & (POLLERR | POLLHUP | POLLRDHUP)) {
                x->closed = t;
                continue;
            }
            if (re & POLLIN) { /* idle/slow: the server answered (408, 400); read it and wait for the close */
                ssize_t r = read(x->fd, sink, sizeof(sink));
                if (r == 0 || (r < 0 && errno != EAGAIN)) {
                    x->closed = t;
                    continue;
                }
            }
            if (re & POLLOUT) {
                x->connected = true;
                if (x->kind == NOREAD && x->sent == 0) {
                    ssize_t w = write(x->fd, noreq, strlen(noreq));
                    if (w > 0)
                        x->sent = (size_t)w;
                } else if (x->kind == SLOW && t >= x->next_send) {
                    const char *b = x->sent < slowlen ? slowreq + x->sent : "a";
                    if (write(x->fd, b, 1) == 1)
                        x->sent++;
                    x->next_send = t + slow_ms / 1000.0;
                }
            }
        }
        if (t - last_report >= 5) {
            last_report = t;
            long open_now = 0;
            for (long i = 0; i < opened; i++)
                open_now += cs[i].fd >= 0 && cs[i].closed < 0;
            fprintf(stderr, "  [conns] %.0fs: %ld opened, %ld still open\n", t, opened, open_now);
        }
    }
    double *d = malloc((size_t)n * sizeof(double));
    for (int k = 0; k < NKIND; k++) {
        long op = 0, refused = 0, closed = 0, still = 0, nd = 0;
        for (long i = 0; i < opened; i++) {
            conn_t *x = &cs[i];
            if (x->kind != k)
                continue;
            op++;
            if (x->fd < 0 || (!x->connected && x->closed >= 0) ||
                (x->closed >= 0 && x->closed - x->opened < 0.05 && x->sent == 0))
                refused++;
            else if (x->closed >= 0) {
                closed++;
                d[nd++] = x->closed - x->opened;
            } else
                still++;
        }
        qsort(d, (size_t)nd, sizeof(double), cmp_d);
        printf("%s_opened=%ld\n%s_refused=%ld\n%s_closed_by_server=%ld\n%s_still_open=%ld\n", kind_name[k], op,
               kind_name[k], refused, kind_name[k], closed, kind_name[k], still);
        printf("%s_close_p50_s=%.1f\n%s_close_max_s=%.1f\n", kind_name[k], nd ? d[nd / 2] : -1, kind_name[k],
               nd ? d[nd - 1] : -1);
    }
    for (long i = 0; i < opened; i++)
        if (cs[i].fd >= 0)
            close(cs[i].fd);
    return 0;
}
