/* Integration tests of issue 15's URL features against the real binary: signed URLs
 * (auth.url_key; missing, bad, truncated and foreign signatures, remembered cache hits,
 * originals unsigned, the README's openssl one-liner, an RFC 4231 vector), presets (per-preset
 * quality reaching the encoder, unknown preset, limits.presets_only), .auto negotiation from
 * Accept (q-values, wildcards, alpha, Vary, per-format caching, the remembered-hit path),
 * smart crops (exact box, the crop placed on the interesting part) and pixel ratios (box
 * scaled, output limits, the allow-list on the written size). */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <vips/vips.h>

#include "imgproc/imgproc.h"
#include "server/auth.h"
#include "tests/tg_harness.h"

#define KEY "0123456789abcdef0123"

static tg_server_t S;

static void teardown(void)
{
    tg_cleanup(&S);
}

/* @p path with ?sig= of its path under KEY appended, into @p out. */
static const char *signed_url(const char *path, char *out, size_t n)
{
    char sig[AUTH_SIG_LEN + 1];
    ck_assert_int_eq(auth_url_sign(KEY, path, strlen(path), sig), 0);
    snprintf(out, n, "%s?sig=%s", path, sig);
    return out;
}

static long get(const char *path, const char *const *hdrs, tg_resp_t *r)
{
    return tg_http(&S, "GET", path, NULL, 0, hdrs, r);
}

/* GET @p path: status @p status, and the JSON "error" @p code when not 200. */
static void expect(const char *path, const char *const *hdrs, long status, const char *code)
{
    tg_resp_t r;
    long got = get(path, hdrs, &r);
    ck_assert_msg(got == status, "%s: %ld %.*s (want %ld)", path, got, (int)r.len,
                  r.body ? r.body : "", status);
    if (code != NULL) {
        char want[96];
        snprintf(want, sizeof(want), "\"error\":\"%s\"", code);
        ck_assert_msg(r.body && strstr(r.body, want), "%s: %.*s (want %s)", path, (int)r.len,
                      r.body, code);
    }
    tg_resp_free(&r);
}

/* GET @p path: 200, Content-Type @p mime and exactly @p w x @p h. Returns the body size. */
static size_t expect_image(const char *path, const char *const *hdrs, const char *mime, int w,
                           int h)
{
    tg_resp_t r;
    ck_assert_msg(get(path, hdrs, &r) == 200, "%s: %ld %.*s", path, r.status, (int)r.len,
                  r.body ? r.body : "");
    char ct[64];
    ck_assert(tg_header(&r, "content-type", ct, sizeof(ct)));
    ck_assert_msg(strcmp(ct, mime) == 0, "%s: %s, want %s", path, ct, mime);
    int gw, gh;
    ck_assert(tg_dims(r.body, r.len, &gw, &gh));
    ck_assert_msg(gw == w && gh == h, "%s: %dx%d, want %dx%d", path, gw, gh, w, h);
    size_t len = r.len;
    tg_resp_free(&r);
    return len;
}

/* ---- signed URLs ---------------------------------------------------------------------- */

START_TEST(test_url_sign_known_vector)
{
    /* RFC 4231 test case 2: HMAC-SHA256("Jefe", "what do ya want for nothing?") =
     * 5bdcc146...64ec3843, here in unpadded base64url */
    char sig[AUTH_SIG_LEN + 1];
    const char *data = "what do ya want for nothing?";
    ck_assert_int_eq(auth_url_sign("Jefe", data, strlen(data), sig), 0);
    ck_assert_str_eq(sig, "W9zBRr9gdU5qBCQmCJV1x1oAPwidJzmDnexYuWTsOEM");
    /* only @p len bytes are signed */
    ck_assert_int_eq(auth_url_sign(KEY, "/img/cat_290x290.webp?x", 21, sig), 0);
    ck_assert_str_eq(sig, "rNYyomgOOJHdDLDUpRd9rfFA1fDZWuNcS-xm_Fm8wRY");
}
END_TEST

