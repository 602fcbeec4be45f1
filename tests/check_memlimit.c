/* Unit tests of server/memlimit.c: one fake /proc + /sys tree per layout that hosts and
 * container runtimes produce (cgroup v1, v2, hybrid; with and without a cgroup
 * namespace; limits on the process's own cgroup, on the mount root, on ancestors), built
 * in a temporary directory and handed to memlimit_resolve() as its root. */
#include <check.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "server/memlimit.h"
#include "tests/tg_harness.h"

#define MiB (1024ull * 1024)
#define GiB (1024 * MiB)
#define V1_UNLIMITED "9223372036854771712\n"
/* 16 GiB of RAM, as /proc/meminfo says it */
#define MEMINFO                                                                                    \
    "MemTotal:       16777216 kB\nMemFree:         1000000 kB\nMemAvailable:   8000000 kB\n"

/* Mount lines of the kinds that surround the cgroup ones in a real mountinfo. */
#define MI_OVERLAY                                                                                 \
    "600 500 0:52 / / rw,relatime master:1 - overlay overlay "                                     \
    "rw,lowerdir=/l,upperdir=/u,workdir=/w\n"
#define MI_PROC "601 600 0:55 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw\n"
#define MI_V1_CPU                                                                                  \
    "610 609 0:30 / /sys/fs/cgroup/cpu,cpuacct ro,nosuid master:12 - cgroup cgroup "               \
    "rw,cpu,cpuacct\n"

static char root[256];

