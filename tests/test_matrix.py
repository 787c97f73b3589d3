"""matrix.yaml: the schema, the shipped matrices, the bad-matrix corpus and a loader fuzz test."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from runner.config.matrix import EmbeddedCluster, KubernetesCluster, Matrix, Timing, load_matrix
from runner.config.plan import plan
from runner.config.yamlmarks import MAX_BYTES, load_marked
from runner.credentials.rbac import token_seconds
from runner.errors import MatrixError, UsageError

REPO = Path(__file__).resolve().parent.parent
BAD = Path(__file__).resolve().parent / "bad_matrices"

CLIENT_YAML = """\
name: {name}
language: {language}
library: {library}
version: "1.0.0"
api_style: {style}
requires: [{tool}]
{styles}run: ["{{out}}/watcher"]
"""


def make_clients(root: Path) -> Path:
    """A clients/ folder with the two folders matrix.yaml uses (the real ones are written elsewhere)."""
    clients = root / "clients"
    specs = {
        "client-go": (
            "go",
            "k8s.io/client-go",
            "informer",
            "sh",
            "styles: [informer, watch]\nsettings: {DISABLE_HTTP2: HTTP/1.1 instead of HTTP/2}\n",
        ),
        "client-python": ("python", "kubernetes", "watch.Watch().stream", "sh", ""),
    }
    for name, (language, library, style, tool, styles) in specs.items():
        folder = clients / name
        folder.mkdir(parents=True)
        (folder / "client.yaml").write_text(
            CLIENT_YAML.format(name=name, language=language, library=library, style=style, tool=tool, styles=styles)
        )
    return clients


@pytest.fixture
def clients_dir(tmp_path: Path) -> Path:
    return make_clients(tmp_path)


def write(tmp_path: Path, text: str, name: str = "matrix.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def problems_of(path: Path, clients_dir: Path) -> list[str]:
    with pytest.raises(MatrixError) as info:
        load_matrix(path, clients_dir)
    return info.value.problems


def assert_one_line_problems(path: Path, problems: list[str]) -> None:
    """Every problem is `PATH[:LINE]: ...; fix: ...` on one line."""
    assert problems, "a MatrixError must carry at least one problem"
    shape = re.compile(rf"^{re.escape(str(path))}(:\d+)?: \S.*; fix: \S.*$")
    for text in problems:
        assert "\n" not in text and "\r" not in text, text
        assert shape.match(text), text


# --- the shipped matrices --------------------------------------------------------------------------


def test_default_matrix_uses_the_real_profiles() -> None:
    matrix = load_matrix(REPO / "matrix.yaml", REPO / "clients")
    assert [c.name for c in matrix.clients][:6] == [
        "client-go",
        "client-go-watch",
        "client-go-no-http2",
        "client-python",
        "client-python-keepalive",
        "client-python-timeout",
    ]
    profiles = {c.name: p for c in matrix.clusters if (p := c.profile()) is not None}
    assert {name: p.name for name, p in profiles.items()} == {
        "azure-slb": "azure-slb",
        "azure-slb-no-reset": "azure-slb-no-reset",
        "aks-public": "aks-public",
        "aks-private": "aks-private",
        "aws-nlb": "aws-nlb",
        "gcp": "gcp",
        "direct": "direct",
    }
    # The seed's two columns (issue 17): today's AKS paths, a nat hop before the control-plane front.
    chains = {c.name: p.hops for c in matrix.clusters if (p := c.net_path()) is not None}
    assert {name: [(h.name, h.kind, h.idle_timeout, h.mode) for h in hops] for name, hops in chains.items()} == {
        "aks-public": [("outbound", "nat", 1800, "rst-both-ways"), ("front", "front", 240, "rst-both-ways")],
        "aks-private": [("pls", "nat", 300, "rst-both-ways"), ("front", "front", 240, "rst-both-ways")],
    }
    assert profiles["azure-slb"].idle_timeout == 240
    assert profiles["azure-slb"].mode == "rst-both-ways"
    assert profiles["aws-nlb"].idle_timeout == 350
    # gcp is scaled down by an override (commented in matrix.yaml), and says so.
    assert profiles["gcp"].idle_timeout < 600
    assert profiles["gcp"].overrides == (("idle_timeout", str(profiles["gcp"].idle_timeout)),)
    assert matrix.scenarios.watch is not None and matrix.scenarios.watch.interval == Timing(plus=30)
    assert matrix.scenarios.idle_request is not None and matrix.scenarios.idle_request.rounds == 1
    variants = {c.name: (c.folder_name, dict(c.env)) for c in matrix.clients}
    assert variants["client-go-no-http2"] == ("client-go", {"WATCHDROP_STYLE": "informer", "DISABLE_HTTP2": "1"})
    assert variants["client-python-keepalive"] == ("client-python", {"WATCHDROP_TCP_KEEPALIVE": "30"})
    assert {"client-go", "client-python"} <= set(matrix.descriptors)


def test_default_matrix_finishes_within_15_minutes() -> None:
    cells = plan(load_matrix(REPO / "matrix.yaml", REPO / "clients"))
    assert max(c.estimated_seconds for c in cells) <= 15 * 60


def test_quick_matrix_scales_every_lb_to_45_seconds() -> None:
    matrix = load_matrix(REPO / "matrix.quick.yaml", REPO / "clients")
    default = load_matrix(REPO / "matrix.yaml", REPO / "clients")
    # The same columns; a variant's setting may be scaled with the LBs (a request timeout has to
    # stay below the idle timeout to be the fix it claims to be).
    assert [(c.name, c.folder_name, sorted(c.env)) for c in matrix.clients] == [
        (c.name, c.folder_name, sorted(c.env)) for c in default.clients
    ]
    assert [c.name for c in matrix.clusters] == [
        "azure-slb-quick",
        "azure-slb-no-reset-quick",
        "aws-nlb-quick",
        "direct",
    ]
    for cluster in matrix.clusters:
        profile = cluster.profile()
        assert profile is not None and profile.idle_timeout == 45
    # idle+20: off kopf's 70 s re-watch (see the matrix's comment)
    assert matrix.scenarios.watch is not None and matrix.scenarios.watch.interval == Timing(plus=20)
    assert matrix.scenarios.watch.rounds == 2
    # idle+20 too: off the 60 s keep-alive timeout of fabric8's Vert.x pool (see the matrix's comment)
    assert matrix.scenarios.idle_request is not None and matrix.scenarios.idle_request.idle == Timing(plus=20)
    cells = plan(matrix)
    assert {c.wait for c in cells if c.scenario == "watch"} == {65}
    assert {c.wait for c in cells if c.scenario == "idle-request"} == {65}


def test_local_matrix_is_the_quick_matrix_on_two_local_clusters() -> None:
    """README sets the local table beside the quick run's embedded columns of the same profiles:
    that comparison holds only while the clients and the timings are the same."""
    local = load_matrix(REPO / "matrix.local.yaml", REPO / "clients")
    quick = load_matrix(REPO / "matrix.quick.yaml", REPO / "clients")
    assert [c.model_dump() for c in local.clients] == [c.model_dump() for c in quick.clients]
    assert local.scenarios == quick.scenarios
    assert {c.kind for c in local.clusters} == {"local"}
    modes = {p.name: p.mode for c in local.clusters if (p := c.profile()) is not None}
    assert modes == {"azure-slb-no-reset-quick": "silent-drop", "azure-slb-quick": "rst-both-ways"}
    quick_profiles = {p.name for c in quick.clusters if (p := c.profile()) is not None}
    assert set(modes) <= quick_profiles


# --- the schema's happy path -----------------------------------------------------------------------

FULL = """\
clients:
  - name: client-go
    env: {WATCHDROP_STYLE: watch}
    build_env: {GOFLAGS: -mod=mod}
    note: bare watch
  - name: py
    folder: client-python
