"""The plan: crossing, ordering, per-cell timings, --only filters, skip reasons, the --plan table."""

from __future__ import annotations

from pathlib import Path

import pytest

from runner.config.descriptor import Descriptor
from runner.config.matrix import Matrix, load_matrix
from runner.config.plan import Cell, describe_plan, parse_only, plan, select, skip_reason, skip_reasons, unmatched
from runner.errors import UsageError

MATRIX = """\
clients:
  - name: client-go
    env: {WATCHDROP_STYLE: informer}
  - name: client-go-watch
    folder: client-go
    env: {WATCHDROP_STYLE: watch}
    build_env: {GOFLAGS: -mod=mod}
    note: bare watch
  - name: client-python
clusters:
  - name: azure-slb
    lb: {profile: azure-slb}
  - name: aws-nlb
    lb: {profile: aws-nlb}
    churn: {lease_interval: 0}
  - name: my-aks
    kind: kubernetes
    context: my-aks
    registry: r.example/watchdrop
    idle_timeout: 240
scenarios:
  watch: {interval: idle+30, detection_timeout: 10, rounds: 2}
  idle-request: {idle: 400, detection_timeout: 5, rounds: 1}
"""


def _clients(root: Path) -> Path:
    clients = root / "clients"
    for name, requires in (("client-go", "sh"), ("client-python", "sh")):
        (clients / name).mkdir(parents=True)
        (clients / name / "client.yaml").write_text(
            f'name: {name}\nlanguage: x\nlibrary: y\nversion: "1"\napi_style: z\nrequires: [{requires}]\n'
            'run: ["{out}/w"]\n'
        )
    return clients


@pytest.fixture
def matrix(tmp_path: Path) -> Matrix:
    path = tmp_path / "matrix.yaml"
    path.write_text(MATRIX)
    return load_matrix(path, _clients(tmp_path))


@pytest.fixture
def cells(matrix: Matrix) -> list[Cell]:
    return plan(matrix)


def test_crossing_and_order(cells: list[Cell]) -> None:
    assert len(cells) == 3 * 3 * 2
    assert [c.id for c in cells[:6]] == [
        "client-go/azure-slb/watch",
        "client-go/azure-slb/idle-request",
        "client-go/aws-nlb/watch",
        "client-go/aws-nlb/idle-request",
        "client-go/my-aks/watch",
        "client-go/my-aks/idle-request",
    ]
    assert [c.client for c in cells[::6]] == ["client-go", "client-go-watch", "client-python"]
    assert len({c.id for c in cells}) == len(cells)


def test_plan_is_stable(matrix: Matrix) -> None:
    assert plan(matrix) == plan(matrix)


def test_idle_plus_resolves_per_cluster(cells: list[Cell]) -> None:
    by_id = {c.id: c for c in cells}
    assert by_id["client-go/azure-slb/watch"].interval == 270
    assert by_id["client-go/aws-nlb/watch"].interval == 380
    assert by_id["client-go/my-aks/watch"].interval == 270  # the cluster's stated idle_timeout
    idle = by_id["client-go/aws-nlb/idle-request"]
    assert (idle.idle, idle.interval, idle.detection_timeout, idle.rounds) == (400, None, 5, 1)
    assert by_id["client-go/aws-nlb/watch"].estimated_seconds == 2 * (380 + 10)


def test_cell_carries_profile_env_and_folder(cells: list[Cell], matrix: Matrix) -> None:
    cell = next(c for c in cells if c.id == "client-go-watch/azure-slb/watch")
    assert matrix.clients_dir is not None
    assert cell.folder == "client-go" and cell.src == matrix.clients_dir / "client-go"
    assert cell.profile is not None and cell.profile.name == "azure-slb"
    assert (cell.cluster_kind, cell.idle_timeout, cell.lease_interval) == ("embedded", 240, 10)
    assert dict(cell.env) == {"WATCHDROP_STYLE": "watch"}
    assert dict(cell.build_env) == {"GOFLAGS": "-mod=mod"}
    assert cell.note == "bare watch"
    assert cell.watcher_env() == {
        "WATCHDROP_STYLE": "watch",
        "WATCHDROP_SCENARIO": "watch",
        "WATCHDROP_INTERVAL": "270",
        "WATCHDROP_DETECTION_TIMEOUT": "10",
        "WATCHDROP_ROUNDS": "2",
    }
    with pytest.raises(TypeError):
        cell.env["X"] = "1"  # type: ignore[index]
    hash(cell)  # frozen and hashable despite its mappings
    aws = next(c for c in cells if c.id == "client-go/aws-nlb/watch")
    assert aws.lease_interval == 0
    aks = next(c for c in cells if c.id == "client-go/my-aks/idle-request")
    assert (aks.profile, aks.cluster_kind, aks.lease_interval) == (None, "kubernetes", None)
    assert aks.watcher_env()["WATCHDROP_IDLE"] == "400" and "WATCHDROP_INTERVAL" not in aks.watcher_env()


