"""Building kube-apiserver and etcd from their Go modules, through small wrapper modules.

`go install k8s.io/kubernetes/cmd/kube-apiserver@vX` fails: k8s.io/kubernetes maps its ~31 staging
modules with relative `replace` lines, which Go ignores outside the main module. A wrapper module
requires `k8s.io/kubernetes vX` and repeats each of those replaces against the published staging
module `v0.<minor>.<patch>`. The list is generated from the go.mod that the module proxy serves,
so it stays right when the pin moves. etcd's server module has relative replaces too, but its
requirements are real versions, so a plain wrapper that requires it builds.

Binaries land in `<cache>/bin/<name>-<version>/<name>` and a build happens only when that file is
missing: a second run builds nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from runner.build import versions
from runner.build.cache import cache_root
from runner.errors import BuildError, CommandError, PrerequisiteError
from runner.host.commands import CommandLog
from runner.host.safefiles import write_atomic

_STAGING_REPLACE = re.compile(r"^\s*(k8s\.io/[\w.-]+)\s*=>\s*\./staging/src/\S+\s*$", re.M)

Progress = Callable[[str], None]


@dataclass(frozen=True)
class GoBinary:
    """One binary built from a Go module at a pinned version."""

    name: str
    module: str
    version: str
    package: str
    tags: str = ""
    #: ldflags -X values; `{version}` is filled in.
    xflags: tuple[tuple[str, str], ...] = ()
    #: extra replace lines, computed at build time (staging modules).
    replaces: Callable[[CommandLog, Path], list[tuple[str, str]]] | None = field(
        default=None, compare=False
    )
    typical_build: str = "a few minutes"

    def cached_path(self) -> Path:
        return cache_root() / "bin" / f"{self.name}-{self.version}" / self.name


def staging_replaces_from_gomod(gomod_text: str, staging_version: str) -> list[tuple[str, str]]:
    """Turn `k8s.io/x => ./staging/src/k8s.io/x` lines into `k8s.io/x => k8s.io/x <version>`."""
    mods = sorted(set(_STAGING_REPLACE.findall(gomod_text)))
    return [(m, f"{m} {staging_version}") for m in mods]


def _kubernetes_replaces(log: CommandLog, workdir: Path) -> list[tuple[str, str]]:
    info = _go(log, ["go", "mod", "download", "-json", f"k8s.io/kubernetes@{versions.KUBERNETES_VERSION}"],
               workdir, timeout=1800)
    gomod = Path(json.loads(info)["GoMod"]).read_text()
    replaces = staging_replaces_from_gomod(gomod, versions.staging_version())
    if len(replaces) < 20:
        raise BuildError(
            f"k8s.io/kubernetes {versions.KUBERNETES_VERSION}: found only {len(replaces)} staging "
            "replaces in the go.mod the proxy served; the module layout changed",
            fix="check runner/build/gobuild.py against the new go.mod",
        )
    return replaces


def _kube_xflags() -> tuple[tuple[str, str], ...]:
    v = versions.KUBERNETES_VERSION
    major, minor, _ = v.lstrip("v").split(".")
    flags: list[tuple[str, str]] = []
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [
            (f"{pkg}.gitVersion", v),
            (f"{pkg}.gitMajor", major),
            (f"{pkg}.gitMinor", minor),
            (f"{pkg}.gitTreeState", "clean"),
            (f"{pkg}.buildDate", "1970-01-01T00:00:00Z"),
        ]
    return tuple(flags)


KUBE_APISERVER = GoBinary(
    name="kube-apiserver",
    module="k8s.io/kubernetes",
    version=versions.KUBERNETES_VERSION,
    package="k8s.io/kubernetes/cmd/kube-apiserver",
    tags="selinux,notest,grpcnotrace",
    xflags=_kube_xflags(),
    replaces=_kubernetes_replaces,
    typical_build="5 to 15 minutes on 2 cores the first time",
)


def _kube_binary(name: str, typical_build: str) -> GoBinary:
    """Another command of k8s.io/kubernetes, built like kube-apiserver (same pin, same replaces)."""
    return GoBinary(
        name=name,
        module="k8s.io/kubernetes",
        version=versions.KUBERNETES_VERSION,
        package=f"k8s.io/kubernetes/cmd/{name}",
        tags="selinux,notest,grpcnotrace",
        xflags=_kube_xflags(),
        replaces=_kubernetes_replaces,
        typical_build=typical_build,
    )


# The node and the rest of the control plane, for the local cluster (runner/local/). With
# kube-apiserver's build cache they take about a minute each; kube-proxy a few seconds after kubelet.
KUBELET = _kube_binary("kubelet", "about a minute once kube-apiserver is built, 3 to 5 minutes cold")
KUBE_PROXY = _kube_binary("kube-proxy", "well under a minute after kubelet")
KUBE_CONTROLLER_MANAGER = _kube_binary("kube-controller-manager", "about a minute once kube-apiserver is built")
KUBE_SCHEDULER = _kube_binary("kube-scheduler", "well under a minute after the controller manager")
CRICTL = GoBinary(
    name="crictl",
    module="sigs.k8s.io/cri-tools",
    version=versions.CRI_TOOLS_VERSION,
    package="sigs.k8s.io/cri-tools/cmd/crictl",
    xflags=(("sigs.k8s.io/cri-tools/pkg/version.Version", versions.CRI_TOOLS_VERSION),),
    typical_build="under a minute",
)
COREDNS = GoBinary(
    name="coredns",
    module="github.com/coredns/coredns",
    version=versions.COREDNS_VERSION,
    package="github.com/coredns/coredns",
    xflags=(("github.com/coredns/coredns/coremain.GitCommit", versions.COREDNS_VERSION),),
    typical_build="2 to 4 minutes the first time",
)
NODE_BINARIES = (KUBE_CONTROLLER_MANAGER, KUBE_SCHEDULER, KUBELET, KUBE_PROXY, CRICTL, COREDNS)

ETCD = GoBinary(
    name="etcd",
    module="go.etcd.io/etcd/server/v3",
    version=versions.ETCD_VERSION,
    package="go.etcd.io/etcd/server/v3",
    xflags=(("go.etcd.io/etcd/api/v3/version.GitSHA", versions.ETCD_VERSION),),
    typical_build="1 to 3 minutes the first time",
)


def _go_env() -> dict[str, str]:
    # GOTOOLCHAIN=local: never try to download another toolchain (only the module proxy is reachable).
    return {"GOTOOLCHAIN": "local", "CGO_ENABLED": "0", "GOFLAGS": "-mod=mod"}


def _go(log: CommandLog, argv: list[str], cwd: Path, timeout: float = 3600) -> str:
    try:
        return log.run(argv, cwd=cwd, env=_go_env(), timeout=timeout,
                       fix="check the Go module proxy is reachable (GOPROXY) and retry").stdout
    except CommandError as exc:
        raise BuildError(exc.message, fix=exc.fix, detail=exc.detail) from None


def wrapper_gomod(binary: GoBinary, replaces: list[tuple[str, str]]) -> str:
    lines = [
        f"module watchdrop.local/build/{binary.name}",
        "",
        "go 1.24.0",
        "",
        f"require {binary.module} {binary.version}",
    ]
    if replaces:
        lines += ["", "replace ("]
        lines += [f"\t{old} => {new}" for old, new in replaces]
        lines += [")"]
    return "\n".join(lines) + "\n"


def check_go() -> str:
    go = shutil.which("go")
    if go is None:
        raise PrerequisiteError(
            "the Go toolchain is not on PATH; kube-apiserver and etcd are built from their Go modules",
            fix="install Go 1.24 or newer (e.g. apt-get install golang-go) and retry",
        )
    return go


def version_check(path: Path, log: CommandLog) -> str:
    """Run `<binary> --version` and return its first line; a binary that can't say it is broken."""
    proc = log.run([str(path), "--version"], check=False, timeout=60)
    out = (proc.stdout + proc.stderr).strip()
    if proc.returncode != 0 or not out:
        raise BuildError(f"{path} --version failed (exit {proc.returncode})", detail=out,
                         fix=f"delete {path.parent} and run again to rebuild")
    return out.splitlines()[0]


