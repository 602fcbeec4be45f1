/* imgproc — everything that touches pixels or image headers: magic-byte sniffing,
 * header probe (no pixel decode), the memory estimator admission rests on, and the
 * libvips thumbnail / crop / conversion. Knows nothing of HTTP. */
#ifndef THUMBGATE_IMGPROC_H
#define THUMBGATE_IMGPROC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum {
    IMGPROC_FMT_UNKNOWN = 0,
    IMGPROC_FMT_JPEG,
    IMGPROC_FMT_PNG,
    IMGPROC_FMT_WEBP,
    IMGPROC_FMT_AVIF, /**< AV1 in HEIF (heifload / heifsave with aom) */
    IMGPROC_FMT_JXL,  /**< JPEG XL: output only (libvips 8.14 marks jxlload untrusted) */
    IMGPROC_FMT_GIF,  /**< libnsgif in, cgif out */
    IMGPROC_FMT_HEIC, /**< HEVC in HEIF: input only (heifload, libde265) */
    IMGPROC_FMT_TIFF, /**< input only (tiffload); the first page */
    IMGPROC_FMT__COUNT,
} imgproc_fmt_t;

/** Error codes (returned negated by the int functions). */
enum {
    IMGPROC_OK = 0,
    IMGPROC_E_UNSUPPORTED = 1, /**< not a format we decode (bad magic) */
    IMGPROC_E_CORRUPT = 2,     /**< malformed header, truncated or corrupt data */
    IMGPROC_E_TOO_LARGE = 3,   /**< dimensions beyond what we accept */
    IMGPROC_E_IO = 4,          /**< cannot read the source or write the output */
    IMGPROC_E_NOMEM = 5,       /**< an allocation failed */
    IMGPROC_E_INVALID = 6,     /**< bad job parameters (caller bug or bad request) */
    IMGPROC_E_TIMEOUT = 7,     /**< the job ran past its deadline and was cancelled */
};

typedef struct {
    int code;      /**< IMGPROC_E_* */
    char msg[256]; /**< human text, e.g. the libvips error buffer at the failure point */
} imgproc_err_t;

/** What the header says; filled without decoding any pixel. */
typedef struct {
    imgproc_fmt_t fmt;
    uint32_t width, height; /**< as stored, before EXIF orientation */
    uint32_t bands;         /**< colour bands including alpha (1..4) */
    uint32_t bit_depth;     /**< bits per sample as stored (1, 2, 4, 8, 16) */
    bool progressive;       /**< progressive JPEG or Adam7-interlaced PNG */
    bool has_alpha;
    bool lossless;               /**< WebP VP8L */
    uint32_t pages;              /**< frames (animated WebP/GIF, TIFF pages, HEIF images);
                                      1 otherwise */
    uint32_t orientation;        /**< EXIF orientation 1..8 (1 when absent or absurd) */
    uint32_t chroma_h, chroma_v; /**< JPEG max sampling factors (2,2 = 4:2:0; 1,1 = 4:4:4) */
    bool has_icc;                /**< an embedded ICC profile (JPEG APP2, PNG iCCP, WebP ICCP) */
    uint64_t file_bytes;       /**< size of the encoded image (libwebp needs all of it in memory) */
    uint64_t _jpeg_coef_bytes; /**< private: libjpeg whole-image coefficient buffer size */
    uint64_t _meta_bytes;      /**< private: EXIF/ICC/XMP/text bytes the decoder keeps */
    uint64_t _chunk_bytes;     /**< private: TIFF: the decoded bytes of the largest strip or of
                                    one row of tiles, which libtiff decodes whole */
    uint32_t _flags;           /**< private: IMGPROC__F_* facts for the estimator */
} imgproc_probe_t;

typedef enum {
    IMGPROC_OP_FIT =
        0,            /**< fit inside width x height keeping aspect, no upscaling (0 = side free) */
    IMGPROC_OP_COVER, /**< cover-crop to width x height (centre), never enlarging: a source
                           smaller than the box on a side gives a result smaller than the box
                           on that side (a 20000x1 strip as 290x290 gives 290x1) */
    IMGPROC_OP_CONVERT, /**< full size, other format */
    IMGPROC_OP_SMART,   /**< as COVER (same shrink, same output size), but the crop window is
                             placed by libvips' attention search (edges, skin, saturation) on
                             the shrunk image instead of at the centre */
} imgproc_op_t;

