/* imgproc: process set-up for libvips in a server (cache off, one vips worker per job,
 * only the loaders we probe), malloc policy, format helpers and error plumbing. The probe
 * lives in probe.c, the plan/estimator in plan.c and the libvips pipeline in run.c. */
#include <malloc.h>
#include <stdio.h>
#include <string.h>

#include <vips/vips.h>
#ifdef THUMBGATE_JEMALLOC
#include <jemalloc/jemalloc.h>
#define IMGPROC_STR_(x) #x
#define IMGPROC_STR(x) IMGPROC_STR_(x)
#endif

#include "imgproc/imgproc_internal.h"

/*
 * Allocator policy (glibc), applied once in imgproc_init():
 *
 * libvips and the codecs allocate image-sized buffers (strip caches, libjpeg's coefficient
 * buffer, libwebp frames, encoder pictures) from whatever thread runs the job. By default
 * glibc's mmap threshold is dynamic: each time a large mmapped block is freed the threshold
 * rises (up to 32 MiB on 64-bit), so from then on those buffers are carved out of the
 * per-thread arenas, where fragmentation keeps them resident after the job. So:
 *  - M_MMAP_THRESHOLD = 128 KiB, pinned (setting it turns the dynamic adjustment off):
 *    every image-sized block is its own mapping and goes back to the kernel on free;
 *  - M_TRIM_THRESHOLD = 128 KiB: arenas give their free top back early;
 *  - M_ARENA_MAX = 8: bounds the number of arenas (glibc allows 8 per core), each of
 *    which keeps its own fragmented small-block heap; small allocations only go there,
 *    so contention is negligible next to pixel work (1..16 arenas measured alike);
 *  - imgproc_trim() (malloc_trim(0)) returns free pages from inside every arena; the
 *    server calls it when no job is in flight.
 * Measured with `calibrate --burst 20` (20 concurrent 290x290 jobs on 6000x4000 JPEGs and a
 * 4000x3000 PNG, 3 rounds; process idle at 35 MB before):
 *                            peak     after burst   after malloc_trim(0)
 *    glibc defaults          781 MB   375 MB        130 MB
 *    mmap threshold only     687 MB   133 MB         45 MB
 *    this policy             617 MB   118 MB         44 MB
 * IMGPROC_MALLOC_DEFAULTS=1 in the environment skips these settings (for that measurement).
 * The release build runs on jemalloc instead (its settings below; the comparison in the
 * README), where these mallopt calls only tune glibc's unused heap; they stay for the
 * sanitizer and JEMALLOC=0 builds.
 */
#ifdef THUMBGATE_JEMALLOC
/*
 * The release build's allocator, jemalloc, reads this before the first allocation, in
 * the server, calibrate and imgbench alike (MALLOC_CONF in the environment is
 * applied after it, for experiments). Measured on the 20-way burst (README, "Allocator"):
 *  - prof:true, prof_active:true, lg_prof_sample:19: heap profiles are always ready. An
 *    allocation is sampled on average once per 512 KiB allocated, and the sampled ones
 *    carry their call stack; the cost is within the burst's run-to-run noise;
 *  - tcache_max:4096: each thread caches freed blocks up to 4 KiB only. With the default
 *    (32 KiB) the 20 workers' caches kept ~35 MiB of freed blocks after the burst, which
 *    no purge reaches (a thread's cache is flushed only by that thread's own activity);
 *  - background_thread:true: purging runs on jemalloc's own threads, so an idle server
 *    gives pages back without an allocation to trigger it;
 *  - dirty_decay_ms:1000, muzzy_decay_ms:-1: freed pages leave the arenas within about a
 *    second (the default 10 s kept the burst's pages resident that long), lazily: madvise
 *    MADV_FREE lets the kernel take them whenever it needs the memory (without I/O, before
 *    any OOM kill, a cgroup's limit included), and until then a job that reuses them
 *    writes to pages still mapped. Given back at once (muzzy_decay_ms:0), every job
 *    faulted its libvips region buffers in again: 485-498 page faults and 61-63 ms of CPU per
 *    first-touch JPEG thumbnail, against 75-80 and 55-57 ms (README "make bench"). The
 *    jobmeter's trim (at most once a second after jobs end) and the idle trim purge them
 *    for real (imgproc_trim below), and VmHWM counts them: the reduced calibration
 *    measures them in every job's peak (0 under, lowest estimate/measured 1.13), and
 *    `make lazyfree-oom` checks that the kernel takes them under a cgroup limit;
 *  - oversize_threshold:131072: blocks of 128 KiB and more (image buffers) come from
 *    jemalloc's dedicated arena, which purges them as soon as they are freed, as glibc's
 *    M_MMAP_THRESHOLD does (above); not lazily (its decay times are 0 whatever the ones
 *    above say: a freed 64 MiB block leaves VmRSS at once). Without it the reduced
 *    calibration found a job measured above its estimate (a WebP with alpha to JPEG, 32.2
 *    MB measured for 30.2 estimated): freed buffers stayed resident while the next, larger
 *    ones were mapped;
 *  - narenas:8: as glibc's M_ARENA_MAX (above), a few heaps rather than one per core
 *    multiple (2 and 8 measured alike).
 */