START_TEST(test_url_signatures)
{
    const char *env[] = {"THUMBGATE_AUTH_URL_KEY=" KEY, "THUMBGATE_THREADS=1", NULL};
    tg_start(&S, env, NULL);
    tg_put_image(&S, "/img/cat.jpg", 800, 600, "jpg"); /* writes are not signed */
    char u[256], v[sizeof(u) + 64]; /* v: u with a few more bytes */

    expect("/img/cat_200x200.jpg", NULL, 403, "bad_signature");
    expect("/img/cat_200x200.jpg?sig=", NULL, 403, "bad_signature");
    expect("/img/cat_200x200.jpg?sig=AAAA", NULL, 403, "bad_signature");
    expect("/img/cat_200x200.jpg?sig=%2F%2B", NULL, 403, "bad_signature");
    /* another path's signature, and a truncated or extended one */
    signed_url("/img/cat_200x201.jpg", u, sizeof(u));
    snprintf(v, sizeof(v), "/img/cat_200x200.jpg%s", strchr(u, '?'));
    expect(v, NULL, 403, "bad_signature");
    signed_url("/img/cat_200x200.jpg", u, sizeof(u));
    snprintf(v, sizeof(v), "%.*s", (int)strlen(u) - 1, u);
    expect(v, NULL, 403, "bad_signature");
    snprintf(v, sizeof(v), "%sA", u);
    expect(v, NULL, 403, "bad_signature");
    /* signed: served, also with other parameters around */
    expect_image(u, NULL, "image/jpeg", 200, 150);
    snprintf(v, sizeof(v), "/img/cat_200x200.jpg?a=1&%s&b", strchr(u, '?') + 1);
    expect_image(v, NULL, "image/jpeg", 200, 150);
    /* the signature comes first: an unsigned bad size learns nothing else */
    expect("/img/cat_0x0.jpg", NULL, 403, "bad_signature");
    expect(signed_url("/img/cat_0x0.jpg", u, sizeof(u)), NULL, 400, "bad_size");
    expect("/img/cat@thumb", NULL, 403, "bad_signature");
    expect("/img/cat_100x100.auto", NULL, 403, "bad_signature");
    /* originals are not signed */
    expect("/img/cat.jpg", NULL, 200, NULL);
    expect("/img/cat.jpg?sig=whatever", NULL, 200, NULL);

    /* a remembered cache hit (one loop: every request meets the loop that remembered it)
     * still needs its signature */
    double hits = tg_metric(&S, "thumbgate_cache_hits_total");
    signed_url("/img/cat_120x120.png", u, sizeof(u));
    expect_image(u, NULL, "image/png", 120, 90);
    expect_image(u, NULL, "image/png", 120, 90);
    expect_image(u, NULL, "image/png", 120, 90);
    ck_assert(tg_wait_metric(&S, "thumbgate_cache_hits_total", hits + 2, 10000));
    expect("/img/cat_120x120.png", NULL, 403, "bad_signature");
    expect("/img/cat_120x120.png?sig=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", NULL, 403,
           "bad_signature");
    expect_image(u, NULL, "image/png", 120, 90);
    ck_assert_int_eq(tg_stop(&S), 0);
}
END_TEST

/* The README's shell one-liner signs what the server accepts (when openssl is installed). */
START_TEST(test_url_sign_one_liner)
{
    const char *path = "/img/cat_64x64c.webp";
    char cmd[512], line[128] = "";
    snprintf(cmd, sizeof(cmd),
             "command -v openssl >/dev/null || exit 3; printf '%%s' '%s' | openssl dgst -sha256 "
             "-hmac '%s' -binary | base64 | tr '+/' '-_' | tr -d '='",
             path, KEY);
    FILE *p = popen(cmd, "r");
    ck_assert_ptr_nonnull(p);
    bool got = fgets(line, sizeof(line), p) != NULL;
    int rc = pclose(p);
    if (WIFEXITED(rc) && WEXITSTATUS(rc) == 3)
        return; /* no openssl here: the RFC 4231 vector above still checks the HMAC */
    ck_assert(got && rc == 0);
    line[strcspn(line, "\n")] = '\0';
    char sig[AUTH_SIG_LEN + 1];
    ck_assert_int_eq(auth_url_sign(KEY, path, strlen(path), sig), 0);
    ck_assert_str_eq(line, sig);

    const char *env[] = {"THUMBGATE_AUTH_URL_KEY=" KEY, NULL};
    tg_start(&S, env, NULL);
    tg_put_image(&S, "/img/cat.jpg", 300, 200, "jpg");
    char u[256];
    snprintf(u, sizeof(u), "%s?sig=%s", path, line);
    expect_image(u, NULL, "image/webp", 64, 64);
}
END_TEST

