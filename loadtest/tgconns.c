/* tgconns — holds many bad client connections open against one server (loopback):
 *   idle     connects and sends nothing;
 *   slow     sends a request header one byte every --slow-ms, never finishing it;
 *   noread   sends a complete GET for a large file with a tiny receive buffer and never
 *            reads the response;
 *   partial  sends a PUT head with a Content-Length from --sizes (round robin over the
 *            connections), then --frac of the body, then stalls: fast (as fast as the
 *            socket takes it) or, with --trickle B, B bytes a second per connection;
 *   hdr      sends a GET whose header block has the shape COUNTxSIZE from --hdr-shapes
 *            (COUNT headers with SIZE-byte values, round robin), all but the final blank
 *            line, then stalls (a header the server has to hold).
 * Connections are opened at --rate per second, then held until --hold seconds after the
 * start (or until SIGINT/SIGTERM). Each one is watched (poll, POLLRDHUP) for the server
 * answering or closing it. At the end it closes everything and prints KEY=VALUE lines per
 * kind: opened, refused (connect failed or closed before anything was sent), closed by
 * the server, median and max time until the server closed it, still open; per class of
 * partial and hdr (one class per size or shape): opened, bytes sent, the statuses the
 * server answered with, closed, still open; and the client's own peak RSS.
 *
 * Its own bounds (it runs on the same machine as the server): memory is O(connections)
 * (one small struct each) plus one 64 KiB static body buffer shared by every connection;
 * partial connections cap their kernel send buffer at 64 KiB (SO_SNDBUF); at most 60000
 * connections and 3600 s; it only connects to the address it is given.
 *
 *   tgconns HOST:PORT [--idle N] [--slow N] [--noread N] [--partial N] [--hdr N]
 *           [--path /KEY] [--hold S] [--rate N] [--slow-ms MS]
 *           [--sizes B,B,...] [--frac F] [--trickle BYTES_PER_S] [--put-prefix /PFX]
 *           [--hdr-shapes CxS,CxS,...] */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { IDLE, SLOW, NOREAD, PARTIAL, HDR, NKIND };
static const char *kind_name[NKIND] = {"idle", "slow", "noread", "partial", "hdr"};

#define MAXCLASS 32
#define HEAD_MAX 600
#define LINE_PFX 13 /* strlen("X-Fill-0000: ") */

typedef struct {
    int fd;
    unsigned char kind, cls;
    bool connected;
    short status;          /* first status line the server answered with, 0: none */
    double opened, closed; /* seconds since start; closed < 0: still open */
    uint64_t sent;         /* bytes sent so far (head + body for partial) */
    uint64_t target;       /* bytes to send in all before stalling (partial, hdr) */
    double next_send;
    char rbuf[16]; /* first bytes of the answer, for its status */
    unsigned char rlen;
} conn_t;

typedef struct {
    uint64_t size;       /* partial: Content-Length */
    unsigned cnt, hsize; /* hdr: header count and value size */
    long opened, closed, still, answered[6];
    short codes[8];
    long code_n[8];
    uint64_t sent;
} class_t;

static volatile sig_atomic_t stop;
static void on_sig(int s)
{
    (void)s;
    stop = 1;
}

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

static class_t pclass[MAXCLASS], hclass[MAXCLASS];
static int npclass, nhclass;
static const char *put_prefix = "/adv/p";
static const char *path = "/";
static double frac = 0.96;
static double trickle; /* bytes a second per partial connection; 0: fast */
static char body[65536];
static char fill[8192];

/* the fixed head of connection @p i of kind @p k (class c) into @p out; its length */
static size_t head_of(const conn_t *x, long i, char *out, size_t cap)
{
    int n = 0;
    switch (x->kind) {
    case NOREAD:
        n = snprintf(out, cap,
                     "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: tgconns-noread\r\n\r\n",
                     path);
        break;
    case SLOW:
        n = snprintf(out, cap, "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ", path);
        break;
    case PARTIAL:
        n = snprintf(out, cap,
                     "PUT %s%ld.jpg HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: tgconns-partial\r\n"
                     "Content-Type: image/jpeg\r\nContent-Length: %llu\r\n\r\n",
                     put_prefix, i, (unsigned long long)pclass[x->cls].size);
        break;
    case HDR:
        n = snprintf(out, cap, "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: tgconns-hdr\r\n",
                     path);
        break;
    }
    return n > 0 && (size_t)n < cap ? (size_t)n : 0;
}

