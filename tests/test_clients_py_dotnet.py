"""The kubernetes-asyncio, kopf and dotnet watcher folders: descriptors agree with their pins.

A descriptor's `version` is what the report prints for a column, and the pin in the folder's
build files is what actually gets built; these tests keep the two from drifting apart. The slow
tests build the two Python watchers exactly as the runner does (runner.build.clients, cached
outside the repo) and run them with settings a watcher must refuse, so the contract's first
line and exit codes are checked against the installed libraries, not against stand-ins.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from runner.build.clients import BuiltClient, build_client
from runner.config.descriptor import Descriptor, load_descriptor, missing_requirements

CLIENTS = Path(__file__).resolve().parent.parent / "clients"
PYTHON_PINS = {"kubernetes-asyncio": "kubernetes-asyncio", "kopf": "kopf"}


def _normalize(name: str) -> str:
    """PEP 503 name normalisation: kubernetes_asyncio and kubernetes-asyncio are one package."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _pip_pins(requirements: str) -> dict[str, str]:
    """normalized name -> version of every `name==version` line, continuation lines joined."""
    pins: dict[str, str] = {}
    for line in requirements.replace("\\\n", " ").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.match(r"([A-Za-z0-9._-]+)(?:\[[^\]]*\])?==(\S+)", line)
        assert match, f"unpinned requirement line: {line!r}"
        pins[_normalize(match.group(1))] = match.group(2)
    return pins


@pytest.mark.parametrize("folder", ["kubernetes-asyncio", "kopf", "dotnet"])
def test_descriptor_is_valid(folder: str) -> None:
    desc = load_descriptor(CLIENTS / folder)
    assert desc.name == folder
    assert desc.styles, "every watcher names the styles it implements"
    assert (CLIENTS / folder / "Dockerfile").is_file()


@pytest.mark.parametrize("folder", sorted(PYTHON_PINS))
def test_python_version_matches_requirements(folder: str) -> None:
    desc = load_descriptor(CLIENTS / folder)
    package = PYTHON_PINS[folder]
    assert _pip_pins((CLIENTS / folder / "requirements.in").read_text())[package] == desc.version
    assert _pip_pins((CLIENTS / folder / "requirements.txt").read_text())[package] == desc.version


@pytest.mark.parametrize("folder", sorted(PYTHON_PINS))
def test_python_requirements_are_hash_locked(folder: str) -> None:
    text = (CLIENTS / folder / "requirements.txt").read_text()
    for block in text.replace("\\\n", " ").splitlines():
        requirement = block.split("#", 1)[0].strip()
        if requirement:
            assert "--hash=sha256:" in requirement, f"no hash for {requirement.split()[0]}"
    # The build installs with --require-hashes, so an unhashed line would fail the build anyway;
    # the Dockerfile must install the same lock the same way.
    desc = load_descriptor(CLIENTS / folder)
    assert any("--require-hashes" in step for step in desc.build)
    assert "--require-hashes -r requirements.txt" in (CLIENTS / folder / "Dockerfile").read_text()


def test_kopf_installs_no_second_kubernetes_client() -> None:
    # kopf picks a login handler from whatever client library is importable; the watcher logs in
    # with kopf's own kubeconfig reader, and a stray `kubernetes` would change what is measured.
    pins = _pip_pins((CLIENTS / "kopf" / "requirements.txt").read_text())
    assert "kubernetes" not in pins and "kubernetes-asyncio" not in pins and "pykube-ng" not in pins


def _csproj_package_version(csproj: Path, package: str) -> str:
    root = ET.parse(csproj).getroot()
    for ref in root.iter("PackageReference"):
        if ref.get("Include") == package:
            version = ref.get("Version")
            assert version, f"{package} has no Version in {csproj.name}"
            return version
    raise AssertionError(f"{package} is not referenced in {csproj.name}")


def test_dotnet_version_is_pinned_exactly_in_the_csproj() -> None:
    desc = load_descriptor(CLIENTS / "dotnet")
    version = _csproj_package_version(CLIENTS / "dotnet" / "watcher.csproj", "KubernetesClient")
    # NuGet's "[x]" is an exact version; a bare "x" means ">= x" and could float.
    assert version == f"[{desc.version}]"