START_TEST(test_url_key_from_file)
{
    char path[] = "/tmp/check_url_key_XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, KEY "\n", sizeof(KEY)), (ssize_t)sizeof(KEY));
    close(fd);
    char e[300];
    snprintf(e, sizeof(e), "THUMBGATE_AUTH_URL_KEY_FILE=%s", path);
    const char *env[] = {e, NULL};
    tg_start(&S, env, NULL);
    unlink(path); /* read once, at start */
    tg_put_image(&S, "/cat.png", 300, 200, "png");
    char u[256];
    expect("/cat_30x30.jpg", NULL, 403, "bad_signature");
    expect_image(signed_url("/cat_30x30.jpg", u, sizeof(u)), NULL, "image/jpeg", 30, 20);
}
END_TEST

/* ---- presets -------------------------------------------------------------------------- */

START_TEST(test_url_presets)
{
    const char *env[] = {"THUMBGATE_PRESETS=hi=200x200:cover:webp:95, lo=200x200:cover:webp:5, "
                         "big=300x:fit:jpg, face=120x80:smart:png",
                         NULL};
    tg_start(&S, env, NULL);
    tg_put_image(&S, "/p/cat.jpg", 800, 600, "jpg");
    size_t hi = expect_image("/p/cat@hi", NULL, "image/webp", 200, 200);
    size_t lo = expect_image("/p/cat@lo", NULL, "image/webp", 200, 200);
    /* the same job but the preset's quality: it reached the encoder (noise: a big gap) */
    ck_assert_msg(lo * 2 < hi, "quality 5: %zu bytes, quality 95: %zu", lo, hi);
    expect_image("/p/cat@big", NULL, "image/jpeg", 300, 225);
    expect_image("/p/cat@face", NULL, "image/png", 120, 80);
    double admitted = tg_metric(&S, "thumbgate_jobs_admitted_total");
    expect_image("/p/cat@hi", NULL, "image/webp", 200, 200); /* cached per preset */
    ck_assert_double_eq(tg_metric(&S, "thumbgate_jobs_admitted_total"), admitted);
    expect("/p/cat@nope", NULL, 404, "unknown_preset");
    expect("/p/dog@hi", NULL, 404, "not_found");
    /* '@' is never part of a stored key */
    size_t len;
    void *img = tg_image(10, 10, 3, "png", &len);
    tg_resp_t r;
    ck_assert_int_eq(tg_http(&S, "PUT", "/p/x@hi", img, len, NULL, &r), 400);
    ck_assert_ptr_nonnull(strstr(r.body, "bad_key"));
    tg_resp_free(&r);
    g_free(img);
    /* other derived URLs still work without presets_only */
    expect_image("/p/cat_100x100c.jpg", NULL, "image/jpeg", 100, 100);
}
END_TEST

START_TEST(test_url_presets_only)
{
    const char *env[] = {"THUMBGATE_PRESETS=t=50x50:cover:jpg",
                         "THUMBGATE_LIMITS_PRESETS_ONLY=true", NULL};
    tg_start(&S, env, NULL);
    tg_put_image(&S, "/cat.jpg", 400, 300, "jpg");
    expect_image("/cat@t", NULL, "image/jpeg", 50, 50);
    expect("/cat_50x50c.jpg", NULL, 403, "presets_only");
    expect("/cat.png", NULL, 403, "presets_only");
    expect("/cat_50x50.auto", NULL, 403, "presets_only");
    expect("/cat@u", NULL, 404, "unknown_preset");
    expect("/cat.jpg", NULL, 200, NULL); /* originals as ever */
}
END_TEST

