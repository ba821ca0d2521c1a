"""Eviction against made-up inventories: no eviction when it fits, least recently used idle models first, pinned
and busy ones never, only victims where the model goes, a refusal naming every holder, measured use counted, and
a seeded comparison with a linear search over the same prefixes."""

from __future__ import annotations

import random

import pytest

from aimu_ray.cluster import (
    GPU, Evictable, Inventory, ModelNeed, Node, PlacementError, PlacementOptions, place, place_evicting,
)
from aimu_ray.cluster.eviction import frees_of

G = 1024**3


def one_node(*frees_gib):
    gpus = [GPU(index=i, total_bytes=80 * G, free_bytes=f * G) for i, f in enumerate(frees_gib)]
    return Inventory(nodes=[Node(node_id="a", gpus=gpus, ram_total_bytes=256 * G, ram_free_bytes=200 * G)])


def text(gib, name="new"):
    return ModelNeed(model=name, kind="text", weights_bytes=int(gib * G))


def loaded(ident, gib, idle_s, gpu=0, **kw):
    return Evictable(ident=ident, label=f"hf:org/{ident}", frees={("a", gpu): int(gib * G)}, idle_s=idle_s, **kw)


def ledger(*models):
    """``reserved`` as the registry would pass it: what every loaded model holds, per slot."""
    reserved: dict = {}
    for m in models:
        for key, n in m.frees.items():
            reserved[key] = reserved.get(key, 0) + n
    return reserved


def test_fits_as_it_is_evicts_nothing():
    idle = loaded("old", 30, idle_s=900)
    plan = place_evicting(text(20), one_node(80), None, ledger(idle), [idle])
    assert (plan.victims, plan.reason) == ((), "")
    assert plan.placement == place(text(20), one_node(80), None, ledger(idle))


def test_least_recently_used_idle_model_goes_first_and_no_more_than_needed():
    a, b, c = loaded("a", 30, idle_s=100), loaded("b", 30, idle_s=500), loaded("c", 10, idle_s=50)
    plan = place_evicting(text(25), one_node(80), None, ledger(a, b, c), [a, b, c])
    assert plan.victims == (b,)
    assert plan.reason == "Evicts hf:org/b (b): idle for 500 s, frees 30.0 GiB on GPU 0 of node a."
    plan = place_evicting(text(45), one_node(80), None, ledger(a, b, c), [a, b, c])
    assert plan.victims == (b, a)
    assert plan.placement.gpu_indices == [0]


def test_pinned_busy_and_kept_models_never_go_even_when_older():
    pinned = loaded("pinned", 20, idle_s=9000, pinned=True)
    busy = loaded("busy", 20, idle_s=8000, in_flight=2)
    same = loaded("same", 20, idle_s=7000, reason_kept="same model")
    young = loaded("young", 20, idle_s=10)
    models = [pinned, busy, same, young]
    plan = place_evicting(text(15), one_node(80), None, ledger(*models), models)
    assert plan.victims == (young,)


def test_only_victims_where_the_model_goes_are_returned():
    old = loaded("old", 20, idle_s=1000, gpu=0)      # frees GPU 0, which still cannot take 35 GiB
    busy = loaded("busy", 50, idle_s=0, gpu=0, in_flight=1)
    other = loaded("other", 60, idle_s=500, gpu=1)
    models = [old, busy, other]
    plan = place_evicting(text(35), one_node(80, 80), None, ledger(*models), models)
    assert plan.placement.gpu_indices == [1]
    assert plan.victims == (other,)                  # the older model on GPU 0 did not help, so it stays
    freed = {("a", 0): 70 * G, ("a", 1): 0}
    assert plan.placement == place(text(35), one_node(80, 80), None, freed)


def test_a_victim_is_spared_only_when_the_model_still_goes_to_the_same_gpu():
    spread = Evictable("v", "hf:org/v", {("a", 0): 30 * G, ("a", 1): 30 * G}, idle_s=500)
    models = [loaded("w", 10, idle_s=1000, gpu=1), spread,
              loaded("b0", 35, idle_s=0, gpu=0, in_flight=1), loaded("b1", 30, idle_s=0, gpu=1, in_flight=1)]
    plan = place_evicting(text(35), one_node(80, 80), None, ledger(*models), models)
    # w and v make room; the model goes to GPU 0, where w holds nothing, but without w it would go to GPU 1
    assert [v.ident for v in plan.victims] == ["w", "v"]
    assert plan.placement.gpu_indices == [0]


