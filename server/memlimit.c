/* memlimit — the memory limit the process runs under, found the way container runtimes
 * lay cgroups out.
 *
 * /proc/self/cgroup names the process's cgroup relative to the root of its cgroup
 * namespace; /proc/self/mountinfo tells, for each cgroup mount, which directory of the
 * hierarchy (the "root" field) is mounted where. A Docker container on cgroup v1 without
 * a cgroup namespace sees "memory:/docker/<id>" and its own directory mounted at
 * /sys/fs/cgroup/memory with root "/docker/<id>": the limit is in
 * /sys/fs/cgroup/memory/memory.limit_in_bytes, not under /sys/fs/cgroup/memory/docker/<id>.
 * With a namespace both say "/". So the path is mapped through the mount root; every
 * directory from there up to the mount point may hold a limit, and so may the ancestors
 * the mount hides (v1 memory.stat hierarchical_memory_limit covers those). */
#include "server/memlimit.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PATH_LEN 1024

/* A byte count on the first line of @p file; 0 when missing, unreadable, "max" or junk. */
static uint64_t read_value(const char *file)
{
    FILE *f = fopen(file, "r");
    if (f == NULL)
        return 0;
    char buf[64];
    uint64_t v = 0;
    if (fgets(buf, sizeof(buf), f) != NULL && buf[0] >= '0' && buf[0] <= '9')
        v = strtoull(buf, NULL, 10);
    fclose(f);
    return v;
}

/* The number after "KEY" (then spaces or a colon) in a key-value file: memory.stat,
 * /proc/meminfo. 0 when absent. */
static uint64_t read_key(const char *file, const char *key)
{
    FILE *f = fopen(file, "r");
    if (f == NULL)
        return 0;
    char line[256];
    size_t klen = strlen(key);
    uint64_t v = 0;
    while (fgets(line, sizeof(line), f) != NULL)
        if (strncmp(line, key, klen) == 0 && (line[klen] == ' ' || line[klen] == ':')) {
            v = strtoull(line + klen + 1 + strspn(line + klen + 1, " \t"), NULL, 10);
            break;
        }
    fclose(f);
    return v;
}

/* Keeps @p v if it is a limit and smaller than the best so far. */
static void consider(memlimit_t *out, uint64_t v, const char *source, const char *file)
{
    if (v == 0 || (out->bytes != 0 && v >= out->bytes))
        return;
    out->bytes = v;
    out->source = source;
    snprintf(out->file, sizeof(out->file), "%.*s", (int)sizeof(out->file) - 1, file);
}

/* Is @p tok one of the comma-separated words of @p list? */
static bool has_word(const char *list, const char *tok)
{
    size_t n = strlen(tok);
    for (const char *p = list;; p++) {
        if (strncmp(p, tok, n) == 0 && (p[n] == ',' || p[n] == '\0'))
            return true;
        if ((p = strchr(p, ',')) == NULL)
            return false;
    }
}

/* mountinfo escapes space, tab, newline and backslash as \ooo; undo it in place. */
static void unescape(char *s)
{
    char *w = s;
    for (char *r = s; *r != '\0'; r++) {
        if (r[0] == '\\' && r[1] >= '0' && r[1] <= '3' && r[2] >= '0' && r[2] <= '7' &&
            r[3] >= '0' && r[3] <= '7') {
            *w++ = (char)((r[1] - '0') * 64 + (r[2] - '0') * 8 + (r[3] - '0'));
            r += 3;
        } else {
            *w++ = *r;
        }
    }
    *w = '\0';
}

/* Every limit in @p dir and its parents up to the mount point, the first @p top_len
 * characters of @p dir (which is modified). */
static void walk_up(memlimit_t *out, char *dir, size_t top_len, bool v1)
{
    char file[PATH_LEN + 32];
    for (;;) {
        if (v1) {
            snprintf(file, sizeof(file), "%s/memory.limit_in_bytes", dir);
            consider(out, read_value(file), MEMLIMIT_SRC_V1, file);
            snprintf(file, sizeof(file), "%s/memory.stat", dir);
            consider(out, read_key(file, "hierarchical_memory_limit"), MEMLIMIT_SRC_V1_HIER, file);
        } else {
            snprintf(file, sizeof(file), "%s/memory.max", dir);
            consider(out, read_value(file), MEMLIMIT_SRC_V2, file);
        }
        char *slash = strrchr(dir, '/');
        if (strlen(dir) <= top_len || slash == NULL || slash < dir + top_len)
            return;
        *slash = '\0';
    }
}

/* One cgroup mount: @p mnt_root of the hierarchy is mounted at @p mnt_point; the process
 * is at @p cg in the hierarchy (NULL when unknown). When cg lies under mnt_root it maps
 * to a directory under the mount point and the walk starts there; otherwise (the process
 * sits outside what is mounted, or the path is "/.."-relative to a cgroup namespace)
 * only the mount point itself, an ancestor of the process in every runtime's layout,
 * is read. */
