"""docs/results-schema.json is generated from runner/model.py, and the schema and the model agree.

The model is the one definition: `python -m runner.model --schema > docs/results-schema.json`
regenerates the file, and the first test fails while the committed file differs from it.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from runner.model import SCHEMA_VERSION, RunResult, Verdict, results_schema, results_schema_text

REPO = Path(__file__).resolve().parent.parent
SCHEMA = REPO / "docs" / "results-schema.json"
FIXTURES = sorted((REPO / "tests" / "fixtures" / "results").glob("*.results.json"))
REGENERATE = "python -m runner.model --schema > docs/results-schema.json"


def test_committed_schema_is_the_generated_one() -> None:
    assert SCHEMA.read_text(encoding="utf-8") == results_schema_text(), (
        f"docs/results-schema.json is out of date with runner/model.py; regenerate it: {REGENERATE}"
    )


def test_schema_command_prints_the_schema() -> None:
    proc = subprocess.run([sys.executable, "-m", "runner.model", "--schema"], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == results_schema_text()


def test_schema_is_valid_and_documented() -> None:
    schema = results_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["title"] == "watchdrop results.json"
    assert schema["properties"]["schema_version"]["const"] == SCHEMA_VERSION
    assert schema["$defs"]["Verdict"]["enum"] == [v.value for v in Verdict]
    for v in Verdict:
        assert v.legend in schema["$defs"]["Verdict"]["description"]
    cell = schema["$defs"]["CellResult"]
    assert "cell_id" in cell["required"] and cell["properties"]["cell_id"]["pattern"]
    # Field and class docstrings are the descriptions: the comment in the model is the documentation.
    assert cell["properties"]["reason"]["description"].startswith("Short one-liner without the verdict prefix")
    assert "Unix seconds" in schema["description"]
    for name, d in schema["$defs"].items():
        if d.get("type") == "object":
            assert d["additionalProperties"] is False, name
            assert set(d["required"]) == set(d["properties"]), f"{name}: results.json always has every key"


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.name)
def test_fixtures_follow_the_schema(path: Path) -> None:
    jsonschema.Draft202012Validator(results_schema()).validate(json.loads(path.read_text(encoding="utf-8")))


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(d: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        for p in parents:
            d = d[int(p)] if p.isdigit() else d[p]  # type: ignore[index]
        d[last] = value
    return mutate


def _drop(path: str) -> Callable[[dict[str, Any]], None]:
    def mutate(d: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        for p in parents:
            d = d[int(p)] if p.isdigit() else d[p]  # type: ignore[index]
        del d[last]
    return mutate


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (_set("started", True), "results.started: expected a number, got True"),
        (_set("cells.0.rounds", [{"index": 1}]), "results.cells[0].rounds[0].scenario: missing"),
        (_set("cells.1.watcher.lines", -1), "results.cells[1].watcher.lines: expected at least 0, got -1"),
        (_set("cells.1.watcher.exit_code", 1.5), "results.cells[1].watcher.exit_code: expected an integer, got 1.5"),
        (_set("cells.0.timings.rounds", "2"), "results.cells[0].timings.rounds: expected an integer, got '2'"),
        (_set("machine.kernel", 6), "results.machine.kernel: expected a string, got 6"),
        (_set("cells.0.surprise", 1), "results.cells[0].surprise: unknown field"),
        (_set("cells.0.profile", "azure"), "results.cells[0].profile: expected an object, got str"),
        (_set("cells.0.errors", ["ok", None]), "results.cells[0].errors[1]: expected a string, got None"),
        (_set("cells", {}), "results.cells: expected a list, got dict"),
        (_set("cells.0.cell_id", 7), "results.cells[0].cell_id: expected a string, got 7"),
        (_drop("cells.0.cell_id"), "results.cells[0].cell_id: missing"),
        (_set("run_id", ""), "results.run_id: expected a non-empty string"),
        (_set("profiles.0.idle_timeout", float("nan")), "results.profiles[0].idle_timeout: expected a finite number"),
    ],
)
def test_model_and_schema_refuse_the_same_files(mutate: Callable[[dict[str, Any]], None], message: str) -> None:
    good = json.loads((REPO / "tests" / "fixtures" / "results" / "sample.results.json").read_text(encoding="utf-8"))
    bad = copy.deepcopy(good)
    mutate(bad)
    with pytest.raises(ValueError) as info:
        RunResult.from_dict(bad)
    assert message in str(info.value)
    if message.endswith("finite number"):
        return  # JSON Schema has no NaN to refuse: it is not JSON; the model refuses what json.loads lets in
    assert not jsonschema.Draft202012Validator(results_schema()).is_valid(bad)


def _keys(value: Any, path: str = "results") -> list[tuple[str, list[str | int]]]:
    """Every object key in a results.json document, as (path for the message, route to it)."""
    out: list[tuple[str, list[str | int]]] = []

    def walk(v: Any, where: str, route: list[str | int]) -> None:
        if isinstance(v, dict):
            for k, item in v.items():
                out.append((f"{where}.{k}", [*route, k]))
                walk(item, f"{where}.{k}", [*route, k])
        elif isinstance(v, list):
            for i, item in enumerate(v):
                walk(item, f"{where}[{i}]", [*route, i])

    walk(value, path, [])
    return out


def test_every_key_of_a_file_is_required() -> None:
    """Defaults are for constructors: a file lacking any key (nested ones too) was not written by watchdrop."""
    good = json.loads((REPO / "tests" / "fixtures" / "results" / "sample.results.json").read_text(encoding="utf-8"))
    free_form = {"machine", "pcap", "overrides", "variant_env", "build_env", "evidence"}
    checked = 0
    for where, route in _keys(good):
        if free_form.intersection(str(step) for step in route[:-1]):
            continue  # a key inside a map or the pcap summary is data, not a field (the map itself is one)
        bad = copy.deepcopy(good)
        parent: Any = bad
        for step in route[:-1]:
            parent = parent[step]
        del parent[route[-1]]
        with pytest.raises(ValueError) as info:
            RunResult.from_dict(bad)
        assert str(info.value).startswith(f"{where}: missing"), where
        checked += 1
    assert checked > 60
