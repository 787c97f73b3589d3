"""Code under test runs without root: a hostile client, built and run for real, gets nowhere.

tests/fixtures/hostile is a client folder whose build step and watcher try to read the admin
kubeconfig, the ServiceAccount signing key and another cell's token (directly and through
/proc/<pid>/root), to write outside their own folders (client folder, other builds, evidence)
and to change nftables rules; each attempt's outcome is a JSON line of the watcher's own output.
Two cells (two variants of the folder) run, so there is another cell to attack.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import needs_root_tools

REPO = Path(__file__).resolve().parent.parent

FORBIDDEN = [
    "read the admin kubeconfig",
    "read the ServiceAccount signing key",
    "read the admin client key",
    "read another cell's token",
    "read another cell's token through /proc/<pid>/root",
    "write into its evidence folder",
    "rewrite its evidence file by path",
    "write into another cell's evidence",
    "write into the client folder",
    "write into its build output",
    "add an nft table",
    "list the nft ruleset",
    "enter the LB's namespace",
]
BUILD_FORBIDDEN = [
    "build: write into the client folder",
    "build: write next to its output (other builds)",
    "build: write into root's home",
]
CANARIES = {"KUBECONFIG": "/root/.kube/config", "SSH_AUTH_SOCK": "/tmp/ssh-agent.sock",
            "CI_JOB_TOKEN": "canary-token", "AWS_SECRET_ACCESS_KEY": "canary"}


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.startswith("{")]


@needs_root_tools("ip", "nft", "conntrack", "tcpdump", "haproxy", "go", "setpriv", "unshare")
@pytest.mark.slow
def test_a_hostile_client_can_read_and_write_nothing_of_the_runner(tmp_path: Path) -> None:
    clients = tmp_path / "clients"
    clients.mkdir()
    for real in (REPO / "clients").iterdir():
        if real.is_dir():
            (clients / real.name).symlink_to(real)
    shutil.copytree(Path(__file__).parent / "fixtures" / "hostile", clients / "hostile")
    text = (REPO / "matrix.quick.yaml").read_text()
    text = text.replace("\nclients:\n", "\nclients:\n  - name: hostile\n"
                        "  - name: hostile-b\n    folder: hostile\n", 1)
    (tmp_path / "matrix.yaml").write_text(text)
    out = tmp_path / "results"
    # Own cache: the hostile build must not land in (or be taken from) the shared one.
    env = {**os.environ, **CANARIES, "WATCHDROP_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run(
        [sys.executable, "-m", "runner", str(tmp_path / "matrix.yaml"), "--clients", str(clients), "--out", str(out),
         "--no-readme", "--only", "client=hostile*", "--only", "cluster=azure-slb-no-reset-quick",
         "--only", "scenario=idle-request"],
        cwd=REPO, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode in (0, 1), proc.stdout[-2000:] + proc.stderr[-2000:]
    cells = json.loads((out / "latest" / "results.json").read_text())["cells"]
    assert len(cells) == 2
    uids = set()
    for cell in cells:
        lines = _lines(out / "latest" / cell["evidence"]["watcher.jsonl"])
        events = {x["event"] for x in lines}
        assert "done" in events, (cell["id"], lines, (out / "latest" / cell["evidence"]["watcher.stderr"]).read_text())
        ident = next(x for x in lines if x["event"] == "identity")
        assert ident["uid"] != 0 and ident["euid"] != 0 and ident["gid"] != 0 and 0 not in ident["groups"]
        uids.add(ident["uid"])
        assert not set(CANARIES) & set(ident["env"]), ident["env"]
        attempts = {x["what"]: x for x in lines if x["event"] == "attempt"}
        # Controls: the watcher can do its job (its own kubeconfig, its own HOME).
        assert attempts["read its own kubeconfig"]["ok"], attempts["read its own kubeconfig"]
        assert attempts["write its own HOME"]["ok"], attempts["write its own HOME"]
        for what in FORBIDDEN:
            assert attempts[what]["ok"] is False, (cell["id"], what, attempts[what]["detail"])
        build = next(x for x in lines if x["event"] == "build-report")
        assert build["identity"]["uid"] not in (0, ident["uid"])
        assert not set(CANARIES) & set(build["identity"]["env"])
        battempts = {x["what"]: x for x in build["attempts"]}
        assert battempts["build: write its own output"]["ok"]
        for what in BUILD_FORBIDDEN:
            assert battempts[what]["ok"] is False, (what, battempts[what]["detail"])
    assert len(uids) == 2, "every cell runs as a uid of its own"
    # Nothing the attempts named exists on the real file system afterwards.
    assert not list(tmp_path.rglob("hostile-was-here")), list(tmp_path.rglob("hostile-was-here"))
    assert not Path("/root/hostile-was-here").exists()


@needs_root_tools("setpriv", "unshare")
def test_sandbox_hides_root_only_places_and_keeps_toolchains(tmp_path: Path) -> None:
    """Unit level: a 0700 folder of root's is invisible, a bound folder is readable, PATH works."""
    from runner.host import sandbox
    secret = tmp_path / "secret"
    secret.mkdir(mode=0o700)
    (secret / "key").write_text("k")
    mine = sandbox.owned_dir(tmp_path / "home", sandbox.BUILD_UID)
    box = sandbox.Sandbox(sandbox.BUILD_UID, home=mine)
    script = f"id -u; cat {secret}/key && echo LEAK; python3 -c 'print(41+1)'; touch {mine}/ok && echo wrote"
    proc = subprocess.run(box.wrap(["sh", "-c", script]), env=box.env({}), capture_output=True, text=True,
                          timeout=60)
    assert proc.stdout.split() == [str(sandbox.BUILD_UID), "42", "wrote"], proc.stdout + proc.stderr
    assert (mine / "ok").exists()


@needs_root_tools("setpriv", "unshare")
def test_a_toolchain_folder_comes_back_without_the_home_around_it(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A tool on PATH inside root's 0700 home runs; a token next to it (~/.cargo/credentials.toml)
    stays hidden."""
    from runner.host import sandbox
    home = tmp_path / "roothome"
    (home / ".cargo" / "bin").mkdir(parents=True)
    home.chmod(0o700)
    (home / ".cargo" / "credentials.toml").write_text("token = 'secret'\n")
    tool = home / ".cargo" / "bin" / "mytool"
    tool.write_text("#!/bin/sh\necho tool-ran\n")
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tool.parent}:/usr/bin:/bin")
    box = sandbox.Sandbox(sandbox.BUILD_UID, home=sandbox.owned_dir(tmp_path / "h", sandbox.BUILD_UID))
    proc = subprocess.run(box.wrap(["sh", "-c", f"mytool; cat {home}/.cargo/credentials.toml || echo hidden"]),
                          env=box.env({}), capture_output=True, text=True, timeout=60)
    assert proc.stdout.split() == ["tool-ran", "hidden"], proc.stdout + proc.stderr