def test_dotnet_builds_and_runs_only_under_out() -> None:
    """dotnet builds in place (obj/, bin/): the sources must be copied into {out} first."""
    desc = load_descriptor(CLIENTS / "dotnet")
    src, out = Path("/SRC"), Path("/OUT")
    argvs = desc.build_argvs(src, out)
    assert argvs[0][:2] == ["cp", "-r"] and argvs[0][-1].startswith("/OUT/")
    publish = argvs[-1]
    assert "publish" in publish
    project = next(a for a in publish if a.endswith(".csproj"))
    assert project.startswith("/OUT/")
    assert publish[publish.index("-o") + 1].startswith("/OUT/")
    run = desc.run_argv(src, out)
    assert run[0] == "dotnet" and run[1] == "/OUT/app/watcher.dll"
    # The dll's name comes from the csproj's AssemblyName.
    root = ET.parse(CLIENTS / "dotnet" / "watcher.csproj").getroot()
    assert root.findtext("./PropertyGroup/AssemblyName") == "watcher"


def test_dotnet_program_uses_the_documented_watch() -> None:
    program = (CLIENTS / "dotnet" / "Program.cs").read_text()
    assert "KubernetesClientConfiguration.BuildConfigFromConfigFile(settings.Kubeconfig)" in program
    assert "CoreV1.ListNamespacedConfigMapWithHttpMessagesAsync(" in program
    assert ".Watch<V1ConfigMap, V1ConfigMapList>(" in program
    assert "onClosed:" in program and "PosixSignal.SIGTERM" in program


@pytest.mark.skipif(shutil.which("dotnet") is not None, reason="dotnet is installed here: the cells run")
def test_dotnet_is_skipped_without_dotnet() -> None:
    assert missing_requirements(load_descriptor(CLIENTS / "dotnet")) == ["dotnet"]


# --- built watchers (slow: a venv per client from PyPI the first time, cached afterwards) -------


def _build(folder: str, tmp_path: Path) -> BuiltClient:
    desc: Descriptor = load_descriptor(CLIENTS / folder)
    return build_client(CLIENTS / folder, desc, {}, tmp_path / "build.log")


def _run(built: BuiltClient, env: dict[str, str], snippet: str | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("WATCHDROP_")}
    argv = built.run_argv() if snippet is None else [built.run_argv()[0], "-c", snippet]
    return subprocess.run(
        argv, env={**clean, **env}, capture_output=True, text=True, timeout=60, cwd=built.src, check=False
    )


