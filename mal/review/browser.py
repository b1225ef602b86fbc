"""Open a review page in Debian's headless Chromium (Selenium): console check and screenshot.

Used by the browser test and by ``python -m mal review --screenshot``. The browser and driver are the
system ones at fixed paths (``scripts/install_browser.sh``), so Selenium Manager never downloads anything.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mal.common.files import atomic_path

CHROMIUM = Path(os.environ.get("MAL_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("MAL_CHROMEDRIVER", "/usr/bin/chromedriver"))


def browser_missing() -> str | None:
    """Why the browser cannot run here, or None."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not path.is_file():
            return f"{path} not found (run scripts/install_browser.sh)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -r requirements.txt)"
    return None


@contextmanager
def chromium(width: int = 1280, height: int = 1000) -> Iterator[Any]:
    """A headless Chromium WebDriver that records every console message (``driver.get_log('browser')``)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    why = browser_missing()
    if why:
        raise FileNotFoundError(why)
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--hide-scrollbars", f"--window-size={width},{height}", "--force-device-scale-factor=1"):
        options.add_argument(arg)  # --no-sandbox: CI and these machines run as root
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def severe_logs(driver: Any) -> list[dict[str, Any]]:
    """The console entries at level SEVERE (errors, failed loads) since the last call."""
    return [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]


def screenshot(driver: Any, png: str | Path, max_height: int = 4000) -> Path:
    """Save the page (its full height, up to ``max_height`` px) as a PNG."""
    width = driver.get_window_size()["width"]
    height, chrome = driver.execute_script(  # the window is taller than the page area by the browser's chrome
        "return [document.documentElement.scrollHeight, window.outerHeight - window.innerHeight]")
    driver.set_window_size(width, min(int(height) + int(chrome), max_height))
    with atomic_path(png) as tmp:
        if not driver.save_screenshot(str(tmp)):
            raise OSError(f"{png}: screenshot failed")
    return Path(png)


def screenshot_file(html: str | Path, png: str | Path, width: int = 1280, max_height: int = 4000) -> list[dict]:
    """Open ``html`` (a file) and save its screenshot; returns the SEVERE console entries (should be none)."""
    with chromium(width) as driver:
        driver.get(Path(html).resolve().as_uri())
        logs = severe_logs(driver)
        screenshot(driver, png, max_height)
    return logs