/* ---- .auto ---------------------------------------------------------------------------- */

static void expect_vary(const char *path, const char *const *hdrs)
{
    tg_resp_t r;
    char vary[64];
    ck_assert_int_eq(get(path, hdrs, &r), 200);
    ck_assert_msg(tg_header(&r, "vary", vary, sizeof(vary)), "%s: no Vary", path);
    ck_assert_str_eq(vary, "Accept");
    tg_resp_free(&r);
}

START_TEST(test_url_auto_negotiation)
{
    const char *env[] = {"THUMBGATE_THREADS=1", "THUMBGATE_LIMITS_MAX_OUTPUT_WIDTH=30000", NULL};
    tg_start(&S, env, NULL);
    tg_put_image(&S, "/cat.jpg", 800, 600, "jpg");
    size_t len;
    void *img = tg_image(400, 300, 4, "png", &len); /* with alpha */
    tg_resp_t r;
    ck_assert_int_eq(tg_http(&S, "PUT", "/glass.png", img, len, NULL, &r), 201);
    tg_resp_free(&r);
    g_free(img);

    const char *webp[] = {"Accept: image/webp,*/*", NULL};
    const char *wild[] = {"Accept: image/*,*/*;q=0.8", NULL};
    const char *refused[] = {"Accept: image/webp;q=0, image/avif;q=0, */*", NULL};
    const char *both[] = {"Accept: image/avif,image/webp;q=0.9", NULL};
    const char *webp_first[] = {"Accept: image/avif;q=0.5,image/webp", NULL};
    bool avif = imgproc_fmt_from_ext("avif", 4) != IMGPROC_FMT_UNKNOWN;

    expect_image("/cat_100x100.auto", NULL, "image/jpeg", 100, 75); /* no Accept */
    expect_vary("/cat_100x100.auto", NULL);
    expect_image("/cat_100x100.auto", webp, "image/webp", 100, 75);
    expect_vary("/cat_100x100.auto", webp);
    expect_image("/cat_100x100.auto", wild, "image/jpeg", 100, 75);
    expect_image("/cat_100x100.auto", refused, "image/jpeg", 100, 75);
    expect_image("/cat_100x100.auto", webp_first, "image/webp", 100, 75);
    if (avif) /* AVIF only where this build encodes it */
        expect_image("/cat_100x100.auto", both, "image/avif", 100, 75);
    else
        expect_image("/cat_100x100.auto", both, "image/webp", 100, 75);
    /* alpha: PNG, not JPEG */
    expect_image("/glass_100x100c.auto", NULL, "image/png", 100, 100);
    expect_image("/glass_100x100c@2x.auto", webp, "image/webp", 200, 200);
    expect_image("/glass.auto", NULL, "image/png", 400, 300);

    /* cached per chosen format: the explicit URLs of the same results run no job, and the
     * same .auto URL keeps answering by Accept whatever was asked before */
    double admitted = tg_metric(&S, "thumbgate_jobs_admitted_total");
    expect_image("/cat_100x100.webp", NULL, "image/webp", 100, 75);
    expect_image("/cat_100x100.jpg", NULL, "image/jpeg", 100, 75);
    for (int i = 0; i < 3; i++) {
        expect_image("/cat_100x100.auto", webp, "image/webp", 100, 75);
        expect_image("/cat_100x100.auto", NULL, "image/jpeg", 100, 75);
    }
    ck_assert_double_eq(tg_metric(&S, "thumbgate_jobs_admitted_total"), admitted);
    /* over WebP's 16383 px a side: the fallback format instead of a refusal */
    tg_put_image(&S, "/wide.jpg", 17000, 20, "jpg");
    expect_image("/wide.auto", webp, "image/jpeg", 17000, 20);
    expect_image("/wide.auto", webp, "image/jpeg", 17000, 20);
    expect_image("/wide_100x.auto", webp, "image/webp", 100, 1);
    expect("/wide.webp", NULL, 400, "output_too_large");
    expect("/cat_0x100.auto", NULL, 400, "bad_size");
    expect("/nope_10x10.auto", NULL, 404, "not_found");
}
END_TEST

