"""index.html renders in a real headless Chromium (Debian's `chromium`): DOM and screenshot.

Two reports: one built here (make_run from test_report.py: three backends, a
failing check, a divergence, every optional section), and reports/latest when
a real run has left one. Chromium missing: a skip locally, a FAILURE when
CI=true (the report is a deliverable; CI must prove it renders).

    PARITY_UPDATE_DOCS_SCREENSHOT=1 pytest tests/test_report_render.py
        also writes docs/img/report.png: from reports/latest when present, else the built report.
    PARITY_REPORT_RUN=DIR      render the run directory DIR instead of reports/latest
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import zlib
from html.parser import HTMLParser
from pathlib import Path

import pytest

from harness.report import write_reports
from test_report import RESOURCE_REF, make_run

ROOT = Path(__file__).resolve().parent.parent
LATEST = Path(os.environ.get("PARITY_REPORT_RUN") or ROOT / "reports" / "latest")
DOCS_PNG = ROOT / "docs" / "img" / "report.png"
WINDOW = (1400, 2400)
DOCS_PNG_MAX = 500 * 1024
COLORS = {"pass": (0x1A, 0x7F, 0x37), "fail": (0xCF, 0x22, 0x2E), "error": (0x82, 0x50, 0xDF)}


def chromium() -> str:
    exe = os.environ.get("PARITY_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if exe:
        return exe
    msg = "Debian's chromium is not installed (apt-get install -y chromium, or set PARITY_CHROMIUM)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{msg}: CI=true requires the render test to run")
    pytest.skip(msg)


def run_chromium(exe: str, profile: Path, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    profile.mkdir(parents=True, exist_ok=True)
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--disable-dev-shm-usage", "--hide-scrollbars", "--enable-logging=stderr", "--v=0",
           f"--user-data-dir={profile}", f"--window-size={WINDOW[0]},{WINDOW[1]}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def png_pixels(path: Path, max_rows: int | None = None) -> tuple[int, int, int, list[bytes], bytes]:
    """(width, height, bytes per pixel, the first `max_rows` unfiltered rows, the raw filtered stream) of
    an 8-bit RGB/RGBA PNG, without any imaging library."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, width = 8, b"", None
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            width, height, depth, ctype = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and ctype in (2, 6), f"unexpected PNG format depth={depth} color={ctype}"
            bpp = 3 if ctype == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    raw = zlib.decompress(idat)
    stride = width * bpp
    rows, prev = [], bytearray(stride)
    for y in range(height if max_rows is None else min(max_rows, height)):
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], (prev[i - bpp] if i >= bpp else 0)
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line))
        prev = line
    return width, height, bpp, rows, raw


