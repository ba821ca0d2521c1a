"""Serve autoscaling that adds a replica under load, for the remote deployment and for an in-process model.

One app for the module: a remote model on a loopback fake server that answers every request slowly, and the
tiny HF text model, each deployment with Serve's ``autoscaling_config`` (1 to 2 replicas, one request per
replica as the target, no upscale delay). Sustained concurrent HTTP load must make Serve start the second
replica; every request sent meanwhile must succeed. Timeouts here are guards, never assertions.
"""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from ray import serve

import aimu_ray
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
                       remote={"autoscaling_config": SCALING}, models=[
        {"name": "slow", "model": f"openai-compat:m@{slow_server.url}/v1", "options": {"max_retries": 0}},
        {"name": "tiny", "model": f"hf:{tiny_hf_dir}", "options": {"max_batch_size": 2},
         "autoscaling_config": SCALING},
    ])
    return serve_app(config)


def running_replicas(deployment: str) -> int:
    status = serve.status().applications[APP].deployments[deployment]
    return dict(status.replica_states or {}).get("RUNNING", 0)


async def scale_under_load(app: str, deployment: str, body: dict, replicas: int = 2) -> tuple[int, list]:
    """Keep ``WORKERS`` requests in flight until ``deployment`` has ``replicas`` running (or the guard runs out);
    returns the running count reached and every response's status (or exception)."""
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
        running = await asyncio.to_thread(running_replicas, deployment)
        try:
            while running < replicas and time.monotonic() < deadline:
                await asyncio.sleep(0.25)
                running = await asyncio.to_thread(running_replicas, deployment)
        finally:
            done.set()
            await load
    return running, outcomes


async def test_remote_deployment_adds_a_replica_under_load(app):
    """Remote models share the stateless ``remote`` deployment: slow upstream replies under load scale it out."""
    assert await asyncio.to_thread(running_replicas, "remote") == 1
    running, outcomes = await scale_under_load(app, "remote", {"model": "slow", "messages": USER})
    assert running == 2, f"the remote deployment never reached 2 running replicas within {GUARD_S:.0f} s"
    assert outcomes and all(outcome == 200 for outcome in outcomes), [o for o in outcomes if o != 200][:5]


async def test_in_process_model_adds_a_replica_that_loads_and_registers(app):
    """An HF model's own deployment scales too; the new replica loads the model and joins the placement ledger."""
    assert await asyncio.to_thread(running_replicas, "model-tiny") == 1
    body = {"model": "tiny", "messages": USER, "max_tokens": 32}
    running, outcomes = await scale_under_load(app, "model-tiny", body)
    assert running == 2, f"model-tiny never reached 2 running replicas within {GUARD_S:.0f} s"
    assert outcomes and all(outcome == 200 for outcome in outcomes), [o for o in outcomes if o != 200][:5]

    deadline = time.monotonic() + GUARD_S           # each replica tells the registry once it has loaded
    rows = []
    while time.monotonic() < deadline:
        rows = [row for row in await asyncio.to_thread(aimu_ray.placements) if row.deployment == "model-tiny"]
        if len(rows) == 2:
            break
        await asyncio.sleep(0.25)
    assert len(rows) == 2, rows
    assert all(row.state == "serving" for row in rows), rows
