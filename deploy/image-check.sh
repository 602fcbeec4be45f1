#!/usr/bin/env bash
# make image-check: build deploy/Dockerfile with podman, then run the image's binary in a
# chroot laid out the way Docker lays out a cgroup v1 container with a 512 MiB limit, and
# check that the memory limit and the `auto` budget come from that limit, not from the
# host's MemTotal (issue 11: in such a container the budget used to be 60% of the host).
#
# The layout: the container's own memory cgroup directory bind-mounted at
# /sys/fs/cgroup/memory, proc mounted at /proc, so /proc/self/cgroup names the host-side
# path of the cgroup (no cgroup namespace) and /proc/self/mountinfo shows it as the
# mount's root. The image's user, working directory, entrypoint and ENV are used, with
# the listeners moved to free loopback ports.
#
# No container registry is reachable: the Dockerfile's FROM images (debian:12,
# debian:12-slim) are satisfied by a Debian 12 minbase made with debootstrap from the
# Debian mirror and `podman import`ed under those names, in a podman store of our own
# under build/image-check/ (the machine's store is left alone). The debootstrap tarball and
# the store are kept there between runs (`make clean` drops them): a second run reuses the
# base and podman's layer cache.
#
# Needs root, podman and debootstrap (make deps), the cgroup v1 memory controller at
# /sys/fs/cgroup/memory. Cleans up on any exit: the server is stopped by its PID, the
# mounts live in a private mount namespace that dies with it, the cgroup is removed.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=$ROOT/build/image-check
LIMIT=$((512 * 1024 * 1024))
SUITE=bookworm
MIRROR=${IMAGE_CHECK_MIRROR:-http://deb.debian.org/debian}
BASE=localhost/thumbgate-base:$SUITE
IMAGE=localhost/thumbgate:image-check
PODMAN=(podman --root "$OUT/storage" --runroot "$OUT/runroot")
CHROOT=$OUT/rootfs
T0=$SECONDS

say() { printf 'image-check: %s\n' "$*"; }
die() {
    say "FAIL: $*"
    exit 1
}
step() { say "$* ($((SECONDS - T0)) s)"; }

[ "$(id -u)" = 0 ] || die "needs root (podman build, chroot, cgroups)"
for t in podman debootstrap unshare chroot mknod ss; do
    command -v "$t" >/dev/null || die "$t not found (make deps)"
done
[ -f /sys/fs/cgroup/memory/memory.limit_in_bytes ] || die "no cgroup v1 memory controller at /sys/fs/cgroup/memory"
mkdir -p "$OUT"

# ---- cleanup, set before anything is created -------------------------------------------
SPID="" CID="" CG=""
cleanup() {
    local rc=$?
    if [ -n "$SPID" ] && kill -0 "$SPID" 2>/dev/null; then
        kill -TERM "$SPID" 2>/dev/null || true
        for _ in $(seq 100); do kill -0 "$SPID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$SPID" 2>/dev/null || true
    fi
    [ -n "$SPID" ] && wait "$SPID" 2>/dev/null || true
    [ -n "$CID" ] && "${PODMAN[@]}" rm -f "$CID" >/dev/null 2>&1 || true
    if [ -n "$CG" ] && [ -d "$CG" ]; then
        # anything still in the container's cgroup was started here: stop it by PID
        for p in $(cat "$CG/cgroup.procs" 2>/dev/null); do kill -KILL "$p" 2>/dev/null || true; done
        for _ in $(seq 50); do rmdir "$CG" 2>/dev/null && break; sleep 0.1; done
        [ -d "$CG" ] && say "warning: could not remove cgroup $CG"
    fi
    # the mounts were made in a private namespace; never delete through one left behind
    if grep -qF " $CHROOT/" /proc/self/mountinfo; then
        say "warning: mounts left under $CHROOT, not removing it"
    else
        rm -rf "$CHROOT"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- base image: debootstrap, cached as a tarball, imported under the FROM names --------
if ! "${PODMAN[@]}" image exists "$BASE"; then
    tarball=$OUT/debian-$SUITE-minbase.tar
    if [ ! -s "$tarball" ]; then
        step "debootstrap $SUITE (minbase) from $MIRROR"
        rm -rf "$OUT/base.tmp"
        debootstrap --variant=minbase "$SUITE" "$OUT/base.tmp" "$MIRROR" >"$OUT/debootstrap.log" 2>&1 ||
            { tail -n 20 "$OUT/debootstrap.log"; die "debootstrap failed (log: $OUT/debootstrap.log)"; }
        rm -rf "$OUT/base.tmp/var/cache/apt/archives/"*.deb
        tar -C "$OUT/base.tmp" -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
        rm -rf "$OUT/base.tmp"
    fi
    step "podman import $tarball"
    "${PODMAN[@]}" import "$tarball" "$BASE" >"$OUT/import.log" 2>&1 || { cat "$OUT/import.log"; die "podman import failed"; }
fi
# every FROM of the Dockerfile that names a Debian 12 image (the others are stage names)
for from in $(awk 'toupper($1) == "FROM" { print $2 }' deploy/Dockerfile); do
    case $from in
    debian:12 | debian:12-*) "${PODMAN[@]}" tag "$BASE" "docker.io/library/$from" ;;
    *) grep -qiE "^FROM .* AS $from\$" deploy/Dockerfile || die "FROM $from: only debian:12* can be provided offline" ;;
    esac
