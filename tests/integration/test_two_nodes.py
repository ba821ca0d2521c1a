"""Models placed across a real two-node Ray cluster on one machine.

A head (``ray start --head``) and a second node (``ray start --address``) run here as two raylets, each
with one logical GPU. A made-up inventory carries the two nodes' real Ray ids, one GPU each, sized so
each GPU holds exactly one tiny model; the head's GPU is the slightly fuller one, so best fit puts the
first model there. The tests then show the second model spilling to the other node, Ray's node affinity
and GPU accounting following the placement, a pin (``node_id=``) overriding best fit, a third model
refused because the two loaded are pinned, and two copies of one model spreading over both nodes.

Starting and stopping the nodes without touching anyone else's Ray
------------------------------------------------------------------
Other test runs may have their own Rays on this machine, so ``ray stop`` (which kills every Ray process
of the machine) is never used. Instead:

- each node is ``ray start --block`` in a new session (``start_new_session=True``): the ``ray start``
  process is the session leader and every process that node starts — GCS, raylet, agents, and the
  worker processes (they change their process group but keep the session) — carries its pid as session
  id, so "processes of session S" is exactly "this node's processes";
- the cluster gets a temp dir of its own (one short folder under /tmp that both nodes share: Unix
  socket paths must be short) and free ports for everything Ray would otherwise put on a fixed port
  (GCS, client server, dashboard, dashboard agent), so it neither collides with another Ray nor is
  found by one: ``ray.init()`` without an address looks for ``ray_current_cluster`` in the default
  temp dir, where this cluster writes nothing;
- teardown disconnects the driver, sends SIGTERM to the second node's ``ray start`` and then the head's
  (in that order: a node stopping after its GCS is gone waits for it), waits a few seconds, then sends
  SIGKILL to whatever is left in those two sessions and reaps the two leaders.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import ray

import aimu_ray
from aimu_ray import aio
from aimu_ray.backends import backend_for
from aimu_ray.cluster import GPU, Inventory, Node, set_fake_inventory
from aimu_ray.cluster.model_size import need_for
from aimu_ray.demo.servers import free_port
from aimu_ray.hosts.registry import get_registry
from aimu_ray.models.load import load_for
from tests.fixtures.ray_nodes import head_args, start_node, stop_nodes, tail

pytest_plugins = ["tests.fixtures.pytest_fixtures"]

GUARD_S = 90             # only so that a broken cluster fails the test instead of hanging the run
START_S = 90             # two raylets on a loaded 2-core machine: ~12 s usually
GREEDY = {"max_tokens": 8, "do_sample": False}


class TwoNodes:
    """The running cluster: its address, the Ray ids of its two nodes, and the ``ray start`` leader of each."""

    def __init__(self, address: str, head_id: str, second_id: str, leaders: dict[str, subprocess.Popen]):
        self.address, self.head_id, self.second_id, self.leaders = address, head_id, second_id, leaders

    def session_of(self, node_id: str) -> int:
        return self.leaders[node_id].pid


def _alive_nodes() -> list[dict]:
    return [node for node in ray.nodes() if node.get("Alive")]


@pytest.fixture(scope="module")
def two_nodes():
    if ray.is_initialized():                       # a module before this one left its Ray connected
        aimu_ray.shutdown()
    temp = Path(tempfile.mkdtemp(prefix="ray2n-"))
    port = free_port()
    address = f"127.0.0.1:{port}"
    head_log, second_log = temp / "head.log", temp / "second.log"
    leaders: list[subprocess.Popen] = []
    try:
        leaders.append(start_node(head_args(port, temp, "--num-cpus=2", "--num-gpus=1"), head_log))
        leaders.append(start_node(
            [f"--address={address}", "--num-cpus=2", "--num-gpus=1",
             f"--dashboard-agent-listen-port={free_port()}", f"--temp-dir={temp}"], second_log))
        aimu_ray.init(address=address)
        deadline = time.monotonic() + START_S
        while len(_alive_nodes()) < 2:
            dead = [log for leader, log in zip(leaders, (head_log, second_log)) if leader.poll() is not None]
            if dead or time.monotonic() > deadline:
                pytest.fail(f"the two-node cluster did not come up in {START_S} s:\n"
                            + "\n".join(f"--- {log.name}\n{tail(log)}" for log in (head_log, second_log)))
            time.sleep(0.2)
        nodes = _alive_nodes()
        head_id = next(n["NodeID"] for n in nodes if "node:__internal_head__" in n["Resources"])
        second_id = next(n["NodeID"] for n in nodes if n["NodeID"] != head_id)
        assert all(n["Resources"].get("GPU") == 1 for n in nodes)
        yield TwoNodes(address, head_id, second_id, {head_id: leaders[0], second_id: leaders[1]})
    finally:
        set_fake_inventory(None)
        if ray.is_initialized():
            aimu_ray.shutdown()
        stop_nodes(list(reversed(leaders)))             # the second node first, then the head (and its GCS)
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def one_model_per_gpu(two_nodes, tiny_hf_dir):
    """Both real nodes, one GPU each holding one tiny model and not two; the head's GPU is a little fuller,
    so best fit prefers it."""
    need = need_for(load_for("hf", "text", str(tiny_hf_dir), {})).total_bytes
    total = int(need * 1.5)

    def node(node_id: str, free: int) -> Node:
        return Node(node_id=node_id, ram_total_bytes=8 << 30, ram_free_bytes=8 << 30,
                    gpus=[GPU(index=0, total_bytes=total, free_bytes=free)])

    inventory = Inventory(nodes=[node(two_nodes.head_id, total - need // 10), node(two_nodes.second_id, total)])
    set_fake_inventory(inventory)
    yield inventory
    set_fake_inventory(None)


@pytest.fixture(autouse=True)
async def empty_registry(two_nodes):
    yield
    await asyncio.wait_for(aio.unload(), GUARD_S)


def hf(tiny_hf_dir, **options) -> aio.AsyncTextClient:
    return aio.client(f"hf:{tiny_hf_dir}", **options)


async def where_it_runs(client: aio.AsyncTextClient):
    """The model actor's own word: its MeasuredUse (node id, pid, GPUs Ray granted)."""
    actor = await asyncio.wait_for(backend_for(client._load).actor(), GUARD_S)
    info = await asyncio.wait_for(actor.info.remote(), GUARD_S)
    return info["use"]


