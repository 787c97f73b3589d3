"""`python -m runner versions [MATRIX]`: each pinned library version beside the newest stable release.

A report, not a check: it exits 0 however far behind the pins are, and non-zero only on bad input.
Without a matrix it lists every client folder's pin; with one, the pins its columns build (a variant
that pins another version through its `build_env` and the descriptor's `version_env` gets its own
row). Each (registry, library) is asked once, a few at a time, and a registry that fails only makes
its own rows `unknown (...)`.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tabulate import tabulate

from runner.build.registries import Fetch, Registry, RegistryError, fetch_released, registry_for
from runner.build.releases import Status, compare, newest_stable, release_tuple
from runner.config.descriptor import DESCRIPTOR_FILE, Descriptor, load_descriptor
from runner.errors import UsageError

#: Registry requests in flight at once: enough to overlap their latency, few enough to be polite.
WORKERS = 4


@dataclass(frozen=True)
class Pin:
    """One library version the runner builds: a client folder's, or a variant's own."""

    client: str  # the row's name: the folder, or the first matrix column building this pin
    columns: tuple[str, ...]  # every matrix column that builds it (empty without a matrix)
    folder: str
    language: str
    library: str
    pinned: str


@dataclass(frozen=True)
class Row:
    pin: Pin
    registry: str  # the registry's title, "-" when none is known
    newest: str | None
    status: Status

    def record(self) -> dict[str, Any]:
        """The --json form: one flat record per row."""
        return {
            "client": self.pin.client,
            "columns": list(self.pin.columns),
            "folder": self.pin.folder,
            "language": self.pin.language,
            "registry": self.registry,
            "library": self.pin.library,
            "pinned": self.pin.pinned,
            "newest": self.newest,
            "status": self.status.state,
            "behind": self.status.by,
            "reason": self.status.reason,
        }


def folder_pins(clients_dir: Path) -> list[Pin]:
    """Every client folder's descriptor pin, in name order."""
    folders = sorted(p for p in clients_dir.iterdir() if (p / DESCRIPTOR_FILE).is_file())
    pins = []
    for folder in folders:
        desc = load_descriptor(folder)
        pins.append(Pin(folder.name, (), folder.name, desc.language, desc.library, desc.version))
    return pins


def matrix_pins(matrix_path: Path, clients_dir: Path) -> list[Pin]:
    """The distinct (folder, version) pins a matrix's columns build, in column order."""
    from runner.config.matrix import load_matrix

    matrix = load_matrix(matrix_path, clients_dir)
    descriptors: dict[str, Descriptor] = matrix.descriptors
    columns: dict[tuple[str, str], list[str]] = {}
    for entry in matrix.clients:
        desc = descriptors[entry.folder_name]
        columns.setdefault((entry.folder_name, desc.version_for(entry.build_env)), []).append(entry.name)
    return [
        Pin(names[0], tuple(names), folder, descriptors[folder].language, descriptors[folder].library, version)
        for (folder, version), names in columns.items()
    ]


def check(pins: Sequence[Pin], fetch: Fetch = fetch_released, workers: int = WORKERS) -> list[Row]:
    """Ask each registry once per library (concurrently) and compare every pin with its answer."""
    wanted: dict[tuple[str, str], Registry] = {}
    for pin in pins:
        registry = registry_for(pin.language)
        if registry is not None:
            wanted[(registry.kind, pin.library)] = registry
    answers: dict[tuple[str, str], list[str] | str] = {}
    if wanted:
        with ThreadPoolExecutor(max_workers=max(1, min(workers, len(wanted)))) as pool:
            futures = {key: pool.submit(_ask, fetch, registry, key[1]) for key, registry in wanted.items()}
            answers = {key: future.result() for key, future in futures.items()}
    return [_row(pin, answers) for pin in pins]


def _ask(fetch: Fetch, registry: Registry, library: str) -> list[str] | str:
    """The versions, or why there are none: one registry's failure must not end the others' report."""
    try:
        return fetch(registry, library)
    except RegistryError as exc:
        return str(exc)
    except Exception as exc:  # a parser or transport bug: shown in its own row, not a traceback for all
        return f"{registry.title}: {type(exc).__name__}: {exc}"


def _row(pin: Pin, answers: dict[tuple[str, str], list[str] | str]) -> Row:
    registry = registry_for(pin.language)
    if registry is None:
        return Row(pin, "-", None, Status("unknown", reason=f"no registry known for language {pin.language}"))
    answer = answers[(registry.kind, pin.library)]
    if isinstance(answer, str):
        return Row(pin, registry.title, None, Status("unknown", reason=answer))
    python = registry.kind == "pypi"
    major = None
    if registry.kind == "go":
        # A Go module path fixes its major (see newest_stable); compare within the pin's line.
        numbers = release_tuple(pin.pinned, python=False)
        major = numbers[0] if numbers else None
    newest = newest_stable(answer, python=python, major=major)
    if newest is None:
        line = f" v{major}" if major is not None else ""
        return Row(pin, registry.title, None,
                   Status("unknown", reason=f"no stable{line} release of {pin.library} on {registry.title}"))
    return Row(pin, registry.title, newest, compare(pin.pinned, newest, python=python))


def render(rows: Sequence[Row], fmt: str) -> str:
    """The table, and one line counting each state."""
    table = tabulate(
        [[r.pin.client, r.registry, r.pin.library, r.pin.pinned, r.newest or "-", r.status.text] for r in rows],
        headers=["client", "registry", "library", "pinned", "newest stable", "status"],
        tablefmt=fmt,
        disable_numparse=True,
    )
    counts = {state: sum(r.status.state == state for r in rows) for state in ("current", "behind", "ahead?", "unknown")}
    summary = ", ".join(f"{n} {state}" for state, n in counts.items() if n)
    return f"{table}\n\n{len(rows)} pins: {summary}\n"


def resolve_clients_dir(args: argparse.Namespace) -> Path:
    """--clients, else clients/ next to the matrix (as `run` does), else ./clients."""
    if getattr(args, "clients", None):
        clients = Path(args.clients)
    elif args.matrix:
        clients = Path(args.matrix).resolve().parent / "clients"
    else:
        clients = Path("clients")
    if not clients.is_dir():
        raise UsageError(f"{clients}: no such clients folder",
                         fix="run from the repository root, or pass --clients DIR")
    return clients


def versions_main(args: argparse.Namespace, fetch: Fetch | None = None) -> int:
    """Print the pins beside the registries' newest stable releases; 0 unless the input is bad.

    `fetch` (default: the real registries, looked up at call time) lets tests answer without a network."""
    if args.matrix:
        matrix = Path(args.matrix)
        if not matrix.exists():
            raise UsageError(f"{matrix}: no such matrix file",
                             fix="give a matrix file such as matrix.yaml, or no argument for every client folder")
        pins = matrix_pins(matrix, resolve_clients_dir(args))
    else:
        pins = folder_pins(resolve_clients_dir(args))
    rows = check(pins, fetch or fetch_released)
    if args.json:
        print(json.dumps([r.record() for r in rows], indent=2))
    else:
        print(render(rows, args.format), end="")
    return 0