const char *malloc_conf = "prof:true,prof_active:true,lg_prof_sample:19,tcache_max:4096,"
                          "oversize_threshold:131072,background_thread:true,dirty_decay_ms:1000,"
                          "muzzy_decay_ms:-1,narenas:8";

/*
 * calloc for every library in the process (the executable's definition comes first in
 * symbol lookup). jemalloc 5.3 zeroes a reused dirty extent of a large block (16 KiB and
 * more) by giving its pages back to the kernel (madvise MADV_DONTNEED), so each page
 * faults in again on the next write, and each madvise flushes the other cores' TLBs.
 * libvips takes its region buffers (20-70 KiB, thousands per image) from calloc, so a
 * thumbnail paid that on every buffer: 96k page faults per 160 images against glibc's
 * 23k. Below the oversize threshold (131072 above: blocks that stay in the arenas) the
 * block is zeroed with memset instead, on pages that are already resident; larger blocks
 * keep jemalloc's zeroing, so a big calloc that is never written stays uncommitted.
 * mallocx, not malloc: the compiler turns malloc + memset into a call to calloc.
 * Measured (README "make bench"): vipsbench under jemalloc 11-12 img/s, 18-20 with this.
 */
#define IMGPROC_CALLOC_MEMSET_BELOW 131072

void *calloc(size_t n, size_t size)
{
    size_t total;
    if (__builtin_mul_overflow(n, size, &total))
        return NULL;
    if (total == 0)
        total = 1;
    if (total >= IMGPROC_CALLOC_MEMSET_BELOW)
        return mallocx(total, MALLOCX_ZERO);
    void *p = mallocx(total, 0);
    if (p)
        memset(p, 0, total);
    return p;
}
#endif

#define IMGPROC_MMAP_THRESHOLD (128 * 1024)
#define IMGPROC_TRIM_THRESHOLD (128 * 1024)
#define IMGPROC_ARENA_MAX 8

static void set_malloc_policy(void)
{
    const char *skip = getenv("IMGPROC_MALLOC_DEFAULTS");
    if (skip && strcmp(skip, "1") == 0)
        return;
    mallopt(M_MMAP_THRESHOLD, IMGPROC_MMAP_THRESHOLD);
    mallopt(M_TRIM_THRESHOLD, IMGPROC_TRIM_THRESHOLD);
    mallopt(M_ARENA_MAX, IMGPROC_ARENA_MAX);
}

/* Runs every loader, resize path and saver once on tiny in-memory images, so that the
 * one-time costs (codec code pages, GType classes, orc programs, lcms, the libvips thread
 * pool) are paid at start-up rather than by the first jobs, whose estimates assume a warm
 * process (a cold first job adds 1-2 MiB more). Best effort: failures are ignored. */