def ensure_binary(binary: GoBinary, log: CommandLog | None = None, progress: Progress = print) -> Path:
    """Return the cached binary, building it first when it is not in the cache."""
    log = log or CommandLog()
    target = binary.cached_path()
    if target.exists() and verify_cached(target, log):
        return target
    check_go()
    progress(f"building {binary.name} {binary.version} from {binary.module} "
             f"(cached afterwards; usually {binary.typical_build})")
    started = time.monotonic()
    build_root = cache_root() / "build"
    build_root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"{binary.name}-", dir=build_root) as tmp:
        work = Path(tmp)
        (work / "go.mod").write_text(wrapper_gomod(binary, []))
        replaces = binary.replaces(log, work) if binary.replaces else []
        (work / "go.mod").write_text(wrapper_gomod(binary, replaces))
        ldflags = "-s -w " + " ".join(f"-X '{k}={v}'" for k, v in binary.xflags)
        out = work / binary.name
        argv = ["go", "build", "-trimpath", "-o", str(out), "-ldflags", ldflags]
        if binary.tags:
            argv += ["-tags", binary.tags]
        _go(log, [*argv, binary.package], work)
        version_check(out, log)
        target.parent.mkdir(parents=True, exist_ok=True)
        # Move into place last, so an interrupted build never leaves a half binary in the cache.
        partial = target.with_suffix(".partial")
        shutil.move(str(out), partial)
        record_sha256(partial, target)
        os.replace(partial, target)
    progress(f"built {binary.name} in {time.monotonic() - started:.0f} s -> {target}")
    return target


