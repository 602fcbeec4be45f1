/* imgproc_run(): one job, source file to destination file, through libvips.
 * The source is opened once and the same descriptor is probed and decoded, so the plan
 * (and the admission estimate made from an earlier probe of that path) describe the bytes
 * actually decoded. Shrink-on-load goes through vips_thumbnail_source(); EXIF orientation
 * is applied by us from our own probe so the output always matches imgproc__plan(). */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <vips/vips.h>

#include "imgproc/imgproc_internal.h"
#include "imgproc/jpegfast.h"
#include "imgproc/pngfast.h"

/* Loader options for every decode: any decoder error (truncation included) fails the job
 * instead of yielding a grey-filled image. Given as an option string because
 * vips_thumbnail_source() passes that to the loader. */
#define LOAD_OPTIONS "fail_on=error"

typedef struct {
    int fd;
    bool failed;
    int err_no;
    uint64_t bytes;
} sink_t;

static int sink_write(void *user, const void *data, size_t len)
{
    sink_t *s = user;
    const char *p = data;
    size_t done = 0;
    while (done < len) {
        ssize_t k = write(s->fd, p + done, len - done);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0) {
            s->failed = true;
            s->err_no = k < 0 ? errno : EIO;
            errno = s->err_no;
            return -1;
        }
        done += (size_t)k;
    }
    s->bytes += len;
    return 0;
}

static gint64 on_write(VipsTargetCustom *target, const void *data, gint64 len, void *user)
{
    return sink_write(user, data, (size_t)len) ? -1 : len;
}

static gint on_end(VipsTargetCustom *target, void *user)
{
    return 0;
}

/* The job deadline, enforced through libvips' own cancellation: every image we evaluate
 * signals "eval" once per tile/strip (vips_image_set_progress), and past the deadline the
 * handler sets the kill flag on the image being computed (progress->im: the sink's image,
 * which the sink and webpsave's progress hook test), so the computation stops at its next
 * strip with a "killed" error. */
typedef struct {
    uint64_t at_ns; /* CLOCK_MONOTONIC; 0 = no deadline */
    bool fired;
    VipsImage *watched[3];
    gulong ids[3];
    int n;
} deadline_t;

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static bool deadline_passed(deadline_t *d)
{
    if (d->at_ns != 0 && mono_ns() >= d->at_ns)
        d->fired = true;
    return d->fired;
}

static bool deadline_cancelled(void *d)
{
    return deadline_passed(d);
}

static void on_eval(VipsImage *self, VipsProgress *progress, void *user)
{
    if (deadline_passed(user)) {
        if (progress && progress->im)
            vips_image_set_kill(progress->im, TRUE);
        vips_image_set_kill(self, TRUE);
    }
}

/* Arms the deadline on @p img before it is evaluated. Images derived from an armed one
 * signal through it (libvips passes progress_signal down the pipeline). */
static void deadline_watch(deadline_t *d, VipsImage *img)
{
    if (d->at_ns == 0 || img->progress_signal || d->n == 3)
        return;
    vips_image_set_progress(img, TRUE);
    d->watched[d->n] = img;
    d->ids[d->n++] = g_signal_connect(img, "eval", G_CALLBACK(on_eval), d);
}

static void deadline_unwatch(deadline_t *d)
{
    for (int i = 0; i < d->n; i++)
        g_signal_handler_disconnect(d->watched[i], d->ids[i]);
    d->n = 0;
}

/* The source of JPEG and PNG jobs: the descriptor read with pread through a custom
 * source, so that the decoder's own reads — which go on through a whole decode step that
 * produces no strip (libjpeg consuming a progressive file's scans, libpng reading an
 * interlaced image, the first output strip of a big shrink) — also stop at the deadline.
 * Seekable, so libvips never buffers the stream in memory.
 * libvips' JPEG reader asks for 4 KiB at a time: 1 140 preads for the bench's 4.7 MB
 * original. Reads shorter than IMGPROC__SRC_BUF are served from one buffer of that size
 * (allocated at the first, freed with the job, counted by imgproc_estimate), filled by one
 * pread at the position asked for; longer ones go straight to the caller. */
typedef struct {
    int fd;
    gint64 pos, size;
    deadline_t *dl;
    unsigned char *buf; /* the file's bytes [buf_at, buf_at + buf_len) */
    gint64 buf_at, buf_len;
} src_t;

