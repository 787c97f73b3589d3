"""Base images as build arguments, the extra CA bundle and local base names, without Docker.

The builds themselves are tests/test_images_build.py (slow, a private dockerd)."""

from __future__ import annotations

import io
import re
import tarfile
from pathlib import Path

import pytest

from runner.build import bases, images
from runner.config.matrix import KubernetesCluster
from runner.errors import BuildError, PrerequisiteError

REPO = Path(__file__).resolve().parents[1]
DOCKERFILES = sorted((REPO / "clients").glob("*/Dockerfile"))
#: No .NET on this machine: `base_images: local` has no base for dotnet's two (a mapping can give them).
NO_LOCAL_BASE = {"DOTNET_SDK_IMAGE", "DOTNET_RUNTIME_IMAGE"}


def _stages(text: str) -> list[str]:
    return re.split(r"^FROM ", text, flags=re.MULTILINE)[1:]


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.parent.name)
def test_client_dockerfiles_take_their_bases_as_arguments_with_public_defaults(path: Path) -> None:
    text = path.read_text()
    defaults = dict(re.findall(r"^ARG\s+(\w+_IMAGE)=(\S+)$", text, re.MULTILINE))
    assert defaults and all(("/" in v or ":" in v) and not v.startswith("watchdrop") for v in defaults.values())
    for stage in _stages(text):
        image = stage.split()[0]
        assert re.fullmatch(r"\$\{(\w+_IMAGE)\}", image) and image[2:-1] in defaults, f"FROM {image}"


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.parent.name)
def test_the_ca_bundle_reaches_the_build_stage_only(path: Path) -> None:
    stages = _stages(path.read_text())
    assert len(stages) == 2, "a build stage and a final stage"
    # an optional COPY: `[t]` matches nothing when the runner placed no bundle, and another source
    # of the same COPY keeps the classic builder from failing on "no source files"
    copy = re.search(r"^COPY (.*) watchdrop-build-ca\.cr\[t\] ", stages[0], re.MULTILINE)
    assert copy and copy.group(1).strip()
    assert "watchdrop-build-ca" not in stages[1]


def test_the_timer_server_and_capture_take_a_base_argument() -> None:
    assert images.declared_args((images.TIMER_SERVER_DIR / "Dockerfile").read_text()) == {"PYTHON_IMAGE"}
    assert images.declared_args(images.CAPTURE_DOCKERFILE) == {"DEBIAN_IMAGE"}


def test_bases_reach_only_the_dockerfiles_that_declare_them_and_change_the_tag() -> None:
    go = REPO / "clients" / "client-go"
    mapping = {"GO_IMAGE": "mirror.example/golang:1.26", "PYTHON_IMAGE": "mirror.example/python:3.11"}
    spec = images.client_image(go, {}, bases=mapping)
    assert dict(spec.buildargs) == {"GO_IMAGE": "mirror.example/golang:1.26"}
    assert spec.tag != images.client_image(go, {}).tag
    assert dict(images.client_image(go, {}).buildargs) == {}  # public: today's build, today's tag
    assert dict(images.timer_server_image(bases=mapping).buildargs) == {"PYTHON_IMAGE": "mirror.example/python:3.11"}
    assert dict(images.capture_image(bases=mapping).buildargs) == {}


def test_base_images_setting() -> None:
    assert images.resolve_bases(None, {"GO_IMAGE"}) == {}
    assert images.resolve_bases("public", {"GO_IMAGE"}) == {}
    assert images.resolve_bases({"GO_IMAGE": "x/go:1"}, {"GO_IMAGE"}) == {"GO_IMAGE": "x/go:1"}
    local = images.resolve_bases("local", {"PYTHON_IMAGE", "DEBIAN_IMAGE", "SOMETHING_ELSE"})
    assert set(local) == {"PYTHON_IMAGE", "DEBIAN_IMAGE"}
    assert all(re.fullmatch(r"watchdrop-local/base-[a-z]+:[0-9a-f]{16}", ref) for ref in local.values())
    assert local == images.resolve_bases("local", {"PYTHON_IMAGE", "DEBIAN_IMAGE"})  # computed, stable
    with pytest.raises(BuildError, match="not a choice"):
        images.resolve_bases("mine", {"GO_IMAGE"})


def test_every_build_argument_a_dockerfile_names_has_a_local_base() -> None:
    args = images.base_image_args([]) | set().union(*(
        set(re.findall(r"^ARG\s+(\w+_IMAGE)=", p.read_text(), re.MULTILINE)) for p in DOCKERFILES))
    assert args - {"PYTHON_IMAGE", "DEBIAN_IMAGE"} and args - NO_LOCAL_BASE <= set(bases.BASE_FOR_ARG)
    for base in bases.BASES.values():
        assert base.parent is None or base.dockerfile.is_file(), base.name


def test_the_ca_bundle_goes_into_the_context_but_not_into_the_tag(tmp_path: Path) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\nxx\n-----END CERTIFICATE-----\n")
    spec = images.client_image(REPO / "clients" / "client-python", {})
    with_ca, without = io.BytesIO(), io.BytesIO()
    images.write_context(images._context_entries(spec, bundle), with_ca)
    images.write_context(images._context_entries(spec, None), without)
    names = {m.name for m in tarfile.open(fileobj=io.BytesIO(with_ca.getvalue()))}
    assert images.CA_FILE in names and {"Dockerfile", "requirements.txt", "watcher.py"} <= names
    assert {m.name for m in tarfile.open(fileobj=io.BytesIO(without.getvalue()))} == names - {images.CA_FILE}
    assert spec.tag == images.client_image(REPO / "clients" / "client-python", {}).tag
    with pytest.raises(BuildError, match="build_ca_bundle"):
        images._context_entries(spec, tmp_path / "missing.pem")