typedef struct {
    imgproc_op_t op;
    uint32_t width, height; /**< target box; for FIT one of them may be 0 (free side) */
    imgproc_fmt_t out_fmt;
    bool naive;          /**< decode the whole image into memory first (load-harness naive mode) */
    uint32_t timeout_ms; /**< deadline of imgproc_run() from its start; 0 = none */
    uint64_t max_pixels; /**< bound on every image of the pipeline (source, loaded, resized,
                              output); 0 = none. Plans over it fail with TOO_LARGE. */
    uint32_t webp_quality; /**< for the estimate: the imgproc_opts_t.webp_quality the job will
                                run with (libwebp's memory grows with it); 0 = assume 100 */
    uint32_t quality;      /**< encoder quality 1..100 of this job (a preset's); 0 = the
                                imgproc_opts_t quality of the output format. The estimate uses it
                                for WebP in place of webp_quality. */
    uint32_t avif_effort;  /**< for the deadline check: imgproc_opts_t.avif_effort of the job
                                (libheif encodes in one call the deadline cannot stop) */
    uint32_t max_frames;   /**< animated outputs: refuse sources with more frames; 0 = none */
} imgproc_job_t;

typedef struct {
    uint32_t jpeg_quality;    /**< 1..100 */
    uint32_t webp_quality;    /**< 1..100 */
    uint32_t png_compression; /**< 0..9 */
    uint32_t avif_quality;    /**< 1..100 */
    uint32_t avif_effort;     /**< 0..9 (aom cpu-used 9..0): CPU time, little memory */
    uint32_t jxl_quality;     /**< 1..100 */
    uint32_t jxl_effort;      /**< 3..7 (8 and 9 take 4x the memory: refused) */
    bool keep_icc;            /**< keep the ICC profile (else all metadata is stripped) */
    bool jpeg_420;            /**< JPEG chroma at half resolution each way (4:2:0) at every
                                   quality, not only under 90 (libvips' "auto"): mezzanine
                                   levels, whose chroma is then a quarter of their bytes */
} imgproc_opts_t;

typedef struct {
    uint32_t width, height; /**< of the output */
    uint64_t bytes;         /**< size of the output file */
} imgproc_out_t;

/** Once per process before any other call and before starting threads; sets libvips up
 *  for a server (cache off, vips concurrency 1, only the JPEG/PNG/WebP loaders, glibc
 *  malloc settings — see imgproc.c) and warms every codec path up (~0.1 s) so that job
 *  estimates, which assume a warm process, hold from the first job. 0 or -IMGPROC_E_*. */
int imgproc_init(const char *argv0);
/** At exit. */
void imgproc_shutdown(void);

/** Format from the first bytes (at least 12 should be given). */
imgproc_fmt_t imgproc_sniff(const void *buf, size_t len);
/** "jpeg", "png", "webp", "avif", "jxl", "gif", "heic", "tiff" (NULL for unknown). */
const char *imgproc_fmt_name(imgproc_fmt_t fmt);
/** "image/jpeg" ... ("application/octet-stream" for unknown). */
const char *imgproc_fmt_mime(imgproc_fmt_t fmt);
/** Output file extension (no dot, case-insensitive: jpg, jpeg, png, webp, avif, jxl, gif) to
 *  format; input-only formats (heic, tiff) are UNKNOWN here. */
imgproc_fmt_t imgproc_fmt_from_ext(const char *ext, size_t len);

/** Probes an image in memory (borrows @p buf). Parses headers only: no pixel decode, no
 *  allocation, bounded work whatever the input. 0 or -IMGPROC_E_* with @p err filled:
 *  UNSUPPORTED for unknown magic (and empty input), CORRUPT for malformed or truncated
 *  headers, TOO_LARGE for dimensions the decoder refuses. */
int imgproc_probe_buf(const void *buf, size_t len, imgproc_probe_t *out, imgproc_err_t *err);
/** Probes a file: reads a 64 KiB prefix, plus small bounded reads when the header goes
 *  further (JPEG SOF after big APP segments, WebP chunks); ~15 us. Same results as
 *  imgproc_probe_buf() on the whole file, IO for open/read errors. */
int imgproc_probe_file(const char *path, imgproc_probe_t *out, imgproc_err_t *err);

/** imgproc_probe_file() on an open descriptor (borrowed; read with pread only), so a caller
 *  can probe and later decode the same bytes without opening the file twice. */
int imgproc_probe_fd(int fd, imgproc_probe_t *out, imgproc_err_t *err);

/** True for the formats imgproc_run() can write (jpeg, png, webp, avif, jxl, gif). */
bool imgproc_fmt_is_output(imgproc_fmt_t fmt);
/** True when @p fmt keeps every frame of an animated source (webp, gif). */
bool imgproc_fmt_is_animated(imgproc_fmt_t fmt);

/** Largest WebP side (libwebp): a WebP output above it fails; check before admission. */
#define IMGPROC_WEBP_MAX_DIM 16383u

/** Peak bytes the job will add to a warm process, computed from the header alone:
 *  shrink-on-load, libjpeg's coefficient buffer for progressive JPEG, whole-image buffers
 *  for interlaced PNG / lossless WebP / rotation / crop / naive decode / short images,
 *  metadata, encoders. Checked against measured peaks by `make calibrate` (a grid) and
 *  `make estimator-attack` (an adversarial search, in fresh children and in the running
 *  server). 0 for a job imgproc_plan_check() refuses. */
