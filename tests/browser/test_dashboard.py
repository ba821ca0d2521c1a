"""The dashboard at ``/ui`` in a real headless Chromium: the key prompt, the models, the memory bars, a chat that
streams into the page, an image and a clip.

One app for the module serves SmolLM2 (a real chat model), a tiny HF text model, a tiny diffusers pipeline and a
tiny MusicGen, with API keys on. With ``AIMU_RAY_SCREENSHOTS=1`` the app runs on a made-up node of two GPUs (Ray
gets as many logical GPUs; two copies of the tiny model) and the README's screenshots are saved to ``docs/img/``.
The browser's tests skip where Chromium or chromedriver is missing; the HTTP checks of ``/ui`` and ``/v1/cluster``
run anyway.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from aimu_ray.cluster import GPU, Inventory, Node
from aimu_ray.cluster.inventory import FAKE_INVENTORY_ENV
from aimu_ray.demo.servers import free_port
from aimu_ray.deployments import AppConfig

from .conftest import CHROMEDRIVER, CHROMIUM

needs_browser = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="needs Chromium and its driver (Debian: "
                                                                            "apt-get install chromium chromium-driver)")
pytest_plugins = ["tests.fixtures.pytest_fixtures", "tests.fixtures.image_fixtures", "tests.fixtures.audio_fixtures"]

KEY = "sk-dashboard-key-0123456789"
GUARD_S = 120
SCREENSHOTS = os.environ.get("AIMU_RAY_SCREENSHOTS") == "1"
IMAGES = Path(__file__).resolve().parents[2] / "docs" / "img"
MiB, GiB = 1 << 20, 1 << 30
IN_PROCESS = ("smollm2", "tiny", "painter", "music")


def made_up_node() -> Inventory:
    """One node of two small GPUs, so the copies' shares read as bars (each GPU's free memory less some that
    others hold)."""
    return Inventory(nodes=[Node(node_id="gpu-node-a", address="10.0.0.7", ram_total_bytes=16 * GiB,
                                 ram_free_bytes=12 * GiB,
                                 gpus=[GPU(index=0, total_bytes=2 * GiB, free_bytes=1800 * MiB),
                                       GPU(index=1, total_bytes=16 * MiB, free_bytes=15 * MiB)])])


@pytest.fixture(scope="module")
def app(serve_app, smollm2_hf_folder, tiny_hf_dir, tiny_sd_dir, tiny_musicgen_dir, tmp_path_factory):
    models = [{"name": "smollm2", "model": f"hf:{smollm2_hf_folder}"},
              {"name": "tiny", "model": f"hf:{tiny_hf_dir}", "options": {"max_batch_size": 4}},
              {"name": "painter", "model": f"hf:{tiny_sd_dir}", "task": "image"},
              {"name": "music", "model": f"hf:{tiny_musicgen_dir}", "task": "audio"}]
    ray_init = {}
    if SCREENSHOTS:
        for model in models:
            model["placement"] = {"gpu_index": 0 if model["name"] == "smollm2" else 1}
        models[1]["replicas"] = 2
        ray_init = {"num_gpus": 2}
    config = AppConfig(port=free_port(), output_dir=tmp_path_factory.mktemp("dashboard"), api_keys=[KEY], models=models)
    before = os.environ.get(FAKE_INVENTORY_ENV)
    if SCREENSHOTS:                  # before Ray starts, so that the registry and the ingress read it too
        os.environ[FAKE_INVENTORY_ENV] = made_up_node().model_dump_json()
    try:
        yield serve_app(config, **ray_init)
    finally:
        if before is None:
            os.environ.pop(FAKE_INVENTORY_ENV, None)
        else:
            os.environ[FAKE_INVENTORY_ENV] = before


def wait(browser, condition, what: str):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, GUARD_S, poll_frequency=0.1).until(condition, message=what)


def js(browser, script: str, *args):
    return browser.execute_script(script, *args)


def shown(browser, element_id: str) -> bool:
    return js(browser, "const e = document.getElementById(arguments[0]); return !!e && !e.closest('[hidden]')",
              element_id)


def enter_key(browser, key: str) -> None:
    from selenium.webdriver.common.by import By

    field = browser.find_element(By.ID, "key-input")
    field.clear()
    field.send_keys(key)
    browser.find_element(By.CSS_SELECTOR, "#key-form button[type=submit]").click()


def model_rows(browser) -> dict[str, str]:
    """The models table: each row's model and its state."""
    return js(browser, """return Object.fromEntries([...document.querySelectorAll('#models tbody tr')]
                                 .map(tr => [tr.dataset.model, tr.cells[2].textContent]))""")


@pytest.fixture
def page(browser, app):
    """The dashboard, signed in, with every model's row ready."""
    browser.get(f"{app}/ui")
    js(browser, "sessionStorage.setItem('aimu_ray.key', arguments[0])", KEY)
    browser.refresh()
    wait(browser, lambda b: all(model_rows(b).get(name) == "ready" for name in IN_PROCESS), "every model ready")
    return browser