static void warm_up(void)
{
    VipsImage *ctx = vips_image_new();
    VipsImage **t = (VipsImage **)vips_object_local_array(VIPS_OBJECT(ctx), 8);
    VipsImage *srcs[5] = {NULL};
    if (vips_black(&t[0], 48, 32, "bands", 3, NULL) || vips_linear1(t[0], &t[1], 1.0, 90.0, NULL) ||
        vips_cast(t[1], &t[2], VIPS_FORMAT_UCHAR, NULL) ||
        vips_bandjoin_const1(t[2], &t[3], 200.0, NULL) ||
        vips_colourspace(t[2], &t[4], VIPS_INTERPRETATION_CMYK, NULL) ||
        vips_icc_transform(t[2], &t[5], "p3", "input_profile", "srgb", NULL) ||
        vips_extract_band(t[2], &t[6], 0, NULL))
        goto out;
    srcs[0] = t[2]; /* RGB */
    srcs[1] = t[3]; /* RGBA */
    srcs[2] = t[4]; /* CMYK */
    srcs[3] = t[5]; /* tagged with an ICC profile */
    srcs[4] = t[6]; /* grey */
    /* Which source kinds go through which encodings: 0/1 JPEG baseline/progressive,
     * 2/3 PNG plain/interlaced, 4/5 WebP lossy/lossless. */
    static const struct {
        int src, enc;
    } paths[] = {{0, 0}, {0, 1}, {0, 2}, {0, 3}, {0, 4}, {0, 5}, {1, 2},
                 {1, 4}, {1, 5}, {2, 0}, {3, 0}, {3, 2}, {4, 0}, {4, 2}};
    for (size_t p = 0; p < sizeof(paths) / sizeof(paths[0]); p++) {
        VipsImage *in = srcs[paths[p].src];
        int e = paths[p].enc;
        void *buf = NULL;
        size_t len = 0;
        int rc;
        if (e < 2)
            rc = vips_jpegsave_buffer(in, &buf, &len, "interlace", e == 1, NULL);
        else if (e < 4)
            rc = vips_pngsave_buffer(in, &buf, &len, "interlace", e == 3, NULL);
        else
            rc = vips_webpsave_buffer(in, &buf, &len, "lossless", e == 5, "effort", 0, NULL);
        VipsImage *th = NULL;
        if (rc == 0 &&
            vips_thumbnail_buffer(buf, len, &th, 16, "height", 16, "crop", VIPS_INTERESTING_CENTRE,
                                  "export_profile", paths[p].src == 3 ? "srgb" : NULL, NULL) == 0) {
            void *o[6] = {NULL};
            size_t ol;
            if (vips_jpegsave_buffer(th, &o[0], &ol, NULL) == 0 &&
                vips_pngsave_buffer(th, &o[1], &ol, NULL) == 0 &&
                vips_webpsave_buffer(th, &o[2], &ol, "effort", 0, NULL) == 0 &&
                vips_heifsave_buffer(th, &o[3], &ol, "compression",
                                     VIPS_FOREIGN_HEIF_COMPRESSION_AV1, "effort", 0, NULL) == 0 &&
                vips_jxlsave_buffer(th, &o[4], &ol, "effort", 3, NULL) == 0)
                vips_gifsave_buffer(th, &o[5], &ol, NULL);
            for (int k = 0; k < 6; k++)
                g_free(o[k]);
            g_object_unref(th);
        }
        g_free(buf);
    }
out:
    vips_error_clear();
    g_object_unref(ctx);
}

