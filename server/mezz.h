/* mezz — mezzanine levels (issue 14): a downscaled, upright JPEG copy of an original,
 * made once by its own admitted job and kept in the cache beside the original's results
 * (cache/<stem>@/<gen>/@level-<size>.jpg, so a replaced or deleted original drops it with
 * them). A derived request whose output the level is at least k times larger than is made
 * from the level instead of the original, with exactly the dimensions the original gives.
 * Pure decisions on probes and jobs: no I/O, no HTTP.
 *
 * The levels' chroma: 4:2:0 at every quality (imgproc_opts_t.jpeg_420). On the bench's
 * 2560x1600 level at quality 95 (imgbench, one thread, in-process), 4:2:0 against 4:4:4:
 * 1500 px outputs 45.3 img/s against 33.5, 1000 px 54.8 against 37.9; 1.26 MB against
 * 1.53 on disk. A 4:2:0 output (JPEG under quality 90, WebP, AVIF under 90) has chroma at
 * half its size, so a level k times larger has chroma k times the output's too. A
 * full-chroma output (PNG, GIF, JPEG XL, JPEG and AVIF from 90) takes the level at its
 * chroma's size, at least MEZZ_CHROMA_RATIO times its own. */
#ifndef THUMBGATE_MEZZ_H
#define THUMBGATE_MEZZ_H

#include <stdbool.h>
#include <stddef.h>

#include "config/cfg.h"
#include "imgproc/imgproc.h"

/** The cache variant name of the level for @p cfg ("@level-1280.jpg"), or of the small
 *  level ("@level-1280-half.jpg"): '@' is outside the key charset, so no derived URL names
 *  them (store.h STORE_LEVEL_MARK). */
void mezz_variant(const cfg_t *cfg, bool small, char *out, size_t outlen);

/** A full-chroma output is served by a 4:2:0 level whose chroma is at least this many
 *  times finer than it (or k, when larger): the level's chroma went through libjpeg's 2x2
 *  box and is upsampled again by its decoder, which blurs more than a resize at the same
 *  ratio. PNG outputs of the mezzanine test's photo (independent noise in each band: more
 *  chroma detail than photos have), from the direct result, with the chroma 1.35 times
 *  the output's: 44.1 dB; 1.7 times: 45.6; 2.1-2.2 times: 46.4-48.3. */
#define MEZZ_CHROMA_RATIO 2.0

/** Least long side of a small level (pixels). */
#define MEZZ_SMALL_MIN 320

/** A small level is encoded this much over mezzanine.quality (at most 100). Its pixels are
 *  the original's at a quarter scale, denser in detail than the level's, so the same
 *  quality loses more. PNG outputs at its k boundary (480 px from the mezzanine test's
 *  650 px small level), from the direct result, made from the original at 97: 45.3-45.5
 *  dB, at 98: 46.9-47.1, at 100: 50.4-50.8; made from the level (as now) at 98: 46.3; the
 *  level at 95 on its own boundary: 47.0-47.2. From the bench's 1280 px small level a
 *  160 px JPEG takes 6.9 ms of a core at 98 (5.4 at 95, 9.9 at 100; 13.8 from the
 *  2560 px level). */
#define MEZZ_SMALL_QUALITY_UP 3

/** True when the level probed as @p lvl gets a small level: half its long side, when that
 *  is at least MEZZ_SMALL_MIN. Then @p job makes it from the level (fit, JPEG; op and box
 *  only), in the level's job right after the level. The small level serves the outputs it
 *  is k times larger than, which would otherwise decode the four times larger level: from
 *  the bench's 2560 px level, widths 160-960 take 14-28 ms of a core, from a 1280 px one
 *  5-10. Made from the level, not the original: 25 ms instead of 70 for the bench's 16 MP
 *  photo, for 0.7 dB (at its k boundary in the mezzanine test, 46.3 dB from the direct
 *  result against 47.0 made from the original). */
bool mezz_small_job(const imgproc_probe_t *lvl, imgproc_job_t *job);

/** True when an original probed as @p orig gets a level under @p cfg: levels on, admit
 *  mode, one frame, 8 bits or fewer, no alpha (a JPEG level would flatten it), and a long
 *  side at least 1.5 x mezzanine.size. Then @p job is the job that makes it from the
 *  original (JPEG, op and box only: the caller sets the rest): a fit inside half the
 *  original's long side, or inside mezzanine.size when that is larger. Half, because at
 *  k = 4/3 it serves outputs up to 2/3 of the original: every srcset width of a 16 MP
 *  photo up to 1920 px. (It is made as vips_thumbnail would make it: a shrink of 2 is
 *  left to the resize, so the original is decoded at full size.) */
bool mezz_level_job(const cfg_t *cfg, const imgproc_probe_t *orig, imgproc_job_t *job);

/** The probe the level of @p orig will have once @p lj (from mezz_level_job) has made it:
 *  an upright 8-bit JPEG of lj's output size, grey or sRGB. For deciding, before the level
 *  exists, whether it will serve a request (mezz_job_on_level); the level's own probe
 *  decides again when the request is made from it. */
void mezz_level_probe(const imgproc_probe_t *orig, const imgproc_job_t *lj, imgproc_probe_t *lvl);

/** True when the level probed as @p lvl may serve @p req (a job on the original @p orig,
 *  encoded with @p opts): not a conversion, the level at least mezzanine.k times the
 *  output's scale on both axes, and its chroma too (the levels' chroma, above). Then @p out is the
 * job to run on the level, whose output dimensions are exactly imgproc_output_dims(orig, req): @p
 * req itself when it gives them on the level, else a fit to one or both of those sides whose
 * rounding lands on them, else the cover-crop to them (false when none does). */
bool mezz_job_on_level(const cfg_t *cfg, const imgproc_opts_t *opts, const imgproc_probe_t *orig,
                       const imgproc_job_t *req, const imgproc_probe_t *lvl, imgproc_job_t *out);

#endif
