"""Images for the kubernetes backend: built with the docker SDK, tagged by content hash, pushed.

Three kinds: one per client folder (its own Dockerfile; a variant's build_env goes in as build
arguments), the timer server (images/timer-server/) and the capture sidecar (tcpdump with file
capabilities, so it runs as a non-root user with only NET_RAW and NET_ADMIN; its Dockerfile is
below). The tag is a hash of the build context, the Dockerfile, the build arguments and the
platform, so an image is built and pushed once per content, and a tag already in the registry is
neither built nor pushed again. It also makes `imagePullPolicy: IfNotPresent` safe: a changed
watcher gets a new tag.

`--images-from REGISTRY` takes the same names and tags from a registry someone filled before
(e.g. a CI machine with Docker ran `build_and_push`); nothing is built then. Without a Docker
engine and without `--images-from`, the run stops with a PrerequisiteError naming both options.

Base images and proxies. Every Dockerfile takes its base images as build arguments (GO_IMAGE,
PYTHON_IMAGE, ...; DEBIAN_IMAGE for the capture sidecar) whose defaults are the public images a
user gets. A cluster's `base_images:` maps those arguments to other images (`local`: images built
on this machine from Debian packages, runner/build/bases.py); only the arguments a Dockerfile
declares are passed, and they are part of the tag. Builds use host networking (package registries:
Go proxy, PyPI, npm, Maven, crates). `build_ca_bundle:` names a PEM file of extra CAs (a
TLS-inspecting proxy's): the runner adds it to the build context as watchdrop-build-ca.crt, which
the Dockerfiles copy into their build stages only (an optional COPY: a plain `docker build`
without it works), so it is never in a final image and never in its history. It is not part of
the tag: it changes how the packages are fetched, not what is built.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import IO, Any

from runner.build.clients import IGNORED
from runner.config.plan import Cell
from runner.errors import BuildError, PrerequisiteError, WatchdropError

REPO = Path(__file__).resolve().parents[2]
TIMER_SERVER_DIR = REPO / "images" / "timer-server"
PREFIX = "watchdrop-"
#: How long the runner waits for the Docker engine to answer a ping.
DOCKER_TIMEOUT = 10

# The capture sidecar. File capabilities on tcpdump let uid 65532 capture with the pod's NET_RAW
# and NET_ADMIN (added in the pod spec, everything else dropped); sh, sed, wc and tar are the
# runner's tools in the pod (stop the watcher, stop tcpdump, copy the file out).
CAPTURE_DOCKERFILE = """\
ARG DEBIAN_IMAGE=debian:bookworm-slim
FROM ${DEBIAN_IMAGE}
RUN apt-get update \\
 && apt-get install -y --no-install-recommends tcpdump libcap2-bin \\
 && setcap cap_net_raw,cap_net_admin=eip "$(command -v tcpdump)" \\
 && rm -rf /var/lib/apt/lists/*
USER 65532:65532
WORKDIR /capture
"""

#: (client folder, build_env as sorted JSON): one watcher image, as run_matrix keys builds.
ImageKey = tuple[str, str]

_ARG = re.compile(r"^\s*ARG\s+([A-Za-z_][A-Za-z0-9_]*)", re.MULTILINE | re.IGNORECASE)
#: The extra CA bundle's name in a build context (see the module's docstring).
CA_FILE = "watchdrop-build-ca.crt"
#: `base_images:` as a cluster gives it: public defaults, `local`, or build argument -> image.
BaseImages = str | Mapping[str, str] | None


def declared_args(dockerfile: str) -> set[str]:
    return set(_ARG.findall(dockerfile))


def _base_args(dockerfile: str, bases: Mapping[str, str]) -> dict[str, str]:
    """The base-image build arguments this Dockerfile declares (a variant's build_env is separate)."""
    declared = declared_args(dockerfile)
    return {k: v for k, v in bases.items() if k in declared}


def image_key(cell: Cell) -> ImageKey:
    return cell.folder, json.dumps(dict(cell.build_env), sort_keys=True)


@dataclass(frozen=True)
class ImageSpec:
    """What to build: a context folder with its Dockerfile, or an inline Dockerfile and no context."""

    #: Repository name under the registry, e.g. watchdrop-client-go.
    name: str
    context: Path | None = None
    dockerfile: str | None = None
    buildargs: Mapping[str, str] = field(default_factory=dict)
    #: e.g. linux/amd64; None: the engine's own (which must match the cluster's nodes).
    platform: str | None = None

    #: The content hash, taken once when the spec is made: the reference names that content.
    tag: str = field(init=False, default="")

    def __post_init__(self) -> None:
        object.__setattr__(self, "buildargs", MappingProxyType(dict(self.buildargs)))
        object.__setattr__(self, "tag", self._content_hash())

    def _content_hash(self) -> str:
        h = hashlib.sha256()
        if self.context is not None:
            for path in sorted(p for p in self.context.rglob("*") if p.is_file()):
                rel = path.relative_to(self.context)
                if set(rel.parts) & IGNORED:
                    continue
                h.update(str(rel).encode() + b"\0" + path.read_bytes() + b"\0")
        h.update((self.dockerfile or "").encode() + b"\0")
        h.update(json.dumps(dict(self.buildargs), sort_keys=True).encode() + b"\0")
        h.update((self.platform or "").encode())
        return h.hexdigest()[:16]

    def ref(self, registry: str) -> str:
        return f"{registry.rstrip('/')}/{self.name}:{self.tag}"


def kubernetes_problem(src: Path | None, build_env: Mapping[str, str]) -> str | None:
    """Why this client cannot run on a kubernetes cluster (the cell is then SKIPPED), or None."""
    if src is None:
        return "no client folder"
    dockerfile = src / "Dockerfile"
    if not dockerfile.is_file():
        return f"no Dockerfile in clients/{src.name} (the kubernetes backend runs the watcher as an image)"
    declared = set(_ARG.findall(dockerfile.read_text(errors="replace")))
    missing = sorted(set(build_env) - declared)
    if missing:
        return (f"clients/{src.name}/Dockerfile takes no build argument {', '.join(missing)} "
                f"(the variant's build_env; add `ARG {missing[0]}` and use it)")
    return None


def client_image(src: Path, build_env: Mapping[str, str], platform: str | None = None,
                 bases: Mapping[str, str] | None = None) -> ImageSpec:
    problem = kubernetes_problem(src, build_env)
    if problem:
        raise BuildError(problem)
    args = {**_base_args((src / "Dockerfile").read_text(errors="replace"), bases or {}), **build_env}
    return ImageSpec(name=PREFIX + src.name, context=src, buildargs=args, platform=platform)


def timer_server_image(platform: str | None = None, bases: Mapping[str, str] | None = None) -> ImageSpec:
    args = _base_args((TIMER_SERVER_DIR / "Dockerfile").read_text(), bases or {})
    return ImageSpec(name=PREFIX + "timer-server", context=TIMER_SERVER_DIR, buildargs=args, platform=platform)


def capture_image(platform: str | None = None, bases: Mapping[str, str] | None = None) -> ImageSpec:
    args = _base_args(CAPTURE_DOCKERFILE, bases or {})
    return ImageSpec(name=PREFIX + "capture", dockerfile=CAPTURE_DOCKERFILE, buildargs=args, platform=platform)


def base_image_args(cells: Iterable[Cell]) -> set[str]:
    """Every build argument the images for these cells declare (the base images among them)."""
    texts = [CAPTURE_DOCKERFILE, (TIMER_SERVER_DIR / "Dockerfile").read_text()]
    texts += [(c.src / "Dockerfile").read_text(errors="replace") for c in cells
              if c.src is not None and (c.src / "Dockerfile").is_file()]
    return set().union(*(declared_args(t) for t in texts))


def resolve_bases(setting: BaseImages, args: Iterable[str]) -> dict[str, str]:
    """`base_images:` -> build argument -> image. None/`public`: the Dockerfiles' defaults (nothing)."""
    if setting is None or setting == "public":
        return {}
    if setting == "local":
        from runner.build import bases

        return bases.local_refs(args)
    if isinstance(setting, str):
        raise BuildError(f"base_images: {setting!r} is not a choice",
                         fix="write public, local, or a mapping like {GO_IMAGE: myregistry/golang:1.26}")
    return dict(setting)


@dataclass
class Images:
    """Image references for one registry; a watcher image that could not be had says why."""

    timer_server: str
    capture: str
    watchers: dict[ImageKey, str] = field(default_factory=dict)
    failed: dict[ImageKey, str] = field(default_factory=dict)
    #: Images that cannot be had on this machine at all (their cells are SKIPPED, not ERROR).
    unavailable: dict[ImageKey, str] = field(default_factory=dict)

    def watcher(self, cell: Cell) -> str | None:
        return self.watchers.get(image_key(cell))

    def skip_reason(self, cell: Cell) -> str | None:
        return self.unavailable.get(image_key(cell))

    def problem(self, cell: Cell) -> str | None:
        key = image_key(cell)
        if key in self.watchers:
            return None
        return self.failed.get(key, f"no image for {cell.folder}")


def no_local_base(dockerfile: str) -> list[str]:
    """The base-image arguments (`*_IMAGE`) a Dockerfile declares that no local base stands in for."""
    from runner.build import bases

    return sorted(a for a in declared_args(dockerfile) if a.endswith("_IMAGE") and a not in bases.BASE_FOR_ARG)


@dataclass
class WatcherSpecs:
    """What watcher_specs found: images to build, images that failed, and images that cannot be had here."""

    specs: dict[ImageKey, ImageSpec] = field(default_factory=dict)
    problems: dict[ImageKey, str] = field(default_factory=dict)
    unavailable: dict[ImageKey, str] = field(default_factory=dict)


def watcher_specs(cells: Iterable[Cell], platform: str | None = None, base_images: BaseImages = None
                  ) -> WatcherSpecs:
    """One spec per watcher image; a client whose image cannot be had (e.g. no local toolchain for
    its base) is a problem of its cells only. With `base_images: local`, a Dockerfile whose base
    has no local stand-in (.NET) is unavailable: building it would reach for a public registry
    (and send DNS lookups out), which this kind of machine cannot and must not do."""
    out = WatcherSpecs()
    for cell in cells:
        key = image_key(cell)
        if key in out.specs or key in out.problems or key in out.unavailable:
            continue
        problem = kubernetes_problem(cell.src, cell.build_env)
        if problem or cell.src is None:
            out.problems[key] = problem or "no client folder"
            continue
        dockerfile = (cell.src / "Dockerfile").read_text()
        missing = no_local_base(dockerfile) if base_images == "local" else []
        if missing:
            out.unavailable[key] = (f"no local base image for {', '.join(missing)} (base_images: local builds only "
                                    f"Debian-packaged toolchains); map {missing[0]} to an image of your own "
                                    "in the cluster's base_images")
            continue
        try:
            bases = resolve_bases(base_images, declared_args(dockerfile))
        except WatchdropError as exc:
            out.problems[key] = f"no base image: {exc.message}"
            continue
        out.specs[key] = client_image(cell.src, cell.build_env, platform, bases)
    return out


def prebuilt(cells: Iterable[Cell], registry: str, platform: str | None = None,
             base_images: BaseImages = None) -> Images:
    """`--images-from REGISTRY`: the references a build would have pushed; nothing is built."""
    cells = list(cells)
    bases = resolve_bases(base_images, base_image_args([]))
    found = watcher_specs(cells, platform, base_images)
    return Images(timer_server=timer_server_image(platform, bases).ref(registry),
                  capture=capture_image(platform, bases).ref(registry),
                  watchers={k: s.ref(registry) for k, s in found.specs.items()}, failed=found.problems,
                  unavailable=found.unavailable)


def docker_api(expected: Iterable[str] = ()) -> Any:
    """A low-level docker SDK client for a reachable engine, or a PrerequisiteError naming both ways out."""
    import docker  # type: ignore[import-untyped]

    try:
        api = docker.APIClient(**docker.utils.kwargs_from_env(), timeout=DOCKER_TIMEOUT)
        api.ping()
    except Exception as exc:  # DockerException, requests' ConnectionError, a missing socket...
        refs = "\n".join(expected)
        raise PrerequisiteError(
            f"no Docker engine reachable to build the kubernetes images ({exc.__class__.__name__}: {exc})",
            fix="start a Docker engine (or point DOCKER_HOST at one), or build and push the images elsewhere "
                "and pass --images-from REGISTRY",
            detail=f"images the run needs:\n{refs}" if refs else None) from exc
    return api


def _in_registry(api: Any, ref: str) -> bool:
    try:
        api.inspect_distribution(ref)
    except Exception:  # not there, or the registry will not say: build and push
        return False
    return True


def write_context(entries: Iterable[tuple[str, Path | bytes]], out: IO[bytes]) -> None:
    """A build context as a tar stream: (name in the context, a host file or folder, or the bytes)."""
    with tarfile.open(fileobj=out, mode="w") as tar:
        for arcname, source in entries:
            if isinstance(source, bytes):
                info = tarfile.TarInfo(arcname)
                info.size, info.mode = len(source), 0o644
                tar.addfile(info, io.BytesIO(source))
            else:
                tar.add(str(source), arcname=arcname, filter=_owned_by_root)


def _owned_by_root(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _context_entries(spec: ImageSpec, ca_bundle: Path | None) -> list[tuple[str, Path | bytes]]:
    """The files the tag's hash covers (IGNORED left out), the Dockerfile, and the CA bundle if any."""
    entries: list[tuple[str, Path | bytes]] = []
    if spec.context is not None:
        for path in sorted(p for p in spec.context.rglob("*") if p.is_file()):
            rel = path.relative_to(spec.context)
            if not set(rel.parts) & IGNORED and str(rel) != CA_FILE:
                entries.append((str(rel), path))
    else:
        entries.append(("Dockerfile", (spec.dockerfile or "").encode()))
    if ca_bundle is not None:
        try:
            entries.append((CA_FILE, ca_bundle.read_bytes()))
        except OSError as exc:
            raise BuildError(f"build_ca_bundle {ca_bundle}: {exc.strerror}",
                             fix="give build_ca_bundle a readable PEM file, e.g. /etc/ssl/certs/ca-certificates.crt"
                             ) from None
    return entries


def build_image(api: Any, spec: ImageSpec, ref: str, log_path: Path, ca_bundle: Path | None = None) -> None:
    """`docker build` through the SDK, its output in log_path; BuildError with the tail on failure.

    The context is sent as a tar the runner writes (so it can carry the CA bundle without writing
    into the repository); the build runs with host networking, since the engine may have no bridge
    and the package registries must be reachable."""
    with io.BytesIO() as context:
        write_context(_context_entries(spec, ca_bundle), context)
        context.seek(0)
        run_build(api, {"fileobj": context, "custom_context": True, "dockerfile": "Dockerfile",
                        "buildargs": dict(spec.buildargs) or None, "platform": spec.platform},
                  ref, log_path, str(spec.context or "(inline Dockerfile)"))


def run_build(api: Any, kwargs: dict[str, Any], ref: str, log_path: Path, what: str) -> None:
    kwargs = {"tag": ref, "rm": True, "forcerm": True, "decode": True, "network_mode": "host", **kwargs}
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("a") as log:
        log.write(f"$ docker build --network host -t {ref} {what}\n")
        try:
            for item in api.build(**kwargs):
                if "stream" in item:
                    log.write(item["stream"])
                    log.flush()  # a live log: people (and the interrupt test) follow a long build
                if "error" in item:
                    log.write(f"error: {item['error']}\n")
                    raise BuildError(f"building image {ref}: {item['error'].strip()}", fix=f"see {log_path}",
                                     detail=_tail(log_path, log))
        except BuildError:
            raise
        except Exception as exc:
            log.write(f"error: {exc}\n")
            raise BuildError(f"building image {ref}: {exc}", fix=f"see {log_path}") from exc


def push_image(api: Any, ref: str, log_path: Path) -> None:
    repository, _, tag = ref.rpartition(":")
    with log_path.open("a") as log:
        log.write(f"$ docker push {ref}\n")
        try:
            for item in api.push(repository, tag=tag, stream=True, decode=True):
                if "status" in item:
                    log.write(f"{item.get('id', '')} {item['status']}\n".lstrip())
                if "error" in item:
                    log.write(f"error: {item['error']}\n")
                    registry = ref.split("/", 1)[0]
                    raise BuildError(f"pushing {ref}: {item['error'].strip()}",
                                     fix=f"`docker login {registry}`, or check that the registry exists")
        except BuildError:
            raise
        except Exception as exc:
            raise BuildError(f"pushing {ref}: {exc}") from exc


def _tail(path: Path, handle: io.TextIOBase | Any) -> str:
    handle.flush()
    return "\n".join(path.read_text(errors="replace").splitlines()[-15:])


def ensure_image(api: Any, spec: ImageSpec, registry: str, log_dir: Path, say: Callable[[str], None],
                 ca_bundle: Path | None = None, local_bases: bool = False) -> str:
    ref = spec.ref(registry)
    log_path = log_dir / f"{spec.name}.log"
    if _in_registry(api, ref):
        say(f"image {ref}: already in the registry")
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("a") as log:
            log.write(f"{ref}: already in the registry, not built\n")
        return ref
    if local_bases:  # built (once) only for an image that is built
        from runner.build.bases import NAMESPACE, ensure_bases

        ensure_bases(api, [v for v in spec.buildargs.values() if v.startswith(NAMESPACE + "/")],
                     log_dir / "bases", say)
    say(f"image {ref}: building")
    build_image(api, spec, ref, log_path, ca_bundle)
    say(f"image {ref}: pushing")
    push_image(api, ref, log_path)
    return ref


def build_and_push(cells: Iterable[Cell], registry: str, log_dir: Path, say: Callable[[str], None] = print,
                   platform: str | None = None, api: Any = None, base_images: BaseImages = None,
                   ca_bundle: Path | None = None) -> Images:
    """Build and push every image the cells need. The timer server and capture images are needed by
    every cell, so their failure raises; a watcher's failure is kept for its cells only. With
    `base_images: local`, the local base images the Dockerfiles need are built first (once)."""
    cells = list(cells)
    bases = resolve_bases(base_images, base_image_args([]))
    found = watcher_specs(cells, platform, base_images)
    specs = found.specs
    infra = [timer_server_image(platform, bases), capture_image(platform, bases)]
    if api is None:
        api = docker_api([s.ref(registry) for s in [*infra, *specs.values()]])
    local = base_images == "local"
    timer_ref, capture_ref = (ensure_image(api, s, registry, log_dir, say, ca_bundle, local) for s in infra)
    images = Images(timer_server=timer_ref, capture=capture_ref, failed=found.problems,
                    unavailable=found.unavailable)
    for key, spec in specs.items():
        try:
            images.watchers[key] = ensure_image(api, spec, registry, log_dir, say, ca_bundle, local)
        except WatchdropError as exc:  # a build, or a base image it needs
            images.failed[key] = f"image build failed: {exc.message}"
            say(f"image {spec.name} FAILED: {exc.message}")
    return images


def resolve_images(cells: Iterable[Cell], *, registry: str | None, images_from: str | None, log_dir: Path,
                   say: Callable[[str], None] = print, platform: str | None = None,
                   base_images: BaseImages = None, ca_bundle: Path | None = None) -> Images:
    """The one call: prebuilt references with `--images-from`, else build and push to `registry`."""
    if images_from:
        return prebuilt(cells, images_from, platform, base_images)
    if not registry:
        raise PrerequisiteError("no registry to push the kubernetes images to",
                                fix="give the cluster `registry:` in the matrix, or pass --images-from REGISTRY")
    return build_and_push(cells, registry, log_dir, say, platform, base_images=base_images, ca_bundle=ca_bundle)
