"""Copies of one model and eviction, on a local Ray with logical GPUs and a made-up inventory to match.

Placement decides from the made-up inventory (two nodes of one GPU each for the copies, one GPU for eviction);
Ray enforces the fractions on its logical GPUs; the actors run on CPU. Models are unloaded between tests.
"""

from __future__ import annotations

import asyncio
import time

import pytest
import ray

from aimu_ray import aio
from aimu_ray.cluster import GPU, Inventory, Node, set_fake_inventory
from aimu_ray.batch import run_batch
from aimu_ray.cluster.model_size import need_for
from aimu_ray.cluster.placement import PlacementError
from aimu_ray.clients.loaded_models import copies_that_fit
from aimu_ray.clients.requests import chat_request, served_model
from aimu_ray.hosts.registry import get_registry
from aimu_ray.models.load import load_for
from aimu_ray.models.wire import Endpoint

pytest_plugins = ["tests.fixtures.pytest_fixtures"]
pytestmark = pytest.mark.usefixtures("local_ray")
RAY_INIT = {"num_cpus": 4, "num_gpus": 2}
GUARD_S = 120
GREEDY = {"max_tokens": 8, "do_sample": False}


@pytest.fixture(autouse=True)
async def empty_registry():
    yield
    await aio.unload()


def inventory(tiny_hf_dir, nodes: int, gpus: int, models_per_gpu: float) -> Inventory:
    """``nodes`` made-up nodes of ``gpus`` GPUs, each holding ``models_per_gpu`` of the tiny model."""
    gpu_bytes = int(need_for(load_for("hf", "text", str(tiny_hf_dir), {})).total_bytes * models_per_gpu)
    return Inventory(nodes=[Node(node_id=f"node-{n}", ram_total_bytes=8 << 30, ram_free_bytes=8 << 30,
                                 gpus=[GPU(index=i, total_bytes=gpu_bytes, free_bytes=gpu_bytes) for i in range(gpus)])
                            for n in range(nodes)])


@pytest.fixture
def two_nodes(tiny_hf_dir):
    """Two nodes of one GPU each, room for two copies per GPU: spreading must still put one copy on each."""
    set_fake_inventory(inventory(tiny_hf_dir, nodes=2, gpus=1, models_per_gpu=2.5))
    yield
    set_fake_inventory(None)


@pytest.fixture
def one_gpu(tiny_hf_dir):
    """One GPU with room for two models: a third must evict one."""
    set_fake_inventory(inventory(tiny_hf_dir, nodes=1, gpus=1, models_per_gpu=2.5))
    yield
    set_fake_inventory(None)


def hf(tiny_hf_dir, **options) -> aio.AsyncTextClient:
    return aio.client(f"hf:{tiny_hf_dir}", keep_alive_s=None, **options)


async def rows_until(condition, what: str) -> list:
    deadline = time.monotonic() + GUARD_S
    while not condition(rows := await aio.placements()):
        assert time.monotonic() < deadline, f"{what}: {rows}"
        await asyncio.sleep(0.25)
    return rows


async def engine_rows(copy) -> int:
    return (await copy.info.remote())["engine"]["rows"]


async def test_copies_spread_over_nodes_each_where_its_row_says_and_both_serve(tiny_hf_dir, two_nodes):
    client = hf(tiny_hf_dir, replicas=2)
    await asyncio.wait_for(asyncio.gather(*(client.generate(f"p{i}", generate_kwargs=GREEDY) for i in range(16))),
                           GUARD_S)
    rows = await aio.placements()
    assert sorted((row.replica, row.node_id) for row in rows) in ([(0, "node-0"), (1, "node-1")],
                                                                  [(0, "node-1"), (1, "node-0")])
    assert all(row.state == "ready" and row.gpu_indices == [0] for row in rows)
    assert "fewest copies of this model" in next(row for row in rows if row.replica == 1).reason
    copies = ray.get(get_registry().replicas.remote(client._load.key()))
    assert len(copies) == 2
    assert all(n > 0 for n in await asyncio.gather(*map(engine_rows, copies)))     # both copies took requests


