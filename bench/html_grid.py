"""The HTML index in a real browser: does the grid fit a laptop's width, and do its filters work.

Usage: python bench/html_grid.py RESULTS.json [--out DIR] [--widths 1440,1280] [--height 900]

Renders index.html from RESULTS.json into --out (default: a new temp dir; the results folder is not
touched, and the cells' links point to pages that are not rendered there). For each width, headless
Chromium (Debian's `chromium`) takes a screenshot (`index-WIDTH.png`) and the page measures itself:
the document's scroll width against the window's, scrollbar included, so "fits" means no sideways
scrolling. Then, at the narrowest width, one copy of the page per grade present with that grade's
filter checked: the rows left must be exactly those holding that grade (`filter-GRADE.png`). Last,
in a 900 x 400 window scrolled right as far as it goes and down to the grid's last row, the headers
must have stayed: the first header row at the window's top, the client column at its left. The probes are a small script
added to copies of the page (`probe-*.html`); index.html itself has none.
Prints one line per check; exits 1 when any fails.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from runner.report.html import render_index  # noqa: E402
from runner.report.render import load_results  # noqa: E402

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run")

#: Added before </body> of a probe copy: the page writes what it measured into an attribute --dump-dom shows.
PROBE = """<script>addEventListener('load',()=>{const e=document.scrollingElement,
rows=[...document.querySelectorAll('.grid tbody tr')],g=document.querySelector('input[name=grade]:checked');
const want=g&&g.id!=='grade-all'?rows.filter(r=>r.querySelector('td.v-'+g.id.slice(6))).length:rows.length;
document.body.setAttribute('data-probe',[e.scrollWidth,e.clientWidth,
rows.filter(r=>r.offsetParent!==null).length,want].join(' '))})</script>"""


#: The sticky headers: scrolled right as far as it goes and down until the grid's last row sits at the
#: window's bottom, where are the header row and the client column? Measured right after the scroll
#: (getBoundingClientRect lays the page out with sticky offsets): --dump-dom does not wait for an
#: animation frame, so a probe written in one was missing on a loaded machine.
STICKY = """<script>addEventListener('load',()=>{const rows=document.querySelectorAll('.grid tbody tr'),
last=rows[rows.length-1];scrollTo(1e5,last.getBoundingClientRect().bottom+scrollY-innerHeight);
const head=document.querySelector('.grid thead th').getBoundingClientRect(),
client=last.querySelector('th').getBoundingClientRect();document.body.setAttribute('data-probe',
[scrollX,scrollY,head.top,client.left].map(Math.round).join(' '))})</script>"""


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    png: Path | None = None


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _run(exe: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([exe, *FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=120, check=False)


def _probe(exe: str, profile: Path, page: Path, width: int, height: int) -> tuple[int, int, int, int]:
    """The four numbers the page's probe script wrote."""
    proc = _run(exe, profile, f"--window-size={width},{height}", "--dump-dom", page.as_uri())
    m = re.search(r'data-probe="(-?\d+) (-?\d+) (-?\d+) (-?\d+)"', proc.stdout)
    if proc.returncode != 0 or m is None:
        raise RuntimeError(f"chromium exit {proc.returncode}, no probe: {proc.stderr.strip()[-500:]}")
    a, b, c, d = (int(x) for x in m.groups())
    return a, b, c, d


def _shot(exe: str, profile: Path, page: Path, png: Path, width: int, height: int) -> None:
    proc = _run(exe, profile, "--hide-scrollbars", f"--window-size={width},{height}", f"--screenshot={png}",
                page.as_uri())
    if proc.returncode != 0 or not png.is_file():
        raise RuntimeError(f"chromium exit {proc.returncode}, no screenshot: {proc.stderr.strip()[-500:]}")


def check(results: Path, out: Path, widths: list[int], height: int = 900, exe: str | None = None) -> list[Check]:
    """Render results' index into out and look at it in Chromium; one Check per width and per grade."""
    exe = exe or chromium()
    if exe is None:
        raise RuntimeError("chromium is not installed (Debian: apt-get install chromium)")
    run = load_results(results)
    out.mkdir(parents=True, exist_ok=True)
    page = render_index(run, {c.cell_id for c in run.cells})
    (out / "index.html").write_text(page, encoding="utf-8")
    checks = []
    profile = Path(tempfile.mkdtemp(prefix="wd-html-grid-"))
    try:
        probe = out / "probe.html"
        probe.write_text(page.replace("</body>", PROBE + "</body>"), encoding="utf-8")
        for width in widths:
            png = out / f"index-{width}.png"
            _shot(exe, profile, out / "index.html", png, width, height)
            scroll, client, shown, want = _probe(exe, profile, probe, width, height)
            checks.append(Check(f"width {width}", scroll <= client and shown == want,
                                f"page {scroll} px wide in a {client} px window, {shown} of {want} rows", png))
        narrow = min(widths)
        unchecked = page.replace('id="grade-all" checked', 'id="grade-all"')
        for grade in dict.fromkeys(c.verdict.value.lower() for c in run.cells):
            filtered = unchecked.replace(f'id="grade-{grade}"', f'id="grade-{grade}" checked', 1)
            probe = out / f"probe-{grade}.html"
            probe.write_text(filtered.replace("</body>", PROBE + "</body>"), encoding="utf-8")
            png = out / f"filter-{grade}.png"
            _shot(exe, profile, probe, png, narrow, height)
            _, _, shown, want = _probe(exe, profile, probe, narrow, height)
            checks.append(Check(f"filter {grade.upper()}", shown == want and want > 0,
                                f"{shown} rows shown, {want} hold it", png))
        probe = out / "probe-sticky.html"
        probe.write_text(page.replace("</body>", STICKY + "</body>"), encoding="utf-8")
        x, y, head_top, client_left = _probe(exe, profile, probe, 900, 400)
        checks.append(Check("sticky headers", x > 0 and y > 0 and head_top == 0 and client_left == 0,
                            f"scrolled to {x},{y} in 900 x 400: header row at top {head_top}, "
                            f"client column at left {client_left}"))
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    return checks


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", type=Path)
    ap.add_argument("--out", type=Path, help="index.html, its probes and the screenshots (default: a temp dir)")
    ap.add_argument("--widths", default="1440,1280", help="window widths in px, comma-separated")
    ap.add_argument("--height", type=int, default=900)
    args = ap.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="wd-html-grid-out-"))
    checks = check(args.results, out, [int(w) for w in args.widths.split(",")], args.height)
    for c in checks:
        print(f"{'ok  ' if c.ok else 'FAIL'} {c.name}: {c.detail}" + (f" ({c.png})" if c.png else ""))
    return 0 if all(c.ok for c in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
