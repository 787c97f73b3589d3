"""Building a client's watcher from its descriptor, once per content, cached outside the repo.

The cache key is a hash of the client folder's files, the descriptor and the variant's build
environment, so editing a watcher or pinning another library version rebuilds exactly that.
Builds run in place in the cache (a Python venv cannot move) and are marked complete only at
the end; a failed or interrupted build is removed, never reused.
"""

from __future__ import annotations

import codecs
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from runner.build.cache import cache_root
from runner.config.descriptor import Descriptor
from runner.config.matrix import VERSION_RE
from runner.errors import BuildError
from runner.host import sandbox
from runner.host.procs import escalate, signal_pid
from runner.host.safefiles import open_nofollow

#: Folders a build creates inside the client folder itself; never part of the key.
IGNORED = {"node_modules", "target", "__pycache__", "bin", "obj", ".venv", "dist", "build"}
COMPLETE = ".watchdrop-complete"
BUILD_TIMEOUT = 1800
#: A build step's log beyond this is cut (and the cut said): far above any real build's output.
BUILD_LOG_MAX = 32 << 20


@dataclass(frozen=True)
class BuiltClient:
    folder: str
    descriptor: Descriptor
    out: Path
    src: Path

    def run_argv(self) -> list[str]:
        return self.descriptor.run_argv(self.src, self.out)


def build_key(src: Path, descriptor: Descriptor, build_env: Mapping[str, str]) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in src.rglob("*") if p.is_file()):
        rel = path.relative_to(src)
        if set(rel.parts) & IGNORED:
            continue
        h.update(str(rel).encode() + b"\0" + path.read_bytes() + b"\0")
    # client.yaml is one of the folder's files above; hashing the parsed model too would rebuild
    # every client whenever the descriptor schema gains a field.
    h.update(json.dumps(dict(build_env), sort_keys=True).encode())
    return h.hexdigest()[:16]


def _copy_capped(src: IO[bytes], log: IO[str], limit: int) -> None:
    """Copy a build's output into its log up to `limit` bytes; the rest is counted and said at the end."""
    decode = codecs.getincrementaldecoder("utf-8")(errors="replace")
    written = cut = 0
    for chunk in iter(lambda: src.read1(1 << 16), b""):  # type: ignore[attr-defined]
        keep = chunk[:max(0, limit - written)]
        if keep:
            log.write(decode.decode(keep))
            log.flush()
        written += len(keep)
        cut += len(chunk) - len(keep)
    if cut:
        log.write(f"\n[watchdrop: {cut} more bytes of build output cut at the {limit >> 20} MiB log limit]\n")


def _run_step(argv: list[str], cwd: Path, env: dict[str, str], log: IO[str], stop: threading.Event | None,
              log_max: int = BUILD_LOG_MAX) -> int:
    """One build command in its own process group, so an interrupted run can stop all of it. Its
    output goes through the runner, capped: a dependency that prints without end cannot fill the disk."""
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    assert proc.stdout is not None
    copier = threading.Thread(target=_copy_capped, args=(proc.stdout, log, log_max), daemon=True)
    copier.start()
    try:
        return _wait_step(proc, log, stop)
    finally:
        # A daemon the build left behind may hold the pipe: the log is what arrived until then.
        copier.join(timeout=10)


def _wait_step(proc: subprocess.Popen[bytes], log: IO[str], stop: threading.Event | None) -> int:
    deadline = time.monotonic() + BUILD_TIMEOUT
    while proc.poll() is None:
        if (stop is not None and stop.is_set()) or time.monotonic() > deadline:
            why = "interrupted" if stop is not None and stop.is_set() else f"timed out after {BUILD_TIMEOUT} s"
            log.write(f"{why}: stopping the build\n")
            escalate(lambda sig: signal_pid(proc.pid, sig, group=True), lambda: proc.poll() is not None, grace=5.0)
            return -1
        time.sleep(0.1)
    return proc.returncode