/* Writes what connection @p x has to send now; false when the socket failed. The bytes
 * after the head come from the shared buffers, so nothing per connection is allocated:
 * partial: head, then the body (a JPEG SOI, then zeros) up to target;
 * hdr: head, then COUNT lines "X-Fill-<k>: <SIZE x 'a'>\r\n", never the final blank line. */
static bool send_some(conn_t *x, long i, double t)
{
    char head[HEAD_MAX];
    size_t hl = head_of(x, i, head, sizeof(head));
    if (x->kind == NOREAD) {
        if (x->sent == 0) {
            ssize_t w = write(x->fd, head, hl);
            if (w > 0)
                x->sent = (uint64_t)w; /* a short write of 80 bytes does not happen on loopback */
        }
        return true;
    }
    if (x->kind == SLOW) {
        if (t < x->next_send)
            return true;
        const char *b = x->sent < hl ? head + x->sent : "a";
        if (write(x->fd, b, 1) == 1)
            x->sent++;
        x->next_send = t + x->target / 1000.0; /* target holds slow-ms for this kind */
        return true;
    }
    uint64_t allowed = x->target;
    if (x->kind == PARTIAL && trickle > 0 && x->sent >= hl) {
        /* the head at once, then the body at the trickle rate */
        double since = t - x->opened;
        uint64_t by_now = hl + (uint64_t)(since * trickle);
        if (by_now < allowed)
            allowed = by_now;
    }
    for (int round = 0; round < 64 && x->sent < allowed; round++) {
        const char *src;
        size_t len;
        if (x->sent < hl) {
            src = head + x->sent;
            len = hl - x->sent;
        } else if (x->kind == PARTIAL) {
            uint64_t off = x->sent - hl;
            size_t o = off < sizeof(body) ? (size_t)off
                                          : (size_t)(off % sizeof(body)) | 4; /* past the SOI */
            src = body + o;
            len = sizeof(body) - o;
        } else { /* HDR: line k of COUNT, each "X-Fill-NNNN: " + SIZE bytes + CRLF */
            const class_t *c = &hclass[x->cls];
            uint64_t linelen = LINE_PFX + (uint64_t)c->hsize + 2, off = x->sent - hl;
            uint64_t k = off / linelen, in = off % linelen;
            char line[16];
            snprintf(line, sizeof(line), "X-Fill-%04u: ", (unsigned)(k % 10000));
            if (in < LINE_PFX) {
                src = line + in;
                len = LINE_PFX - in;
            } else if (in < LINE_PFX + c->hsize) {
                uint64_t left = LINE_PFX + c->hsize - in;
                src = fill;
                len = left < sizeof(fill) ? (size_t)left : sizeof(fill);
            } else {
                src = "\r\n" + (in - LINE_PFX - c->hsize);
                len = linelen - in;
            }
        }
        if (len > allowed - x->sent)
            len = (size_t)(allowed - x->sent);
        ssize_t w = write(x->fd, src, len);
        if (w < 0)
            return errno == EAGAIN || errno == EWOULDBLOCK;
        x->sent += (uint64_t)w;
        if ((size_t)w < len)
            break;
    }
    return true;
}

static bool wants_out(const conn_t *x, double t)
{
    if (!x->connected)
        return true;
    switch (x->kind) {
    case SLOW:
        return t >= x->next_send;
    case NOREAD:
        return x->sent == 0;
    case PARTIAL:
    case HDR:
        return x->sent < x->target;
    }
    return false;
}