def _lines(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


@pytest.mark.slow
@pytest.mark.parametrize("folder", sorted(PYTHON_PINS))
def test_built_watcher_starts_with_the_pinned_version_and_refuses_bad_settings(folder: str, tmp_path: Path) -> None:
    built = _build(folder, tmp_path)
    proc = _run(built, {"WATCHDROP_SCENARIO": "watch"})  # no namespace
    lines = _lines(proc.stdout)
    assert proc.returncode == 2, proc.stderr
    assert lines[0]["event"] == "started" and lines[0]["client"] == folder
    assert lines[0]["version"] == built.descriptor.version
    assert lines[-1]["event"] == "error" and "WATCHDROP_NAMESPACE" in lines[-1]["message"]
    # Only contract lines on stdout: kopf's logging must stay on stderr.
    assert all(set(line) >= {"ts", "event"} for line in lines) and len(lines) == len(proc.stdout.splitlines())


@pytest.mark.slow
def test_built_kopf_refuses_idle_request_with_a_clear_message(tmp_path: Path) -> None:
    built = _build("kopf", tmp_path)
    proc = _run(
        built,
        {
            "WATCHDROP_SCENARIO": "idle-request",
            "WATCHDROP_NAMESPACE": "ns",
            "WATCHDROP_ROUNDS": "1",
            "WATCHDROP_IDLE": "1",
        },
    )
    assert proc.returncode == 2
    assert "idle-request is not supported by the kopf column" in proc.stderr
    assert [line["event"] for line in _lines(proc.stdout)] == ["started", "error"]


@pytest.mark.slow
def test_built_asyncio_observed_list_keeps_what_watch_stream_reads(tmp_path: Path) -> None:
    """The wrapper that reports each watch request must not change how Watch.stream sees it."""
    built = _build("kubernetes-asyncio", tmp_path)
    snippet = (
        "import asyncio, runpy, sys\n"
        "sys.argv = ['watcher.py']\n"
        "w = runpy.run_path('watcher.py', run_name='watchdrop_test')\n"
        "from kubernetes_asyncio import client, watch\n"
        "async def main():\n"
        "    async with client.ApiClient() as api:\n"
        "        f = w['observed'](client.CoreV1Api(api).list_namespaced_config_map)\n"
        "        wt = watch.Watch()\n"
        "        print(wt.get_return_type(f), wt.get_watch_argument_name(f), asyncio.iscoroutinefunction(f))\n"
        "        await wt.close()\n"
        "asyncio.run(main())\n"
    )
    proc = _run(built, {}, snippet)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["V1ConfigMap", "watch", "True"]


@pytest.mark.slow
def test_built_asyncio_timeout_variant_lets_the_server_end_each_watch(tmp_path: Path) -> None:
    """Equal timeouts race; the repeatability benchmark saw the -timeout variant flip verdicts."""
    built = _build("kubernetes-asyncio", tmp_path)
    snippet = (
        "import runpy, sys\n"
        "sys.argv = ['watcher.py']\n"
        "w = runpy.run_path('watcher.py', run_name='watchdrop_test')\n"
        "print(w['watch_timeouts'](None), w['watch_timeouts'](30))\n"
    )
    proc = _run(built, {}, snippet)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "{} {'timeout_seconds': 30, '_request_timeout': 40}"


@pytest.mark.slow
def test_built_kopf_observer_passes_items_and_errors_through(tmp_path: Path) -> None:
    """The kopf stream wrapper prints watch-opened/reconnect and changes nothing it forwards."""
    built = _build("kopf", tmp_path)
    snippet = (
        "import asyncio, json, runpy, sys\n"
        "w = runpy.run_path('watcher.py', run_name='watchdrop_test')\n"
        "async def original(url, **kw):\n"
        "    yield {'n': 1}\n"
        "    if 'resourceVersion=5' in url:\n"
        "        raise ConnectionResetError('reset by peer')\n"
        "wrapped = w['observe_watch_requests'](original)\n"
        "async def main():\n"
        "    got = [x async for x in wrapped('/api/v1/namespaces/n/configmaps?limit=1')]\n"
        "    got += [x async for x in wrapped('/api/v1/namespaces/n/configmaps?watch=true&resourceVersion=5')]\n"
        "    print(json.dumps({'got': got}))\n"
        "try:\n"
        "    asyncio.run(main())\n"
        "except ConnectionResetError as exc:\n"
        "    print(json.dumps({'raised': str(exc)}))\n"
        "async def again():\n"
        "    return [x async for x in wrapped('/api/v1/namespaces/n/configmaps?watch=true&resourceVersion=7')]\n"
        "print(json.dumps({'got': asyncio.run(again())}))\n"
    )
    proc = _run(built, {}, snippet)
    assert proc.returncode == 0, proc.stderr
    out = [json.loads(line) for line in proc.stdout.splitlines()]
    events = [(o["event"], o.get("resourceVersion")) for o in out if "event" in o]
    # The list (no watch=true) prints nothing; each watch prints watch-opened, the second one
    # a reconnect naming how the first ended.
    assert events == [("watch-opened", "5"), ("reconnect", None), ("watch-opened", "7")]
    reconnect = next(o for o in out if o.get("event") == "reconnect")
    assert "ConnectionResetError: reset by peer" in reconnect["reason"]
    assert {"raised": "reset by peer"} in out and {"got": [{"n": 1}]} in out