# --- --only ----------------------------------------------------------------------------------------


def ids(cells: list[Cell]) -> set[str]:
    return {c.id for c in cells}


def test_only_exact_name_is_not_a_prefix(cells: list[Cell]) -> None:
    chosen = select(cells, parse_only(["client=client-go"]))
    assert {c.client for c in chosen} == {"client-go"}  # not client-go-watch
    assert len(chosen) == 6


def test_only_glob(cells: list[Cell]) -> None:
    chosen = select(cells, parse_only(["client=client-go*"]))
    assert {c.client for c in chosen} == {"client-go", "client-go-watch"}
    assert {c.cluster for c in select(cells, parse_only(["cluster=a*"]))} == {"azure-slb", "aws-nlb"}
    # Globs match the whole name: "azure" alone matches nothing.
    assert select(cells, parse_only(["cluster=azure"])) == []


def test_only_same_key_or_different_keys_and(cells: list[Cell]) -> None:
    chosen = select(cells, parse_only(["client=client-go", "client=client-python", "cluster=aws-*"]))
    assert ids(chosen) == {
        "client-go/aws-nlb/watch",
        "client-go/aws-nlb/idle-request",
        "client-python/aws-nlb/watch",
        "client-python/aws-nlb/idle-request",
    }
    chosen = select(chosen, parse_only(["scenario=watch"]))
    assert ids(chosen) == {"client-go/aws-nlb/watch", "client-python/aws-nlb/watch"}


def test_only_is_case_sensitive(cells: list[Cell]) -> None:
    assert select(cells, parse_only(["client=Client-Go"])) == []


def test_no_filters_selects_everything_in_order(cells: list[Cell]) -> None:
    assert select(cells, []) == cells


def test_unmatched_filters_are_reported(cells: list[Cell]) -> None:
    filters = parse_only(["client=client-go", "cluster=gcp*"])
    assert unmatched(cells, filters) == [("cluster", "gcp*")]


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("clinet=client-go", "unknown key 'clinet'"),
        ("client-go", "expected KEY=GLOB"),
        ("client=", "expected KEY=GLOB"),
        ("=client-go", "unknown key ''"),
    ],
)
def test_bad_only_values(value: str, text: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_only([value])
    assert text in info.value.message
    assert info.value.fix and "client=" in info.value.fix


def test_parse_only_keeps_globs_verbatim() -> None:
    assert parse_only(["cluster=azure-*", "scenario=idle-request", "client=a=b"]) == [
        ("cluster", "azure-*"),
        ("scenario", "idle-request"),
        ("client", "a=b"),
    ]


# --- skips and the --plan table ----------------------------------------------------------------------


def _descriptor(requires: list[str]) -> Descriptor:
    return Descriptor(
        name="client-dotnet",
        language="csharp",
        library="KubernetesClient",
        version="17.0.4",
        api_style="Watch",
        requires=requires,
        run=["{out}/w"],
    )


def test_skip_reason_names_the_missing_tool(cells: list[Cell]) -> None:
    cell = cells[0]
    assert skip_reason(cell, _descriptor(["sh"])) is None
    reason = skip_reason(cell, _descriptor(["sh", "watchdrop-no-dotnet-here"]))
    assert reason is not None and reason.startswith("no watchdrop-no-dotnet-here on this machine")


def test_skip_reasons_for_all_cells(cells: list[Cell], matrix: Matrix) -> None:
    reasons = skip_reasons(cells, matrix.descriptors)
    assert set(reasons) == ids(cells) and not any(reasons.values())
    missing = skip_reasons(cells, {})
    assert missing["client-go/azure-slb/watch"] == "no descriptor for client-go"


def test_describe_plan(cells: list[Cell]) -> None:
    chosen = select(cells, parse_only(["client=client-go", "scenario=watch"]))
    skips = {"client-go/aws-nlb/watch": "no dotnet on this machine"}
    text = describe_plan(chosen, skips)
    lines = text.splitlines()
    assert "cell" in lines[0] and "skip" in lines[0]
    row = next(line for line in lines if line.startswith("client-go/azure-slb/watch"))
    assert "rst-both-ways after 240 s" in row and "2 x 270 s" in row and "9m20s" in row
    row = next(line for line in lines if line.startswith("client-go/aws-nlb/watch"))
    assert row.rstrip().endswith("no dotnet on this machine")
    row = next(line for line in lines if line.startswith("client-go/my-aks/watch"))
    assert "real cluster" in row
    # The skipped aws-nlb cell does not count towards the expected wall time.
    assert lines[-1].startswith("3 cells, 1 skipped") and "9m20s" in lines[-1]
