"""Local base images, for a machine that cannot pull from public registries (`base_images: local`).

The clients' Dockerfiles take their base images as build arguments (GO_IMAGE, PYTHON_IMAGE, ...)
whose defaults are today's public images. Here each argument gets an image built on this machine
from Debian packages and the toolchains the machine already has:

    base-debian   mmdebstrap --variant=minbase bookworm + ca-certificates, `docker import`ed
                  (DEBIAN_IMAGE, RUNTIME_IMAGE: the capture sidecar, the static Go and Rust watchers)
    base-python   + Debian's python3 3.11 and venv             (PYTHON_IMAGE)
    base-go       + this machine's GOROOT, as /usr/local/go    (GO_IMAGE; Debian's Go is too old)
    base-node     + Debian's nodejs and npm                    (NODE_IMAGE)
    base-java     + Debian's OpenJDK 17 runtime                (JRE_IMAGE)
    base-maven    base-java + OpenJDK 17 JDK and Maven         (MAVEN_IMAGE)
    base-rust     + gcc and this machine's rustc/cargo         (RUST_IMAGE; Debian's rustc 1.63 is
                  too old for kube-rs's edition 2024)

Every one is named `watchdrop-local/<base>:<hash>`, never like a public image, and the hash covers
what goes in (its Dockerfile in images/bases/, its parent's tag, the Debian suite, mirrors and
packages, the toolchain's version), so a second run finds every tag in Docker's own image store and
builds nothing. The store is the engine's data root: keep it in the cache (e.g.
~/.cache/watchdrop/docker) so it outlives runs. Base builds reach only the Debian mirror (plain
HTTP, as apt is configured here) and the local toolchains, so they need no extra CA.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runner.build.cache import cache_root
from runner.errors import BuildError, PrerequisiteError
from runner.host.commands import query, run_into

REPO = Path(__file__).resolve().parents[2]
BASES_DIR = REPO / "images" / "bases"
NAMESPACE = "watchdrop-local"
SUITE = "bookworm"
DEBIAN_PACKAGES = ("ca-certificates",)
#: The imported root filesystem has no image config: give it the PATH every Debian image has.
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
MMDEBSTRAP_TIMEOUT = 1200
#: apt options of the host that its mirror needs (e.g. a snapshot mirror's expired Release files);
#: mmdebstrap keeps --aptopt in the image, so apt-get inside later builds works the same way.
APT_OPTIONS = ("Acquire::Check-Valid-Until", "Acquire::Check-Date")


@dataclass(frozen=True)
class Toolchain:
    """A host directory copied into a base image's build context as `arcname/` (only `parts` of it)."""

    arcname: str
    root: Path
    parts: tuple[str, ...]
    #: what identifies its content (version output), hashed into the tag instead of its files
    version: str


@dataclass(frozen=True)
class Base:
    name: str
    parent: str | None
    #: the Dockerfile build arguments this image stands in for
    serves: tuple[str, ...]
    toolchain: Callable[[], Toolchain] | None = None

    @property
    def dockerfile(self) -> Path:
        return BASES_DIR / f"{self.name.removeprefix('base-')}.Dockerfile"


