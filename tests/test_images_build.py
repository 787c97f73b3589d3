"""Real image builds with no outside registry: a private dockerd, local base images, the runner's path.

The timer server, the capture sidecar, client-go and client-python are built by
runner/build/images.py's build_image (the code the kubernetes backend runs) on the local base
images of runner/build/bases.py, trusting this machine's CA bundle (its outbound TLS is re-signed,
as behind a corporate proxy), then each is started once. The final images must not carry that
bundle (not in a file, not in their history), run as uid 65532 and have only watchdrop names.
"""

from __future__ import annotations

import io
import json
import re
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest

from runner.build import images

pytestmark = pytest.mark.slow

HOST_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
#: The certificates only this machine trusts (the TLS-inspecting proxy's): what must not leak.
LOCAL_CAS = sorted(Path("/usr/local/share/ca-certificates").glob("*.crt"))
NONROOT = "65532:65532"
WATCHER_ENV = {"WATCHDROP_SCENARIO": "idle-request", "WATCHDROP_NAMESPACE": "t", "WATCHDROP_ROUNDS": "1",
               "WATCHDROP_IDLE": "0", "WATCHDROP_INTERVAL": "1", "WATCHDROP_DETECTION_TIMEOUT": "1",
               "WATCHDROP_KUBECONFIG": "/cfg/kubeconfig"}
# Nothing listens on 127.0.0.1:1 in a --network none container: the first request is refused at once.
KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1", insecure-skip-tls-verify: true}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: c, context: {cluster: c, user: u, namespace: t}}]
current-context: c
"""


def _specs(bases: dict[str, str]) -> dict[str, images.ImageSpec]:
    clients = images.REPO / "clients"
    return {"timer-server": images.timer_server_image(bases=bases),
            "capture": images.capture_image(bases=bases),
            "client-go": images.client_image(clients / "client-go", {}, bases=bases),
            "client-python": images.client_image(clients / "client-python", {}, bases=bases)}


@pytest.fixture(scope="module")
def built(local_bases: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """name -> reference, each built once through images.build_image with the host's CA bundle."""
    api = images.docker_api()
    log_dir = tmp_path_factory.mktemp("image-logs")
    refs = {}
    try:
        for name, spec in _specs(local_bases).items():
            ref = f"watchdrop-test/{spec.name}:{spec.tag}"
            t0 = time.monotonic()
            images.build_image(api, spec, ref, log_dir / f"{name}.log", ca_bundle=HOST_BUNDLE)
            print(f"{ref}: {time.monotonic() - t0:.1f} s")
            refs[name] = ref
    finally:
        api.close()
    return refs


@pytest.fixture
def client() -> Any:
    import docker  # type: ignore[import-untyped]

    c = docker.from_env(timeout=120)
    try:
        yield c
    finally:
        c.close()


def _run(client: Any, ref: str, command: list[str] | None = None, env: dict[str, str] | None = None,
         volumes: dict[str, dict[str, str]] | None = None, timeout: float = 60,
         cap_add: list[str] | None = None) -> tuple[int | None, str, str]:
    """Run once with no network; (exit code or None if it was still running, stdout, stderr)."""
    container = client.containers.run(ref, command, environment=env or {}, volumes=volumes or {},
                                      network_mode="none", detach=True, cap_add=cap_add)
    try:
        try:
            code: int | None = container.wait(timeout=timeout)["StatusCode"]
        except Exception:  # still running (a server): stop it, what it printed is what counts
            container.kill()
            code = None
        return (code, container.logs(stdout=True, stderr=False).decode(errors="replace"),
                container.logs(stdout=False, stderr=True).decode(errors="replace"))
    finally:
        container.remove(force=True)


def test_the_images_run_as_nonroot(built: dict[str, str], client: Any) -> None:
    for ref in built.values():
        assert client.api.inspect_image(ref)["Config"]["User"] == NONROOT, ref


def test_the_timer_server_starts(built: dict[str, str], client: Any) -> None:
    _, out, err = _run(client, built["timer-server"], timeout=3)
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert [line["port"] for line in lines if line["event"] == "listening"] == [8005, 8600], out + err


def test_the_capture_image_runs_tcpdump(built: dict[str, str], client: Any) -> None:
    # the pod's two capabilities: tcpdump's file capabilities need them in the bounding set to exec
    code, out, err = _run(client, built["capture"], ["sh", "-c", "id -u && tcpdump --version"],
                          cap_add=["NET_RAW", "NET_ADMIN"])
    assert code == 0, out + err
    assert out.splitlines()[0] == "65532"
    assert "tcpdump version" in out + err


