#!/bin/bash
# A real OOM kill, seen by the next run: starts thumbgate (memory.mode naive, so nothing
# stops the decodes) in a fresh memory cgroup limited to 400 MiB, makes the kernel
# OOM-kill it with three big conversions, restarts it in the same cgroup and checks that
# the previous_run line, /metrics and `thumbgate flight --list` say oom_kill.
# Needs root and a writable memory cgroup (v1 or v2). Not part of `make test`: it kills on
# purpose and takes ~10-20 s. Usage: tests/flight_oom.sh [THUMBGATE_BIN]   (exit 0 = pass)
set -u
BIN=${1:-${THUMBGATE_BIN:-$PWD/build/release/thumbgate}}
PORT=${PORT:-18571}
. "$(dirname "$0")/cgroup.sh"
cg_path tgoom.$$
D=$(mktemp -d /tmp/tgoom.XXXXXX)
P=
cleanup() {
    [ -n "$P" ] && kill -9 "$P" 2>/dev/null && wait "$P" 2>/dev/null
    rmdir "$CG" 2>/dev/null
    rm -rf "$D" "$D.log"
}
trap cleanup EXIT
mkdir "$CG" && echo 400M > "$CG/$LIMIT" || { echo "cannot make a memory cgroup at $CG"; exit 2; }
export THUMBGATE_STORAGE_ROOT=$D THUMBGATE_LISTEN=127.0.0.1:$PORT \
    THUMBGATE_ADMIN_LISTEN=127.0.0.1:$((PORT + 1)) THUMBGATE_FLIGHT_INTERVAL=100ms \
    THUMBGATE_MEMORY_MODE=naive THUMBGATE_LOG_ACCESS=false
admin=http://127.0.0.1:$((PORT + 1))
start() {
    bash -c "echo \$\$ > $CG/cgroup.procs && exec $BIN" 2>>"$D.log" &
    P=$!
    for _ in $(seq 200); do curl -sf "$admin/healthz" >/dev/null && return 0; sleep 0.1; done
    echo "thumbgate did not start"; cat "$D.log"; exit 1
}
vips black "$D.big.png" 9000 9000 --bands 3 || exit 2
start
curl -sf -XPUT --data-binary @"$D.big.png" "http://127.0.0.1:$PORT/big.png" >/dev/null || exit 1
rm -f "$D.big.png"
for i in 1 2 3; do curl -s -o /dev/null "http://127.0.0.1:$PORT/big_${i}000x.webp" & done
wait "$P"
st=$?
P=
wait
echo "first run exit status $st (137 = SIGKILL)"
echo 4G > "$CG/$LIMIT"
start
line=$(grep '"log":"previous_run"' "$D.log")
echo "$line"
metrics=$(curl -s "$admin/metrics" | grep '^thumbgate_previous_run_oom_killed')
echo "$metrics"
list=$("$BIN" flight --dir "$D" --list)
echo "$list"
ok=0
[ "$st" = 137 ] || ok=1
case $line in *'"clean":false'*'"oom_kill":true'*) ;; *) ok=1 ;; esac
[ "$metrics" = "thumbgate_previous_run_oom_killed 1" ] || ok=1
echo "$list" | grep -q 'killed, oom_kill$' || ok=1
[ $ok = 0 ] && echo PASS || echo FAIL
exit $ok