async def test_a_range_scales_out_under_load_and_in_when_idle(tiny_hf_dir, two_nodes):
    client = hf(tiny_hf_dir, min_replicas=1, max_replicas=2, target_in_flight=1, scale_in_idle_s=1)
    await client.generate("warm up", generate_kwargs=GREEDY)
    assert len(await aio.placements()) == 1
    busy = {"max_tokens": 64, "do_sample": False}
    loaded = asyncio.Event()

    async def keep_four_in_flight():        # until the second copy is ready, so neither copy goes idle before
        while not loaded.is_set():
            await asyncio.gather(*(client.generate(f"long {i}", generate_kwargs=busy) for i in range(4)))

    load = asyncio.create_task(keep_four_in_flight())
    try:
        await rows_until(lambda rows: len(rows) == 2 and all(r.state == "ready" for r in rows), "second copy loads")
    finally:
        loaded.set()
        await load
    rows = await rows_until(lambda rows: len(rows) == 1, "idle copy removed")
    assert rows[0].state == "ready"
    assert isinstance(await client.generate("after", generate_kwargs=GREEDY), str)


async def test_a_copy_killed_for_good_fails_only_its_own_requests_and_is_replaced(tiny_hf_dir, two_nodes):
    client = hf(tiny_hf_dir, replicas=2)
    await client.generate("warm up", generate_kwargs=GREEDY)
    copies = ray.get(get_registry().replicas.remote(client._load.key()))
    doomed, kept = copies
    other_answers = asyncio.gather(*(kept.run.remote(_request(tiny_hf_dir, f"q{i}")) for i in range(4)))
    ray.kill(doomed, no_restart=True)
    assert len(await asyncio.wait_for(other_answers, GUARD_S)) == 4               # the other copy never noticed
    rows = await rows_until(lambda rows: len(rows) == 2 and all(r.state == "ready" for r in rows)
                            and doomed._actor_id.hex() not in _ids(client), "replaced")
    assert sorted(row.replica for row in rows) == [0, 1]
    answers = await asyncio.wait_for(asyncio.gather(*(client.generate(f"r{i}", generate_kwargs=GREEDY)
                                                      for i in range(6))), GUARD_S)
    assert all(isinstance(answer, str) for answer in answers)


async def test_eviction_takes_the_least_recently_used_idle_model_and_a_request_reloads_it(tiny_hf_dir, one_gpu):
    first, second, third = (hf(tiny_hf_dir, max_batch_size=size) for size in (4, 8, 16))
    await first.generate("a", generate_kwargs=GREEDY)
    await second.generate("b", generate_kwargs=GREEDY)
    await first.generate("a again", generate_kwargs=GREEDY)       # second is now the least recently used
    await third.generate("c", generate_kwargs=GREEDY)
    rows = await aio.placements()
    assert sorted(row.key for row in rows) == sorted([first._load.key(), third._load.key()])
    evictions, counts = ray.get(get_registry().evictions.remote())
    assert [(e.model, e.for_model) for e in evictions] == [(f"hf:{tiny_hf_dir}",) * 2]
    assert evictions[0].freed_bytes > 0 and "idle" in evictions[0].reason
    assert counts == {f"hf:{tiny_hf_dir}": 1}
    assert isinstance(await second.generate("b again", generate_kwargs=GREEDY), str)   # loads again, evicting first
    assert sorted(row.key for row in await aio.placements()) == sorted([second._load.key(), third._load.key()])


async def test_a_pinned_model_is_never_evicted_and_all_pinned_names_what_holds_the_memory(tiny_hf_dir, one_gpu):
    pinned = hf(tiny_hf_dir, max_batch_size=4, pin=True)
    other = hf(tiny_hf_dir, max_batch_size=8)
    await pinned.generate("a", generate_kwargs=GREEDY)
    await other.generate("b", generate_kwargs=GREEDY)
    await hf(tiny_hf_dir, max_batch_size=16, pin=True).generate("c", generate_kwargs=GREEDY)   # evicts `other`
    rows = await aio.placements()
    assert other._load.key() not in {row.key for row in rows} and all(row.pinned for row in rows)
    with pytest.raises(PlacementError, match="pinned"):
        await hf(tiny_hf_dir, max_batch_size=32).generate("d", generate_kwargs=GREEDY)
    assert len(await aio.placements()) == 2                       # nothing loaded, nothing evicted


