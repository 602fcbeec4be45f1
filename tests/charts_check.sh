#!/bin/sh
# make charts-check: the /debug/charts page in a real headless browser (Debian chromium).
# Starts thumbgate on free loopback ports with a small budget, puts an image and keeps a
# trickle of thumbnail jobs (and a few over-budget refusals) going, then runs chromium:
#   1. --dump-dom: the page scraped /metrics at least twice, shows a non-empty RSS, its jobs
#      counter is newer than the one read before the browser started, and every exported
#      chart drew at least two points;
#   2. --screenshot: a 1280x900 PNG in OUT/charts.png (look at it).
# Usage: tests/charts_check.sh THUMBGATE_BIN OUT_DIR. Installs nothing: `make deps` does.
set -eu
BIN=$1
OUT=$2
fail() { echo "charts-check: FAIL: $*" >&2; exit 1; }
for tool in chromium curl python3 vips; do
    command -v $tool >/dev/null 2>&1 || fail "$tool is missing: run make deps"
done
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
TMP=$(mktemp -d /tmp/charts-check.XXXXXX)
PID=
LOAD=
cleanup() {
    set +e # every step runs, whatever the one before returned
    if [ -n "$LOAD" ]; then kill "$LOAD" 2>/dev/null; wait "$LOAD" 2>/dev/null; fi
    if [ -n "$PID" ]; then kill "$PID" 2>/dev/null; wait "$PID" 2>/dev/null; fi
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
PORT=$(free_port)
ADMIN=$(free_port)
while [ "$ADMIN" = "$PORT" ]; do ADMIN=$(free_port); done
PUB=http://127.0.0.1:$PORT
ADM=http://127.0.0.1:$ADMIN

# 8 MiB of budget: thumbnails of a 12 MP JPEG fit (estimates about 6 MB each), a full-size PNG
# of it (about 9.5 MB) does not: 413.
mkdir -p "$TMP/root"
THUMBGATE_LISTEN=127.0.0.1:$PORT THUMBGATE_ADMIN_LISTEN=127.0.0.1:$ADMIN \
THUMBGATE_STORAGE_ROOT=$TMP/root THUMBGATE_MEMORY_BUDGET=${CHARTS_BUDGET:-8MiB} THUMBGATE_WORKERS=2 \
    "$BIN" >"$OUT/thumbgate.log" 2>&1 &
PID=$!
up=0
for _ in $(seq 100); do
    if curl -sf -o /dev/null "$ADM/healthz"; then up=1; break; fi
    kill -0 "$PID" 2>/dev/null || fail "thumbgate exited at start (see $OUT/thumbgate.log)"
    sleep 0.2
done
[ $up = 1 ] || fail "thumbgate did not answer /healthz in 20 s"

vips gaussnoise "$TMP/noise.v" 4000 3000 --mean 128 --sigma 50
vips cast "$TMP/noise.v" "$TMP/photo.jpg[Q=85]" uchar
code=$(curl -s -o /dev/null -w '%{http_code}' -X PUT --data-binary @"$TMP/photo.jpg" "$PUB/photo.jpg")
[ "$code" = 201 ] || fail "PUT /photo.jpg: $code"
for path in photo_200x200.webp photo_300x.jpg photo_400x300c.png; do
    code=$(curl -s -o /dev/null -w '%{http_code}' "$PUB/$path")
    [ "$code" = 200 ] || fail "GET /$path: $code"
done
code=$(curl -s -o /dev/null -w '%{http_code}' "$PUB/photo.png")
[ "$code" = 413 ] || fail "GET /photo.png over an 8 MiB budget: $code, expected 413"

# Keep jobs going while the browser watches: a new size each time (a cache miss), and now
# and then the over-budget conversion, so jobs/s and refusals move.
(
    w=100
    while :; do
        curl -s -o /dev/null "$PUB/photo_${w}x.webp" || true
        w=$((w + 1)); [ $w -lt 300 ] || w=100
        [ $((w % 8)) = 0 ] && { curl -s -o /dev/null "$PUB/photo.png" || true; }
        sleep 0.1
    done
) &
LOAD=$!

metric() { curl -s "$ADM/metrics" | awk -v n="$1" '$1 == n { print $2 }'; }
jobs_before=$(metric thumbgate_jobs_completed_total)

browser() {
    rm -rf "$TMP/profile"
    mkdir "$TMP/profile"
    timeout 180 chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
        --disable-background-networking --disable-component-update --disable-sync \
        --user-data-dir="$TMP/profile" "$@" "$ADM/debug/charts" 2>>"$OUT/chromium.log"
}
: >"$OUT/chromium.log"

# 1. the rendered DOM
browser --virtual-time-budget=6000 --dump-dom >"$OUT/charts.dom.html" ||
    fail "chromium --dump-dom failed (see $OUT/chromium.log)"
state=$(grep -o '<div id="state"[^>]*>' "$OUT/charts.dom.html") || fail "no #state in the DOM"
attr() { echo "$state" | sed -n "s/.* $1=\"\([^\"]*\)\".*/\1/p"; }
samples=$(attr data-samples)
rss=$(attr data-rss-anon)
jobs=$(attr data-jobs-completed)
echo "charts-check: page took $samples samples; RSS anon $rss B; jobs completed $jobs (before: $jobs_before)"
[ "${samples:-0}" -ge 2 ] || fail "fewer than 2 samples: the page did not poll /metrics"
[ "${rss:-0}" -gt 0 ] || fail "no RSS value in the page"
[ "${jobs:-0}" -gt "$jobs_before" ] || fail "the page's jobs counter did not move past $jobs_before"
# every chart section: drawn with >= 2 points, or saying "not exported"
nsec=0
for sec in $(grep -o '<section id="chart-[a-z]*"[^>]*>' "$OUT/charts.dom.html" | tr ' ' '|'); do
    nsec=$((nsec + 1))
    id=$(echo "$sec" | sed -n 's/.*id="chart-\([a-z]*\)".*/\1/p')
    pts=$(echo "$sec" | sed -n 's/.*data-points="\([0-9]*\)".*/\1/p')
    exported=$(echo "$sec" | sed -n 's/.*data-exported="\([a-z]*\)".*/\1/p')
    case $exported in
    true) [ "${pts:-0}" -ge 2 ] || [ "$id" = plan ] || fail "chart $id drew ${pts:-0} points" ;;
    false) echo "charts-check: chart $id: not exported by this server" ;;
    *) fail "chart $id was never rendered" ;;
    esac
done
[ "$nsec" = 8 ] || fail "expected 8 charts, found $nsec"

# 2. the screenshot
rm -f "$OUT/charts.png"
browser --virtual-time-budget=${CHARTS_SHOT_VT:-120000} --window-size=1280,900 --screenshot="$OUT/charts.png" >/dev/null ||
    fail "chromium --screenshot failed (see $OUT/chromium.log)"
[ -s "$OUT/charts.png" ] || fail "no screenshot written"
head -c 8 "$OUT/charts.png" | od -An -c | grep -q 'P   N   G' || fail "$OUT/charts.png is not a PNG"
echo "charts-check: OK; screenshot $OUT/charts.png"
