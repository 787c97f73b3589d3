"""`python -m runner bisect`: the search with a fake cell runner (boundary, run-count bound, equal
ends, refusal), the release range, the one-cell matrix each version runs, and the command's bad
inputs; no network and no cluster except in the slow real test at the end."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import pytest

from runner.bisect import cli as bisect_cli
from runner.bisect.cli import Target, bisect_main, one_cell_matrix, resolve_target
from runner.bisect.search import Outcome, bisect, max_runs
from runner.bisect.versions import select_range, stable_releases
from runner.build.registries import Registry, RegistryError
from runner.cli import build_parser, main
from runner.errors import UsageError

REPO = Path(__file__).resolve().parent.parent
QUICK = REPO / "matrix.quick.yaml"

#: What npm served for @kubernetes/client-node when this was written (a pre-release and 0.x added).
NPM = ["0.22.3", "1.0.0-rc1", "1.0.0", "1.1.0", "1.1.2", "1.1.3", "1.2.0", "1.3.0", "1.4.0", "2.0.0", "2.0.1",
       "2.1.0-rc.1"]
PYPI_KOPF = ["1.44.6", "1.45.0", "1.45.1", "1.45.2", "1.46.0rc1", "1.45.2.post1"]


def fake_cell(grades: dict[str, str | None], ran: list[str] | None = None):
    """A run-one-version callable answering from a table; None means the version did not build."""
    def run_one(version: str) -> Outcome:
        if ran is not None:
            ran.append(version)
        grade = grades[version]
        reason = "build failed: npm install exited 1" if grade is None else f"{grade} at {version}"
        return Outcome(version, grade, reason, f"results/x/{version}/cells/c")
    return run_one


# --- the search --------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [2, 3, 5, 8, 9, 16, 17, 33])
def test_every_boundary_is_found_within_log2_n_plus_2_runs(n: int) -> None:
    versions = [f"1.{i}.0" for i in range(n)]
    for change in range(1, n):
        grades = {v: ("FAIL-SILENT" if i < change else "PASS") for i, v in enumerate(versions)}
        result = bisect(versions, fake_cell(grades))
        assert result.boundary is not None
        before, after = result.boundary
        assert (before.version, after.version) == (versions[change - 1], versions[change])
        assert result.runs <= max_runs(n), (n, change, result.runs)
        assert [o.version for o in result.tried][:2] == [versions[0], versions[-1]]  # both ends first
        assert len({o.version for o in result.tried}) == result.runs  # no version run twice
    assert result.summary() == f"boundary: {versions[-2]} FAIL-SILENT → {versions[-1]} PASS"


def test_max_runs_is_the_issues_bound() -> None:
    assert [max_runs(n) for n in (2, 3, 4, 5, 8, 9, 20)] == [3, 4, 4, 5, 5, 6, 7]


def test_equal_ends_mean_no_boundary_after_two_runs() -> None:
    versions = ["1.0.0", "1.1.0", "1.2.0", "1.3.0"]
    ran: list[str] = []
    grades = {"1.0.0": "PASS", "1.1.0": "FAIL-SILENT", "1.2.0": "PASS", "1.3.0": "PASS"}
    result = bisect(versions, fake_cell(grades, ran))
    assert ran == ["1.0.0", "1.3.0"] and result.boundary is None and result.equal_ends
    assert result.summary() == "no boundary in range: 1.0.0 and 1.3.0 are both PASS"


def test_an_error_cell_in_the_middle_stops_the_search_by_name() -> None:
    versions = ["1.0.0", "1.1.0", "1.2.0", "1.3.0", "1.4.0"]
    ran: list[str] = []
    grades = {"1.0.0": "FAIL-SILENT", "1.1.0": "FAIL-SILENT", "1.2.0": "ERROR", "1.3.0": "PASS", "1.4.0": "PASS"}
    result = bisect(versions, fake_cell(grades, ran))
    assert ran == ["1.0.0", "1.4.0", "1.2.0"]
    assert result.boundary is None and result.refused is not None and result.refused.version == "1.2.0"
    assert result.summary().startswith("refused: 1.2.0 is ERROR: ERROR at 1.2.0 (evidence: results/x/1.2.0/cells/c)")


@pytest.mark.parametrize("broken", ["1.0.0", "1.4.0"])
def test_a_version_that_does_not_build_is_refused_at_either_end(broken: str) -> None:
    versions = ["1.0.0", "1.1.0", "1.2.0", "1.3.0", "1.4.0"]
    ran: list[str] = []
    grades: dict[str, str | None] = {v: "PASS" for v in versions}
    grades[broken] = None
    result = bisect(versions, fake_cell(grades, ran))
    assert ran == (["1.0.0"] if broken == "1.0.0" else ["1.0.0", "1.4.0"])  # nothing after the refusal
    assert result.refused is not None and result.refused.version == broken
    assert result.summary().startswith(f"refused: {broken} did not build: build failed")


def test_skipped_is_refused_too() -> None:
    result = bisect(["1.0.0", "2.0.0"], fake_cell({"1.0.0": "SKIPPED", "2.0.0": "PASS"}))
    assert result.refused is not None and result.refused.version == "1.0.0" and result.runs == 1


def test_a_third_grade_between_the_ends_is_shown_as_it_is() -> None:
    versions = ["1.0.0", "1.1.0", "1.2.0"]
    grades = {"1.0.0": "FAIL-SILENT", "1.1.0": "RECOVERED", "1.2.0": "PASS"}
    result = bisect(versions, fake_cell(grades))
    assert result.summary() == "boundary: 1.0.0 FAIL-SILENT → 1.1.0 RECOVERED"


def test_fewer_than_two_versions_is_a_bug_of_the_caller() -> None:
    with pytest.raises(ValueError):
        bisect(["1.0.0"], fake_cell({"1.0.0": "PASS"}))


# --- the release range --------------------------------------------------------------------------


def test_stable_releases_in_release_order_without_pre_releases() -> None:
    assert stable_releases(["1.10.0", "1.9.0", "1.9.0-rc.1", "2.0.0", "v3"], python=False) == ["1.9.0", "1.10.0",
                                                                                                 "2.0.0"]
    assert stable_releases(PYPI_KOPF, python=True) == ["1.44.6", "1.45.0", "1.45.1", "1.45.2"]


def test_the_range_is_inclusive_and_defaults_to_every_stable_release() -> None:
    assert select_range(NPM, "1.0.0", "1.2.0", python=False) == ["1.0.0", "1.1.0", "1.1.2", "1.1.3", "1.2.0"]
    assert select_range(NPM, None, None, python=False)[0::9] == ["0.22.3", "2.0.1"]
    assert select_range(NPM, "2.0.0", None, python=False) == ["2.0.0", "2.0.1"]


@pytest.mark.parametrize("first,last,message", [
    ("2.0.1", "1.0.0", "--from 2.0.1 comes after --to 1.0.0"),
    ("1.1.1", "2.0.1", "--from 1.1.1: is not a release of"),
    ("1.0.0", "2.1.0-rc.1", "--to 2.1.0-rc.1: is not a stable release (pre-releases are not bisected)"),
    ("1.2.0", "1.2.0", "--from and --to are both 1.2.0"),
])
def test_bad_ranges_are_refused(first: str, last: str, message: str) -> None:
    with pytest.raises(UsageError) as info:
        select_range(NPM, first, last, python=False, library="@kubernetes/client-node", registry="npm")
    assert info.value.message.startswith(message)


# --- one version's run: the one-cell matrix --------------------------------------------------------


def args_for(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["bisect", *argv])


def js_target() -> Target:
    return resolve_target(args_for(str(QUICK), "--client", "javascript-1x", "--cluster", "azure-slb-no-reset-quick",
                                   "--scenario", "watch"))


def test_each_version_runs_as_a_one_cell_matrix_pinning_that_version(tmp_path: Path) -> None:
    import yaml

    from runner.pipeline import prepare

    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(one_cell_matrix(js_target(), "1.2.0"), sort_keys=False))
    prepared = prepare(path, [], REPO / "clients")
    (cell,) = prepared.cells
    assert (cell.client, cell.folder, cell.cluster, cell.scenario) == (
        "javascript-1x", "javascript", "azure-slb-no-reset-quick", "watch")
    assert dict(cell.build_env) == {"CLIENT_NODE_VERSION": "1.2.0"}  # the variant's own pin replaced
    assert prepared.descriptors["javascript"].version_for(cell.build_env) == "1.2.0"


# --- the command ------------------------------------------------------------------------------


def fake_fetch(registry: Registry, library: str) -> list[str]:
    return {"npm": NPM, "pypi": PYPI_KOPF}[registry.kind]


def run_cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *argv: str) -> tuple[int, str, str]:
    monkeypatch.setattr(bisect_cli, "fetch_released", fake_fetch)
    rc = main(["bisect", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


CELL = ["--cluster", "azure-slb-no-reset-quick", "--scenario", "watch"]


@pytest.mark.parametrize("argv,message", [
    (["--client", "nope", *CELL], "--client nope: no such column in"),
    (["--client", "javascript", "--cluster", "gcp", "--scenario", "watch"], "--cluster gcp: no such cluster"),
    (["--client", "client-python", *CELL],
     "client-python cannot be bisected: clients/client-python/client.yaml has no version_env"),
    (["--client", "kopf", "--cluster", "direct", "--scenario", "idle-request"],
     "--scenario idle-request: kopf implements only watch"),
    (["--client", "javascript", *CELL, "--from", "2.0.1", "--to", "1.0.0"], "--from 2.0.1 comes after --to 1.0.0"),
    (["--client", "javascript", *CELL, "--from", "1.1.1"], "--from 1.1.1: is not a release of @kubernetes/client-node"),
    (["--client", "javascript", *CELL, "--to", "9.9.9"], "--to 9.9.9: is not a release"),
])
def test_bad_input_is_one_clear_line_and_exit_4(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
                                                argv: list[str], message: str) -> None:
    rc, _, err = run_cli(capsys, monkeypatch, str(QUICK), *argv)
    assert rc == 4, err
    assert err.startswith(f"watchdrop: error: {message}") and "Traceback" not in err
    assert "\n  fix: " in err


def test_no_version_env_names_the_fix(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    _, _, err = run_cli(capsys, monkeypatch, str(QUICK), "--client", "client-python-keepalive", *CELL)
    assert "add `version_env: NAME` to clients/client-python/client.yaml" in err


def test_an_unreachable_registry_is_a_clear_error(capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    def down(registry: Registry, library: str) -> list[str]:
        raise RegistryError("npm did not answer within 10 s")
    monkeypatch.setattr(bisect_cli, "fetch_released", down)
    rc = main(["bisect", str(QUICK), "--client", "javascript", *CELL])
    err = capsys.readouterr().err
    assert rc == 3 and "cannot list the releases of @kubernetes/client-node: npm did not answer" in err


def fake_runner(grades: dict[str, str | None], ran: list[str]):
    def factory(target: Target, out: Path, say) -> object:
        assert target.version_env == "CLIENT_NODE_VERSION" and target.cluster == "azure-slb-no-reset-quick"
        return fake_cell(grades, ran)
    return factory


def test_a_small_range_end_to_end_with_a_fake_cell(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """1.0.0 … 2.0.1 (9 releases): the public record's 1.2.0 fix is found in at most 6 runs."""
    grades: dict[str, str | None] = {v: ("FAIL-SILENT" if v < "1.2.0" else "PASS") for v in NPM}
    ran: list[str] = []
    args = args_for(str(QUICK), "--client", "javascript", *CELL, "--from", "1.0.0", "--to", "2.0.1",
                    "--out", str(tmp_path / "out"))
    rc = bisect_main(args, fetch=fake_fetch, runner=fake_runner(grades, ran))
    out = capsys.readouterr().out
    assert rc == 0
    assert ran[:2] == ["1.0.0", "2.0.1"] and len(ran) <= 6
    assert out.rstrip().endswith("boundary: 1.1.3 FAIL-SILENT → 1.2.0 PASS")
    assert f"{len(ran)} cell runs for 9 versions (at most ⌈log2 9⌉+2 = 6)" in out
    rows = [line for line in out.splitlines() if line.startswith(("1.", "2."))]
    assert [r.split()[0] for r in rows] == sorted(ran, key=NPM.index)  # version order, each tried once
    assert "1.2.0 ◀" in out and "results/x/1.2.0/cells/c" in out
    record = json.loads((tmp_path / "out" / "bisect.json").read_text())
    assert [b["version"] for b in record["boundary"]] == ["1.1.3", "1.2.0"]
    assert record["runs"] == len(ran) and record["max_runs"] == 6 and record["refused"] is None


