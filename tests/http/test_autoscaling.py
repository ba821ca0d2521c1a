"""Scaling under HTTP load: Serve adds an ingress replica (which calls remote providers itself), the model registry
a copy of an in-process model.

One app for the module: a remote model on a loopback fake server that answers every request slowly, with Serve's
``autoscaling_config`` on the ingress (1 to 2 replicas, one request per replica as the target, no upscale delay), and the tiny HF
text model with 1 to 2 copies and one request in flight per copy as the target. Sustained concurrent HTTP load must
start the second replica and the second copy; every request sent meanwhile must succeed. Timeouts here are guards,
never assertions.
"""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from ray import serve

from aimu_ray.demo.servers import free_port
from aimu_ray.deployments import AppConfig
from tests.fakes.server import FakeServer

pytest_plugins = ["tests.fixtures.pytest_fixtures"]

GUARD_S = 60.0
SLOW_REPLY_S = 0.3            # every fake reply waits this long, so requests pile up on one replica
WORKERS = 8                   # concurrent clients: ongoing requests stay well above the target of 1
SCALING = {"min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 1, "upscale_delay_s": 0,
           "downscale_delay_s": 600, "metrics_interval_s": 0.5, "look_back_period_s": 2}
APP = "aimu_ray"
USER = [{"role": "user", "content": "hi"}]



@pytest.fixture(scope="module")
def slow_server():
    with FakeServer(delay_s=SLOW_REPLY_S, record=False) as server:
        yield server


@pytest.fixture(scope="module")
def app(serve_app, tiny_hf_dir, slow_server, tmp_path_factory):
    config = AppConfig(port=free_port(), output_dir=tmp_path_factory.mktemp("autoscaling"),
                       ingress={"autoscaling_config": SCALING}, models=[
        {"name": "slow", "model": f"openai-compat:m@{slow_server.url}/v1", "options": {"max_retries": 0}},
        {"name": "tiny", "model": f"hf:{tiny_hf_dir}", "options": {"max_batch_size": 2},
         "min_replicas": 1, "max_replicas": 2, "target_in_flight": 1},
    ])
    return serve_app(config)


def running_replicas(deployment: str) -> int:
    status = serve.status().applications[APP].deployments[deployment]
    return dict(status.replica_states or {}).get("RUNNING", 0)


async def scale_under_load(app: str, body: dict, count, replicas: int = 2) -> tuple[int, list]:
    """Keep ``WORKERS`` requests in flight until ``count()`` reaches ``replicas`` (or the guard runs out); returns
    the count reached and every response's status (or exception)."""
    outcomes: list = []
    done = asyncio.Event()

    async def client_loop(client: httpx.AsyncClient) -> None:
        while not done.is_set():
            try:
                response = await client.post(f"{app}/v1/chat/completions", json=body)
                outcomes.append(response.status_code if response.status_code == 200 else
                                (response.status_code, response.text[:300]))
            except httpx.HTTPError as error:
                outcomes.append(repr(error))

    async with httpx.AsyncClient(timeout=GUARD_S, limits=httpx.Limits(max_connections=WORKERS)) as client:
        load = asyncio.gather(*(client_loop(client) for _ in range(WORKERS)))
        deadline = time.monotonic() + GUARD_S
        running = await asyncio.to_thread(count)
        try:
            while running < replicas and time.monotonic() < deadline:
                await asyncio.sleep(0.25)
                running = await asyncio.to_thread(count)
        finally:
            done.set()
            await load
    return running, outcomes


async def test_the_ingress_adds_a_replica_under_remote_load(app):
    """The ingress calls remote providers itself and holds nothing between requests: slow upstream replies under
    load scale it out, and requests keep succeeding while the new replica joins."""
    assert await asyncio.to_thread(running_replicas, "ingress") == 1
    running, outcomes = await scale_under_load(app, {"model": "slow", "messages": USER},
                                               lambda: running_replicas("ingress"))
    assert running == 2, f"the ingress never reached 2 running replicas within {GUARD_S:.0f} s"
    assert outcomes and all(outcome == 200 for outcome in outcomes), [o for o in outcomes if o != 200][:5]


def copies_of(app: str, name: str) -> list[dict]:
    """The ready copies of the served model ``name``, as its model card lists them."""
    cards = httpx.get(f"{app}/v1/models", timeout=GUARD_S).json()["data"]
    return [row for card in cards if card["id"] == name for row in card["placement"] if row["state"] == "ready"]


async def test_in_process_model_adds_a_copy_that_loads_and_registers(app):
    """An HF model's copies scale too: the registry places and loads a second one, which joins the ledger."""
    assert len(await asyncio.to_thread(copies_of, app, "tiny")) == 1
    body = {"model": "tiny", "messages": USER, "max_tokens": 32}
    running, outcomes = await scale_under_load(app, body, lambda: len(copies_of(app, "tiny")))
    assert running == 2, f"tiny never reached 2 copies within {GUARD_S:.0f} s"
    assert outcomes and all(outcome == 200 for outcome in outcomes), [o for o in outcomes if o != 200][:5]
    rows = await asyncio.to_thread(copies_of, app, "tiny")
    assert sorted(row["replica"] for row in rows) == [0, 1], rows