class _Ids(HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids: dict[str, dict] = {}
        self.tags: dict[str, int] = {}
        self.classes: dict[str, int] = {}

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags[tag] = self.tags.get(tag, 0) + 1
        if "id" in a:
            self.ids[a["id"]] = a
        for c in (a.get("class") or "").split():
            self.classes[c] = self.classes.get(c, 0) + 1


def _render(run: Path, tmp: Path) -> dict:
    """Report `run`, load it in Chromium: its DOM, a screenshot, Chromium's log."""
    exe = chromium()
    summary = write_reports(run)
    url = (run / "index.html").resolve().as_uri()
    dom = run_chromium(exe, tmp / "profile-dom", "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-3000:]
    shot = tmp / "report.png"
    res = run_chromium(exe, tmp / "profile-shot", f"--screenshot={shot}", url)
    assert res.returncode == 0 and shot.exists(), res.stderr[-3000:]
    parser = _Ids()
    parser.feed(dom.stdout)
    return {"summary": summary, "dom": dom.stdout, "log": dom.stderr + res.stderr, "shot": shot, "parsed": parser}


def _check_rendered(r: dict, *, engines: bool) -> None:
    s, dom, p = r["summary"], r["dom"], r["parsed"]
    # the key elements, as Chromium built them
    assert p.ids["verdict"]["data-verdict"] == s["verdict"]
    for must in ("pairs", "failing", "backends", "backend-table", "provenance", "provenance-table", "cases",
                 "all-checks"):
        assert must in p.ids, f"#{must} missing from the rendered DOM"
    if s["pairs"]:
        assert "pair-matrix" in p.ids and "pair-table" in p.ids
    if s["counts"]["fail"] + s["counts"]["error"]:
        assert "failing-table" in p.ids
    for b in s["backends"]:
        assert f"backend-{b}" in p.ids
    for cid, info in s["provenance"]["cases"].items():
        if info["recorded_hashes"]:
            assert f"case-{cid}" in p.ids
    assert p.tags.get("svg", 0) >= 1, "no inline SVG plot rendered"
    assert p.classes.get("stream", 0) >= 1, "no token-stream table"
    if engines:
        assert p.classes.get("div-first", 0) >= 1, "the first divergence is not highlighted"
        assert "histograms" in p.ids and p.tags["svg"] >= len(s["backends"]) + 1
    # self-contained: Chromium was told (CSP) to load nothing, and nothing tried
    assert not RESOURCE_REF.search(dom)
    for bad in ("Refused to load", "Refused to apply", "Refused to execute", "net::ERR_"):
        assert bad not in r["log"], f"Chromium: {bad}: " + r["log"][-2000:]
    # the screenshot is a real picture of the page: full size, not blank, the banner in the verdict's colour
    w, h, bpp, rows, raw = png_pixels(r["shot"], max_rows=600)
    assert (w, h) == WINDOW
    distinct = {rows[y][x:x + 3] for y in range(0, len(rows), 3) for x in range(0, w * bpp, bpp * 3)}
    assert len(distinct) > 20, f"screenshot's top looks blank ({len(distinct)} colours)"
    # a blank (or single-colour) page filters to zeros; a rendered one has detail all the way down
    bottom = raw[len(raw) // 2:]
    assert sum(1 for i in range(0, len(bottom), 97) if bottom[i]) > len(bottom) // 97 // 200, \
        "the lower half of the screenshot is blank"
    x, y = 40 * bpp, 12
    got = tuple(rows[y][x:x + 3])
    want = COLORS[s["verdict"]]
    assert all(abs(g - e) <= 6 for g, e in zip(got, want)), f"banner pixel {got}, expected {want} ({s['verdict']})"


def _maybe_update_docs(shot: Path, source: str) -> None:
    if os.environ.get("PARITY_UPDATE_DOCS_SCREENSHOT") != "1":
        return
    if source == "built" and LATEST.joinpath("run.json").exists():
        return  # the latest real run's screenshot wins; test_render_latest writes it
    assert shot.stat().st_size < DOCS_PNG_MAX, f"screenshot {shot.stat().st_size} bytes >= {DOCS_PNG_MAX}"
    DOCS_PNG.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(shot, DOCS_PNG)


def test_render_built_report(tmp_path):
    run = make_run(tmp_path / "runs", failing=True, run_id="synthetic-example")
    r = _render(run, tmp_path)
    assert r["summary"]["verdict"] == "fail"
    _check_rendered(r, engines=True)
    for section in ("sampling-table", "rl", "selftest", "bench"):
        assert section in r["parsed"].ids
    assert r["shot"].stat().st_size < DOCS_PNG_MAX
    _maybe_update_docs(r["shot"], "built")


def test_render_error_report(tmp_path):
    run = make_run(tmp_path / "runs", failing=True, crashed="vllm", case_error=True, extras=False)
    r = _render(run, tmp_path)
    assert r["summary"]["verdict"] == "error"
    _check_rendered(r, engines=True)
    assert "backend-errors" in r["parsed"].ids and "backend-errors-vllm" in r["parsed"].ids
    assert r["parsed"].classes.get("case-error", 0) >= 1


def test_render_latest(tmp_path):
    if not LATEST.joinpath("run.json").exists():
        pytest.skip(f"no {LATEST}/run.json: `parity run` has not been run in this checkout")
    chromium()
    run = tmp_path / "latest"
    shutil.copytree(LATEST, run, ignore=shutil.ignore_patterns("index.html", "summary.json", "junit.xml"))
    r = _render(run, tmp_path)
    _check_rendered(r, engines=False)  # a real run need not diverge anywhere
    _maybe_update_docs(r["shot"], "latest")