clusters:
  - name: azure
    lb: {profile: azure-slb, idle_timeout: 300, mode: silent-drop, front: none}
  - name: aks
    kind: kubernetes
    context: my-aks
    registry: myacr.azurecr.io/watchdrop
    pull_secrets: [acr]
    description: AKS public API server
    api_server: myaks.hcp.westeurope.azmk8s.io:443
    service_type: LoadBalancer
    load_balancer_source_ranges: [10.0.0.0/8, "2001:db8::/32"]
    internal_load_balancer: azure
    idle_timeout: 240
scenarios:
  watch: {interval: idle+30}
  idle-request: {idle: 400, detection_timeout: 20, rounds: 3}
"""


def _kube_cluster(**fields: object) -> KubernetesCluster:
    return KubernetesCluster.model_validate({"name": "k", "kind": "kubernetes", "context": "k", "registry": "r/w",
                                             **fields})


def test_timer_server_is_not_public_unless_the_matrix_says_so() -> None:
    assert _kube_cluster().service_type == "ClusterIP"
    assert _kube_cluster(service_type="LoadBalancer", load_balancer_source_ranges=["203.0.113.7/32"]) \
        .load_balancer_source_ranges == ["203.0.113.7/32"]
    for public in ({"service_type": "LoadBalancer"}, {"service_type": "NodePort"},
                   {"service_type": "LoadBalancer", "load_balancer_source_ranges": ["::/0"]}):
        with pytest.raises(ValidationError, match="every"):
            _kube_cluster(**public)
        assert _kube_cluster(**public, expose_publicly=True).expose_publicly
    with pytest.raises(ValidationError, match="LoadBalancer only"):
        _kube_cluster(internal_load_balancer="aws")


def test_full_schema(tmp_path: Path, clients_dir: Path) -> None:
    matrix = load_matrix(write(tmp_path, FULL), clients_dir)
    assert isinstance(matrix, Matrix)
    go, py = matrix.clients
    assert (go.folder_name, dict(go.env), dict(go.build_env), go.note) == (
        "client-go",
        {"WATCHDROP_STYLE": "watch"},
        {"GOFLAGS": "-mod=mod"},
        "bare watch",
    )
    assert py.folder_name == "client-python"
    azure, aks = matrix.clusters
    assert isinstance(azure, EmbeddedCluster) and azure.kind == "embedded"
    assert azure.churn.lease_interval == 10  # the default: churn is always stated, never implicit
    profile = azure.profile()
    assert (profile.name, profile.idle_timeout, profile.mode, profile.front) == (
        "azure-slb",
        300,
        "silent-drop",
        "passthrough",  # written `front: none`, the old name, which still loads
    )
    assert isinstance(aks, KubernetesCluster)
    assert (aks.context, aks.registry, aks.pull_secrets, aks.service_type, aks.idle_timeout) == (
        "my-aks",
        "myacr.azurecr.io/watchdrop",
        ["acr"],
        "LoadBalancer",
        240,
    )
    assert (aks.load_balancer_source_ranges, aks.internal_load_balancer) == (["10.0.0.0/8", "2001:db8::/32"], "azure")
    assert aks.profile() is None
    watch = matrix.scenarios.watch
    assert watch is not None and (watch.detection_timeout, watch.rounds) == (10, 2)  # defaults
    assert watch.interval.resolve(240) == 270 and watch.interval.resolve(None) is None
    idle = matrix.scenarios.idle_request
    assert idle is not None and (idle.idle.resolve(240), idle.detection_timeout, idle.rounds) == (400, 20, 3)
    assert matrix.source == tmp_path / "matrix.yaml"


def test_yaml_merge_keys_are_allowed(tmp_path: Path, clients_dir: Path) -> None:
    text = """\
