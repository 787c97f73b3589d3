"""`python -m runner versions`: registry payloads, newest-stable selection, the status, and the command,
all without a network (recorded payloads under tests/fixtures/registries/, a fake fetch)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
import requests

from runner.build import registries
from runner.build.registries import REGISTRIES, Registry, RegistryError
from runner.build.releases import Status, compare, newest_stable
from runner.cli import build_parser, main
from runner.cli.versions import versions_main
from runner.config.descriptor import load_descriptor

REPO = Path(__file__).resolve().parent.parent
CLIENTS = REPO / "clients"
PAYLOADS = Path(__file__).parent / "fixtures" / "registries"


def payload(name: str) -> bytes:
    return (PAYLOADS / name).read_bytes()


# --- parsing recorded payloads ---------------------------------------------------------------------


def test_pypi_payload_leaves_out_yanked_and_fileless_releases() -> None:
    versions = registries.parse_pypi(payload("pypi-kopf.json"))
    assert "1.45.3" not in versions  # every file yanked
    assert "1.44.9" not in versions  # registered, nothing uploaded
    assert {"1.44.5", "1.45.2", "1.46.0rc1"} <= set(versions)
    assert newest_stable(versions, python=True) == "1.45.2"


def test_npm_payload_leaves_out_deprecated_versions() -> None:
    versions = registries.parse_npm(payload("npm-client-node.json"))
    assert "1.9.9" not in versions
    assert {"1.0.0", "2.0.1", "2.1.0-rc.1"} <= set(versions)
    assert newest_stable(versions, python=False) == "2.0.1"


def test_maven_metadata_versions_skip_snapshots_milestones_and_rcs() -> None:
    versions = registries.parse_maven(payload("maven-kubernetes-client.xml"))
    assert versions[0] == "6.13.5" and "8.0.1-SNAPSHOT" in versions
    assert newest_stable(versions, python=False) == "8.0.0"


def test_crates_sparse_index_leaves_out_yanked_versions() -> None:
    versions = registries.parse_crates(payload("crates-kube.jsonl"))
    assert "5.0.1" not in versions and "0.11.1" not in versions  # yanked
    assert "5.1.0-rc.1" in versions
    assert newest_stable(versions, python=False) == "5.0.0"


def test_go_proxy_list_is_compared_within_the_pins_major() -> None:
    versions = registries.parse_goproxy(payload("goproxy-client-go.txt"))
    assert "v0.36.0-alpha.2" in versions
    # client-go's 2016 v1.5.x tags rank highest by semver but are not what v0.x users upgrade to.
    assert newest_stable(versions, python=False) == "v1.5.2"
    assert newest_stable(versions, python=False, major=0) == "v0.36.0"


def test_nuget_flat_container_versions() -> None:
    versions = registries.parse_nuget(payload("nuget-kubernetesclient.json"))
    assert newest_stable(versions, python=False) == "22.0.2"


@pytest.mark.parametrize("kind,garbage", [
    ("pypi", b"<html>"), ("npm", b"{}"), ("maven", b"not xml"), ("crates", b"{oops"), ("nuget", b"[]"),
])
def test_unreadable_payloads_raise_what_fetch_turns_into_a_reason(kind: str, garbage: bytes) -> None:
    with pytest.raises((ValueError, KeyError, TypeError, AttributeError, registries.ET.ParseError)):
        REGISTRIES[kind].parse(garbage)


def test_registry_urls() -> None:
    assert registries.pypi_url("kubernetes_asyncio") == "https://pypi.org/pypi/kubernetes_asyncio/json"
    assert registries.npm_url("@kubernetes/client-node") == "https://registry.npmjs.org/@kubernetes%2Fclient-node"
    assert registries.maven_url("io.kubernetes:client-java") == (
        "https://repo1.maven.org/maven2/io/kubernetes/client-java/maven-metadata.xml")
    assert registries.goproxy_url("github.com/Azure/go-autorest") == (
        "https://proxy.golang.org/github.com/!azure/go-autorest/@v/list")
    assert registries.nuget_url("KubernetesClient") == (
        "https://api.nuget.org/v3-flatcontainer/kubernetesclient/index.json")
    assert [registries.crates_url(n) for n in ("a", "ab", "abc", "kube", "Serde_json")] == [
        "https://index.crates.io/1/a", "https://index.crates.io/2/ab", "https://index.crates.io/3/a/abc",
        "https://index.crates.io/ku/be/kube", "https://index.crates.io/se/rd/serde_json"]
    with pytest.raises(RegistryError, match="group:artifact"):
        registries.maven_url("client-java")


# --- fetch: every failure becomes one short reason -------------------------------------------------


class _Resp:
    def __init__(self, status: int, content: bytes = b"") -> None:
        self.status_code = status
        self.content = content


@pytest.mark.parametrize("outcome,reason", [
    (requests.ConnectionError("HTTPSConnectionPool(host='api.nuget.org', port=443): Max retries exceeded "
                              "(Caused by NameResolutionError(...))"),
     "NuGet not reachable from this machine: api.nuget.org does not resolve"),
    (requests.ConnectionError("[Errno 111] Connection refused"),
     "NuGet not reachable from this machine: api.nuget.org refused the connection"),
    (requests.ConnectTimeout("slow"), "NuGet did not answer within 10 s"),
    (_Resp(404), "NuGet has no package KubernetesClient"),
    (_Resp(503), "NuGet answered HTTP 503"),
    (_Resp(200, b"<html>"), "NuGet sent an answer that cannot be read (JSONDecodeError)"),
])
def test_fetch_failures_become_one_reason(monkeypatch: pytest.MonkeyPatch, outcome: object, reason: str) -> None:
    def fake_get(url: str, **kwargs: object) -> object:
        assert kwargs["timeout"] == 10.0 and "User-Agent" in kwargs["headers"]  # type: ignore[operator]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    monkeypatch.setattr(registries.requests, "get", fake_get)
    with pytest.raises(RegistryError) as info:
        registries.fetch_released(REGISTRIES["nuget"], "KubernetesClient")
    assert str(info.value) == reason


def test_fetch_parses_a_good_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []

    def fake_get(url: str, **kwargs: object) -> _Resp:
        seen.append(url)
        return _Resp(200, payload("nuget-kubernetesclient.json"))

    monkeypatch.setattr(registries.requests, "get", fake_get)
    assert "21.0.8" in registries.fetch_released(REGISTRIES["nuget"], "KubernetesClient")
    assert seen == ["https://api.nuget.org/v3-flatcontainer/kubernetesclient/index.json"]


# --- newest stable and the status ------------------------------------------------------------------


@pytest.mark.parametrize("versions,python,newest", [
    (["1.0.0", "1.1.0rc1", "1.1.0.dev3", "1.1.0a1", "1.0.1", "1.0.1.post1", "not a version"], True, "1.0.1.post1"),
    (["36.1.0", "37.0.2", "37.0.10", "38.0.0b1"], True, "37.0.10"),
    (["v1.2.3", "v1.3.0-rc.1", "v2.0.0+incompatible", "v0.0.0-20240101000000-abcdef123456", "v1.2.10"],
     False, "v1.2.10"),
    (["2.0.0-alpha", "2.0.0-beta.2", "1.9.0", "1.10.0"], False, "1.10.0"),
    (["7.0.0", "7.1.0-SNAPSHOT", "7.1.0.M2", "7.1.0.RC1"], False, "7.0.0"),
    (["1.0.0-rc.1"], False, None),
    ([], True, None),
])
def test_newest_stable_skips_pre_releases(versions: list[str], python: bool, newest: str | None) -> None:
    assert newest_stable(versions, python=python) == newest


@pytest.mark.parametrize("pinned,newest,python,status", [
    ("37.0.2", "37.0.2", True, Status("current")),
    ("37.0.2", "38.1.0", True, Status("behind", by="1 major")),
    ("1.45.2", "1.47.0", True, Status("behind", by="2 minor")),
    ("36.1.0", "36.1.3", True, Status("behind", by="3 patch")),
    ("1.0", "1.0.0", True, Status("current")),
    ("1.0.0", "1.0.0.post1", True, Status("behind", by="post-release")),
    ("38.0.0b1", "37.0.2", True, Status("ahead?")),
    ("38.0.0b1", "38.0.0", True, Status("behind", by="pre-release pin")),
    ("v0.34.4", "v0.36.0", False, Status("behind", by="2 minor")),
    ("v0.34.4", "v0.34.4", False, Status("current")),
    ("5.0.0", "4.2.0", False, Status("ahead?")),
    ("2.0.1", "2.0.1", False, Status("current")),
    ("1.0.0", "2.0.1", False, Status("behind", by="1 major")),
    ("1.2.3", "1.2.3.1", False, Status("behind", by="patch")),
    ("1.2.3", "1.2.3.0", False, Status("current")),
    ("2.1.0-rc.1", "2.0.1", False, Status("unknown", reason="pin 2.1.0-rc.1 is not a stable release")),
    ("latest", "1.0.0", True, Status("unknown", reason="pin latest is not a version")),
])
def test_status(pinned: str, newest: str, python: bool, status: Status) -> None:
    assert compare(pinned, newest, python=python) == status


def test_status_text() -> None:
    assert Status("behind", by="4 minor").text == "behind (4 minor)"
    assert Status("unknown", reason="NuGet not reachable").text == "unknown (NuGet not reachable)"
    assert Status("ahead?").text == "ahead?"


# --- the command -----------------------------------------------------------------------------------

#: client-go's pin as the repository has it; the fake Go proxy serves one minor above it (and the
#: old v1.5.x line, which is another major).
GO_PIN = load_descriptor(CLIENTS / "client-go").version
GO_NEXT = f"v0.{int(GO_PIN.split('.')[1]) + 1}"

#: What the fake registries serve: newer releases for some libraries, NuGet unreachable.
SERVED: dict[tuple[str, str], list[str]] = {
    ("go", "k8s.io/client-go"): [GO_PIN, f"{GO_NEXT}.0-rc.1", f"{GO_NEXT}.2", "v1.5.2"],
    ("pypi", "kubernetes"): ["37.0.2", "38.0.0b1"],
    ("pypi", "kubernetes_asyncio"): ["36.1.0", "36.1.2"],
    ("pypi", "kopf"): ["1.45.2"],
    ("maven", "io.kubernetes:client-java"): ["27.0.0", "28.0.0", "28.0.1-SNAPSHOT"],
    ("maven", "io.fabric8:kubernetes-client"): ["8.0.0"],
    ("npm", "@kubernetes/client-node"): ["1.0.0", "2.0.1", "2.1.0"],
    ("crates", "kube"): ["5.0.0", "4.9.0"],
}


def fake_fetch(registry: Registry, library: str) -> list[str]:
    if registry.kind == "nuget":
        raise RegistryError("NuGet not reachable from this machine: api.nuget.org does not resolve")
    return SERVED[(registry.kind, library)]


def run_versions(capsys: pytest.CaptureFixture[str], *argv: str, fetch: object = fake_fetch) -> str:
    args = build_parser().parse_args(["versions", *argv])
    assert versions_main(args, fetch=fetch) == 0  # type: ignore[arg-type]
    return capsys.readouterr().out


def rows_by_client(out: str) -> dict[str, str]:
    return {line.split()[0]: line for line in out.splitlines() if line.strip()}


def test_every_folder_prints_with_its_status_and_a_registry_failure_hides_nothing(
        capsys: pytest.CaptureFixture[str]) -> None:
    out = run_versions(capsys, "--clients", str(CLIENTS))
    rows = rows_by_client(out)
    assert rows["client"].split() == ["client", "registry", "library", "pinned", "newest", "stable", "status"]
    assert "Go proxy" in rows["client-go"] and f"{GO_NEXT}.2" in rows["client-go"]
    assert rows["client-go"].endswith("behind (1 minor)")  # v1.5.2 is another major line
    assert rows["client-python"].endswith("current")  # 38.0.0b1 is a pre-release
    assert rows["kubernetes-asyncio"].endswith("behind (2 patch)")
    assert rows["java"].endswith("behind (1 major)") and "28.0.0" in rows["java"]
    assert rows["kube-rs"].endswith("current")
    assert rows["javascript"].endswith("behind (1 minor)")
    assert rows["dotnet"].endswith("unknown (NuGet not reachable from this machine: api.nuget.org does not resolve)")
    assert "KubernetesClient" in rows["dotnet"] and "21.0.8" in rows["dotnet"]
    assert "javascript-1x" not in out  # variants come from a matrix
    assert out.rstrip().endswith("9 pins: 4 current, 4 behind, 1 unknown")


def test_json_is_a_list_of_records(capsys: pytest.CaptureFixture[str]) -> None:
    records = json.loads(run_versions(capsys, "--clients", str(CLIENTS), "--json"))
    by = {r["client"]: r for r in records}
    assert len(records) == 9
    assert by["java"] == {
        "client": "java", "columns": [], "folder": "java", "language": "java", "registry": "Maven Central",
        "library": "io.kubernetes:client-java", "pinned": "27.0.0", "newest": "28.0.0", "status": "behind",
        "behind": "1 major", "reason": None,
    }
    assert by["dotnet"]["status"] == "unknown" and by["dotnet"]["newest"] is None
    assert "NuGet not reachable" in by["dotnet"]["reason"]


def test_github_format(capsys: pytest.CaptureFixture[str]) -> None:
    out = run_versions(capsys, "--clients", str(CLIENTS), "--format", "github")
    assert out.splitlines()[0].startswith("| client")
    assert out.splitlines()[1].startswith("|---")


def test_each_library_is_asked_once_and_a_crashing_fetch_stays_in_its_row(
        capsys: pytest.CaptureFixture[str]) -> None:
    asked: list[tuple[str, str]] = []

    def fetch(registry: Registry, library: str) -> list[str]:
        asked.append((registry.kind, library))
        if registry.kind == "crates":
            raise UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")
        return fake_fetch(registry, library)

    out = run_versions(capsys, "--clients", str(CLIENTS), fetch=fetch)
    assert sorted(asked) == sorted(set(asked)) and len(asked) == 9
    rows = rows_by_client(out)
    assert "unknown (crates.io: UnicodeDecodeError" in rows["kube-rs"]
    assert rows["kopf"].endswith("current")


MATRIX = """\
clients:
  - name: javascript
  - name: javascript-informer
    folder: javascript
    env: {WATCHDROP_STYLE: informer}
  - name: javascript-1x
    folder: javascript
    build_env: {CLIENT_NODE_VERSION: "1.0.0"}
  - name: client-go
  - name: client-go-watch
    folder: client-go
    env: {WATCHDROP_STYLE: watch}
