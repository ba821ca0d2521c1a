"""The browser tests' fixtures: headless Chromium driven by Selenium, and a Serve app per module."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator

import pytest
import ray
from ray import serve

import aimu_ray
from aimu_ray.deployments import AppConfig, run

CHROMIUM = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
CHROMEDRIVER = shutil.which("chromedriver")
WINDOW = (1400, 1000)          # a desktop's size: the README's screenshots are taken at it


@pytest.fixture(scope="module")
def serve_app() -> Iterator[Callable[..., str]]:
    """``serve_app(config, **ray_init)`` starts a local Ray (4 CPUs; ``num_gpus=`` adds logical GPUs), deploys the
    app and gives its base URL; Serve and Ray stop after the module's last test."""
    def start(config: AppConfig, **ray_init) -> str:
        aimu_ray.init(num_cpus=4, **ray_init)
        run(config, access_log=False)
        return f"http://127.0.0.1:{config.port}"

    yield start
    if ray.is_initialized():
        serve.shutdown()
        aimu_ray.shutdown()


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
