"""Static checks of the watcher folders under clients/: descriptors agree with their pins.

A descriptor's `version` is what the report prints for a column, and the pin in the folder's
build files is what actually gets built; these tests keep the two from drifting apart. The
client-python watcher's pure helpers are checked here too, against the installed library.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import socket
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

CLIENTS = Path(__file__).resolve().parent.parent / "clients"
REQUIRED_KEYS = {"name", "language", "library", "version", "api_style", "requires", "build", "run"}


def _descriptor(folder: str) -> dict[str, Any]:
    data = yaml.safe_load((CLIENTS / folder / "client.yaml").read_text())
    assert isinstance(data, dict)
    return data


def _go_require(go_mod: str, module: str) -> str:
    """The version go.mod requires for module, in either the one-line or the block form."""
    match = re.search(rf"^\s*(?:require\s+)?{re.escape(module)}\s+(v\S+)", go_mod, re.MULTILINE)
    assert match, f"{module} is not required in go.mod"
    return match.group(1)


def _pip_pins(requirements: str) -> dict[str, str]:
    """name -> version of every `name==version` requirement, continuation lines joined."""
    joined = requirements.replace("\\\n", " ")
    pins: dict[str, str] = {}
    for line in joined.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.match(r"([A-Za-z0-9._-]+)(?:\[[^\]]*\])?==(\S+)", line)
        assert match, f"unpinned requirement line: {line!r}"
        pins[match.group(1).lower()] = match.group(2)
    return pins


@pytest.mark.parametrize("folder", ["client-go", "client-python"])
def test_descriptor_shape(folder: str) -> None:
    data = _descriptor(folder)
    assert REQUIRED_KEYS <= data.keys()
    assert data["name"] == folder
    assert all(isinstance(step, list) and all(isinstance(a, str) for a in step) for step in data["build"])
    assert isinstance(data["run"], list) and all(isinstance(a, str) for a in data["run"])
    assert data["styles"] and all(isinstance(s, str) for s in data["styles"])
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in data["settings"].items())


def test_client_go_version_matches_go_mod_and_go_sum() -> None:
    folder = CLIENTS / "client-go"
    version = _descriptor("client-go")["version"]
    assert _go_require((folder / "go.mod").read_text(), "k8s.io/client-go") == version
    # go.sum must lock that exact version, or the build would have to resolve it anew.
    assert f"k8s.io/client-go {version} h1:" in (folder / "go.sum").read_text()


def test_client_python_version_matches_requirements() -> None:
    folder = CLIENTS / "client-python"
    version = _descriptor("client-python")["version"]
    assert _pip_pins((folder / "requirements.in").read_text())["kubernetes"] == version
    locked = (folder / "requirements.txt").read_text()
    assert _pip_pins(locked)["kubernetes"] == version


def test_client_python_requirements_are_hash_locked() -> None:
    text = (CLIENTS / "client-python" / "requirements.txt").read_text()
    for block in text.replace("\\\n", " ").splitlines():
        requirement = block.split("#", 1)[0].strip()
        if requirement:
            assert "--hash=sha256:" in requirement, f"no hash for {requirement.split()[0]}"


@functools.cache
def _load_python_watcher() -> ModuleType:
    """Import clients/client-python/watcher.py, which is a script, not part of a package."""
    name = "watchdrop_client_python_watcher"
    spec = importlib.util.spec_from_file_location(name, CLIENTS / "client-python" / "watcher.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    # dataclasses resolve the module's annotations through sys.modules.
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def test_client_python_keepalive_options_set_the_requested_idle() -> None:
    options = _load_python_watcher().keepalive_socket_options(42)
    assert (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1) in options
    assert (socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 42) in options
    # urllib3 replaces its defaults with the given list, so TCP_NODELAY must be kept in it.
    assert (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1) in options


def test_client_python_observed_list_keeps_what_watch_stream_reads() -> None:
    from kubernetes import client, watch

    watcher = _load_python_watcher()
    observed = watcher._observed(client.CoreV1Api().list_namespaced_config_map)
    w = watch.Watch()
    assert w.get_return_type(observed) is client.V1ConfigMap
    assert w.get_watch_argument_name(observed) == "watch"


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        ({"WATCHDROP_SCENARIO": "watch"}, "WATCHDROP_NAMESPACE"),
        ({"WATCHDROP_SCENARIO": "nope", "WATCHDROP_NAMESPACE": "ns"}, "WATCHDROP_SCENARIO"),
        ({"WATCHDROP_SCENARIO": "watch", "WATCHDROP_NAMESPACE": "ns", "WATCHDROP_STYLE": "informer"}, "STYLE"),
        ({"WATCHDROP_SCENARIO": "idle-request", "WATCHDROP_NAMESPACE": "ns"}, "WATCHDROP_ROUNDS"),
        (
            {"WATCHDROP_SCENARIO": "watch", "WATCHDROP_NAMESPACE": "ns", "WATCHDROP_TCP_KEEPALIVE": "0"},
            "WATCHDROP_TCP_KEEPALIVE",
        ),
    ],
)
def test_client_python_rejects_bad_settings(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], problem: str) -> None:
    for name in list(os.environ):
        if name.startswith("WATCHDROP_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    watcher = _load_python_watcher()
    with pytest.raises(watcher.UsageError, match=problem):
        watcher.Settings.from_env()


def test_client_python_settings_parse_variant_options(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "WATCHDROP_SCENARIO": "idle-request",
        "WATCHDROP_NAMESPACE": "ns",
        "WATCHDROP_ROUNDS": "3",
        "WATCHDROP_IDLE": "250.5",
        "WATCHDROP_TCP_KEEPALIVE": "30",
        "WATCHDROP_REQUEST_TIMEOUT": "60",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("WATCHDROP_KUBECONFIG", raising=False)
    monkeypatch.delenv("WATCHDROP_STYLE", raising=False)
    settings = _load_python_watcher().Settings.from_env()
    assert (settings.rounds, settings.idle_s) == (3, 250.5)
    assert (settings.tcp_keepalive_idle_s, settings.request_timeout_s) == (30, 60)
    assert settings.kubeconfig is None and settings.style == "watch"


def test_client_python_timeout_variant_lets_the_server_end_each_watch() -> None:
    """Equal server and client timeouts race (a read-timeout error or a clean end, by chance): the
    repeatability benchmark saw client-python-timeout flip between PASS and RECOVERED."""
    watcher = _load_python_watcher()
    assert watcher.watch_timeouts(None) == {}
    got = watcher.watch_timeouts(30)
    assert got["timeout_seconds"] == 30 and got["_request_timeout"] >= 30 + 5
