"""Putting the host back must never take what another program uses (runner/local/hoststate.py)."""

from __future__ import annotations

import socket
from pathlib import Path

from runner.host.commands import CommandLog
from runner.local.hoststate import remove_created


def test_remove_created_keeps_a_socket_another_program_has_bound(tmp_path: Path) -> None:
    root = tmp_path / "containerd"
    (root / "s" / "x").mkdir(parents=True)
    (root / "s" / "x" / "file").write_text("ours")
    (root / "s" / "dead.sock").write_text("")  # left by a killed shim of ours: nobody has it bound
    live = socket.socket(socket.AF_UNIX)
    try:
        live.bind(str(root / "s" / "live.sock"))
        live.listen()
        remove_created(str(root), CommandLog())
        assert sorted(p.name for p in root.rglob("*")) == ["live.sock", "s"]
    finally:
        live.close()
    remove_created(str(root), CommandLog())
    assert not root.exists()
