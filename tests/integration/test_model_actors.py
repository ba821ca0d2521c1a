"""In-process models in Ray actors on a local Ray with two logical GPUs and a made-up inventory to match.

Placement decides from the made-up inventory; Ray enforces the GPU fractions on its logical GPUs; the
actors run on CPU (no CUDA here) and say so. One Ray for the module; models are unloaded between tests
so each test starts from an empty registry.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time

import pytest
import ray

import aimu_ray
from aimu_ray import aio
from aimu_ray.backends import backend_for
from aimu_ray.cluster.connection import NAMESPACE
from aimu_ray.cluster import GPU, Inventory, Node, set_fake_inventory
from aimu_ray.cluster.model_size import need_for
from aimu_ray.models.errors import ModelConnectionError
from aimu_ray.models.load import load_for

pytest_plugins = ["tests.fixtures.pytest_fixtures"]
pytestmark = pytest.mark.usefixtures("local_ray")
RAY_INIT = {"num_cpus": 4, "num_gpus": 2}     # logical GPUs, as many as `two_gpus` makes up
GUARD_S = 120            # only so that a broken actor fails the test instead of hanging the run
GREEDY = {"max_tokens": 8, "do_sample": False}


@pytest.fixture(autouse=True)
async def empty_registry():
    yield
    await aio.unload()


@pytest.fixture(scope="module")
def two_gpus(tiny_hf_dir):
    """Two fake GPUs, each 2.5x the tiny model's need: two models share GPU 0 by fraction, a third needs GPU 1."""
    need = need_for(load_for("hf", "text", str(tiny_hf_dir), {})).total_bytes
    gpu_bytes = int(need * 2.5)
    inventory = Inventory(nodes=[Node(node_id="fake-node", ram_total_bytes=8 << 30, ram_free_bytes=8 << 30,
                                      gpus=[GPU(index=i, total_bytes=gpu_bytes, free_bytes=gpu_bytes)
                                            for i in range(2)])])
    set_fake_inventory(inventory)
    yield inventory
    set_fake_inventory(None)


def hf(tiny_hf_dir, **options) -> aio.AsyncTextClient:
    return aio.client(f"hf:{tiny_hf_dir}", **options)


async def test_two_models_share_a_gpu_by_fraction_and_a_third_goes_to_the_other(tiny_hf_dir, two_gpus):
    clients = [hf(tiny_hf_dir, max_batch_size=size) for size in (4, 8, 16)]   # three loads of one folder
    for client in clients:
        assert await asyncio.wait_for(client.chat("hello", generate_kwargs=GREEDY), GUARD_S)
    rows = await aio.placements()
    assert len(rows) == 3
    by_gpu = sorted(row.gpu_indices[0] for row in rows)
    assert by_gpu == [0, 0, 1]
    assert all(row.num_gpus == pytest.approx(0.4, abs=0.01) for row in rows)
    assert all(row.state == "ready" and "CUDA is not available" in row.note for row in rows)
    assert all(0 < row.used_bytes < row.used_ram_bytes and row.estimate_error_pct is not None for row in rows)
    assert {tuple(row.gpu_ids) for row in rows} == {(0,), (1,)}        # Ray gave them two distinct GPUs
    assert ray.available_resources().get("GPU", 0) == pytest.approx(2 - 3 * rows[0].num_gpus)


async def test_two_clients_and_another_process_share_one_actor(tiny_hf_dir, two_gpus):
    first, second = hf(tiny_hf_dir), hf(tiny_hf_dir)
    await asyncio.gather(first.chat("a", generate_kwargs=GREEDY), second.chat("b", generate_kwargs=GREEDY))
    name = first._load.actor_name()
    actor_id = ray.get_actor(name, namespace=NAMESPACE)._actor_id.hex()
    script = ("import json, ray, aimu_ray; from aimu_ray.cluster.connection import NAMESPACE\n"
              f"c = aimu_ray.client({f'hf:{tiny_hf_dir}'!r}); c.chat('hi', generate_kwargs={GREEDY!r})\n"
              f"print(json.dumps(ray.get_actor({name!r}, namespace=NAMESPACE)._actor_id.hex()))")
    env = {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=GUARD_S)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == actor_id
    assert len(await aio.placements()) == 1


