"""One collect for every backend (runner/collect.py): the same evidence gives the same
verdict, reason and rounds on the embedded and the kubernetes backend, and how the capture ended is
judged on both. No cluster: the runs get their evidence files and stand-ins for what they would ask.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from runner.build.clients import BuiltClient
from runner.config.descriptor import load_descriptor
from runner.config.plan import Cell
from runner.config.profiles import Profile, resolve_profile
from runner.embedded.cell import CellRun
from runner.evidence.lb_events import LbProblem
from runner.evidence.pcap import ConnFacts, PcapFacts
from runner.kube.api import KubeAccess
from runner.kube.cell import KubeCellRun
from runner.model import CaptureFacts, CellResult, Verdict
from runner.verdict import Update

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "rawpy"
POD = "198.18.1.2"
OK = CaptureFacts(ran_to_end=True, exit_code=0, dropped=0, size=4096, limit=64 << 20)


class _NoApi:
    """An ApiClient stand-in: every call fails, as against a cluster that is gone."""

    def close(self) -> None:
        pass

    def call_api(self, *_: Any, **__: Any) -> Any:
        raise RuntimeError("no cluster here")


def _pcap() -> PcapFacts:
    data, keepalive = [1.0, 100.05, 200.05], [30.0 * k for k in range(1, 7)]
    conn = ConnFacts(client=f"{POD}:40000", server="198.18.0.1:6443", opened_at=0.5, closed_at=None,
                     close_kind=None, data_server=data, keepalive_client=keepalive,
                     packet_times=sorted([0.5, *data, *keepalive]))
    return PcapFacts(connections=[conn], first_ts=0.5, last_ts=200.05)


def _evidence(folder: Path, version: str = "stdlib") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    lines = [{"ts": 0.0, "event": "started", "client": "rawpy", "library": "http.client", "version": version,
              "style": "watch"}, {"ts": 1.0, "event": "watch-opened"}]
    lines += [{"ts": t, "event": "event-seen", "type": "MODIFIED", "name": "trigger", "value": v,
               "resourceVersion": "1"} for t, v in ((100.05, "round-1"), (200.05, "round-2"))]
    (folder / "watcher.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    (folder / "watcher.stderr").write_text("")


def _cell(kind: str, build_env: dict[str, str] | None = None, profile: Profile | None = None) -> Cell:
    return Cell(client="rawpy", folder="rawpy", cluster="c", cluster_kind=kind, scenario="watch", profile=profile,
                idle_timeout=240, interval=270, idle=None, detection_timeout=10, rounds=2, src=FIXTURE,
                build_env=build_env or {})


def _common(run: Any) -> None:
    run.updates = [Update(100.0, "round-1"), Update(200.0, "round-2")]
    run.watcher_exit = 0
    run.started, run.finished = 0.0, 210.0


def _built(tmp_path: Path, version_env: str | None) -> BuiltClient:
    desc = load_descriptor(FIXTURE)
    if version_env:
        desc = desc.model_copy(update={"version_env": version_env})
    return BuiltClient("rawpy", desc, tmp_path, FIXTURE)


@dataclass
class _Lb:
    """A RecordingLb stand-in: a profile, an event log file, and the problems it reports."""

    profile: Profile
    events_path: Path
    dead: list[LbProblem] = field(default_factory=list)

    def problems(self) -> list[LbProblem]:
        return self.dead

    def hop_logs(self) -> list[tuple[str, Path]]:
        return [("lb", self.events_path)]


def embedded(tmp_path: Path, capture: CaptureFacts | None, *, version: str = "stdlib",
             version_env: str | None = None, build_env: dict[str, str] | None = None,
             lb: _Lb | None = None) -> CellResult:
    built = _built(tmp_path, version_env)
    events = tmp_path / "lb-events.jsonl"
    if lb is None:
        events.write_text("")
    evidence = tmp_path / "emb"
    _evidence(evidence, version)
    cell = _cell("embedded", build_env, lb.profile if lb else None)
    run = CellRun(index=0, cell=cell, built=built, evidence=evidence, run_dir=tmp_path,
                  stop=threading.Event(), cluster=cast(Any, None),
                  lb=cast(Any, lb or SimpleNamespace(hop_logs=lambda: [("lb", events)])),
                  pod=cast(Any, SimpleNamespace(addr=POD)))
    run.capture = cast(Any, SimpleNamespace(ended=capture, stop=lambda: None))
    _common(run)
    return run.collect(lb.problems() if lb else [], True, _pcap())


def kube(tmp_path: Path, capture: CaptureFacts | None, *, version: str = "stdlib",
         version_env: str | None = None, build_env: dict[str, str] | None = None,
         lb: _Lb | None = None) -> CellResult:
    built = _built(tmp_path, version_env)
    evidence = tmp_path / "kube"
    _evidence(evidence, version)
    # A local cluster's cells carry their LB's profile from the plan, as embedded ones do.
    cell = _cell("kubernetes", build_env, lb.profile if lb else None)
    run = KubeCellRun(index=0, cell=cell, built=built, evidence=evidence, run_dir=tmp_path,
                      stop=threading.Event(), run_id="abc123", access=KubeAccess(new_api=cast(Any, _NoApi)),
                      lb=lb, pod_ip=POD)
    run.pod_started = True
    run.capture = capture
    _common(run)
    return run.collect(pcap_facts=_pcap())


@pytest.mark.parametrize("capture", [OK, CaptureFacts(ran_to_end=False, exit_code=-9, dropped=None, size=10,
                                                      limit=64 << 20), None], ids=["whole", "killed", "unknown"])
def test_both_backends_judge_the_same_evidence_alike(tmp_path: Path, capture: CaptureFacts | None) -> None:
    emb, kub = embedded(tmp_path, capture), kube(tmp_path, capture)
    assert (emb.verdict, emb.reason) == (kub.verdict, kub.reason)
    assert [r.to_dict() for r in emb.rounds] == [r.to_dict() for r in kub.rounds]
    assert emb.capture == kub.capture == capture
    if capture is OK:
        assert emb.verdict is Verdict.PASS, emb.reason
    elif capture is None:
        assert emb.verdict is Verdict.ERROR and "no record of how the capture ended" in emb.reason
    else:
        assert emb.verdict is Verdict.ERROR and "the capture stopped before the cell ended" in emb.reason
    for r, name in ((emb, "emb"), (kub, "kube")):
        stored = json.loads((tmp_path / name / "cell.json").read_text())
        assert stored == r.to_dict()
        assert CellResult.from_dict(stored) == r


@pytest.mark.parametrize("reported, verdict", [("1.0.0", Verdict.PASS), ("stdlib", Verdict.ERROR)],
                         ids=["variant-pin", "default-pin"])
def test_a_variants_build_env_pin_is_the_version_both_backends_expect(
        tmp_path: Path, reported: str, verdict: Verdict) -> None:
    """A variant building another library version (javascript-1x) must load that version, on
    both backends; the descriptor's default pin would be a wrong library."""
    pin = {"version_env": "RAWPY_VERSION", "build_env": {"RAWPY_VERSION": "1.0.0"}}
    emb = embedded(tmp_path, OK, version=reported, **pin)  # type: ignore[arg-type]
    kub = kube(tmp_path, OK, version=reported, **pin)  # type: ignore[arg-type]
    assert emb.verdict is kub.verdict is verdict, (emb.reason, kub.reason)
    if verdict is Verdict.ERROR:
        assert "pins 1.0.0" in kub.reason


