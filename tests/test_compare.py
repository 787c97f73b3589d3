"""`report --against` (runner/report/compare.py): two runs paired cell by cell by client, scenario
and LB profile, whatever the clusters are called, with every difference given both reasons."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from runner.model import RunResult, Verdict
from runner.report.compare import differences, render_compare
from runner.report.render import load_results

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "tests" / "fixtures" / "results" / "sample.results.json"


def _local_copy(run: RunResult) -> RunResult:
    """The same cells as if run on a local cluster named after its profile, one verdict changed."""
    other = run.model_copy(deep=True)
    other.run_id = "local1"
    for c in other.cells:
        c.cluster = f"local-{c.cluster}"
    flipped = next(c for c in other.cells if c.client == "client-python" and c.cluster == "local-azure-slb")
    flipped.verdict, flipped.reason = Verdict.RECOVERED, "the LB reset it; re-watched"
    return other


def test_cells_pair_by_profile_not_cluster_name_and_differences_carry_both_reasons() -> None:
    a = load_results(SAMPLE)
    b = _local_copy(a)
    diff = differences(a, b)
    assert [(x.client, x.verdict, y.verdict) for x, y in diff] == [
        ("client-python", Verdict.FAIL_SILENT, Verdict.RECOVERED)]
    text = render_compare(a, b, "plain")
    assert "FAIL-SILENT ≠ RECOVERED¹" in text
    original = next(c for c in a.cells if c.client == "client-python" and c.cluster == "azure-slb")
    assert original.reason in text and "the LB reset it; re-watched" in text
    header = next(line for line in text.splitlines() if line.startswith("client "))
    assert header.split()[1:] == ["azure-slb-quick", "gcp"]  # columns are profiles (or clusters without one)
    assert f"{len(a.cells) - 1} of {len(a.cells)} paired cells agree; differences: 1." in text


def test_runs_with_nothing_in_common_say_so() -> None:
    a = load_results(SAMPLE)
    b = a.model_copy(deep=True)
    for c in b.cells:
        c.scenario = "idle-request"
    assert "nothing to compare" in render_compare(a, b, "github")


def test_the_cli_prints_the_comparison(tmp_path: Path) -> None:
    other = tmp_path / "results.json"
    other.write_text(_local_copy(load_results(SAMPLE)).to_json())
    proc = subprocess.run([sys.executable, "-m", "runner", "report", str(SAMPLE), "--against", str(other),
                           "--format", "github"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "B: run local1" in proc.stdout and "FAIL-SILENT ≠ RECOVERED" in proc.stdout


def test_one_profile_behind_two_fronts_is_two_columns() -> None:
    """A cell behind an `http` front never pairs with one behind a `tcp` front of the same profile; an
    old run's `tcp-proxy` override pairs with today's `tcp`."""
    a = load_results(SAMPLE)
    b = a.model_copy(deep=True)
    for c in b.cells:
        if c.profile is not None and c.profile.name == "gcp":
            c.profile = c.profile.model_copy(update={"front": "http", "overrides": {"front": "http"}})
    header = next(line for line in render_compare(a, b, "plain").splitlines() if line.startswith("client "))
    assert header.split()[1:] == ["azure-slb-quick"]  # nothing of B's gcp cells pairs with A's
    for run, front in ((a, "tcp-proxy"), (b, "tcp")):
        for c in run.cells:
            if c.profile is not None and c.profile.name == "gcp":
                c.profile = c.profile.model_copy(update={"front": front, "overrides": {"front": front}})
    header = next(line for line in render_compare(a, b, "plain").splitlines() if line.startswith("client "))
    assert "gcp [front=tcp]" in header
