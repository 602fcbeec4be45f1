#!/usr/bin/env bash
# deploy/check.sh — offline validation of everything in deploy/.
#
#   deploy/check.sh                 run every check against this tree
#   deploy/check.sh --root DIR      ... against another tree (used by the self-test)
#   deploy/check.sh --only G[,G]    only these groups: systemd nginx static k8s-schema
#                                   binary selftest
#
# Prints one line per check (PASS/FAIL/SKIP <what>[: why]) and last, alone on its
# line, `N passed, N failed` (`, N skipped` appended when some were skipped). Exits 1
# if any check failed. Needs no network except the npm registry for the first
# `npm ci` of the Kubernetes schema check (skipped, not failed, when the registry
# cannot be reached), and no root: nginx -t and systemd-analyze run on copies in a
# temp dir. Debian packages it needs: systemd, nginx, python3, python3-yaml, nodejs
# (with npm), pkg-config, binutils, gcc (cc), apt/dpkg (always there).
set -u

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
ONLY="systemd,nginx,static,k8s-schema,binary,selftest"
while [ $# -gt 0 ]; do
  case $1 in
    --root) ROOT=$(cd "$2" && pwd); shift 2 ;;
    --only) ONLY=$2; shift 2 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "check.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
DEPLOY=$ROOT/deploy
TMP=$(mktemp -d "${TMPDIR:-/tmp}/thumbgate-deploy-check.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
RES=$TMP/results
: >"$RES"

want() { case ",$ONLY," in *",$1,"*) return 0 ;; esac; return 1; }
line() { printf '%s\n' "$*" | tee -a "$RES"; }
pass() { line "PASS $*"; }
fail() { line "FAIL $*"; }
skip() { line "SKIP $*"; }
# Runs a command that prints PASS/FAIL/SKIP lines itself; anything else it prints is
# indented as detail. A command that crashes or prints no verdict is a failure.
verdicts() {
  local name=$1; shift
  local out rc
  out=$("$@" 2>"$TMP/stderr"); rc=$?
  if [ -n "$out" ]; then
    printf '%s\n' "$out" | grep -E '^(PASS|FAIL|SKIP) ' | tee -a "$RES"
    printf '%s\n' "$out" | grep -vE '^(PASS|FAIL|SKIP) ' | sed 's/^/    /'
  fi
  if [ $rc -ne 0 ] || ! printf '%s\n' "$out" | grep -qE '^(PASS|FAIL|SKIP) '; then
    fail "$name: exit $rc, $(tail -n 3 "$TMP/stderr" | tr '\n' ' ')"
  fi
}
have() { command -v "$1" >/dev/null 2>&1; }

PY=
for p in /usr/bin/python3 python3; do
  if have "$p" && "$p" -c 'import yaml' 2>/dev/null; then PY=$p; break; fi
done

# ---- systemd ------------------------------------------------------------------------
# `systemd-analyze verify` insists that ExecStart's binary exists and is executable.
# The unit names /usr/local/bin/thumbgate (where the install notes put it); the check
# verifies a copy whose ExecStart points at a stub script in the temp dir instead, so
# it needs neither root nor a build. Verify only warns (exit 0) on unknown keys or bad
# values, so any line it prints about the unit is a failure too.
if want systemd; then
  UNIT=$DEPLOY/systemd/thumbgate.service
  if ! have systemd-analyze; then
    fail "systemd: systemd-analyze not found (apt-get install systemd)"
  else
    mkdir -p "$TMP/units" "$TMP/bin"
    printf '#!/bin/sh\nexit 0\n' >"$TMP/bin/thumbgate"
    chmod 755 "$TMP/bin/thumbgate"
    sed -E "s#^(ExecStart=[-@:+!]*)/usr/local/bin/thumbgate([[:space:]]|\$)#\\1$TMP/bin/thumbgate\\2#" \
      "$UNIT" >"$TMP/units/thumbgate.service"
    if ! grep -q "^ExecStart=$TMP/bin/thumbgate" "$TMP/units/thumbgate.service"; then
      fail "systemd: ExecStart is not /usr/local/bin/thumbgate (the path of the install notes and the image)"
    else
      out=$(cd "$TMP/units" && systemd-analyze verify --man=no ./thumbgate.service 2>&1); rc=$?
      about=$(printf '%s\n' "$out" | grep -i 'thumbgate' || true)
      if [ $rc -eq 0 ] && [ -z "$about" ]; then
        pass "systemd: systemd-analyze verify thumbgate.service (ExecStart -> stub in temp dir)"
      else
        fail "systemd: systemd-analyze verify exit $rc: $(printf '%s' "${about:-$out}" | tr '\n' ' ')"
      fi
      out=$(cd "$TMP/units" && systemd-analyze security --offline=yes --threshold=20 ./thumbgate.service 2>&1); rc=$?
      level=$(printf '%s\n' "$out" | sed -n 's/.*Overall exposure level for thumbgate.service: \([0-9.]*\).*/\1/p')
      if [ $rc -eq 0 ] && [ -n "$level" ]; then
        pass "systemd: systemd-analyze security --offline: exposure $level <= 2.0"
      else
        fail "systemd: systemd-analyze security exposure ${level:-?} (want <= 2.0, exit $rc)"
      fi
    fi
  fi