START_TEST(test_url_auto_avif_over_deadline_falls_back_to_webp)
{
    /* AVIF encodes in one libheif call the job deadline cannot stop, so an AVIF that could not
     * finish in memory.job_timeout is refused (413) before admission; .auto takes the next
     * format the client accepts instead of refusing */
    if (imgproc_fmt_from_ext("avif", 4) == IMGPROC_FMT_UNKNOWN)
        return; /* this build has no AVIF encoder: nothing to fall back from */
    const char *env[] = {"THUMBGATE_MEMORY_JOB_TIMEOUT=100ms", NULL};
    tg_start(&S, env, NULL);
    tg_put_image(&S, "/big.jpg", 800, 600, "jpg");
    expect("/big.avif", NULL, 413, NULL);
    const char *both[] = {"Accept: image/avif,image/webp", NULL};
    tg_resp_t r;
    long st = get("/big.auto", both, &r);
    /* the WebP job itself may miss a 100 ms deadline on a busy box: 503 job_timeout then,
     * which also shows it was admitted as WebP rather than refused as AVIF */
    ck_assert_msg(st == 200 || (st == 503 && strstr(r.body, "job_timeout")), "%ld %.*s", st,
                  (int)r.len, r.body ? r.body : "");
    if (st == 200) {
        char ct[64];
        ck_assert(tg_header(&r, "content-type", ct, sizeof(ct)));
        ck_assert_str_eq(ct, "image/webp");
    }
    tg_resp_free(&r);
}
END_TEST

/* ---- smart crop and pixel ratios ------------------------------------------------------ */

/* A black 800x200 JPEG (or PNG) with a noisy colourful patch at its left end. */
static void *patch_image(bool png, size_t *len)
{
    VipsImage *black, *noise, *colour, *out;
    ck_assert_int_eq(vips_black(&black, 800, 200, "bands", 3, NULL), 0);
    ck_assert_int_eq(vips_gaussnoise(&noise, 160, 200, "mean", 128.0, "sigma", 80.0, NULL), 0);
    VipsImage *bands[3] = {noise, noise, black};
    VipsImage *b;
    ck_assert_int_eq(vips_extract_area(black, &b, 0, 0, 160, 200, NULL), 0);
    ck_assert_int_eq(vips_extract_band(b, &bands[2], 0, NULL), 0);
    ck_assert_int_eq(vips_bandjoin(bands, &colour, 3, NULL), 0);
    ck_assert_int_eq(vips_insert(black, colour, &out, 0, 0, NULL), 0);
    void *buf = NULL;
    VipsImage *u8;
    ck_assert_int_eq(vips_cast_uchar(out, &u8, NULL), 0);
    if (png)
        ck_assert_int_eq(vips_pngsave_buffer(u8, &buf, len, NULL), 0);
    else
        ck_assert_int_eq(vips_jpegsave_buffer(u8, &buf, len, "Q", 90, NULL), 0);
    g_object_unref(u8), g_object_unref(out), g_object_unref(colour), g_object_unref(bands[2]);
    g_object_unref(b), g_object_unref(noise), g_object_unref(black);
    return buf;
}

static double mean_of(const char *path)
{
    tg_resp_t r;
    ck_assert_int_eq(get(path, NULL, &r), 200);
    VipsImage *im = vips_image_new_from_buffer(r.body, r.len, "", NULL);
    ck_assert_ptr_nonnull(im);
    double m;
    ck_assert_int_eq(vips_avg(im, &m, NULL), 0);
    g_object_unref(im);
    tg_resp_free(&r);
    return m;
}