static void from_mount(memlimit_t *out, const char *prefix, const char *mnt_root,
                       const char *mnt_point, const char *cg, bool v1)
{
    char dir[PATH_LEN];
    int top =
        snprintf(dir, sizeof(dir), "%s%s", prefix, strcmp(mnt_point, "/") == 0 ? "" : mnt_point);
    if (top < 0 || (size_t)top >= sizeof(dir))
        return;
    size_t rl = strcmp(mnt_root, "/") == 0 ? 0 : strlen(mnt_root);
    if (cg != NULL && strstr(cg, "/..") == NULL && strncmp(cg, mnt_root, rl) == 0 &&
        (cg[rl] == '/' || cg[rl] == '\0') && strcmp(cg + rl, "/") != 0)
        if ((size_t)snprintf(dir + top, sizeof(dir) - (size_t)top, "%s", cg + rl) >=
            sizeof(dir) - (size_t)top)
            dir[top] = '\0'; /* too long: the mount point alone */
    walk_up(out, dir, (size_t)top, v1);
}

void memlimit_resolve(const char *root, memlimit_t *out)
{
    *out = (memlimit_t){.bytes = 0, .source = MEMLIMIT_SRC_NONE};
    char prefix[PATH_LEN / 2], file[PATH_LEN];
    snprintf(prefix, sizeof(prefix), "%s", root != NULL ? root : "/");
    for (size_t n = strlen(prefix); n > 0 && prefix[n - 1] == '/'; n--)
        prefix[n - 1] = '\0';

    /* the process's path in the v1 memory hierarchy and in the v2 one */
    char *line = NULL, *cg1 = NULL, *cg2 = NULL;
    size_t cap = 0;
    snprintf(file, sizeof(file), "%s/proc/self/cgroup", prefix);
    FILE *f = fopen(file, "r");
    while (f != NULL && getline(&line, &cap, f) > 0) {
        line[strcspn(line, "\n")] = '\0';
        char *c1 = strchr(line, ':'), *c2 = c1 != NULL ? strchr(c1 + 1, ':') : NULL;
        if (c2 == NULL)
            continue;
        *c2 = '\0';
        if (strcmp(line, "0:") == 0 && cg2 == NULL) /* "0::path": line ends at c2 */
            cg2 = strdup(c2 + 1);
        else if (has_word(c1 + 1, "memory") && cg1 == NULL)
            cg1 = strdup(c2 + 1);
    }
    if (f != NULL)
        fclose(f);

    snprintf(file, sizeof(file), "%s/proc/self/mountinfo", prefix);
    if ((f = fopen(file, "r")) == NULL) {
        from_mount(out, prefix, "/", "/sys/fs/cgroup/memory", cg1, true);
        from_mount(out, prefix, "/", "/sys/fs/cgroup", cg2, false);
    }
    while (f != NULL && getline(&line, &cap, f) > 0) {
        /* id parent maj:min root mount-point options [optional...] - fstype source superoptions */
        char *save = NULL, *tok[5] = {NULL}, *t;
        int n = 0;
        for (t = strtok_r(line, " \n", &save); t != NULL && n < 5; t = strtok_r(NULL, " \n", &save))
            tok[n++] = t;
        while (t != NULL && strcmp(t, "-") != 0)
            t = strtok_r(NULL, " \n", &save);
        char *fstype = strtok_r(NULL, " \n", &save), *src = strtok_r(NULL, " \n", &save);
        char *sopts = strtok_r(NULL, " \n", &save);
        if (n < 5 || fstype == NULL || src == NULL || sopts == NULL)
            continue;
        unescape(tok[3]);
        unescape(tok[4]);
        if (strcmp(fstype, "cgroup") == 0 && has_word(sopts, "memory"))
            from_mount(out, prefix, tok[3], tok[4], cg1, true);
        else if (strcmp(fstype, "cgroup2") == 0)
            from_mount(out, prefix, tok[3], tok[4], cg2, false);
    }
    if (f != NULL)
        fclose(f);
    free(line);
    free(cg1);
    free(cg2);

    snprintf(file, sizeof(file), "%s/proc/meminfo", prefix);
    uint64_t kb = read_key(file, "MemTotal");
    if (kb <= UINT64_MAX / 1024)
        consider(out, kb * 1024, MEMLIMIT_SRC_MEMTOTAL, file);
}

uint64_t memlimit_bytes(const char *root, const char **source)
{
    memlimit_t m;
    memlimit_resolve(root, &m);
    if (source != NULL)
        *source = m.source;
    return m.bytes;
}
