"""Open an HTML page in headless Chromium (Debian's chromium + chromium-driver) through Selenium,
as a person's browser shows it, and report what loaded."""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

CHROMIUM = ("chromium", "chromium-browser", "google-chrome")


@dataclass(frozen=True)
class Page:
    title: str
    images: list[dict]  # src (start), complete, naturalWidth, naturalHeight
    tables: list[dict]  # heading before it, number of body rows, header cells
    headings: list[str]
    screenshot: bytes


_READ_PAGE = """
const heading = el => { let n = el; while (n && (n = n.previousElementSibling || n.parentElement)) {
  if (/^H[1-3]$/.test(n.tagName)) return n.textContent; } return ''; };
return {
  images: [...document.images].map(i => ({src: i.getAttribute('src').slice(0, 40), complete: i.complete,
                                          naturalWidth: i.naturalWidth, naturalHeight: i.naturalHeight})),
  tables: [...document.querySelectorAll('table')].map(t => ({heading: heading(t),
          rows: t.querySelectorAll('tbody tr').length,
          header: [...t.querySelectorAll('thead th')].map(th => th.textContent)})),
  headings: [...document.querySelectorAll('h1, h2, h3')].map(h => h.textContent),
};
"""


def open_in_chromium(page: Path, width: int = 1400, height: int = 1000) -> Page:
    """Load ``page`` in headless Chromium and read its images, tables and headings.

    Skips the calling test where Chromium or its driver is not installed (``.ci/run`` installs
    both); nothing is downloaded: the driver and the browser are given by path.
    """
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser = next((path for path in map(shutil.which, CHROMIUM) if path), None)
    driver_path = shutil.which("chromedriver")
    if browser is None or driver_path is None:
        pytest.skip("headless Chromium not installed (apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 f"--window-size={width},{height}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    try:
        driver.get(page.resolve().as_uri())
        driver.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "Promise.all([...document.images].map(i => i.complete ? 0 : new Promise(r => { i.onload = i.onerror = r; })))"
            ".then(() => done());"
        )
        found = driver.execute_script(_READ_PAGE)
        return Page(title=driver.title, screenshot=driver.get_screenshot_as_png(), **found)
    finally:
        driver.quit()