def test_a_model_needing_several_gpus_gets_them_whole():
    models = [loaded("p", 20, idle_s=300, gpu=0), loaded("q", 30, idle_s=200, gpu=1),
              loaded("r", 10, idle_s=900, gpu=2, in_flight=1), loaded("s", 40, idle_s=400, gpu=3)]
    plan = place_evicting(text(150), one_node(80, 80, 80, 80), None, ledger(*models), models)
    assert (plan.placement.gpu_indices, plan.placement.num_gpus) == ([0, 3], 2.0)
    assert [v.ident for v in plan.victims] == ["s", "p"]


def test_nothing_fits_even_evicting_every_idle_model_names_each_holder():
    models = [loaded("busy", 40, idle_s=600, in_flight=3), loaded("pinned", 20, idle_s=900, pinned=True),
              loaded("twin", 10, idle_s=800, reason_kept="same model"), loaded("idle", 5, idle_s=30)]
    with pytest.raises(PlacementError) as err:
        place_evicting(text(50), one_node(80), None, ledger(*models), models)
    message = str(err.value)
    assert message.startswith(str(_error_of(text(50), one_node(80), ledger(*models))))
    assert "hf:org/busy (busy) holds 40.0 GiB on GPU 0 of node a: busy with 3 requests" in message
    assert "hf:org/pinned (pinned) holds 20.0 GiB on GPU 0 of node a: pinned" in message
    assert "hf:org/twin (twin) holds 10.0 GiB on GPU 0 of node a: same model" in message
    assert "hf:org/idle (idle) holds 5.0 GiB on GPU 0 of node a: idle for 30 s, but unloading" in message


def test_with_nothing_loaded_the_refusal_is_placements_own():
    with pytest.raises(PlacementError) as err:
        place_evicting(text(90), one_node(80), None, {}, [])
    assert str(err.value) == str(_error_of(text(90), one_node(80), {}))


def test_force_places_without_evicting():
    idle = loaded("idle", 60, idle_s=999)
    forced = PlacementOptions(force=True)
    plan = place_evicting(text(30), one_node(80), forced, ledger(idle), [idle])
    assert plan.victims == () and "Forced" in plan.placement.reason
    no_such_gpu = PlacementOptions(force=True, gpu_index=3)
    with pytest.raises(PlacementError) as err:
        place_evicting(text(30), one_node(80), no_such_gpu, ledger(idle), [idle])
    assert "Loaded:" not in str(err.value)


def test_measured_use_above_the_reservation_is_what_comes_back():
    slot, ram = ("a", 0), ("a", None)
    assert frees_of({slot: 10 * G, ram: 2 * G}, {slot: 30 * G}) == {slot: 30 * G, ram: 2 * G}
    assert frees_of({slot: 30 * G}, {slot: 10 * G}) == {slot: 30 * G}
    measured = Evictable("m", "hf:org/m", frees_of({slot: 10 * G}, {slot: 30 * G}), idle_s=60)
    promised_only = Evictable("m", "hf:org/m", {slot: 10 * G}, idle_s=60)
    reserved = {slot: 60 * G}
    assert place_evicting(text(45), one_node(80), None, reserved, [measured]).victims == (measured,)
    with pytest.raises(PlacementError):
        place_evicting(text(45), one_node(80), None, reserved, [promised_only])


def test_binary_search_finds_what_a_linear_scan_finds():
    rng = random.Random(12)
    checked = 0
    for _ in range(200):
        gpus = rng.randint(1, 4)
        models = [loaded(f"m{i}", rng.randint(2, 40), idle_s=rng.randint(0, 5000), gpu=rng.randrange(gpus),
                         in_flight=int(rng.random() < 0.2)) for i in range(rng.randint(1, 12))]
        reserved = ledger(*models)
        inv = one_node(*[80] * gpus)
        need = text(rng.randint(5, 75))
        idle = sorted((m for m in models if not m.in_flight), key=lambda m: (-m.idle_s, m.ident))
        shortest = next((k for k in range(len(idle) + 1) if _error_of(need, inv, _minus(reserved, idle[:k])) is None),
                        None)
        if shortest is None:
            with pytest.raises(PlacementError):
                place_evicting(need, inv, None, reserved, models)
            continue
        plan = place_evicting(need, inv, None, reserved, models)
        assert {v.ident for v in plan.victims} <= {m.ident for m in idle[:shortest]}
        assert plan.placement == place(need, inv, None, _minus(reserved, plan.victims))
        checked += bool(plan.victims)
    assert checked > 20                              # the cases did exercise eviction


def _minus(reserved, victims):
    left = dict(reserved)
    for v in victims:
        for key, n in v.frees.items():
            left[key] -= n
    return left


def _error_of(need, inv, reserved):
    try:
        place(need, inv, None, reserved)
    except PlacementError as error:
        return error
    return None
