"""Rendering a RunResult: the matrix table, report.md, results.json and the README section.

Everything here is a pure function of the RunResult (no clock, no machine lookups), so rendering the
same results.json twice gives byte-identical files, and `watchdrop report RESULTS.json` reproduces
exactly what the run wrote.

Table layout (one row per matrix entry, Autobahn-style): a client folder's default entry, then its
variants right under it as `↳ name (what differs)`; columns client, library + version, the keepalive
observed on the wire, then one column per cluster (per cluster · scenario when the run had several
scenarios), each cell `VERDICT: short reason`. Under the table: each profile's real numbers, the
legend, and "mitigation proven" lines where a variant PASSes where its folder's default FAILs.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from tabulate import tabulate

from runner.contract import WATCH
from runner.errors import UsageError
from runner.evidence.pcap import NONE_SEEN, KeepaliveSign
from runner.host.safefiles import write_atomic
from runner.model import CellResult, RunResult, Verdict, fmt_secs
from runner.text import markdown_text, plural, printable

README_BEGIN = "<!-- watchdrop:matrix:begin -->"
README_END = "<!-- watchdrop:matrix:end -->"

Format = Literal["plain", "github"]

_FAILS = (Verdict.FAIL_LOUD, Verdict.FAIL_SILENT)


# --- rows and columns ------------------------------------------------------------------------------


def ordered_entries(cells: Iterable[CellResult]) -> list[tuple[str, list[CellResult]]]:
    """(entry name, its cells) with folders in first-seen order and each folder's default first."""
    folders: dict[str, dict[str, list[CellResult]]] = {}
    for c in cells:
        folders.setdefault(c.folder, {}).setdefault(c.client, []).append(c)
    out: list[tuple[str, list[CellResult]]] = []
    for folder, entries in folders.items():
        if folder in entries:
            out.append((folder, entries[folder]))
        out.extend((name, cs) for name, cs in entries.items() if name != folder)
    return out


def table_columns(cells: Iterable[CellResult]) -> list[tuple[str, str]]:
    """(cluster, scenario) pairs, clusters in first-seen order, scenarios in first-seen order."""
    clusters: dict[str, None] = {}
    scenarios: dict[str, None] = {}
    for c in cells:
        clusters.setdefault(c.cluster)
        scenarios.setdefault(c.scenario)
    return [(cl, sc) for cl in clusters for sc in scenarios]


def _diff(variant: CellResult, default: CellResult | None) -> str:
    """What a variant changes relative to its folder's default entry, e.g. `WATCHDROP_TCP_KEEPALIVE=30`."""
    base_env = default.variant_env if default else {}
    base_build = default.build_env if default else {}
    parts = [f"{k}={v}" for k, v in sorted(variant.variant_env.items()) if base_env.get(k) != v]
    parts += [f"-{k}" for k in sorted(base_env) if k not in variant.variant_env]
    parts += [f"build {k}={v}" for k, v in sorted(variant.build_env.items()) if base_build.get(k) != v]
    if default is not None and variant.api_style != default.api_style:
        parts.append(f"style {variant.api_style}")
    if default is not None and variant.library_version != default.library_version:
        parts.append(f"{variant.library} {variant.library_version}")
    return ", ".join(parts)


def entry_label(name: str, cells: list[CellResult], defaults: dict[str, CellResult]) -> str:
    first = cells[0]
    if not first.is_variant:
        return name
    diff = _diff(first, defaults.get(first.folder))
    label = f"{name} ({diff})" if diff else name
    # Under its default the arrow shows the grouping; a variant whose default did not run stands alone.
    return f"↳ {label}" if first.folder in defaults else label


