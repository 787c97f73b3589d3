"""One collect step for every backend: read a cell's evidence, judge it, write its cell.json.

The embedded backend (runner/embedded/cell.py) and the kubernetes backend (runner/kube/cell.py)
gather the same evidence in the same layout; they differ only in where it comes from. A backend
stops its processes, then hands `collect_cell` a `BackendEvidence` with what only it knows (the LB's
record for this pod, the pod's status, how the capture ended); everything else (reading the watcher's
lines and the capture, the verdict, the result) is done here once, so the backends cannot drift apart.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from runner.evidence.lb_events import LbFlow
from runner.evidence.limits import LineReader, contract_line, cut_of, log_limit, pcap_limit
from runner.evidence.pcap import PcapError, PcapFacts, read_pcap
from runner.harness import HarnessRun, base_result
from runner.model import CaptureFacts, CellResult, Cut, LbSummary, ProfileFacts
from runner.verdict import CellInputs, judge_cell


def _no_line_problems(_: Sequence[Mapping[str, Any]] | None) -> list[str]:
    return []


@dataclass
class BackendEvidence:
    """What differs between backends; the rest of a cell's evidence is read by `collect_cell`."""

    #: The LB profile the verdict holds the capture against; None where no LB is emulated.
    profile: ProfileFacts | None
    #: Evidence file names listed in the result when present (cell.json always).
    evidence_files: Sequence[str]
    #: The capture as already read (in parallel, by the caller), or the error reading it; None:
    #: read it here.
    pcap: PcapFacts | Exception | None = None
    #: Server ports that name the server end of a connection whose SYN was not captured.
    server_ports: set[int] | None = None
    #: False when the watcher never ran (a pod that never started): no log or capture to read.
    ran: bool = True
    #: What the LB's event log says it did to this pod's flows; None where no LB is emulated.
    lb: LbSummary | None = None
    #: The same log per flow, held against the capture's connections.
    lb_flows: Sequence[LbFlow] = ()
    #: How the capture ended (tcpdump's own account); None: unknown, which is missing evidence.
    capture: CaptureFacts | None = None
    #: What the backend's own log sink cut (the kubernetes backend's LineSink); merged per file with
    #: what collect_cell finds at the files' limits.
    cuts: Sequence[Cut] = ()
    lb_helper_died: bool = False
    apiserver_died: bool = False
    #: Problems known before the capture is read (the pod's status), one line each.
    problems: Sequence[str] = ()
    #: Problems found in the watcher's lines (the node's clock), given the lines (None: no log).
    line_problems: Callable[[Sequence[Mapping[str, Any]] | None], list[str]] = _no_line_problems
    #: Problems known after the capture (the LB's own), one line each.
    late_problems: Sequence[str] = ()


def collect_cell(run: HarnessRun, ev: BackendEvidence) -> CellResult:
    """Judge the cell from its evidence and write `cell.json`; the backend has stopped its processes."""
    cell, desc = run.cell, run.built.descriptor
    errors = list(run.harness_errors)
    if run.setup_error:
        errors.append(run.setup_error)
    errors += ev.problems
    pcap: PcapFacts | None = None
    lines = None
    if ev.ran:
        try:
            if isinstance(ev.pcap, Exception):
                raise ev.pcap
            pcap = ev.pcap or read_pcap(run.pcap_path, server_ports=ev.server_ports)
        except (PcapError, OSError) as exc:
            errors.append(f"no packet evidence: {exc}")
        lines = read_watcher_lines(run) if run.stdout.exists() else None
        errors += ev.line_problems(lines)
    errors += ev.late_problems
    stderr = LineReader(run.stderr)
    stderr_text = "\n".join(stderr.read_all())
    cuts = [c for c in (cut_of("watcher.jsonl", run.stdout, run.stdout_long_lines, log_limit()),
                        cut_of("watcher.stderr", run.stderr, stderr.long_lines, log_limit()),
                        cut_of("pod.pcap", run.pcap_path, 0, pcap_limit()))
            if c is not None]
    cuts = merge_cuts([*cuts, *ev.cuts])
    inputs = CellInputs(
        scenario=cell.scenario, detection_timeout=cell.detection_timeout, expected_rounds=cell.rounds,
        profile=ev.profile, updates=run.updates, watcher_lines=lines, watcher_exit=run.watcher_exit,
        watcher_stderr=stderr_text,
        pcap=pcap, lb=ev.lb, lb_helper_died=ev.lb_helper_died, apiserver_died=ev.apiserver_died,
        harness_errors=errors,
        # The version this cell's build pins (a variant's build_env may pin another than the
        # descriptor's default), decided here once so the backends cannot disagree on it.
        expected_version=desc.version_for(cell.build_env),
        capture=ev.capture if ev.ran else None, lb_flows=ev.lb_flows, idle=cell.idle, cuts=cuts,
        path_expiry=float(expiry) if ev.profile is not None and cell.path is not None
        and (expiry := cell.path.first_expiry) is not None else None,
    )
    j = judge_cell(inputs)
    result = base_result(cell, desc, j.verdict, j.reason)
    result.rounds = j.rounds
    result.watcher = j.watcher
    result.pcap = pcap.to_dict() if pcap else None
    result.lb = ev.lb
    result.keepalive = pcap.keepalive_summary() if pcap else ""
    result.errors = list(inputs.harness_errors) + (["LB agent died"] if inputs.lb_helper_died else []) + (
        ["kube-apiserver died"] if inputs.apiserver_died else [])
    result.started, result.finished = run.started, run.finished
    result.capture = ev.capture
    result.cuts = cuts
    rel = run.evidence.relative_to(run.run_dir)
    result.evidence = {name: str(rel / name) for name in ev.evidence_files
                       if (run.evidence / name).exists() or name == "cell.json"}
    (run.evidence / "cell.json").write_text(json.dumps(result.to_dict(), indent=2, sort_keys=True) + "\n")
    return result


def read_watcher_lines(run: HarnessRun) -> list[dict[str, Any]]:
    """The contract lines of the watcher's whole stdout, lines cut at LINE_MAX (counted on the run)."""
    reader = LineReader(run.stdout)
    lines = [obj for text in reader.read_all() if (obj := contract_line(text)) is not None]
    run.stdout_long_lines = max(run.stdout_long_lines, reader.long_lines)
    return lines


def merge_cuts(cuts: Sequence[Cut]) -> list[Cut]:
    """One Cut per file: a file may be cut by the backend's sink and seen at its limit here."""
    by_file: dict[str, Cut] = {}
    for c in cuts:
        had = by_file.get(c.file)
        by_file[c.file] = c if had is None else Cut(
            file=c.file, long_lines=had.long_lines + c.long_lines,
            capped_at=had.capped_at if had.capped_at is not None else c.capped_at)
    return list(by_file.values())
