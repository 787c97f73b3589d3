"""Max concurrency: the most cells this machine runs at once with no verdict changing.

Run as root: python bench/max_concurrency.py [MATRIX] [--sample-clients A,B] [--sample-clusters X,Y]
                 [--extra 0,6,all] [--baseline DIR] [--level DIR ...]

A sample of cells (the sample clients × sample clusters × every scenario) is run one at a time, each
in a runner of its own (nothing else starts beside it): the baseline. Then the matrix is run at
rising loads, each a sub-matrix holding the sample clients plus the first N other clients (every
cluster and scenario of theirs: `--extra`), all of its cells at once as a real run does. Each
level's sample cells are compared with the baseline; the answer is the largest level whose sample
agrees cell for cell. `--baseline DIR` reuses a baseline folder this script wrote, `--level DIR`
a run folder already made (e.g. a full run of the same matrix) as one more level.

The sample defaults to clients whose start-up is heavy (JVMs, the JavaScript 1.x client) and the
two clusters whose verdicts a late start could change most (an RST, a silent drop).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# Run by path, the script sees its own folder, not the repository's root: the runner it imports is
# this checkout's, installed or not.
sys.path.insert(0, str(REPO))

from runner.config.matrix import load_matrix  # noqa: E402
from runner.config.plan import plan  # noqa: E402
from runner.host.procs import run_forwarding_interrupt as run_runner  # noqa: E402

SAMPLE_CLIENTS = "client-python,fabric8,javascript-1x"
SAMPLE_CLUSTERS = "azure-slb-quick,azure-slb-no-reset-quick"
Verdicts = dict[str, tuple[str, str]]


def verdicts(results: dict) -> Verdicts:
    """Each cell that ran (SKIPPED left out: it never loaded the machine) by id: (verdict, reason)."""
    return {f"{c['client']}/{c['cluster']}/{c['scenario']}": (c["verdict"], c["reason"]) for c in results["cells"]
            if c["verdict"] != "SKIPPED"}


def extra_clients(all_clients: Sequence[str], sample: Sequence[str], counts: Sequence[str]) -> list[list[str]]:
    """Each level's clients: the sample's, plus the first N others in matrix order (`all`: every one)."""
    others = [c for c in all_clients if c not in sample]
    return [[*sample, *(others if n == "all" else others[:int(n)])] for n in counts]


def compare(baseline: Verdicts, level: Verdicts) -> tuple[list[str], list[str]]:
    """The sample cells whose verdict at this level equals the baseline's, and those that differ
    (missing counts as differing: the level did not judge it)."""
    same = [k for k in sorted(baseline) if level.get(k, ("missing", ""))[0] == baseline[k][0]]
    return same, [k for k in sorted(baseline) if k not in same]


def most_at_once(levels: Sequence[tuple[int, bool]]) -> int | None:
    """The largest number of cells at once whose sample agreed with the baseline, provided every
    smaller level agreed too (a disagreement below it would make the number meaningless)."""
    best = None
    for cells, agrees in sorted(levels):
        if not agrees:
            break
        best = cells
    return best


def _runner(matrix: str, only: Sequence[str], out: Path) -> dict:
    argv = [sys.executable, "-m", "runner", matrix, "--out", str(out), "--no-readme",
            *(f"--only={o}" for o in only)]
    out.mkdir(parents=True, exist_ok=True)
    with (out / "runner.log").open("w") as log:
        run_runner(argv, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    return json.loads((out / "latest" / "results.json").read_text())


def run_baseline(matrix: str, cells: Sequence[tuple[str, str, str]], out: Path) -> Verdicts:
    got: Verdicts = {}
    for i, (client, cluster, scenario) in enumerate(cells):
        t0 = time.monotonic()
        res = _runner(matrix, [f"client={client}", f"cluster={cluster}", f"scenario={scenario}"], out / f"cell-{i}")
        got.update(verdicts(res))
        key = f"{client}/{cluster}/{scenario}"
        print(f"  alone {i + 1}/{len(cells)}: {key} {got.get(key, ('missing',))[0]} "
              f"({time.monotonic() - t0:.0f} s)", flush=True)
    (out / "baseline.json").write_text(json.dumps(got, indent=2, sort_keys=True) + "\n")
    return got


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("matrix", nargs="?", default="matrix.quick.yaml")
    ap.add_argument("--sample-clients", default=SAMPLE_CLIENTS)
    ap.add_argument("--sample-clusters", default=SAMPLE_CLUSTERS)
    ap.add_argument("--extra", default="0,6,all", help="other clients per level, comma-separated (`all`)")
    ap.add_argument("--baseline", help="a baseline folder this script wrote (its baseline.json)")
    ap.add_argument("--level", action="append", default=[], help="a run folder already made, as one more level")
    args = ap.parse_args()
    matrix = load_matrix(Path(args.matrix), REPO / "clients")
    clients = [c.name for c in matrix.clients]
    sample_clients = args.sample_clients.split(",")
    sample_clusters = args.sample_clusters.split(",")
    unknown = sorted({*sample_clients} - {*clients}) + sorted({*sample_clusters} - {c.name for c in matrix.clusters})
    if unknown:
        print(f"{args.matrix}: no client or cluster named {', '.join(unknown)}", file=sys.stderr)
        return 2
    sample = [(c.client, c.cluster, c.scenario) for c in plan(matrix)
              if c.client in sample_clients and c.cluster in sample_clusters]
    out = Path(tempfile.mkdtemp(prefix="wd-concurrency-"))
    print(f"{len(sample)} sample cells; evidence in {out}", flush=True)
    if args.baseline:
        baseline = {k: tuple(v) for k, v in json.loads((Path(args.baseline) / "baseline.json").read_text()).items()}
    else:
        print("baseline: each sample cell alone", flush=True)
        baseline = run_baseline(args.matrix, sample, out / "baseline")
    results: list[tuple[int, bool, str]] = []

    def judge(name: str, level: Verdicts) -> None:
        same, differ = compare(baseline, level)
        results.append((len(level), not differ, name))
        print(f"level {name}: {len(level)} cells at once, sample {len(same)}/{len(baseline)} as alone", flush=True)
        for k in differ:
            print(f"  differs: {k}: alone {baseline[k][0]} ({baseline[k][1]}); "
                  f"at once {level.get(k, ('missing', ''))[0]} ({level.get(k, ('', 'not run'))[1]})", flush=True)

    for n, level_clients in zip(args.extra.split(","), extra_clients(clients, sample_clients, args.extra.split(",")),
                                strict=True):
        judge(f"+{n}", verdicts(_runner(args.matrix, [f"client={c}" for c in level_clients], out / f"level-{n}")))
    for folder in args.level:
        p = Path(folder)
        judge(p.name, verdicts(json.loads((p / "results.json" if p.is_dir() else p).read_text())))
    best = most_at_once([(cells, agrees) for cells, agrees, _ in results])
    print(f"most cells at once with no sample verdict changing: {best if best is not None else 'none'} "
          f"(of {max((c for c, _, _ in results), default=0)} tried)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