def keepalive_text(cells: list[CellResult]) -> str:
    """What the capture showed keeping an idle watch busy, from one representative cell.

    The watch cell behind the control profile (no LB) shows the library's own behaviour without
    any reset in the way; failing that, the first watch cell with packet facts. Only periodic
    traffic counts as keepalive: a lone small record (a TLS alert, a short request) is not one.
    """
    def rank(c: CellResult) -> tuple[int, int]:
        control = c.profile is not None and c.profile.mode == "none"
        return (0 if c.scenario == WATCH else 1, 0 if control else 1)

    candidates = sorted((c for c in cells if c.pcap is not None and c.keepalive), key=rank)
    if not candidates:
        return "—"
    periodic = [s.short() for s in KeepaliveSign.parse(candidates[0].keepalive) if s.periodic]
    return "; ".join(periodic) if periodic else NONE_SEEN


def cell_text(c: CellResult | None) -> str:
    if c is None:
        return "—"
    return f"{c.verdict.value}: {c.reason}" if c.reason else c.verdict.value


def table_cell(text: str, fmt: Format) -> str:
    # One line per row whatever a reason contains, and a bare `|` would end a Markdown cell; a
    # library's text can carry terminal escapes or `<!--` (runner/text.py).
    return markdown_text(text) if fmt == "github" else " ".join(printable(text).split())


def column_title(cluster: str, scenario: str, many_scenarios: bool) -> str:
    return f"{cluster} · {scenario}" if many_scenarios else cluster


def mitigation_lines(run: RunResult) -> list[str]:
    """Lines for variants that PASS where their folder's default FAILs, same cluster and scenario."""
    defaults = {(c.folder, c.cluster, c.scenario): c for c in run.cells if not c.is_variant}
    many = len({c.scenario for c in run.cells}) > 1
    lines = []
    for name, cells in ordered_entries(run.cells):
        for v in cells:
            if not v.is_variant or v.verdict is not Verdict.PASS:
                continue
            d = defaults.get((v.folder, v.cluster, v.scenario))
            if d is None or d.verdict not in _FAILS:
                continue
            diff = _diff(v, d) or "its settings"
            where = column_title(v.cluster, v.scenario, many)
            lines.append(f"mitigation proven: {diff} turns {d.client} {d.verdict.value} into PASS on {where} ({name})")
    return lines


def render_table(run: RunResult, fmt: Format) -> str:
    """The matrix table plus profiles, legend and mitigation lines; `plain` for terminals, `github` for
    Markdown."""
    if fmt not in ("plain", "github"):
        raise ValueError(f"unknown table format {fmt!r} (plain or github)")
    entries = ordered_entries(run.cells)
    columns = table_columns(run.cells)
    many = len({sc for _, sc in columns}) > 1
    defaults = {c.folder: c for c in run.cells if not c.is_variant}
    headers = [
        "client",
        "library",
        "keepalive (observed)",
        *(table_cell(column_title(cl, sc, many), fmt) for cl, sc in columns),
    ]
    rows = []
    for name, cells in entries:
        by_col = {(c.cluster, c.scenario): c for c in cells}
        first = cells[0]
        row = [
            entry_label(name, cells, defaults),
            f"{first.library} {first.library_version}",
            keepalive_text(cells),
            *(cell_text(by_col.get(col)) for col in columns),
        ]
        rows.append([table_cell(text, fmt) for text in row])
    if not rows:
        table = "(no cells)"
    else:
        # disable_numparse: a version such as 1.10 must not be re-rendered as the number 1.1.
        table = tabulate(rows, headers=headers, tablefmt=fmt, disable_numparse=True)

    return "\n".join([table, "", *table_notes(run, fmt)]) + "\n"


def table_notes(run: RunResult, fmt: Format) -> list[str]:
    """What every table of a run is followed by: interrupted, profiles' real numbers, legend, mitigations."""
    bold = (lambda s: f"**{s}**") if fmt == "github" else (lambda s: s)
    out: list[str] = []
    if run.interrupted:
        out += [bold("Interrupted:") + " the run was stopped early; cells not reached are missing.", ""]
    profiles = profiles_used(run)
    if profiles:
        out.append(bold("Profiles") + " (real numbers):")
        out += [f"- {p}" for p in profiles]
        out.append("")
    out.append(bold("Legend:"))
    out += [f"- {v.value}: {v.legend}" for v in Verdict]
    mitigations = mitigation_lines(run)
    if mitigations:
        out += ["", bold("Mitigations:")]
        out += [f"- {m}" for m in mitigations]
    return out


