"""Images and clips handed out as URLs, kept by the app's one files deployment: every ingress replica serves them,
and they expire by the app's rule.

Three apps share one Serve (one per route prefix). The main app runs two ingress replicas with a tiny diffusers
pipeline and a tiny MusicGen; its folder holds, before it starts, what an "earlier run" left (one file expired, one
not). A second app keeps files for one second; a third serves only a remote text model and has no files
deployment. That both ingress replicas answered the fetches is read from Ray's own per-replica request counter
(Serve's ``ray_serve_deployment_request_counter``, per replica and route, which the node's metrics agent exports):
the fetches send nothing that names a replica, and the app reveals none. Timeouts are guards, never assertions.
"""

from __future__ import annotations

import base64
import os
import secrets
import time
from pathlib import Path

import httpx
import pytest
import ray
from prometheus_client.parser import text_string_to_metric_families
from ray import serve

from aimu_ray.demo.servers import free_port
from aimu_ray.deployments import AppConfig, run
from aimu_ray.deployments.files import FILE_NAME, FILES, by_reference

pytest_plugins = ["tests.fixtures.image_fixtures", "tests.fixtures.audio_fixtures", "tests.fakes.fixtures"]

GUARD_S = 60.0
FETCHES = 20                  # per URL
TTL_S = 600.0                 # the main app's: no file of this module's run gets that old by itself
MAIN, SHORT, TEXT = "files_main", "files_short", "files_text"
IMAGE = {"model": "painter", "prompt": "a fox", "size": "64x64", "num_inference_steps": 2, "seed": 7}
AUDIO = {"model": "music", "prompt": "drums", "duration_s": 0.2, "seed": 1}


def file_name() -> str:
    return f"{secrets.token_urlsafe(24)}.png"


@pytest.fixture(scope="module")
def left(tmp_path_factory) -> dict[str, Path]:
    """What an earlier run of the main app left in its folder: one file past the ttl, one within it."""
    folder = tmp_path_factory.mktemp("files")
    stale, fresh = folder / file_name(), folder / file_name()
    stale.write_bytes(b"stale png")
    fresh.write_bytes(b"fresh png")
    then = time.time() - TTL_S - 60
    os.utime(stale, (then, then))
    return {"folder": folder, "stale": stale, "fresh": fresh}


@pytest.fixture(scope="module")
def apps(serve_app, left, tiny_sd_dir, tiny_musicgen_dir, fake_server, tmp_path_factory) -> dict[str, str]:
    """The three apps' base URLs, and their folders under ``<name>_dir``."""
    painter = {"name": "painter", "model": f"hf:{tiny_sd_dir}", "task": "image"}
    main = AppConfig(name=MAIN, port=free_port(), output_dir=left["folder"], files_ttl_s=TTL_S,
                     ingress={"num_replicas": 2}, models=[
        painter, {"name": "music", "model": f"hf:{tiny_musicgen_dir}", "task": "audio"}])
    base = serve_app(main)
    short = AppConfig(name=SHORT, route_prefix="/short", port=main.port, output_dir=tmp_path_factory.mktemp("short"),
                      files_ttl_s=1, models=[painter])
    text = AppConfig(name=TEXT, route_prefix="/text", port=main.port, output_dir=tmp_path_factory.mktemp("text") / "x",
                     models=[{"name": "plain", "model": f"openai-compat:plain@{fake_server.url}/v1",
                              "options": {"max_retries": 0}}])
    for config in (short, text):
        run(config, access_log=False)
    return {MAIN: base, SHORT: f"{base}/short", TEXT: f"{base}/text",
            f"{MAIN}_dir": left["folder"], f"{SHORT}_dir": short.output_dir, f"{TEXT}_dir": text.output_dir}


def generate(base: str, route: str, body: dict) -> list[str]:
    answer = httpx.post(f"{base}/v1/{route}/generations", json={**body, "response_format": "url"}, timeout=GUARD_S)
    assert answer.status_code == 200, answer.text
    return [item["url"] for item in answer.json()["data"]]


def running_replicas(app: str) -> dict[str, int]:
    deployments = serve.status().applications[app].deployments
    return {name: dict(status.replica_states or {}).get("RUNNING", 0) for name, status in deployments.items()}


def files_requests_per_replica(app: str) -> dict[str, float]:
    """Ray's count of the files route's requests each ingress replica of ``app`` answered."""
    port = next(node["MetricsExportPort"] for node in ray.nodes() if node["Alive"])
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text):
        for sample in family.samples:
            labels = sample.labels
            if (sample.name == "ray_serve_deployment_request_counter_total" and labels.get("application") == app
                    and labels.get("deployment") == "ingress" and "/v1/files" in labels.get("route", "")):
                counts[labels["replica"]] = counts.get(labels["replica"], 0) + sample.value
    return counts