async def test_copies_that_fit_counts_those_loaded_plus_the_room_left(tiny_hf_dir, two_nodes):
    client = hf(tiny_hf_dir)
    assert await copies_that_fit(client._load) == 4                 # two per GPU, on two GPUs
    assert await copies_that_fit(client._load, most=3) == 3
    await client.generate("a", generate_kwargs=GREEDY)
    assert len(await aio.placements()) == 1
    assert await copies_that_fit(client._load) == 4                 # the loaded copy and room for three more
    assert len(await aio.placements()) == 1                         # counting loaded nothing


def test_bad_replica_counts_are_refused_before_anything_loads(tiny_hf_dir):
    for bad in ({"replicas": 0}, {"min_replicas": 3, "max_replicas": 2}, {"replicas": 2, "max_replicas": 3}):
        with pytest.raises(ValueError):
            aio.client(f"hf:{tiny_hf_dir}", **bad)


def _request(tiny_hf_dir, prompt: str):
    """A chat request sent straight to one copy, past the client's choice of copy."""
    return chat_request(served_model(f"hf:{tiny_hf_dir}"), Endpoint(), [{"role": "user", "content": prompt}],
                        warn=print, generate_kwargs=GREEDY)


def _ids(client) -> set[str]:
    return {copy._actor_id.hex() for copy in ray.get(get_registry().replicas.remote(client._load.key()))}


async def test_two_copies_on_one_gpu_load_one_after_the_other(tiny_hf_dir, one_gpu):
    client = hf(tiny_hf_dir, replicas=2)
    await client.generate("a", generate_kwargs=GREEDY)
    copies = ray.get(get_registry().replicas.remote(client._load.key()))
    first, second = sorted([await copy.info.remote() for copy in copies], key=lambda info: info["replica"])
    assert first["placement"].gpu_indices == second["placement"].gpu_indices == [0]
    assert second["created_at"] >= first["created_at"] + first["use"].load_s   # made once the first had loaded


async def test_capping_the_memory_placement_may_use_forces_an_eviction(tiny_hf_dir, one_gpu):
    first, second = hf(tiny_hf_dir, max_batch_size=4), hf(tiny_hf_dir, max_batch_size=8)
    await first.generate("a", generate_kwargs=GREEDY)
    assert await aio.set_gpu_memory_utilization(0.5) == 1.0           # room for 1.25 models instead of 2.5
    try:
        await second.generate("b", generate_kwargs=GREEDY)
        assert [row.key for row in await aio.placements()] == [second._load.key()]
        with pytest.raises(ValueError, match="above 0 and at most 1"):
            await aio.set_gpu_memory_utilization(1.5)
    finally:
        await aio.set_gpu_memory_utilization(1.0)


async def test_a_batch_on_two_copies_sends_lines_to_both(tiny_hf_dir, two_nodes, tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text("".join(f'{{"id": "q{i}", "prompt": "line {i}"}}\n' for i in range(16)))
    summary = await run_batch(f"hf:{tiny_hf_dir}", source, tmp_path / "out.jsonl", concurrency=8, progress=False,
                              generate_kwargs=GREEDY, client_options={"replicas": 2, "keep_alive_s": None})
    assert (summary.succeeded, summary.replicas) == (16, 2)
    copies = ray.get(get_registry().replicas.remote(hf(tiny_hf_dir).model_load.key()))
    assert len(copies) == 2 and all(n > 0 for n in await asyncio.gather(*map(engine_rows, copies)))


async def test_a_batch_with_auto_replicas_takes_every_copy_that_fits_and_gives_them_back(tiny_hf_dir, two_nodes,
                                                                                        tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text("".join(f'{{"prompt": "line {i}"}}\n' for i in range(8)))
    summary = await run_batch(f"hf:{tiny_hf_dir}", source, tmp_path / "out.jsonl", concurrency=8, progress=False,
                              generate_kwargs=GREEDY, client_options={"replicas": "auto"})
    assert (summary.succeeded, summary.replicas) == (8, 4)            # two nodes, room for two copies on each GPU
    assert len(await aio.placements()) == 0                           # released at the end, not after keep-alive