static void setup(void)
{
    snprintf(root, sizeof(root), "/tmp/check_memlimit.XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(root));
}

static void teardown(void)
{
    tg_rmtree(root);
}

/* Writes @p text to root + @p rel, making the directories on the way. */
static void put(const char *rel, const char *text)
{
    char path[512];
    snprintf(path, sizeof(path), "%s%s", root, rel);
    for (char *s = strchr(path + strlen(root) + 1, '/'); s != NULL; s = strchr(s + 1, '/')) {
        *s = '\0';
        mkdir(path, 0755);
        *s = '/';
    }
    FILE *f = fopen(path, "w");
    ck_assert_msg(f != NULL, "cannot write %s", path);
    fputs(text, f);
    fclose(f);
}

static void mkdirs(const char *rel)
{
    char path[512];
    snprintf(path, sizeof(path), "%s%s/x", root, rel);
    put(path + strlen(root), "");
    unlink(path);
}

/* Resolves the tree and checks the figure, its source and the file (relative to root). */
static void expect(uint64_t bytes, const char *source, const char *rel)
{
    memlimit_t m;
    memlimit_resolve(root, &m);
    char want[512];
    snprintf(want, sizeof(want), "%s%s", root, rel);
    ck_assert_msg(m.bytes == bytes, "bytes %llu, want %llu (%s %s)", (unsigned long long)m.bytes,
                  (unsigned long long)bytes, m.source, m.file);
    ck_assert_str_eq(m.source, source);
    ck_assert_str_eq(m.file, want);
}

/* A host on cgroup v1: the whole hierarchy mounted, the process in a child cgroup whose
 * own limit is below its parent's. */
START_TEST(test_memlimit_v1_host)
{
    put("/proc/meminfo", MEMINFO);
    put("/proc/self/cgroup",
        "5:memory:/system.slice/thumbgate.service\n4:cpu,cpuacct:/system.slice\n"
        "1:name=systemd:/system.slice/thumbgate.service\n");
    put("/proc/self/mountinfo",
        "22 1 8:1 / / rw - ext4 /dev/sda1 rw\n"
        "31 30 0:27 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:14 - cgroup "
        "cgroup rw,memory\n"
        "30 22 0:26 / /sys/fs/cgroup/cpu,cpuacct rw shared:13 - cgroup cgroup rw,cpu,cpuacct\n");
    put("/sys/fs/cgroup/memory/memory.limit_in_bytes", V1_UNLIMITED);
    put("/sys/fs/cgroup/memory/system.slice/memory.limit_in_bytes", "2147483648\n");
    put("/sys/fs/cgroup/memory/system.slice/thumbgate.service/memory.limit_in_bytes",
        "1073741824\n");
    put("/sys/fs/cgroup/memory/system.slice/thumbgate.service/memory.stat",
        "cache 0\nhierarchical_memory_limit 1073741824\nhierarchical_memsw_limit "
        "9223372036854771712\n");
    expect(1 * GiB, MEMLIMIT_SRC_V1,
           "/sys/fs/cgroup/memory/system.slice/thumbgate.service/memory.limit_in_bytes");
}
END_TEST

/* Docker on cgroup v1 without a cgroup namespace: /proc/self/cgroup names the host-side
 * path, the container's own directory is what is mounted at /sys/fs/cgroup/memory, and
 * that path does not exist under the mount point. */
START_TEST(test_memlimit_v1_docker)
{
    put("/proc/meminfo", MEMINFO);
    put("/proc/self/cgroup",
        "12:pids:/docker/4f1e\n9:memory:/docker/4f1e\n3:cpu,cpuacct:/docker/4f1e\n");
    put("/proc/self/mountinfo", MI_OVERLAY MI_PROC
        "609 600 0:56 / /sys/fs/cgroup ro,nosuid,nodev,noexec,relatime - tmpfs tmpfs "
        "rw,mode=755\n" MI_V1_CPU "611 609 0:31 /docker/4f1e /sys/fs/cgroup/memory "
        "ro,nosuid,nodev,noexec,relatime master:15 - cgroup "
        "cgroup rw,memory\n");
    put("/sys/fs/cgroup/memory/memory.limit_in_bytes", "536870912\n");
    put("/sys/fs/cgroup/memory/memory.stat", "cache 4096\nhierarchical_memory_limit 536870912\n");
    put("/sys/fs/cgroup/cpu,cpuacct/memory.limit_in_bytes",
        "1024\n"); /* not the memory controller */
    expect(512 * MiB, MEMLIMIT_SRC_V1, "/sys/fs/cgroup/memory/memory.limit_in_bytes");
}
END_TEST

/* v1 container whose process sits in a child of the mounted cgroup (an init that makes
 * its own cgroups): the path maps through the mount root to the child's directory, whose
 * limit is the smallest. Appending the full host-side path to the mount point would miss
 * it and find only the container's. */
START_TEST(test_memlimit_v1_docker_child_cgroup)
{
    put("/proc/meminfo", MEMINFO);
    put("/proc/self/cgroup", "9:memory:/docker/4f1e/app\n");
    put("/proc/self/mountinfo", MI_OVERLAY MI_PROC
        "611 609 0:31 /docker/4f1e /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n");
    put("/sys/fs/cgroup/memory/memory.limit_in_bytes", "1073741824\n");
    put("/sys/fs/cgroup/memory/app/memory.limit_in_bytes", "268435456\n");
    expect(256 * MiB, MEMLIMIT_SRC_V1, "/sys/fs/cgroup/memory/app/memory.limit_in_bytes");
}
END_TEST

/* v1, the limit set only on an ancestor the mount hides (a Kubernetes pod's cgroup above
 * the container's): only memory.stat's hierarchical_memory_limit shows it. */
START_TEST(test_memlimit_v1_ancestor_hierarchical)
{
    put("/proc/meminfo", MEMINFO);
    put("/proc/self/cgroup", "9:memory:/kubepods/burstable/pod7/c0ffee\n");
    put("/proc/self/mountinfo",
        MI_OVERLAY MI_PROC "611 609 0:31 /kubepods/burstable/pod7/c0ffee /sys/fs/cgroup/memory ro "
                           "- cgroup cgroup rw,memory\n");
    put("/sys/fs/cgroup/memory/memory.limit_in_bytes", V1_UNLIMITED);
    put("/sys/fs/cgroup/memory/memory.stat",
        "cache 4096\nrss 8192\nhierarchical_memory_limit 268435456\n"
        "hierarchical_memsw_limit 9223372036854771712\ntotal_cache 4096\n");
    expect(256 * MiB, MEMLIMIT_SRC_V1_HIER, "/sys/fs/cgroup/memory/memory.stat");
}
END_TEST

/* A systemd host on cgroup v2: the unit's memory.max, its slice unlimited. */
START_TEST(test_memlimit_v2_host)
{
    put("/proc/meminfo", MEMINFO);
    put("/proc/self/cgroup", "0::/system.slice/thumbgate.service\n");
    put("/proc/self/mountinfo",
        "22 1 8:1 / / rw - ext4 /dev/sda1 rw\n"
        "26 22 0:23 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n");
    put("/sys/fs/cgroup/system.slice/memory.max", "max\n");
    put("/sys/fs/cgroup/system.slice/thumbgate.service/memory.max", "805306368\n");
    expect(768 * MiB, MEMLIMIT_SRC_V2, "/sys/fs/cgroup/system.slice/thumbgate.service/memory.max");
}
END_TEST

/* Docker/Kubernetes on v2 with a cgroup namespace: the process is at "/" and the mount
 * root is the container's cgroup. */
START_TEST(test_memlimit_v2_cgroupns)
{
    put("/proc/meminfo", MEMINFO);
    put("/proc/self/cgroup", "0::/\n");
    put("/proc/self/mountinfo", MI_OVERLAY MI_PROC
        "609 600 0:57 / /sys/fs/cgroup ro,nosuid,nodev,noexec,relatime - cgroup2 cgroup rw\n");
    put("/sys/fs/cgroup/memory.max", "536870912\n");
    expect(512 * MiB, MEMLIMIT_SRC_V2, "/sys/fs/cgroup/memory.max");
}
END_TEST

/* v2 without a cgroup namespace (--cgroupns=host): the host-side path, the container's
 * directory mounted with that path as its root. */
START_TEST(test_memlimit_v2_container_no_cgroupns)
{
    put("/proc/meminfo", MEMINFO);
    put("/proc/self/cgroup", "0::/system.slice/docker-4f1e.scope\n");
    put("/proc/self/mountinfo",
        MI_OVERLAY MI_PROC "609 600 0:57 /system.slice/docker-4f1e.scope /sys/fs/cgroup ro,nosuid "
                           "- cgroup2 cgroup rw\n");
    put("/sys/fs/cgroup/memory.max", "402653184\n");
    expect(384 * MiB, MEMLIMIT_SRC_V2, "/sys/fs/cgroup/memory.max");
}
END_TEST

/* v2, nested: the container's own memory.max is above the pod's; walking up finds the
 * pod's, the smaller. */
START_TEST(test_memlimit_v2_nested_parent_smaller)
{
    put("/proc/meminfo", MEMINFO);
    put("/proc/self/cgroup", "0::/kubepods.slice/pod7.slice/cri-c0ffee.scope\n");
    put("/proc/self/mountinfo", "26 22 0:23 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw\n");
    put("/sys/fs/cgroup/kubepods.slice/memory.max", "max\n");
    put("/sys/fs/cgroup/kubepods.slice/pod7.slice/memory.max", "314572800\n");
    put("/sys/fs/cgroup/kubepods.slice/pod7.slice/cri-c0ffee.scope/memory.max", "1073741824\n");
    expect(300 * MiB, MEMLIMIT_SRC_V2, "/sys/fs/cgroup/kubepods.slice/pod7.slice/memory.max");
}
END_TEST

/* "max" and the v1 "unlimited" figure everywhere: MemTotal. */
START_TEST(test_memlimit_unlimited_everywhere_memtotal)
{
    put("/proc/meminfo", MEMINFO);
    put("/proc/self/cgroup", "9:memory:/a\n0::/a\n");
    put("/proc/self/mountinfo", "31 30 0:27 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"
                                "32 30 0:28 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n");
    put("/sys/fs/cgroup/memory/memory.limit_in_bytes", V1_UNLIMITED);
    put("/sys/fs/cgroup/memory/a/memory.limit_in_bytes", V1_UNLIMITED);
    put("/sys/fs/cgroup/memory/a/memory.stat", "hierarchical_memory_limit 9223372036854771712\n");
    put("/sys/fs/cgroup/unified/a/memory.max", "max\n");
    expect(16 * GiB, MEMLIMIT_SRC_MEMTOTAL, "/proc/meminfo");
}
END_TEST

/* Unreadable (a directory where the file should be), empty and junk limit files count as
 * no limit; the readable one further up is still found. */
START_TEST(test_memlimit_unreadable_files_skipped)
{
    put("/proc/meminfo", MEMINFO);
    put("/proc/self/cgroup", "0::/a/b/c\n");
    put("/proc/self/mountinfo", "26 22 0:23 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n");
    mkdirs("/sys/fs/cgroup/a/b/c/memory.max");
    put("/sys/fs/cgroup/a/b/memory.max", "");
    put("/sys/fs/cgroup/a/memory.max", "junk\n");
    put("/sys/fs/cgroup/memory.max", "209715200\n");
    expect(200 * MiB, MEMLIMIT_SRC_V2, "/sys/fs/cgroup/memory.max");
}
END_TEST

/* No /proc/self/mountinfo: the usual mount points are assumed. */
START_TEST(test_memlimit_no_mountinfo_usual_mounts)
{
    put("/proc/meminfo", MEMINFO);
    put("/proc/self/cgroup", "9:memory:/svc\n");
    put("/sys/fs/cgroup/memory/svc/memory.limit_in_bytes", "734003200\n");
    expect(700 * MiB, MEMLIMIT_SRC_V1, "/sys/fs/cgroup/memory/svc/memory.limit_in_bytes");
}
END_TEST

/* No /proc/self/cgroup: the mount root's own limit is still read. */
START_TEST(test_memlimit_no_proc_cgroup_mount_root)
{
    put("/proc/meminfo", MEMINFO);
    put("/proc/self/mountinfo",
        "611 609 0:31 /docker/4f1e /sys/fs/cgroup/memory ro - cgroup cgroup rw,memory\n");
    put("/sys/fs/cgroup/memory/memory.limit_in_bytes", "536870912\n");
    expect(512 * MiB, MEMLIMIT_SRC_V1, "/sys/fs/cgroup/memory/memory.limit_in_bytes");
}
END_TEST

/* The process outside the mounted subtree (moved after the mount, or "/.."-relative to a
 * cgroup namespace): the mount point's own limit, never a path built from "..". */
START_TEST(test_memlimit_path_outside_mount_root)
{
    put("/proc/meminfo", MEMINFO);
    put("/proc/self/cgroup", "0::/../../evil\n");
    put("/proc/self/mountinfo", "26 22 0:23 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n");
    put("/sys/fs/cgroup/memory.max", "629145600\n");
    put("/evil/memory.max", "1\n");
    expect(600 * MiB, MEMLIMIT_SRC_V2, "/sys/fs/cgroup/memory.max");
}
END_TEST

/* Nothing readable at all: 0 and "none", so the caller can tell. */
START_TEST(test_memlimit_nothing_readable)
{
    memlimit_t m;
    memlimit_resolve(root, &m);
    ck_assert_uint_eq(m.bytes, 0);
    ck_assert_str_eq(m.source, MEMLIMIT_SRC_NONE);
    const char *src = NULL;
    ck_assert_uint_eq(memlimit_bytes(root, &src), 0);
    ck_assert_str_eq(src, MEMLIMIT_SRC_NONE);
}
END_TEST

/* Hybrid (systemd's default on older distributions): memory on v1, a v2 hierarchy at
 * /sys/fs/cgroup/unified without the memory controller. The v1 limit is found. */
START_TEST(test_memlimit_hybrid)
{
    put("/proc/meminfo", MEMINFO);
    put("/proc/self/cgroup",
        "9:memory:/docker/4f1e\n1:name=systemd:/docker/4f1e\n0::/docker/4f1e\n");
    put("/proc/self/mountinfo", MI_OVERLAY MI_PROC
        "612 609 0:32 /docker/4f1e /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n"
        "611 609 0:31 /docker/4f1e /sys/fs/cgroup/memory ro - cgroup cgroup rw,memory\n");
    put("/sys/fs/cgroup/unified/cgroup.procs", "1\n");
    put("/sys/fs/cgroup/memory/memory.limit_in_bytes", "671088640\n");
    expect(640 * MiB, MEMLIMIT_SRC_V1, "/sys/fs/cgroup/memory/memory.limit_in_bytes");
}
END_TEST

/* A hybrid whose v2 side does hold a smaller memory.max: the smallest wins across
 * hierarchies. A mount point with a space arrives escaped as \040. */
START_TEST(test_memlimit_smallest_across_hierarchies_escaped_mount)
{
    put("/proc/meminfo", MEMINFO);
    put("/proc/self/cgroup", "9:memory:/\n0::/\n");
    put("/proc/self/mountinfo",
        "611 609 0:31 / /sys/fs/cgroup/memory ro - cgroup cgroup rw,memory\n"
        "612 609 0:32 / /cg\\040two rw - cgroup2 cgroup2 rw\n");
    put("/sys/fs/cgroup/memory/memory.limit_in_bytes", "671088640\n");
    put("/cg two/memory.max", "471859200\n");
    expect(450 * MiB, MEMLIMIT_SRC_V2, "/cg two/memory.max");
}
END_TEST

Suite *memlimit_suite(void); /* called by check_main.c */
Suite *memlimit_suite(void)
{
    Suite *s = suite_create("memlimit");
    TCase *tc = tcase_create("layouts");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_memlimit_v1_host);
    tcase_add_test(tc, test_memlimit_v1_docker);
    tcase_add_test(tc, test_memlimit_v1_docker_child_cgroup);
    tcase_add_test(tc, test_memlimit_v1_ancestor_hierarchical);
    tcase_add_test(tc, test_memlimit_v2_host);
    tcase_add_test(tc, test_memlimit_v2_cgroupns);
    tcase_add_test(tc, test_memlimit_v2_container_no_cgroupns);
    tcase_add_test(tc, test_memlimit_v2_nested_parent_smaller);
    tcase_add_test(tc, test_memlimit_unlimited_everywhere_memtotal);
    tcase_add_test(tc, test_memlimit_unreadable_files_skipped);
    tcase_add_test(tc, test_memlimit_no_mountinfo_usual_mounts);
    tcase_add_test(tc, test_memlimit_no_proc_cgroup_mount_root);
    tcase_add_test(tc, test_memlimit_path_outside_mount_root);
    tcase_add_test(tc, test_memlimit_nothing_readable);
    tcase_add_test(tc, test_memlimit_hybrid);
    tcase_add_test(tc, test_memlimit_smallest_across_hierarchies_escaped_mount);
    suite_add_tcase(s, tc);
    return s;
}
