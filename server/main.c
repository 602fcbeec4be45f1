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
        "       thumbgate flight [FILE | --dir DIR | -c CONFIG] [--list | --run ID] [--json] [-n "
        "N]\n"
        "                                      list the flight recorder's runs, or print one ring\n"
        "                                      (default: the current run), newest snapshot first\n"
        "       thumbgate --version | --help\n"
        "Every config key can be overridden by THUMBGATE_<KEY_PATH> (memory.budget -> "
        "THUMBGATE_MEMORY_BUDGET).\n",
        out);
}

/* thumbgate flight: which rings (a file, a directory's flight.ring, or the config's
 * flight.path / storage.root), then list them or print one. */
static int flight_command(int argc, char **argv)
{
    bool json = false, list = false;
    unsigned max = 0;
    long run = -1;
    const char *file = NULL, *dir = NULL, *config = NULL;
    char path[1200], err[1400];
    for (int i = 0; i < argc; i++) {
        char *end;
        if (strcmp(argv[i], "--json") == 0) {
            json = true;
        } else if (strcmp(argv[i], "--list") == 0) {
            list = true;
        } else if (strcmp(argv[i], "-n") == 0 && i + 1 < argc) {
            max = (unsigned)strtoul(argv[++i], NULL, 10);
        } else if (strcmp(argv[i], "--run") == 0 && i + 1 < argc) {
            run = strtol(argv[++i], &end, 10);
            if (*argv[i] == '\0' || *end != '\0' || run < 0) {
                fprintf(stderr, "thumbgate flight: --run wants a run number, got '%s'\n", argv[i]);
                return 2;
            }
        } else if (strcmp(argv[i], "--dir") == 0 && i + 1 < argc) {
            dir = argv[++i];
        } else if (strcmp(argv[i], "-c") == 0 && i + 1 < argc) {
            config = argv[++i];
        } else if (argv[i][0] != '-' && file == NULL) {
            file = argv[i];
        } else {
            usage(stderr);
            return 2;
        }
    }
    if (file != NULL) {
        snprintf(path, sizeof(path), "%s", file);
    } else if (dir != NULL) {
        snprintf(path, sizeof(path), "%s/flight.ring", dir);
    } else {
        const cfg_t *cfg = cfg_load(config, environ, stderr);
        if (cfg == NULL)
            return 2;
        flight_opts_t fo;
        flight_opts_init(&fo, cfg);
        snprintf(path, sizeof(path), "%s", fo.path);
        cfg_free(cfg);
    }
    int rc = list ? flight_list(path, stdout, json, err, sizeof(err))
                  : flight_dump(path, run, stdout, json, max, err, sizeof(err));
    if (rc != 0)
        fprintf(stderr, "thumbgate flight: %s\n", err);
    return rc == 0 ? 0 : 2;
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
    if (argc >= 2 && strcmp(argv[1], "flight") == 0)
        return flight_command(argc - 2, argv + 2);
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