@pytest.mark.parametrize("name", ["client-go", "client-python"])
def test_the_watchers_start(built: dict[str, str], client: Any, name: str, tmp_path: Path) -> None:
    (tmp_path / "kubeconfig").write_text(KUBECONFIG)
    tmp_path.chmod(0o755)
    (tmp_path / "kubeconfig").chmod(0o644)
    _, out, err = _run(client, built[name], env=WATCHER_ENV,
                       volumes={str(tmp_path): {"bind": "/cfg", "mode": "ro"}})
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert lines and lines[0]["event"] == "started", out + err
    assert lines[0]["client"] == name
    # The cluster is not there: the request fails, quickly, and the watcher says so.
    assert any(line["event"] in ("request-done", "error") for line in lines), out + err


def _files(client: Any, ref: str) -> dict[str, bytes]:
    """Every regular file of the image's filesystem (exported from a container never started)."""
    container = client.containers.create(ref)
    try:
        data = b"".join(container.export())
    finally:
        container.remove(force=True)
    files = {}
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for member in tar:
            if member.isfile():
                handle = tar.extractfile(member)
                files[member.name] = handle.read() if handle else b""
    return files


def _cert_bodies() -> list[bytes]:
    """A distinctive line of each certificate only this machine trusts (its first base64 line)."""
    bodies = []
    for path in LOCAL_CAS:
        for pem in re.findall(rb"-----BEGIN CERTIFICATE-----\s*(\S{64})", path.read_bytes()):
            bodies.append(pem)
    return bodies


def test_no_final_image_carries_the_build_ca(built: dict[str, str], client: Any) -> None:
    bodies = _cert_bodies()
    if not bodies:
        pytest.skip("this machine trusts no extra CA of its own (no /usr/local/share/ca-certificates/*.crt)")
    assert all(body in HOST_BUNDLE.read_bytes() for body in bodies)  # what the builds were given
    for ref in built.values():
        history = json.dumps(client.api.history(ref))
        assert "BEGIN CERTIFICATE" not in history and images.CA_FILE not in history.replace(
            f"{images.CA_FILE[:-1]}[t]", ""), ref
        for name, content in _files(client, ref).items():
            assert not name.endswith(images.CA_FILE), f"{ref}: {name}"
            assert not any(body in content for body in bodies), f"{ref}: {name} holds this machine's own CA"


def _public_names() -> set[str]:
    """Repository names of every public default image the Dockerfiles name (golang, python, ...)."""
    texts = [images.CAPTURE_DOCKERFILE, (images.TIMER_SERVER_DIR / "Dockerfile").read_text()]
    texts += [p.read_text() for p in (images.REPO / "clients").glob("*/Dockerfile")]
    defaults = re.findall(r"^ARG\s+\w+_IMAGE=(\S+)", "\n".join(texts), re.MULTILINE)
    defaults += re.findall(r"^FROM\s+([^$\s]\S*)", "\n".join(texts), re.MULTILINE)  # dotnet's, still public
    return {d.rsplit(":", 1)[0] for d in defaults if d}


def test_nothing_is_tagged_with_a_public_name(built: dict[str, str], client: Any) -> None:
    public = _public_names()
    assert {"golang", "python", "gcr.io/distroless/static-debian12", "debian"} <= public
    tags = [t for image in client.api.images() for t in (image.get("RepoTags") or []) if t != "<none>:<none>"]
    assert set(built.values()) <= set(tags)
    for tag in tags:
        assert tag.startswith(("watchdrop-local/", "watchdrop-test/", "watchdrop-")), tag
        assert tag.rsplit(":", 1)[0] not in public, tag


def test_a_second_build_is_all_cache(built: dict[str, str], local_bases: dict[str, str], tmp_path: Path) -> None:
    """Same inputs, same tag and no step run again: the engine's store in the cache is the cache."""
    api = images.docker_api()
    try:
        for name, spec in _specs(local_bases).items():
            log = tmp_path / f"{name}.log"
            images.build_image(api, spec, built[name], log, ca_bundle=HOST_BUNDLE)
            text = log.read_text()
            assert " ---> Running in " not in text, f"{name} ran a build step again:\n{text}"
    finally:
        api.close()
