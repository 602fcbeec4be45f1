/* tgsample — samples one process every INTERVAL ms into a CSV until it exits (or
 * until MAX seconds, or SIGTERM/SIGINT):
 *
 *   t_s,rss_kb,anon_kb,file_kb,hwm_kb,threads,fds,cg_bytes,budget_used,queue,conns
 *
 * rss/anon/file/hwm/threads come from /proc/PID/status (VmRSS, RssAnon, RssFile, VmHWM,
 * Threads), fds is the number of entries in /proc/PID/fd, cg_bytes the cgroup's memory
 * usage (v1 memory.usage_in_bytes or v2 memory.current; -1 without a cgroup), and the
 * last three are read from the server's admin /metrics by a thread of their own every
 * 200 ms (-1 when the last scrape got no answer within 1 s), so plots can show budget
 * use beside RSS and a slow scrape never delays the /proc samples.
 *
 *   tgsample PID OUT.csv [--cgroup DIR] [--admin HOST:PORT] [--interval MS] [--max S] */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

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

static long long read_ll(const char *path)
{
    char buf[64];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return -1;
    buf[n] = 0;
    return atoll(buf);
}

/* One GET /metrics over a plain socket, 1 s in all; picks three gauges. */
static int scrape(const char *host, int port, double *budget, double *queue, double *conns)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port)};
    inet_pton(AF_INET, host, &a.sin_addr);
    double deadline = now_s() + 1.0;
    int r = connect(fd, (struct sockaddr *)&a, sizeof(a));
    if (r != 0 && errno != EINPROGRESS) {
        close(fd);
        return -1;
    }
    struct pollfd p = {.fd = fd, .events = POLLOUT};
    if (poll(&p, 1, 1000) != 1 || (p.revents & (POLLERR | POLLHUP))) {
        close(fd);
        return -1;
    }
    const char req[] = "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    if (write(fd, req, sizeof(req) - 1) != (ssize_t)sizeof(req) - 1) {
        close(fd);
        return -1;
    }
    static char buf[1 << 17];
    size_t len = 0;
    for (;;) {
        int left = (int)((deadline - now_s()) * 1000);
        if (left <= 0)
            break;
        p.events = POLLIN;
        if (poll(&p, 1, left) != 1)
            break;
        ssize_t n = read(fd, buf + len, sizeof(buf) - 1 - len);
        if (n <= 0)
            break;
        len += (size_t)n;
        if (len >= sizeof(buf) - 1)
            break;
    }
    close(fd);
    buf[len] = 0;
    char *s;
    int got = 0;
    if ((s = strstr(buf, "\nthumbgate_budget_in_use_bytes ")) != NULL)
        *budget = atof(s + 31), got++;
    if ((s = strstr(buf, "\nthumbgate_queue_length ")) != NULL)
        *queue = atof(s + 24), got++;
    if ((s = strstr(buf, "\nthumbgate_open_connections ")) != NULL)
        *conns = atof(s + 28), got++;
    return got ? 0 : -1;
}

static char g_host[64] = "127.0.0.1";
static int g_port;
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static double g_budget = -1, g_queue = -1, g_conns = -1;

static void *scraper(void *arg)
{
    (void)arg;
    while (!stop) {
        double b = -1, q = -1, c = -1, t = now_s();
        if (scrape(g_host, g_port, &b, &q, &c) != 0)
            b = q = c = -1;
        pthread_mutex_lock(&g_mu);
        g_budget = b, g_queue = q, g_conns = c;
        pthread_mutex_unlock(&g_mu);
        double wait = t + 0.2 - now_s();
        if (wait > 0) {
            struct timespec ts = {0, (long)(wait * 1e9)};
            nanosleep(&ts, NULL);
        }
    }
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: tgsample PID OUT.csv [--cgroup DIR] [--admin HOST:PORT] [--interval MS] [--max S]\n");
        return 2;
    }
    int pid = atoi(argv[1]);
    const char *out = argv[2], *cg = NULL, *admin = NULL;
    int interval = 100;
    double max_s = 3600;
    for (int i = 3; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--cgroup"))
            cg = argv[i + 1];
        else if (!strcmp(argv[i], "--admin"))
            admin = argv[i + 1];
        else if (!strcmp(argv[i], "--interval"))
            interval = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--max"))
            max_s = atof(argv[i + 1]);
    }
    if (admin) {
        const char *c = strrchr(admin, ':');
        if (c && (size_t)(c - admin) < sizeof(g_host)) {
            memcpy(g_host, admin, (size_t)(c - admin));
            g_host[c - admin] = 0;
            g_port = atoi(c + 1);
        }
    }
    char cgpath[600] = "";
    if (cg) {
        snprintf(cgpath, sizeof(cgpath), "%s/memory.usage_in_bytes", cg);
        if (access(cgpath, R_OK) != 0)
            snprintf(cgpath, sizeof(cgpath), "%s/memory.current", cg);
    }
    signal(SIGTERM, on_sig);
    signal(SIGINT, on_sig);
    FILE *o = fopen(out, "w");
    if (o == NULL) {
        perror(out);
        return 2;
    }
    setvbuf(o, NULL, _IOLBF, 0);
    fprintf(o, "t_s,rss_kb,anon_kb,file_kb,hwm_kb,threads,fds,cg_bytes,budget_used,queue,conns\n");
    char path[128], fdpath[64];
    snprintf(path, sizeof(path), "/proc/%d/status", pid);
    snprintf(fdpath, sizeof(fdpath), "/proc/%d/fd", pid);
    double t0 = now_s(), budget, queue, conns;
    pthread_t th;
    bool scraping = g_port != 0 && pthread_create(&th, NULL, scraper, NULL) == 0;
    for (unsigned long k = 0; !stop; k++) {
        double t = now_s() - t0;
        if (t > max_s)
            break;
        FILE *s = fopen(path, "r");
        if (s == NULL)
            break; /* the process is gone */
        long rss = -1, anon = -1, file = -1, hwm = -1, thr = -1;
        char line[256];
        while (fgets(line, sizeof(line), s)) {
            sscanf(line, "VmRSS: %ld", &rss);
            sscanf(line, "RssAnon: %ld", &anon);
            sscanf(line, "RssFile: %ld", &file);
            sscanf(line, "VmHWM: %ld", &hwm);
            sscanf(line, "Threads: %ld", &thr);
        }
        fclose(s);
        if (rss < 0)
            break; /* zombie: exited */
        long fds = 0;
        DIR *d = opendir(fdpath);
        if (d) {
            struct dirent *e;
            while ((e = readdir(d)) != NULL)
                if (e->d_name[0] != '.')
                    fds++;
            closedir(d);
        }
        long long cgb = cgpath[0] ? read_ll(cgpath) : -1;
        pthread_mutex_lock(&g_mu);
        budget = g_budget, queue = g_queue, conns = g_conns;
        pthread_mutex_unlock(&g_mu);
        fprintf(o, "%.2f,%ld,%ld,%ld,%ld,%ld,%ld,%lld,%.0f,%.0f,%.0f\n", t, rss, anon, file, hwm, thr, fds, cgb, budget,
                queue, conns);
        double next = t0 + (double)(k + 1) * interval / 1000.0, wait = next - now_s();
        if (wait > 0) {
            struct timespec ts = {(time_t)wait, (long)((wait - (time_t)wait) * 1e9)};
            nanosleep(&ts, NULL);
        }
    }
    fclose(o);
    stop = 1;
    if (scraping)
        pthread_join(th, NULL);
    return 0;
}
