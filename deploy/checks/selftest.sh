#!/usr/bin/env bash
# Self-test of deploy/check.sh: each case copies the tree to a temp dir, breaks one
# thing the way a careless edit would, runs check.sh (only the group concerned) on the
# copy and expects a FAIL line naming that check. Guards against checks that pass
# whatever the files say. Prints one PASS/FAIL line (or SKIP for cases whose check is
# skipped on this machine), for deploy/check.sh to count.
#
# Usage: selftest.sh REPO_ROOT
set -u
ROOT=$(cd "$1" && pwd)
CHECK=$ROOT/deploy/check.sh
T=$(mktemp -d "${TMPDIR:-/tmp}/thumbgate-deploy-selftest.XXXXXX")
trap 'rm -rf "$T"' EXIT
export CHECK_APT_CACHE=$T/apt-answers.json

# The part of the tree the checks read: Makefile, config/, sources (for the
# dockerignore check), deploy/ without node_modules (linked, not copied).
mkdir -p "$T/orig"
cp "$ROOT/Makefile" "$T/orig/"
for d in config server imgproc; do [ -d "$ROOT/$d" ] && cp -r "$ROOT/$d" "$T/orig/"; done
mkdir -p "$T/orig/deploy"
(cd "$ROOT/deploy" && tar cf - --exclude=./node_modules .) | (cd "$T/orig/deploy" && tar xf -)
[ -d "$ROOT/deploy/node_modules" ] && ln -s "$ROOT/deploy/node_modules" "$T/orig/deploy/node_modules"

ok=0 bad=() skipped=0
# case GROUP[:PYGROUP] FILE(under deploy/) EXPECTED-FAIL-REGEX PROGRAM(sed -E script, or py:CODE)
case_() {
  local group=$1 file=$2 expect=$3 edit=$4 pyg=""
  case $group in static:*) pyg=${group#static:}; group=static ;; esac
  rm -rf "$T/w"; cp -a "$T/orig" "$T/w"
  local f=$T/w/deploy/$file before
  before=$(cat "$f")
  case $edit in
    py:*) python3 - "$f" "${edit#py:}" <<'PY'
import sys
p, code = sys.argv[1], sys.argv[2]
s = open(p).read()
exec(code)
open(p, "w").write(s)
PY
    ;;
    *) sed -E -i "$edit" "$f" ;;
  esac
  if [ "$(cat "$f")" = "$before" ]; then
    bad+=("[$file: edit '$edit' changed nothing]"); return
  fi
  local out
  out=$(CHECK_STATIC_GROUPS="$pyg" bash "$CHECK" --root "$T/w" --only "$group" 2>&1)
  if printf '%s\n' "$out" | grep -qE "^FAIL .*$expect"; then
    ok=$((ok + 1))
  elif printf '%s\n' "$out" | grep -qE '^SKIP ' && ! printf '%s\n' "$out" | grep -qE '^(PASS|FAIL) '; then
    skipped=$((skipped + 1))
  else
    bad+=("[$file: '$edit' not caught, expected FAIL ~ /$expect/]")
  fi
}

