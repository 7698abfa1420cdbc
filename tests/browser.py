"""A real headless browser for the tests of pages people use: Debian's `chromium` driven by its
`chromium-driver` through Selenium. Screenshots go under reports/ui/ for a person to look at."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.wait import WebDriverWait

SCREENSHOTS = Path(__file__).resolve().parents[1] / "reports" / "ui"
CHROMIUM = ("chromium", "chromium-browser")
DRIVER = "chromedriver"


def missing() -> str | None:
    """Why no browser can start here (the reason a test skips with), or None."""
    if not any(shutil.which(name) for name in CHROMIUM):
        return "no chromium on PATH (Debian: apt-get install chromium)"
    if shutil.which(DRIVER) is None:
        return "no chromedriver on PATH (Debian: apt-get install chromium-driver)"
    return None


@contextmanager
def chromium(width: int = 1400, height: int = 1000) -> Iterator[webdriver.Chrome]:
    """A headless Chromium, quit at the end even after a failure."""
    options = webdriver.ChromeOptions()
    options.binary_location = next(str(shutil.which(n)) for n in CHROMIUM if shutil.which(n))
    for argument in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-dev-shm-usage",
        f"--window-size={width},{height}",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(str(shutil.which(DRIVER))), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def screenshot(driver: webdriver.Chrome, name: str) -> Path:
    """Save what the browser shows as reports/ui/NAME.png."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    driver.save_screenshot(str(path))
    return path


def submit(driver: webdriver.Chrome, element_id: str, timeout: float = 120) -> None:
    """Click the button `element_id` of a form and wait until the page it leads to replaced this
    one: an element looked up right after a bare click can be the old page's (a stale element)."""
    page = driver.find_element(By.TAG_NAME, "html")
    driver.find_element(By.ID, element_id).click()
    # While the document is being swapped chromedriver can answer "Node with given id does not
    # belong to the document" instead of a stale element: asked again, it says stale.
    WebDriverWait(driver, timeout, ignored_exceptions=(WebDriverException,)).until(
        expected_conditions.staleness_of(page)
    )
