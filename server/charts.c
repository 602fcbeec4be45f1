/* charts — serves the embedded live memory page (see charts.h). The HTML lives in
 * server/charts.html so it can be read and edited as HTML; the Makefile turns it into the
 * array below (build/<variant>/server/charts_html.c), as it does for the default config. */
#include "server/charts.h"

#include <stddef.h>

extern const char charts_html[];
extern const size_t charts_html_len;

void charts_write(FILE *o)
{
    fwrite(charts_html, 1, charts_html_len, o);
}