x-env: &python_env {WATCHDROP_TCP_KEEPALIVE: "30"}
clients:
  - name: client-python
    env: {<<: *python_env, WATCHDROP_TCP_KEEPALIVE: "15"}
clusters:
  - {name: direct, lb: {profile: direct}}
scenarios:
  watch: {interval: idle+30}
"""
    # The anchor's holder is an unknown key, reported at its line; the merge itself is fine.
    problems = problems_of(write(tmp_path, text), clients_dir)
    assert problems == [
        f"{tmp_path / 'matrix.yaml'}:1: x-env: unknown key; fix: remove it or check its spelling; "
        "allowed here: clients, clusters, scenarios"
    ]


def test_all_problems_are_reported_at_once(tmp_path: Path, clients_dir: Path) -> None:
    text = """\
clients:
  - name: client-go
    colour: blue
clusters:
  - name: aws
    lb: {profile: aws-nlb}
scenarios:
  watch: {interval: 100, detection_timeout: 0}
"""
    path = write(tmp_path, text)
    problems = problems_of(path, clients_dir)
    assert_one_line_problems(path, problems)
    # Line order (schema problems first within a line). The too-short interval is found even
    # though its scenario has another error.
    assert [p.split(": ")[0:2] for p in problems] == [
        [f"{path}:3", "clients[0].colour"],
        [f"{path}:8", "scenarios.watch.detection_timeout"],
        [f"{path}:8", "scenarios.watch.interval"],
    ]


def test_descriptor_problems_surface_through_the_matrix(tmp_path: Path, clients_dir: Path) -> None:
    (clients_dir / "client-python" / "client.yaml").write_text("name: client-python\nrun: []\n")
    text = "clients: [{name: client-python}]\nclusters: [{name: d, lb: {profile: direct}}]\n"
    text += "scenarios: {watch: {interval: idle+30}}\n"
    with pytest.raises(MatrixError) as info:
        load_matrix(write(tmp_path, text), clients_dir)
    descriptor = clients_dir / "client-python" / "client.yaml"
    assert any(p.startswith(f"{descriptor}:2: run: needs at least 1 entry") for p in info.value.problems)
    assert all(p.startswith(f"{descriptor}:") for p in info.value.problems)


def test_folder_without_descriptor(tmp_path: Path, clients_dir: Path) -> None:
    (clients_dir / "client-rust").mkdir()
    text = """\