def profiles_used(run: RunResult) -> list[str]:
    """One line per profile as it ran: one named profile with different overrides (a front each,
    say) is two lines."""
    lines = [p.describe() for p in run.profiles]
    lines += [c.profile.describe() for c in run.cells if c.profile is not None]
    return list(dict.fromkeys(lines))


# --- report.md -------------------------------------------------------------------------------------


def utc_time(t: float | None) -> str:
    if t is None:
        return "—"
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def rel_time(t: float | None, origin: float | None) -> str:
    if t is None:
        return "—"
    if origin is None:
        return f"{t:.3f}"
    return f"+{t - origin:.1f} s"



def _md(text: str) -> str:
    return markdown_text(text)


def cell_facts(c: CellResult) -> dict[str, str]:
    """A cell's setup and counts by name, in report.md's order (the HTML page has its own,
    report/html.py `_setup_facts`); environment, build, watcher and LB only when there are any."""
    t = c.timings
    timings = [f"interval {fmt_secs(t.interval)}"] if t.interval is not None else []
    timings += [f"idle {fmt_secs(t.idle)}"] if t.idle is not None else []
    timings += [f"detection timeout {fmt_secs(t.detection_timeout)}", plural(t.rounds, "round")]
    facts = {
        "library": f"{c.library} {c.library_version} ({c.api_style})",
        "profile": c.profile.describe() if c.profile else f"the provider LB of {c.cluster} (not emulated)",
        "timings": ", ".join(timings),
        "keepalive observed": c.keepalive or "—",
    }
    if c.variant_env:
        facts["environment"] = ", ".join(f"{k}={v}" for k, v in sorted(c.variant_env.items()))
    if c.build_env:
        facts["build"] = ", ".join(f"{k}={v}" for k, v in sorted(c.build_env.items()))
    if c.watcher is not None:
        w = c.watcher
        facts["watcher"] = (f"{w.errors} error, {w.reconnects} reconnect, {w.watch_opened} watch-opened "
                            f"of {plural(w.lines, 'line')}; {plural(w.stderr_errors, 'error line')} on stderr; "
                            f"exit code {w.exit_code if w.exit_code is not None else '—'}")
    if c.lb is not None:
        lb = c.lb
        facts["LB"] = (f"{lb.expired} expired, RST to client {lb.rst_to_client}, RST to server {lb.rst_to_server}, "
                       f"{lb.dropped_after_expiry} dropped after expiry")
    facts["started"] = utc_time(c.started)
    facts["finished"] = utc_time(c.finished)
    return facts


def _cell_section(c: CellResult) -> list[str]:
    out = [f"### {c.cell_id}", "", f"**{c.verdict.value}**: {_md(c.reason)}", ""]
    facts = cell_facts(c)
    started, finished = facts.pop("started"), facts.pop("finished")
    lines = [f"{name}: {value}" for name, value in facts.items()] + [f"started {started}, finished {finished}"]
    out += [f"- {_md(f)}" for f in lines]
    if c.errors:
        out += ["", "Harness errors:"] + [f"- {_md(e)}" for e in c.errors]
    if c.rounds:
        rows = [
            [
                r.index,
                _md(r.expected),
                rel_time(r.update_at, c.started),
                "—" if r.seen_at is None else f"{r.seen_at - r.update_at:+.2f} s",
                "yes" if r.ok else "NO",
                "—" if r.idle_before is None else fmt_secs(r.idle_before),
                _md(r.note),
            ]
            for r in c.rounds
        ]
        out += [
            "",
            tabulate(
                rows,
                headers=["round", "expected", "update", "seen after", "in time", "idle before", "note"],
                tablefmt="github",
                disable_numparse=True,
            ),
        ]
    if c.evidence:
        links = ", ".join(f"[{k}]({v})" for k, v in sorted(c.evidence.items()))
        out += ["", f"Evidence: {links}"]
    return [*out, ""]


