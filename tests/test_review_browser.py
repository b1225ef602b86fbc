"""The review pages in a real headless browser (Debian's chromium + chromedriver, driven by Selenium):
they load with no console errors, show their tables and the overlays in order, and can be screenshotted."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from mal.review.browser import browser_missing, chromium, screenshot, severe_logs
from mal.review.cli import main as review_main
from tests._review_fixtures import CATEGORY, scores_in_order, write_labelled, write_run


@pytest.fixture(scope="module")
def driver() -> Any:
    # No silent skip: `make test` installs the browser (scripts/install_browser.sh); a missing one is a failure.
    missing = browser_missing()
    if missing is not None:
        pytest.fail(f"{missing} (run: bash scripts/install_browser.sh)")
    with chromium(width=1200, height=900) as d:
        yield d


def _open(driver: Any, html: Path) -> None:
    driver.get_log("browser")  # drop what an earlier page logged
    driver.get(html.resolve().as_uri())
    assert driver.execute_script("return document.readyState") == "complete"


def _cards(driver: Any) -> list[Any]:
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, ".cards .card")


def _images_decoded(driver: Any) -> list[int]:
    """naturalWidth of every <img>: 0 means a broken image."""
    return driver.execute_script("return Array.from(document.images, i => i.complete ? i.naturalWidth : 0)")


def _check_screenshot(driver: Any, png: Path) -> None:
    screenshot(driver, png)
    with Image.open(png) as im:
        assert im.format == "PNG" and im.width >= 1000 and im.height > 600
        assert len(set(im.convert("L").resize((64, 64)).getdata())) > 20  # not a blank page


def test_labelled_page_in_browser(driver: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    labelled, gt = write_labelled(tmp_path / "set")
    out, num = tmp_path / "review.html", 4
    assert review_main(["--labelled", str(labelled), "--gt", str(gt), "--out", str(out), "--num", str(num)]) == 0
    _open(driver, out)

    assert driver.title == "MAL review: labelled.json"
    summary = driver.find_element(By.CSS_SELECTOR, "table.summary").text
    assert "boxes (annotations) 6" in summary and "box fallback: too_small 1" in summary
    cards = _cards(driver)
    assert len(cards) == num
    assert [float(c.get_attribute("data-score")) for c in cards] == scores_in_order(num)
    assert [c.get_attribute("data-ann-id") for c in cards] == ["4", "2", "6", "5"]
    first = cards[0].text
    assert "annotation id\n4" in first and "image id\n2" in first and "images/img2.png" in first
    assert "box_fallback" in first and "too_small" in first and "IoU vs GT" in first
    assert CATEGORY in first  # shown as text, not parsed as markup
    assert not driver.find_elements(By.CSS_SELECTOR, ".card b")
    decoded = _images_decoded(driver)
    assert len(decoded) == num + 1 and all(w > 0 for w in decoded)  # the histogram + one crop per card
    assert severe_logs(driver) == []
    _check_screenshot(driver, tmp_path / "review_labelled.png")


def test_repro_page_in_browser(driver: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    params = write_run(tmp_path / "run", title="tiny run")
    out = tmp_path / "review.html"
    assert review_main(["--repro", "--params", str(params), "--out", str(out), "--num", "6", "--strict"]) == 0
    _open(driver, out)

    assert driver.title == "MAL run review: tiny run"
    assert not driver.find_elements(By.CSS_SELECTOR, ".warn")  # nothing missing
    paper = driver.find_element(By.CSS_SELECTOR, "table.paper")
    assert len(paper.find_elements(By.CSS_SELECTOR, "tbody tr")) == 2 and "MAL lab" in paper.text
    miou = driver.find_element(By.CSS_SELECTOR, "table.miou").text
    assert "labeler 0.800 0.700 0.850" in miou and "box 0.600" in miou
    assert CATEGORY in driver.find_element(By.CSS_SELECTOR, "table.per-class").text
    assert "ratio_vs_chance 3.000" in driver.find_element(By.CSS_SELECTOR, "table.confidence").text
    alts = driver.execute_script("return Array.from(document.images, i => i.alt)")
    assert "lab training curves" in alts and "score histogram" in alts
    assert all(w > 0 for w in _images_decoded(driver))
    cards = _cards(driver)
    assert [c.get_attribute("data-score") for c in cards][-1] == ""  # the score-less annotation last
    assert [float(c.get_attribute("data-score")) for c in cards[:-1]] == scores_in_order(5)
    assert severe_logs(driver) == []
    _check_screenshot(driver, tmp_path / "review_repro.png")


def test_console_errors_are_caught(driver: Any, tmp_path: Path) -> None:
    """The SEVERE check is not vacuous: a page with a broken image logs one."""
    bad = tmp_path / "bad.html"
    bad.write_text('<!DOCTYPE html><html><head><link rel="icon" href="data:,"></head>'
                   f'<body><img src="{(tmp_path / "missing.png").as_uri()}"></body></html>')
    _open(driver, bad)
    assert any("missing.png" in e["message"] for e in severe_logs(driver))