done

# ---- build --------------------------------------------------------------------------------
step "podman build -f deploy/Dockerfile (log: $OUT/build.log)"
"${PODMAN[@]}" build --isolation chroot --pull=never --ignorefile deploy/Dockerfile.dockerignore \
    -f deploy/Dockerfile -t "$IMAGE" . >"$OUT/build.log" 2>&1 ||
    { tail -n 30 "$OUT/build.log"; die "podman build failed (log: $OUT/build.log)"; }

# ---- the image's filesystem and run configuration --------------------------------------
step "extracting the image"
rm -rf "$CHROOT" && mkdir -p "$CHROOT"
CID=$("${PODMAN[@]}" create "$IMAGE")
"${PODMAN[@]}" export "$CID" | tar -C "$CHROOT" -xf -
"${PODMAN[@]}" rm "$CID" >/dev/null && CID=""
inspect() { "${PODMAN[@]}" image inspect --format "$1" "$IMAGE"; }
ENTRY=$(inspect '{{index .Config.Entrypoint 0}}')
USERSPEC=$(inspect "{{.Config.User}}")
[ -n "$USERSPEC" ] || USERSPEC=0:0
WORKDIR=$(inspect '{{.Config.WorkingDir}}')
mapfile -t ENV < <(inspect '{{range .Config.Env}}{{println .}}{{end}}' | grep .)
[ -x "$CHROOT$ENTRY" ] || die "entrypoint $ENTRY is not in the image"
mkdir -p "$CHROOT/proc" "$CHROOT/sys/fs/cgroup/memory" "$CHROOT/dev"

free_port() {
    local p
    for _ in $(seq 200); do
        p=$((20000 + RANDOM % 40000))
        [ -z "$(ss -Htln "sport = :$p")" ] && { echo "$p"; return; }
    done
    die "no free port"
}
PORT=$(free_port) APORT=$(free_port)
[ "$PORT" != "$APORT" ] || APORT=$(free_port)

# ---- the container's memory cgroup: a child of ours with the hard limit -----------------
self=$(awk -F: '$2 ~ /(^|,)memory(,|$)/ { print $3 }' /proc/self/cgroup)
CG=/sys/fs/cgroup/memory${self%/}/thumbgate-image-check-$$
mkdir "$CG"
echo "$LIMIT" >"$CG/memory.limit_in_bytes"

