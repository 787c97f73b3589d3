"""`python -m runner report RESULTS.json`: re-render a run's table without running anything."""

from __future__ import annotations

import argparse
from pathlib import Path

from runner.report import load_results, render_table


def report_main(args: argparse.Namespace) -> int:
    run = load_results(Path(args.results))
    print(render_table(run, args.format))
    return 0