async def test_concurrent_requests_share_forward_passes(tiny_hf_dir, two_gpus):
    client = hf(tiny_hf_dir)
    await client.generate("warm up", generate_kwargs=GREEDY)
    answers = await asyncio.wait_for(asyncio.gather(*(client.generate(f"prompt {i}", generate_kwargs=GREEDY)
                                                      for i in range(12))), GUARD_S)
    assert len(answers) == 12
    actor = await backend_for(client._load).actor()
    stats = (await actor.info.remote())["engine"]
    assert stats["rows"] >= 13 and stats["generate_calls"] < stats["rows"]


async def test_stream_arrives_while_the_model_is_still_generating(tiny_hf_dir, two_gpus):
    client = hf(tiny_hf_dir)
    stream = await client.chat("tell me a long story", stream=True,
                               generate_kwargs={"max_tokens": 400, "do_sample": False})
    first = await asyncio.wait_for(stream.__anext__(), GUARD_S)
    assert first.is_text()
    actor = await backend_for(client._load).actor()
    assert (await actor.info.remote())["in_flight"] == 1          # the answer is not finished yet
    rest = [chunk async for chunk in stream]
    assert first.content + "".join(c.content for c in rest) == client.messages[-1]["content"]


async def test_a_killed_actor_fails_in_flight_requests_then_comes_back(tiny_hf_dir, two_gpus):
    client = hf(tiny_hf_dir)
    await client.chat("warm up", generate_kwargs=GREEDY)
    actor = await backend_for(client._load).actor()
    stream = await client.chat("long", stream=True, generate_kwargs={"max_tokens": 2000, "do_sample": False})
    await asyncio.wait_for(stream.__anext__(), GUARD_S)
    ray.kill(actor, no_restart=False)                             # a crash: Ray restarts it
    with pytest.raises(ModelConnectionError, match="died while running this request"):
        async for _ in stream:
            pass
    answer = await asyncio.wait_for(client.generate("again", generate_kwargs=GREEDY), GUARD_S)
    assert isinstance(answer, str)
    assert (await backend_for(client._load).actor())._actor_id == actor._actor_id   # the same actor, restarted


async def test_idle_actor_unloads_and_gives_its_gpu_share_back(tiny_hf_dir, two_gpus):
    client = hf(tiny_hf_dir, keep_alive_s=1)
    await client.chat("hi", generate_kwargs=GREEDY)
    assert ray.available_resources()["GPU"] < 2
    deadline = time.monotonic() + GUARD_S
    while await aio.placements() and time.monotonic() < deadline:
        await asyncio.sleep(0.25)
    assert not await aio.placements()
    while ray.available_resources().get("GPU", 0) < 2 and time.monotonic() < deadline:
        await asyncio.sleep(0.25)
    assert ray.available_resources()["GPU"] == 2
    assert isinstance(await client.generate("after unload", generate_kwargs=GREEDY), str)   # loads again


async def test_unload_by_name(tiny_hf_dir, two_gpus):
    client = hf(tiny_hf_dir)
    await client.chat("hi", generate_kwargs=GREEDY)
    assert await aio.unload(f"hf:{tiny_hf_dir}") == [f"hf:{tiny_hf_dir}"]
    assert not await aio.placements()


async def test_nothing_fits_says_what_would(tiny_hf_dir):
    tiny = Inventory(nodes=[Node(node_id="small", ram_total_bytes=1 << 30, ram_free_bytes=1 << 30,
                                 gpus=[GPU(index=0, total_bytes=1024, free_bytes=1024)])])
    set_fake_inventory(tiny)
    try:
        with pytest.raises(ValueError, match="Nothing fits"):
            await hf(tiny_hf_dir).chat("hi", generate_kwargs=GREEDY)
    finally:
        set_fake_inventory(None)
    assert not await aio.placements()


async def test_a_load_error_reaches_the_caller_and_leaves_nothing_behind(tmp_path):
    missing = tmp_path / "no-model-here"
    missing.mkdir()
    with pytest.raises(aimu_ray.ModelLoadError, match="Could not load hf:.*no-model-here on cpu"):
        await aio.client(f"hf:{missing}").chat("hi")
    assert not await aio.placements()


def test_sync_placements_prints_a_table(tiny_hf_dir, two_gpus):
    client = aimu_ray.client(f"hf:{tiny_hf_dir}")
    client.chat("hi", generate_kwargs=GREEDY)
    table = str(aimu_ray.placements())
    assert f"hf:{tiny_hf_dir}"[:40] in table and "needs" in table
