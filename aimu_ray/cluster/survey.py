"""Read the inventory of the running Ray cluster: one small task pinned to each live node runs NVML there.

The only module of this package that touches Ray. A made-up inventory (``set_fake_inventory`` or
``AIMU_RAY_FAKE_INVENTORY``) replaces the survey, so placement runs the same on a laptop without GPUs.
"""

from __future__ import annotations

import asyncio

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from .inventory import Inventory, Node, current_inventory_override, read_local_node

SURVEY_TIMEOUT_S = 30.0


@ray.remote(num_cpus=0)
def _read_node(node_id: str, address: str) -> Node:
    return read_local_node(node_id, address)


async def survey() -> Inventory:
    """Every live node's GPUs and RAM, read on that node; a node that does not answer in time is left out."""
    override = current_inventory_override()
    if override is not None:
        return override
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    refs = [_read_node.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
            .remote(n["NodeID"], n.get("NodeManagerAddress", "")) for n in nodes]
    futures = [asyncio.wrap_future(ref.future()) for ref in refs]
    done, pending = await asyncio.wait(futures, timeout=SURVEY_TIMEOUT_S) if futures else (set(), set())
    for future in pending:
        future.cancel()
    return Inventory(nodes=[f.result() for f in futures if f in done and f.exception() is None])


def is_made_up() -> bool:
    return current_inventory_override() is not None


def live_node_ids() -> set[str]:
    return {n["NodeID"] for n in ray.nodes() if n.get("Alive")}