int imgproc_init(const char *argv0)
{
    set_malloc_policy();
    if (VIPS_INIT(argv0 ? argv0 : "thumbgate"))
        return -IMGPROC_E_NOMEM;
    /* A server re-reads different files under the same names: never reuse operations. */
    vips_cache_set_max(0);
    vips_cache_set_max_mem(0);
    vips_cache_set_max_files(0);
    /* Parallelism comes from our worker threads; one libvips worker per pipeline keeps the
     * per-job memory what the estimator models. */
    vips_concurrency_set(1);
    /* Only the loaders we probe may ever run, whatever is in the file. jxlsave is marked
     * untrusted in 8.14 (for its loader's sake); it only encodes pixels we produced. */
    vips_block_untrusted_set(TRUE);
    vips_operation_block_set("VipsForeignLoad", TRUE);
    vips_operation_block_set("VipsForeignLoadJpeg", FALSE);
    vips_operation_block_set("VipsForeignLoadPng", FALSE);
    vips_operation_block_set("VipsForeignLoadWebp", FALSE);
    vips_operation_block_set("VipsForeignLoadNsgif", FALSE);
    vips_operation_block_set("VipsForeignLoadTiff", FALSE);
    vips_operation_block_set("VipsForeignLoadHeif", FALSE);
    vips_operation_block_set("VipsForeignSaveJxl", FALSE);
    warm_up();
    imgproc_trim();
    return 0;
}

void imgproc_shutdown(void)
{
    vips_shutdown();
}

const char *imgproc_strerror(int code)
{
    if (code < 0)
        code = -code;
    switch (code) {
    case IMGPROC_OK:
        return "ok";
    case IMGPROC_E_UNSUPPORTED:
        return "unsupported image format";
    case IMGPROC_E_CORRUPT:
        return "corrupt or truncated image";
    case IMGPROC_E_TOO_LARGE:
        return "image dimensions too large";
    case IMGPROC_E_IO:
        return "i/o error";
    case IMGPROC_E_NOMEM:
        return "out of memory";
    case IMGPROC_E_INVALID:
        return "invalid job parameters";
    case IMGPROC_E_TIMEOUT:
        return "job deadline passed";
    default:
        return "unknown imgproc error";
    }
}

int imgproc__fail_vips(imgproc_err_t *err, int code, const char *what)
{
    /* libvips' error buffer is process-wide: take (and clear) it right here. */
    char *text = vips_error_buffer_copy();
    size_t n = text ? strlen(text) : 0;
    while (n > 0 && (text[n - 1] == '\n' || text[n - 1] == ' '))
        text[--n] = '\0';
    for (size_t i = 0; i < n; i++)
        if (text[i] == '\n')
            text[i] = ' ';
    imgproc__fail(err, code, "%s: %s", what, n ? text : "libvips error");
    g_free(text);
    return -code;
}

int imgproc__fail_vips_decode(imgproc_err_t *err, const char *what)
{
    const char *buf = vips_error_buffer();
    int code = (buf && strstr(buf, "out of memory")) ? IMGPROC_E_NOMEM : IMGPROC_E_CORRUPT;
    return imgproc__fail_vips(err, code, what);
}

void imgproc_trim(void)
{
#ifdef THUMBGATE_JEMALLOC
    /* jemalloc (server/heap.c): every arena's unused dirty pages back to the kernel now,
     * rather than at their decay time; malloc_trim would only trim glibc's idle heap */
    mallctl("arena." IMGPROC_STR(MALLCTL_ARENAS_ALL) ".purge", NULL, NULL, NULL, 0);
#else
    malloc_trim(0);
#endif
}

bool imgproc_selftest(void)
{
    VipsImage *img = NULL;
    void *buf = NULL;
    size_t len = 0;
    bool ok = false;

    if (vips_black(&img, 8, 8, "bands", 3, NULL))
        goto out;
    if (vips_jpegsave_buffer(img, &buf, &len, "Q", 50, NULL))
        goto out;
    ok = imgproc_sniff(buf, len) == IMGPROC_FMT_JPEG;
out:
    if (!ok)
        vips_error_clear();
    g_free(buf);
    VIPS_UNREF(img);
    return ok;
}

void imgproc_vips_mem(uint64_t *now, uint64_t *highwater)
{
    if (now)
        *now = (uint64_t)vips_tracked_get_mem();
    if (highwater)
        *highwater = (uint64_t)vips_tracked_get_mem_highwater();
}