def sha256_path(target: Path) -> Path:
    return target.with_name(target.name + ".sha256")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def record_sha256(binary: Path, target: Path) -> str:
    """Write `<target>.sha256` for the file at `binary` (which becomes `target`)."""
    digest = _sha256(binary)
    # Written beside and renamed: a parallel run never reads half a record (rename replaces a
    # planted symlink itself, never what it points to).
    write_atomic(sha256_path(target), f"{digest}  {target.name}\n")
    return digest


def verify_cached(target: Path, log: CommandLog) -> bool:
    """Root runs this binary: it must be the one built. A binary with no hash recorded at build time
    is not trusted on first use: False, and the caller builds it again. A mismatch is refused with the fix."""
    recorded = sha256_path(target)
    if not recorded.exists():
        log.note(f"{target} has no sha256 recorded at build time: building it again")
        return False
    want = (recorded.read_text().split() or [""])[0]
    got = _sha256(target)
    if got != want:
        raise BuildError(f"cached {target} has sha256 {got[:16]}…, not the {want[:16]}… recorded when it was built",
                         fix=f"delete {target.parent} and run again to rebuild it")
    return True


def ensure_control_plane_binaries(
    log: CommandLog | None = None, progress: Progress = print
) -> dict[str, Path]:
    return {b.name: ensure_binary(b, log, progress) for b in (ETCD, KUBE_APISERVER)}


def ensure_local_cluster_binaries(
    log: CommandLog | None = None, progress: Progress = print
) -> dict[str, Path]:
    """The control plane plus kube-controller-manager, kube-scheduler, kubelet and kube-proxy."""
    bins = ensure_control_plane_binaries(log, progress)
    bins.update({b.name: ensure_binary(b, log, progress) for b in NODE_BINARIES})
    return bins
