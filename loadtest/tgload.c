/* tgload — the harness's HTTP load client (libcurl multi, one thread).
 *
 * Reads a request list (one request a line: METHOD URL [BODYFILE]), replays it with C
 * requests in flight until N requests are done or T seconds have passed, and prints
 * shell-readable KEY=VALUE lines on stdout: status counts, 503s without Retry-After,
 * error bodies that are not the contract's JSON, transport errors, latencies
 * (p50/p90/p99/max) and req/s. Every loop is bounded in count and time; it only talks
 * to the addresses in the list (the harness writes 127.0.0.1 ones).
 *
 *   tgload -f LIST [-n N] [-c C] [-T SECONDS] [-t SECONDS] [--shuffle] [--fresh FRAC]
 *          [-o LOG.csv] [-H HEADER]... [--label NAME] [--progress] [--rate R]
 *
 * --rate R starts at most R requests per second (an open-loop pace for "normal clients"
 * beside another load); without it the C slots are refilled as soon as they finish.
 *
 * LOG.csv gets one row per request: i,start_ms,ms,status,retry_after,bytes,err,method,url */
#define _GNU_SOURCE
#include <curl/curl.h>
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>

typedef struct {
    char method[16];
    char *url;
    char *body; /* file to upload (PUT), or NULL */
} spec_t;

typedef struct {
    CURL *h;
    bool busy;
    long idx;
    double start_ms;
    FILE *in;
    bool retry_after;
    uint64_t bytes;
    char head[64]; /* first bytes of the body, to check the error format */
    size_t headlen;
    const spec_t *spec;
} slot_t;

#define NSTATUS 600

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static size_t on_header(char *buf, size_t size, size_t n, void *ud)
{
    slot_t *s = ud;
    size_t len = size * n;
    if (len >= 12 && strncasecmp(buf, "retry-after:", 12) == 0)
        s->retry_after = true;
    return len;
}

