"""What starting the runner costs: the heavy libraries are imported where they are used, not by
every process that imports the runner (the runner itself, `--plan`, its spawned capture readers)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from runner import pipeline
from runner.config import descriptor, matrix

REPO = Path(__file__).resolve().parent.parent
#: Each takes about a second to import: matplotlib (drawing), CoreV1Api (its pydantic models in
#: kubernetes 37), scapy (reading captures).
HEAVY = ("matplotlib", "kubernetes.client.api.core_v1_api", "scapy")


def _imported_by(module: str) -> list[str]:
    code = (f"import json, sys, {module}\n"
            f"print(json.dumps(sorted(m for m in sys.modules if m.startswith({HEAVY!r}))))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


@pytest.mark.parametrize("module", ["runner.pipeline", "runner.cli"])
def test_the_runner_imports_no_heavy_library_before_it_needs_one(module: str) -> None:
    assert _imported_by(module) == []


def test_a_capture_reader_imports_its_module_only() -> None:
    # What a spawned reader imports for read_pcap_or_error: not the backend, the cluster or the kube client.
    code = ("import json, sys, runner.evidence.pcap\n"
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith(('runner.embedded', 'kubernetes')))))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def test_each_client_descriptor_is_loaded_once_per_run(monkeypatch: pytest.MonkeyPatch) -> None:
    loaded: list[str] = []
    real = descriptor.load_descriptor

    def counting(folder: Path) -> descriptor.Descriptor:
        loaded.append(folder.name)
        return real(folder)

    monkeypatch.setattr(matrix, "load_descriptor", counting)
    prepared = pipeline.prepare(REPO / "matrix.quick.yaml", [])
    assert len(prepared.cells) > len(prepared.descriptors)  # many cells share a folder
    assert sorted(loaded) == sorted(prepared.descriptors)