uint64_t imgproc_estimate(const imgproc_probe_t *probe, const imgproc_job_t *job);

/** 0 when @p job can run on @p probe; -IMGPROC_E_INVALID for a bad job (FIT with both sides
 *  0, COVER with a side 0, a box over 10^7), -IMGPROC_E_TOO_LARGE when the source, the image
 *  as loaded, resized or output is over job->max_pixels, or for a WebP whose frame libwebp
 *  could not decode within job->timeout_ms (one call the deadline cannot stop; it runs at
 *  the job's start: IMGPROC__WEBP_DECODE_NS_PX), and likewise for a HEIC/AVIF source's
 *  decode and an AVIF or JPEG XL output's encode. @p err filled. Call before admission:
 *  imgproc_estimate() and imgproc_output_dims() give 0 for such jobs. */
int imgproc_plan_check(const imgproc_probe_t *probe, const imgproc_job_t *job, imgproc_err_t *err);

/** Output dimensions the job will produce (for max_output checks before running); exact,
 *  after EXIF orientation. 0x0 for a job imgproc_plan_check() refuses. No mode enlarges:
 *  FIT and one-side fit stay within the source; COVER gives min(box, source) on each side
 *  after the shrink that makes the source cover the box (exactly width x height when the
 *  source covers the box); CONVERT keeps the size. */
void imgproc_output_dims(const imgproc_probe_t *probe, const imgproc_job_t *job, uint32_t *w,
                         uint32_t *h);

/** True when the output of @p job under @p opts keeps its chroma at full resolution: PNG,
 *  GIF and JPEG XL outputs, JPEG (unless opts->jpeg_420) and AVIF from quality 90 up
 *  (libvips' "auto" subsampling, on the job's own quality when it has one); lossy WebP
 *  never. */
bool imgproc_full_chroma(const imgproc_job_t *job, const imgproc_opts_t *opts);

/**
 * Runs @p job on the file @p src and writes the encoded result to @p dst (created or
 * truncated; the caller renames it into place). Truncated/corrupt input is an error,
 * never a grey half-image. Thread-safe; call from worker threads only.
 * The source is probed again on the descriptor that is decoded, so the job always matches
 * imgproc_output_dims()/imgproc_estimate() for those bytes. Output: EXIF orientation
 * applied, sRGB (through the embedded profile if any), alpha flattened on white for JPEG,
 * all metadata stripped except, with keep_icc, the (sRGB) ICC profile; animated WebP and GIF
 * give every frame (delays and loop kept) as WebP or GIF output, their first frame in a still
 * format; multi-page TIFF its first page, HEIF its primary image. @p out has one frame's size.
 * Originals must be replaced by rename, never rewritten in place. 0 or -IMGPROC_E_* with @p err
 * filled (and @p dst possibly partial: caller unlinks): CORRUPT (bad data, also mid-decode),
 * UNSUPPORTED, TOO_LARGE (WebP output over 16383 px), IO (open/write/close), NOMEM, INVALID (bad
 * job/opts, or @p dst is @p src), TOO_LARGE (over job->max_pixels), TIMEOUT (past job->timeout_ms:
 * libvips' evaluation is killed between strips of the pipeline, so a job stops within one strip of
 * its deadline; a single indivisible decode step — libjpeg's scan pass over a progressive file,
 * libpng's read of an interlaced one — finishes first).
 */
int imgproc_run(const char *src, const imgproc_job_t *job, const imgproc_opts_t *opts,
                const char *dst, imgproc_out_t *out, imgproc_err_t *err);

/** imgproc_run() on an open source descriptor (borrowed, not closed; read from offset 0
 *  with pread/its own reads): the caller opens the source once for probe and decode. */
int imgproc_run_fd(int src_fd, const imgproc_job_t *job, const imgproc_opts_t *opts,
                   const char *dst, imgproc_out_t *out, imgproc_err_t *err);

/** Returns freed heap to the OS (malloc_trim(0)); the server calls it when no job is in
 *  flight. Takes a few ms on a large heap; harmless to call often. */
void imgproc_trim(void);

/** A tiny libvips operation for /healthz; true when libvips works. */
bool imgproc_selftest(void);

/** libvips tracked memory now and its high-water (bytes). */
void imgproc_vips_mem(uint64_t *now, uint64_t *highwater);

/**
 * True when @p buf holds a whole image of format @p fmt: the JPEG marker stream reaches
 * EOI, the PNG chunk chain reaches IEND, the WebP RIFF size fits. Bytes after the end
 * (e.g. a motion-photo trailer) are allowed. Linear scan, no allocation, no decode: a
 * truncated upload is refused at once instead of failing every later decode.
 */
bool imgproc_is_complete(const void *buf, size_t len, imgproc_fmt_t fmt);

/** Text for an IMGPROC_E_* code. */
const char *imgproc_strerror(int code);

#endif
