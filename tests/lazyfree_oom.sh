#!/bin/bash
# Lazily freed pages under a memory cgroup limit (`make test`). The allocator settings
# (imgproc/imgproc.c, muzzy_decay_ms:-1) give the pages of freed blocks back with
# MADV_FREE: they stay in RSS until the kernel needs them. The estimates count them (the
# calibration measures VmHWM) and this checks the other half of the claim: in a cgroup
# limited to 160 MiB, `calibrate --lazy-free 96` writes and frees 96 MiB of small blocks,
# waits for the decay, and a child in the same cgroup writes 96 MiB of its own; the kernel
# must take the lazily freed pages rather than OOM-kill the child. The control, the same
# run with the pages kept dirty (MALLOC_CONF=dirty_decay_ms:-1), must be OOM-killed, or
# the limit does not bite and the check proves nothing. Needs root and a writable memory
# cgroup (v1 or v2). Usage: tests/lazyfree_oom.sh [CALIBRATE_BIN]   (exit 0 = pass)
set -u
BIN=${1:-$PWD/build/release/imgproc/calibrate}
MIB=96
. "$(dirname "$0")/cgroup.sh"
cg_path tglazy.$$
cleanup() { rmdir "$CG" 2>/dev/null; }
trap cleanup EXIT
mkdir "$CG" && echo 160M >"$CG/$LIMIT" || { echo "lazyfree_oom: cannot make a memory cgroup at $CG"; exit 2; }
[ -f "$CG/memory.swappiness" ] && echo 0 >"$CG/memory.swappiness" 2>/dev/null
[ -f "$CG/memory.swap.max" ] && echo 0 >"$CG/memory.swap.max" 2>/dev/null
# run [ENV...]: calibrate --lazy-free in the cgroup; sets OUT and RC
run() {
    OUT=$(sh -c 'echo $$ > "$1/cgroup.procs" && shift && exec env "$@"' sh "$CG" "$@" \
        "$BIN" --lazy-free $MIB 2>&1)
    RC=$?
}
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$OUT"; }
fail=0
run
echo "shipped settings: $OUT (exit $RC)"
if [ "$RC" = 77 ]; then
    echo "lazyfree_oom: skipped (not a jemalloc build)"
    exit 0
fi
kept=$(( $(field after_decay_kib) - $(field base_kib) ))
taken=$(( $(field after_decay_kib) - $(field after_child_kib) ))
if [ "$kept" -lt $((MIB * 1024 * 8 / 10)) ] 2>/dev/null; then
    echo "FAIL: only $((kept / 1024)) MiB of the freed $MIB MiB stayed resident: not freed lazily, nothing checked"
    fail=1
fi
[ "$RC" = 0 ] || { echo "FAIL: the child was not let through ($(field child)): lazily freed pages were not taken back"; fail=1; }
run MALLOC_CONF=dirty_decay_ms:-1
echo "control, pages kept dirty: $OUT (exit $RC)"
[ "$RC" = 1 ] || { echo "FAIL: the control's child was not OOM-killed (exit $RC): the cgroup limit does not bite"; fail=1; }
[ $fail = 0 ] && echo "lazyfree_oom: pass ($((kept / 1024)) MiB freed lazily stayed resident; the kernel took $((taken / 1024)) MiB of them for the child; kept dirty instead, the child was OOM-killed)"
exit $fail
