"""The one loop every backend goes through (runner/backend.py): step order, errors, teardown.

A stand-in backend records the calls: this is the loop's pure logic; the real backends are
driven through the same loop in tests/test_e2e_quick.py and tests/test_k8s_backend.py.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pytest

from runner.backend import RunContext, run_backend, unfinished
from runner.config.descriptor import load_descriptor
from runner.config.plan import Cell
from runner.errors import Interrupted, PrerequisiteError
from runner.harness import HarnessRun, base_result
from runner.host.lifetime import teardown_steps
from runner.model import CellResult, Verdict

REPO = Path(__file__).resolve().parent.parent


def _cell(n: int) -> Cell:
    return Cell(client=f"client-go-{n}", folder="client-go", cluster="c", cluster_kind="embedded", scenario="watch",
                profile=None, idle_timeout=45, interval=65, idle=None, detection_timeout=10, rounds=2,
                src=REPO / "clients" / "client-go")


class Recorder:
    phase_prefix = "x "

    def __init__(self, tmp: Path, fail_at: str = "", close_raises: bool = False):
        self.name = "recorder"
        self.cells_given = [_cell(1), _cell(2)]
        self.evidence = tmp / "recorder"
        self.calls: list[str] = []
        self.fail_at = fail_at
        self.close_raises = close_raises

    def _step(self, name: str) -> None:
        self.calls.append(name)
        if self.fail_at == name:
            raise PrerequisiteError(f"{name} failed", fix="do the thing")
        if self.fail_at == f"{name}!":
            raise Interrupted("SIGINT")

    def prepare(self) -> dict[str, CellResult]:
        self._step("prepare")
        return {}

    def start(self) -> None:
        self._step("start")

    def cells(self) -> Sequence[HarnessRun]:
        self._step("cells")
        return []

    def collect(self, runs: Sequence[HarnessRun]) -> dict[str, CellResult]:
        self._step("collect")
        return {}

    def collected(self) -> None:
        self._step("collected")

    def hold(self) -> None:
        self._step("hold")

    def close(self) -> list[str]:
        self.calls.append("close")
        if self.close_raises:
            raise RuntimeError("boom")
        return ["one thing left"]


def _ctx(tmp: Path, keep: bool = False) -> RunContext:
    descriptors = {"client-go": load_descriptor(REPO / "clients" / "client-go")}
    return RunContext(run_id="r", run_dir=tmp, descriptors=descriptors, say=lambda _: None, keep=keep)


def test_steps_run_in_order_and_close_always_runs(tmp_path: Path) -> None:
    b = Recorder(tmp_path)
    rounds: list[str] = []
    problems = run_backend(b, _ctx(tmp_path, keep=True), {}, rounds=lambda runs, ctx: rounds.append("rounds"))
    assert b.calls == ["prepare", "start", "cells", "collected", "hold", "close"] and rounds == ["rounds"]
    assert problems == ["one thing left"]
    assert (b.evidence / "problems.txt").read_text() == "one thing left\n"


class Early(Recorder):
    """Two cells whose rounds end at different times, and one whose setup failed."""

    def __init__(self, tmp: Path):
        super().__init__(tmp)
        self.cells_given = [_cell(1), _cell(2), _cell(3)]
        self.runs = [SimpleNamespace(cell=c, setup_error=None, finished=None) for c in self.cells_given]
        self.runs[2].setup_error = "no pod"
        self.collected_ids: list[list[str]] = []

    def cells(self) -> Sequence[HarnessRun]:
        self._step("cells")
        return cast(list[HarnessRun], self.runs)

    def collect(self, runs: Sequence[HarnessRun]) -> dict[str, CellResult]:
        self._step("collect")
        ids = [r.cell.id for r in runs]
        self.collected_ids.append(ids)
        desc = load_descriptor(REPO / "clients" / "client-go")
        return {r.cell.id: base_result(r.cell, desc, Verdict.PASS, "ok") for r in runs}


def test_each_cell_is_collected_when_its_own_rounds_end_and_once(tmp_path: Path) -> None:
    """issue 16 §6: a cell is judged while longer cells still run, so the run ends soon after its
    longest cell; a cell that never ran is collected after the last round; each exactly once."""
    b = Early(tmp_path)
    seen: list[str] = []
    results: dict[str, CellResult] = {}
    ctx = _ctx(tmp_path)
    ctx.on_result = lambda r: seen.append(r.cell_id)

    def rounds(runs: Sequence[HarnessRun], _: RunContext) -> None:
        b.runs[0].finished = time.time()
        deadline = time.monotonic() + 10
        while not b.collected_ids and time.monotonic() < deadline:
            time.sleep(0.05)
        assert b.collected_ids == [["client-go-1/c/watch"]]  # while cell 2 is still in its rounds
        b.runs[1].finished = time.time()

    run_backend(b, ctx, results, rounds=rounds)
    flat = sorted(i for ids in b.collected_ids for i in ids)
    assert flat == ["client-go-1/c/watch", "client-go-2/c/watch", "client-go-3/c/watch"]
    assert b.collected_ids[-1][-1] == "client-go-3/c/watch"  # the cell that never ran: after the rounds
    assert sorted(results) == flat and sorted(seen) == flat
    assert b.calls[-2:] == ["collected", "close"]


def test_a_backend_that_cannot_start_makes_its_own_cells_error_and_is_closed(tmp_path: Path) -> None:
    b = Recorder(tmp_path, fail_at="start")
    results: dict[str, CellResult] = {}
    ctx = _ctx(tmp_path)
    problems = run_backend(b, ctx, results, rounds=lambda runs, ctx: None)
    assert b.calls == ["prepare", "start", "close"]
    assert {r.verdict for r in results.values()} == {Verdict.ERROR} and len(results) == 2
    r = results["client-go-1/c/watch"]
    assert r.reason == "recorder: start failed" and "fix: do the thing" in r.errors
    assert any("start failed" in p for p in problems)
    assert not ctx.stop.is_set()  # the next backend still runs


def test_an_interrupt_still_closes_and_propagates(tmp_path: Path) -> None:
    b = Recorder(tmp_path, fail_at="cells!")
    with pytest.raises(Interrupted):
        run_backend(b, _ctx(tmp_path), {}, rounds=lambda runs, ctx: None)
    assert b.calls[-1] == "close"


def test_a_close_that_raises_is_a_problem_not_a_lost_run(tmp_path: Path) -> None:
    b = Recorder(tmp_path, close_raises=True)
    problems = run_backend(b, _ctx(tmp_path), {}, rounds=lambda runs, ctx: None)
    assert problems == ["recorder teardown: RuntimeError: boom"]


def test_teardown_steps_run_every_step_and_report_each_failure() -> None:
    done: list[str] = []

    def fail(what: str) -> None:
        done.append(what)
        raise TimeoutError(f"{what} hung")

    problems = teardown_steps([("a", lambda: fail("a")), ("b", lambda: done.append("b")), ("c", lambda: fail("c"))])
    assert done == ["a", "b", "c"]
    assert problems == ["a: TimeoutError: a hung", "c: TimeoutError: c hung"]


def test_cells_never_reached_are_error(tmp_path: Path) -> None:
    descs = {"client-go": load_descriptor(REPO / "clients" / "client-go")}
    cells = [_cell(1), _cell(2)]
    out = unfinished(cells, {}, descs, interrupted=True)
    assert [r.reason for r in out.values()] == ["interrupted", "interrupted"]
    out = unfinished(cells, {}, descs, interrupted=False)
    assert {r.verdict for r in out.values()} == {Verdict.ERROR}


def test_both_backends_have_the_protocols_steps_with_its_signatures() -> None:
    import inspect

    from runner.backend import Backend
    from runner.embedded.backend import EmbeddedBackend
    from runner.kube.backend import KubernetesBackend
    from runner.local.provider import LocalProvidedBackend

    steps = ["prepare", "start", "cells", "collect", "hold", "close"]
    for impl in (EmbeddedBackend, KubernetesBackend, LocalProvidedBackend):
        for step in steps:
            want = list(inspect.signature(getattr(Backend, step)).parameters)
            assert list(inspect.signature(getattr(impl, step)).parameters) == want, (impl.__name__, step)
        assert isinstance(impl.phase_prefix, str)


# -- the waits written once (runner/host/procs.py) ------------------------------------------------------


def test_wait_until_returns_when_ready_and_names_a_child_that_died(tmp_path: Path) -> None:
    from runner.errors import ClusterError
    from runner.host.procs import Child, wait_until

    ok = Child("sleeper", ["sleep", "30"], stdout=tmp_path / "a")
    try:
        wait_until(lambda: True, ok, 1, "ready")
    finally:
        ok.stop(1)
    dead = Child("quitter", ["sh", "-c", "echo bye >&2; exit 7"], stdout=tmp_path / "b")
    with pytest.raises(ClusterError) as info:
        wait_until(lambda: False, dead, 10, "ready")
    assert "quitter exited with code 7 while starting (ready)" in info.value.message
    assert "bye" in (info.value.detail or "")
    slow = Child("slow", ["sleep", "30"], stdout=tmp_path / "c")
    try:
        with pytest.raises(ClusterError) as info:
            wait_until(lambda: False, slow, 0.3, "listening", last=lambda: "connection refused")
        assert info.value.message == "slow: not listening within 0.3 s (connection refused)"
    finally:
        slow.stop(1)


def test_escalate_kills_what_ignores_sigterm(tmp_path: Path) -> None:
    from runner.host.procs import Child

    stubborn = Child("stubborn", ["sh", "-c", "trap '' TERM; while :; do sleep 0.1; done"], stdout=tmp_path / "s")
    time.sleep(0.2)  # the trap is set
    assert stubborn.stop(grace=0.5) == -9


def test_an_embedded_backend_whose_builds_all_failed_runs_nothing_and_closes(tmp_path: Path) -> None:
    from runner.embedded.backend import EmbeddedBackend

    b = EmbeddedBackend([], _ctx(tmp_path))
    b.start()
    assert b.cells() == [] and b.collect([]) == {} and b.close() == []
    assert b.cluster is None


def test_concurrent_teardown_runs_every_step_at_once_and_reports_each_failure() -> None:
    import threading

    from runner.host.lifetime import teardown_concurrently

    arrived = threading.Barrier(3, timeout=5)   # only passes if all three steps run at the same time

    def wait_then(fail: bool) -> None:
        arrived.wait()
        if fail:
            raise RuntimeError("capture would not stop")

    problems = teardown_concurrently([("lb a", lambda: wait_then(True)), ("lb b", lambda: wait_then(False)),
                                      ("lb c", lambda: wait_then(True))])
    assert problems == ["lb a: RuntimeError: capture would not stop", "lb c: RuntimeError: capture would not stop"]