def gpus_free_per_node() -> dict[str, float]:
    return {node_id: resources.get("GPU", 0.0)
            for node_id, resources in ray._private.state.available_resources_per_node().items()}


async def wait_for_gpus(expected: dict[str, float]) -> dict[str, float]:
    """Ray's per-node availability, once it matches (its resource view lags a scheduling decision slightly)."""
    deadline = time.monotonic() + GUARD_S
    while True:
        free = gpus_free_per_node()
        if all(free.get(n, 0.0) == pytest.approx(v, abs=1e-3) for n, v in expected.items()) \
                or time.monotonic() > deadline:
            return free
        await asyncio.sleep(0.2)


async def test_the_second_model_spills_to_the_other_node(tiny_hf_dir, two_nodes, one_model_per_gpu):
    first, second = (hf(tiny_hf_dir, max_batch_size=size, pin=True) for size in (2, 4))   # two loads of one folder
    for client in (first, second):                # one after the other: the first's share is then reserved
        assert isinstance(await asyncio.wait_for(client.chat("hello", generate_kwargs=GREEDY), GUARD_S), str)

    rows = {row.key: row for row in await asyncio.wait_for(aio.placements(), GUARD_S)}
    assert len(rows) == 2
    first_row, second_row = rows[first._load.key()], rows[second._load.key()]
    assert (first_row.node_id, second_row.node_id) == (two_nodes.head_id, two_nodes.second_id)
    assert "Rejected" in second_row.reason and two_nodes.head_id in second_row.reason   # why not the head
    for client, row in ((first, first_row), (second, second_row)):
        assert row.state == "ready" and row.num_gpus == pytest.approx(0.67)
        assert row.gpu_indices == [0] and row.gpu_ids == [0]      # each node's one logical GPU
        use = await where_it_runs(client)
        assert use.node_id == row.node_id                          # Ray's node affinity followed the placement
        assert os.getsid(use.pid) == two_nodes.session_of(row.node_id)   # a process of that node's raylet

    free = await wait_for_gpus({two_nodes.head_id: 0.33, two_nodes.second_id: 0.33})
    assert free[two_nodes.head_id] == pytest.approx(0.33)
    assert free[two_nodes.second_id] == pytest.approx(0.33)

    # both still answer, each from its own node
    answers = await asyncio.wait_for(asyncio.gather(first.generate("a", generate_kwargs=GREEDY),
                                                    second.generate("b", generate_kwargs=GREEDY)), GUARD_S)
    assert all(isinstance(answer, str) for answer in answers)

    # a third load finds both GPUs taken by pinned models (nothing to evict), and the error names both nodes
    with pytest.raises(ValueError, match="Nothing fits") as refused:
        await asyncio.wait_for(hf(tiny_hf_dir, max_batch_size=8).chat("hi", generate_kwargs=GREEDY), GUARD_S)
    assert two_nodes.head_id in str(refused.value) and two_nodes.second_id in str(refused.value)
    assert str(refused.value).count("pinned") == 2
    assert len(await asyncio.wait_for(aio.placements(), GUARD_S)) == 2