clients:
  - name: client-rust
  - name: client-rust-tls
    folder: client-rust
clusters: [{name: d, lb: {profile: direct}}]
scenarios: {watch: {interval: idle+30}}
"""
    path = write(tmp_path, text)
    problems = problems_of(path, clients_dir)
    assert_one_line_problems(path, problems)
    # Each entry that uses the folder is told, at its own line.
    assert [p.split(": ")[0:2] for p in problems] == [
        [f"{path}:2", "clients[0].name"],
        [f"{path}:4", "clients[1].folder"],
    ]
    assert all(f"{clients_dir / 'client-rust'} has no client.yaml" in p for p in problems)


@pytest.mark.skipif(
    not all((REPO / "clients" / n / "client.yaml").is_file() for n in ("client-go", "client-python")),
    reason="the real client folders are not written yet",
)
@pytest.mark.parametrize("name", ["matrix.yaml", "matrix.quick.yaml"])
def test_shipped_matrices_fit_the_real_clients(name: str) -> None:
    # Catches drift between a variant's env and what the client's descriptor says it reads.
    matrix = load_matrix(REPO / name, REPO / "clients")
    folders = {p.name for p in (REPO / "clients").iterdir() if (p / "client.yaml").exists()}
    assert set(matrix.descriptors) == folders  # every client folder has a column


def test_matrix_error_is_a_usage_error() -> None:
    # The CLI maps UsageError to exit code 4 (errors.py); matrix problems are the user's input.
    assert issubclass(MatrixError, UsageError)


# --- the bad-matrix corpus -------------------------------------------------------------------------

_MARK = re.compile(r"#!(file)?\s+(\S+)\s*\|\s*(.+?)\s*$")


def expectations(path: Path) -> list[tuple[int | None, str | None, str]]:
    """`(line or None, field or None, text)` from the `#!` markers (tests/bad_matrices/README.md)."""
    out = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        match = _MARK.search(line)
        if match:
            whole_file, field, text = match.groups()
            out.append((None if whole_file else number, None if field == "-" else field, text))
    return out


CORPUS = sorted(BAD.glob("*.yaml"))


def test_corpus_is_there() -> None:
    assert len(CORPUS) >= 15
    for path in CORPUS:
        assert expectations(path), f"{path.name} has no #! markers"


@pytest.mark.parametrize("path", CORPUS, ids=[p.stem for p in CORPUS])
def test_bad_matrix(path: Path, clients_dir: Path) -> None:
    problems = problems_of(path, clients_dir)
    assert_one_line_problems(path, problems)
    expected = expectations(path)
    unmatched = list(problems)
    for line, field, text in expected:
        where = f"{path}:{line}: " if line is not None else f"{path}: "
        prefix = where + (f"{field}: " if field else "")
        hits = [p for p in unmatched if p.startswith(prefix) and text in p]
        assert hits, f"no problem {prefix!r}...{text!r} in:\n" + "\n".join(problems)
        if field is None:
            # No field part: what follows the location is the message itself.
            assert not re.match(r"^[\w\[\].-]+: ", hits[0][len(where) :]), hits[0]
        unmatched.remove(hits[0])
    assert not unmatched, "unexpected problems:\n" + "\n".join(unmatched)


# --- files that are not matrices at all --------------------------------------------------------------


def test_missing_file(tmp_path: Path, clients_dir: Path) -> None:
    path = tmp_path / "nope.yaml"
    assert problems_of(path, clients_dir) == [f"{path}: no such file; fix: check the path, or create the file"]


def test_directory(tmp_path: Path, clients_dir: Path) -> None:
    problems = problems_of(tmp_path, clients_dir)
    assert_one_line_problems(tmp_path, problems)
    assert "is a directory" in problems[0]


def test_zero_byte_file(tmp_path: Path, clients_dir: Path) -> None:
    path = write(tmp_path, "")
    assert problems_of(path, clients_dir) == [
        f"{path}: file is empty; fix: write the YAML content (see the comments in matrix.yaml)"
    ]


def test_binary_garbage_with_nul(tmp_path: Path, clients_dir: Path) -> None:
    path = tmp_path / "matrix.yaml"
    path.write_bytes(b"clients:\n  - name: x\n\x7fELF\x02\x01\x01\x00\x00\xff\xfe")
    problems = problems_of(path, clients_dir)
    assert_one_line_problems(path, problems)
    assert problems[0].startswith(f"{path}:3: contains NUL bytes")


def test_undecodable_bytes(tmp_path: Path, clients_dir: Path) -> None:
    path = tmp_path / "matrix.yaml"
    path.write_bytes(b"clients:\n  - name: caf\xe9\n")  # Latin-1, not UTF-8
    problems = problems_of(path, clients_dir)
    assert problems == [f"{path}:2: not valid UTF-8 (byte 0xe9); fix: save the file as UTF-8 text"]


def test_control_characters(tmp_path: Path, clients_dir: Path) -> None:
    path = write(tmp_path, "clients:\n  - name: a\x07b\n")
    problems = problems_of(path, clients_dir)
    assert_one_line_problems(path, problems)
    assert "is not allowed in YAML" in problems[0]


def test_huge_file(tmp_path: Path, clients_dir: Path) -> None:
    path = tmp_path / "matrix.yaml"
    with path.open("w") as f:
        f.write("# padding\n" * (MAX_BYTES // 10 + 1))
    assert path.stat().st_size > MAX_BYTES
    problems = problems_of(path, clients_dir)
    assert_one_line_problems(path, problems)
    assert "larger than" in problems[0]


def test_fifo_is_refused_without_blocking(tmp_path: Path, clients_dir: Path) -> None:
    path = tmp_path / "matrix.yaml"
    os.mkfifo(path)
    problems = problems_of(path, clients_dir)
    assert "is not a regular file" in problems[0]


def test_alias_bomb(tmp_path: Path, clients_dir: Path) -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    path = write(tmp_path, "\n".join(lines) + "\n")
    problems = problems_of(path, clients_dir)
    assert_one_line_problems(path, problems)
    assert "aliases" in problems[0]


def test_self_referencing_alias(tmp_path: Path, clients_dir: Path) -> None:
    path = write(tmp_path, "clients: &c [*c]\n")
    problems = problems_of(path, clients_dir)
    assert_one_line_problems(path, problems)


def test_deep_nesting(tmp_path: Path, clients_dir: Path) -> None:
    path = write(tmp_path, "clients: " + "[" * 5000 + "]" * 5000 + "\n")
    problems = problems_of(path, clients_dir)
    assert_one_line_problems(path, problems)


def test_huge_integer(tmp_path: Path, clients_dir: Path) -> None:
    path = write(tmp_path, "clients: " + "9" * 5000 + "\n")
    assert_one_line_problems(path, problems_of(path, clients_dir))


def test_multiple_documents(tmp_path: Path, clients_dir: Path) -> None:
    path = write(tmp_path, "clients: []\n---\nclusters: []\n")
    problems = problems_of(path, clients_dir)
    assert_one_line_problems(path, problems)
    assert problems[0].startswith(f"{path}:2: invalid YAML")  # the second `---`


# --- line marks ----------------------------------------------------------------------------------------


def test_marks_point_at_keys_and_items(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "clusters:\n  - name: a\n    lb:\n      profile: x\n      idle_timeout: 5\n  - {name: b}\n",
        "marks.yaml",
    )
    marked = load_marked(path)
    data, line_of = marked.data, marked.line_of
    assert data["clusters"][0]["lb"]["idle_timeout"] == 5
    assert line_of(("clusters", 0, "lb", "idle_timeout")) == 5
    assert line_of(("clusters", 1)) == 6
    assert line_of(("clusters", 1, "name")) == 6
    # A key that is not there points at its parent, where it has to be added.
    assert line_of(("clusters", 0, "lb", "mode")) == 3
    assert line_of(("nowhere",)) == 1
    assert (
        load_marked(path).problem(("clusters", 1, "name"), "bad", "good")
        == f"{path}:6: clusters[1].name: bad; fix: good"
    )


# --- fuzz: the loader raises MatrixError or returns a Matrix, nothing else ---------------------------

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**6), max_value=10**6),
    st.floats(allow_nan=True),
    st.text(max_size=20),
    st.sampled_from(["idle+30", "idle+0", "azure-slb", "client-go", "kubernetes", "embedded", "direct"]),
)
_keys = st.one_of(
    st.text(max_size=12),
    st.sampled_from(
        ["clients", "clusters", "scenarios", "name", "folder", "env", "lb", "profile", "idle_timeout", "kind"]
    ),
)
_trees = st.recursive(
    _scalars,
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(_keys, children, max_size=4)),
    max_leaves=20,
)

_VALID: dict[str, Any] = yaml.safe_load(FULL)


def _mutate(data: Any, path: list[int], value: Any) -> Any:
    """Replace the node that `path` (indices into sorted keys / items) reaches with `value`."""
    if not path or not isinstance(data, dict | list) or not data:
        return value
    if isinstance(data, dict):
        keys = sorted(data, key=str)
        key = keys[path[0] % len(keys)]
        return {**data, key: _mutate(data[key], path[1:], value)}
    index = path[0] % len(data)
    return [*data[:index], _mutate(data[index], path[1:], value), *data[index + 1 :]]


def _check_loader(content: bytes, clients_dir: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "matrix.yaml"
        path.write_bytes(content)
        try:
            load_matrix(path, clients_dir)
        except MatrixError as exc:
            assert_one_line_problems(path, exc.problems)


_FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@_FUZZ
@given(content=st.binary(max_size=300))
def test_fuzz_bytes(content: bytes, clients_dir: Path) -> None:
    _check_loader(content, clients_dir)


@_FUZZ
@given(content=st.text(max_size=300))
def test_fuzz_text(content: str, clients_dir: Path) -> None:
    _check_loader(content.encode("utf-8", "surrogatepass"), clients_dir)


@_FUZZ
@given(tree=_trees)
def test_fuzz_structures(tree: Any, clients_dir: Path) -> None:
    _check_loader(yaml.safe_dump(tree, allow_unicode=True).encode(), clients_dir)


@_FUZZ
@given(path=st.lists(st.integers(min_value=0, max_value=20), max_size=5), value=_trees)
def test_fuzz_mutated_valid_matrix(path: list[int], value: Any, clients_dir: Path) -> None:
    _check_loader(yaml.safe_dump(_mutate(_VALID, path, value), allow_unicode=True).encode(), clients_dir)


def test_cells_that_outlive_the_watcher_token_are_refused(tmp_path: Path, clients_dir: Path) -> None:
    """Issue 13: a token that expires inside a cell turns into a 401 judged as if about the LB. The
    runner asks for tokens as long as each cell plus a margin, up to 24 h; longer cells are refused."""
    text = """\
clients: [{name: client-python}]
clusters:
  - name: gcp
    lb: {profile: gcp}
scenarios:
  watch:
    interval: 1000
    rounds: 90
  idle-request: {idle: idle+30, rounds: 2}
"""
    path = write(tmp_path, text)
    problems = problems_of(path, clients_dir)
    assert_one_line_problems(path, problems)
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{path}:8: scenarios.watch.rounds: 90 rounds of 1010 s run 25.2 h")
    assert "cluster gcp" in problems[0] and "watcher's token" in problems[0]
    assert "; fix: at most " in problems[0] and "rounds, or a shorter interval" in problems[0]
    # The token follows the cell's length with margin, and the quick and full matrices fit.
    assert token_seconds(600) == 6 * 3600
    assert token_seconds(10 * 3600) == 11 * 3600
    assert token_seconds(30 * 3600) == 24 * 3600
    for name in ("matrix.yaml", "matrix.quick.yaml"):
        for cell in plan(load_matrix(REPO / name, REPO / "clients")):
            assert cell.estimated_seconds + 3600 <= token_seconds(cell.estimated_seconds), cell.id