static void note_status(conn_t *x)
{
    /* "HTTP/1.1 413 ..." */
    if (x->status == 0 && x->rlen >= 12 && memcmp(x->rbuf, "HTTP/1.", 7) == 0)
        x->status = (short)atoi(x->rbuf + 9);
}

static void count_code(class_t *c, short code)
{
    for (int j = 0; j < 8; j++) {
        if (c->codes[j] == code || c->codes[j] == 0) {
            c->codes[j] = code;
            c->code_n[j]++;
            return;
        }
    }
}

static long peak_rss_kb(void)
{
    struct rusage ru;
    return getrusage(RUSAGE_SELF, &ru) == 0 ? ru.ru_maxrss : -1;
}

static void usage(void)
{
    fprintf(
        stderr,
        "usage: tgconns HOST:PORT [--idle N] [--slow N] [--noread N] [--partial N] [--hdr N]\n"
        "       [--path /KEY] [--hold S] [--rate N] [--slow-ms MS] [--sizes B,B,...] [--frac F]\n"
        "       [--trickle BYTES_PER_S] [--put-prefix /PFX] [--hdr-shapes CxS,CxS,...]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    if (argc < 2)
        usage();
    signal(SIGINT, on_sig);
    signal(SIGTERM, on_sig);
    signal(SIGPIPE, SIG_IGN);
    char host[64];
    const char *c = strrchr(argv[1], ':');
    if (c == NULL || (size_t)(c - argv[1]) >= sizeof(host))
        usage();
    memcpy(host, argv[1], (size_t)(c - argv[1]));
    host[c - argv[1]] = 0;
    int port = atoi(c + 1);
    long want[NKIND] = {0};
    double hold = 20, rate = 2000, slow_ms = 1000;
    const char *sizes = "500000", *shapes = "99x64";
    for (int i = 2; i + 1 < argc; i += 2) {
        const char *a = argv[i], *v = argv[i + 1];
        if (!strcmp(a, "--idle"))
            want[IDLE] = atol(v);
        else if (!strcmp(a, "--slow"))
            want[SLOW] = atol(v);
        else if (!strcmp(a, "--noread"))
            want[NOREAD] = atol(v);
        else if (!strcmp(a, "--partial"))
            want[PARTIAL] = atol(v);
        else if (!strcmp(a, "--hdr"))
            want[HDR] = atol(v);
        else if (!strcmp(a, "--path"))
            path = v;
        else if (!strcmp(a, "--hold"))
            hold = atof(v);
        else if (!strcmp(a, "--rate"))
            rate = atof(v);
        else if (!strcmp(a, "--slow-ms"))
            slow_ms = atof(v);
        else if (!strcmp(a, "--sizes"))
            sizes = v;
        else if (!strcmp(a, "--frac"))
            frac = atof(v);
        else if (!strcmp(a, "--trickle"))
            trickle = atof(v);
        else if (!strcmp(a, "--put-prefix"))
            put_prefix = v;
        else if (!strcmp(a, "--hdr-shapes"))
            shapes = v;
        else
            usage();
    }
    for (const char *p = sizes; *p && npclass < MAXCLASS;
         p = strchr(p, ',') ? strchr(p, ',') + 1 : "")
        pclass[npclass++].size = strtoull(p, NULL, 10);
    for (const char *p = shapes; *p && nhclass < MAXCLASS;
         p = strchr(p, ',') ? strchr(p, ',') + 1 : "") {
        unsigned cnt = 0, sz = 0;
        if (sscanf(p, "%ux%u", &cnt, &sz) == 2 && cnt > 0 && cnt <= 10000 && sz <= 1000000) {
            hclass[nhclass].cnt = cnt;
            hclass[nhclass++].hsize = sz;
        }
    }
    long n = 0;
    for (int k = 0; k < NKIND; k++)
        n += want[k];
    if (n <= 0 || n > 60000 || hold > 3600 || frac < 0 || frac > 1 || (want[PARTIAL] && !npclass) ||
        (want[HDR] && !nhclass))
        usage();
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    memset(body, 0, sizeof(body));
    memcpy(body, "\xff\xd8\xff\xe0", 4);
    memset(fill, 'a', sizeof(fill));

    conn_t *cs = calloc((size_t)n, sizeof(*cs));
    struct pollfd *pf = calloc((size_t)n, sizeof(*pf));
    long *pidx = calloc((size_t)n, sizeof(*pidx));
    double *d = malloc((size_t)n * sizeof(double));
    if (!cs || !pf || !pidx || !d)
        return 2;
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port)};
    inet_pton(AF_INET, host, &addr.sin_addr);
    /* interleave the kinds so each is spread over the whole opening phase */
    long made[NKIND] = {0}, opened = 0;
    double t0 = now_s();
    char sink[65536];
    double last_report = 0;
    while (!stop) {
        double t = now_s() - t0;
        if (t >= hold)
            break;
        /* open the connections due by now */
        while (opened < n && opened < (long)(t * rate) + 1) {
            int k = (int)(opened % NKIND);
            for (int tries = 0; tries < NKIND && made[k] >= want[k]; tries++)
                k = (k + 1) % NKIND;
            conn_t *x = &cs[opened];
            x->kind = (unsigned char)k;
            x->opened = t;
            x->closed = -1;
            if (k == PARTIAL) {
                x->cls = (unsigned char)(made[k] % npclass);
                char h[HEAD_MAX];
                x->target =
                    head_of(x, opened, h, sizeof(h)) + (uint64_t)(pclass[x->cls].size * frac);
                pclass[x->cls].opened++;
            } else if (k == HDR) {
                x->cls = (unsigned char)(made[k] % nhclass);
                char h[HEAD_MAX];
                const class_t *hc = &hclass[x->cls];
                x->target = head_of(x, opened, h, sizeof(h)) +
                            (uint64_t)hc->cnt * (LINE_PFX + hc->hsize + 2);
                hclass[x->cls].opened++;
            } else if (k == SLOW)
                x->target = (uint64_t)slow_ms;
            made[k]++;
            opened++;
            x->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
            if (x->fd < 0) {
                x->closed = t;
                continue;
            }
            if (k == NOREAD) {
                int small = 4096;
                setsockopt(x->fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
            } else if (k == PARTIAL) {
                int sb = 65536;
                setsockopt(x->fd, SOL_SOCKET, SO_SNDBUF, &sb, sizeof(sb));
            }
            if (connect(x->fd, (struct sockaddr *)&addr, sizeof(addr)) != 0 &&
                errno != EINPROGRESS) {
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
            if (wants_out(x, t))
                pf[np].events |= POLLOUT;
            pf[np].revents = 0;
            pidx[np++] = i;
        }
        if (np > 0)
            poll(pf, (nfds_t)np, 20);
        else {
            struct timespec ts = {0, 20 * 1000000};
            nanosleep(&ts, NULL);
        }
        t = now_s() - t0;
        for (long j = 0; j < np; j++) {
            conn_t *x = &cs[pidx[j]];
            short re = pf[j].revents;
            if (re & POLLIN) { /* the server answered (408, 413, 503, ...): keep its status line */
                ssize_t r = read(x->fd, sink, sizeof(sink));
                if (r > 0 && x->rlen < sizeof(x->rbuf)) {
                    size_t k = sizeof(x->rbuf) - x->rlen < (size_t)r ? sizeof(x->rbuf) - x->rlen
                                                                     : (size_t)r;
                    memcpy(x->rbuf + x->rlen, sink, k);
                    x->rlen = (unsigned char)(x->rlen + k);
                    note_status(x);
                }
                if (r == 0 || (r < 0 && errno != EAGAIN)) {
                    x->closed = t;
                    continue;
                }
            }
            if (re & (POLLERR | POLLHUP | POLLRDHUP)) {
                x->closed = t;
                continue;
            }
            if (re & POLLOUT) {
                x->connected = true;
                if (!send_some(x, pidx[j], t))
                    x->closed = t;
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
    for (int k = 0; k < NKIND; k++) {
        if (want[k] == 0)
            continue;
        long op = 0, refused = 0, closed = 0, still = 0, nd = 0;
        for (long i = 0; i < opened; i++) {
            conn_t *x = &cs[i];
            if (x->kind != k)
                continue;
            op++;
            bool ref = x->fd < 0 || (!x->connected && x->closed >= 0) ||
                       (x->closed >= 0 && x->closed - x->opened < 0.05 && x->sent == 0);
            if (ref)
                refused++;
            else if (x->closed >= 0) {
                closed++;
                d[nd++] = x->closed - x->opened;
            } else
                still++;
            class_t *cl = k == PARTIAL ? &pclass[x->cls] : k == HDR ? &hclass[x->cls] : NULL;
            if (cl) {
                cl->sent += x->sent;
                if (x->status)
                    count_code(cl, x->status);
                cl->closed += x->closed >= 0;
                cl->still += x->closed < 0 && x->fd >= 0;
            }
        }
        qsort(d, (size_t)nd, sizeof(double), cmp_d);
        printf("%s_opened=%ld\n%s_refused=%ld\n%s_closed_by_server=%ld\n%s_still_open=%ld\n",
               kind_name[k], op, kind_name[k], refused, kind_name[k], closed, kind_name[k], still);
        printf("%s_close_p50_s=%.1f\n%s_close_max_s=%.1f\n", kind_name[k], nd ? d[nd / 2] : -1,
               kind_name[k], nd ? d[nd - 1] : -1);
    }
    /* per class: "class=partial:524000 opened=.. sent_mib=.. statuses=413:3,503:1 closed=..
     * still_open=.." */
    for (int k = PARTIAL; k <= HDR; k++) {
        if (want[k] == 0)
            continue;
        int nc = k == PARTIAL ? npclass : nhclass;
        for (int j = 0; j < nc; j++) {
            const class_t *cl = k == PARTIAL ? &pclass[j] : &hclass[j];
            char label[48], st[160] = "";
            if (k == PARTIAL)
                snprintf(label, sizeof(label), "%llu", (unsigned long long)cl->size);
            else
                snprintf(label, sizeof(label), "%ux%u", cl->cnt, cl->hsize);
            for (int m = 0; m < 8 && cl->codes[m]; m++) {
                size_t l = strlen(st);
                snprintf(st + l, sizeof(st) - l, "%s%d:%ld", l ? "," : "", cl->codes[m],
                         cl->code_n[m]);
            }
            printf("class_%s_%s=\"opened %ld, sent %.1f MiB, answers %s, closed by server %ld, "
                   "still open %ld\"\n",
                   kind_name[k], label, cl->opened, cl->sent / 1048576.0, st[0] ? st : "none",
                   cl->closed, cl->still);
        }
        long codes_total = 0;
        int nc2 = k == PARTIAL ? npclass : nhclass;
        for (int j = 0; j < nc2; j++) {
            const class_t *cl = k == PARTIAL ? &pclass[j] : &hclass[j];
            for (int m = 0; m < 8 && cl->codes[m]; m++)
                codes_total += cl->code_n[m];
        }
        printf("%s_answered=%ld\n", kind_name[k], codes_total);
    }
    /* statuses over every kind, for the harness's rules: "413:5 503:2" */
    {
        short codes[16] = {0};
        long cn[16] = {0};
        for (long i = 0; i < opened; i++) {
            if (!cs[i].status)
                continue;
            for (int m = 0; m < 16; m++)
                if (codes[m] == cs[i].status || codes[m] == 0) {
                    codes[m] = cs[i].status;
                    cn[m]++;
                    break;
                }
        }
        printf("statuses=\"");
        for (int m = 0; m < 16 && codes[m]; m++)
            printf("%s%d:%ld", m ? " " : "", codes[m], cn[m]);
        printf("\"\n");
    }
    printf("client_peak_rss_kb=%ld\n", peak_rss_kb());
    for (long i = 0; i < opened; i++)
        if (cs[i].fd >= 0)
            close(cs[i].fd);
    return 0;
}
