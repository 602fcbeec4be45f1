# cgroup.sh — sourced by the test scripts that run something in a memory cgroup of their
# own. cg_path NAME sets CG, a child NAME of this shell's memory cgroup (v1 or v2), and
# LIMIT, the name of its hard-limit file. The caller makes, limits and removes it.
cg_path() {
    local v1
    v1=$(awk -F: '$2 ~ /(^|,)memory(,|$)/ {print $3}' /proc/self/cgroup)
    if [ -n "$v1" ]; then
        CG=/sys/fs/cgroup/memory${v1%/}/$1 LIMIT=memory.limit_in_bytes
    else
        CG=/sys/fs/cgroup$(awk -F: '$1 == "0" {print $3}' /proc/self/cgroup | sed 's,/$,,')/$1
        LIMIT=memory.max
    fi
}
