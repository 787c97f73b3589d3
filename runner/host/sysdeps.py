"""System tools the embedded and local clusters need, installed with apt when running as root.

The local cluster's packages (containerd, runc, CNI plugins, Docker, a registry, mmdebstrap) are
installed only when a local cluster is asked for: the embedded path needs none of them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from runner.errors import PrerequisiteError

#: apt-get waiting on a held dpkg lock or a dead mirror must not hang the runner for ever.
APT_TIMEOUT = 900

#: tool on PATH -> Debian package that ships it
TOOLS = {
    "ip": "iproute2",
    "nft": "nftables",
    "conntrack": "conntrack",
    "tcpdump": "tcpdump",
    "haproxy": "haproxy",
    "curl": "curl",
}


#: what the local cluster (runner/local/) needs on top; an absolute path is checked as a file
#: (the CNI plugins are not on PATH).
LOCAL_TOOLS = {
    "containerd": "containerd",
    "ctr": "containerd",
    "runc": "runc",
    "/usr/lib/cni/bridge": "containernetworking-plugins",
    "/usr/lib/cni/host-local": "containernetworking-plugins",
    "/usr/lib/cni/loopback": "containernetworking-plugins",
    "dockerd": "docker.io",
    "docker-registry": "docker-registry",
    "mmdebstrap": "mmdebstrap",
    "iptables": "iptables",
}


def _present(tool: str) -> bool:
    return os.path.exists(tool) if tool.startswith("/") else shutil.which(tool) is not None


def missing_tools(tools: dict[str, str] | None = None) -> dict[str, str]:
    return {tool: pkg for tool, pkg in (tools or TOOLS).items() if not _present(tool)}


def require_root(what: str) -> None:
    if os.geteuid() != 0:
        raise PrerequisiteError(
            f"{what} needs root: it creates network namespaces, nftables rules and captures",
            # Root's own environment: a user's PATH would let files the user can write run as root.
            fix="run it as root with root's environment: `sudo python -m runner ...`")


def ensure_tools(progress=print, tools: dict[str, str] | None = None) -> None:  # type: ignore[no-untyped-def]
    """Install missing Debian packages (root), or say exactly which command would."""
    missing = missing_tools(tools)
    if not missing:
        return
    pkgs = sorted(set(missing.values()))
    cmd = ["apt-get", "install", "-y", "--no-install-recommends", *pkgs]
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise PrerequisiteError(f"missing tools: {', '.join(sorted(missing))}",
                                fix="apt-get update && " + " ".join(cmd))
    progress(f"installing {' '.join(pkgs)} with apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    # docker.io's and containerd's install scripts would start system-wide daemons (Docker with
    # its own bridge and iptables rules). The runner starts its own, so forbid service starts for
    # the length of the install (policy-rc.d exit 101), unless the machine already has a policy.
    policy = Path("/usr/sbin/policy-rc.d")
    own_policy = not policy.exists()
    if own_policy:
        policy.write_text("#!/bin/sh\n# watchdrop: no service starts during its apt-get install\nexit 101\n")
        policy.chmod(0o755)
    try:
        for argv in (["apt-get", "update", "-qq"], cmd):
            try:
                proc = subprocess.run(argv, capture_output=True, text=True, env=env, check=False,
                                      timeout=APT_TIMEOUT)
            except subprocess.TimeoutExpired:
                raise PrerequisiteError(f"`{' '.join(argv)}` did not finish within {APT_TIMEOUT} s",
                                        fix="install the packages by hand: " + " ".join(cmd)) from None
            if proc.returncode != 0:
                raise PrerequisiteError(f"`{' '.join(argv)}` failed (exit {proc.returncode})",
                                        detail=(proc.stdout + proc.stderr)[-2000:],
                                        fix="install the packages by hand: " + " ".join(cmd))
    finally:
        if own_policy:
            policy.unlink(missing_ok=True)
    still = missing_tools(tools)
    if still:
        raise PrerequisiteError(f"still missing after apt-get: {', '.join(sorted(still))}",
                                fix=" ".join(cmd))


def ensure_local_cluster_tools(progress=print) -> None:  # type: ignore[no-untyped-def]
    """The embedded cluster's tools plus the local cluster's packages."""
    ensure_tools(progress, {**TOOLS, **LOCAL_TOOLS})