static gint64 src_pread(int fd, void *buf, size_t len, gint64 at)
{
    ssize_t k;
    do
        k = pread(fd, buf, len, (off_t)at);
    while (k < 0 && errno == EINTR);
    return k;
}

/* Up to @p len bytes at s->pos: from the buffer (refilled by one pread when the position
 * is outside it and the read is short), or, for a long read, straight from the file. */
static gint64 src_read_some(src_t *s, unsigned char *buf, gint64 len)
{
    bool buffered = s->buf && s->pos >= s->buf_at && s->pos < s->buf_at + s->buf_len;
    if (!buffered && len < IMGPROC__SRC_BUF) {
        if (!s->buf && !(s->buf = malloc(IMGPROC__SRC_BUF)))
            return -1;
        gint64 k = src_pread(s->fd, s->buf, IMGPROC__SRC_BUF, s->pos);
        if (k <= 0)
            return k < 0 ? -1 : 0; /* at the end: nothing to read again */
        s->buf_at = s->pos;
        s->buf_len = k;
        buffered = true;
    }
    gint64 k;
    if (buffered) {
        k = s->buf_at + s->buf_len - s->pos;
        if (k > len)
            k = len;
        memcpy(buf, s->buf + (s->pos - s->buf_at), (size_t)k);
    } else if ((k = src_pread(s->fd, buf, (size_t)len, s->pos)) < 0)
        return -1;
    s->pos += k;
    return k;
}

/* A read is filled whole, up to the end of the file, as read(2) on a file would be:
 * libvips 8.14's TIFF reader hands one vips_source_read() to libtiff, which takes a short
 * count as a read error ("TIFFFillStrip: Read error"). A strip that straddled the buffer's
 * end failed every TIFF thumbnail bigger than the buffer. */
static gint64 on_src_read(VipsSourceCustom *source, void *buf, gint64 len, void *user)
{
    src_t *s = user;
    if (deadline_passed(s->dl)) {
        vips_error("imgproc", "job deadline");
        return -1;
    }
    gint64 got = 0;
    while (got < len) {
        gint64 k = src_read_some(s, (unsigned char *)buf + got, len - got);
        if (k < 0)
            return -1;
        if (k == 0)
            break;
        got += k;
    }
    return got;
}

static gint64 on_src_seek(VipsSourceCustom *source, gint64 offset, int whence, void *user)
{
    src_t *s = user;
    gint64 to = whence == SEEK_SET   ? offset
                : whence == SEEK_CUR ? s->pos + offset
                : whence == SEEK_END ? s->size + offset
                                     : -1;
    if (to < 0)
        return -1;
    s->pos = to;
    return to;
}

/* Drops every metadata item except the ICC profile and an animation's frame layout and timing
 * (libvips 8.14 savers can only strip all or nothing). Returns a new reference or NULL. */
static VipsImage *keep_only_icc(VipsImage *in)
{
    VipsImage *out;
    if (vips_copy(in, &out, NULL))
        return NULL;
    gchar **names = vips_image_get_fields(out);
    for (int i = 0; names && names[i]; i++)
        if (strcmp(names[i], VIPS_META_ICC_NAME) != 0 &&
            strcmp(names[i], VIPS_META_PAGE_HEIGHT) != 0 && strcmp(names[i], "delay") != 0 &&
            strcmp(names[i], "loop") != 0 && strcmp(names[i], "gif-delay") != 0 &&
            strcmp(names[i], "gif-loop") != 0)
            (void)vips_image_remove(out, names[i]);
    g_strfreev(names);
    return out;
}