# in_container ARGS...: the entrypoint with ARGS, inside the cgroup, in a private mount
# namespace with the container's /proc, /dev and /sys/fs/cgroup/memory, chrooted, as the
# image's user, in its working directory, with its environment (listeners moved). Every
# step execs, so the PID of `in_container &` is the server's; call it in a subshell or
# in the background (it execs).
in_container() {
    exec unshare --mount --propagation private bash -c '
        set -e
        chroot=$1 cg=$2 user=$3 dir=$4; shift 4
        mount -t proc proc "$chroot/proc"
        mount -t tmpfs -o mode=755,size=64k tmpfs "$chroot/dev"
        for d in null:3 zero:5 random:8 urandom:9; do mknod -m 666 "$chroot/dev/${d%:*}" c 1 "${d#*:}"; done
        mount --bind "$cg" "$chroot/sys/fs/cgroup/memory"
        echo $$ >"$cg/cgroup.procs"
        exec chroot --userspec="$user" "$chroot" /usr/bin/env -i "$@"' \
        in_container "$CHROOT" "$CG" "$USERSPEC" "$WORKDIR" \
        /bin/sh -c 'cd "$0" && exec "$@"' "$WORKDIR" \
        /usr/bin/env "${ENV[@]}" THUMBGATE_LISTEN=127.0.0.1:$PORT THUMBGATE_ADMIN_LISTEN=127.0.0.1:$APORT "$ENTRY" "$@"
}

# ---- --check-config: the limit, its source, the file ------------------------------------
step "thumbgate --check-config in the container layout"
(in_container --check-config) >"$OUT/check-config.out" 2>&1 || { cat "$OUT/check-config.out"; die "--check-config failed"; }
line=$(grep '^# memory limit:' "$OUT/check-config.out") || die "--check-config printed no memory limit line"
say "  $line"
want="# memory limit: $LIMIT bytes from cgroup v1 memory.limit_in_bytes (/sys/fs/cgroup/memory/memory.limit_in_bytes)"
[ "$line" = "$want" ] || die "expected: $want"
grep -q '^#   limit  *512.0 MiB  (cgroup v1 memory.limit_in_bytes)$' "$OUT/check-config.out" ||
    { cat "$OUT/check-config.out"; die "--check-config printed no memory plan from the 512 MiB limit"; }

# ---- the server: its start-up line -------------------------------------------------------
step "starting the server in the container layout"
in_container >"$OUT/server.log" 2>&1 &
SPID=$!
start=""
for _ in $(seq 600); do # up to 60 s on a busy machine
    start=$(grep -m1 '"log":"start"' "$OUT/server.log" || true)
    [ -n "$start" ] && break
    kill -0 "$SPID" 2>/dev/null || { cat "$OUT/server.log"; die "the server exited before its start-up line"; }
    sleep 0.1
done
[ -n "$start" ] || { cat "$OUT/server.log"; die "no start-up line within 60 s"; }
say "  $start"
grep -qx "$SPID" "$CG/cgroup.procs" || die "the server (pid $SPID) is not in $CG"
source=$(sed -n 's/.*"budget_source":"\([^"]*\)".*/\1/p' <<<"$start")
budget=$(sed -n 's/.*"budget":\([0-9]*\).*/\1/p' <<<"$start")
[ "$source" = "cgroup v1 memory.limit_in_bytes" ] || die "budget_source is '$source', not the cgroup's limit"
# `auto` is a share of the limit: under it, and far above nothing (MemTotal would give GBs)
[ -n "$budget" ] && [ "$budget" -gt $((LIMIT / 4)) ] && [ "$budget" -lt "$LIMIT" ] ||
    die "budget $budget is not a share of the $LIMIT-byte limit"
# the memory plan: from the same limit, and within it
plan=$(grep -m1 '"log":"memory_plan"' "$OUT/server.log") || die "no memory_plan line"
say "  $plan"
plimit=$(sed -n 's/.*"limit":\([0-9]*\).*/\1/p' <<<"$plan")
ptotal=$(sed -n 's/.*"total":\([0-9]*\).*/\1/p' <<<"$plan")
[ "$plimit" = "$LIMIT" ] || die "the plan's limit is $plimit, not $LIMIT"
[ -n "$ptotal" ] && [ "$ptotal" -le "$LIMIT" ] || die "the plan's total $ptotal is over the $LIMIT-byte limit"
kill -TERM "$SPID"
wait "$SPID" || die "the server did not exit cleanly on SIGTERM"
SPID=""
step "PASS: limit $LIMIT from the container's cgroup, budget $budget"
