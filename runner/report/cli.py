"""`python -m runner report RESULTS.json`: re-render a run's table without running anything."""

from __future__ import annotations

import argparse
from pathlib import Path

from runner.report.compact import render_compact
from runner.report.render import load_results, render_table


def report_main(args: argparse.Namespace) -> int:
    """Print the compact table (--wide: every reason); with --html, also write index.html, the cell
    pages and junit.xml beside it; with --against, the two runs side by side instead."""
    path = Path(args.results)
    run = load_results(path)
    if getattr(args, "against", None):
        from runner.report.compare import render_compare

        print(render_compare(run, load_results(Path(args.against)), args.format), end="")
        return 0
    print((render_table if getattr(args, "wide", False) else render_compact)(run, args.format))
    if getattr(args, "html", False):
        from runner.report.html import write_extras

        write_extras(run, path.parent)
        print(f"\nHTML report: {path.parent / 'index.html'}")
    return 0
