#!/usr/bin/env bash
# make test-s3-api: the API's integration suites again, on the s3 backend. s3rver (pinned
# in tests/s3rver, installed by make deps) is started on a free loopback port and stopped
# by its PID on any exit; every server the suites start gets a bucket of its own
# (tg_harness.c, TG_S3_ENDPOINT). What runs: every suite that starts a server and speaks
# the API. check_s3 has the backend's own tests (many nodes, a store that stops) and runs
# in make test.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${THUMBGATE_BIN:-$PWD/build/release/thumbgate}
TESTS=${TEST_BIN:-$PWD/build/release/tests/check_all}
SUITES=${S3_API_SUITES:-"http derive url formats mezz conns admin"}
S3RVER=tests/s3rver/atomic.js # s3rver with S3's PUT (the file says why)
[ -r tests/s3rver/node_modules/s3rver/bin/s3rver.js ] || { echo "s3-api: s3rver missing; run make deps" >&2; exit 1; }
DIR=$(mktemp -d /tmp/tg-s3-api.XXXXXX)
PID=
cleanup() {
    if [ -n "$PID" ]; then kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; fi
    rm -rf "$DIR"
}
trap cleanup EXIT
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
node "$S3RVER" -d "$DIR/store" -a 127.0.0.1 -p "$PORT" -s > "$DIR/s3rver.log" 2>&1 &
PID=$!
for _ in $(seq 600); do
    (echo > "/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
    kill -0 "$PID" 2>/dev/null || { cat "$DIR/s3rver.log" >&2; exit 1; }
    sleep 0.1
done
(echo > "/dev/tcp/127.0.0.1/$PORT") 2>/dev/null || { echo "s3-api: s3rver did not listen" >&2; cat "$DIR/s3rver.log" >&2; exit 1; }
fail=0
for s in $SUITES; do
    echo "s3-api: suite $s on the s3 backend"
    TG_S3_ENDPOINT=http://127.0.0.1:$PORT THUMBGATE_BIN=$BIN CK_RUN_SUITE=$s "$TESTS" || fail=1
done
exit $fail
