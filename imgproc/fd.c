/* imgproc_probe_fd(): the public face of the descriptor probe (probe.c), so the server
 * opens a source once for its probe and its decode. */
#include "imgproc/imgproc_internal.h"

int imgproc_probe_fd(int fd, imgproc_probe_t *out, imgproc_err_t *err)
{
    return imgproc__probe_fd(fd, out, err);
}
