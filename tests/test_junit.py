"""junit.xml: one test case per cell, valid against docs/junit.xsd, verdicts mapped as CI reads them."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import jsonschema
import pytest
import xmlschema

from runner.model import CellResult, LbSummary, ProfileFacts, RoundResult, RunResult, Timings, Verdict, WatcherFacts
from runner.report.junit import render_junit, write_junit

REPO = Path(__file__).resolve().parent.parent
XSD = REPO / "docs" / "junit.xsd"
RESULTS_SCHEMA = REPO / "docs" / "results-schema.json"


def validate_results_json(text: str) -> None:
    """Every results.json the report tests render from must follow docs/results-schema.json."""
    jsonschema.validate(json.loads(text), json.loads(RESULTS_SCHEMA.read_text(encoding="utf-8")))


def _cell(client: str, cluster: str, verdict: Verdict, reason: str, *, ok: bool = True, **kw: object) -> CellResult:
    base = 1_800_000_000.0
    rounds = [RoundResult(index=1, scenario="watch", update_at=base + 60, expected="round-1",
                          seen_at=base + 60.01 if ok else None, deadline=base + 70, ok=ok, idle_before=59.0,
                          note="seen after 0.0 s" if ok else "no event within 10 s")]
    fields: dict[str, object] = {
        "client": client, "folder": client, "library": "lib", "library_version": "1.0", "api_style": "watch",
        "variant_env": {}, "cluster": cluster,
        "profile": ProfileFacts(name=cluster, mode="silent-drop", idle_timeout=45.0, front="tcp-proxy"),
        "scenario": "watch", "timings": Timings(interval=60.0, detection_timeout=10.0, rounds=1),
        "verdict": verdict, "reason": reason, "rounds": rounds,
        "watcher": WatcherFacts(started=True, lines=3, errors=0, reconnects=0, watch_opened=1, stderr_errors=0,
                                exit_code=0),
        "lb": LbSummary(expired=1), "started": base, "finished": base + 75.5,
    }
    fields.update(kw)
    return CellResult(**fields)  # type: ignore[arg-type]


def synthetic_run() -> RunResult:
    """A run with every verdict and hostile text, built from the model (no evidence files)."""
    cells = [
        _cell("client-a", "lb-1", Verdict.PASS, "1/1 rounds seen"),
        _cell("client-a", "lb-2", Verdict.RECOVERED, "1/1 rounds seen, 1 RST received"),
        _cell("client-b", "lb-1", Verdict.FAIL_SILENT, "no event in time for 1/1 rounds, flow idle 60 s > 45 s",
              ok=False),
        _cell("client-b", "lb-2", Verdict.FAIL_LOUD, 'missed round; error "<b>boom</b>" & more', ok=False),
        _cell("client-c", "lb-1", Verdict.ERROR, "watcher crashed: exit 2",
              errors=["traceback line with a NUL \x00 and ESC \x1b[31m colour", "<script>alert(1)</script>"]),
        _cell("client-c", "lb-2", Verdict.SKIPPED, "needs dotnet, not installed", rounds=[], watcher=None, lb=None,
              started=None, finished=None),
        _cell("client-d", "lb-1", Verdict.APP_RECOVERED,
              "1/1 rounds seen, re-watched 1× after an error the library raised (1 error, first: 'reset'), "
              "1 RST received from the LB (its record)",
              watcher=WatcherFacts(started=True, lines=5, errors=1, reconnects=1, watch_opened=2, stderr_errors=0,
                                   exit_code=0, first_error="reset"),
              lb=LbSummary(expired=1, rst_to_client=1, rst_to_server=1)),
    ]
    return RunResult(run_id="abc123", started=1_800_000_000.0, finished=1_800_000_200.0, matrix="matrix.quick.yaml",
                     machine={"cpus": "2"}, profiles=[c.profile for c in cells[:2] if c.profile is not None],
                     cells=cells)


@pytest.fixture(scope="module")
def schema() -> xmlschema.XMLSchema:
    return xmlschema.XMLSchema(str(XSD))


def test_synthetic_results_follow_the_results_schema() -> None:
    validate_results_json(synthetic_run().to_json())


def test_every_verdict_maps_to_its_junit_element(schema, tmp_path) -> None:
    run = synthetic_run()
    path = write_junit(run, tmp_path)
    schema.validate(str(path))
    root = ET.parse(path).getroot()
    suite = root.find("testsuite")
    assert suite is not None
    counts = [suite.get(k) for k in ("tests", "failures", "errors", "skipped")]
    assert counts == ["7", "2", "1", "1"]
    cases = {(c.get("classname"), c.get("name")): c for c in suite.iter("testcase")}
    assert len(cases) == len(run.cells)
    for cell in run.cells:
        case = cases[(cell.client, f"{cell.cluster}/{cell.scenario}")]
        kids = [k.tag for k in case if k.tag != "system-out"]
        expected = {Verdict.PASS: [], Verdict.RECOVERED: [], Verdict.APP_RECOVERED: [],
                    Verdict.FAIL_SILENT: ["failure"], Verdict.FAIL_LOUD: ["failure"], Verdict.ERROR: ["error"],
                    Verdict.SKIPPED: ["skipped"]}
        assert set(expected) == set(Verdict)
        assert kids == expected[cell.verdict], cell.cell_id
        if kids:
            el = case.find(kids[0])
            assert el is not None and el.get("message") == cell.reason and el.get("type") == cell.verdict.value
    app = cases[("client-d", "lb-1/watch")].find("system-out")
    assert app is not None and f"note: {Verdict.APP_RECOVERED.legend}" in (app.text or "")
    silent = cases[("client-b", "lb-1/watch")].find("failure")
    assert silent is not None and "round 1: expected 'round-1': NOT seen by the deadline" in (silent.text or "")
    error = cases[("client-c", "lb-1/watch")].find("error")
    assert error is not None and "\ufffd" in (error.text or "") and "<script>" in (error.text or "")


def test_output_is_deterministic(tmp_path) -> None:
    run = synthetic_run()
    assert render_junit(run) == render_junit(RunResult.from_json(run.to_json()))


def test_schema_is_not_vacuous(schema) -> None:
    good = render_junit(synthetic_run())
    assert schema.is_valid(good)
    two_outcomes = good.replace('<skipped message="needs dotnet, not installed" type="SKIPPED" />',
                                '<skipped message="x" type="SKIPPED" /><failure message="y" />')
    assert two_outcomes != good and not schema.is_valid(two_outcomes)
    assert 'tests="7"' in good and not schema.is_valid(good.replace('tests="7"', 'tests="six"', 1))
    no_name = good.replace(' name="lb-1/watch"', "", 1)
    assert no_name != good and not schema.is_valid(no_name)


@pytest.mark.slow
def test_recorded_run_junit_is_valid(schema, tmp_path) -> None:
    from runner.report.render import load_results
    from tests.test_timeline import recorded_run

    run_dir = recorded_run()
    validate_results_json((run_dir / "results.json").read_text(encoding="utf-8"))
    run = load_results(run_dir / "results.json")
    path = write_junit(run, tmp_path)
    schema.validate(str(path))
    cases = list(ET.parse(path).getroot().iter("testcase"))
    assert len(cases) == len(run.cells)
    by_name = {(c.get("classname"), c.get("name")): c for c in cases}
    silent = by_name[("client-python", "azure-slb-no-reset-quick/watch")]
    failure = silent.find("failure")
    assert failure is not None and failure.get("type") == "FAIL-SILENT"
    assert by_name[("client-go", "azure-slb-no-reset-quick/watch")].find("failure") is None
