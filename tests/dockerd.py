"""A private Docker engine for the image tests: its own data root, exec root, socket and pid file.

No systemd here and nothing of the machine's Docker is used: dockerd (Debian's docker.io) starts
with its state under `data_root` (kept in the cache, so built images survive test runs and a
second run builds nothing) and its sockets under a short temporary exec root (a unix socket path
must stay under 108 bytes). It touches no network of the host: no iptables rules, no bridge, no
ip_forward, so builds use host networking and containers `--network none`. `stop()` ends dockerd
by its pid (dockerd stops the containerd it started), then checks that no process, mount or
network namespace of it is left. runner/local/ can lift this as it is.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

#: How long dockerd may take to answer on its socket, and to exit after SIGTERM.
START_TIMEOUT = 60
STOP_TIMEOUT = 30


@dataclass
class Dockerd:
    """One running private dockerd; `host` is the DOCKER_HOST value for the docker SDK and CLI."""

    proc: subprocess.Popen[bytes]
    data_root: Path
    exec_root: Path
    log: Path

    @property
    def sock(self) -> Path:
        return self.exec_root / "docker.sock"

    @property
    def host(self) -> str:
        return f"unix://{self.sock}"


def install_problem() -> str | None:
    """Why no private dockerd can start here (the tests then skip with it), or None."""
    if os.geteuid() != 0:
        return "needs root to run dockerd"
    if shutil.which("dockerd") is None:
        # Debian's engine: no registry outside the Debian mirror is needed to install it.
        try:
            subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", "docker.io"],
                           check=True, capture_output=True, timeout=600,
                           env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        except (OSError, subprocess.SubprocessError) as exc:
            return f"dockerd missing and `apt-get install docker.io` failed ({exc.__class__.__name__})"
    return None


def start(data_root: Path, log: Path) -> Dockerd:
    data_root.mkdir(parents=True, exist_ok=True)
    exec_root = Path(tempfile.mkdtemp(prefix="wd-dockerd-"))
    config = exec_root / "daemon.json"
    config.write_text("{}\n")  # never the machine's /etc/docker/daemon.json
    argv = ["dockerd", "--config-file", str(config), "--data-root", str(data_root),
            "--exec-root", str(exec_root / "exec"), "--pidfile", str(exec_root / "docker.pid"),
            "-H", f"unix://{exec_root / 'docker.sock'}",
            "--iptables=false", "--ip6tables=false", "--ip-forward=false", "--ip-masq=false", "--bridge=none",
            "--log-level=warn"]
    with log.open("ab") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    engine = Dockerd(proc, data_root, exec_root, log)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            stop(engine)
            raise RuntimeError(f"dockerd exited with {proc.returncode}; see {log}")
        if engine.sock.exists() and _ping(engine.host):
            return engine
        time.sleep(0.2)
    stop(engine)
    raise RuntimeError(f"dockerd did not answer on {engine.sock} within {START_TIMEOUT} s; see {log}")


def _ping(host: str) -> bool:
    import docker  # type: ignore[import-untyped]

    try:
        with docker.APIClient(base_url=host, timeout=2) as api:
            return bool(api.ping())
    except Exception:  # not listening yet
        return False


def stop(engine: Dockerd) -> list[str]:
    """Stop dockerd, clean up after it, and say what it had left behind (to assert empty)."""
    if engine.proc.poll() is None:
        engine.proc.send_signal(signal.SIGTERM)
        try:
            engine.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(engine.proc.pid, signal.SIGKILL)  # its own session: dockerd and its containerd only
            engine.proc.wait(STOP_TIMEOUT)
    left = [f"process {pid}: {cmd}" for pid, cmd in _processes_under(engine)]
    for pid, _ in _processes_under(engine):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    # dockerd bind-mounts the host's network namespace at <exec-root>/netns/default and leaves it
    # mounted when it exits: expected, and unmounted here. Any other mount is a leftover.
    default_netns = str(engine.exec_root / "exec" / "netns" / "default")
    for mount in reversed(_mounts_under(engine)):
        if mount != default_netns:
            left.append(f"mount {mount}")
        subprocess.run(["umount", "-l", mount], check=False, capture_output=True)
    left += [f"mount {m} (could not be unmounted)" for m in _mounts_under(engine)]
    shutil.rmtree(engine.exec_root, ignore_errors=True)
    return left


def _roots(engine: Dockerd) -> tuple[str, ...]:
    return str(engine.data_root) + "/", str(engine.exec_root) + "/"


def _processes_under(engine: Dockerd) -> list[tuple[int, str]]:
    """Processes whose command line names this engine's roots (containerd, shims, dockerd itself)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        # the root itself or a path under it, never a sibling that merely starts the same way
        if any(re.search(re.escape(root.rstrip("/")) + r"(/|\s|$)", cmd) for root in _roots(engine)):
            found.append((int(entry.name), cmd.strip()))
    return found


def _mounts_under(engine: Dockerd) -> list[str]:
    """Mount points (netns files included) under this engine's roots, from /proc/self/mountinfo."""
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if any((point + "/").startswith(root) for root in _roots(engine)):
            points.append(point)
    return points