static size_t on_body(char *buf, size_t size, size_t n, void *ud)
{
    slot_t *s = ud;
    size_t len = size * n;
    if (s->headlen < sizeof(s->head)) {
        size_t k = sizeof(s->head) - s->headlen < len ? sizeof(s->head) - s->headlen : len;
        memcpy(s->head + s->headlen, buf, k);
        s->headlen += k;
    }
    s->bytes += len;
    return len;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double pct(const double *v, size_t n, double p)
{
    if (n == 0)
        return 0;
    size_t i = (size_t)(p / 100.0 * (double)(n - 1) + 0.5);
    return v[i < n ? i : n - 1];
}

static void usage(void)
{
    fprintf(stderr, "usage: tgload -f LIST [-n N] [-c C] [-T SECONDS] [-t SECONDS] [--shuffle] [--fresh FRAC]\n"
                    "              [-o LOG.csv] [-H HEADER]... [--label NAME] [--progress] [--rate R]\n");
    exit(2);
}

/* SIGINT/SIGTERM: stop starting requests, finish those in flight, print the figures
 * (the harness runs a background client for exactly as long as another phase lasts). */
static volatile sig_atomic_t stop_requested;
static void on_stop(int sig)
{
    (void)sig;
    stop_requested = 1;
}

int main(int argc, char **argv)
{
    signal(SIGINT, on_stop);
    signal(SIGTERM, on_stop);
    const char *list = NULL, *logpath = NULL, *label = "load";
    long total = -1, conc = 8;
    double cap_s = 300, timeout_s = 60, fresh = 0, rate = 0;
    bool shuffle = false, progress = false;
    struct curl_slist *hdrs = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-f") && v)
            list = v, i++;
        else if (!strcmp(a, "-n") && v)
            total = atol(v), i++;
        else if (!strcmp(a, "-c") && v)
            conc = atol(v), i++;
        else if (!strcmp(a, "-T") && v)
            cap_s = atof(v), i++;
        else if (!strcmp(a, "-t") && v)
            timeout_s = atof(v), i++;
        else if (!strcmp(a, "-o") && v)
            logpath = v, i++;
        else if (!strcmp(a, "-H") && v)
            hdrs = curl_slist_append(hdrs, v), i++;
        else if (!strcmp(a, "--label") && v)
            label = v, i++;
        else if (!strcmp(a, "--rate") && v)
            rate = atof(v), i++;
        else if (!strcmp(a, "--fresh") && v)
            fresh = atof(v), i++;
        else if (!strcmp(a, "--shuffle"))
            shuffle = true;
        else if (!strcmp(a, "--progress"))
            progress = true;
        else
            usage();
    }
    if (list == NULL || conc < 1 || conc > 20000)
        usage();
    /* no "Expect: 100-continue" round trip on uploads: the body goes at once */
    hdrs = curl_slist_append(hdrs, "Expect:");

    /* a few thousand connections need as many fds */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }

    FILE *lf = fopen(list, "r");
    if (lf == NULL) {
        fprintf(stderr, "tgload: %s: %s\n", list, strerror(errno));
        return 2;
    }
    size_t nspec = 0, cap = 1024;
    spec_t *specs = malloc(cap * sizeof(*specs));
    char *line = NULL;
    size_t lcap = 0;
    ssize_t ll;
    while ((ll = getline(&line, &lcap, lf)) > 0) {
        char m[16], u[4096], b[4096];
        if (line[0] == '#' || line[0] == '\n')
            continue;
        int k = sscanf(line, "%15s %4095s %4095s", m, u, b);
        if (k < 2)
            continue;
        if (nspec == cap)
            specs = realloc(specs, (cap *= 2) * sizeof(*specs));
        snprintf(specs[nspec].method, sizeof(specs[nspec].method), "%s", m);
        specs[nspec].url = strdup(u);
        specs[nspec].body = k == 3 ? strdup(b) : NULL;
        nspec++;
    }
    free(line);
    fclose(lf);
    if (nspec == 0) {
        fprintf(stderr, "tgload: %s: no requests\n", list);
        return 2;
    }
    if (total < 0)
        total = (long)nspec;
    if (total > 10000000)
        total = 10000000;
    srand48(12345);
    if (shuffle)
        for (size_t i = nspec - 1; i > 0; i--) {
            size_t j = (size_t)(drand48() * (double)(i + 1));
            spec_t t = specs[i];
            specs[i] = specs[j], specs[j] = t;
        }

    FILE *log = logpath ? fopen(logpath, "w") : NULL;
    if (log)
        fprintf(log, "i,start_ms,ms,status,retry_after,bytes,err,method,url\n");

    curl_global_init(CURL_GLOBAL_DEFAULT);
    CURLM *multi = curl_multi_init();
    curl_multi_setopt(multi, CURLMOPT_MAXCONNECTS, conc);
    slot_t *slots = calloc((size_t)conc, sizeof(*slots));
    for (long i = 0; i < conc; i++)
        slots[i].h = curl_easy_init();

    uint64_t status[NSTATUS] = {0};
    uint64_t no_retry_after = 0, bad_error_body = 0, transport_err = 0, bytes_total = 0;
    double *lat = malloc((size_t)total * sizeof(double));
    size_t nlat = 0;
    long next = 0, done = 0;
    int running = 0;
    char errsample[8][160];
    int nerrsample = 0;
    double t0 = now_ms(), last_progress = t0;

    for (;;) {
        double now = now_ms();
        bool time_up = now - t0 > cap_s * 1000 || stop_requested;
        /* fill free slots */
        for (long i = 0; i < conc && next < total && !time_up; i++) {
            slot_t *s = &slots[i];
            if (s->busy)
                continue;
            if (rate > 0 && (double)next >= rate * (now - t0) / 1000.0)
                break; /* ahead of the pace */
            const spec_t *sp = &specs[next % (long)nspec];
            CURL *h = s->h;
            curl_easy_reset(h);
            s->idx = next++;
            s->spec = sp;
            s->retry_after = false;
            s->bytes = 0;
            s->headlen = 0;
            s->in = NULL;
            curl_easy_setopt(h, CURLOPT_URL, sp->url);
            curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
            curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)(timeout_s * 1000));
            curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
            curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
            curl_easy_setopt(h, CURLOPT_HEADERDATA, s);
            curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
            curl_easy_setopt(h, CURLOPT_WRITEDATA, s);
            curl_easy_setopt(h, CURLOPT_PRIVATE, s);
            curl_easy_setopt(h, CURLOPT_PROXY, ""); /* never through a proxy: loopback only */
            curl_easy_setopt(h, CURLOPT_NOPROXY, "*");
            if (hdrs)
                curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
            if (fresh > 0 && drand48() < fresh) {
                curl_easy_setopt(h, CURLOPT_FRESH_CONNECT, 1L);
                curl_easy_setopt(h, CURLOPT_FORBID_REUSE, 1L);
            }
            if (!strcmp(sp->method, "HEAD")) {
                curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
            } else if (!strcmp(sp->method, "PUT")) {
                struct stat st;
                s->in = sp->body ? fopen(sp->body, "rb") : NULL;
                if (s->in == NULL || fstat(fileno(s->in), &st) != 0) {
                    fprintf(stderr, "tgload: cannot open body %s\n", sp->body ? sp->body : "(none)");
                    return 2;
                }
                curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
                curl_easy_setopt(h, CURLOPT_READDATA, s->in);
                curl_easy_setopt(h, CURLOPT_INFILESIZE_LARGE, (curl_off_t)st.st_size);
            } else if (strcmp(sp->method, "GET") != 0) {
                curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, sp->method);
            }
            s->start_ms = now_ms();
            s->busy = true;
            curl_multi_add_handle(multi, h);
            running++;
        }
        if (running == 0 && (next >= total || time_up))
            break;
        int still = 0;
        curl_multi_perform(multi, &still);
        CURLMsg *msg;
        int left;
        while ((msg = curl_multi_info_read(multi, &left)) != NULL) {
            if (msg->msg != CURLMSG_DONE)
                continue;
            slot_t *s;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&s);
            double ms = now_ms() - s->start_ms;
            long code = 0;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_RESPONSE_CODE, &code);
            CURLcode rc = msg->data.result;
            if (rc != CURLE_OK) {
                transport_err++;
                code = 0;
                if (nerrsample < 8)
                    snprintf(errsample[nerrsample++], sizeof(errsample[0]), "%s %s: %s", s->spec->method,
                             s->spec->url, curl_easy_strerror(rc));
            } else {
                status[code > 0 && code < NSTATUS ? code : 0]++;
                if (code == 503 && !s->retry_after)
                    no_retry_after++;
                if (code >= 400 && strcmp(s->spec->method, "HEAD") != 0 &&
                    (s->headlen < 9 || memcmp(s->head, "{\"error\":", 9) != 0))
                    bad_error_body++;
            }
            lat[nlat++] = ms;
            bytes_total += s->bytes;
            if (log)
                fprintf(log, "%ld,%.1f,%.2f,%ld,%d,%" PRIu64 ",%d,%s,%s\n", s->idx, s->start_ms - t0, ms, code,
                        s->retry_after, s->bytes, (int)rc, s->spec->method, s->spec->url);
            curl_multi_remove_handle(multi, msg->easy_handle);
            if (s->in)
                fclose(s->in), s->in = NULL;
            s->busy = false;
            running--;
            done++;
        }
        if (progress && now - last_progress >= 2000) {
            last_progress = now;
            fprintf(stderr, "  [%s] %ld/%ld done, %d in flight, 200:%" PRIu64 " 503:%" PRIu64 " err:%" PRIu64 ", %.0fs\n",
                    label, done, total, running, status[200], status[503], transport_err, (now - t0) / 1000);
        }
        if (running > 0)
            curl_multi_poll(multi, NULL, 0, rate > 0 ? 5 : 50, NULL);
        else if (rate > 0) {
            struct timespec ts = {0, 2 * 1000000};
            nanosleep(&ts, NULL);
        }
    }
    double elapsed = (now_ms() - t0) / 1000;
    qsort(lat, nlat, sizeof(double), cmp_double);
    printf("requests=%zu\n", nlat);
    printf("not_sent=%ld\n", total - next);
    printf("elapsed_s=%.3f\n", elapsed);
    printf("rps=%.1f\n", elapsed > 0 ? (double)nlat / elapsed : 0);
    printf("p50_ms=%.2f\np90_ms=%.2f\np99_ms=%.2f\nmax_ms=%.2f\n", pct(lat, nlat, 50), pct(lat, nlat, 90),
           pct(lat, nlat, 99), nlat ? lat[nlat - 1] : 0);
    printf("transport_errors=%" PRIu64 "\n", transport_err);
    printf("no_retry_after_503=%" PRIu64 "\n", no_retry_after);
    printf("bad_error_body=%" PRIu64 "\n", bad_error_body);
    printf("bytes=%" PRIu64 "\n", bytes_total);
    /* statuses="200:12 503:3" and one s_<code>= line each */
    printf("statuses=\"");
    bool first = true;
    for (int c = 0; c < NSTATUS; c++)
        if (status[c]) {
            printf("%s%d:%" PRIu64, first ? "" : " ", c, status[c]);
            first = false;
        }
    if (transport_err)
        printf("%serr:%" PRIu64, first ? "" : " ", transport_err);
    printf("\"\n");
    for (int c = 0; c < NSTATUS; c++)
        if (status[c])
            printf("s_%d=%" PRIu64 "\n", c, status[c]);
    for (int i = 0; i < nerrsample; i++)
        fprintf(stderr, "  [%s] transport error: %s\n", label, errsample[i]);

    for (long i = 0; i < conc; i++)
        curl_easy_cleanup(slots[i].h);
    curl_multi_cleanup(multi);
    curl_slist_free_all(hdrs);
    curl_global_cleanup();
    if (log)
        fclose(log);
    return 0;
}
