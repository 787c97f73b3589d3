"""bench/max_concurrency.py's pure parts: the levels' clients, the comparison with the baseline, the answer."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parent.parent


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("max_concurrency", REPO / "bench" / "max_concurrency.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_each_level_holds_the_sample_plus_the_first_others() -> None:
    b = _bench()
    levels = b.extra_clients(["a", "s1", "b", "s2", "c"], ["s1", "s2"], ["0", "2", "all"])
    assert levels == [["s1", "s2"], ["s1", "s2", "a", "b"], ["s1", "s2", "a", "b", "c"]]


def test_a_changed_or_missing_sample_cell_differs_and_skipped_cells_never_count() -> None:
    b = _bench()
    base = {"x/c/watch": ("PASS", "r"), "y/c/watch": ("FAIL-SILENT", "r"), "z/c/watch": ("RECOVERED", "r")}
    level = b.verdicts({"cells": [
        {"client": "x", "cluster": "c", "scenario": "watch", "verdict": "PASS", "reason": "other words"},
        {"client": "y", "cluster": "c", "scenario": "watch", "verdict": "ERROR", "reason": "slow start"},
        {"client": "w", "cluster": "c", "scenario": "watch", "verdict": "SKIPPED", "reason": "no SDK"},
    ]})
    assert set(level) == {"x/c/watch", "y/c/watch"}
    assert b.compare(base, level) == (["x/c/watch"], ["y/c/watch", "z/c/watch"])


def test_the_answer_is_the_largest_level_below_which_every_level_agreed() -> None:
    b = _bench()
    assert b.most_at_once([(132, True), (24, True), (72, True)]) == 132
    assert b.most_at_once([(132, True), (24, True), (72, False)]) == 24
    assert b.most_at_once([(24, False), (72, True)]) is None