S=systemd/thumbgate.service
case_ systemd $S 'systemd-analyze verify'          's/^\[Service\]$/[Service]\nRestartt=always/'
case_ systemd $S 'systemd-analyze verify'          's/^KillMode=mixed$/KillMode=sometimes/'
case_ systemd $S 'systemd-analyze security'        '/^# ---- Sandbox/,/^MemoryDenyWriteExecute/d'
case_ static:systemd $S 'memory'                   's/^MemoryHigh=.*/MemoryHigh=4096M/'
case_ static:systemd $S 'memory'                   's/^MemoryHigh=.*/MemoryHigh=1300M/'
case_ static:systemd $S 'TimeoutStopSec'           's/^TimeoutStopSec=.*/TimeoutStopSec=15s/'
case_ static:systemd $S 'LimitNOFILE'              's/^LimitNOFILE=.*/LimitNOFILE=1024/'
case_ static:systemd $S 'sandbox'                  '/^NoNewPrivileges=/d'
case_ static:systemd $S 'sandbox'                  's/^\[Service\]$/[Service]\nExecReload=\/bin\/kill -HUP $MAINPID/'
case_ static:systemd $S 'storage.root'             's#THUMBGATE_STORAGE_ROOT=/var/lib/thumbgate#THUMBGATE_STORAGE_ROOT=/srv/images#'
case_ static:config  $S 'THUMBGATE_'               's/THUMBGATE_MEMORY_AUTO_PERCENT=/THUMBGATE_MEMORY_AUTOPERCENT=/'
case_ static:config  systemd/thumbgate.yaml 'systemd/thumbgate.yaml' 's/^  shutdown_timeout:/  shutdown_timeoutt:/'
case_ static:docker  Dockerfile 'not in Debian 12' 's/libh2o-evloop0\.13/libh2o-evloop0.2/'
case_ static:docker  Dockerfile 'none -dev'        's/^      libvips42 \\$/      libvips-dev \\/'
case_ static:docker  Dockerfile 'link line'        '/^      libyaml-0-2 \\$/d'
case_ static:docker  Dockerfile 'build stage installs' '/^      libyaml-dev \\$/d'
case_ static:docker  Dockerfile 'non-root USER'    's/^USER .*/USER root/'
case_ static:docker  Dockerfile 'ENTRYPOINT'       's#^ENTRYPOINT .*#ENTRYPOINT ["/usr/bin/thumbgate"]#'
case_ static:docker  Dockerfile 'ENTRYPOINT'       '/^CMD \[\]$/d'
case_ static:docker  Dockerfile 'EXPOSE'           's/^EXPOSE 8080 8081$/EXPOSE 8080/'
case_ static:docker  Dockerfile.dockerignore 'dockerignore' 's/^build$/config/'
case_ nginx nginx/thumbgate-lb.conf 'nginx -t'     's/proxy_next_upstream_tries 3;/proxy_next_upstream_trys 3;/'
case_ nginx nginx/thumbgate-lb.conf 'nginx -t'     's/^(    keepalive 32;)$/\1 }/'
case_ static:nginx nginx/thumbgate-lb.conf 'retries' 's/proxy_next_upstream error timeout http_503;/proxy_next_upstream error timeout;/'
case_ static:nginx nginx/thumbgate-lb.conf 'body limit' 's/client_max_body_size 256m;/client_max_body_size 1m;/'
case_ static:nginx nginx/thumbgate-lb.conf 'keep-alive' 's/^    keepalive_timeout 25s;/    keepalive_timeout 60s;/'
case_ static:k8s k8s/deployment.yaml 'requests == limits' 'py:s = s.replace("memory: 2Gi", "memory: 1Gi", 1)'
case_ static:k8s k8s/deployment.yaml 'terminationGracePeriodSeconds' 's/terminationGracePeriodSeconds: 40/terminationGracePeriodSeconds: 20/'
case_ static:k8s k8s/deployment.yaml 'probes' 's#path: /readyz#path: /healthz#'
case_ static:k8s k8s/deployment.yaml 'securityContext' 's/readOnlyRootFilesystem: true/readOnlyRootFilesystem: false/'
case_ static:k8s k8s/deployment.yaml 'volumes' 's#value: /flight/flight.ring#value: /data/flight.ring#'
case_ static:k8s k8s/configmap.yaml 'probes' 's/admin_listen: "0.0.0.0:8081"/admin_listen: "127.0.0.1:8081"/'
case_ static:k8s k8s/pvc.yaml 'volumes' 's/ReadWriteMany/ReadWriteOnce/'
case_ static:k8s k8s/service.yaml 'selectors' 's/^    app.kubernetes.io\/component: server/    app.kubernetes.io\/component: web/'
case_ static:k8s k8s/kustomization.yaml 'kustomization' '/^  - pdb.yaml$/d'
case_ k8s-schema k8s/deployment.yaml 'strict' 's/readinessProbe:/readinesProbe:/'
case_ k8s-schema k8s/hpa.yaml 'strict' 's/averageUtilization:/averageUtilisation:/'
case_ k8s-schema k8s/service.yaml 'k8s schema' 's/port: 80$/port: "eighty"/'
case_ k8s-schema k8s/pdb.yaml 'k8s schema' 's#^apiVersion: policy/v1$#apiVersion: policy/v2#'

total=$((ok + ${#bad[@]} + skipped))
if [ ${#bad[@]} -eq 0 ]; then
  echo "PASS self-test: $ok of $total deliberately broken copies of deploy/ caught by the check concerned$([ $skipped -gt 0 ] && echo " ($skipped skipped: check not runnable here)")"
else
  echo "FAIL self-test: ${#bad[@]} of $total broken copies not caught: ${bad[*]}"
fi