def test_every_url_is_served_by_both_ingress_replicas_with_the_same_bytes(apps):
    assert running_replicas(MAIN) == {"ingress": 2, FILES: 1}
    inline = httpx.post(f"{apps[MAIN]}/v1/images/generations", json=IMAGE, timeout=GUARD_S).json()["data"]
    urls = {"image/png": generate(apps[MAIN], "images", IMAGE)[0], "audio/wav": generate(apps[MAIN], "audio", AUDIO)[0]}
    for media_type, url in urls.items():
        answers = [httpx.get(url, timeout=GUARD_S) for _ in range(FETCHES)]
        assert {answer.status_code for answer in answers} == {200}
        assert {answer.headers["content-type"] for answer in answers} == {media_type}
        assert len({answer.content for answer in answers}) == 1
    assert httpx.get(urls["image/png"], timeout=GUARD_S).content == base64.b64decode(inline[0]["b64_json"])
    deadline = time.monotonic() + GUARD_S                   # Ray's metrics reach the exporter every few seconds
    while sum((counts := files_requests_per_replica(MAIN)).values()) < 2 * FETCHES + 1:
        assert time.monotonic() < deadline, f"Ray's request counter shows only {counts}"
        time.sleep(1)
    assert len(counts) == 2 and all(counts.values()), counts


def test_the_files_sit_in_the_configured_folder_under_the_names_handed_out(apps):
    [url] = generate(apps[MAIN], "images", IMAGE)
    name = url.rpartition("/")[2]
    assert FILE_NAME.fullmatch(name) and url == f"{apps[MAIN]}/v1/files/{name}"
    assert (apps[f"{MAIN}_dir"] / name).read_bytes() == httpx.get(url, timeout=GUARD_S).content


def test_a_file_over_grpcs_4_mib_message_crosses_the_object_store_both_ways(apps):
    """On Serve's fast path a handle call goes over gRPC, 4 MiB a message at most: the ingress's calls to the files
    deployment go by reference instead. Put through the handle as the ingress holds it, fetched over HTTP."""
    data = os.urandom(6 * 1024 * 1024)
    name = by_reference(serve.get_deployment_handle(FILES, MAIN)).put.remote(data, "wav").result(timeout_s=GUARD_S)
    answer = httpx.get(f"{apps[MAIN]}/v1/files/{name}", timeout=GUARD_S)
    assert answer.status_code == 200 and answer.headers["content-type"] == "audio/wav" and answer.content == data


def test_a_start_deletes_the_expired_files_of_an_earlier_run_and_serves_the_rest(apps, left):
    assert not left["stale"].exists()
    answer = httpx.get(f"{apps[MAIN]}/v1/files/{left['fresh'].name}", timeout=GUARD_S)
    assert answer.status_code == 200 and answer.content == b"fresh png"
    assert httpx.get(f"{apps[MAIN]}/v1/files/{left['stale'].name}", timeout=GUARD_S).status_code == 404


def test_a_file_past_its_ttl_is_404_at_once(apps):
    [url] = generate(apps[MAIN], "images", IMAGE)
    then = time.time() - TTL_S - 1                          # as if written 10 minutes ago; the sweep runs each minute
    os.utime(apps[f"{MAIN}_dir"] / url.rpartition("/")[2], (then, then))
    answers = [httpx.get(url, timeout=GUARD_S) for _ in range(4)]
    assert [answer.status_code for answer in answers] == [404] * 4
    assert answers[0].json()["error"]["message"] == "No such file."


def test_bad_names_are_404(apps):
    for name in ("..%2Fetc%2Fpasswd", "x.png", "a" * 24 + ".sh", file_name()):
        assert httpx.get(f"{apps[MAIN]}/v1/files/{name}", timeout=GUARD_S).status_code == 404


def test_an_expired_file_is_swept_from_disk_and_its_url_is_404(apps):
    [url] = generate(apps[SHORT], "images", IMAGE)
    name = url.rpartition("/")[2]
    assert url == f"{apps[SHORT]}/v1/files/{name}"
    path, deadline = apps[f"{SHORT}_dir"] / name, time.monotonic() + GUARD_S
    while path.exists():                                   # the 1 s ttl's sweep runs every second
        assert time.monotonic() < deadline, "the sweep never deleted the expired file"
        time.sleep(0.2)
    assert httpx.get(url, timeout=GUARD_S).status_code == 404


def test_an_app_without_image_or_audio_models_has_no_files_deployment(apps):
    assert running_replicas(TEXT) == {"ingress": 1}
    assert httpx.get(f"{apps[TEXT]}/v1/files/{file_name()}", timeout=GUARD_S).status_code == 404
    assert not apps[f"{TEXT}_dir"].exists()
