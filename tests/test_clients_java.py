"""The java (io.kubernetes:client-java) and fabric8 watcher folders: descriptors agree with their pins.

A descriptor's `version` is what the report prints for a column, and the pin in the folder's
pom.xml is what actually gets built; the static tests keep the two from drifting apart and check
that a build writes only under the runner's cache ({out}). The slow tests build both watchers
exactly as the runner does (runner.build.clients: Maven, then the class-data-sharing training run)
and run them against 127.0.0.1:1, where nothing listens, to check the contract's first line, its
request lines and exit codes (usage error 2, normal end 0, SIGTERM 0) against the real libraries.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from runner.build.clients import BuiltClient, build_client
from runner.config.descriptor import load_descriptor, missing_requirements

CLIENTS = Path(__file__).resolve().parent.parent / "clients"
FOLDERS = ("java", "fabric8")
#: folder -> (groupId, artifactId, pom property holding the pinned version)
PINS = {
    "java": ("io.kubernetes", "client-java", "client-java.version"),
    "fabric8": ("io.fabric8", "kubernetes-client", "fabric8.version"),
}
STYLES = {"java": ["clientbuilder", "plain-apiclient"], "fabric8": ["watch", "informer"]}
POM = "{http://maven.apache.org/POM/4.0.0}"


def _pom(folder: str) -> ET.Element:
    return ET.parse(CLIENTS / folder / "pom.xml").getroot()


def _properties(root: ET.Element) -> dict[str, str]:
    props = root.find(f"{POM}properties")
    assert props is not None
    return {child.tag.removeprefix(POM): (child.text or "").strip() for child in props}


def _resolve(text: str, props: dict[str, str]) -> str:
    """A pom value with its ${property} references filled in (one level is all these poms use)."""
    for name, value in props.items():
        text = text.replace("${" + name + "}", value)
    return text


def _jvm_flags(argv: list[str]) -> list[str]:
    """The JVM options of a `java ... -jar JAR` argv, without the CDS archive option itself."""
    start = argv.index("java") + 1
    end = argv.index("-jar")
    return [a for a in argv[start:end] if not a.startswith(("-XX:SharedArchiveFile=", "-XX:ArchiveClassesAtExit="))]


@pytest.mark.parametrize("folder", FOLDERS)
def test_descriptor_is_valid(folder: str) -> None:
    desc = load_descriptor(CLIENTS / folder)
    assert desc.name == folder
    assert desc.language == "java"
    assert desc.styles == STYLES[folder]
    assert set(desc.requires) == {"java", "mvn"}
    assert (CLIENTS / folder / "Dockerfile").is_file()


@pytest.mark.parametrize("folder", FOLDERS)
def test_version_matches_the_pom_pin(folder: str) -> None:
    group, artifact, prop = PINS[folder]
    root = _pom(folder)
    props = _properties(root)
    desc = load_descriptor(CLIENTS / folder)
    assert props[prop] == desc.version
    assert desc.library == f"{group}:{artifact}"
    deps = {
        (d.findtext(f"{POM}groupId"), d.findtext(f"{POM}artifactId")): _resolve(
            d.findtext(f"{POM}version") or "", props
        )
        for d in root.iter(f"{POM}dependency")
    }
    assert deps[(group, artifact)] == desc.version
    # Maven exact versions only: no ranges, no LATEST/RELEASE, no SNAPSHOT.
    for (g, a), version in deps.items():
        assert version and not any(c in version for c in "[](),") and "SNAPSHOT" not in version, f"{g}:{a}"


@pytest.mark.parametrize("folder", FOLDERS)
def test_every_maven_plugin_is_pinned(folder: str) -> None:
    # Maven 3.8 would otherwise pick its own default plugin versions, which differ between Maven
    # releases; the build must not change with the machine's Maven.
    root = _pom(folder)
    plugins = list(root.iter(f"{POM}plugin"))
    assert plugins
    pinned = {p.findtext(f"{POM}artifactId") for p in plugins if p.findtext(f"{POM}version")}
    for name in ("maven-resources-plugin", "maven-compiler-plugin", "maven-surefire-plugin", "maven-jar-plugin",
                 "maven-dependency-plugin"):
        assert name in pinned, f"{name} has no pinned version"


@pytest.mark.parametrize("folder", FOLDERS)
def test_build_writes_only_under_out(folder: str) -> None:
    root = _pom(folder)
    build = root.find(f"{POM}build")
    assert build is not None and build.findtext(f"{POM}directory") == "${buildDirectory}"
    # maven-shade-plugin writes dependency-reduced-pom.xml next to pom.xml, i.e. into the repo.
    assert "maven-shade-plugin" not in (CLIENTS / folder / "pom.xml").read_text()
    desc = load_descriptor(CLIENTS / folder)
    mvn = next(step for step in desc.build if step[0] == "mvn")
    assert "-DbuildDirectory={out}/target" in mvn and "{src}/pom.xml" in mvn
    for step in desc.build:
        for arg in step:
            if "=" in arg and arg.startswith("-XX:ArchiveClassesAtExit="):
                assert arg.split("=", 1)[1].startswith("{out}/")


@pytest.mark.parametrize("folder", FOLDERS)
def test_training_run_matches_the_run_and_stays_on_loopback(folder: str) -> None:
    desc = load_descriptor(CLIENTS / folder)
    train = next(step for step in desc.build if "java" in step)
    archive = next(a.split("=", 1)[1] for a in train if a.startswith("-XX:ArchiveClassesAtExit="))
    assert f"-XX:SharedArchiveFile={archive}" in desc.run
    # The archive only maps into a JVM started with the same options (fabric8's training run
    # adds one system property that only turns off its retries of the refused requests).
    extra = {"-Dkubernetes.request.retry.backoffLimit=0"}
    assert [a for a in _jvm_flags(train) if a not in extra] == _jvm_flags(desc.run)
    kubeconfig = yaml.safe_load((CLIENTS / folder / "train-kubeconfig.yaml").read_text())
    servers = [c["cluster"]["server"] for c in kubeconfig["clusters"]]
    assert servers and all(urlsplit(s).hostname == "127.0.0.1" for s in servers)


# --- built watchers (slow: Maven Central the first time, cached afterwards) ---------------------


def _build(folder: str, tmp_path: Path) -> BuiltClient:
    desc = load_descriptor(CLIENTS / folder)
    if missing_requirements(desc):
        pytest.skip(f"missing tools: {', '.join(missing_requirements(desc))}")
    return build_client(CLIENTS / folder, desc, {}, tmp_path / "build.log")


def _env(folder: str, extra: dict[str, str]) -> dict[str, str]:
    """The test's environment: no WATCHDROP_* of the caller, the training kubeconfig."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WATCHDROP_") and k != "KUBECONFIG"}
    kubeconfig = str(CLIENTS / folder / "train-kubeconfig.yaml")
    if folder == "fabric8":
        # fabric8 retries a refused request 10 times (about 20 s). Through KUBECONFIG (the
        # in-cluster branch's auto-configuration) it honours the property that turns that off.
        env.update(KUBECONFIG=kubeconfig, JAVA_TOOL_OPTIONS="-Dkubernetes.request.retry.backoffLimit=0")
    else:
        env["WATCHDROP_KUBECONFIG"] = kubeconfig
    return {**env, "WATCHDROP_NAMESPACE": "training", **extra}