def render_markdown(run: RunResult) -> str:
    """report.md: run facts, the matrix table, then one section per cell with its rounds and evidence."""
    out = [f"# watchdrop run {run.run_id}", ""]
    facts = [
        f"started {utc_time(run.started)}, finished {utc_time(run.finished)}",
        f"matrix: {run.matrix}",
    ]
    facts += [f"{k}: {v}" for k, v in sorted(run.machine.items())]
    if run.interrupted:
        facts.append("**interrupted**: the run was stopped early")
    out += [f"- {_md(f)}" for f in facts]
    out += ["", "## Matrix", "", render_table(run, "github"), "## Cells", ""]
    for c in run.cells:
        out += _cell_section(c)
    return "\n".join(out).rstrip("\n") + "\n"


# --- files -----------------------------------------------------------------------------------------


def _write_atomic(path: Path, text: str) -> None:
    write_atomic(path, text)


def write_reports(run: RunResult, run_dir: Path) -> tuple[Path, Path]:
    """Write results.json and report.md into run_dir; returns their paths."""
    run_dir.mkdir(parents=True, exist_ok=True)
    results = run_dir / "results.json"
    report = run_dir / "report.md"
    _write_atomic(results, run.to_json())
    _write_atomic(report, render_markdown(run))
    return results, report


def replace_section(text: str, markdown: str, *, name: str = "README") -> str:
    """`text` with everything between the matrix markers replaced by `markdown`."""
    begins, ends = text.count(README_BEGIN), text.count(README_END)
    if begins != 1 or ends != 1:
        raise UsageError(
            f"{name}: expected one {README_BEGIN} and one {README_END} line, found {begins} and {ends}",
            fix=f"put the two marker lines where the matrix table belongs:\n{README_BEGIN}\n{README_END}",
        )
    start = text.index(README_BEGIN) + len(README_BEGIN)
    end = text.index(README_END)
    if end < start:
        raise UsageError(
            f"{name}: {README_END} comes before {README_BEGIN}",
            fix=f"swap the two marker lines so the table sits between\n{README_BEGIN}\n{README_END}",
        )
    body = markdown.strip("\n")
    if README_BEGIN in body or README_END in body:
        # Rendered text escapes `<`, so this is a bug, never something a library's message can do.
        raise UsageError(f"{name}: the new matrix section contains a marker line itself",
                         fix="report this as a bug: rendered text must escape `<`")
    return f"{text[:start]}\n{body}\n{text[end:]}"


def update_readme(readme: Path, markdown: str) -> bool:
    """Replace the README's matrix section with `markdown`; returns whether the file changed."""
    try:
        text = readme.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read {readme}: {exc.strerror or exc}", fix="pass the README path") from None
    new = replace_section(text, markdown, name=str(readme))
    if new == text:
        return False
    _write_atomic(readme, new)
    return True


def load_results(path: Path) -> RunResult:
    """Read a results.json written by `watchdrop run`; any problem is a UsageError naming the file."""
    fix = "pass the results.json of a finished run: results/<run-id>/results.json"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file", fix=fix) from None
    except IsADirectoryError:
        raise UsageError(f"{path}: is a directory", fix=f"pass {path / 'results.json'}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not UTF-8 text, so not a results.json", fix=fix) from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot read: {exc.strerror or exc}", fix=fix) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path}:{exc.lineno}: not valid JSON: {exc.msg}", fix=fix) from None
    try:
        return RunResult.from_dict(data)
    except ValueError as exc:
        raise UsageError(
            f"{path}: not a watchdrop results file: {exc}",
            fix=f"{fix}, written by a watchdrop with the same schema version",
        ) from None