START_TEST(test_url_smart_crop)
{
    tg_start(&S, NULL, NULL);
    size_t len;
    tg_resp_t r;
    for (int png = 0; png < 2; png++) {
        void *img = patch_image(png, &len);
        ck_assert_int_eq(tg_http(&S, "PUT", png ? "/patchp.png" : "/patch.jpg", img, len, NULL, &r),
                         201);
        tg_resp_free(&r);
        g_free(img);
    }
    /* a PNG shrunk 8x goes through the row decoder's own crop (pngfast.c): attention too */
    double psmart = mean_of("/patchp_25x25s.png"), pcentre = mean_of("/patchp_25x25c.png");
    ck_assert_msg(pcentre < 5 && psmart > 40, "png: centre %.1f smart %.1f", pcentre, psmart);
    /* the box exactly, as cover; the centre is black, attention finds the patch */
    expect_image("/patch_200x200s.jpg", NULL, "image/jpeg", 200, 200);
    expect_image("/patch_200x200c.jpg", NULL, "image/jpeg", 200, 200);
    double smart = mean_of("/patch_200x200s.jpg"), centre = mean_of("/patch_200x200c.jpg");
    ck_assert_msg(centre < 5 && smart > 40, "centre %.1f smart %.1f", centre, smart);
    /* never enlarging, like cover: a box over the source gives the source's size */
    expect_image("/patch_1000x1000s.png", NULL, "image/png", 800, 200);
    expect_image("/patch_100x50s.webp", NULL, "image/webp", 100, 50);
    expect("/patch_0x100s.jpg", NULL, 400, "bad_size");
    expect("/patch_100xs.jpg", NULL, 400, "bad_size");
    expect("/patch_x100s.jpg", NULL, 400, "bad_size");
    expect("/patch_100x100000000s.jpg", NULL, 400, "bad_size");
}
END_TEST

START_TEST(test_url_pixel_ratio)
{
    const char *env[] = {"THUMBGATE_LIMITS_MAX_OUTPUT_WIDTH=250",
                         "THUMBGATE_LIMITS_SIZES=100x100c,100x,120x80", NULL};
    tg_start(&S, env, NULL);
    tg_put_image(&S, "/cat.jpg", 800, 600, "jpg");
    expect_image("/cat_100x100c@2x.jpg", NULL, "image/jpeg", 200, 200);
    expect_image("/cat_100x@2x.png", NULL, "image/png", 200, 150);
    expect_image("/cat_120x80@2x.jpg", NULL, "image/jpeg", 213, 160);
    expect_image("/cat_100x100s@1x.jpg", NULL, "image/jpeg", 100, 100); /* c allows s */
    /* bounded by the output limits */
    expect("/cat_100x100c@3x.jpg", NULL, 400, "output_too_large");
    /* the allow-list holds the written size, not the scaled one */
    expect("/cat_200x200c.jpg", NULL, 400, "size_not_allowed");
    expect("/cat_50x50c@2x.jpg", NULL, 400, "size_not_allowed");
    expect("/cat_100x100c@0x.jpg", NULL, 400, "bad_size");
    expect("/cat_100x100c@9x.jpg", NULL, 400, "bad_size");
    expect("/cat_100x100c@5x.jpg", NULL, 400, "bad_size");
    expect("/cat_100x100c@x.jpg", NULL, 400, "bad_size");
    expect("/cat@2x.jpg", NULL, 404, "not_found"); /* a ratio needs a size */
}
END_TEST

/* imgproc: SMART has COVER's plan (output size, shrink), refuses what COVER refuses, and a
 * job's own quality is checked */