def _output(argv: list[str]) -> str:
    try:
        return query(argv, timeout=60, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        raise PrerequisiteError(f"`{' '.join(argv)}` failed ({exc.__class__.__name__}): no local toolchain to copy",
                                fix=f"install {argv[0]} on this machine, or give `base_images:` a mapping "
                                    "with an image of your own for it") from None


def _go() -> Toolchain:
    root = Path(_output(["go", "env", "GOROOT"]))
    return Toolchain("go", root, tuple(sorted(p.name for p in root.iterdir())), _output(["go", "version"]))


def _rust() -> Toolchain:
    # The real toolchain directory (rustup's proxies in ~/.cargo/bin only pick one); docs left out.
    root = Path(_output(["rustc", "--print", "sysroot"]))
    version = _output(["rustc", "-vV"]) + "\n" + _output([str(root / "bin" / "cargo"), "-V"])
    return Toolchain("rust", root, tuple(p for p in ("bin", "lib", "libexec", "etc") if (root / p).exists()),
                     version)


BASES: dict[str, Base] = {b.name: b for b in (
    Base("base-debian", None, ("DEBIAN_IMAGE", "RUNTIME_IMAGE")),
    Base("base-python", "base-debian", ("PYTHON_IMAGE",)),
    Base("base-go", "base-debian", ("GO_IMAGE",), _go),
    Base("base-node", "base-debian", ("NODE_IMAGE",)),
    Base("base-java", "base-debian", ("JRE_IMAGE",)),
    Base("base-maven", "base-java", ("MAVEN_IMAGE",)),
    Base("base-rust", "base-debian", ("RUST_IMAGE",), _rust),
)}
BASE_FOR_ARG = {arg: b.name for b in BASES.values() for arg in b.serves}


def apt_sources(suite: str = SUITE) -> list[str]:
    """The host's Debian mirrors for `suite` (and -updates, -security) as one-line `deb` entries."""
    entries: list[str] = []
    files = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for path in files:
        if not path.is_file():
            continue
        text = path.read_text(errors="replace")
        if path.suffix == ".sources":
            for stanza in re.split(r"\n\s*\n", text):
                fields = dict(re.findall(r"^([A-Za-z-]+):\s*(.*)$", stanza, re.MULTILINE))
                if "deb" not in fields.get("Types", "").split():
                    continue
                for uri in fields.get("URIs", "").split():
                    for s in fields.get("Suites", "").split():
                        entries.append(f"deb {uri} {s} {fields.get('Components', 'main')}")
        elif path.suffix == ".list" or path.name == "sources.list":
            entries += [line.split("#", 1)[0].strip() for line in text.splitlines()
                        if line.strip().startswith("deb ")]
    wanted = []
    for entry in entries:
        # "deb [options] URI SUITE COMPONENT...": options (e.g. the host's signed-by) stay behind
        words = re.sub(r"\[[^]]*\]", " ", entry).split()
        if len(words) >= 4 and words[2].split("-")[0] == suite:
            wanted.append(" ".join(words))
    return list(dict.fromkeys(wanted))


def apt_options() -> list[str]:
    try:
        dump = _output(["apt-config", "dump"])
    except PrerequisiteError:
        return []
    return [line.rstrip(";") for line in dump.splitlines() if line.split(" ", 1)[0] in APT_OPTIONS]


def _key(base: Base, parent_ref: str | None) -> str:
    h = hashlib.sha256()
    h.update(base.dockerfile.read_bytes() if base.dockerfile.exists() else b"")
    h.update(b"\0" + (parent_ref or "").encode())
    if base.parent is None:
        h.update(b"\0" + "\n".join([SUITE, *DEBIAN_PACKAGES, *apt_sources(), *apt_options()]).encode())
    if base.toolchain is not None:
        h.update(b"\0" + base.toolchain().version.encode())
    return h.hexdigest()[:16]


def base_ref(name: str) -> str:
    """The local image a base is (or would be) tagged as; computed without Docker."""
    base = BASES[name]
    parent = base_ref(base.parent) if base.parent else None
    return f"{NAMESPACE}/{name}:{_key(base, parent)}"


def local_refs(args: Iterable[str]) -> dict[str, str]:
    """Build argument -> local base image, for the arguments a local base stands in for."""
    return {arg: base_ref(BASE_FOR_ARG[arg]) for arg in sorted(set(args)) if arg in BASE_FOR_ARG}


def _exists(api: Any, ref: str) -> bool:
    try:
        api.inspect_image(ref)
    except Exception:  # docker.errors.ImageNotFound, or the engine will not say: build it
        return False
    return True


def ensure_bases(api: Any, refs: Iterable[str], log_dir: Path, say: Callable[[str], None] = print) -> None:
    """Build every `watchdrop-local/<base>:<tag>` in refs (and its parents) that Docker does not have."""
    for ref in dict.fromkeys(refs):
        name = ref.split("/", 1)[1].split(":", 1)[0]
        _ensure(api, name, log_dir, say)


def _ensure(api: Any, name: str, log_dir: Path, say: Callable[[str], None]) -> str:
    base = BASES[name]
    parent = _ensure(api, base.parent, log_dir, say) if base.parent else None
    ref = f"{NAMESPACE}/{name}:{_key(base, parent)}"
    if _exists(api, ref):
        return ref
    log_path = log_dir / f"{name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    if parent is None:
        say(f"base image {ref}: mmdebstrap {SUITE} (1 to 2 minutes, once)")
        _import_debian(api, ref, log_path)
    else:
        say(f"base image {ref}: building")
        _build_on(api, base, parent, ref, log_path)
    say(f"base image {ref}: built in {time.monotonic() - t0:.0f} s")
    return ref


def _mmdebstrap() -> str:
    found = shutil.which("mmdebstrap")
    if found:
        return found
    try:
        query(["apt-get", "install", "-y", "--no-install-recommends", "mmdebstrap"], check=True, timeout=600,
              env={"DEBIAN_FRONTEND": "noninteractive"})
    except (OSError, subprocess.SubprocessError) as exc:
        raise PrerequisiteError(f"mmdebstrap is missing and could not be installed ({exc.__class__.__name__})",
                                fix="apt-get install mmdebstrap (as root), or give `base_images:` a mapping "
                                    "of images you built yourself") from None
    return shutil.which("mmdebstrap") or "mmdebstrap"


def _import_debian(api: Any, ref: str, log_path: Path) -> None:
    work = cache_root() / "bases"
    work.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        rootfs = Path(tmp) / "rootfs.tar"  # mmdebstrap picks the output format by the suffix
        argv = [_mmdebstrap(), "--variant=minbase", f"--include={','.join(DEBIAN_PACKAGES)}",
                *(f"--aptopt={opt}" for opt in apt_options()),
                "--dpkgopt=path-exclude=/usr/share/{doc,man,locale,info}/*",
                SUITE, str(rootfs), *apt_sources()]
        with log_path.open("a") as log:
            log.write("$ " + " ".join(argv) + "\n")
            log.flush()
            try:
                run_into(argv, log, timeout=MMDEBSTRAP_TIMEOUT)
            except (OSError, subprocess.SubprocessError) as exc:
                raise BuildError(f"mmdebstrap {SUITE} failed ({exc.__class__.__name__})",
                                 fix=f"see {log_path}; check that `apt-get update` reaches the mirror") from None
        repository, tag = ref.rsplit(":", 1)
        try:
            api.import_image_from_file(str(rootfs), repository=repository, tag=tag,
                                       changes=[f"ENV PATH={PATH}", 'CMD ["/bin/bash"]'])
        except Exception as exc:
            raise BuildError(f"docker import of the {SUITE} root filesystem failed: {exc}",
                             fix="check the Docker engine's log and free space in its data root") from None


def _build_on(api: Any, base: Base, parent: str, ref: str, log_path: Path) -> None:
    from runner.build.images import run_build, write_context

    entries: list[tuple[str, Path | bytes]] = [("Dockerfile", base.dockerfile.read_bytes())]
    if base.toolchain is not None:
        tc = base.toolchain()
        entries += [(f"{tc.arcname}/{part}", tc.root / part) for part in tc.parts]
    work = cache_root() / "bases"
    work.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile(dir=work) as context:
        write_context(entries, context)
        context.seek(0)
        run_build(api, {"fileobj": context, "custom_context": True, "dockerfile": "Dockerfile",
                        "buildargs": {"BASE": parent}}, ref, log_path, f"images/bases/{base.dockerfile.name}")


def main(argv: list[str] | None = None) -> int:
    """`python -m runner.build.bases [BASE...]`: build local bases (all by default) on DOCKER_HOST's engine."""
    import argparse

    from runner.build.images import docker_api
    from runner.errors import WatchdropError

    parser = argparse.ArgumentParser(prog="python -m runner.build.bases", description=main.__doc__)
    parser.add_argument("bases", nargs="*", metavar="BASE", help=f"default: every base ({', '.join(BASES)})")
    parser.add_argument("--logs", type=Path, default=cache_root() / "bases" / "logs", help="build logs")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.bases) - set(BASES))
    if unknown:
        parser.error(f"no base {', '.join(unknown)} (choose from {', '.join(BASES)})")
    try:
        refs = [base_ref(name) for name in args.bases or BASES]
        api = docker_api(refs)
        try:
            ensure_bases(api, refs, args.logs)
        finally:
            api.close()
    except WatchdropError as exc:
        print(exc.render())
        return int(exc.exit_code)
    print("\n".join(refs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
