/* thumbgate — command line: run the server, check a config, read a flight recorder. */
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/cfg.h"
#include "imgproc/imgproc.h"
#include "server/flight.h"
#include "server/memlimit.h"
#include "server/srv.h"
#include "server/sysfacts.h"

#define THUMBGATE_VERSION "0.1.0"

extern char **environ;

static void usage(FILE *out)
{
    fputs(
        "usage: thumbgate [-c FILE]            run the server (default: the embedded "
        "config/thumbgate.yaml)\n"
        "       thumbgate --check-config [FILE] validate, print the effective config; exit 0 or 2\n"
        "       thumbgate flight FILE [--json] [-n N]  print a flight recorder ring, newest first\n"
        "       thumbgate --version | --help\n"
        "Every config key can be overridden by THUMBGATE_<KEY_PATH> (memory.budget -> "
        "THUMBGATE_MEMORY_BUDGET).\n",
        out);
}

int main(int argc, char **argv)
{
    const char *file = NULL;
    if (argc >= 2 && strcmp(argv[1], "--version") == 0) {
        printf("thumbgate %s\n", THUMBGATE_VERSION);
        return 0;
    }
    if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        usage(stdout);
        return 0;
    }
    if (argc >= 2 && strcmp(argv[1], "flight") == 0) {
        bool json = false;
        unsigned max = 0;
        const char *path = NULL;
        for (int i = 2; i < argc; i++) {
            if (strcmp(argv[i], "--json") == 0)
                json = true;
            else if (strcmp(argv[i], "-n") == 0 && i + 1 < argc)
                max = (unsigned)strtoul(argv[++i], NULL, 10);
            else
                path = argv[i];
        }
        if (path == NULL) {
            usage(stderr);
            return 2;
        }
        return flight_dump(path, stdout, json, max) == 0 ? 0 : 2;
    }
    if (argc >= 2 && strcmp(argv[1], "--check-config") == 0) {
        const cfg_t *cfg = cfg_load(argc >= 3 ? argv[2] : NULL, environ, stderr);
        if (cfg == NULL)
            return 2;
        cfg_print(cfg, stdout);
        memlimit_t ml; /* what the memory plan starts from, as a YAML comment */
        memlimit_resolve("/", &ml);
        printf("# memory limit: %" PRIu64 " bytes from %s (%s)\n", ml.bytes, ml.source, ml.file);
        memplan_t plan;
        char err[768];
        int rc = srv_plan(cfg, &plan, err, sizeof(err));
        if (rc == 0)
            memplan_print(&plan, stdout);
        else
            fprintf(stderr, "%s: memory plan: %s\n", cfg->source, err);
        cfg_free(cfg);
        return rc == 0 ? 0 : 2;
    }
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-c") == 0 && i + 1 < argc) {
            file = argv[++i];
        } else {
            fprintf(stderr, "thumbgate: unknown argument '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    /* block the shutdown signals before libvips or any other thread starts, so that
     * only the server's sigwait ever receives them */
    srv_block_signals(NULL);

    const cfg_t *cfg = cfg_load(file, environ, stderr);
    if (cfg == NULL)
        return 2;
    if (imgproc_init(argv[0]) != 0) {
        fprintf(stderr, "thumbgate: libvips failed to start\n");
        cfg_free(cfg);
        return 1;
    }
    int ret = srv_run(cfg);
    imgproc_shutdown();
    cfg_free(cfg);
    return ret;
}