def test_a_refusal_exits_1_and_says_which_version(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    grades: dict[str, str | None] = {"1.0.0": None, "2.0.1": "PASS"}
    args = args_for(str(QUICK), "--client", "javascript", *CELL, "--from", "1.0.0", "--to", "2.0.1",
                    "--out", str(tmp_path / "out"), "--json")
    rc = bisect_main(args, fetch=fake_fetch, runner=fake_runner(grades, []))
    record = json.loads(capsys.readouterr().out.split("\n", 1)[1])  # after the first progress line
    assert rc == 1 and record["refused"]["version"] == "1.0.0" and record["boundary"] is None
    assert record["summary"].startswith("refused: 1.0.0 did not build")


# --- the real thing (root, a cluster, minutes): not part of the fast suite ------------------------


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (embedded cluster)")
def test_real_javascript_boundary_on_a_two_release_range(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """1.1.3 (no TCP keepalive) FAIL-SILENT → 1.2.0 (keepalive back) PASS behind the silent drop: 2 cells."""
    args = args_for(str(QUICK), "--client", "javascript", *CELL, "--from", "1.1.3", "--to", "1.2.0",
                    "--out", str(tmp_path / "out"))
    assert bisect_main(args) == 0
    assert capsys.readouterr().out.rstrip().endswith("boundary: 1.1.3 FAIL-SILENT → 1.2.0 PASS")