static int save(VipsImage *img, imgproc_fmt_t fmt, const imgproc_opts_t *o, bool strip,
                VipsTarget *target)
{
    switch (fmt) {
    case IMGPROC_FMT_JPEG:
        return vips_jpegsave_target(
            img, target, "Q", (int)o->jpeg_quality, "strip", strip, "subsample_mode",
            o->jpeg_420 ? VIPS_FOREIGN_SUBSAMPLE_ON : VIPS_FOREIGN_SUBSAMPLE_AUTO, NULL);
    case IMGPROC_FMT_PNG:
        return vips_pngsave_target(img, target, "compression", (int)o->png_compression, "strip",
                                   strip, NULL);
    case IMGPROC_FMT_WEBP:
        return vips_webpsave_target(img, target, "Q", (int)o->webp_quality, "strip", strip, NULL);
    case IMGPROC_FMT_AVIF:
        /* 8 bits: the default 12 would widen every sample the encoder holds */
        return vips_heifsave_target(
            img, target, "Q", (int)o->avif_quality, "effort", (int)o->avif_effort, "compression",
            VIPS_FOREIGN_HEIF_COMPRESSION_AV1, "bitdepth", 8, "strip", strip, NULL);
    case IMGPROC_FMT_JXL:
        return vips_jxlsave_target(img, target, "Q", (int)o->jxl_quality, "effort",
                                   (int)o->jxl_effort, "strip", strip, NULL);
    case IMGPROC_FMT_GIF:
        return vips_gifsave_target(img, target, "strip", strip, NULL);
    default:
        vips_error("imgproc", "bad output format");
        return -1;
    }
}

/* libvips' savers keep full-resolution chroma from quality 90 up (their "auto" mode) */
#define FULL_CHROMA_QUALITY 90

bool imgproc_full_chroma(const imgproc_job_t *job, const imgproc_opts_t *opts)
{
    switch (job->out_fmt) {
    case IMGPROC_FMT_JPEG:
        return !opts->jpeg_420 &&
               (job->quality ? job->quality : opts->jpeg_quality) >= FULL_CHROMA_QUALITY;
    case IMGPROC_FMT_AVIF:
        return (job->quality ? job->quality : opts->avif_quality) >= FULL_CHROMA_QUALITY;
    case IMGPROC_FMT_WEBP:
        return false;
    default:
        return true;
    }
}

/* The error a failed pipeline maps to: the sink knows about write failures, libvips'
 * allocator says "out of memory"; anything else during decode means bad input. */
static int pipeline_fail(imgproc_err_t *err, const sink_t *sink, deadline_t *d, const char *what)
{
    if (d->fired) {
        vips_error_clear();
        return imgproc__fail(err, IMGPROC_E_TIMEOUT, "%s: cancelled at the job deadline", what);
    }
    if (sink && sink->failed) {
        vips_error_clear();
        return imgproc__fail(err, IMGPROC_E_IO, "write output: %s", strerror(sink->err_no));
    }
    return imgproc__fail_vips_decode(err, what);
}

/* Reads @p len bytes from the start of @p fd into a new malloc'd buffer. */
static int read_whole(int fd, uint64_t len, void **out, imgproc_err_t *err)
{
    uint8_t *buf = malloc(len ? (size_t)len : 1);
    if (!buf)
        return imgproc__fail(err, IMGPROC_E_NOMEM, "%llu bytes for the source",
                             (unsigned long long)len);
    uint64_t got = 0;
    while (got < len) {
        ssize_t k = pread(fd, buf + got, (size_t)(len - got), (off_t)got);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0) {
            free(buf);
            return k < 0 ? imgproc__fail(err, IMGPROC_E_IO, "read source: %s", strerror(errno))
                         : imgproc__fail(err, IMGPROC_E_CORRUPT, "source shrank while reading");
        }
        got += (uint64_t)k;
    }
    *out = buf;
    return 0;
}

static int free_data(void *data, void *area)
{
    free(data);
    return 0;
}

/* The options of the output format @p fmt are in range (the others are not looked at). */
static bool opts_ok(const imgproc_opts_t *o, imgproc_fmt_t fmt)
{
    switch (fmt) {
    case IMGPROC_FMT_JPEG:
        return o->jpeg_quality >= 1 && o->jpeg_quality <= 100;
    case IMGPROC_FMT_PNG:
        return o->png_compression <= 9;
    case IMGPROC_FMT_WEBP:
        return o->webp_quality >= 1 && o->webp_quality <= 100;
    case IMGPROC_FMT_AVIF:
        return o->avif_quality >= 1 && o->avif_quality <= 100 && o->avif_effort <= 9;
    case IMGPROC_FMT_JXL:
        return o->jxl_quality >= 1 && o->jxl_quality <= 100 && o->jxl_effort >= 3 &&
               o->jxl_effort <= 7;
    case IMGPROC_FMT_GIF:
        return true;
    default:
        return false;
    }
}

