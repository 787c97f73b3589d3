"""The HTML report: pages rendered from a real recorded run and looked at in a real headless browser.

The recorded run (tests/test_timeline.recorded_run) gets its pages written into its own results dir,
as the runner does at the end of a run; the browser's screenshots are saved next to them under
`screenshots/` for a person to look at. Pure-logic tests (escaping, layout) use a model-built run.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import pytest

from runner.model import RunResult, Verdict
from runner.report import html as html_report
from runner.report.early import EarlyTimelines
from runner.report.html import RunIds, cell_page_path, reproduce_command, write_extras, write_html
from runner.report.render import load_results
from tests.test_html_golden import HOSTILE, HOSTILE_CLIENT, hostile_run
from tests.test_junit import synthetic_run, validate_results_json
from tests.test_timeline import FAIL_SILENT_ID, PASS_ID, recorded_run

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars"]


class Page(HTMLParser):
    """Tags, attributes and text of a page, enough to assert on its structure."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {k: v or "" for k, v in attrs}))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def all(self, tag: str) -> list[dict[str, str]]:
        return [a for t, a in self.tags if t == tag]

    @property
    def plain(self) -> str:
        return " ".join("".join(self.text).split())


@pytest.fixture(scope="module")
def rendered() -> tuple[RunResult, Path]:
    run_dir = recorded_run()
    # Every results.json rendered here follows the published schema.
    validate_results_json((run_dir / "results.json").read_text(encoding="utf-8"))
    run = load_results(run_dir / "results.json")
    write_extras(run, run_dir)
    return run, run_dir


def _page(path: Path) -> Page:
    return Page(path.read_text(encoding="utf-8"))


# --- the files ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_index_links_every_cell_to_its_page(rendered) -> None:
    run, run_dir = rendered
    page = _page(run_dir / "index.html")
    hrefs = {a["href"] for a in page.all("a")}
    for cell in run.cells:
        assert cell_page_path(cell) in hrefs
        assert (run_dir / cell_page_path(cell)).is_file()
    assert {"results.json", "report.md", "junit.xml"} <= hrefs
    assert (run_dir / "junit.xml").is_file()
    text = page.plain
    assert "silent-drop after 45 s idle (scaled from azure-slb-no-reset: 240 s)" in text  # the real numbers
    for v in Verdict:
        assert v.legend in text


@pytest.mark.slow
def test_fail_silent_page_says_what_happened_without_logs(rendered) -> None:
    run, run_dir = rendered
    cell = next(c for c in run.cells if c.cell_id == FAIL_SILENT_ID)
    assert cell.verdict is Verdict.FAIL_SILENT, cell.reason
    page = _page(run_dir / cell_page_path(cell))
    story = page.plain.split("What happened", 1)[1].split("Timeline", 1)[0]
    # The flow idled past the timeout, the LB forgot it without telling anyone, the update was
    # written, nothing reached the pod or the watcher, and the watcher never complained.
    assert re.search(r"carried no packet either way for \d+ s .* at least the LB's idle timeout of 45 s", story)
    assert re.search(r"expired flow :\d+ after 45 s idle at \+[\d.]+ s and forgot it; it sent no RST", story)
    assert "set the trigger to round-1" in story and "set the trigger to round-2" in story
    assert story.count("no matching event-seen by the deadline") == 2
    assert story.count("not one data packet from the server reached the pod") == 2
    assert "no error and no reconnect" in story
    assert "FAIL-SILENT" in page.plain.split("What happened", 1)[0]


@pytest.mark.slow
def test_cell_page_has_every_part(rendered) -> None:
    run, run_dir = rendered
    for cell in run.cells:
        path = run_dir / cell_page_path(cell)
        page = _page(path)
        imgs = page.all("img")
        assert [i["src"] for i in imgs] == ["timeline.svg"]
        ET.parse(path.parent / "timeline.svg")
        for heading in ("Expected vs observed, per round", "Facts read from the packets", "LB events",
                        "Watcher (stdout, JSON lines)", "Evidence files", "Reproduce this cell only"):
            assert heading in page.plain
        assert reproduce_command(run, cell) in page.plain
        assert reproduce_command(run, cell) == (
            f"python -m runner matrix.quick.yaml --only client={cell.client} --only cluster={cell.cluster} "
            f"--only scenario={cell.scenario}")
        # Every relative link resolves to a file of the run: pcaps, logs, the way back.
        hrefs = [a["href"] for a in page.all("a")]
        assert any(h.endswith("pod.pcap") for h in hrefs)
        for h in hrefs:
            assert (path.parent / h).resolve().is_file(), h


