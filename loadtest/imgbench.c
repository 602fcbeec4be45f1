/* imgbench — imgproc_run() in process: the work one uncached thumbgate request does
 * (probe, plan, decode, resize, encode to a file), with N threads as the server's workers,
 * sizes W..W+99 round robin (distinct jobs). Beside vipsbench (plain vips_thumbnail) it
 * shows what imgproc's own decode paths (imgproc/pngfast.c) change. Prints KEY=VALUE lines
 * like vipsbench: images, failures, elapsed_s, img_per_s, peak_rss_kb.
 *
 *   imgbench FILE [THREADS=2] [COUNT=20 per thread] [SECONDS=60] [W=200] [FMT=jpg] [SPREAD=100]
 *
 * FMT is any output extension (jpg, png, webp, avif, jxl, gif; the server's default
 * qualities and efforts); SPREAD=1 makes every job exactly W x W. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "imgproc/imgproc.h"

static const char *file;
static int count, width, spread;
static imgproc_fmt_t out_fmt;
static double deadline;
static int done, failures;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void *worker(void *arg)
{
    long id = (long)arg;
    char dst[128];
    snprintf(dst, sizeof(dst), "/tmp/imgbench.%d.%ld.jpg", (int)getpid(), id);
    imgproc_opts_t o = {.jpeg_quality = 80,
                        .webp_quality = 80,
                        .png_compression = 6,
                        .avif_quality = 60,
                        .avif_effort = 2,
                        .jxl_quality = 75,
                        .jxl_effort = 7};
    for (int i = 0; i < count && now_s() < deadline; i++) {
        uint32_t w = (uint32_t)(width + (id * 37 + i) % spread);
        imgproc_job_t job = {.op = IMGPROC_OP_FIT, .width = w, .height = w, .out_fmt = out_fmt};
        imgproc_out_t out;
        imgproc_err_t err;
        int r = imgproc_run(file, &job, &o, dst, &out, &err);
        pthread_mutex_lock(&mu);
        if (r == 0)
            done++;
        else if (failures++ == 0)
            fprintf(stderr, "imgbench: %s\n", err.msg);
        pthread_mutex_unlock(&mu);
    }
    unlink(dst);
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 2 || imgproc_init(argv[0]) != 0) {
        fprintf(stderr, "usage: imgbench FILE [THREADS] [COUNT] [SECONDS] [W]\n");
        return 2;
    }
    file = argv[1];
    int threads = argc > 2 ? atoi(argv[2]) : 2;
    count = argc > 3 ? atoi(argv[3]) : 20;
    double secs = argc > 4 ? atof(argv[4]) : 60;
    width = argc > 5 ? atoi(argv[5]) : 200;
    out_fmt = argc > 6 ? imgproc_fmt_from_ext(argv[6], strlen(argv[6])) : IMGPROC_FMT_JPEG;
    spread = argc > 7 ? atoi(argv[7]) : 100;
    if (threads < 1 || threads > 256 || count < 1 || width < 1 || spread < 1 ||
        out_fmt == IMGPROC_FMT_UNKNOWN)
        return 2;
    pthread_t tid[256];
    double t0 = now_s();
    deadline = t0 + secs;
    for (long i = 0; i < threads; i++)
        pthread_create(&tid[i], NULL, worker, (void *)i);
    for (int i = 0; i < threads; i++)
        pthread_join(tid[i], NULL);
    double el = now_s() - t0;
    long hwm = -1;
    FILE *s = fopen("/proc/self/status", "r");
    char line[256];
    while (s && fgets(line, sizeof(line), s))
        sscanf(line, "VmHWM: %ld", &hwm);
    if (s)
        fclose(s);
    printf("threads=%d\nimages=%d\nfailures=%d\nelapsed_s=%.3f\nimg_per_s=%.2f\npeak_rss_kb=%ld\n",
           threads, done, failures, el, el > 0 ? done / el : 0, hwm);
    imgproc_shutdown();
    return failures ? 1 : 0;
}