/* An animated job (plan.frames > 1): every frame of the GIF/WebP, loaded as one "toilet roll"
 * image (n=-1, frames stacked with page-height), resized by vips_thumbnail_source(), which in
 * libvips 8.14 shrinks a page-height image frame by frame (it keeps the page height exact) but
 * would crop the roll as one image. So the crop is ours: the roll is resized to cover the box
 * (the side with the smaller shrink given, the other free: thumb_shrink()'s crop rule), held in
 * memory, and every frame is cut at the same window (the centre, or for SMART the window around
 * the attention centre of the first frame). The delay and loop metadata go through. New
 * reference in @p out, 0 or -IMGPROC_E_*. */
static int thumb_frames(VipsSource *source, const imgproc_probe_t *probe, const imgproc__plan_t *pl,
                        const char *export_profile, deadline_t *dl, VipsImage *ctx, VipsImage **out,
                        imgproc_err_t *err)
{
    const uint32_t n = pl->frames;
    int bw = (int)pl->box_w, bh = (int)pl->box_h;
    if (pl->crop) {
        if ((double)probe->width / pl->box_w < (double)probe->height / pl->box_h)
            bh = VIPS_MAX_COORD;
        else
            bw = VIPS_MAX_COORD;
    }
    VipsImage **t = (VipsImage **)vips_object_local_array(VIPS_OBJECT(ctx), 5);
    VipsImage **f = (VipsImage **)vips_object_local_array(VIPS_OBJECT(ctx), (int)n);
    if (vips_thumbnail_source(source, &t[0], bw, "height", bh, "size", VIPS_SIZE_DOWN, "no_rotate",
                              TRUE, "export_profile", export_profile, "option_string",
                              LOAD_OPTIONS ",n=-1", NULL))
        return pipeline_fail(err, NULL, dl, "thumbnail");
    if ((uint32_t)t[0]->Xsize != pl->resized_w || (uint32_t)t[0]->Ysize != pl->resized_h * n ||
        (uint32_t)vips_image_get_page_height(t[0]) != pl->resized_h)
        return imgproc__fail(err, IMGPROC_E_CORRUPT,
                             "%u frames resized to %dx%d (page height %d), planned %ux%u each", n,
                             t[0]->Xsize, t[0]->Ysize, vips_image_get_page_height(t[0]),
                             pl->resized_w, pl->resized_h);
    if (!pl->crop) {
        *out = t[0];
        g_object_ref(t[0]);
        return 0;
    }
    const int rw = (int)pl->resized_w, rh = (int)pl->resized_h;
    const int cw = (int)pl->out_w, ch = (int)pl->out_h; /* no orientation on animations */
    deadline_watch(dl, t[0]);
    if (!(t[1] = vips_image_copy_memory(t[0])))
        return pipeline_fail(err, NULL, dl, "decode");
    int left = (rw - cw) / 2, top = (rh - ch) / 2;
    if (pl->attention) {
        int ax = 0, ay = 0;
        if (vips_crop(t[1], &t[2], 0, 0, rw, rh, NULL) ||
            vips_smartcrop(t[2], &t[3], cw, ch, "interesting", VIPS_INTERESTING_ATTENTION,
                           "attention_x", &ax, "attention_y", &ay, NULL))
            return pipeline_fail(err, NULL, dl, "smartcrop");
        left = VIPS_CLIP(0, ax - cw / 2, rw - cw);
        top = VIPS_CLIP(0, ay - ch / 2, rh - ch);
    }
    for (uint32_t i = 0; i < n; i++)
        if (vips_crop(t[1], &f[i], left, (int)i * rh + top, cw, ch, NULL))
            return pipeline_fail(err, NULL, dl, "crop");
    if (vips_arrayjoin(f, &t[4], (int)n, "across", 1, NULL) || vips_copy(t[4], out, NULL))
        return pipeline_fail(err, NULL, dl, "crop");
    vips_image_set_int(*out, VIPS_META_PAGE_HEIGHT, ch);
    return 0;
}

int imgproc_run(const char *src, const imgproc_job_t *job, const imgproc_opts_t *opts,
                const char *dst, imgproc_out_t *out, imgproc_err_t *err)
{
    if (!src)
        return imgproc__fail(err, IMGPROC_E_INVALID, "bad arguments");
    int in_fd = open(src, O_RDONLY | O_CLOEXEC);
    if (in_fd < 0)
        return imgproc__fail(err, IMGPROC_E_IO, "open %s: %s", src, strerror(errno));
    int rc = imgproc_run_fd(in_fd, job, opts, dst, out, err);
    close(in_fd);
    return rc;
}