@pytest.mark.slow
def test_rerendering_gives_the_same_bytes(rendered, tmp_path) -> None:
    run, run_dir = rendered
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy, symlinks=True)
    write_html(run, copy)
    for path in [run_dir / "index.html", *(run_dir / "cells").rglob("index.html"), *(run_dir / "cells").rglob("*.svg")]:
        assert (copy / path.relative_to(run_dir)).read_bytes() == path.read_bytes(), path


@pytest.mark.slow
def test_pages_written_while_the_run_went_on_are_not_written_again(rendered, tmp_path, monkeypatch) -> None:
    """issue 16 §6: each cell's timeline and page are written as it is judged (runner/report/early.py,
    a spawned process as in the run); the report then only writes the index, and every page and
    picture is the same bytes as written at the end."""
    run, run_dir = rendered
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy, symlinks=True)
    for done in [*(copy / "cells").rglob("*.svg"), *(copy / "cells").rglob("index.html")]:
        done.unlink()
    early = EarlyTimelines(copy, RunIds(run.run_id, run.matrix))
    for cell in run.cells:
        early(cell)
    drawn = early.drawn()
    assert drawn == {c.cell_id for c in run.cells if (run_dir / "cells" / c.cell_id / "index.html").exists()}
    assert drawn

    def no_second_time(*_: object) -> None:
        raise AssertionError("written again")

    monkeypatch.setattr(html_report, "draw_timeline", no_second_time)
    monkeypatch.setattr(html_report, "read_evidence", no_second_time)
    write_html(run, copy, workers=1, drawn=drawn)
    for path in [run_dir / "index.html", *(run_dir / "cells").rglob("index.html"), *(run_dir / "cells").rglob("*.svg")]:
        assert (copy / path.relative_to(run_dir)).read_bytes() == path.read_bytes(), path


@pytest.mark.slow
def test_pages_are_self_contained(rendered) -> None:
    _, run_dir = rendered
    for path in [run_dir / "index.html", *(run_dir / "cells").rglob("index.html")]:
        text = path.read_text(encoding="utf-8")
        assert "<script" not in text.lower()
        assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text), path
        assert "@import" not in text and "url(" not in text


# --- escaping and layout, from a model-built run ---------------------------------------------------


def test_hostile_text_is_escaped_everywhere(tmp_path) -> None:
    run = synthetic_run()
    validate_results_json(run.to_json())
    write_html(run, tmp_path)
    pages = [tmp_path / "index.html", *(tmp_path / "cells").rglob("index.html")]
    assert len(pages) == 1 + len(run.cells)
    for path in pages:
        text = path.read_text(encoding="utf-8")
        assert "<script>" not in text and "<b>boom</b>" not in text
    index = _page(tmp_path / "index.html").plain
    assert 'missed round; error "<b>boom</b>" & more' in index  # shown as text, intact
    error_page = _page(tmp_path / "cells/client-c/lb-1/watch/index.html").plain
    assert "<script>alert(1)</script>" in error_page
    skipped = _page(tmp_path / "cells/client-c/lb-2/watch/index.html").plain
    assert "No timeline: no evidence recorded for this cell" in skipped


