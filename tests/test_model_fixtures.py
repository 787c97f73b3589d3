"""The results model keeps the bytes: fixtures written by the earlier model load and re-dump identically.

tests/fixtures/results/README.md says where each fixture comes from. A failure here means results.json
(or the report rendered from it) would change for a reader, which the model's move must not do.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from runner.model import RunResult
from runner.report.render import load_results, render_markdown

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures" / "results"
RESULTS = sorted(FIXTURES.glob("*.results.json"))
NAMES = [p.name.removesuffix(".results.json") for p in RESULTS]


def test_there_are_fixtures() -> None:
    assert len(RESULTS) >= 5, f"fixtures missing under {FIXTURES}"


@pytest.mark.parametrize("name", NAMES)
def test_fixture_reloads_to_the_same_bytes(name: str) -> None:
    data = (FIXTURES / f"{name}.results.json").read_bytes()
    run = RunResult.from_json(data.decode("utf-8"))
    assert run.to_json().encode("utf-8") == data
    assert run.to_dict() == json.loads(data)
    # A second round trip from the re-read object, as `watchdrop report` followed by a write would do.
    assert RunResult.from_dict(run.to_dict()).to_json().encode("utf-8") == data


@pytest.mark.parametrize("name", NAMES)
def test_report_md_is_unchanged(name: str) -> None:
    run = load_results(FIXTURES / f"{name}.results.json")
    assert render_markdown(run).encode("utf-8") == (FIXTURES / f"{name}.report.md").read_bytes()


@pytest.mark.parametrize("fmt", ["plain", "github"])
@pytest.mark.parametrize("name", NAMES)
def test_report_command_output_is_unchanged(name: str, fmt: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "runner", "report", str(FIXTURES / f"{name}.results.json"), "--format", fmt],
        cwd=REPO, capture_output=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    assert proc.stdout == (FIXTURES / f"{name}.report-{fmt}.txt").read_bytes()


@pytest.mark.parametrize("name", NAMES)
def test_a_version_1_file_reads_as_version_2(name: str) -> None:
    """Files written before chains (schema 1: no ProfileFacts.path) still load and report: every
    profile of theirs was one box, which is what `path: null` says."""
    current = json.loads((FIXTURES / f"{name}.results.json").read_text(encoding="utf-8"))
    old = json.loads(json.dumps(current))
    old["schema_version"] = 1
    for profile in [*old["profiles"], *(c["profile"] for c in old["cells"] if c.get("profile"))]:
        del profile["path"]
    assert RunResult.from_dict(old).to_dict() == current
