"""`python -m runner bisect MATRIX --client NAME --cluster C --scenario S [--from V1] [--to V2]`.

Lists the library's stable releases from its registry (runner/build/registries.py, chosen by the
descriptor's language), then lets search.py pick versions; each one is run as a one-cell matrix
(the given matrix's cluster C and scenario S, one client entry: the column with its descriptor's
`version_env` set to the version in its build_env) through the same pipeline a run uses, so the
build is cached by that build_env like any variant's. Every version's run stays under --out
(default results/bisect-<id>/), with the temporary matrices it ran.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from tabulate import tabulate

from runner.bisect.search import Bisection, Outcome, RunOne, bisect, max_runs
from runner.bisect.versions import select_range
from runner.build.registries import Fetch, Registry, RegistryError, fetch_released, registry_for
from runner.config.descriptor import DESCRIPTOR_FILE, Descriptor
from runner.config.matrix import ClientEntry, Matrix, load_matrix
from runner.errors import ExitCode, PrerequisiteError, UsageError
from runner.model import BUILD_LOG
from runner.text import printable

#: A reason longer than this is cut in the table (the evidence has all of it).
REASON_WIDTH = 90


@dataclass(frozen=True)
class Target:
    """The one cell a bisection runs, and what builds its column."""

    matrix_path: Path
    clients_dir: Path
    matrix: Matrix
    entry: ClientEntry
    descriptor: Descriptor
    cluster: str
    scenario: str

    @property
    def version_env(self) -> str:
        assert self.descriptor.version_env
        return self.descriptor.version_env


def resolve_target(args: argparse.Namespace) -> Target:
    """Load the matrix and check the column, cluster and scenario; every bad input is one clear line."""
    matrix_path = Path(args.matrix)
    if not matrix_path.is_file():
        raise UsageError(f"{matrix_path}: no such matrix file", fix="give a matrix such as matrix.quick.yaml")
    clients_dir = Path(args.clients) if getattr(args, "clients", None) else matrix_path.resolve().parent / "clients"
    matrix = load_matrix(matrix_path, clients_dir)
    entries = {c.name: c for c in matrix.clients}
    if args.client not in entries:
        raise UsageError(f"--client {args.client}: no such column in {matrix_path}",
                         fix="use one of: " + ", ".join(entries))
    clusters = [c.name for c in matrix.clusters]
    if args.cluster not in clusters:
        raise UsageError(f"--cluster {args.cluster}: no such cluster in {matrix_path}",
                         fix="use one of: " + ", ".join(clusters))
    scenarios = [name for name, _ in matrix.scenarios.items()]
    if args.scenario not in scenarios:
        raise UsageError(f"--scenario {args.scenario}: not in {matrix_path}", fix="use one of: " + ", ".join(scenarios))
    entry = entries[args.client]
    desc = matrix.descriptors[entry.folder_name]
    if not desc.version_env:
        raise UsageError(
            f"{args.client} cannot be bisected: clients/{entry.folder_name}/{DESCRIPTOR_FILE} has no version_env, "
            f"so its build cannot be asked for another {desc.library} release",
            fix=f"add `version_env: NAME` to clients/{entry.folder_name}/{DESCRIPTOR_FILE} and make its build "
                "(and Dockerfile) install that release when the variable is set, as clients/javascript does")
    if args.scenario not in desc.scenarios:
        raise UsageError(f"--scenario {args.scenario}: {entry.folder_name} implements only "
                         + " and ".join(desc.scenarios), fix="pick a scenario the client implements")
    return Target(matrix_path, clients_dir, matrix, entry, desc, args.cluster, args.scenario)


def released_versions(target: Target, args: argparse.Namespace, fetch: Fetch) -> tuple[Registry, list[str]]:
    """The stable releases in [--from, --to] from the library's own registry."""
    desc = target.descriptor
    registry = registry_for(desc.language)
    if registry is None:
        raise UsageError(f"no registry known for language {desc.language} "
                         f"(clients/{target.entry.folder_name}/{DESCRIPTOR_FILE})",
                         fix="add it to runner/build/registries.py LANGUAGE_REGISTRY")
    try:
        released = fetch(registry, desc.library)
    except RegistryError as exc:
        raise PrerequisiteError(f"cannot list the releases of {desc.library}: {exc}",
                                fix=f"check this machine can reach {registry.title}") from None
    versions = select_range(released, args.first, args.last, python=registry.kind == "pypi",
                            library=desc.library, registry=registry.title)
    return registry, versions


def one_cell_matrix(target: Target, version: str) -> dict[str, Any]:
    """The given matrix cut to one cluster, one scenario and one client entry pinned to `version`."""
    raw = yaml.safe_load(target.matrix_path.read_text())
    entry = dict(next(c for c in raw["clients"] if c.get("name") == target.entry.name))
    entry["folder"] = target.entry.folder_name
    entry["build_env"] = {**target.entry.build_env, target.version_env: version}
    entry["note"] = f"bisect: {target.descriptor.library} {version}"
    raw["clients"] = [entry]
    raw["clusters"] = [c for c in raw["clusters"] if c.get("name") == target.cluster]
    raw["scenarios"] = {target.scenario: raw["scenarios"][target.scenario]}
    return raw