def test_hostile_cell_is_escaped_on_the_index_and_its_page(tmp_path) -> None:
    """A client name, reason, harness error, watcher line and LB event carrying a tag, a quote and an
    ampersand show as that text on both pages: never as markup, and never escaped twice."""
    run = hostile_run(tmp_path)
    cell = next(c for c in run.cells if c.client == HOSTILE_CLIENT)
    # A flow the LB expired whose name is hostile: its sentence once escaped a name already escaped.
    with (tmp_path / "cells" / Path(*cell.cell_id.split("/")) / "lb-events.jsonl").open("a", encoding="utf-8") as f:
        f.write(json.dumps({"ts": 1_800_000_077.0, "event": "expired", "flow": f"{HOSTILE}>x"}) + "\n")
    write_html(run, tmp_path)
    escaped = html.escape(HOSTILE, quote=True)
    for path in (tmp_path / "index.html", tmp_path / cell_page_path(cell)):
        raw = path.read_text(encoding="utf-8")
        assert "<script" not in raw.lower() and "</script>" not in raw, path
        assert HOSTILE not in raw and escaped in raw, path
        # Every alert(1) sits inside an escaped tag followed by the escaped quote and ampersand
        # (a JSON log line puts a backslash before the quote).
        for before, after in re.findall(r"(.{14})alert\(1\)(.{0,27})", raw):
            assert before == "&lt;script&gt;", (path, before)
            assert re.match(r"&lt;/script&gt;\\?&quot;&amp;", after), (path, after)
        assert "&amp;lt;" not in raw and "&amp;quot;" not in raw and "&amp;amp;" not in raw, path  # not twice
    index = Page((tmp_path / "index.html").read_text(encoding="utf-8"))
    assert f"{HOSTILE_CLIENT} (client-a variant)" in index.plain or HOSTILE_CLIENT in index.plain
    assert f"reason {HOSTILE}" in index.plain
    titles = [a["title"] for t, a in index.tags if t == "td" and "title" in a]
    assert any(f"reason {HOSTILE}" in t for t in titles)  # the attribute holds the whole text, quote included
    hrefs = [a["href"] for a in index.all("a")]
    assert cell_page_path(cell) not in hrefs and cell_page_path(cell) in [unquote(h) for h in hrefs]
    page = Page((tmp_path / cell_page_path(cell)).read_text(encoding="utf-8"))
    plain = page.plain
    for text in (f"{HOSTILE_CLIENT} · lb-1 · watch", f"reason {HOSTILE}", f"Harness problem: error {HOSTILE}",
                 f"(first: message {HOSTILE})", f"stderr {HOSTILE}", f"FAILURE {HOSTILE}", f"EVIL={HOSTILE}",
                 f"PIN={HOSTILE}", f"keepalive {HOSTILE}", "expired flow :<script at", f"detail={HOSTILE}"):
        assert text in plain, text
    assert [i["alt"] for i in page.all("img")] == [
        f"Timeline of {cell.cell_id}: TCP connections, LB flow state, harness updates, watcher events, rounds"]


def test_hostile_text_in_the_timeline_stays_text(tmp_path) -> None:
    """Watcher values and the cell id reach the timeline SVG: matplotlib draws them as paths and keeps
    the string only in an escaped comment, and the page embeds the SVG as an <img>, where it runs no script."""
    run = hostile_run(tmp_path)
    cell = next(c for c in run.cells if c.client == HOSTILE_CLIENT)
    write_html(run, tmp_path)
    svg = (tmp_path / cell_page_path(cell)).parent / "timeline.svg"
    root = ET.parse(svg).getroot()
    assert not [el for el in root.iter() if el.tag.rpartition("}")[2].lower() in ("script", "foreignobject")]
    raw = svg.read_text(encoding="utf-8")
    assert "<script" not in raw and "alert(1)</script>" not in raw
    assert f"<!-- value {html.escape(HOSTILE, quote=False)} -->" in raw  # the watcher's value, as text
    page = Page((tmp_path / cell_page_path(cell)).read_text(encoding="utf-8"))
    assert [i["src"] for i in page.all("img")] == ["timeline.svg"] and not page.all("svg")


def test_index_uses_the_text_tables_rows_and_columns(tmp_path) -> None:
    run = synthetic_run()
    write_html(run, tmp_path)
    page = _page(tmp_path / "index.html")
    heads = [t for t, _ in page.tags if t in ("th",)]
    assert heads  # rows and headers exist
    plain = page.plain
    assert plain.index("client-a") < plain.index("client-b") < plain.index("client-c")
    assert "7 cells: 1 PASS, 1 RECOVERED, 1 APP-RECOVERED, 1 FAIL-LOUD, 1 FAIL-SILENT, 1 ERROR, 1 SKIPPED." in plain


def test_a_cell_id_that_would_leave_cells_gets_no_page(tmp_path) -> None:
    run = synthetic_run()
    run.cells[0].client = ".."
    run.cells[0].folder = ".."
    write_html(run, tmp_path / "run")
    assert not (tmp_path / "run" / "lb-1").exists()
    assert not list((tmp_path).glob("lb-1*"))


