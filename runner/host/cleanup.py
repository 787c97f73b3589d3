"""Finding and removing what a crashed (SIGKILLed) run left behind: `python -m runner clean`.

Only resources carrying the project's prefix are touched: `wd-<runid>-*` namespaces (and the
processes inside them, killed by pid), `wd<runid>h` host links, the project's 198.18 routes
(`proto 211`) outside live runs' blocks, and `watchdrop-<runid>-*` temp directories. A run whose
runner process is still alive is left alone. A local cluster's run also left a ledger
(/run/watchdrop/local-<runid>.json, runner/local/hoststate.py): its host changes are undone first
(daemons, pods, mounts, cgroups, sysctls, tables, the bridge), before its directory is removed.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from functools import partial
from pathlib import Path

from runner.host.commands import CommandLog
from runner.host.netns import (
    PREFIX,
    RANGE,
    ROUTE_PROTO,
    RUNS_DIR,
    _alloc_lock,
    drop_guard_if_unused,
    kill_netns_pids,
    list_project_netns,
    live_run_blocks,
    root_routes_in_range,
)
from runner.host.procs import pid_alive

_NS = re.compile(rf"^{PREFIX}([0-9a-f]{{6}})-")
_TMP = re.compile(r"^watchdrop-([0-9a-f]{6})-")


def _runner_alive(run_id: str) -> bool:
    try:
        pid = int((RUNS_DIR / run_id).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return False
    return pid != os.getpid() and pid_alive(pid)


def find_leftovers() -> dict[str, list[str]]:
    """run id -> its leftover resources (namespaces, temp dirs, run file), for dead runs only."""
    found: dict[str, list[str]] = {}
    if RUNS_DIR.exists():
        # First, so that the host is put back before the run's directory (still mounted) goes.
        for f in sorted(RUNS_DIR.glob("local-*.json")):
            m = re.fullmatch(r"local-([0-9a-f]{6})\.json", f.name)
            if m:
                found.setdefault(m.group(1), []).append(f"local {f}")
    for ns in list_project_netns():
        m = _NS.match(ns)
        if m:
            found.setdefault(m.group(1), []).append(f"netns {ns}")
    tmp = Path(tempfile.gettempdir())
    for d in tmp.glob("watchdrop-*"):
        m = _TMP.match(d.name)
        if m and d.is_dir():
            found.setdefault(m.group(1), []).append(f"dir {d}")
    if RUNS_DIR.exists():
        for f in RUNS_DIR.iterdir():
            if re.fullmatch(r"[0-9a-f]{6}", f.name):
                found.setdefault(f.name, []).append(f"runfile {f}")
    return {rid: items for rid, items in found.items() if not _runner_alive(rid)}


def clean(log: CommandLog, say=print) -> int:  # type: ignore[no-untyped-def]
    """Remove every dead run's leftovers; returns how many things were removed."""
    removed = 0
    for rid, items in sorted(find_leftovers().items()):
        for item in items:
            kind, _, name = item.partition(" ")
            say(f"removing {item} (run {rid})")
            if kind == "local":
                from runner.local.hoststate import Ledger, undo

                ledger = Ledger.load(Path(name))
                for problem in undo(ledger, log):
                    say(f"  could not put back: {problem}")
                ledger.forget()
            elif kind == "netns":
                kill_netns_pids(name, log, grace=3)
                log.run(["ip", "netns", "delete", name], check=False)
            elif kind == "dir":
                shutil.rmtree(name, ignore_errors=True)
            elif kind == "runfile":
                Path(name).unlink(missing_ok=True)
            removed += 1
        host = f"wd{rid}h"
        if log.run(["ip", "link", "show", host], check=False).returncode == 0:
            say(f"removing link {host} (run {rid})")
            log.run(["ip", "link", "delete", host], check=False)
            removed += 1
    removed += remove_stale_routes(log, say)
    return removed


def remove_stale_routes(log: CommandLog, say=print) -> int:  # type: ignore[no-untyped-def]
    """Remove the project's routes (proto ROUTE_PROTO) that lie in no live run's block, then the
    guard if nothing needs it. Anyone else's route, inside the range or over all of it, stays."""
    removed = 0
    with _alloc_lock():
        live = live_run_blocks()
        for r in root_routes_in_range(log):
            if not r.ours or r.net == RANGE or any(r.net.subnet_of(b) for b in live):
                continue
            say(f"removing route {r.net}")
            log.run(["ip", "route", "del", str(r.net), "proto", ROUTE_PROTO], check=False)
            removed += 1
        drop_guard_if_unused(log)
    return removed


def clean_kubernetes(matrix_path: Path, say=print) -> int:  # type: ignore[no-untyped-def]
    """Delete the namespaces crashed runs from this host left on the matrix's kubernetes clusters."""
    from kubernetes import client

    from runner.config.matrix import KubernetesCluster, load_matrix
    from runner.kube import leftovers as kube_leftovers
    from runner.kube.api import REQUEST_TIMEOUT, api_error, connect, delete_command

    matrix = load_matrix(matrix_path, matrix_path.resolve().parent / "clients")
    removed = 0
    for cluster in matrix.clusters:
        if not isinstance(cluster, KubernetesCluster):
            continue
        access = connect(cluster)
        api = access.new_api()
        try:
            removed += len(kube_leftovers.remove(
                client.CoreV1Api(api), own_run_id="", timeout=REQUEST_TIMEOUT,
                say=lambda t, c=cluster.name: say(f"{c}: {t}"),  # type: ignore[misc]
                delete_hint=partial(delete_command, access)))
        except Exception as exc:
            say(f"{cluster.name}: could not look for leftovers: {api_error(exc)}")
        finally:
            api.close()
    return removed


def main(matrix_path: Path | None = None) -> int:
    """`clean`: this machine's leftovers (as root), and with a matrix its kubernetes clusters' too."""
    n = 0
    if os.geteuid() == 0:
        n += clean(CommandLog())
    elif matrix_path is None:
        from runner.host import sysdeps
        sysdeps.require_root("clean")
    else:
        print("clean: not root, so this machine's namespaces and processes are not looked at")
    if matrix_path is not None:
        n += clean_kubernetes(matrix_path)
    print(f"clean: removed {n} leftover(s)" if n else "clean: nothing to remove")
    return 0
