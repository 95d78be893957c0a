"""A headless Chromium for the tests of report.html, driven by selenium through the
system's chromedriver (Debian: ``apt-get install chromium chromium-driver``), with the
network cut off; and, run as a script, the screenshots of the reference runs' pages::

    python tests/browser.py results/reference/*     # writes report.png in each

Selenium is never left to fetch a browser or a driver: both must be installed.
"""

from __future__ import annotations

import io
import os
import shutil
import sys
import tempfile
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
WIDTH, HEIGHT = 1280, 1700


def binaries() -> tuple[str, str] | None:
    """(browser, chromedriver) found on PATH, or None."""
    browser = next((found for name in BROWSERS if (found := shutil.which(name))), None)
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


def start(height: int = HEIGHT):
    """A headless Chromium that reaches no network (every request fails)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    found = binaries()
    if found is None:
        raise RuntimeError("no chromium and chromedriver on PATH")
    browser, driver = found
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--window-size={WIDTH},{height}", "--hide-scrollbars",
                "--proxy-server=http://0.0.0.0:1", "--proxy-bypass-list=<-loopback>"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    chrome = webdriver.Chrome(service=Service(driver), options=options)
    chrome.execute_cdp_cmd("Network.enable", {})
    chrome.execute_cdp_cmd("Network.emulateNetworkConditions", {
        "offline": True, "latency": 0, "downloadThroughput": 0, "uploadThroughput": 0})
    chrome.execute_cdp_cmd("Network.setBlockedURLs",
                           {"urls": ["http://*", "https://*", "ws://*", "wss://*"]})
    return chrome


def open_page(chrome, path: Path, timeout: float = 30.0) -> list[dict]:
    """Load ``path`` and wait until every figure is drawn; the console's messages."""
    from selenium.webdriver.support.ui import WebDriverWait

    chrome.get(Path(path).resolve().as_uri())
    WebDriverWait(chrome, timeout).until(lambda c: c.execute_script(
        "return document.readyState === 'complete' && Array.from("
        "document.querySelectorAll('.plotly-figure')).every(d => d.dataset.rendered)"))
    return chrome.get_log("browser")


def screenshot(chrome, html: Path, png: Path) -> Path:
    """The top of the page as a compressed PNG (256 colours)."""
    from PIL import Image

    open_page(chrome, html)
    shot = Image.open(io.BytesIO(chrome.get_screenshot_as_png())).convert("RGB")
    shot.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(png, optimize=True)
    return png


def main(dirs: list[str]) -> int:
    from benchlab.report.html import render_html
    from benchlab.report.loading import load_run

    chrome = start()
    try:
        for name in dirs:
            out = Path(name)
            with tempfile.TemporaryDirectory() as tmp:  # report.html stays out of the tree
                copy = Path(tmp) / out.name
                shutil.copytree(out, copy)
                html = render_html(load_run(copy), (copy / "summary.md").read_text())
                print(screenshot(chrome, html, out / "report.png"),
                      f"({html.stat().st_size / 1e6:.1f} MB page)")
    finally:
        chrome.quit()
    return 0


if __name__ == "__main__":
    sys.path.insert(0, os.fspath(Path(__file__).resolve().parents[1]))
    raise SystemExit(main(sys.argv[1:]))