/* The libvips source of a job on @p in_fd: our reads through @p rd, or for WebP the whole
 * file read into memory. 0 or -IMGPROC_E_*. */
static int make_source(int in_fd, const imgproc_probe_t *probe, src_t *rd, VipsSource **out,
                       imgproc_err_t *err)
{
    VipsSource *source;
    if (probe->fmt == IMGPROC_FMT_WEBP) {
        /* libwebp needs the whole file in memory and libvips would mmap it: a file
         * truncated under a mapping kills the process with SIGBUS. Read it instead (the
         * same resident cost, which the estimate counts as file_bytes). */
        void *data = NULL;
        int rc = read_whole(in_fd, probe->file_bytes, &data, err);
        if (rc != 0)
            return rc;
        /* The blob owns the bytes; they go when the last libvips reference does. */
        VipsBlob *blob = vips_blob_new(free_data, data, (size_t)probe->file_bytes);
        source = vips_source_new_from_blob(blob);
        vips_area_unref(VIPS_AREA(blob));
    } else {
        VipsSourceCustom *custom = vips_source_custom_new();
        g_signal_connect(custom, "read", G_CALLBACK(on_src_read), rd);
        g_signal_connect(custom, "seek", G_CALLBACK(on_src_seek), rd);
        source = VIPS_SOURCE(custom);
    }
    if (!source)
        return imgproc__fail_vips(err, IMGPROC_E_IO, "source");
    *out = source;
    return 0;
}