# --- the index's grid ----------------------------------------------------------------------------


class Grid(HTMLParser):
    """The index's grid: each body row's label and cells, each cell's attributes, text and links."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.rows: list[tuple[dict[str, str], str, list[dict[str, object]]]] = []
        self._in_grid = False
        self._in_body = False
        self._cell: dict[str, object] | None = None
        self._label: list[str] | None = None
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "table" and "grid" in a.get("class", "").split():
            self._in_grid = True
        elif self._in_grid and tag == "tbody":
            self._in_body = True
        elif self._in_body and tag == "tr":
            self.rows.append((a, "", []))
        elif self._in_body and tag == "th":
            self._label = []
        elif self._in_body and tag == "td":
            self._cell = {"attrs": a, "text": "", "links": [], "note_labels": []}
            self.rows[-1][2].append(self._cell)
        elif self._cell is not None and tag == "a":
            self._cell["links"].append(a["href"])  # type: ignore[union-attr]

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._in_grid = self._in_body = False
        elif tag == "td":
            self._cell = None
        elif tag == "th" and self._label is not None:
            attrs, _, cells = self.rows[-1]
            self.rows[-1] = (attrs, "".join(self._label), cells)
            self._label = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell["text"] = str(self._cell["text"]) + data
        elif self._label is not None:
            self._label.append(data)


def _index(run: RunResult, tmp_path: Path) -> tuple[str, Page, Grid]:
    write_html(run, tmp_path)
    raw = (tmp_path / "index.html").read_text(encoding="utf-8")
    return raw, Page(raw), Grid(raw)


def test_grid_cells_hold_one_grade_each_and_their_reason_one_click_away(tmp_path) -> None:
    run = hostile_run(tmp_path)
    raw, page, grid = _index(run, tmp_path)
    notes = {a["id"]: None for a in page.all("li") if a.get("id", "").startswith("note-")}
    note_text = {m[0]: html.unescape(m[1]) for m in re.findall(r'<li id="(note-\d+)">(.*)</li>', raw)}
    assert notes.keys() == note_text.keys() and notes
    by_page = {cell_page_path(c): c for c in run.cells}
    seen = 0
    for _, _, cells in grid.rows:
        for cell in cells:
            links, attrs = cell["links"], cell["attrs"]
            assert isinstance(links, list) and isinstance(attrs, dict)
            if "none" in attrs["class"].split():  # this entry has no cell in the column
                assert cell["text"] == "—" and not links
                continue
            c = by_page[unquote(links[0])]  # the grade links to the cell's page
            text = str(cell["text"])
            # The grade and at most its note's number: never the reason, whatever its length.
            assert re.fullmatch(re.escape(c.verdict.value) + r"\d*", text), text
            assert c.reason not in text
            assert attrs["title"] == f"{c.verdict.value}: {c.reason}"  # the whole sentence on hover
            assert f"v-{c.verdict.value.lower()}" in attrs["class"].split()  # coloured, and the word says it too
            if c.verdict is Verdict.PASS:
                assert links == [links[0]]
            else:  # the number links to its note, which holds the sentence
                assert len(links) == 2 and links[1].startswith("#note-")
                assert note_text[links[1][1:]] == attrs["title"]
            seen += 1
    assert seen == len(run.cells)
    assert '<span class="reason">' not in raw


def test_cells_with_the_same_reason_share_a_note_numbered_in_reading_order(tmp_path) -> None:
    run = synthetic_run()
    twin = run.cells[2].model_copy(update={"client": "client-e", "folder": "client-e"})
    run.cells.append(twin)  # client-b's FAIL-SILENT, word for word
    _, page, grid = _index(run, tmp_path)
    marks = [links[1] for _, _, cells in grid.rows for c in cells if len(links := c["links"]) > 1]  # type: ignore[arg-type]
    numbers = [int(m.removeprefix("#note-")) for m in marks]
    assert sorted(set(numbers)) == list(range(1, max(numbers) + 1))
    first_seen = list(dict.fromkeys(numbers))
    assert first_seen == sorted(first_seen)
    silent = [m for _, label, cells in grid.rows for c in cells
              if "v-fail-silent" in c["attrs"]["class"] for m in c["links"][1:]]  # type: ignore[index,union-attr]
    assert len(silent) == 2 and silent[0] == silent[1]
    assert len([a for a in page.all("li") if a.get("id", "").startswith("note-")]) == len(set(numbers))


def test_grid_has_sticky_headers_and_css_only_filters(tmp_path) -> None:
    run = synthetic_run()
    raw, page, grid = _index(run, tmp_path)
    style = "".join(re.findall(r"<style>(.*?)</style>", raw, re.S))
    assert re.search(r"\.grid thead\{position:sticky;top:0", style)
    assert re.search(r"\.grid th\.client\{position:sticky;left:0", style)
    # No script: radio buttons, :has() rules, and the controls hidden where :has() is not understood.
    assert "<script" not in raw.lower()
    assert "@supports not selector(:has(*)){.filters{display:none}}" in style
    radios = [a for a in page.all("input") if a.get("type") == "radio"]
    grades = [a["id"] for a in radios if a["name"] == "grade"]
    clients = [a["id"] for a in radios if a["name"] == "client"]
    assert grades == ["grade-all", *(f"grade-{v.value.lower()}" for v in Verdict)]  # every verdict occurs once
    assert clients == ["client-all", "client-1", "client-2", "client-3", "client-4"]
    assert [a["id"] for a in radios if "checked" in a] == ["grade-all", "client-all"]  # all cells show at first
    for gid in grades[1:]:
        css = "v-" + gid.removeprefix("grade-")
        assert f".matrix-area:has(#{gid}:checked) .grid tbody tr:not(:has(td.{css})){{display:none}}" in style
    for cid in clients[1:]:
        assert f".matrix-area:has(#{cid}:checked) .grid tbody tr:not(.{cid}){{display:none}}" in style
    # Every row belongs to one client option; each option's label is its folder's name.
    labels = {a["for"] for a in page.all("label") if "for" in a}
    assert not labels  # the inputs sit inside their labels: a click on the text works
    assert {a["class"] for a, _, _ in grid.rows} <= set(clients[1:])
    assert [label for _, label, _ in grid.rows] == ["client-a", "client-b", "client-c", "client-d"]


def test_filters_and_css_carry_no_text_from_the_results(tmp_path) -> None:
    """Names from the results reach the labels as escaped text, never the CSS or an id."""
    run = hostile_run(tmp_path)
    raw, page, grid = _index(run, tmp_path)
    style = "".join(re.findall(r"<style>(.*?)</style>", raw, re.S))
    assert "evil" not in style and "client-a" not in style and "&" not in style
    ids = [a["id"] for _, a in page.tags if "id" in a]
    assert all(re.fullmatch(r"(grade|client)-[a-z0-9-]+|note-\d+|notes", i) for i in ids), ids
    assert len(ids) == len(set(ids))
    label = next(lbl for _, lbl, _ in grid.rows if "evil" in lbl)
    assert label == f"↳ {HOSTILE_CLIENT}"  # the compact label; what the variant changes is on hover and below
    assert f"↳ {HOSTILE_CLIENT} (EVIL={HOSTILE}, build PIN={HOSTILE})" in page.plain  # the clients' table


def test_index_with_scenarios_groups_them_under_each_cluster(tmp_path) -> None:
    run = synthetic_run()
    run.cells.append(run.cells[0].model_copy(update={"scenario": "idle-request"}))
    raw, _, _ = _index(run, tmp_path)
    head = raw.split("<thead>", 1)[1].split("</thead>", 1)[0]
    assert re.findall(r'colspan="2">([^<]*)</th>', head) == ["lb-1", "lb-2"]
    assert re.findall(r'<th scope="col"(?: class="group")?>([^<]*)</th>', head) == [
        "watch", "idle-request", "watch", "idle-request"]


# --- in a real browser ----------------------------------------------------------------------------


def _chromium() -> str:
    """chromium's path, installing Debian's package as root when it is missing; else skip."""
    found = shutil.which("chromium")
    if found:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip("chromium is not installed and cannot be installed here (not root or no apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "update"], ["apt-get", "install", "-y", "--no-install-recommends", "chromium"]):
        proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=900)
        if proc.returncode != 0 and argv[1] == "install":
            pytest.skip(f"chromium could not be installed: {proc.stderr.strip()[-300:]}")
    found = shutil.which("chromium")
    if not found:
        pytest.skip("chromium could not be installed")
    return found


@pytest.fixture(scope="module")
def browser() -> Iterator[tuple[str, Path]]:
    exe = _chromium()
    profile = Path(tempfile.mkdtemp(prefix="wdtest-chromium-"))
    try:
        yield exe, profile
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def _chrome(browser: tuple[str, Path], *args: str) -> str:
    exe, profile = browser
    proc = subprocess.run([exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def _shot(browser: tuple[str, Path], url: str, out: Path, size: str) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    _chrome(browser, f"--window-size={size}", f"--screenshot={out}", url)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return out


def _pixels_near(png: Path, rgb: tuple[int, int, int], tol: int = 3) -> int:
    from PIL import Image  # pillow comes with matplotlib

    with Image.open(png) as im:
        data = im.convert("RGB").tobytes()
    return sum(1 for i in range(0, len(data), 3)
               if all(abs(data[i + k] - rgb[k]) <= tol for k in range(3)))


@pytest.mark.slow
def test_browser_renders_the_matrix_and_a_cell_page_with_its_timeline(rendered, browser) -> None:
    run, run_dir = rendered
    index_dom = Page(_chrome(browser, "--dump-dom", (run_dir / "index.html").as_uri()))
    tables = [a for a in index_dom.all("table") if "grid" in a.get("class", "").split()]
    assert len(tables) == 1
    links = [a["href"] for a in index_dom.all("a") if a["href"].startswith("cells/")]
    assert sorted(links) == sorted(cell_page_path(c) for c in run.cells)

    # Follow the FAIL-SILENT cell's link as the browser resolves it.
    silent = next(c for c in run.cells if c.cell_id == FAIL_SILENT_ID)
    page_path = (run_dir / next(h for h in links if h == cell_page_path(silent))).resolve()
    cell_dom = Page(_chrome(browser, "--dump-dom", page_path.as_uri()))
    assert "FAIL-SILENT" in cell_dom.plain and "What happened" in cell_dom.plain
    srcs = [i["src"] for i in cell_dom.all("img")]
    assert srcs == ["timeline.svg"]
    svg_path = page_path.parent / srcs[0]
    assert ET.parse(svg_path).getroot().tag == "{http://www.w3.org/2000/svg}svg"
    # The browser itself loads the SVG as an image document, not an XML error page.
    svg_dom = _chrome(browser, "--dump-dom", svg_path.as_uri())
    assert "<svg" in svg_dom and "error on line" not in svg_dom.lower()

    shots = run_dir / "screenshots"
    index_png = _shot(browser, (run_dir / "index.html").as_uri(), shots / "index.png", "1400,900")
    cell_png = _shot(browser, page_path.as_uri(), shots / "fail-silent-cell.png", "1400,1600")
    pass_cell = next(c for c in run.cells if c.cell_id == PASS_ID)
    _shot(browser, (run_dir / cell_page_path(pass_cell)).as_uri(), shots / "pass-cell.png", "1400,1600")
    # The CSS applied (the FAIL-SILENT colour fills a table cell) and the timeline image drew
    # (its idle-past-timeout shading only exists inside the SVG).
    assert _pixels_near(index_png, (0xFF, 0xCF, 0xD2)) > 2000
    assert _pixels_near(cell_png, (254, 245, 222), tol=4) > 5000


#: The quick matrix of run 9303c0 (matrix.quick.yaml, 2026-12-01): its entries (name, folder, library,
#: what a variant sets) and grades, one letter a cell, in report.md's columns (each cluster's watch,
#: then idle-request): P PASS, R RECOVERED, A APP-RECOVERED, L FAIL-LOUD, S FAIL-SILENT, K SKIPPED.
QUICK_CLUSTERS = ("azure-slb-quick", "azure-slb-no-reset-quick", "aws-nlb-quick", "direct")
QUICK_GRADES = (
    ("client-go", "client-go", "k8s.io/client-go", {}, "PPPPPPPP"),
    ("client-go-watch", "client-go", "k8s.io/client-go", {"WATCHDROP_STYLE": "watch"}, "PPPPPPPP"),
    ("client-go-no-http2", "client-go", "k8s.io/client-go", {"DISABLE_HTTP2": "1"}, "PPPPPPPP"),
    ("client-python", "client-python", "kubernetes", {}, "ARSSSRPP"),
    ("client-python-keepalive", "client-python", "kubernetes", {"WATCHDROP_TCP_KEEPALIVE": "30"}, "PPPPPPPP"),
    ("client-python-timeout", "client-python", "kubernetes", {"WATCHDROP_REQUEST_TIMEOUT": "30"}, "PRPSPRPP"),
    ("kubernetes-asyncio", "kubernetes-asyncio", "kubernetes_asyncio", {}, "APSPSPPP"),
    ("kubernetes-asyncio-timeout", "kubernetes-asyncio", "kubernetes_asyncio", {"WATCHDROP_REQUEST_TIMEOUT": "30"},
     "PPPPPPPP"),
    ("kopf", "kopf", "kopf", {}, "RKRKRKPK"),
    ("dotnet", "dotnet", "KubernetesClient", {}, "KKKKKKKK"),
    ("java", "java", "io.kubernetes:client-java", {}, "ARLSARPP"),
    ("java-plain-apiclient", "java", "io.kubernetes:client-java", {"WATCHDROP_STYLE": "plain-apiclient"}, "ARALARAP"),
    ("fabric8", "fabric8", "io.fabric8:kubernetes-client", {}, "PRPLPRPP"),
    ("fabric8-informer", "fabric8", "io.fabric8:kubernetes-client", {"WATCHDROP_STYLE": "informer"}, "RRPPRRPP"),
    ("javascript", "javascript", "@kubernetes/client-node", {}, "PPPPPPPP"),
    ("javascript-informer", "javascript", "@kubernetes/client-node", {"WATCHDROP_STYLE": "informer"}, "PPPPPPPP"),
    ("javascript-1x", "javascript", "@kubernetes/client-node", {"WATCHDROP_STYLE": "1x"}, "APSPSPPP"),
    ("kube-rs", "kube-rs", "kube", {}, "ARSSSLPP"),
)
_LETTER = {"P": Verdict.PASS, "R": Verdict.RECOVERED, "A": Verdict.APP_RECOVERED, "L": Verdict.FAIL_LOUD,
           "S": Verdict.FAIL_SILENT, "K": Verdict.SKIPPED}


def quick_shaped_run() -> RunResult:
    """A model-built run with the quick matrix's rows, columns and grades; its reasons as long as the
    real ones, one per grade, cluster and scenario (the real run's 30 notes become about as many)."""
    from tests.test_junit import _cell

    cells = []
    for name, folder, library, env, grades in QUICK_GRADES:
        cols = [(cl, sc) for cl in QUICK_CLUSTERS for sc in ("watch", "idle-request")]
        for (cluster, scenario), letter in zip(cols, grades, strict=True):
            v = _LETTER[letter]
            reason = (f"2/2 rounds seen, re-watched 2× after errors the library raised (2 errors, first: 'Response "
                      f"ended prematurely'), 2 RSTs received from the LB (its record), flow idle 45 s > 45 s on "
                      f"{cluster} {scenario} {v.value}")
            cells.append(_cell(name, cluster, v, reason, folder=folder, library=library, variant_env=env,
                               scenario=scenario))
    run = synthetic_run()
    return run.model_copy(update={"cells": cells, "profiles": []})


@pytest.mark.slow
def test_grid_fits_a_laptop_and_filters_in_chromium(browser, tmp_path) -> None:
    """bench/html_grid.py on the quick matrix's shape: no sideways scrolling at 1440 and 1280 px, each
    grade's filter leaves exactly the rows that hold it, and the headers stay when the page scrolls both
    ways. The screenshots stay in tmp_path/shots."""
    from PIL import Image  # pillow comes with matplotlib

    import bench.html_grid as bench_grid

    exe, _ = browser
    (tmp_path / "results.json").write_text(quick_shaped_run().to_json(), encoding="utf-8")
    checks = bench_grid.check(tmp_path / "results.json", tmp_path / "shots", [1440, 1280], exe=exe)
    assert [c.name for c in checks][:2] == ["width 1440", "width 1280"]
    assert len(checks) == 2 + 6 + 1  # every grade of the matrix but ERROR, then the sticky headers
    assert checks[-1].name == "sticky headers"
    for c in checks:
        assert c.ok, (c.name, c.detail)
        if c.png is None:
            continue
        with Image.open(c.png) as im:
            assert im.size[0] == (1440 if c.name == "width 1440" else 1280), c.png
