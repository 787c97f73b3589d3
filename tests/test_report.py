"""The result model's JSON round trip, the table layout, report files and the README section."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from runner.config.profiles import PROFILES, resolve_profile
from runner.errors import UsageError
from runner.model import (
    CellResult,
    LbSummary,
    ProfileFacts,
    RoundResult,
    RunResult,
    Timings,
    Verdict,
    WatcherFacts,
)
from runner.report.render import (
    README_BEGIN,
    README_END,
    load_results,
    profiles_used,
    render_markdown,
    render_table,
    replace_section,
    update_readme,
    write_reports,
)

SCHEMA = Path(__file__).resolve().parent.parent / "docs" / "results-schema.json"

AZURE = ProfileFacts(name="azure-slb-quick", mode="rst-both-ways", idle_timeout=45.0, front="tcp-proxy",
                     scaled_from="azure-slb", scaled_from_timeout=240.0)
GCP = ProfileFacts(name="gcp", mode="silent-drop", idle_timeout=600.0, front="tcp-proxy")


def cell(
    client: str,
    cluster: str,
    verdict: Verdict,
    reason: str,
    *,
    folder: str | None = None,
    scenario: str = "watch",
    env: dict[str, str] | None = None,
    keepalive: str = "none seen",
    **kw: Any,
) -> CellResult:
    return CellResult(
        client=client,
        folder=folder or client,
        library="kubernetes" if (folder or client).startswith("client-python") else "client-go",
        library_version="35.0.0" if (folder or client).startswith("client-python") else "v0.34.4",
        api_style="watch",
        variant_env=env or {},
        cluster=cluster,
        profile={"azure-slb": AZURE, "gcp": GCP}.get(cluster),
        scenario=scenario,
        timings=Timings(interval=100, detection_timeout=10, rounds=1),
        verdict=verdict,
        reason=reason,
        keepalive=keepalive,
        **kw,
    )


def full_cell() -> CellResult:
    """A cell with every optional part filled in, for round trips and schema validation."""
    return cell(
        "client-python",
        "azure-slb",
        Verdict.FAIL_SILENT,
        "no event in time for 1/1 rounds, no RST seen, flow idle 99 s > 45 s",
        rounds=[
            RoundResult(
                index=1,
                scenario="watch",
                update_at=1000.0,
                expected="v1",
                seen_at=None,
                deadline=1010,
                ok=False,
                idle_before=99,
                note="no event within 10 s",
            )
        ],
        watcher=WatcherFacts(
            started=True,
            lines=3,
            errors=0,
            reconnects=0,
            watch_opened=1,
            stderr_errors=0,
            exit_code=0,
            reported_version="35.0.0",
        ),
        pcap={"connections": [{"client": ["198.18.1.2", 40000], "rsts": [(1.5, "server")]}]},
        lb=LbSummary(expired=1, dropped_after_expiry=3),
        evidence={"watcher_log": "cells/client-python/azure-slb/watch/watcher.jsonl"},
        started=900,
        finished=1015.5,
        errors=[],
    )


def sample_run() -> RunResult:
    cells = [
        # A variant listed before its default: the table must still put it under the default.
        cell(
            "client-python-keepalive",
            "azure-slb",
            Verdict.PASS,
            "1/1 rounds seen, flow idle 30 s < 45 s",
            folder="client-python",
            env={"WATCHDROP_TCP_KEEPALIVE": "30"},
            keepalive="client every 30 s",
        ),
        full_cell(),
        cell("client-go", "azure-slb", Verdict.PASS, "1/1 rounds seen | pings", keepalive="client pings every 30 s"),
        cell("client-python", "gcp", Verdict.FAIL_SILENT, "no event in time for 1/1 rounds"),
        cell("client-go", "gcp", Verdict.SKIPPED, "go not on PATH", keepalive=""),
    ]
    return RunResult(
        run_id="20250101-000000-abcd",
        started=900,
        finished=2000,
        matrix="matrix.yaml",
        machine={"kernel": "6.1.0", "cpus": "2"},
        profiles=[AZURE, GCP],
        cells=cells,
    )


# --- model ----------------------------------------------------------------------------------------


def test_json_round_trip_is_lossless_and_byte_identical() -> None:
    run = sample_run()
    text = run.to_json()
    again = RunResult.from_json(text)
    assert again.to_json() == text
    assert again.cells[1].rounds[0].deadline == 1010.0
    assert again.cells[1].pcap == {"connections": [{"client": ["198.18.1.2", 40000], "rsts": [[1.5, "server"]]}]}
    assert text.endswith("}\n")
    # Integer seconds are written as floats, so a result built by hand renders like one read back.
    assert '"deadline": 1010.0' in text


def test_cell_id_and_variant() -> None:
    c = sample_run().cells[0]
    assert c.cell_id == "client-python-keepalive/azure-slb/watch"
    assert c.is_variant
    assert not full_cell().is_variant


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.update(schema_version=3), "reads version 2, the file has 3"),
        (lambda d: d["cells"][0].update(verdict="MAYBE"), "cells[0].verdict: unknown verdict 'MAYBE'"),
        (lambda d: d["cells"][1]["rounds"][0].update(seen_at="x"), "cells[1].rounds[0].seen_at: expected a number"),
        (lambda d: d["cells"][0].pop("reason"), "cells[0].reason: missing"),
        (lambda d: d["cells"][0].update(cell_id="a/b/c"), "does not match"),
        (lambda d: d.update(interrupted="no"), "interrupted: expected true or false"),
    ],
)
def test_from_dict_names_the_bad_field(mutate: Any, message: str) -> None:
    data = sample_run().to_dict()
    mutate(data)
    with pytest.raises(ValueError, match=None) as info:
        RunResult.from_dict(data)
    assert message in str(info.value)


def test_profile_describes_real_numbers() -> None:
    assert (
        AZURE.describe()
        == "azure-slb-quick: rst-both-ways after 45 s idle (scaled from azure-slb: 240 s), front tcp-proxy"
    )
    direct = ProfileFacts.from_profile(PROFILES["direct"])
    assert not direct.acts
    assert direct.describe() == "direct: no LB acts on idle flows, no front (direct to kube-apiserver)"
    quick = ProfileFacts.from_profile(resolve_profile("aws-nlb-quick", {"front": "none"}))
    assert quick == ProfileFacts(
        name="aws-nlb-quick", mode="rst-on-next-packet", idle_timeout=45.0, front="passthrough",
        scaled_from="aws-nlb", scaled_from_timeout=350.0, overrides={"front": "passthrough"},
    )
    assert quick.describe() == (
        "aws-nlb-quick: rst-on-next-packet after 45 s idle (scaled from aws-nlb: 350 s), "
        "no front (direct to kube-apiserver) [overridden: front=passthrough]"
    )
    l7 = ProfileFacts.from_profile(resolve_profile("azure-slb-no-reset-quick", {"front": "http"}))
    assert l7.describe() == (
        "azure-slb-no-reset-quick: silent-drop after 45 s idle (scaled from azure-slb-no-reset: 240 s), "
        "front http [overridden: front=http]"
    )
    # Runs before the fronts got today's names wrote "tcp-proxy" and "none": still read, still true.
    assert ProfileFacts.from_profile(PROFILES["gcp"]).describe() == "gcp: silent-drop after 600 s idle, front tcp"
    old_direct = ProfileFacts(name="direct", mode="none", idle_timeout=240.0, front="none")
    assert old_direct.describe() == direct.describe()


# --- table ----------------------------------------------------------------------------------------


def test_rows_group_variants_under_their_default() -> None:
    table = render_table(sample_run(), "plain")
    rows = [ln for ln in table.splitlines() if ln.startswith(("client", "↳"))]
    assert [r.split()[0] for r in rows[1:]] == ["client-python", "↳", "client-go"]
    assert "↳ client-python-keepalive (WATCHDROP_TCP_KEEPALIVE=30)" in table
    header = table.splitlines()[0]
    assert header.split() == ["client", "library", "keepalive", "(observed)", "azure-slb", "gcp"]


def test_cells_show_verdict_reason_and_keepalive() -> None:
    table = render_table(sample_run(), "github")
    py_row = next(ln for ln in table.splitlines() if ln.startswith("| client-python "))
    assert "FAIL-SILENT: no event in time for 1/1 rounds, no RST seen, flow idle 99 s > 45 s" in py_row
    assert "kubernetes 35.0.0" in py_row
    assert "none seen" in py_row
    go_row = next(ln for ln in table.splitlines() if ln.startswith("| client-go "))
    # A pipe inside a reason must not split the Markdown cell.
    assert "1/1 rounds seen \\| pings" in go_row
    assert "SKIPPED: go not on PATH" in go_row


def test_profiles_legend_and_mitigation_under_the_table() -> None:
    table = render_table(sample_run(), "github")
    assert "- azure-slb-quick: rst-both-ways after 45 s idle (scaled from azure-slb: 240 s), front tcp-proxy" in table
    assert "- gcp: silent-drop after 600 s idle, front tcp-proxy" in table
    for v in Verdict:
        assert f"- {v.value}: {v.legend}" in table
    assert (
        "mitigation proven: WATCHDROP_TCP_KEEPALIVE=30 turns client-python FAIL-SILENT into PASS on azure-slb "
        "(client-python-keepalive)"
    ) in table
    # The variant did not run on gcp, so nothing is claimed there.
    assert table.count("mitigation proven") == 1


def test_several_scenarios_get_cluster_scenario_columns() -> None:
    run = sample_run()
    run.cells.append(cell("client-go", "azure-slb", Verdict.PASS, "ok", scenario="idle-request"))
    header = render_table(run, "github").splitlines()[0]
    assert "azure-slb · watch" in header
    assert "azure-slb · idle-request" in header
    assert "gcp · watch" in header


def test_variant_without_its_default_stands_alone() -> None:
    run = sample_run()
    run.cells = [c for c in run.cells if c.client == "client-python-keepalive"]
    table = render_table(run, "plain")
    assert "↳" not in table
    assert "client-python-keepalive (WATCHDROP_TCP_KEEPALIVE=30)" in table


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="plain or github"):
        render_table(sample_run(), "html")  # type: ignore[arg-type]


# --- files ----------------------------------------------------------------------------------------


def test_write_and_re_render_are_byte_identical(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    results, report = write_reports(sample_run(), first)
    assert results.name == "results.json" and report.name == "report.md"
    write_reports(load_results(results), second)
    for name in ("results.json", "report.md"):
        assert (first / name).read_bytes() == (second / name).read_bytes()
    md = report.read_text()
    assert "## Matrix" in md and "### client-python/azure-slb/watch" in md
    assert "[watcher_log](cells/client-python/azure-slb/watch/watcher.jsonl)" in md
    assert not list(first.glob(".*")), "no temporary files left behind"


def test_report_markdown_shows_rounds() -> None:
    md = render_markdown(sample_run())
    assert "| 1       | v1         | +100.0 s | —            | NO        | 99 s" in md


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("no markers here\n", "found 0 and 0"),
        (f"{README_BEGIN}\nonly the start\n", "found 1 and 0"),
        (f"{README_END}\n{README_BEGIN}\n", "comes before"),
        (f"{README_BEGIN}\n{README_END}\n{README_BEGIN}\n{README_END}\n", "found 2 and 2"),
    ],
)
def test_readme_markers_must_be_there_once(tmp_path: Path, content: str, message: str) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(content)
    with pytest.raises(UsageError) as info:
        update_readme(readme, "table")
    assert message in info.value.message
    assert info.value.fix and README_BEGIN in info.value.fix
    assert readme.read_text() == content


def test_readme_section_is_replaced_and_the_rest_kept(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"# watchdrop\n\nintro\n\n{README_BEGIN}\nold table\n{README_END}\n\nafter\n")
    assert update_readme(readme, "| new | table |\n")
    assert readme.read_text() == (f"# watchdrop\n\nintro\n\n{README_BEGIN}\n| new | table |\n{README_END}\n\nafter\n")
    assert not update_readme(readme, "| new | table |\n"), "same content: file untouched"
    assert replace_section(readme.read_text(), "| new | table |") == readme.read_text()


def test_missing_readme_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="cannot read"):
        update_readme(tmp_path / "nope.md", "x")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file"),
        ("{not json", ":1: not valid JSON"),
        ('{"schema_version": 1}', "not a watchdrop results file: results.run_id: missing"),
        ("[]", "results: expected an object"),
    ],
)
def test_load_results_errors_name_the_file(tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "results.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(UsageError) as info:
        load_results(path)
    assert str(path) in info.value.message
    assert message in info.value.message
    assert info.value.fix


def test_load_results_on_a_directory(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="is a directory"):
        load_results(tmp_path)


# --- schema ---------------------------------------------------------------------------------------


def test_rendered_results_validate_against_the_schema() -> None:
    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema not installed (pip install jsonschema)")
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    validator.validate(json.loads(sample_run().to_json()))
    empty = RunResult(run_id="r", started=1.0, finished=None, matrix="m.yaml", machine={}, profiles=[], cells=[],
                      interrupted=True)
    validator.validate(json.loads(empty.to_json()))
    # A kubernetes cluster has no emulated profile; idle-request has no interval.
    odd = cell("client-go", "aks", Verdict.ERROR, "no capture facts", scenario="idle-request")
    odd.timings = Timings(interval=None, detection_timeout=10, rounds=2, idle=300)
    run = RunResult(run_id="r", started=1.0, finished=2.0, matrix="m.yaml", machine={}, profiles=[], cells=[odd])
    assert odd.profile is None
    validator.validate(json.loads(run.to_json()))
    assert RunResult.from_json(run.to_json()).to_json() == run.to_json()
    assert "the provider LB of aks (not emulated)" in render_markdown(run)
    bad = json.loads(sample_run().to_json())
    bad["cells"][0]["verdict"] = "MAYBE"
    assert not validator.is_valid(bad)


def test_schema_verdicts_match_the_model() -> None:
    schema = json.loads(SCHEMA.read_text())
    assert schema["$defs"]["Verdict"]["enum"] == [v.value for v in Verdict]


def test_readme_section_shows_the_example_timelines() -> None:
    from runner.report.readme import readme_examples, render_readme_section

    run = _run_with_examples()
    examples = readme_examples(run)
    assert set(examples) == {"FAIL-SILENT", "PASS"}
    text = render_readme_section(run, {"PASS": "docs/timelines/pass.svg",
                                       "FAIL-SILENT": "docs/timelines/fail-silent.svg"})
    assert text.index("fail-silent.svg") < text.index("pass.svg")  # the failure first
    assert "## Cells" not in text  # no per-cell detail in the README


def _run_with_examples():
    run = sample_run()
    cells = [run.cells[0].model_copy(update={"verdict": Verdict.PASS, "scenario": "watch"}),
             run.cells[0].model_copy(update={"client": "x", "verdict": Verdict.FAIL_SILENT, "scenario": "watch"})]
    return run.model_copy(update={"cells": cells})


def test_one_profile_with_two_fronts_is_listed_twice() -> None:
    run = sample_run()
    cell = next(c for c in run.cells if c.profile is not None and c.profile.name == "gcp")
    l7 = cell.profile.model_copy(update={"front": "http", "overrides": {"front": "http"}})  # type: ignore[union-attr]
    run.cells.append(cell.model_copy(update={"cluster": "gcp-l7", "profile": l7}))
    lines = profiles_used(run)
    assert "gcp: silent-drop after 600 s idle, front tcp-proxy" in lines
    assert "gcp: silent-drop after 600 s idle, front http [overridden: front=http]" in lines
