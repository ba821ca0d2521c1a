"""The browser tests' fixtures: headless Chromium driven by Selenium, and a Serve app per module."""

from __future__ import annotations

import shutil

import pytest

from tests.http.conftest import serve_app  # noqa: F401  (the same app fixture as the HTTP tests)

CHROMIUM = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
CHROMEDRIVER = shutil.which("chromedriver")
WINDOW = (1400, 1000)          # a desktop's size: the README's screenshots are taken at it


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium at a desktop's size, through the machine's own chromedriver (no download)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--mute-audio",
                     "--hide-scrollbars", f"--window-size={WINDOW[0]},{WINDOW[1]}", "--force-device-scale-factor=1"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",      # the page's own size, without the window's
                           {"width": WINDOW[0], "height": WINDOW[1], "deviceScaleFactor": 1, "mobile": False})
    yield driver
    driver.quit()
