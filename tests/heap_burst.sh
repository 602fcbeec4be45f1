#!/bin/bash
# heap_burst.sh — the allocator comparison of README "Allocator": two thumbgate binaries
# side by side, the 20-way thumbnail burst fired at one and then the other, round after
# round (the box is shared: interleaving spreads its noise over both). Per round and
# binary: peak RSS of the burst (VmHWM, reset before it through /proc/PID/clear_refs),
# RSS when the burst's last answer arrives, RSS 4 s later (past the idle trim at 2 s and
# jemalloc's 1 s decay) and 12 s later, and the burst's throughput (tgload req/s).
#
#   tests/heap_burst.sh BIN_A BIN_B [ROUNDS] [N]
#     e.g. make JEMALLOC=0 VARIANT=glibc build/glibc/thumbgate build/release/thumbgate \
#               build/loadtest/tgload
#          tests/heap_burst.sh build/glibc/thumbgate build/release/thumbgate 4
#
# Needs root (clear_refs of another process), curl, build/loadtest/tgload and an input:
# ../shared/corpus/big-16mp-q95.jpg when present, else a 4000x4000 JPEG made with `vips`.
# HB_ENV adds "THUMBGATE_X=v ..." to both servers (default: 20 workers, a 4 GiB budget,
# so all N jobs run at once), HB_ENV_A / HB_ENV_B to one of them (e.g.
# HB_ENV_B=MALLOC_CONF=prof_active:false: the cost of profiling, same binary twice);
# HB_IMG the input. Not part of `make test`. Servers are stopped by PID.
set -u -o pipefail
A=$(realpath "$1") B=$(realpath "$2") ROUNDS=${3:-3} N=${4:-20}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
LOAD=$ROOT/build/loadtest/tgload
WORK=$(mktemp -d /tmp/heap-burst.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
    rm -rf "$WORK"
}
trap cleanup EXIT
IMG=${HB_IMG:-$ROOT/../shared/corpus/big-16mp-q95.jpg}
if [ ! -s "$IMG" ]; then
    IMG=$WORK/big.jpg
    vips gaussnoise "$WORK/n.v" 4000 4000 && vips colourspace "$WORK/n.v" "$WORK/c.v" srgb &&
        vips bandjoin "$WORK/c.v $WORK/c.v $WORK/c.v" "$IMG[Q=95]" || exit 2
fi
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
kib() { awk -v k="$2:" '$1==k {print $2}' "/proc/$1/status"; }

declare -A PID PORT
for v in a b; do
    bin=$A one=${HB_ENV_A:-}
    [ $v = b ] && bin=$B one=${HB_ENV_B:-}
    PORT[$v]=$(free_port)
    aport=$(free_port)
    mkdir -p "$WORK/$v"
    # shellcheck disable=SC2086
    env THUMBGATE_LISTEN=127.0.0.1:${PORT[$v]} THUMBGATE_ADMIN_LISTEN=127.0.0.1:$aport \
        THUMBGATE_STORAGE_ROOT="$WORK/$v/data" THUMBGATE_LOG_ACCESS=false \
        ${HB_ENV:-THUMBGATE_WORKERS=20 THUMBGATE_MEMORY_BUDGET=4GiB} $one \
        "$bin" >"$WORK/$v/log" 2>&1 &
    PID[$v]=$!
    PIDS+=("$!")
    for _ in $(seq 1 300); do
        curl -s -o /dev/null "http://127.0.0.1:$aport/healthz" && break
        sleep 0.1
    done
    for i in $(seq 1 "$N"); do
        code=$(curl -s -o /dev/null -w '%{http_code}' -H 'Expect:' -T "$IMG" \
            "http://127.0.0.1:${PORT[$v]}/t/o$i.jpg")
        [ "$code" = 201 ] || { echo "seeding $v got $code" >&2; exit 2; }
    done
done
sleep 5 # both idle and trimmed before the first round
echo "binary idle_kib peak_kib after_burst_kib after_4s_kib after_12s_kib req_per_s (a=$A b=$B, $N at once)"
for r in $(seq 1 "$ROUNDS"); do
    size=$((289 + r))
    for v in a b; do
        p=${PID[$v]}
        for i in $(seq 1 "$N"); do echo "GET http://127.0.0.1:${PORT[$v]}/t/o${i}_${size}x${size}.jpg"; done >"$WORK/list"
        idle=$(kib "$p" VmRSS)
        echo 5 >"/proc/$p/clear_refs"
        "$LOAD" -f "$WORK/list" -c "$N" -n "$N" -T 300 -t 120 >"$WORK/out" 2>/dev/null
        after=$(kib "$p" VmRSS) peak=$(kib "$p" VmHWM)
        sleep 4
        a4=$(kib "$p" VmRSS)
        sleep 8
        a12=$(kib "$p" VmRSS)
        ok=$(awk -F= '$1=="s_200"{print $2}' "$WORK/out")
        rps=$(awk -F= '$1=="rps"{print $2}' "$WORK/out")
        echo "round=$r $v idle=$idle peak=$peak after=$after after4s=$a4 after12s=$a12 rps=$rps ok=${ok:-0}/$N"
    done
done