fi

# ---- nginx --------------------------------------------------------------------------
# thumbgate-lb.conf is an http{} include. A wrapper nginx.conf in the temp dir includes
# a copy (log paths moved into the temp dir) with pid, error log and temp paths there
# too; `nginx -t -p TMP -e ...` then needs no root path and starts no server.
if want nginx; then
  if ! have nginx && [ ! -x /usr/sbin/nginx ]; then
    fail "nginx: nginx -t: nginx not found (apt-get install nginx)"
  else
    NGINX=$(command -v nginx || echo /usr/sbin/nginx)
    N=$TMP/nginx
    mkdir -p "$N/logs" "$N/tmp"
    sed "s#/var/log/nginx/#$N/logs/#g" "$DEPLOY/nginx/thumbgate-lb.conf" >"$N/thumbgate-lb.conf"
    cat >"$N/nginx.conf" <<EOF
pid $N/nginx.pid;
error_log $N/logs/error.log;
events {}
http {
    client_body_temp_path $N/tmp/body;
    proxy_temp_path $N/tmp/proxy;
    fastcgi_temp_path $N/tmp/fastcgi;
    uwsgi_temp_path $N/tmp/uwsgi;
    scgi_temp_path $N/tmp/scgi;
    include $N/thumbgate-lb.conf;
}
EOF
    out=$("$NGINX" -t -q -p "$N" -e "$N/logs/error.log" -c "$N/nginx.conf" 2>&1); rc=$?
    if [ $rc -eq 0 ]; then
      pass "nginx: nginx -t on thumbgate-lb.conf ($("$NGINX" -v 2>&1 | sed 's/.*: //'), temp prefix)"
    else
      fail "nginx: nginx -t: $(printf '%s' "$out" | sed "s#$N/##g" | tr '\n' ' ')"
    fi
  fi
fi

# ---- cross-file consistency, Dockerfile, k8s semantics, nginx semantics (python) ----
if want static; then
  if [ -z "$PY" ]; then
    fail "static checks: python3 with the yaml module not found (apt-get install python3 python3-yaml)"
  else
    # shellcheck disable=SC2086 # CHECK_STATIC_GROUPS (self-test only): word list of groups
    verdicts "static checks" "$PY" "$HERE/checks/static_checks.py" "$ROOT" ${CHECK_STATIC_GROUPS:-}
  fi
fi

