"""Files root trusts: the cache, cached binaries, lock and claim files (issue 13).

As root the runner executes what the cache holds and writes lock/claim files in shared places;
each test plants what an unprivileged user could plant and checks root refuses it.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from runner import errors
from runner.build import cache, gobuild
from runner.build.clients import build_client
from runner.config.descriptor import load_descriptor
from runner.errors import BuildError
from runner.host import netns
from runner.host.commands import CommandLog

REPO = Path(__file__).resolve().parent.parent
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="the checks apply when the runner is root")


@as_root
def test_a_cache_owned_by_another_user_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    os.chown(theirs, 12345, 12345)
    monkeypatch.setenv("WATCHDROP_CACHE", str(theirs))
    with pytest.raises(errors.UnsafePathError) as info:
        cache.cache_root()
    assert str(theirs) in info.value.message and "uid 12345" in info.value.message
    assert "WATCHDROP_CACHE" in (info.value.fix or "") and "\n" not in info.value.message


@as_root
def test_a_cache_others_can_write_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    monkeypatch.setenv("WATCHDROP_CACHE", str(shared))
    with pytest.raises(errors.UnsafePathError, match="writable by group or others"):
        cache.cache_root()
    # Below a directory another user owns, root's own cache dir is not safe either (it can be renamed away).
    parent = tmp_path / "home"
    (parent / "watchdrop").mkdir(parents=True)
    os.chown(parent, 12345, 12345)
    monkeypatch.setenv("WATCHDROP_CACHE", str(parent / "watchdrop"))
    with pytest.raises(errors.UnsafePathError, match="owned by uid 12345"):
        cache.cache_root()
    monkeypatch.setenv("WATCHDROP_CACHE", str(tmp_path / "ok"))
    assert cache.cache_root() == tmp_path / "ok"


@as_root
def test_a_cached_binary_is_checked_against_its_recorded_sha256(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDROP_CACHE", str(tmp_path / "cache"))
    target = gobuild.ETCD.cached_path()
    target.parent.mkdir(parents=True)
    target.write_text("#!/bin/sh\necho 'etcd Version: test'\n")
    target.chmod(0o755)
    log = CommandLog()
    # Cached before hashes were kept: proven by --version, then its hash is recorded (no rebuild).
    assert gobuild.ensure_binary(gobuild.ETCD, log, progress=lambda _: None) == target
    assert gobuild.sha256_path(target).exists()
    assert any("--version" in line for line in log.lines)
    assert gobuild.ensure_binary(gobuild.ETCD, log, progress=lambda _: None) == target
    target.write_text("#!/bin/sh\necho pwned\n")
    with pytest.raises(BuildError, match="recorded when it was built") as info:
        gobuild.ensure_binary(gobuild.ETCD, log, progress=lambda _: None)
    assert str(target.parent) in (info.value.fix or "")


def test_the_allocation_lock_refuses_a_planted_symlink(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    lock = tmp_path / "watchdrop.lock"
    lock.symlink_to(victim)
    monkeypatch.setattr(netns, "LOCK_PATH", lock)
    with pytest.raises(errors.UnsafePathError, match="symlink"), netns._alloc_lock():
        pass
    assert victim.read_text() == "precious\n"


def test_a_run_claim_refuses_a_planted_symlink(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "abc123").symlink_to(victim)
    monkeypatch.setattr(netns, "RUNS_DIR", runs)
    with pytest.raises(errors.UnsafePathError, match="symlink"):
        netns.Topology("abc123", CommandLog()).claim()
    assert victim.read_text() == "precious\n"


def test_a_client_build_lock_refuses_a_planted_symlink(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDROP_CACHE", str(tmp_path / "cache"))
    src = tmp_path / "toy"
    src.mkdir()
    (src / "client.yaml").write_text("name: toy\nlanguage: shell\nlibrary: none\nversion: '1'\napi_style: none\n"
                                     "requires: [sh]\nbuild: []\nrun: [sh, -c, 'exit 0']\n")
    desc = load_descriptor(src)
    from runner.build.clients import build_key
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    clients = tmp_path / "cache" / "clients"
    clients.mkdir(parents=True)
    (clients / f"toy-{build_key(src, desc, {})}.lock").symlink_to(victim)
    with pytest.raises(errors.UnsafePathError, match="symlink"):
        build_client(src, desc, {}, tmp_path / "b.log")
    assert victim.read_text() == "precious\n"


def test_no_message_suggests_sudo_minus_e() -> None:
    """`sudo -E` would keep the user's HOME (so their ~/.cache) and their whole environment."""
    proc = subprocess.run(["grep", "-rn", "sudo -E", "runner", "README.md", "clients/README.md"], cwd=REPO,
                          capture_output=True, text=True)
    assert proc.stdout == "", proc.stdout
