"""Inputs that reach a package manager, the terminal or the README cannot do more than they say.

- A variant's library version (`version_env`, e.g. the JavaScript client's CLIENT_NODE_VERSION) is
  a version, refused at matrix load with the line otherwise (not `file:`, `github:`, a package).
- Text from libraries and API errors shows its control characters escaped, and cannot open an
  HTML comment in Markdown (so it can neither forge nor break the README's matrix markers).
- Results and README keep readable permissions whatever root's umask.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from runner.build.clients import build_client
from runner.config.descriptor import load_descriptor
from runner.config.matrix import load_matrix
from runner.errors import BuildError, MatrixError, WatchdropError
from runner.model import Verdict
from runner.report import render
from tests.test_junit import synthetic_run

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("spec", ["file:../../evil", "github:someone/client-node", "evil-package@1.0.0",
                                  "latest", "^1.0.0", "1.0.0 || file:x", "1.0.0; rm -rf /"])
def test_a_library_version_setting_accepts_a_version_only(tmp_path: Path, spec: str) -> None:
    text = (REPO / "matrix.quick.yaml").read_text()
    assert 'CLIENT_NODE_VERSION: "1.0.0"' in text
    bad = tmp_path / "matrix.yaml"
    bad.write_text(text.replace('CLIENT_NODE_VERSION: "1.0.0"', f"CLIENT_NODE_VERSION: {spec!r}"))
    line = next(i for i, x in enumerate(bad.read_text().splitlines(), 1) if "CLIENT_NODE_VERSION" in x)
    with pytest.raises(MatrixError) as info:
        load_matrix(bad, REPO / "clients")
    (problem,) = [p for p in info.value.problems if "CLIENT_NODE_VERSION" in p]
    assert f"{bad}:{line}:" in problem and "must be a version" in problem


def test_a_plain_version_and_a_prerelease_load(tmp_path: Path) -> None:
    text = (REPO / "matrix.quick.yaml").read_text()
    for good in ("1.0.0", "1.3.0-rc.1"):
        path = tmp_path / "matrix.yaml"
        path.write_text(text.replace('CLIENT_NODE_VERSION: "1.0.0"', f'CLIENT_NODE_VERSION: "{good}"'))
        load_matrix(path, REPO / "clients")


def test_the_build_refuses_a_spec_even_without_a_matrix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDROP_CACHE", str(tmp_path / "cache"))
    desc = load_descriptor(REPO / "clients" / "javascript")
    with pytest.raises(BuildError, match="is not a version"):
        build_client(REPO / "clients" / "javascript", desc, {"CLIENT_NODE_VERSION": "file:/tmp/x"}, tmp_path / "b.log")


EVIL = "boom\x1b[2J\x1b]0;owned\x07 \r<!-- watchdrop:matrix:end --> \u202egnp.exe | x"


def _evil_run():  # type: ignore[no-untyped-def]
    run = synthetic_run()
    run.cells[0].verdict = Verdict.ERROR
    run.cells[0].reason = EVIL
    run.cells[0].errors = [EVIL]
    return run


def test_rendered_text_shows_control_characters_escaped() -> None:
    run = _evil_run()
    for text in (render.render_table(run, "plain"), render.render_table(run, "github"), render.render_markdown(run)):
        assert "\x1b" not in text and "\x07" not in text and "\r" not in text and "\u202e" not in text
        assert "\\x1b[2J" in text
    err = WatchdropError(f"the API said {EVIL}", detail=EVIL).render()
    assert "\x1b" not in err and "\\x1b" in err


def test_library_text_cannot_break_the_readme_markers(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{render.README_BEGIN}\nold\n{render.README_END}\nrest\n")
    section = render.render_table(_evil_run(), "github")
    assert render.README_END not in section
    render.update_readme(readme, section)
    text = readme.read_text()
    assert text.count(render.README_BEGIN) == 1 and text.count(render.README_END) == 1
    # And the next update still finds its section.
    render.update_readme(readme, "new table")
    assert "new table" in readme.read_text() and "rest" in readme.read_text()


def test_readme_keeps_its_mode_and_owner(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"{render.README_BEGIN}\n{render.README_END}\n")
    readme.chmod(0o644)
    owner = 12345 if os.geteuid() == 0 else os.getuid()
    if os.geteuid() == 0:
        os.chown(readme, owner, owner)
    old = os.umask(0o077)
    try:
        assert render.update_readme(readme, "table")
    finally:
        os.umask(old)
    st = readme.stat()
    assert (st.st_mode & 0o777, st.st_uid) == (0o644, owner)


def test_results_are_readable_whatever_roots_umask(tmp_path: Path) -> None:
    """`python -m runner report --html` under umask 077: files 0644, folders 0755."""
    run_dir = tmp_path / "run"
    old = os.umask(0o077)
    try:
        render.write_reports(synthetic_run(), run_dir)
    finally:
        os.umask(old)
    assert (run_dir / "results.json").stat().st_mode & 0o777 == 0o644
    assert (run_dir / "report.md").stat().st_mode & 0o777 == 0o644
    proc = subprocess.run([sys.executable, "-m", "runner", "report", str(run_dir / "results.json"), "--html"],
                          cwd=REPO, capture_output=True, text=True, timeout=300, preexec_fn=lambda: os.umask(0o077))
    assert proc.returncode == 0, proc.stderr
    for p in run_dir.rglob("*"):
        want = 0o755 if p.is_dir() else 0o644
        assert p.stat().st_mode & 0o777 == want, (p, oct(p.stat().st_mode))


def test_certificates_outlive_the_longest_cell_a_matrix_may_have() -> None:
    """A cell longer than the longest watcher token is refused at load (test_matrix); every certificate
    of a run is valid longer than that, so an expiring serving or client certificate can never end a
    cell and pass for something the LB did."""
    from runner.credentials import pki, rbac

    longest_cell = rbac.TOKEN_MAX_SECONDS - rbac.TOKEN_MARGIN
    assert pki._VALID.total_seconds() > longest_cell + 3600


def test_a_token_the_api_server_caps_below_the_cell_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An API server whose --service-account-max-token-expiration is below what the cell needs: the
    token would expire mid-cell and a 401 would read as a finding about the LB, so setup refuses."""
    import datetime as dt
    from types import SimpleNamespace

    from runner.credentials import rbac

    class _Api:
        def __init__(self, _api: object) -> None:
            pass

        def __getattr__(self, name: str):  # namespace, service account, role, binding: accepted
            return lambda *a, **k: None

        def create_namespaced_service_account_token(self, *a: object, **k: object) -> SimpleNamespace:
            capped = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=600)
            return SimpleNamespace(status=SimpleNamespace(token="t", expiration_timestamp=capped))

    monkeypatch.setattr(rbac.client, "CoreV1Api", _Api)
    monkeypatch.setattr(rbac.client, "RbacAuthorizationV1Api", _Api)
    with pytest.raises(RuntimeError, match=r"token valid for \d+ s; the cell needs 3600 s"):
        rbac.create_watcher_access(object(), "cell-000", server="https://x", ca_pem=b"", seconds=3600,
                                   kubeconfig_path=tmp_path / "kc")
    assert not (tmp_path / "kc").exists(), "a kubeconfig was written for a token that expires mid-cell"