int imgproc_run_fd(int in_fd, const imgproc_job_t *job, const imgproc_opts_t *opts, const char *dst,
                   imgproc_out_t *out, imgproc_err_t *err)
{
    int rc = 0;
    sink_t sink = {.fd = -1};
    deadline_t dl = {0};
    src_t rd = {.fd = -1, .dl = &dl};
    imgproc_probe_t probe;
    imgproc__plan_t plan;
    VipsSource *source = NULL;
    VipsTargetCustom *target = NULL;
    VipsImage *ctx = NULL;
    VipsImage **t;

    if (out)
        memset(out, 0, sizeof(*out));
    if (in_fd < 0 || !job || !opts || !dst || job->quality > 100)
        return imgproc__fail(err, IMGPROC_E_INVALID, "bad arguments");
    /* a job's own quality (a preset's) replaces the process-wide one of its format */
    imgproc_opts_t job_opts = *opts;
    if (job->quality) {
        job_opts.jpeg_quality = job->quality;
        job_opts.webp_quality = job->quality;
        job_opts.avif_quality = job->quality;
        job_opts.jxl_quality = job->quality;
    }
    opts = &job_opts;
    if (!imgproc_fmt_is_output(job->out_fmt))
        return imgproc__fail(err, IMGPROC_E_INVALID, "bad output format");
    if (!opts_ok(opts, job->out_fmt))
        return imgproc__fail(err, IMGPROC_E_INVALID, "bad %s options",
                             imgproc_fmt_name(job->out_fmt));

    if (job->timeout_ms)
        dl.at_ns = mono_ns() + (uint64_t)job->timeout_ms * 1000000u;
    if ((rc = imgproc__probe_fd(in_fd, &probe, err)) != 0)
        goto out_close_in;
    rd.fd = in_fd;
    rd.size = (gint64)probe.file_bytes;
    if ((rc = imgproc_plan_check(&probe, job, err)) != 0)
        goto out_close_in;
    (void)imgproc__plan(&probe, job, &plan);
    if (job->out_fmt == IMGPROC_FMT_WEBP &&
        (plan.out_w > IMGPROC__WEBP_MAX_DIM || plan.out_h > IMGPROC__WEBP_MAX_DIM)) {
        rc = imgproc__fail(err, IMGPROC_E_TOO_LARGE, "webp output %ux%u over 16383", plan.out_w,
                           plan.out_h);
        goto out_close_in;
    }

    /* The output is created (not yet truncated) first so that a destination that is the
     * source itself is refused instead of destroyed. */
    if ((sink.fd = open(dst, O_WRONLY | O_CREAT | O_CLOEXEC, 0644)) < 0) {
        rc = imgproc__fail(err, IMGPROC_E_IO, "create %s: %s", dst, strerror(errno));
        goto out_close_in;
    }
    struct stat sst, dst_st;
    if (fstat(in_fd, &sst) != 0 || fstat(sink.fd, &dst_st) != 0) {
        rc = imgproc__fail(err, IMGPROC_E_IO, "stat: %s", strerror(errno));
        goto out_close_dst;
    }
    if (sst.st_dev == dst_st.st_dev && sst.st_ino == dst_st.st_ino) {
        rc = imgproc__fail(err, IMGPROC_E_INVALID, "destination is the source");
        goto out_close_dst;
    }
    if (ftruncate(sink.fd, 0) != 0) {
        rc = imgproc__fail(err, IMGPROC_E_IO, "truncate %s: %s", dst, strerror(errno));
        goto out_close_dst;
    }

    /* JPEG to JPEG by planes (jpegfast.c). When the file declines it (a warning, a colour
     * space it does not take), libvips does the job from the start. */
    if (imgproc__jpegfast_takes(&probe, job, &plan)) {
        rc =
            imgproc__jpegfast(in_fd, &plan, (int)opts->jpeg_quality, imgproc_full_chroma(job, opts),
                              deadline_cancelled, &dl, sink_write, &sink, err);
        if (rc != IMGPROC__JPEGFAST_DECLINED) {
            if (rc == 0 && out) {
                out->width = plan.out_w;
                out->height = plan.out_h;
                out->bytes = sink.bytes;
            }
            goto out_close_dst;
        }
        rc = 0;
        sink.bytes = 0;
        sink.failed = false;
        if (ftruncate(sink.fd, 0) != 0 || lseek(sink.fd, 0, SEEK_SET) != 0) {
            rc = imgproc__fail(err, IMGPROC_E_IO, "truncate %s: %s", dst, strerror(errno));
            goto out_close_dst;
        }
    }

    /* The PNG fast path reads the descriptor itself; every other path loads from a source. */
    if (!plan.png_shrink_h && (rc = make_source(in_fd, &probe, &rd, &source, err)) != 0)
        goto out_close_dst;
    ctx = vips_image_new();
    t = (VipsImage **)vips_object_local_array(VIPS_OBJECT(ctx), 8);

    VipsImage *img;
    /* Convert to sRGB through the embedded profile when there is one; without one the
     * thumbnail's processing-space conversion already ends in sRGB / B_W. CMYK (4-band
     * JPEG) is the exception: that conversion already went through its profile. */
    const char *export_profile =
        probe.has_icc && !(probe.fmt == IMGPROC_FMT_JPEG && probe.bands == 4) ? "srgb" : NULL;
    VipsSize size = VIPS_SIZE_DOWN; /* no mode ever enlarges */
    VipsInteresting crop = !plan.crop       ? VIPS_INTERESTING_NONE
                           : plan.attention ? VIPS_INTERESTING_ATTENTION
                                            : VIPS_INTERESTING_CENTRE;
    if (job->naive) {
        /* The load harness's naive service: the whole image decoded into memory first. */
        if (!(t[0] = vips_image_new_from_source(source, LOAD_OPTIONS, "access",
                                                VIPS_ACCESS_SEQUENTIAL, NULL))) {
            rc = pipeline_fail(err, NULL, &dl, "decode");
            goto out_unref;
        }
        deadline_watch(&dl, t[0]);
        if (!(t[1] = vips_image_copy_memory(t[0]))) {
            rc = pipeline_fail(err, NULL, &dl, "decode");
            goto out_unref;
        }
        if (vips_thumbnail_image(t[1], &t[2], (int)plan.box_w, "height", (int)plan.box_h, "size",
                                 size, "crop", crop, "no_rotate", TRUE, "export_profile",
                                 export_profile, NULL)) {
            rc = pipeline_fail(err, NULL, &dl, "thumbnail");
            goto out_unref;
        }
    } else if (plan.frames > 1) {
        if ((rc = thumb_frames(source, &probe, &plan, export_profile, &dl, ctx, &t[2], err)) != 0)
            goto out_unref;
    } else if (probe.fmt == IMGPROC_FMT_GIF || probe.fmt == IMGPROC_FMT_TIFF ||
               probe.fmt == IMGPROC_FMT_HEIC || probe.fmt == IMGPROC_FMT_AVIF) {
        /* Loaded at full size, first page or frame, then thumbnailed: never through
         * vips_thumbnail_source(), which would pick a TIFF pyramid level or a HEIF's
         * embedded thumbnail and so break the plan's exact sizes. */
        if (!(t[0] = vips_image_new_from_source(source, LOAD_OPTIONS, "access",
                                                VIPS_ACCESS_SEQUENTIAL, NULL))) {
            rc = pipeline_fail(err, NULL, &dl, "decode");
            goto out_unref;
        }
        deadline_watch(&dl, t[0]);
        if (vips_thumbnail_image(t[0], &t[2], (int)plan.box_w, "height", (int)plan.box_h, "size",
                                 size, "crop", crop, "no_rotate", TRUE, "export_profile",
                                 export_profile, NULL)) {
            rc = pipeline_fail(err, NULL, &dl, "thumbnail");
            goto out_unref;
        }
    } else if (plan.png_shrink_h) {
        /* PNG shrunk >= 2x on both axes: the box shrink in the row decoder (pngfast.c). */
        if ((rc = imgproc__pngfast(in_fd, &probe, &plan, export_profile, deadline_cancelled, &dl,
                                   &t[2], err)) != 0)
            goto out_unref;
    } else if (vips_thumbnail_source(source, &t[2], (int)plan.box_w, "height", (int)plan.box_h,
                                     "size", size, "crop", crop, "no_rotate", TRUE,
                                     "export_profile", export_profile, "option_string",
                                     LOAD_OPTIONS, NULL)) {
        rc = pipeline_fail(err, NULL, &dl, "thumbnail");
        goto out_unref;
    }
    img = t[2];

    if (probe.orientation != 1) {
        /* Rotation needs random access: materialise the (already resized) image. */
        deadline_watch(&dl, img);
        if (!(t[3] = vips_image_copy_memory(img)) || vips_copy(t[3], &t[4], NULL)) {
            rc = pipeline_fail(err, NULL, &dl, "decode");
            goto out_unref;
        }
        vips_image_set_int(t[4], VIPS_META_ORIENTATION, (int)probe.orientation);
        if (vips_autorot(t[4], &t[5], NULL)) {
            rc = pipeline_fail(err, NULL, &dl, "rotate");
            goto out_unref;
        }
        img = t[5];
    }
    if (job->out_fmt == IMGPROC_FMT_JPEG && vips_image_hasalpha(img)) {
        /* JPEG has no alpha: composite on white, as browsers show transparency. */
        VipsArrayDouble *white = vips_array_double_newv(1, 255.0);
        int frc = vips_flatten(img, &t[6], "background", white, NULL);
        vips_area_unref(VIPS_AREA(white));
        if (frc) {
            rc = pipeline_fail(err, NULL, &dl, "flatten");
            goto out_unref;
        }
        img = t[6];
    }
    bool strip = true;
    if (opts->keep_icc && vips_image_get_typeof(img, VIPS_META_ICC_NAME)) {
        if (!(t[7] = keep_only_icc(img))) {
            rc = pipeline_fail(err, NULL, &dl, "metadata");
            goto out_unref;
        }
        img = t[7];
        strip = false;
    }

    if (deadline_passed(&dl)) {
        rc = pipeline_fail(err, NULL, &dl, "start");
        goto out_unref;
    }
    deadline_watch(&dl, img);
    target = vips_target_custom_new();
    g_signal_connect(target, "write", G_CALLBACK(on_write), &sink);
    g_signal_connect(target, "end", G_CALLBACK(on_end), &sink);
    /* Decoding happens here, as the saver pulls pixels: truncation surfaces now. */
    if (save(img, job->out_fmt, opts, strip, VIPS_TARGET(target))) {
        rc = pipeline_fail(err, &sink, &dl, "process");
        goto out_unref;
    }
    if (out) {
        out->width = (uint32_t)img->Xsize;
        out->height = (uint32_t)img->Ysize / plan.frames; /* of one frame */
        out->bytes = sink.bytes;
    }

out_unref:
    deadline_unwatch(&dl);
    VIPS_UNREF(target);
    VIPS_UNREF(ctx);
    VIPS_UNREF(source);
    free(rd.buf);
out_close_dst:
    if (close(sink.fd) != 0 && rc == 0)
        rc = imgproc__fail(err, IMGPROC_E_IO, "close %s: %s", dst, strerror(errno));
out_close_in:
    return rc;
}