# ---- Kubernetes schema (npm: kubernetes-models, pinned by deploy/package-lock.json) --
if want k8s-schema; then
  if ! have node || ! have npm; then
    fail "k8s schema: node/npm not found (apt-get install nodejs npm)"
  else
    lockhash=$(sha256sum "$DEPLOY/package-lock.json" | cut -d' ' -f1)
    stamp=$DEPLOY/node_modules/.thumbgate-lock-sha256
    ready=no
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$lockhash" ]; then
      ready=yes
    elif (cd "$DEPLOY" && timeout 300 npm ci --no-audit --no-fund --prefer-offline --loglevel=error \
          --fetch-retries=1 --fetch-retry-mintimeout=2000 --fetch-retry-maxtimeout=10000) \
        >"$TMP/npm.log" 2>&1; then
      echo "$lockhash" >"$stamp"
      ready=yes
    elif ! (cd "$DEPLOY" && timeout 30 npm ping) >>"$TMP/npm.log" 2>&1; then
      skip "k8s schema: npm registry unreachable, cannot npm ci kubernetes-models (see deploy/README.md)"
    else
      fail "k8s schema: npm ci failed: $(grep -v 'npm warn' "$TMP/npm.log" | tail -n 3 | tr '\n' ' ')"
    fi
    if [ $ready = yes ]; then
      verdicts "k8s schema" bash -c 'cd "$1" && node checks/k8s_schema.js "$2"' _ "$DEPLOY" "$DEPLOY/k8s"
      # deploy/k8s-s3 is a kustomize overlay: rendered (kubectl's built-in kustomize,
      # offline), one file per object, then the same checks
      if ! have kubectl || [ -z "$PY" ]; then
        skip "k8s-s3: kubectl (kustomize) or python3-yaml not found"
      elif ! kubectl kustomize "$DEPLOY/k8s-s3" >"$TMP/k8s-s3.yaml" 2>"$TMP/k8s-s3.err"; then
        fail "k8s-s3: kubectl kustomize deploy/k8s-s3: $(tail -n 2 "$TMP/k8s-s3.err" | tr '\n' ' ')"
      else
        mkdir -p "$TMP/k8s-s3"
        "$PY" - "$TMP/k8s-s3.yaml" "$TMP/k8s-s3" <<'EOF'
import os, sys, yaml
for i, o in enumerate(d for d in yaml.safe_load_all(open(sys.argv[1])) if d):
    open(os.path.join(sys.argv[2], f"{i}-{o['kind'].lower()}.yaml"), "w").write(yaml.safe_dump(o))
    if o["kind"] == "ConfigMap":
        open(os.path.join(os.path.dirname(sys.argv[2]), "k8s-s3-cm.yaml"), "w").write(o["data"]["thumbgate.yaml"])
EOF
        if grep -q 'kind: PersistentVolumeClaim' "$TMP/k8s-s3.yaml"; then
          fail "k8s-s3: the rendered overlay still has a PersistentVolumeClaim"
        else
          pass "k8s-s3: kustomize renders deploy/k8s-s3 without the shared volume"
        fi
        verdicts "k8s-s3 schema" bash -c 'cd "$1" && node checks/k8s_schema.js "$2"' _ "$DEPLOY" "$TMP/k8s-s3"
      fi
    fi
  fi
fi

# ---- the real binary, when built ------------------------------------------------------
# `thumbgate --check-config FILE` on each shipped config, with the environment each
# deployment sets (paths moved into the temp dir). Skipped until the binary is built
# and implements --version (the skeleton's placeholder does not).
if want binary; then
  BIN=${THUMBGATE_BIN:-$ROOT/thumbgate}
  if [ ! -x "$BIN" ]; then
    skip "binary: --check-config on deploy configs: $BIN not built (make)"
  elif ! "$BIN" --version >/dev/null 2>&1; then
    skip "binary: --check-config on deploy configs: $BIN --version fails (placeholder build?)"
  elif [ -z "$PY" ]; then
    fail "binary: python3-yaml needed to extract the ConfigMap"
  else
    mkdir -p "$TMP/storage"
    # env -i: only the deployment's variables reach the binary, none of the caller's
    # (THUMBGATE_BIN from `make test` is no config key).
    common=(-i PATH="$PATH" HOME="$TMP" THUMBGATE_STORAGE_ROOT="$TMP/storage" THUMBGATE_FLIGHT_PATH="$TMP/flight.ring")
    # systemd: the unit's Environment= lines, storage moved.
    mapfile -t uenv < <(sed -n 's/^Environment=//p' "$DEPLOY/systemd/thumbgate.service" | tr ' ' '\n' | grep '^THUMBGATE_')
    if out=$(env "${common[@]}" "${uenv[@]}" THUMBGATE_STORAGE_ROOT="$TMP/storage" "$BIN" --check-config "$DEPLOY/systemd/thumbgate.yaml" 2>&1); then
      pass "binary: thumbgate --check-config deploy/systemd/thumbgate.yaml (unit's environment)"
    else
      fail "binary: --check-config deploy/systemd/thumbgate.yaml: $(printf '%s' "$out" | tail -n 3 | tr '\n' ' ')"
    fi
    # k8s: the ConfigMap's file with the Deployment's literal env.
    "$PY" - "$DEPLOY/k8s" "$TMP" <<'EOF'