def choose(browser, model: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    Select(browser.find_element(By.ID, "model-select")).select_by_value(model)


def type_into(browser, element_id: str, text: str) -> None:
    from selenium.webdriver.common.by import By

    field = browser.find_element(By.ID, element_id)
    field.clear()
    field.send_keys(text)


def click(browser, element_id: str) -> None:
    from selenium.webdriver.common.by import By

    browser.find_element(By.ID, element_id).click()


def no_error(browser) -> None:
    assert not shown(browser, "play-error"), js(browser, "return document.getElementById('play-error').textContent")


# ----- the tests -----

@needs_browser
def test_the_page_asks_for_the_key_says_when_it_is_wrong_then_lists_every_model(browser, app):
    browser.get(f"{app}/ui")
    js(browser, "sessionStorage.clear()")
    browser.refresh()
    wait(browser, lambda b: shown(b, "key-panel"), "the key prompt")
    assert "needs an API key" in js(browser, "return document.getElementById('auth-message').textContent")
    enter_key(browser, "sk-wrong")
    wait(browser, lambda b: "401" in js(b, "return document.getElementById('auth-message').textContent"),
         "a 401 said as such")
    assert shown(browser, "key-panel")
    enter_key(browser, KEY)
    wait(browser, lambda b: set(model_rows(b)) >= set(IN_PROCESS), "a row per model")
    assert not shown(browser, "key-panel")
    assert js(browser, "return sessionStorage.getItem('aimu_ray.key')") == KEY
    kinds = js(browser, """return Object.fromEntries([...document.querySelectorAll('#models tbody tr')]
                           .map(tr => [tr.dataset.model, tr.cells[1].textContent]))""")
    assert {name: kinds[name] for name in IN_PROCESS} == {"smollm2": "text", "tiny": "text", "painter": "image",
                                                          "music": "audio"}


@needs_browser
def test_the_memory_bars_show_each_models_copies_on_their_device(page):
    bars = wait(page, lambda b: js(b, """
        const models = [...document.querySelectorAll('#nodes .bar .segment[data-model]')].map(s => s.dataset.model);
        return models.length ? models : null"""), "copies in the bars")
    assert set(bars) >= set(IN_PROCESS)
    devices = js(page, "return [...document.querySelectorAll('#nodes .device')].map(d => d.dataset.device)")
    assert "RAM" in devices
    widths = js(page, """return [...document.querySelectorAll('#nodes .bar .segment[data-model]')]
                         .map(s => s.getBoundingClientRect().width)""")
    assert all(width > 0 for width in widths)
    assert "free of" in js(page, "return document.querySelector('#nodes .device-free').textContent")


@needs_browser
def test_a_chat_streams_into_the_page_chunk_by_chunk(page):
    """SmolLM2 (a real model, tens of milliseconds a token here): the tiny model can finish before the page reads
    its first chunk, and then its whole answer arrives as one."""
    choose(page, "smollm2")
    js(page, """const log = document.getElementById('play-log');
                window.seen = [];
                new MutationObserver(() => {
                  const reply = log.querySelector('.message.assistant:last-child .content');
                  if (reply) window.seen.push(reply.textContent);
                }).observe(log, {subtree: true, childList: true, characterData: true});""")
    type_into(page, "max-tokens", "24")
    type_into(page, "prompt", "Tell me a story.")
    click(page, "send")
    wait(page, lambda b: js(b, "const m = document.querySelector('.message.assistant:last-child');"
                               "return !!m && m.dataset.done === 'true'"), "the reply to end")
    no_error(page)
    final = js(page, "return document.querySelector('.message.assistant:last-child .content').textContent")
    seen = [text for text in dict.fromkeys(js(page, "return window.seen")) if text]
    chunks = int(js(page, "return document.querySelector('.message.assistant:last-child').dataset.chunks"))
    assert chunks >= 2 and final
    assert len(seen) >= 2 and seen[-1] == final and all(final.startswith(text) for text in seen), seen
    assert js(page, "return document.querySelector('.message.user .content').textContent") == "Tell me a story."


@needs_browser
def test_an_image_appears(page):
    choose(page, "painter")
    type_into(page, "prompt", "a lighthouse at dusk")
    click(page, "send")
    width = wait(page, lambda b: js(b, "const i = document.querySelector('#play-log img');"
                                       "return i && i.complete && i.naturalWidth"), "the image to load")
    no_error(page)
    assert width > 0
    assert js(page, "return document.querySelector('#play-log img').src").startswith("data:image/png;base64,")


@needs_browser
def test_a_clip_appears_with_a_player(page):
    choose(page, "music")
    type_into(page, "audio-duration", "1")
    type_into(page, "prompt", "a calm piano")
    click(page, "send")
    duration = wait(page, lambda b: js(b, "const a = document.querySelector('#play-log audio');"
                                          "return a && a.readyState >= 1 && isFinite(a.duration) && a.duration"),
                    "the clip's duration")
    no_error(page)
    assert duration > 0
    assert js(page, "const a = document.querySelector('#play-log audio'); return a.controls && a.src")\
        .startswith("data:audio/wav;base64,")


METRICS_TEXT = r"""# HELP aimu_ray_requests_total HTTP requests answered
# TYPE aimu_ray_requests_total counter
aimu_ray_requests_total{model="a \"quoted\" name, {braced}",route="chat",status="200"} 3.0
aimu_ray_requests_total{model="m",route="chat",status="200"} 4.0 1700000000000
aimu_ray_requests_total{model="m",route="images",status="500"} 1
aimu_ray_request_seconds_bucket{le="0.1",model="m",route="chat"} 2.0
aimu_ray_request_seconds_bucket{le="0.5",model="m",route="chat"} 4.0
aimu_ray_request_seconds_bucket{le="+Inf",model="m",route="chat"} 4.0
aimu_ray_evictions_total{model="m"} 2.0
not a sample {
aimu_ray_tokens_total{model="m",kind="completion"} NaN
"""


@needs_browser
def test_the_pages_metrics_parser_reads_prometheus_text(page):
    samples = js(page, "return parseMetrics(arguments[0])", METRICS_TEXT)
    assert samples[0] == {"name": "aimu_ray_requests_total", "value": 3,
                          "labels": {"model": 'a "quoted" name, {braced}', "route": "chat", "status": "200"}}
    assert [s["value"] for s in samples[1:3]] == [4, 1]          # a timestamp is not the value
    assert len(samples) == 8 and samples[-1]["value"] is None    # NaN comes back as null over WebDriver
    per_model = js(page, "return byModel(parseMetrics(arguments[0])).m", METRICS_TEXT)
    assert per_model["requests"] == 5 and per_model["evictions"] == 2
    assert js(page, "const m = byModel(parseMetrics(arguments[0])).m; return median(m.buckets, null)",
              METRICS_TEXT) == 0.1                               # the 2nd of 4 requests: at the first bound
    assert js(page, "return median({'0.1': 2, '+Inf': 2}, {'0.1': 2, '+Inf': 2})") is None


def test_ui_serves_only_its_own_files_and_the_cluster_view_needs_a_key(app):
    import httpx

    page = httpx.get(f"{app}/ui/", follow_redirects=True)          # the trailing slash leads to the page too
    assert page.url.path == "/ui" and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert httpx.get(f"{app}/ui/app.js").headers["content-type"].startswith("text/javascript")
    for name in ("__init__.py", "..%2Fingress.py", "missing.js", "index.htm"):
        response = httpx.get(f"{app}/ui/{name}")
        assert response.status_code == 404 and response.json()["error"]["message"]
    assert httpx.get(f"{app}/v1/cluster").status_code == 401
    view = httpx.get(f"{app}/v1/cluster", headers={"Authorization": f"Bearer {KEY}"}).json()
    copies = {copy["model"] for node in view["nodes"] for device in node["devices"] for copy in device["copies"]}
    assert copies >= set(IN_PROCESS) and view["made_up"] == SCREENSHOTS


@needs_browser
@pytest.mark.skipif(not SCREENSHOTS, reason="screenshots only when AIMU_RAY_SCREENSHOTS=1")
def test_screenshots_for_the_readme(page):
    """The dashboard after a few requests (so the rates show), and the playground with SmolLM2's answer, an image
    and a clip."""
    choose(page, "smollm2")
    type_into(page, "max-tokens", "80")
    type_into(page, "prompt", "In one sentence: why is the sky blue?")
    click(page, "send")
    wait(page, lambda b: js(b, "const m = document.querySelector('.message.assistant:last-child');"
                               "return !!m && m.dataset.done === 'true'"), "SmolLM2's reply")
    choose(page, "painter")
    type_into(page, "prompt", "a lighthouse at dusk, oil on canvas")
    click(page, "send")
    wait(page, lambda b: js(b, "const i = document.querySelector('#play-log img'); return i && i.naturalWidth"),
         "the image")
    choose(page, "music")
    type_into(page, "audio-duration", "2")
    type_into(page, "prompt", "a calm piano melody")
    click(page, "send")
    wait(page, lambda b: js(b, "const a = document.querySelector('#play-log audio'); return a && a.duration > 0"),
         "the clip")
    no_error(page)
    wait(page, lambda b: js(b, """return ['smollm2', 'painter', 'music'].every(model => {
                                    const row = document.querySelector(`#models tr[data-model=${model}]`);
                                    return row.cells[4].textContent === '0' && Number(row.cells[5].textContent) > 0;
                                  })"""), "the requests' rates in the table")
    IMAGES.mkdir(parents=True, exist_ok=True)
    js(page, "window.scrollTo(0, 0)")
    page.save_screenshot(str(IMAGES / "dashboard.png"))
    js(page, "document.getElementById('playground').scrollIntoView({block: 'start'})")
    page.save_screenshot(str(IMAGES / "playground.png"))
    assert (IMAGES / "dashboard.png").stat().st_size > 0 and (IMAGES / "playground.png").stat().st_size > 0