START_TEST(test_url_smart_plan_is_cover)
{
    static const int dims[][2] = {{800, 600}, {600, 800}, {20000, 1}, {100, 50}, {290, 290}};
    static const uint32_t boxes[][2] = {{290, 290}, {1000, 10}, {1, 1}, {400, 200}};
    for (size_t i = 0; i < sizeof(dims) / sizeof(dims[0]); i++) {
        size_t len;
        void *img = tg_image(dims[i][0], dims[i][1], 3, "png", &len);
        imgproc_probe_t p;
        imgproc_err_t err;
        ck_assert_int_eq(imgproc_probe_buf(img, len, &p, &err), 0);
        for (size_t b = 0; b < sizeof(boxes) / sizeof(boxes[0]); b++) {
            imgproc_job_t c = {.op = IMGPROC_OP_COVER,
                               .width = boxes[b][0],
                               .height = boxes[b][1],
                               .out_fmt = IMGPROC_FMT_JPEG};
            imgproc_job_t sm = c;
            sm.op = IMGPROC_OP_SMART;
            uint32_t cw, ch, sw, sh;
            imgproc_output_dims(&p, &c, &cw, &ch);
            imgproc_output_dims(&p, &sm, &sw, &sh);
            ck_assert_msg(cw == sw && ch == sh && cw > 0, "%dx%d as %ux%u: cover %ux%u smart %ux%u",
                          dims[i][0], dims[i][1], boxes[b][0], boxes[b][1], cw, ch, sw, sh);
            /* the attention search is paid for */
            ck_assert_uint_gt(imgproc_estimate(&p, &sm), imgproc_estimate(&p, &c));
        }
        imgproc_job_t bad = {
            .op = IMGPROC_OP_SMART, .width = 0, .height = 10, .out_fmt = IMGPROC_FMT_JPEG};
        ck_assert_int_eq(imgproc_plan_check(&p, &bad, &err), -IMGPROC_E_INVALID);
        ck_assert_uint_eq(imgproc_estimate(&p, &bad), 0);
        g_free(img);
    }
    /* a quality over 100 is a bad job, not a clamped one */
    char src[] = "/tmp/check_url_src_XXXXXX", dst[] = "/tmp/check_url_dst_XXXXXX";
    int fs = mkstemp(src), fd = mkstemp(dst);
    ck_assert(fs >= 0 && fd >= 0);
    size_t len;
    void *img = tg_image(64, 64, 3, "jpg", &len);
    ck_assert_int_eq(write(fs, img, len), (ssize_t)len);
    g_free(img);
    imgproc_opts_t o = {.jpeg_quality = 80, .webp_quality = 80, .png_compression = 6};
    imgproc_job_t j = {.op = IMGPROC_OP_SMART,
                       .width = 32,
                       .height = 16,
                       .out_fmt = IMGPROC_FMT_JPEG,
                       .quality = 101};
    imgproc_out_t out;
    imgproc_err_t err;
    ck_assert_int_eq(imgproc_run_fd(fs, &j, &o, dst, &out, &err), -IMGPROC_E_INVALID);
    j.quality = 30;
    ck_assert_int_eq(imgproc_run_fd(fs, &j, &o, dst, &out, &err), 0);
    ck_assert_uint_eq(out.width, 32);
    ck_assert_uint_eq(out.height, 16);
    close(fs), close(fd);
    unlink(src), unlink(dst);
}
END_TEST

Suite *url_suite(void); /* called by check_main.c */
Suite *url_suite(void)
{
    Suite *s = suite_create("url");
    TCase *t = tcase_create("url");
    tcase_add_checked_fixture(t, tg_fixture_setup, teardown);
    tcase_set_timeout(t, 120);
    tcase_add_test(t, test_url_sign_known_vector);
    tcase_add_test(t, test_url_signatures);
    tcase_add_test(t, test_url_sign_one_liner);
    tcase_add_test(t, test_url_key_from_file);
    tcase_add_test(t, test_url_presets);
    tcase_add_test(t, test_url_presets_only);
    tcase_add_test(t, test_url_auto_negotiation);
    tcase_add_test(t, test_url_auto_avif_over_deadline_falls_back_to_webp);
    tcase_add_test(t, test_url_smart_plan_is_cover);
    tcase_add_test(t, test_url_smart_crop);
    tcase_add_test(t, test_url_pixel_ratio);
    suite_add_tcase(s, t);
    return s;
}
