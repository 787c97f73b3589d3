"""`python -m runner report RESULTS.json`: re-render a run's table without running anything."""

from __future__ import annotations

import argparse
from pathlib import Path

from runner.report.compact import render_compact
from runner.report.render import load_results, render_table


def report_main(args: argparse.Namespace) -> int:
    """Print the compact table (--wide: every reason); with --html, also write index.html, the cell
    pages and junit.xml beside it."""
    path = Path(args.results)
    run = load_results(path)
    print((render_table if getattr(args, "wide", False) else render_compact)(run, args.format))
    if getattr(args, "html", False):
        from runner.report.html import write_extras

        write_extras(run, path.parent)
        print(f"\nHTML report: {path.parent / 'index.html'}")
    return 0
