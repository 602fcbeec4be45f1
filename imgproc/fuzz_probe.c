/* libFuzzer target for the header probe: any byte string must give 0 with a sane,
 * bounded result, or a negative IMGPROC_E_* code with a NUL-terminated message; never a
 * crash, hang, leak or out-of-bounds read. Build and run with `make fuzz`. */
#include <assert.h>
#include <string.h>

#include "imgproc/imgproc_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    imgproc_probe_t p;
    imgproc_err_t err;
    memset(&err, 0xAA, sizeof(err));
    int rc = imgproc_probe_buf(data, size, &p, &err);
    if (rc == 0) {
        assert(p.fmt != IMGPROC_FMT_UNKNOWN && p.fmt == imgproc_sniff(data, size));
        assert(p.width > 0 && p.height > 0);
        assert(p.bands >= 1 && p.bands <= 4);
        assert(p.orientation >= 1 && p.orientation <= 8);
        assert(p.pages >= 1);
        assert(p.file_bytes == size);
    } else {
        assert(rc < 0 && -rc == err.code && err.code >= IMGPROC_E_UNSUPPORTED &&
               err.code <= IMGPROC_E_INVALID);
        assert(memchr(err.msg, '\0', sizeof(err.msg)) != NULL);
    }
    return 0;
}