import glob, os, sys, yaml
d, tmp = sys.argv[1], sys.argv[2]
for p in glob.glob(os.path.join(d, "*.yaml")):
    for o in yaml.safe_load_all(open(p)):
        if o and o.get("kind") == "ConfigMap":
            open(os.path.join(tmp, "cm.yaml"), "w").write(o["data"]["thumbgate.yaml"])
        if o and o.get("kind") == "Deployment":
            with open(os.path.join(tmp, "k8s.env"), "w") as f:
                for e in o["spec"]["template"]["spec"]["containers"][0].get("env", []):
                    if e["name"].startswith("THUMBGATE_") and "value" in e:
                        f.write(f"{e['name']}={e['value']}\n")
EOF
    mapfile -t kenv < <(cat "$TMP/k8s.env" 2>/dev/null)
    if out=$(env "${common[@]}" "${kenv[@]}" THUMBGATE_FLIGHT_PATH="$TMP/flight.ring" THUMBGATE_WORKERS=2 "$BIN" --check-config "$TMP/cm.yaml" 2>&1); then
      pass "binary: thumbgate --check-config on the k8s ConfigMap (Deployment's environment)"
    else
      fail "binary: --check-config k8s ConfigMap: $(printf '%s' "$out" | tail -n 3 | tr '\n' ' ')"
    fi
    # k8s-s3: the overlay's ConfigMap (rendered by the k8s-schema group), storage on s3.
    if [ -f "$TMP/k8s-s3-cm.yaml" ]; then
      if out=$(env "${common[@]}" THUMBGATE_WORKERS=2 "$BIN" --check-config "$TMP/k8s-s3-cm.yaml" 2>&1); then
        pass "binary: thumbgate --check-config on the k8s-s3 ConfigMap (storage.backend s3)"
      else
        fail "binary: --check-config k8s-s3 ConfigMap: $(printf '%s' "$out" | tail -n 3 | tr '\n' ' ')"
      fi
    fi
    # Docker: the embedded default config with the image's ENV.
    mapfile -t denv < <("$PY" -c 'import sys; sys.path.insert(0, sys.argv[1]); import static_checks as s
for k, v in s.dockerfile_env(s.parse_dockerfile(sys.argv[2])[-1]["instrs"]).items(): print(f"{k}={v}")' \
      "$HERE/checks" "$DEPLOY/Dockerfile" "$ROOT" | grep '^THUMBGATE_')
    if out=$(env "${common[@]}" "${denv[@]}" THUMBGATE_STORAGE_ROOT="$TMP/storage" "$BIN" --check-config 2>&1); then
      pass "binary: thumbgate --check-config (embedded default + the image's ENV)"
    else
      fail "binary: --check-config with the image's ENV: $(printf '%s' "$out" | tail -n 3 | tr '\n' ' ')"
    fi
  fi
fi

# ---- self-test: the checks above catch broken files ---------------------------------
if want selftest; then
  verdicts "self-test" bash "$HERE/checks/selftest.sh" "$ROOT"
fi

npass=$(grep -c '^PASS ' "$RES")
nfail=$(grep -c '^FAIL ' "$RES")
nskip=$(grep -c '^SKIP ' "$RES")
if [ "$nskip" -gt 0 ]; then
  echo "$npass passed, $nfail failed, $nskip skipped"
else
  echo "$npass passed, $nfail failed"
fi
[ "$nfail" -eq 0 ]
