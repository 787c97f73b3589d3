"""System tools the embedded cluster needs, installed with apt when running as root."""

from __future__ import annotations

import os
import shutil
import subprocess

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


def missing_tools() -> dict[str, str]:
    return {tool: pkg for tool, pkg in TOOLS.items() if shutil.which(tool) is None}


def require_root(what: str) -> None:
    if os.geteuid() != 0:
        raise PrerequisiteError(
            f"{what} needs root: it creates network namespaces, nftables rules and captures",
            fix="run it as root, e.g. `sudo env PATH=\"$PATH\" python -m runner ...` "
                "(your PATH, not the rest of your environment)")


def ensure_tools(progress=print) -> None:  # type: ignore[no-untyped-def]
    """Install missing Debian packages (root), or say exactly which command would."""
    missing = missing_tools()
    if not missing:
        return
    pkgs = sorted(set(missing.values()))
    cmd = ["apt-get", "install", "-y", "--no-install-recommends", *pkgs]
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise PrerequisiteError(f"missing tools: {', '.join(sorted(missing))}",
                                fix="apt-get update && " + " ".join(cmd))
    progress(f"installing {' '.join(pkgs)} with apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "update", "-qq"], cmd):
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, env=env, check=False, timeout=APT_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise PrerequisiteError(f"`{' '.join(argv)}` did not finish within {APT_TIMEOUT} s",
                                    fix="install the packages by hand: " + " ".join(cmd)) from None
        if proc.returncode != 0:
            raise PrerequisiteError(f"`{' '.join(argv)}` failed (exit {proc.returncode})",
                                    detail=(proc.stdout + proc.stderr)[-2000:],
                                    fix="install the packages by hand: " + " ".join(cmd))
    still = missing_tools()
    if still:
        raise PrerequisiteError(f"still missing after apt-get: {', '.join(sorted(still))}",
                                fix=" ".join(cmd))
