"""The repository stands on its own: no file points at a path outside it (a clone has no such file)."""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# Built from parts, so this file does not itself contain the paths it looks for: a build machine's
# work folder, the steering repo's shared folder beside a checkout, and its facts file.
_WORK, _SHARED = "/" + "work/", r"\.\./" + "shared/"
OUTSIDE = re.compile(rf"{_WORK}|{_SHARED}|(?<![\w/])FACTS\.md")


def test_no_file_references_a_path_outside_the_repository() -> None:
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    hits = []
    for name in files:
        path = REPO / name
        # Fixtures too: evidence recorded on a build machine carries its paths until rewritten.
        if not path.is_file() or path.suffix in (".svg", ".png", ".pcap"):
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        hits += [f"{name}:{i}: {line.strip()}" for i, line in enumerate(text.splitlines(), 1) if OUTSIDE.search(line)]
    assert not hits, "\n".join(hits)


def test_production_code_reads_no_test_hook_from_the_environment() -> None:
    """Test seams are explicit (hidden CLI options passed down as data), never environment variables
    that production code paths look up."""
    hooks = re.compile(r"WATCHDROP_(TEST|PAUSE|LIMIT)\w*")
    # Every WATCHDROP_ variable production code looks up must be a user's setting, listed here.
    lookups = re.compile(r"""(?:environ\.get\(|environ\[|getenv\()\s*["'](WATCHDROP_\w+)""")
    users_settings = {"WATCHDROP_CACHE"}
    hits = []
    for p in sorted((REPO / "runner").rglob("*.py")):
        for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
            looked_up = set(lookups.findall(line)) - users_settings
            if hooks.search(line) or looked_up:
                hits.append(f"{p.relative_to(REPO)}:{i}")
    assert not hits, hits


def test_a_module_over_500_lines_says_why_at_its_top() -> None:
    long = [p for p in sorted((REPO / "runner").rglob("*.py")) if len(p.read_text(encoding="utf-8").splitlines()) > 500]
    unexplained = [str(p.relative_to(REPO)) for p in long
                   if "Why one long module" not in p.read_text(encoding="utf-8").split('"""')[1]]
    assert not unexplained, unexplained


#: Functions allowed past the limits below, each with its reason ("path:name": "why"). Empty: none is.
LONG_FUNCTIONS_ALLOWED: dict[str, str] = {}
MAX_FUNCTION_LINES = 80
MAX_PARAMETERS = 8  # self and cls not counted


def test_no_function_is_too_long_or_takes_too_many_parameters() -> None:
    """A newcomer reads a function whole: none over MAX_FUNCTION_LINES lines (docstring included) or
    MAX_PARAMETERS parameters (bundle them in a dataclass), unless LONG_FUNCTIONS_ALLOWED says why."""
    found = []
    for p in sorted((REPO / "runner").rglob("*.py")):
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            a = node.args
            params = [x.arg for x in (*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg)
                      if x is not None and x.arg not in ("self", "cls")]
            lines = (node.end_lineno or node.lineno) - node.lineno + 1
            key = f"{p.relative_to(REPO)}:{node.name}"
            if (lines > MAX_FUNCTION_LINES or len(params) > MAX_PARAMETERS) and key not in LONG_FUNCTIONS_ALLOWED:
                found.append(f"{key}: {lines} lines, {len(params)} parameters")
    assert not found, found


#: Tools the tests' `needs_root_tools` may name that come with the machine, not from sysdeps' install:
#: the Go toolchain and util-linux (Debian's essential set).
BASE_TOOLS = {"go", "setpriv", "unshare", "nsenter", "prlimit", "chrt"}


def test_every_tool_a_kernel_test_needs_is_installed_before_collection(monkeypatch) -> None:
    """A fresh CI machine has no nft or tcpdump: if the install came after collection (a session
    fixture did), every `needs_root_tools` mark was already decided and the kernel tests skipped."""
    from runner.host import sysdeps
    from tests import conftest

    named: set[str] = set()
    for path in (REPO / "tests").glob("*.py"):
        for call in re.findall(r"needs_root_tools\(([^)]*)\)", path.read_text(encoding="utf-8")):
            named |= set(re.findall(r'"([^"]+)"', call))
    assert named - set(sysdeps.TOOLS) - BASE_TOOLS == set()

    calls: list[str] = []
    monkeypatch.setattr(sysdeps, "ensure_tools", lambda *a, **k: calls.append("installed"))
    monkeypatch.setattr(conftest.os, "geteuid", lambda: 0)
    conftest.pytest_configure(None)  # type: ignore[arg-type]
    assert calls == ["installed"]
