/* fmt — the formats imgproc knows: names, content types, which it writes and which keep
 * animation (imgproc.h). No libvips here: the planner (plan.c) uses it, and so does the
 * probe fuzzer, which links plan.c without libvips. */
#include <stdbool.h>
#include <string.h>
#include <strings.h>

#include "imgproc/imgproc.h"

static const struct {
    const char *name, *mime;
    bool out, animated;
} fmts[IMGPROC_FMT__COUNT] = {
    [IMGPROC_FMT_JPEG] = {"jpeg", "image/jpeg", true, false},
    [IMGPROC_FMT_PNG] = {"png", "image/png", true, false},
    [IMGPROC_FMT_WEBP] = {"webp", "image/webp", true, true},
    [IMGPROC_FMT_AVIF] = {"avif", "image/avif", true, false},
    [IMGPROC_FMT_JXL] = {"jxl", "image/jxl", true, false},
    [IMGPROC_FMT_GIF] = {"gif", "image/gif", true, true},
    [IMGPROC_FMT_HEIC] = {"heic", "image/heic", false, false},
    [IMGPROC_FMT_TIFF] = {"tiff", "image/tiff", false, false},
};

const char *imgproc_fmt_name(imgproc_fmt_t fmt)
{
    return fmt > 0 && fmt < IMGPROC_FMT__COUNT ? fmts[fmt].name : NULL;
}

const char *imgproc_fmt_mime(imgproc_fmt_t fmt)
{
    return fmt > 0 && fmt < IMGPROC_FMT__COUNT ? fmts[fmt].mime : "application/octet-stream";
}

bool imgproc_fmt_is_output(imgproc_fmt_t fmt)
{
    return fmt > 0 && fmt < IMGPROC_FMT__COUNT && fmts[fmt].out;
}

bool imgproc_fmt_is_animated(imgproc_fmt_t fmt)
{
    return fmt > 0 && fmt < IMGPROC_FMT__COUNT && fmts[fmt].animated;
}

imgproc_fmt_t imgproc_fmt_from_ext(const char *ext, size_t len)
{
    if (ext == NULL)
        return IMGPROC_FMT_UNKNOWN;
    if (len == 3 && strncasecmp(ext, "jpg", 3) == 0)
        return IMGPROC_FMT_JPEG;
    for (int f = 1; f < IMGPROC_FMT__COUNT; f++)
        if (fmts[f].out && strlen(fmts[f].name) == len && strncasecmp(fmts[f].name, ext, len) == 0)
            return (imgproc_fmt_t)f;
    return IMGPROC_FMT_UNKNOWN;
}