def _flow_event(**fields: Any) -> str:
    return json.dumps({"flow": f"{POD}:40000>198.18.0.1:6443", **fields}) + "\n"


@pytest.mark.parametrize("log, dead, verdict, words", [
    ("", [], Verdict.PASS, ()),
    (_flow_event(ts=150.0, event="rst-sent", to="client"), [], Verdict.ERROR, ("LB log says it sent 1 RST",)),
    ("", [LbProblem("agent", "the LB agent died")], Verdict.ERROR, ("LB helper died",)),
], ids=["quiet-lb", "lb-reset-the-pod-unseen", "lb-agent-died"])
def test_an_emulated_lb_in_the_pods_path_is_held_against_the_capture_on_both_backends(
        tmp_path: Path, log: str, dead: list[LbProblem], verdict: Verdict, words: tuple[str, ...]) -> None:
    """A `local` cluster's provider hands its LB to the kubernetes backend: the cells' verdicts then
    read the LB's record (and its health) exactly as the embedded cells' do."""
    events = tmp_path / "lb-events.jsonl"
    events.write_text(log)
    lb = _Lb(resolve_profile("azure-slb-quick"), events, dead)
    emb, kub = embedded(tmp_path, OK, lb=lb), kube(tmp_path, OK, lb=lb)
    assert (emb.verdict, emb.reason) == (kub.verdict, kub.reason)
    assert kub.verdict is verdict, kub.reason
    assert all(w in kub.reason for w in words), kub.reason
    assert kub.lb == emb.lb and kub.profile == emb.profile
    kept = [json.loads(line) for line in (tmp_path / "kube" / "lb-events.jsonl").read_text().splitlines()]
    assert kept == [json.loads(line) for line in log.splitlines()]
