#!/usr/bin/env python3
"""Offline consistency checks of deploy/ against itself and the rest of the tree.

Each check prints one line: `PASS <name>`, `FAIL <name>: <why>` or `SKIP <name>: <why>`;
deploy/check.sh counts them. Exit status is 0 unless the script itself could not run
(a failed check is reported by its line, not by the status).

What is checked, and why it is not a tautology: the numbers that must agree across
files (cgroup limit vs budget, stop timeouts vs drain deadline, descriptor limits vs
connection limit, body limits, ports, labels) are read from each file and compared,
so changing one file without the other fails here. Config keys and THUMBGATE_*
variables are compared with the keys documented in config/cfg.h, the config module's
own header. Package names are looked up in Debian 12 with apt-cache.

Usage: static_checks.py REPO_ROOT [group ...]   groups: config systemd docker k8s nginx
"""
import fnmatch
import glob
import json
import os
import re
import shlex
import subprocess
import sys

try:
    import yaml
except ImportError:  # python3-yaml (Debian) is needed
    print("FAIL static checks: python3 module yaml missing (apt-get install python3-yaml)")
    sys.exit(0)

ROOT = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else ".")
DEPLOY = os.path.join(ROOT, "deploy")


def rel(p):
    return os.path.relpath(p, ROOT)


def report(name, problems, skip=None):
    if skip:
        print(f"SKIP {name}: {skip}")
    elif problems:
        print(f"FAIL {name}: " + "; ".join(problems))
    else:
        print(f"PASS {name}")


def run(argv, **kw):
    return subprocess.run(argv, capture_output=True, text=True, **kw)


# ---------------------------------------------------------------- units and parsers
SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
    "t": 1000**4, "tb": 1000**4,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4,
    "ki": 1024, "mi": 1024**2, "gi": 1024**3, "ti": 1024**4,
}


def size_yaml(s):
    """thumbgate sizes: 512MiB, 2GB, 10k, 1024."""
    m = re.fullmatch(r"\s*(\d+)\s*([A-Za-z]*)\s*", str(s))
    if not m or m.group(2).lower() not in SIZE_UNITS:
        raise ValueError(f"bad size {s!r}")
    return int(m.group(1)) * SIZE_UNITS[m.group(2).lower()]


def size_systemd(s):
    """systemd memory sizes: K/M/G/T are powers of 1024."""
    m = re.fullmatch(r"(\d+)([KMGT]?)", s.strip())
    if not m:
        raise ValueError(f"bad systemd size {s!r}")
    return int(m.group(1)) * {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}[m.group(2)]


def size_k8s(s):
    """Kubernetes quantities: Ki/Mi/Gi binary, k/M/G decimal."""
    m = re.fullmatch(r"(\d+)(Ki|Mi|Gi|Ti|k|M|G|T)?", str(s).strip())
    if not m:
        raise ValueError(f"bad quantity {s!r}")
    return int(m.group(1)) * {None: 1, "Ki": 1024, "Mi": 1024**2, "Gi": 1024**3, "Ti": 1024**4,
                              "k": 1000, "M": 1000**2, "G": 1000**3, "T": 1000**4}[m.group(2)]