def _lines(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


@pytest.mark.slow
@pytest.mark.parametrize("folder", FOLDERS)
def test_built_watcher_starts_with_the_pinned_version_and_refuses_bad_settings(folder: str, tmp_path: Path) -> None:
    built = _build(folder, tmp_path)
    env = _env(folder, {"WATCHDROP_SCENARIO": "watch", "WATCHDROP_STYLE": "no-such-style"})
    proc = subprocess.run(built.run_argv(), env=env, capture_output=True, text=True, timeout=120, check=False)
    lines = _lines(proc.stdout)
    assert proc.returncode == 2, proc.stderr
    assert lines[0]["event"] == "started"
    assert lines[0]["client"] == folder and lines[0]["version"] == built.descriptor.version
    assert lines[-1]["event"] == "error" and "WATCHDROP_STYLE" in lines[-1]["message"]
    # Every line is a contract line: JSON with a numeric ts (fixed-point, not 1.79E9) and an event.
    for raw in proc.stdout.splitlines():
        assert raw.startswith('{"ts":') and "E9" not in raw.split(",", 1)[0]


@pytest.mark.slow
@pytest.mark.parametrize("folder", FOLDERS)
def test_built_watcher_reports_failed_requests_and_ends_with_0(folder: str, tmp_path: Path) -> None:
    built = _build(folder, tmp_path)
    env = _env(folder, {"WATCHDROP_SCENARIO": "idle-request", "WATCHDROP_ROUNDS": "2", "WATCHDROP_IDLE": "0"})
    proc = subprocess.run(built.run_argv(), env=env, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    lines = _lines(proc.stdout)
    requests = [(ln["event"], ln["round"], ln["request"]) for ln in lines if ln["event"].startswith("request-")]
    assert requests == [
        (event, r, n) for r in (1, 2) for n in (1, 2) for event in ("request-sent", "request-done")
    ]
    for done in (ln for ln in lines if ln["event"] == "request-done"):
        assert done["ok"] is False and "refused" in done["message"].lower()
        assert isinstance(done["attempts"], list)


@pytest.mark.slow
@pytest.mark.parametrize(("folder", "style"), [(f, s) for f in FOLDERS for s in STYLES[f]])
def test_built_watcher_exits_0_on_sigterm(folder: str, style: str, tmp_path: Path) -> None:
    built = _build(folder, tmp_path)
    env = _env(folder, {"WATCHDROP_SCENARIO": "watch", "WATCHDROP_STYLE": style})
    proc = subprocess.Popen(built.run_argv(), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        # Wait until the library is at work (its first watch attempt failed or was sent).
        deadline = time.monotonic() + 60
        seen: list[dict[str, Any]] = []
        while time.monotonic() < deadline and not any(
            ln["event"] in ("error", "watch-opened", "reconnect") for ln in seen
        ):
            line = proc.stdout.readline()
            if not line:
                break
            seen += _lines(line)
        assert seen and seen[0]["event"] == "started"
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0
        _lines(rest)  # every line after the signal is still whole JSON
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
