/* vipsbench — the in-process libvips ceiling for the throughput mode: N threads each
 * make COUNT thumbnails (vips_thumbnail to fit WxH, encoded to JPEG in memory, the work
 * thumbgate does per uncached request) of the same file, with the operation cache off
 * and vips concurrency 1, as the server sets libvips up. Bounded by COUNT and by
 * SECONDS. Prints KEY=VALUE lines: images, elapsed_s, img_per_s, p50_ms, p99_ms,
 * peak_rss_kb (VmHWM).
 *
 *   vipsbench FILE [THREADS=2] [COUNT=20 per thread] [SECONDS=60] [W=290] [H=290] [SPREAD=1]
 *             [STEP=1]
 *
 * SPREAD > 1 makes the jobs the sizes a bench workload asks for, round robin: job i fits
 * (W + k*STEP) x (H + k*STEP), k = i mod SPREAD, so that the limit is measured on the
 * same outputs (vips_thumbnail's shrink-on-load decodes a JPEG at 1/8 scale only while
 * the output is at most 1/16 of it: 5120 px to 300 px at 1/8, to 360 px at 1/4). H = 0:
 * the width alone (_Wx), whatever the height. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <vips/vips.h>

static const char *file;
static int count, width, height, spread, step;
static atomic_uint next_job;
static double deadline;
static double *lat;
static int nlat, failures;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void *worker(void *arg)
{
    (void)arg;
    for (int i = 0; i < count && now_s() < deadline; i++) {
        double t = now_s();
        VipsImage *out = NULL;
        void *buf = NULL;
        size_t len = 0;
        int k = (int)(atomic_fetch_add(&next_job, 1) % (unsigned)spread);
        int w = width + k * step, h = height > 0 ? height + k * step : VIPS_MAX_COORD;
        int r = vips_thumbnail(file, &out, w, "height", h, NULL);
        if (r == 0)
            r = vips_image_write_to_buffer(out, ".jpg", &buf, &len, "Q", 80, "strip", TRUE, NULL);
        if (out)
            g_object_unref(out);
        g_free(buf);
        vips_error_clear();
        vips_thread_shutdown();
        pthread_mutex_lock(&mu);
        if (r == 0)
            lat[nlat++] = (now_s() - t) * 1000;
        else
            failures++;
        pthread_mutex_unlock(&mu);
    }
    return NULL;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    if (argc < 2 || VIPS_INIT(argv[0])) {
        fprintf(stderr, "usage: vipsbench FILE [THREADS] [COUNT] [SECONDS] [W] [H] [SPREAD] [STEP]\n");
        return 2;
    }
    file = argv[1];
    int threads = argc > 2 ? atoi(argv[2]) : 2;
    count = argc > 3 ? atoi(argv[3]) : 20;
    double secs = argc > 4 ? atof(argv[4]) : 60;
    width = argc > 5 ? atoi(argv[5]) : 290;
    height = argc > 6 ? atoi(argv[6]) : 290;
    spread = argc > 7 ? atoi(argv[7]) : 1;
    step = argc > 8 ? atoi(argv[8]) : 1;
    if (threads < 1 || threads > 256 || count < 1 || count > 100000 || width < 1 || height < 0 ||
        spread < 1 || step < 1)
        return 2;
    vips_cache_set_max(0);
    vips_concurrency_set(1);
    lat = calloc((size_t)threads * (size_t)count, sizeof(double));
    pthread_t *tid = calloc((size_t)threads, sizeof(*tid));
    double t0 = now_s();
    deadline = t0 + secs;
    for (int i = 0; i < threads; i++)
        pthread_create(&tid[i], NULL, worker, NULL);
    for (int i = 0; i < threads; i++)
        pthread_join(tid[i], NULL);
    double el = now_s() - t0;
    qsort(lat, (size_t)nlat, sizeof(double), cmp_d);
    long hwm = -1;
    FILE *s = fopen("/proc/self/status", "r");
    char line[256];
    while (s && fgets(line, sizeof(line), s))
        sscanf(line, "VmHWM: %ld", &hwm);
    if (s)
        fclose(s);
    printf("threads=%d\nimages=%d\nfailures=%d\nelapsed_s=%.3f\nimg_per_s=%.2f\n", threads, nlat, failures, el,
           el > 0 ? nlat / el : 0);
    printf("p50_ms=%.1f\np99_ms=%.1f\npeak_rss_kb=%ld\n", nlat ? lat[nlat / 2] : 0,
           nlat ? lat[(int)((nlat - 1) * 0.99 + 0.5)] : 0, hwm);
    vips_shutdown();
    return failures ? 1 : 0;
}
