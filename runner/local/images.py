"""Images built on this machine: the pod sandbox's pause image and a Debian base image.

Nothing is ever pulled from outside. The pause binary is compiled from pause/main.go with the
local Go toolchain; the base image's root filesystem is made by mmdebstrap from the Debian mirror
apt already uses. Both are cached (keyed by their inputs), imported into the run's Docker, and
pushed to the run's registry, from which containerd pulls. Local images are named
`watchdrop-local/...`, never like a public image.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import docker

from runner.build import gobuild
from runner.build.cache import cache_root
from runner.errors import BuildError
from runner.host.commands import CommandLog

PAUSE_SOURCE = Path(__file__).with_name("pause") / "main.go"
#: the base image's packages: enough for a shell, TLS and the test pods' curl
BASE_PACKAGES = ("ca-certificates", "curl")
BASE_SUITE = "bookworm"

Progress = Callable[[str], None]


def _digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:12]


def pause_tag() -> str:
    return _digest(PAUSE_SOURCE.read_text())


def base_tag(packages: tuple[str, ...] = BASE_PACKAGES) -> str:
    return _digest(BASE_SUITE, *packages)


def build_pause_binary(log: CommandLog) -> Path:
    """A static pause binary, cached by the hash of its source."""
    target = cache_root() / "local" / f"pause-{pause_tag()}" / "pause"
    # Every pod's sandbox runs it: checked against the hash recorded at its build, as the Go binaries are.
    if target.exists() and gobuild.verify_cached(target, log):
        return target
    with tempfile.TemporaryDirectory(prefix="pause-", dir=cache_root()) as tmp:
        work = Path(tmp)
        shutil.copy(PAUSE_SOURCE, work / "main.go")
        (work / "go.mod").write_text("module watchdrop.local/pause\n\ngo 1.21\n")
        try:
            log.run(["go", "build", "-trimpath", "-ldflags", "-s -w", "-o", "pause", "."], cwd=work,
                    env={"CGO_ENABLED": "0", "GOTOOLCHAIN": "local", "GOFLAGS": "-mod=mod"}, timeout=600,
                    fix="install Go (apt-get install golang-go) and retry")
        except Exception as exc:
            raise BuildError(f"building the pause binary failed: {exc}",
                             fix="check `go version` works and retry") from None
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(work / "pause"), target.with_suffix(".partial"))
        gobuild.record_sha256(target.with_suffix(".partial"), target)
        os.replace(target.with_suffix(".partial"), target)
    return target


def pause_rootfs_tar(binary: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tar.gettarinfo(str(binary), arcname="pause")
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.mode = 0o755
        with binary.open("rb") as f:
            tar.addfile(info, f)
    return buf.getvalue()


def build_base_rootfs(log: CommandLog, progress: Progress, packages: tuple[str, ...] = BASE_PACKAGES) -> Path:
    """A Debian minbase root filesystem tarball, cached by suite and package list (1 to 2 minutes)."""
    target = cache_root() / "local" / f"base-{base_tag(packages)}.tar"
    if target.exists():
        return target
    progress(f"building the Debian {BASE_SUITE} base image with mmdebstrap (cached afterwards; 1 to 2 minutes)")
    t0 = time.monotonic()
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.stem + ".partial.tar")  # mmdebstrap picks the format by suffix
    try:
        log.run(["mmdebstrap", "--variant=minbase", "--quiet", f"--include={','.join(packages)}",
                 "--dpkgopt=path-exclude=/usr/share/{doc,man,locale}/*", BASE_SUITE, str(partial)],
                timeout=1200, fix="check the Debian mirror in /etc/apt/sources.list is reachable and retry")
    except Exception as exc:
        partial.unlink(missing_ok=True)
        raise BuildError(f"mmdebstrap failed: {exc}", fix="check that apt-get update works and retry") from None
    os.replace(partial, target)
    progress(f"built the base root filesystem in {time.monotonic() - t0:.0f} s -> {target}")
    return target


class LocalImages:
    """Import, tag and push through the run's Docker to the run's registry."""

    def __init__(self, docker_client: docker.DockerClient, registry: str, log: CommandLog, progress: Progress):
        self.docker = docker_client
        self.registry = registry
        self.log = log
        self.progress = progress

    def _import(self, data: bytes | Path, repo: str, tag: str, changes: list[str]) -> str:
        local = f"watchdrop-local/{repo}:{tag}"
        try:
            self.docker.images.get(local)
        except docker.errors.ImageNotFound:
            self.log.note(f"docker import -> {local}")
            if isinstance(data, Path):
                with data.open("rb") as f:
                    self.docker.api.import_image_from_data(f.read(), repository=f"watchdrop-local/{repo}",
                                                           tag=tag, changes=changes)
            else:
                self.docker.api.import_image_from_data(data, repository=f"watchdrop-local/{repo}", tag=tag,
                                                       changes=changes)
        return local

    def push(self, local: str, repo: str, tag: str) -> str:
        """Tag `local` as `<registry>/watchdrop-local/<repo>:<tag>` and push it; returns that name."""
        remote_repo = f"{self.registry}/watchdrop-local/{repo}"
        self.docker.images.get(local).tag(remote_repo, tag)
        self.log.note(f"docker push {remote_repo}:{tag}")
        for line in self.docker.api.push(remote_repo, tag=tag, stream=True, decode=True):
            if "error" in line:
                raise BuildError(f"pushing {remote_repo}:{tag} failed: {line['error']}",
                                 fix="see docker.log and registry.log in the evidence")
        return f"{remote_repo}:{tag}"

    def pause(self) -> str:
        tag = pause_tag()
        local = self._import(pause_rootfs_tar(build_pause_binary(self.log)), "pause", tag,
                             ['ENTRYPOINT ["/pause"]'])
        return self.push(local, "pause", tag)

    def base(self) -> str:
        """The Debian base image (local name); what the clients' and tests' Dockerfiles build FROM."""
        tag = base_tag()
        return self._import(build_base_rootfs(self.log, self.progress), "base", tag, ['CMD ["/bin/sh"]'])
