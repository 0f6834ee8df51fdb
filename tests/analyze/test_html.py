"""`analyze --html` in a real browser: Debian's Chromium, headless, with every network name unresolvable. The page
must draw each chart (plotly's SVG present), log nothing to the console, render a non-blank screenshot, and say
"no chart" instead of failing where the profile lacks the data."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from membench.profile.schema import Operation
from tests.analyze.test_series import START_NS, key_hash, write
from tests.conftest import run_membench

CHARTS = 7
_OFFLINE = "--host-resolver-rules=MAP * ~NOTFOUND"


def chromium(*arguments: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("chromium")
    if binary is None:
        pytest.fail("chromium is missing: scripts/setup.sh installs it")
    return subprocess.run([binary, "--headless", "--no-sandbox", "--disable-gpu", _OFFLINE, "--enable-logging=stderr",
                           "--v=0", "--virtual-time-budget=10000", *arguments], capture_output=True, text=True,
                          timeout=120, check=True)


def rendered(page: Path) -> tuple[str, list[str]]:
    """The DOM after the page's scripts ran, and what the page wrote to the console."""
    result = chromium("--dump-dom", page.as_uri())
    return result.stdout, re.findall(r"CONSOLE[^\]]*\] (.*)", result.stderr)


def busy_profile(path: Path) -> Path:
    rows = []
    for second in range(5):
        for i in range(200):
            at = START_NS + second * 10**9 + i * 4000
            key = key_hash(i % (20 + second * 10))
            if i % 10 == 0:
                rows.append(Operation(at, i % 4, "set", "text", key, 6, 100 + i, 0, 0, "stored", 30, len(rows) + 1,
                                      False))
            else:
                hit = i % 3 != 0
                rows.append(Operation(at, i % 4, "get", "text", key, 6, 100 + i if hit else None, None, None,
                                      "hit" if hit else "miss", 10 + i % 50, len(rows) + 1, False))
    write(path, rows)
    return path


def analyze_html(profile: Path, page: Path) -> str:
    run_membench("analyze", str(profile), "--html", str(page), check=True)
    text = page.read_text()
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=", text), "the page fetches nothing"
    return text


def test_every_chart_draws_offline_without_console_output(tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    analyze_html(busy_profile(tmp_path / "p.profile"), page)
    dom, console = rendered(page)
    assert console == []
    assert dom.count('class="plot-container') == CHARTS
    assert dom.count('class="main-svg"') >= 2 * CHARTS
    assert "No chart" not in dom
    for title in ("Operations per second and hit ratio", "Server latency percentiles", "Working set per window",
                  "Miss ratio by cache size", "Key popularity", "Key and value sizes", "Command mix"):
        assert title in dom, title
    screenshot = tmp_path / "page.png"
    chromium("--window-size=1200,3000", f"--screenshot={screenshot}", page.as_uri())
    with Image.open(screenshot) as image:
        colors = image.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colors is not None and len(colors) > 50, "the screenshot shows drawn charts, not a blank page"


def test_an_empty_profile_gives_a_page_that_says_so(tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    analyze_html(write(tmp_path / "empty.profile", []).path, page)
    dom, console = rendered(page)
    assert console == [] and "holds no operations" in dom and 'class="plot-container' not in dom


def test_charts_without_data_become_notes(tmp_path: Path) -> None:
    rows = [Operation(START_NS + i * 10**6, 0, "set", "text", key_hash(i), 4, 10, 0, 0, "noreply", None, i + 1, True)
            for i in range(50)]
    page = tmp_path / "report.html"
    analyze_html(write(tmp_path / "quiet.profile", rows).path, page)
    dom, console = rendered(page)
    assert console == []
    assert "No chart: no reply was recorded." in dom
    assert dom.count('class="plot-container') < CHARTS