clusters:
  - name: direct
    lb: {profile: direct-quick}
scenarios:
  watch: {interval: idle+20, detection_timeout: 10, rounds: 1}
"""


def test_a_matrix_lists_its_pins_and_a_variant_shows_its_own(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    matrix = tmp_path / "m.yaml"
    matrix.write_text(MATRIX)
    out = run_versions(capsys, str(matrix), "--clients", str(CLIENTS))
    rows = rows_by_client(out)
    assert set(rows) == {"client", "javascript", "javascript-1x", "client-go", "3"}  # header, rows, summary
    assert "javascript-informer" not in rows and "client-go-watch" not in rows  # same pin: one row
    assert rows["javascript-1x"].split()[3:5] == ["1.0.0", "2.1.0"]
    assert rows["javascript-1x"].endswith("behind (1 major)")
    assert rows["javascript"].split()[3] == "2.0.1"
    records = json.loads(run_versions(capsys, str(matrix), "--clients", str(CLIENTS), "--json"))
    assert [(r["client"], r["columns"], r["pinned"]) for r in records] == [
        ("javascript", ["javascript", "javascript-informer"], "2.0.1"),
        ("javascript-1x", ["javascript-1x"], "1.0.0"),
        ("client-go", ["client-go", "client-go-watch"], GO_PIN),
    ]


def test_the_repositorys_matrix_has_the_1x_variant(capsys: pytest.CaptureFixture[str]) -> None:
    records = json.loads(run_versions(capsys, str(REPO / "matrix.yaml"), "--json"))
    assert {(r["client"], r["pinned"]) for r in records} >= {("javascript", "2.0.1"), ("javascript-1x", "1.0.0")}


def test_unknown_language_is_unknown_not_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "clients" / "cobol"
    folder.mkdir(parents=True)
    (folder / "client.yaml").write_text(
        'name: cobol\nlanguage: cobol\nlibrary: kube-cbl\nversion: "1.0.0"\napi_style: CALL\nrun: ["x"]\n')
    out = run_versions(capsys, "--clients", str(tmp_path / "clients"))
    assert rows_by_client(out)["cobol"].endswith("unknown (no registry known for language cobol)")


@pytest.mark.parametrize("argv,names", [
    (["versions", "no-such-matrix.yaml"], "no-such-matrix.yaml: no such matrix file"),
    (["versions", "--clients", "no-such-clients"], "no-such-clients: no such clients folder"),
])
def test_bad_input_exits_4_with_a_clear_line(capsys: pytest.CaptureFixture[str], argv: list[str], names: str) -> None:
    assert main(argv) == 4
    err = capsys.readouterr().err
    assert err.startswith(f"watchdrop: error: {names}") and "fix: " in err and "Traceback" not in err


def test_a_broken_matrix_exits_4_naming_its_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    matrix = tmp_path / "m.yaml"
    matrix.write_text(MATRIX.replace("name: client-go-watch", "name: Client_Go"))
    assert main(["versions", str(matrix), "--clients", str(CLIENTS)]) == 4
    err = capsys.readouterr().err
    assert f"{matrix}:" in err and "fix:" in err and "Traceback" not in err


def test_registries_are_asked_concurrently(capsys: pytest.CaptureFixture[str]) -> None:
    # Asked one after another, the first fetch would wait for a second that never comes.
    both = threading.Barrier(2, timeout=5)

    def fetch(registry: Registry, library: str) -> list[str]:
        if library in ("kopf", "kube"):
            both.wait()
        return fake_fetch(registry, library)

    rows = rows_by_client(run_versions(capsys, "--clients", str(CLIENTS), fetch=fetch))
    assert rows["kopf"].endswith("current") and rows["kube-rs"].endswith("current")