def build_client(src: Path, descriptor: Descriptor, build_env: Mapping[str, str], log_path: Path,
                 stop: threading.Event | None = None) -> BuiltClient:
    """Return the built client, building it first unless the cache has it."""
    version = build_env.get(descriptor.version_env) if descriptor.version_env else None
    if version is not None and not VERSION_RE.fullmatch(version):
        # The matrix refuses this at load; here for callers that build without a matrix.
        raise BuildError(f"{descriptor.version_env}={version!r} is not a version", fix="give e.g. 1.0.0")
    out = cache_root() / "clients" / f"{descriptor.name}-{build_key(src, descriptor, build_env)}"
    built = BuiltClient(folder=src.name, descriptor=descriptor, out=out, src=src.resolve())
    out.parent.mkdir(parents=True, exist_ok=True)
    with open_nofollow(str(out) + ".lock") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (out / COMPLETE).exists():
            os.utime(out / COMPLETE)  # last used: what prune_builds keeps by
            log_path.parent.mkdir(parents=True, exist_ok=True)
            log_path.write_text(f"cached build: {out}\n")
            return built
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        box: sandbox.Sandbox | None = None
        if sandbox.enabled():
            # A dependency's install script is code we did not write: the steps run as BUILD_UID,
            # writing only the output folder and the builder's HOME (toolchain caches).
            box = sandbox.Sandbox(sandbox.BUILD_UID, home=builder_home(), readable=[built.src], writable=[out])
            os.chown(out, sandbox.BUILD_UID, sandbox.BUILD_UID)
            env = box.env({**build_env, "GOTOOLCHAIN": "local"})
        else:
            env = {**os.environ, **build_env, "GOTOOLCHAIN": "local"}
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("w") as log:
            for argv in descriptor.build_argvs(built.src, out):
                log.write("$ " + " ".join(argv) + (f"  (as uid {box.uid})" if box else "") + "\n")
                log.flush()
                if box is not None:
                    argv = box.wrap(argv)
                try:
                    rc = _run_step(argv, built.src, env, log, stop)
                except FileNotFoundError:
                    rc = 127
                    log.write(f"not found: {argv[0]}\n")
                if rc != 0:
                    log.flush()
                    shutil.rmtree(out, ignore_errors=True)
                    tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-15:])
                    raise BuildError(f"building {descriptor.name}: `{' '.join(argv)}` failed (exit {rc})",
                                     detail=tail, fix=f"see {log_path}")
        if box is not None:
            # The finished build becomes root's: no watcher (nor a later build) can rewrite it.
            sandbox.chown_tree(out, 0, 0)
        (out / COMPLETE).write_text("ok\n")
    return built


def builder_home() -> Path:
    """HOME of the sandboxed builds: GOPATH, the npm cache, ~/.m2, CARGO_HOME; owned by BUILD_UID."""
    return sandbox.owned_dir(cache_root() / "builder-home", sandbox.BUILD_UID)


#: Client builds not used for this long are removed when a run starts building (each edit of a
#: watcher makes a new content-keyed build; the JVM and Rust ones are hundreds of MB).
KEEP_UNUSED_DAYS = 14.0


def prune_builds(keep_days: float = KEEP_UNUSED_DAYS, now: float | None = None) -> list[str]:
    """Remove client builds last used more than `keep_days` ago, and builds a crash left
    incomplete; a build another run holds (its lock is taken) is skipped. Returns what went."""
    root = cache_root() / "clients"
    if not root.is_dir():
        return []
    now = time.time() if now is None else now
    removed = []
    for out in sorted(p for p in root.iterdir() if p.is_dir()):
        marker = out / COMPLETE
        try:
            last = marker.stat().st_mtime if marker.exists() else out.stat().st_mtime
        except OSError:
            continue
        # An incomplete build older than the longest build is a crash's leftover; a complete
        # one goes after keep_days without use.
        limit = keep_days * 86400 if marker.exists() else BUILD_TIMEOUT
        if now - last <= limit:
            continue
        with open_nofollow(str(out) + ".lock") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # being built or used by a parallel run
            shutil.rmtree(out, ignore_errors=True)
            Path(str(out) + ".lock").unlink(missing_ok=True)
        removed.append(out.name)
    for lock_path in root.glob("*.lock"):
        if not Path(str(lock_path)[: -len(".lock")]).exists() and now - lock_path.stat().st_mtime > BUILD_TIMEOUT:
            lock_path.unlink(missing_ok=True)
    return removed