async def test_a_node_pin_overrides_best_fit(tiny_hf_dir, two_nodes, one_model_per_gpu):
    pinned = hf(tiny_hf_dir, node_id=two_nodes.second_id)         # best fit alone would pick the head
    assert isinstance(await asyncio.wait_for(pinned.chat("hello", generate_kwargs=GREEDY), GUARD_S), str)
    [row] = await asyncio.wait_for(aio.placements(), GUARD_S)
    assert row.node_id == two_nodes.second_id and "node_id=" in row.reason
    use = await where_it_runs(pinned)
    assert use.node_id == two_nodes.second_id
    assert os.getsid(use.pid) == two_nodes.session_of(two_nodes.second_id)
    free = await wait_for_gpus({two_nodes.head_id: 1.0, two_nodes.second_id: 0.33})
    assert free[two_nodes.head_id] == pytest.approx(1.0)
    assert free[two_nodes.second_id] == pytest.approx(0.33)


async def test_unloading_gives_both_nodes_their_gpus_back(tiny_hf_dir, two_nodes, one_model_per_gpu):
    clients = [hf(tiny_hf_dir, max_batch_size=2), hf(tiny_hf_dir, max_batch_size=4)]
    for client in clients:
        await asyncio.wait_for(client.chat("hi", generate_kwargs=GREEDY), GUARD_S)
    assert {row.node_id for row in await asyncio.wait_for(aio.placements(), GUARD_S)} == \
           {two_nodes.head_id, two_nodes.second_id}
    assert len(await asyncio.wait_for(aio.unload(), GUARD_S)) == 2
    free = await wait_for_gpus({two_nodes.head_id: 1.0, two_nodes.second_id: 1.0})
    assert free == {two_nodes.head_id: pytest.approx(1.0), two_nodes.second_id: pytest.approx(1.0)}


@pytest.fixture
def two_copies_per_gpu(two_nodes, tiny_hf_dir):
    """Both real nodes, one GPU each with room for two tiny models: two copies could pack on one node's GPU."""
    need = need_for(load_for("hf", "text", str(tiny_hf_dir), {})).total_bytes
    total = int(need * 2.5)
    set_fake_inventory(Inventory(nodes=[Node(node_id=node_id, ram_total_bytes=8 << 30, ram_free_bytes=8 << 30,
                                             gpus=[GPU(index=0, total_bytes=total, free_bytes=total)])
                                        for node_id in (two_nodes.head_id, two_nodes.second_id)]))
    yield
    set_fake_inventory(None)


async def test_two_copies_spread_over_both_nodes_each_where_its_row_says(tiny_hf_dir, two_nodes, two_copies_per_gpu):
    client = hf(tiny_hf_dir, replicas=2, max_batch_size=3)
    answers = await asyncio.wait_for(asyncio.gather(*(client.generate(f"p{i}", generate_kwargs=GREEDY)
                                                      for i in range(8))), GUARD_S)
    assert all(isinstance(answer, str) for answer in answers)
    rows = {row.replica: row for row in await asyncio.wait_for(aio.placements(), GUARD_S)}
    assert sorted(rows) == [0, 1]
    assert {row.node_id for row in rows.values()} == {two_nodes.head_id, two_nodes.second_id}
    copies = await asyncio.wait_for(get_registry().replicas.remote(client._load.key()), GUARD_S)
    for copy in copies:
        info = await asyncio.wait_for(copy.info.remote(), GUARD_S)
        row = rows[info["replica"]]
        assert info["use"].node_id == row.node_id                  # Ray's node affinity followed each copy's row
        assert os.getsid(info["use"].pid) == two_nodes.session_of(row.node_id)