def pipeline_runner(target: Target, out: Path, say: Callable[[str], None]) -> RunOne:
    """Run one version as a one-cell matrix through the pipeline; its grade and evidence from the result."""
    from runner.pipeline import Execution, prepare

    matrices = out / "matrices"

    def run_one(version: str) -> Outcome:
        matrices.mkdir(parents=True, exist_ok=True)
        path = matrices / f"{target.entry.name}-{version}.yaml"
        path.write_text(f"# bisect of {target.matrix_path}: {target.entry.name} at {version}\n"
                        + yaml.safe_dump(one_cell_matrix(target, version), sort_keys=False))
        prepared = prepare(path, [], target.clients_dir)
        ex = Execution(prepared=prepared, out=out, jobs=0)
        say(f"bisect: {target.descriptor.library} {version}: run {ex.run_id} ({ex.run_dir})")
        result = ex.execute()
        (cell,) = result.cells
        evidence = ex.run_dir / "cells" / cell.cell_id
        if BUILD_LOG in cell.evidence:  # the version did not build: no grade
            return Outcome(version, None, cell.reason, str(ex.run_dir / cell.evidence[BUILD_LOG]))
        return Outcome(version, cell.verdict.value, cell.reason, str(evidence))

    return run_one


def _short(text: str, width: int = REASON_WIDTH) -> str:
    text = printable(" ".join(text.split()))
    return text if len(text) <= width else text[: width - 1] + "…"


def render(b: Bisection, fmt: str = "plain") -> str:
    """Tried versions in version order (with the order they ran in), then the verdict line."""
    order = {o.version: i for i, o in enumerate(b.tried, 1)}
    boundary = {o.version for o in b.boundary} if b.boundary else set()
    rows = []
    for o in sorted(b.tried, key=lambda o: b.versions.index(o.version)):
        mark = " ◀" if o.version in boundary else ""
        rows.append([o.version + mark, o.label, order[o.version], _short(o.reason), o.evidence or "-"])
    table = tabulate(rows, headers=["version", "grade", "run", "reason", "evidence"], tablefmt=fmt,
                     disable_numparse=True)
    bound = max_runs(len(b.versions))
    return (f"{table}\n\n{b.runs} cell runs for {len(b.versions)} versions "
            f"(at most ⌈log2 {len(b.versions)}⌉+2 = {bound})\n{b.summary()}\n")


def record(target: Target, registry: Registry, b: Bisection, out: Path) -> dict[str, Any]:
    def o(x: Outcome | None) -> dict[str, Any] | None:
        return None if x is None else {"version": x.version, "grade": x.grade, "reason": x.reason,
                                       "evidence": x.evidence}
    return {
        "matrix": str(target.matrix_path), "client": target.entry.name, "folder": target.entry.folder_name,
        "cluster": target.cluster, "scenario": target.scenario, "library": target.descriptor.library,
        "registry": registry.title, "version_env": target.version_env, "versions": b.versions,
        "tried": [o(x) for x in b.tried], "runs": b.runs, "max_runs": max_runs(len(b.versions)),
        "boundary": [o(x) for x in b.boundary] if b.boundary else None, "refused": o(b.refused),
        "summary": b.summary(), "out": str(out),
    }


def _say(msg: str) -> None:
    sys.stdout.write(printable(msg) + "\n")
    sys.stdout.flush()


def bisect_main(args: argparse.Namespace, fetch: Fetch | None = None,
                runner: Callable[[Target, Path, Callable[[str], None]], RunOne] | None = None) -> int:
    """Resolve, list, search, print. `fetch` and `runner` are seams for tests (no network, no cluster)."""
    target = resolve_target(args)
    registry, versions = released_versions(target, args, fetch or fetch_released)
    from runner.host.netns import new_run_id
    out = Path(args.out) if args.out else Path("results") / f"bisect-{new_run_id()}"
    say = _say
    say(f"bisect {target.entry.name} ({target.descriptor.library}, {registry.title}) on "
        f"{target.cluster} · {target.scenario}: {len(versions)} stable releases {versions[0]} … {versions[-1]}, "
        f"at most {max_runs(len(versions))} cell runs; evidence in {out}")
    if runner is None:
        cluster = next(c for c in target.matrix.clusters if c.name == target.cluster)
        if getattr(cluster, "kind", "embedded") != "kubernetes":
            from runner.host import cleanup, sysdeps
            from runner.host.commands import CommandLog
            sysdeps.require_root("running cells on the embedded cluster")
            sysdeps.ensure_tools(say)
            cleanup.clean(CommandLog(), say=lambda t: say(f"leftover of a crashed run: {t}"))
        runner = pipeline_runner
    out.mkdir(parents=True, exist_ok=True)
    result = bisect(versions, runner(target, out, say))
    rec = record(target, registry, result, out)
    (out / "bisect.json").write_text(json.dumps(rec, indent=2, ensure_ascii=False) + "\n")
    if args.json:
        print(json.dumps(rec, indent=2, ensure_ascii=False))
    else:
        print()
        print(render(result, args.format), end="")
    return int(ExitCode.CELL_ERRORS if result.refused is not None else ExitCode.OK)
