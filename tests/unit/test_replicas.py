"""Copies of one model without Ray: the replica settings, where another copy goes, and which copy a request takes."""

from __future__ import annotations

import time
from collections import Counter

import pytest

from aimu_ray.backends.model import ModelBackend
from aimu_ray.cluster import GPU, Inventory, ModelNeed, Node, PlacementError, place
from aimu_ray.models.load import ModelLoad, Replicas, load_for

G = 1024**3
NEED = ModelNeed(model="m", kind="text", weights_bytes=4 * G)


def test_replicas_is_a_fixed_count_or_a_range_and_not_part_of_the_model_s_identity():
    fixed = load_for("hf", "text", "org/m", {"replicas": 4})
    ranged = load_for("hf", "text", "org/m", {"min_replicas": 1, "max_replicas": 8, "target_in_flight": 2})
    assert (fixed.replicas.min_replicas, fixed.replicas.max_replicas, fixed.replicas.scales) == (4, 4, False)
    assert (ranged.replicas.min_replicas, ranged.replicas.max_replicas, ranged.replicas.scales) == (1, 8, True)
    assert load_for("hf", "text", "org/m", {"min_replicas": 3}).replicas.max_replicas == 3
    pinned = load_for("hf", "text", "org/m", {"pin": True})
    assert fixed.key() == ranged.key() == pinned.key() == load_for("hf", "text", "org/m", {}).key()
    assert fixed.actor_name(0) != fixed.actor_name(1) and pinned.pin


@pytest.mark.parametrize("bad, message", [({"replicas": 0}, "1 or more"),
                                          ({"min_replicas": 3, "max_replicas": 2}, "above max_replicas"),
                                          ({"replicas": 2, "min_replicas": 1}, "not both"),
                                          ({"min_replicas": 0}, "greater than or equal to 1"),
                                          ({"replicas": 2, "target_in_flight": 0}, "greater than 0")])
def test_bad_replica_settings_say_what_is_wrong(bad, message):
    with pytest.raises(ValueError, match=message):
        load_for("hf", "text", "org/m", bad)


def two_nodes(gpus: int) -> Inventory:
    return Inventory(nodes=[Node(node_id=f"n{n}", ram_total_bytes=64 * G, ram_free_bytes=64 * G,
                                 gpus=[GPU(index=i, total_bytes=10 * G, free_bytes=(9 - i) * G) for i in range(gpus)])
                            for n in range(2)])


def test_another_copy_goes_to_a_gpu_without_one_before_it_packs():
    inventory = two_nodes(gpus=2)
    first = place(NEED, inventory)
    assert (first.node_id, first.gpu_indices) == ("n0", [1])          # best fit: the fullest GPU that holds it
    second = place(NEED, inventory, reserved=first.reservations(), copies={("n0", 1): 1})
    assert second.node_id == "n1"                                     # another node before another GPU of n0
    assert "fewest copies of this model (1 elsewhere)" in second.reason
    copies = {("n0", 1): 1, ("n1", 1): 1}
    third = place(NEED, inventory, copies=copies, reserved={**first.reservations(), **second.reservations()})
    assert third.gpu_indices == [0]                                   # a GPU without a copy, though a worse fit
    without_spread = place(NEED, inventory, reserved=first.reservations())
    assert (without_spread.node_id, without_spread.gpu_indices) == ("n0", [1])   # other models pack as before


class Copy:
    """Stands for a copy's actor handle: only its id is read."""

    def __init__(self, n: int) -> None:
        self._actor_id = bytes([n]) * 16


def backend_with(loads: list[int]) -> tuple[ModelBackend, list[Copy]]:
    backend = ModelBackend(ModelLoad(provider="hf", task="text", model_id="m", replicas=Replicas(min_replicas=3,
                                                                                                 max_replicas=3)))
    copies = [Copy(n) for n in range(len(loads))]
    backend._copies, backend._refreshed_at = list(copies), time.monotonic() + 3600   # no refresh from a registry
    backend._in_flight = {copy._actor_id.hex(): load for copy, load in zip(copies, loads) if load}
    return backend, copies


async def test_a_request_goes_to_the_less_loaded_of_two_copies_and_never_to_the_busiest():
    backend, copies = backend_with([5, 0, 3])
    chosen = Counter([(await backend.actor()) for _ in range(300)])
    assert copies[0] not in chosen                                    # loses every pair it is drawn in
    assert chosen[copies[1]] > chosen[copies[2]] > 0                  # wins every pair vs. only the pair (0, 2)


async def test_requests_in_flight_are_counted_per_copy_and_let_go():
    backend, copies = backend_with([0, 0])
    with backend._counted(copies[0]):
        assert backend.in_flight() == {copies[0]._actor_id.hex(): 1}
        assert await backend.actor() is copies[1]
    assert backend.in_flight() == {}


def test_a_memory_cap_leaves_placement_only_its_share_of_each_gpu():
    inventory = two_nodes(gpus=1)            # 10 GiB GPUs, 9 GiB free: placement may use 10 GiB × utilization − 1
    capped = inventory.capped(0.5)
    assert [g.free_bytes for n in capped.nodes for g in n.gpus] == [4 * G, 4 * G]   # 5 GiB kept back of each
    assert inventory.capped(1.0) is inventory and inventory.capped(0.95).nodes[0].gpus[0].free_bytes == 9 * G - G // 2
    assert capped.nodes[0].gpus[0].total_bytes == 10 * G
    with pytest.raises(PlacementError):
        place(ModelNeed(model="m", kind="text", weights_bytes=9 * G // 2), capped)
