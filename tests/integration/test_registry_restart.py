"""The ledger outlives its keeper: the registry killed with models loaded and an idle timer running comes back by
itself, rebuilds its ledger from the live model actors (those an HTTP app serves too), promises nothing twice, and ends
the idle model. Two logical GPUs and a made-up inventory, as ``test_model_actors`` has: two models fit a GPU."""

from __future__ import annotations

import asyncio
import time

import httpx

import pytest
import ray
from ray import serve

from aimu_ray import aio
from aimu_ray.backends import backend_for
from aimu_ray.cluster import PlacementError
from aimu_ray.cluster.connection import NAMESPACE
from aimu_ray.demo.servers import free_port
from aimu_ray.deployments import AppConfig, run
from aimu_ray.hosts.registry import STATUS_WAIT_S, get_registry
from tests.integration.test_model_actors import GREEDY, GUARD_S, hf, two_gpus  # noqa: F401  (a fixture)

pytest_plugins = ["tests.fixtures.pytest_fixtures"]
pytestmark = pytest.mark.usefixtures("local_ray")
RAY_INIT = {"num_cpus": 4, "num_gpus": 2}     # logical GPUs, as many as `two_gpus` makes up
IDLE_S = 12              # the idle model's keep-alive: long enough to check the ledger first, short to wait out


@pytest.fixture(autouse=True)
async def empty_registry():
    yield
    await aio.unload()


def shares(rows) -> dict[str, tuple]:
    """What each row promises, and where: what a rebuilt ledger must give back unchanged."""
    return {row.key: (row.model, row.node_id, row.gpu_indices, row.num_gpus, row.reserved_bytes, row.need_bytes,
                      row.replica) for row in rows}


def row_of(rows, client):
    return next(row for row in rows if row.key == client._load.key())


async def actor_id(client) -> str:
    return (await backend_for(client._load).actor())._actor_id.hex()


async def wait_until(check, what: str) -> None:
    deadline = time.monotonic() + GUARD_S
    while not await check():
        assert time.monotonic() < deadline, f"still not {what} after {GUARD_S} s"
        await asyncio.sleep(0.25)


async def test_a_killed_registry_comes_back_with_its_ledger_whole(tiny_hf_dir, two_gpus):
    kept = [hf(tiny_hf_dir, max_batch_size=size, keep_alive_s=None, pin=True) for size in (4, 8)]   # both on GPU 0
    idle = hf(tiny_hf_dir, max_batch_size=16, keep_alive_s=IDLE_S, pin=True)   # on GPU 1; pinned: never evicted
    for client in [*kept, idle]:
        await asyncio.wait_for(client.chat("hello", generate_kwargs=GREEDY), GUARD_S)
    ids = [await actor_id(client) for client in [*kept, idle]]
    before = shares(await aio.placements())
    assert sorted(row[2] for row in before.values()) == [[0], [0], [1]]

    ray.kill(get_registry(), no_restart=False)                    # a crash: Ray restarts it
    started = time.monotonic()
    after = await aio.placements()                                # one read, no retry: it answers within its bound
    assert time.monotonic() - started < STATUS_WAIT_S
    assert shares(after) == before

    for client, known in zip([*kept, idle], ids):                 # every model still answers, from the same actor
        assert await asyncio.wait_for(client.chat("again", generate_kwargs=GREEDY), GUARD_S)
        assert await actor_id(client) == known

    fourth = hf(tiny_hf_dir, max_batch_size=32, keep_alive_s=None, pin=True)
    await asyncio.wait_for(fourth.chat("hi", generate_kwargs=GREEDY), GUARD_S)
    assert row_of(await aio.placements(), fourth).gpu_indices == [1]          # GPU 0's shares were not forgotten
    with pytest.raises(PlacementError, match="Nothing fits"):   # all pinned: refused at once, never left pending
        await asyncio.wait_for(hf(tiny_hf_dir, max_batch_size=64).chat("hi", generate_kwargs=GREEDY), GUARD_S)

    async def idle_gone() -> bool:
        return idle._load.key() not in shares(await aio.placements())

    async def share_back() -> bool:                                # three models of one share each are left
        return ray.available_resources().get("GPU", 0) == pytest.approx(2 - 3 * before[idle._load.key()][3])

    await wait_until(idle_gone, "retired")                         # the new registry ended the idle model
    await wait_until(share_back, "given its GPU share back to Ray")
    fifth = hf(tiny_hf_dir, max_batch_size=64, keep_alive_s=None)              # its share is the ledger's again
    await asyncio.wait_for(fifth.chat("hi", generate_kwargs=GREEDY), GUARD_S)
    assert row_of(await aio.placements(), fifth).gpu_indices == [1]


async def test_a_model_that_retires_while_no_registry_listens_is_ended_and_loads_again(tiny_hf_dir, two_gpus):
    idle = hf(tiny_hf_dir, keep_alive_s=2)
    await asyncio.wait_for(idle.chat("hello", generate_kwargs=GREEDY), GUARD_S)
    name = idle._load.actor_name()
    ray.kill(get_registry())                                       # ended for good: nobody restarts it

    async def actor_gone() -> bool:                                # the retiring actor makes a registry, which ends it
        try:
            await asyncio.to_thread(ray.get_actor, name, namespace=NAMESPACE)
        except ValueError:
            return True
        return False

    await wait_until(actor_gone, "ended")
    assert not await aio.placements()
    assert await asyncio.wait_for(idle.generate("after", generate_kwargs=GREEDY), GUARD_S)   # a fresh actor


@pytest.fixture
def served_tiny(tiny_hf_dir, two_gpus, tmp_path):
    """One Serve app serving the tiny model (its one copy the registry's, like any other)."""
    config = AppConfig(port=free_port(), output_dir=tmp_path, models=[{"name": "tiny", "model": f"hf:{tiny_hf_dir}"}])
    run(config, access_log=False)
    yield config
    serve.shutdown()


async def test_a_served_model_keeps_its_share_and_answers_over_http_across_a_restart(tiny_hf_dir, served_tiny):
    url = f"http://127.0.0.1:{served_tiny.port}/v1/chat/completions"
    body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    async with httpx.AsyncClient(timeout=GUARD_S) as http:
        assert (await http.post(url, json=body)).status_code == 200
        before = shares(await aio.placements())
        ray.kill(get_registry(), no_restart=False)
        assert (await http.post(url, json=body)).status_code == 200
    assert shares(await aio.placements()) == before
    beside = hf(tiny_hf_dir, max_batch_size=4, keep_alive_s=None)   # the served copy's share is not promised again
    await asyncio.wait_for(beside.chat("hello", generate_kwargs=GREEDY), GUARD_S)
    assert len(await aio.placements()) == 2