def test_the_cluster_takes_base_images_and_a_ca_bundle() -> None:
    common = {"name": "k", "kind": "kubernetes", "context": "c", "registry": "r.example/wd"}
    assert KubernetesCluster.model_validate(common).base_images == "public"
    cluster = KubernetesCluster.model_validate({**common, "base_images": "local", "build_ca_bundle": "/x.pem"})
    assert (cluster.base_images, cluster.build_ca_bundle) == ("local", "/x.pem")
    assert KubernetesCluster.model_validate({**common, "base_images": {"GO_IMAGE": "m/go:1"}}).base_images == {
        "GO_IMAGE": "m/go:1"}
    for bad in ("mine", {"go_image": "m/go:1"}):
        with pytest.raises(ValueError):
            KubernetesCluster.model_validate({**common, "base_images": bad})


def test_the_host_mirror_is_read_from_apt() -> None:
    sources = bases.apt_sources()
    assert all(line.startswith("deb ") and line.split()[2].startswith(bases.SUITE) for line in sources)


class _FakeEngine:
    """Enough of the docker SDK's APIClient: nothing in the registry, every base image present."""

    def __init__(self) -> None:
        self.builds: list[dict] = []
        self.pushed: list[str] = []

    def inspect_distribution(self, ref: str) -> None:
        raise LookupError(ref)

    def inspect_image(self, ref: str) -> dict:
        return {}

    def build(self, **kwargs: object):
        names = {m.name for m in tarfile.open(fileobj=kwargs["fileobj"])}  # type: ignore[arg-type]
        self.builds.append({**kwargs, "names": names})
        return iter([{"stream": "Successfully built\n"}])

    def push(self, repository: str, tag: str, **_: object):
        self.pushed.append(f"{repository}:{tag}")
        return iter([{"status": "Pushed"}])


def _cell(client: str):
    from runner.config.plan import Cell

    return Cell(client=client, folder=client, cluster="k", cluster_kind="kubernetes", scenario="watch",
                profile=None, idle_timeout=240, interval=270, idle=None, detection_timeout=10, rounds=2,
                src=REPO / "clients" / client)


def test_build_and_push_with_local_bases_and_a_ca(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_rust() -> bases.Toolchain:
        raise PrerequisiteError("`rustc --print sysroot` failed", fix="install rustc")

    monkeypatch.setitem(bases.BASES, "base-rust", bases.Base("base-rust", "base-debian", ("RUST_IMAGE",), no_rust))
    bundle = tmp_path / "ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\nxx\n-----END CERTIFICATE-----\n")
    engine = _FakeEngine()
    cells = [_cell("client-go"), _cell("kube-rs")]
    got = images.build_and_push(cells, "reg.example/wd", tmp_path / "logs", say=lambda _: None, api=engine,
                                base_images="local", ca_bundle=bundle)
    assert got.watcher(cells[0]) and got.watcher(cells[1]) is None
    assert "no base image" in (got.problem(cells[1]) or "") and "rustc" in (got.problem(cells[1]) or "")
    assert [b["tag"].split("/")[-1].split(":")[0] for b in engine.builds] == [
        "watchdrop-timer-server", "watchdrop-capture", "watchdrop-client-go"]
    for build in engine.builds:
        assert build["network_mode"] == "host" and images.CA_FILE in build["names"]
        assert all(v.startswith("watchdrop-local/base-") for v in (build["buildargs"] or {}).values())
    assert set(engine.builds[2]["buildargs"]) == {"GO_IMAGE", "RUNTIME_IMAGE"}
    assert engine.pushed == [b["tag"] for b in engine.builds]


def test_a_client_with_no_local_base_is_unavailable_and_never_built(tmp_path: Path) -> None:
    """dotnet's bases (mcr.microsoft.com) have no local stand-in: with `base_images: local` its cells
    are SKIPPED with the reason, and no build starts (it would reach for a public registry and
    send DNS lookups out); a mapping of its own for those arguments makes it buildable again."""
    engine = _FakeEngine()
    cells = [_cell("client-go"), _cell("dotnet")]
    got = images.build_and_push(cells, "reg.example/wd", tmp_path / "logs", say=lambda _: None, api=engine,
                                base_images="local")
    assert got.watcher(cells[0]) and got.watcher(cells[1]) is None
    reason = got.skip_reason(cells[1]) or ""
    assert "DOTNET_RUNTIME_IMAGE, DOTNET_SDK_IMAGE" in reason and "base_images" in reason
    assert got.skip_reason(cells[0]) is None
    assert not any("dotnet" in b["tag"] for b in engine.builds)
    mapped = images.watcher_specs([cells[1]], base_images={"DOTNET_SDK_IMAGE": "m/sdk", "DOTNET_RUNTIME_IMAGE": "m/rt"})
    assert not mapped.unavailable and mapped.specs