def size_nginx(s):
    m = re.fullmatch(r"(\d+)([kKmMgG]?)", s.strip())
    if not m:
        raise ValueError(f"bad nginx size {s!r}")
    return int(m.group(1)) * {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[m.group(2).lower()]


def dur_ms(s, bare="ms"):
    """500ms, 30s, 2m, 1h; a bare number is in `bare` units (thumbgate: ms; systemd, nginx: s)."""
    s = str(s).strip()
    total, pos = 0.0, 0
    for m in re.finditer(r"(\d+(?:\.\d+)?)\s*(ms|s|sec|min|m|h)?", s):
        if m.start() != pos:
            raise ValueError(f"bad duration {s!r}")
        pos = m.end()
        unit = m.group(2) or bare
        total += float(m.group(1)) * {"ms": 1, "s": 1000, "sec": 1000, "m": 60000, "min": 60000,
                                      "h": 3600000}[unit]
    if pos != len(s) or not s:
        raise ValueError(f"bad duration {s!r}")
    return total


def flatten(d, prefix=""):
    out = {}
    for k, v in (d or {}).items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def cfg_keys():
    """Config keys documented in config/cfg.h: field comments `/**< `key`...`."""
    text = open(os.path.join(ROOT, "config", "cfg.h")).read()
    return set(re.findall(r"/\*\*<\s*`([a-z0-9_.]+)`", text))


def env_name(key):
    return "THUMBGATE_" + key.upper().replace(".", "_")


def parse_unit(path):
    """systemd unit -> {section: [(key, value), ...]} (repeated keys kept in order)."""
    sections, cur = {}, None
    lines = open(path).read().splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        i += 1
        if not line or line[0] in "#;":
            continue
        while line.endswith("\\") and i < len(lines):
            line = line[:-1] + " " + lines[i].strip()
            i += 1
        if line.startswith("["):
            cur = line.strip("[]")
            sections.setdefault(cur, [])
            continue
        k, _, v = line.partition("=")
        sections.setdefault(cur, []).append((k.strip(), v.strip()))
    return sections


def unit_get(sec, key, default=None):
    vals = [v for k, v in sec if k == key]
    return vals[-1] if vals else default


def unit_all(sec, key):
    return [v for k, v in sec if k == key]


def unit_env(sec):
    env = {}
    for v in unit_all(sec, "Environment"):
        for item in shlex.split(v):
            k, _, val = item.partition("=")
            env[k] = val
    return env


def load_yaml_docs(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def k8s_objects():
    objs = []
    for p in sorted(glob.glob(os.path.join(DEPLOY, "k8s", "*.yaml"))):
        if os.path.basename(p) == "kustomization.yaml":
            continue
        for d in load_yaml_docs(p):
            objs.append((p, d))
    return objs


def k8s_find(objs, kind):
    return [d for _, d in objs if d.get("kind") == kind]


def configmap_yaml(objs):
    cm = k8s_find(objs, "ConfigMap")[0]
    return yaml.safe_load(cm["data"]["thumbgate.yaml"])


def host_port(addr):
    host, _, port = str(addr).rpartition(":")
    return host.strip("[]"), int(port)


# ---------------------------------------------------------------- config group
def check_config():
    keys = cfg_keys()
    envs = {env_name(k): k for k in keys}
    if not keys:
        report("config: keys documented in config/cfg.h", ["no `key` comments found"])
        return
    for name, path_or_obj in (
        ("config: deploy/systemd/thumbgate.yaml uses only keys of config/cfg.h",
         os.path.join(DEPLOY, "systemd", "thumbgate.yaml")),
        ("config: k8s ConfigMap thumbgate.yaml uses only keys of config/cfg.h", None),
    ):
        try:
            data = yaml.safe_load(open(path_or_obj)) if path_or_obj else configmap_yaml(k8s_objects())
            unknown = sorted(set(flatten(data)) - keys)
            report(name, [f"unknown key {k}" for k in unknown])
        except Exception as e:  # noqa: BLE001 — any parse error is the failure
            report(name, [f"{type(e).__name__}: {e}"])

    # Every THUMBGATE_* variable set anywhere in deploy/ must be a real override.
    problems, seen = [], 0
    sources = {}
    unit = parse_unit(os.path.join(DEPLOY, "systemd", "thumbgate.service"))
    for k in unit_env(unit.get("Service", [])):
        sources.setdefault(k, []).append("thumbgate.service")
    for k in dockerfile_env(parse_dockerfile()[-1]["instrs"]):
        sources.setdefault(k, []).append("Dockerfile")
    for d in k8s_find(k8s_objects(), "Deployment"):
        for c in d["spec"]["template"]["spec"]["containers"]:
            for e in c.get("env", []):
                sources.setdefault(e["name"], []).append("deployment.yaml")
    for var, where in sorted(sources.items()):
        if not var.startswith("THUMBGATE_"):
            continue
        seen += 1
        if var not in envs:
            problems.append(f"{var} ({', '.join(where)}) is no config key")
    if not seen:
        problems.append("no THUMBGATE_* variable found at all (parser broken?)")
    report(f"config: {seen} THUMBGATE_* overrides in unit, Dockerfile, Deployment name cfg.h keys",
           problems)


# ---------------------------------------------------------------- systemd group
def check_systemd():
    unit = parse_unit(os.path.join(DEPLOY, "systemd", "thumbgate.service"))
    svc = unit.get("Service", [])
    conf = flatten(yaml.safe_load(open(os.path.join(DEPLOY, "systemd", "thumbgate.yaml"))))
    env = unit_env(svc)

    def eff(key, default=None):  # effective value: env override wins over the file
        return env.get(env_name(key), conf.get(key, default))

    # Memory arithmetic.
    p = []
    try:
        mmax = size_systemd(unit_get(svc, "MemoryMax", ""))
        mhigh = size_systemd(unit_get(svc, "MemoryHigh", ""))
        budget_s = str(eff("memory.budget", "auto"))
        pct = int(eff("memory.auto_percent", 60))
        budget = mmax * pct // 100 if budget_s == "auto" else size_yaml(budget_s)
        if not mhigh < mmax:
            p.append(f"MemoryHigh {mhigh} not below MemoryMax {mmax}")
        if not budget < mhigh:
            p.append(f"budget {budget} not below MemoryHigh {mhigh}")
        if mhigh - budget < 256 * 1024**2:
            p.append(f"MemoryHigh - budget = {(mhigh - budget) >> 20} MiB leaves < 256 MiB for "
                     "baseline RSS and slack before throttling")
        if unit_get(svc, "MemorySwapMax") != "0":
            p.append("MemorySwapMax=0 missing (swap would hide the limit)")
        name = (f"systemd: memory: budget {budget >> 20} MiB ({budget_s}, {pct}%) < MemoryHigh "
                f"{mhigh >> 20} MiB < MemoryMax {mmax >> 20} MiB")
    except Exception as e:  # noqa: BLE001
        p.append(f"{type(e).__name__}: {e}")
        name = "systemd: memory arithmetic"
    report(name, p)

    p = []
    stop = dur_ms(unit_get(svc, "TimeoutStopSec", "90s"), bare="s")
    drain = dur_ms(eff("http.shutdown_timeout", "0"))
    if not stop > drain:
        p.append(f"TimeoutStopSec {stop/1000:g}s <= http.shutdown_timeout {drain/1000:g}s")
    report(f"systemd: TimeoutStopSec {stop/1000:g}s > http.shutdown_timeout {drain/1000:g}s", p)

    p = []
    nofile = int(unit_get(svc, "LimitNOFILE", "0").split(":")[-1])
    conns = int(eff("limits.max_connections", 0))
    if not conns:
        p.append("limits.max_connections not set in thumbgate.yaml")
    elif nofile < 2 * conns + 64:
        p.append(f"LimitNOFILE {nofile} < 2 x max_connections {conns} + 64")
    report(f"systemd: LimitNOFILE {nofile} covers limits.max_connections {conns}", p)

    p = []
    root = str(eff("storage.root", ""))
    state = unit_get(svc, "StateDirectory")
    rw = " ".join(unit_all(svc, "ReadWritePaths")).split()
    if not (state and root == f"/var/lib/{state}") and root not in rw:
        p.append(f"storage.root {root!r} is neither /var/lib/<StateDirectory> nor in ReadWritePaths")
    exe = unit_get(svc, "ExecStart", "")
    argv = shlex.split(exe.lstrip("-@:+!"))
    if "-c" in argv:
        cfg = argv[argv.index("-c") + 1]
        cdir = unit_get(svc, "ConfigurationDirectory")
        if not cfg.startswith("/etc/") or (cdir and not cfg.startswith(f"/etc/{cdir}/")):
            p.append(f"-c {cfg} not under ConfigurationDirectory /etc/{cdir}")
    report(f"systemd: storage.root {root} writable under ProtectSystem=strict; config path", p)

    p = []
    want = {
        "NoNewPrivileges": "yes", "ProtectSystem": "strict", "PrivateTmp": "yes",
        "ProtectHome": "yes", "CapabilityBoundingSet": "", "Restart": "on-failure",
        "ProtectControlGroups": "yes", "PrivateDevices": "yes",
    }
    for k, v in want.items():
        got = unit_get(svc, k)
        if got != v:
            p.append(f"{k}={got!r}, want {v!r}")
    if unit_get(svc, "DynamicUser") != "yes" and not unit_get(svc, "User"):
        p.append("neither DynamicUser=yes nor User=")
    fams = set(" ".join(unit_all(svc, "RestrictAddressFamilies")).split())
    if not fams or not fams <= {"AF_INET", "AF_INET6", "AF_UNIX"}:
        p.append(f"RestrictAddressFamilies={sorted(fams)}")
    if "@system-service" not in " ".join(unit_all(svc, "SystemCallFilter")):
        p.append("SystemCallFilter=@system-service missing")
    if unit_get(svc, "ExecReload"):
        p.append("ExecReload= set, but thumbgate has no SIGHUP reload")
    if unit_get(svc, "ProcSubset") == "pid":
        p.append("ProcSubset=pid hides /proc/meminfo that memory.budget auto falls back to")
    report("systemd: sandbox (DynamicUser, ProtectSystem=strict, NoNewPrivileges, ...), no ExecReload", p)


# ---------------------------------------------------------------- docker group
def parse_dockerfile(path=None):
    """-> list of stages {from, alias, instrs: [(INSTR, args)]}; continuations joined."""
    path = path or os.path.join(DEPLOY, "Dockerfile")
    logical, buf = [], ""
    for raw in open(path).read().splitlines():
        s = raw.strip()
        if s.startswith("#") and not buf.strip().endswith("\\") and not buf:
            continue
        if s.startswith("#"):  # comment inside a continuation: dropped by Docker too
            continue
        if not s and not buf:
            continue
        if s.endswith("\\"):
            buf += s[:-1] + " "
            continue
        buf += s
        if buf.strip():
            logical.append(buf.strip())
        buf = ""
    stages = []
    for line in logical:
        instr, _, args = line.partition(" ")
        instr = instr.upper()
        if instr == "FROM":
            parts = args.split()
            alias = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            stages.append({"from": parts[0], "alias": alias, "instrs": []})
        elif stages:
            stages[-1]["instrs"].append((instr, args.strip()))
    return stages


def dockerfile_env(instrs):
    env = {}
    for instr, args in instrs:
        if instr == "ENV":
            for item in shlex.split(args):
                k, _, v = item.partition("=")
                env[k] = v
    return env


def apt_installs(instrs):
    pkgs = []
    for instr, args in instrs:
        if instr != "RUN":
            continue
        for cmd in re.split(r"&&|;", args):
            words = cmd.split()
            if "apt-get" in words and "install" in words:
                pkgs += [w for w in words[words.index("install") + 1:] if not w.startswith("-")]
    return pkgs


_madison_cache = {}
_closure_cache = {}
_owner_cache = {}
# The self-test runs these checks dozens of times on copies of the tree; apt-cache and
# dpkg answers do not change in between, so it lets them be kept in a file.
_CACHE_FILE = os.environ.get("CHECK_APT_CACHE")
if _CACHE_FILE and os.path.exists(_CACHE_FILE):
    try:
        _c = json.load(open(_CACHE_FILE))
        _madison_cache.update(_c.get("madison", {}))
        _closure_cache.update(_c.get("closure", {}))
        _owner_cache.update(_c.get("owner", {}))
    except ValueError:
        pass


def save_cache():
    if _CACHE_FILE:
        json.dump({"madison": _madison_cache, "closure": _closure_cache, "owner": _owner_cache},
                  open(_CACHE_FILE, "w"))


def madison(pkgs):
    """Looks the packages up in one apt-cache call (each call costs ~1 s): a package is in
    Debian 12 when a bookworm archive (main, -updates, -security) has a binary of it."""
    todo = [p for p in pkgs if p not in _madison_cache]
    if todo:
        r = run(["apt-cache", "madison"] + todo)
        for p in todo:
            _madison_cache[p] = False
        for l in r.stdout.splitlines():
            cols = [c.strip() for c in l.split("|")]
            if len(cols) == 3 and cols[0] in _madison_cache and " bookworm" in cols[2] \
                    and cols[2].endswith("Packages"):
                _madison_cache[cols[0]] = True


def in_debian12(pkg):
    madison([pkg])
    return _madison_cache[pkg]


def apt_closure(pkgs):
    key = " ".join(sorted(pkgs))
    if key not in _closure_cache:
        _closure_cache[key] = sorted(_apt_closure(pkgs))
    return set(_closure_cache[key])


def _apt_closure(pkgs):
    r = run(["apt-cache", "depends", "--recurse", "--no-recommends", "--no-suggests",
             "--no-conflicts", "--no-breaks", "--no-replaces", "--no-enhances"] + pkgs)
    return {l.strip().split(":")[0] for l in r.stdout.splitlines() if l and not l.startswith(" ")
            and not l.startswith("<")}


def owner_pkg(path):
    if path not in _owner_cache:
        _owner_cache[path] = _owner_pkg(path)
    return _owner_cache[path]


def _owner_pkg(path):
    """Debian package owning @path; tries the /lib <-> /usr/lib spellings (merged /usr:
    dpkg knows e.g. zlib1g's library as /lib/..., the linker finds /usr/lib/...)."""
    cands = []
    for p in (os.path.realpath(path), path):
        cands.append(p)
        if p.startswith("/usr/lib/"):
            cands.append(p[4:])
        elif p.startswith("/lib/"):
            cands.append("/usr" + p)
    for p in cands:
        r = run(["dpkg", "-S", p])
        if r.returncode == 0:
            return r.stdout.split(":")[0].split(",")[0].strip()
    return None


def makefile_var(name):
    text = open(os.path.join(ROOT, "Makefile")).read()
    m = re.search(rf"^{name}\s*[:+?]?=\s*(.*(?:\\\n.*)*)", text, re.M)
    return m.group(1).replace("\\\n", " ") if m else ""


def link_libs():
    """-l names on the Makefile's link line: pkg-config --libs $(PKGS) plus LDLIBS' -l flags."""
    pkgs = makefile_var("PKGS").split()
    r = run(["pkg-config", "--libs"] + pkgs)
    if r.returncode != 0:
        raise RuntimeError(f"pkg-config --libs {' '.join(pkgs)}: {r.stderr.strip()}")
    flags = r.stdout.split()
    text = open(os.path.join(ROOT, "Makefile")).read()
    for m in re.finditer(r"^LDLIBS\s*\+?=\s*(.*)$", text, re.M):
        flags += [w for w in m.group(1).split() if w.startswith("-l")]
    return pkgs, sorted({f[2:] for f in flags if f.startswith("-l")})


def lib_runtime_pkg(name):
    """-lNAME -> the package that owns the shared object the linker resolves it to."""
    r = run(["cc", f"-print-file-name=lib{name}.so"])
    p = r.stdout.strip()
    if not os.path.isabs(p) or not os.path.exists(p):
        return None, f"lib{name}.so not found by cc"
    real = os.path.realpath(p)
    if real.endswith(".so") and os.path.getsize(real) < 1024:  # linker script (libm.so, libc.so)
        return "libc6", None
    return owner_pkg(real), None


def check_docker():
    stages = parse_dockerfile()
    p = []
    if len(stages) < 2:
        p.append(f"{len(stages)} stage(s), want a build and a runtime stage")
        report("docker: multi-stage (debian:12 build, debian:12-slim runtime)", p)
        return
    build, runtime = stages[0], stages[-1]
    if build["from"] not in ("debian:12", "debian:bookworm"):
        p.append(f"build stage FROM {build['from']}")
    if runtime["from"] not in ("debian:12-slim", "debian:bookworm-slim"):
        p.append(f"runtime stage FROM {runtime['from']}")
    if not build["alias"]:
        p.append("build stage has no AS name")
    report("docker: multi-stage (debian:12 build, debian:12-slim runtime)", p)

    bpk, rpk = apt_installs(build["instrs"]), apt_installs(runtime["instrs"])
    madison(["libc6"] + bpk + rpk)
    if not _madison_cache["libc6"]:
        for n in ("docker: build-stage packages exist in Debian 12",
                  "docker: runtime packages exist in Debian 12, no -dev among them"):
            report(n, ["apt-cache knows no bookworm packages: run apt-get update"])
        return
    report(f"docker: {len(bpk)} build-stage packages exist in Debian 12",
           [f"{x} not in Debian 12" for x in bpk if not in_debian12(x)] or
           ([] if bpk else ["no apt-get install in build stage"]))
    p = [f"{x} not in Debian 12" for x in rpk if not in_debian12(x)]
    p += [f"{x} is a -dev package" for x in rpk if x.endswith("-dev")]
    p += ["runtime apt-get install lacks --no-install-recommends"] if not any(
        i == "RUN" and "--no-install-recommends" in a for i, a in runtime["instrs"]) else []
    report(f"docker: {len(rpk)} runtime packages exist in Debian 12 ({' '.join(rpk)}), none -dev", p)

    # The -dev package of every pkg-config module the Makefile builds with.
    p = []
    try:
        mods, libs = link_libs()
        for mod in mods:
            r = run(["pkg-config", "--path", mod])
            owner = owner_pkg(r.stdout.strip()) if r.returncode == 0 else None
            if not owner:
                p.append(f"pkg-config module {mod}: .pc file not found/owned (make deps?)")
            elif owner not in bpk:
                p.append(f"{mod} comes from {owner}, not installed in the build stage")
        report(f"docker: build stage installs the -dev package of Makefile PKGS ({' '.join(mods)})", p)

        p, closure = [], apt_closure(rpk) | {"libc6"}
        for lib in libs:
            pkg, err = lib_runtime_pkg(lib)
            if err or not pkg:
                p.append(err or f"-l{lib}: owner package unknown")
            elif pkg not in closure:
                p.append(f"-l{lib} is in {pkg}, which the runtime packages do not pull in")
        report(f"docker: runtime packages provide every library of the link line "
               f"({' '.join('-l' + l for l in libs)})", p)
    except Exception as e:  # noqa: BLE001
        report("docker: link-line libraries vs runtime packages", [f"{type(e).__name__}: {e}"])
        closure = apt_closure(rpk) | {"libc6"}

    # The built binary, when there is one: its NEEDED entries.
    binp = os.environ.get("THUMBGATE_BIN") or os.path.join(ROOT, "thumbgate")
    if not os.path.exists(binp):
        report("docker: NEEDED libraries of the built binary come from runtime packages", [],
               skip=f"{rel(binp)} not built (run make)")
    else:
        p = []
        r = run(["objdump", "-p", binp])
        needed = re.findall(r"NEEDED\s+(\S+)", r.stdout)
        ldd = run(["ldd", binp]).stdout
        for so in needed:
            m = re.search(rf"^\s*{re.escape(so)} => (\S+)", ldd, re.M)
            pkg = owner_pkg(m.group(1)) if m else None
            if not pkg:
                p.append(f"{so}: not resolved/owned on this machine")
            elif pkg not in closure:
                p.append(f"{so} is in {pkg}, not pulled in by the runtime packages")
        report(f"docker: {len(needed)} NEEDED libraries of {rel(binp)} come from runtime packages", p)

    # USER, ENTRYPOINT, COPY, WORKDIR.
    p = []
    instrs = runtime["instrs"]
    users = [(i, a) for i, a in enumerate(instrs) if a and instrs[i][0] == "USER"]
    if not users:
        p.append("no USER in runtime stage")
    else:
        idx, (_, u) = users[-1][0], instrs[users[-1][0]]
        if u.split(":")[0] in ("root", "0"):
            p.append(f"USER {u} is root")
        if any(i == "RUN" for i, _ in instrs[idx + 1:]):
            p.append("RUN after USER (would run as the service user, or was meant as root)")
    report("docker: runtime stage runs as a non-root USER", p)

    p = []
    ep = [a for i, a in instrs if i == "ENTRYPOINT"]
    cmd = [a for i, a in instrs if i == "CMD"]
    copies = [a.split() for i, a in instrs if i == "COPY" and a.startswith(f"--from={build['alias']}")]
    wd = [a for i, a in build["instrs"] if i == "WORKDIR"]
    binname = makefile_var("BIN").strip() or "thumbgate"
    if not ep:
        p.append("no ENTRYPOINT")
    else:
        epv = json.loads(ep[-1])
        dests = [c[-1] for c in copies]
        if epv[0] not in dests:
            p.append(f"ENTRYPOINT {epv[0]} is not a COPY --from={build['alias']} destination {dests}")
        for c in copies:
            if c[-1] == epv[0]:
                src = c[1]
                want = os.path.join(wd[-1] if wd else "/", binname)
                if os.path.normpath(src) != os.path.normpath(want):
                    p.append(f"copies {src}, but make builds {want} (WORKDIR + Makefile BIN)")
        if not any(i == "RUN" and re.search(rf"\bmake\b.*\b{binname}\b", a) for i, a in build["instrs"]):
            p.append(f"build stage does not run `make {binname}`")
    if not cmd:
        p.append("no CMD: debian's CMD [\"bash\"] would be passed to thumbgate as an argument")
    report("docker: ENTRYPOINT is the binary built by make and copied from the build stage", p)

    p = []
    env = dockerfile_env(instrs)
    exposed = {int(x.split("/")[0]) for i, a in instrs if i == "EXPOSE" for x in a.split()}
    for var in ("THUMBGATE_LISTEN", "THUMBGATE_ADMIN_LISTEN"):
        if var not in env:
            p.append(f"ENV {var} missing")
            continue
        host, port = host_port(env[var])
        if host != "0.0.0.0":
            p.append(f"{var}={env[var]} does not listen on all interfaces")
        if port not in exposed:
            p.append(f"{var} port {port} not in EXPOSE {sorted(exposed)}")
    hc = [a for i, a in instrs if i == "HEALTHCHECK"]
    if not hc or "/healthz" not in hc[-1] or "THUMBGATE_ADMIN_LISTEN" not in hc[-1]:
        p.append("HEALTHCHECK does not GET /healthz on the admin port")
    report("docker: EXPOSE matches the listen/admin ENV, HEALTHCHECK on admin /healthz", p)

    # Ignore file: excludes junk, keeps what `make` needs.
    p = []
    ign = os.path.join(DEPLOY, "Dockerfile.dockerignore")
    pats = [l.strip() for l in open(ign).read().splitlines() if l.strip() and not l.startswith("#")]

    def ignored(path):
        res = False
        for pat in pats:
            neg = pat.startswith("!")
            pp = pat[1:] if neg else pat
            pp = pp.strip("/")
            rx = fnmatch.translate(pp).replace(r"(?s:", "(?s:").replace(".*", "[^/]*")
            rx = rx.replace("[^/]*[^/]*", ".*")  # ** -> any depth
            if re.match(rx, path) or any(re.match(rx, "/".join(path.split("/")[:k]))
                                         for k in range(1, path.count("/") + 1)):
                res = not neg
        return res

    needed = ["Makefile"] + [rel(f) for d in ("server", "imgproc", "config")
                             for f in glob.glob(os.path.join(ROOT, d, "*.[ch]"))]
    for f in needed:
        if ignored(f):
            p.append(f"{f} is excluded but the build needs it")
    for junk in (".git/HEAD", "build/release/x.o", "thumbgate", "deploy/node_modules/x"):
        if not ignored(junk):
            p.append(f"{junk} is sent to the daemon")
    report("docker: Dockerfile.dockerignore keeps the sources, drops .git/build/binary", p)


# ---------------------------------------------------------------- k8s group
KNOWN_KINDS = {
    ("v1", "ConfigMap"), ("v1", "Service"), ("v1", "PersistentVolumeClaim"),
    ("apps/v1", "Deployment"), ("policy/v1", "PodDisruptionBudget"),
    ("autoscaling/v2", "HorizontalPodAutoscaler"), ("networking.k8s.io/v1", "Ingress"),
}


def selects(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def check_k8s():
    try:
        objs = k8s_objects()
    except Exception as e:  # noqa: BLE001
        report("k8s: manifests parse", [f"{type(e).__name__}: {e}"])
        return
    p = []
    for path, o in objs:
        av, kind = o.get("apiVersion"), o.get("kind")
        if (av, kind) not in KNOWN_KINDS:
            p.append(f"{rel(path)}: {av} {kind} unexpected (deprecated or wrong group)")
        if not o.get("metadata", {}).get("name"):
            p.append(f"{rel(path)}: {kind} without metadata.name")
    kinds = sorted({o["kind"] for _, o in objs})
    for want in ("ConfigMap", "Deployment", "Service", "PodDisruptionBudget",
                 "HorizontalPodAutoscaler", "PersistentVolumeClaim"):
        if want not in kinds:
            p.append(f"no {want}")
    report(f"k8s: {len(objs)} objects parse, apiVersion/kind current ({', '.join(kinds)})", p)

    p = []
    kz = yaml.safe_load(open(os.path.join(DEPLOY, "k8s", "kustomization.yaml")))
    files = {os.path.basename(f) for f, _ in objs}
    listed = set(kz.get("resources", []))
    p += [f"{f} not in kustomization resources" for f in sorted(files - listed)]
    p += [f"{f} listed but missing" for f in sorted(listed - files)]
    report("k8s: kustomization.yaml lists every manifest", p)

    dep = k8s_find(objs, "Deployment")[0]
    pod = dep["spec"]["template"]
    podspec = pod["spec"]
    labels = pod["metadata"].get("labels", {})
    ctr = podspec["containers"][0]
    conf = flatten(configmap_yaml(objs))
    envs = {e["name"]: e for e in ctr.get("env", [])}

    def eff(key, default=None):
        e = envs.get(env_name(key))
        return e["value"] if e and "value" in e else conf.get(key, default)

    p = []
    if not selects(dep["spec"]["selector"].get("matchLabels"), labels):
        p.append("Deployment selector does not match its pod template labels")
    for svc in k8s_find(objs, "Service"):
        if not selects(svc["spec"].get("selector"), labels):
            p.append(f"Service {svc['metadata']['name']} does not select the pods")
    for pdb in k8s_find(objs, "PodDisruptionBudget"):
        if not selects(pdb["spec"]["selector"].get("matchLabels"), labels):
            p.append("PodDisruptionBudget does not select the pods")
    for hpa in k8s_find(objs, "HorizontalPodAutoscaler"):
        ref = hpa["spec"]["scaleTargetRef"]
        if (ref.get("apiVersion"), ref.get("kind"), ref.get("name")) != (
                "apps/v1", "Deployment", dep["metadata"]["name"]):
            p.append(f"HPA targets {ref}")
    svc_names = {s["metadata"]["name"]: s for s in k8s_find(objs, "Service")}
    for ing in k8s_find(objs, "Ingress"):
        for rule in ing["spec"].get("rules", []):
            for path in rule.get("http", {}).get("paths", []):
                b = path["backend"]["service"]
                s = svc_names.get(b["name"])
                if not s:
                    p.append(f"Ingress backend {b['name']} is no Service")
                elif b["port"].get("name") not in {x.get("name") for x in s["spec"]["ports"]} and \
                        b["port"].get("number") not in {x["port"] for x in s["spec"]["ports"]}:
                    p.append(f"Ingress backend port {b['port']} not on Service {b['name']}")
    report("k8s: labels/selectors agree (Deployment, Service, PDB, HPA, Ingress)", p)

    p = []
    res = ctr.get("resources", {})
    req, lim = res.get("requests", {}), res.get("limits", {})
    for r in ("memory", "cpu"):
        if r not in lim:
            p.append(f"no limits.{r}")
        elif str(req.get(r)) != str(lim.get(r)):
            p.append(f"requests.{r} {req.get(r)} != limits.{r} {lim.get(r)}")
    try:
        mem = size_k8s(lim["memory"])
        pct = int(eff("memory.auto_percent", 60))
        b = str(eff("memory.budget", "auto"))
        budget = mem * pct // 100 if b == "auto" else size_yaml(b)
        if mem - budget < 256 * 1024**2:
            p.append(f"limit - budget = {(mem - budget) >> 20} MiB headroom < 256 MiB")
        name = (f"k8s: requests == limits (memory {lim['memory']}), budget {b} = "
                f"{budget >> 20} MiB leaves {(mem - budget) >> 20} MiB headroom")
    except Exception as e:  # noqa: BLE001
        p.append(f"{type(e).__name__}: {e}")
        name = "k8s: requests == limits, budget vs limit"
    report(name, p)

    p = []
    ports = {x["name"]: x["containerPort"] for x in ctr.get("ports", [])}
    lhost, lport = host_port(eff("listen", ""))
    ahost, aport = host_port(eff("admin_listen", ""))
    if lhost != "0.0.0.0":
        p.append(f"listen {lhost} is not 0.0.0.0")
    if ahost != "0.0.0.0":
        p.append(f"admin_listen {ahost} is not 0.0.0.0: kubelet probes could not reach it")
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        pr = ctr.get(probe, {}).get("httpGet")
        if not pr:
            p.append(f"no {probe}.httpGet")
            continue
        port = ports.get(pr["port"], pr["port"])
        if pr.get("path") != path:
            p.append(f"{probe} path {pr.get('path')} != {path}")
        if port != aport:
            p.append(f"{probe} port {pr['port']} ({port}) != admin_listen port {aport}")
    for svc in k8s_find(objs, "Service"):
        for sp in svc["spec"]["ports"]:
            t = ports.get(sp.get("targetPort"), sp.get("targetPort"))
            if t != lport:
                p.append(f"Service port {sp.get('name')} targets {t}, listen port is {lport}")
    report(f"k8s: probes on admin port {aport} (/readyz, /healthz), Service on listen port {lport}, "
           "both on 0.0.0.0", p)

    p = []
    grace = podspec.get("terminationGracePeriodSeconds", 30)
    pre = ctr.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    pre_s = float(pre[1]) if len(pre) == 2 and pre[0] == "sleep" else 0
    drain = dur_ms(eff("http.shutdown_timeout", "0")) / 1000
    if not grace > pre_s + drain:
        p.append(f"terminationGracePeriodSeconds {grace} <= preStop {pre_s:g}s + drain {drain:g}s")
    if not pre_s:
        p.append("no preStop sleep: endpoints may still route to a stopping pod")
    report(f"k8s: terminationGracePeriodSeconds {grace} > preStop {pre_s:g}s + "
           f"http.shutdown_timeout {drain:g}s", p)

    p = []
    psc, csc = podspec.get("securityContext", {}), ctr.get("securityContext", {})
    if not (psc.get("runAsNonRoot") or csc.get("runAsNonRoot")):
        p.append("runAsNonRoot not set")
    if csc.get("readOnlyRootFilesystem") is not True:
        p.append("readOnlyRootFilesystem not true")
    if csc.get("allowPrivilegeEscalation") is not False:
        p.append("allowPrivilegeEscalation not false")
    if "ALL" not in csc.get("capabilities", {}).get("drop", []):
        p.append("capabilities.drop lacks ALL")
    uid = csc.get("runAsUser", psc.get("runAsUser"))
    duser = [a for i, a in parse_dockerfile()[-1]["instrs"] if i == "USER"]
    if duser and uid is not None and str(uid) != duser[-1].split(":")[0]:
        p.append(f"runAsUser {uid} != Dockerfile USER {duser[-1]}")
    report(f"k8s: securityContext non-root (uid {uid} = Dockerfile USER), read-only root, "
           "no privilege escalation, drop ALL", p)

    p = []
    vols = {v["name"]: v for v in podspec.get("volumes", [])}
    mounts = {m["mountPath"]: m for m in ctr.get("volumeMounts", [])}
    for m in mounts.values():
        if m["name"] not in vols:
            p.append(f"mount {m['mountPath']} uses undefined volume {m['name']}")
    args = ctr.get("args", [])
    if "-c" in args:
        cpath = args[args.index("-c") + 1]
        m = mounts.get(os.path.dirname(cpath))
        cm = vols.get(m["name"], {}).get("configMap") if m else None
        if not cm:
            p.append(f"-c {cpath}: its directory is not a ConfigMap mount")
        else:
            cmo = [o for o in k8s_find(objs, "ConfigMap") if o["metadata"]["name"] == cm["name"]]
            if not cmo or os.path.basename(cpath) not in cmo[0].get("data", {}):
                p.append(f"ConfigMap {cm['name']} has no key {os.path.basename(cpath)}")
    else:
        p.append("container args do not pass -c <config file>")
    root = str(eff("storage.root", ""))
    m = mounts.get(root)
    pvcname = vols.get(m["name"], {}).get("persistentVolumeClaim", {}).get("claimName") if m else None
    pvcs = {o["metadata"]["name"]: o for o in k8s_find(objs, "PersistentVolumeClaim")}
    if not pvcname or pvcname not in pvcs:
        p.append(f"storage.root {root} is not mounted from a PVC of these manifests")
    elif "ReadWriteMany" not in pvcs[pvcname]["spec"].get("accessModes", []):
        p.append(f"PVC {pvcname} is not ReadWriteMany: pods could not share storage")
    fpath = str(eff("flight.path", "") or os.path.join(root, "flight.ring"))
    if fpath.startswith(root.rstrip("/") + "/"):
        p.append(f"flight.path {fpath} is on the shared volume: every pod would write one ring")
    if csc.get("readOnlyRootFilesystem") and "/tmp" not in mounts:
        p.append("read-only root without a writable /tmp")
    for v in vols.values():
        if v.get("emptyDir", {}).get("medium") == "Memory":
            p.append(f"emptyDir {v['name']} in memory counts against the memory limit")
    report(f"k8s: volumes: config mounted at the -c path, storage.root on a RWX PVC, "
           f"per-pod flight ring ({fpath})", p)

    p = []
    if "replicas" in dep["spec"]:
        p.append("Deployment sets replicas while an HPA owns the count")
    for hpa in k8s_find(objs, "HorizontalPodAutoscaler"):
        ms = hpa["spec"].get("metrics", [])
        if not any(m.get("type") == "Resource" and m["resource"]["name"] == "cpu" for m in ms):
            p.append("HPA has no cpu Resource metric")
        if hpa["spec"].get("minReplicas", 1) < 2:
            p.append("HPA minReplicas < 2")
    for pdb in k8s_find(objs, "PodDisruptionBudget"):
        hmin = min(h["spec"].get("minReplicas", 1) for h in k8s_find(objs, "HorizontalPodAutoscaler"))
        mu = pdb["spec"].get("maxUnavailable")
        if isinstance(mu, int) and mu >= hmin:
            p.append(f"PDB maxUnavailable {mu} >= minReplicas {hmin}")
    report("k8s: HPA (autoscaling/v2, cpu) owns replicas; PDB leaves pods up", p)


# ---------------------------------------------------------------- nginx group
def nginx_directives(text):
    """Flat list of (context path, directive, args) from an nginx config (no includes)."""
    text = re.sub(r"#[^\n]*", "", text)
    toks = re.findall(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|[{};]|[^\s{};]+", text)
    out, stack, cur = [], [], []
    for t in toks:
        if t == ";":
            if cur:
                out.append(("/".join(stack), cur[0], cur[1:]))
            cur = []
        elif t == "{":
            stack.append(" ".join(cur))
            cur = []
        elif t == "}":
            stack.pop()
        else:
            cur.append(t)
    return out


def check_nginx():
    text = open(os.path.join(DEPLOY, "nginx", "thumbgate-lb.conf")).read()
    ds = nginx_directives(text)
    conf = flatten(yaml.safe_load(open(os.path.join(DEPLOY, "systemd", "thumbgate.yaml"))))

    def get(name, ctx=None):
        v = [a for c, d, a in ds if d == name and (ctx is None or c.startswith(ctx))]
        return v[-1] if v else None

    p = []
    nu = get("proxy_next_upstream") or []
    for cond in ("error", "timeout", "http_503"):
        if cond not in nu:
            p.append(f"proxy_next_upstream lacks {cond}")
    if "non_idempotent" in nu:
        p.append("non_idempotent retries POST/PATCH: not wanted")
    tries = int((get("proxy_next_upstream_tries") or ["0"])[0])
    servers = [a for c, d, a in ds if d == "server" and c.startswith("upstream")]
    if not 2 <= tries <= max(2, len(servers)):
        p.append(f"proxy_next_upstream_tries {tries} not in 2..{len(servers)} nodes")
    if len(servers) < 2:
        p.append(f"{len(servers)} upstream server(s)")
    report(f"nginx: retries error/timeout/http_503 on another node, tries {tries} of "
           f"{len(servers)} nodes", p)

    p = []
    if not get("keepalive", "upstream"):
        p.append("no keepalive in upstream")
    if (get("proxy_http_version") or [""])[0] != "1.1":
        p.append("proxy_http_version is not 1.1 (upstream keepalive needs it)")
    if not any(d == "proxy_set_header" and a[:1] == ["Connection"] and a[1] in ('""', "''")
               for _, d, a in ds):
        p.append('proxy_set_header Connection "" missing')
    ukt = dur_ms((get("keepalive_timeout", "upstream") or ["60s"])[0], bare="s")
    idle = dur_ms(conf.get("http.idle_timeout", "0"))
    if idle and not ukt < idle:
        p.append(f"upstream keepalive_timeout {ukt/1000:g}s >= node http.idle_timeout {idle/1000:g}s")
    report(f"nginx: upstream keep-alive (HTTP/1.1), idle {ukt/1000:g}s < node idle "
           f"{idle/1000:g}s", p)

    p = []
    cmb = size_nginx((get("client_max_body_size") or ["1m"])[0])
    mu = size_yaml(conf.get("limits.max_upload", "0"))
    if cmb != mu:
        p.append(f"client_max_body_size {cmb} != limits.max_upload {mu}")
    if (get("proxy_request_buffering") or ["on"])[0] != "off":
        p.append("proxy_request_buffering is not off (uploads would be spooled first)")
    rt = dur_ms((get("proxy_read_timeout") or ["60s"])[0], bare="s")
    qt = dur_ms(conf.get("memory.queue_timeout", "0"))
    if not rt > qt:
        p.append(f"proxy_read_timeout {rt/1000:g}s <= memory.queue_timeout {qt/1000:g}s")
    report(f"nginx: body limit = limits.max_upload ({mu >> 20} MiB), streamed; read timeout "
           f"{rt/1000:g}s > queue_timeout {qt/1000:g}s", p)


GROUPS = {"config": check_config, "systemd": check_systemd, "docker": check_docker,
          "k8s": check_k8s, "nginx": check_nginx}

if __name__ == "__main__":
    for g in sys.argv[2:] or list(GROUPS):
        try:
            GROUPS[g]()
        except Exception as e:  # noqa: BLE001 — a crash in a group is that group's failure
            print(f"FAIL {g} checks crashed: {type(e).__name__}: {e}")
    save_cache()
