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
    # No hash recorded at build time: not trusted on first use (the caller builds it again), and
    # no hash is recorded for whatever happens to be there.
    assert gobuild.verify_cached(target, log) is False
    assert not gobuild.sha256_path(target).exists()
    gobuild.record_sha256(target, target)                  # what a build does before moving it in place
    assert gobuild.verify_cached(target, log) is True
    assert gobuild.ensure_binary(gobuild.ETCD, log, progress=lambda _: None) == target
    target.write_text("#!/bin/sh\necho pwned\n")
    with pytest.raises(BuildError, match="recorded when it was built") as info:
        gobuild.ensure_binary(gobuild.ETCD, log, progress=lambda _: None)
    assert str(target.parent) in (info.value.fix or "")


def test_the_local_clusters_lock_and_ledger_refuse_planted_symlinks(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from runner.local import cluster as local_cluster
    from runner.local import hoststate

    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    lock = tmp_path / "watchdrop-local.lock"
    lock.symlink_to(victim)
    monkeypatch.setattr(local_cluster, "LOCK_PATH", lock)
    holder = local_cluster.LocalCluster.__new__(local_cluster.LocalCluster)
    with pytest.raises(errors.UnsafePathError, match="symlink"):
        holder._take_lock()
    runs = tmp_path / "runs"
    runs.mkdir()
    monkeypatch.setattr(hoststate, "RUNS_DIR", runs)
    ledger = hoststate.Ledger(run_id="abc123", workdir=str(tmp_path))
    hoststate.Ledger.path_for("abc123").symlink_to(victim)
    with pytest.raises(errors.UnsafePathError, match="symlink"):
        ledger.save()
    assert victim.read_text() == "precious\n"


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


@pytest.mark.parametrize("advice", ["sudo -E", 'PATH=\\"$PATH\\"', 'PATH="$PATH"'])
def test_no_message_suggests_sudo_with_the_users_environment(advice: str) -> None:
    """`sudo -E` would keep the user's HOME (so their ~/.cache) and their whole environment; the
    user's PATH would let root run whatever the user can write first in it."""
    proc = subprocess.run(["grep", "-rnF", advice, "runner", "README.md", "clients/README.md", "docs"], cwd=REPO,
                          capture_output=True, text=True)
    assert proc.stdout == "", proc.stdout
