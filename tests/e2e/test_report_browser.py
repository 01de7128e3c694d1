"""The report in a real browser on a phone-sized screen (390 x 844 CSS px).

Playwright (PyPI) drives Debian's chromium (``/usr/bin/chromium``; ``playwright install`` is not
used). The report is written by the real ``write_csvs`` and ``write_report`` from a small
neighbourhood whose two trades are settled in a real gateway ledger
(tests/unit/simulate/report_fixture.py).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from neighbourgrid.simulate.report import write_csvs, write_report
from tests.unit.simulate.report_fixture import report_data

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).is_file():
        pytest.fail(
            f"{CHROMIUM} is missing: install Debian's chromium with `sudo apt-get install "
            "chromium` (.ci/run does; Playwright's own browser download is not used)",
            pytrace=False,
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def report(tmp_path: Path) -> Path:
    data = report_data(tmp_path)
    out = tmp_path / "run"
    out.mkdir()
    write_csvs(out, data)
    write_report(out / "report.html", data)
    return out / "report.html"


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", head[16:24])


def test_the_report_reads_on_a_phone(browser: Any, report: Path, tmp_path: Path) -> None:
    context = browser.new_context(viewport=PHONE, device_scale_factor=2, is_mobile=True)
    page = context.new_page()
    try:
        page.goto(report.as_uri())
        page.wait_for_load_state("load")
        # no horizontal scroll of the page itself: wide tables scroll inside their own box
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        assert page.evaluate("document.body.scrollWidth") <= PHONE["width"]
        # the per-home table: visible, one row per home, the hand-computed amounts
        table = page.locator("table.accounts")
        assert table.is_visible()
        rows = table.locator("tbody tr")
        assert rows.count() == 4
        cells = [rows.nth(i).locator("td").all_inner_texts() for i in range(4)]
        assert [c[0] for c in cells] == ["home-01", "home-02", "home-03", "home-04"]
        assert cells[0][1:5] == ["€0.00", "€2.04", "€1.80", "-€2.04"]
        assert cells[3][1:] == ["€0.98", "€0.00", "€0.58", "€0.98", "8.0", "5.0", "1", "0.0"]
        total = table.locator("tfoot td").all_inner_texts()
        assert total[:5] == ["All homes", "€2.73", "€3.20", "€3.61", "-€0.47"]
        # the table's box is no wider than the screen (it scrolls inside it)
        box = page.locator("#homes + section .scroll").bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"]
        # every figure fits the screen
        widths = page.evaluate("[...document.images].map(i => i.getBoundingClientRect().right)")
        assert len(widths) == 4 and max(widths) <= PHONE["width"]
        # the CSV links resolve to the files written beside the report
        hrefs = page.locator("a[href$='.csv']").evaluate_all("as => as.map(a => a.href)")
        assert sorted(Path(h.removeprefix("file://")).name for h in hrefs) == [
            "statements.csv",
            "trades.csv",
        ]
        for href in hrefs:
            target = Path(href.removeprefix("file://"))
            assert target.is_file() and target.parent == report.parent
            assert target.read_text().count("\n") >= 3
        # text is readable: nothing in the page's text is set below 12 CSS px
        smallest = page.evaluate(
            "Math.min(...[...document.querySelectorAll('main p, main li, main td, main th,"
            " main span, figcaption')].map(e => parseFloat(getComputedStyle(e).fontSize)))"
        )
        assert smallest >= 12
        shot = tmp_path / "report-phone.png"
        page.screenshot(path=str(shot), full_page=True)
    finally:
        context.close()
    width, height = _png_size(shot)
    assert width == PHONE["width"] * 2  # device_scale_factor 2, no wider than the screen
    assert height > PHONE["height"] * 2
    assert shot.stat().st_size > 50_000
