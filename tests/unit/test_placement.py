"""Placement policy against made-up inventories: fit, best fit, fragmentation, foreign memory, reservations,
offload tiers, CPU, overrides, rounding, fake inventories, and seeded random property checks."""

from __future__ import annotations

import json
import random

import pytest

from aimu_ray.cluster import (
    GPU, GPUProcess, Inventory, ModelNeed, Node, PlacementError, PlacementOptions, current_inventory_override, place,
    read_local_node, reserve, set_fake_inventory,
)
from aimu_ray.cluster.inventory import FAKE_INVENTORY_ENV

G = 1024**3


def gpu(index, free_gib, total_gib=80, processes=()):
    return GPU(index=index, total_bytes=total_gib * G, free_bytes=int(free_gib * G),
               used_bytes=int((total_gib - free_gib) * G), processes=list(processes))


def node(node_id, frees, ram_free_gib=200, total_gib=80):
    return Node(node_id=node_id, address=f"10.0.0.{len(node_id)}", gpus=[gpu(i, f, total_gib) for i, f in enumerate(frees)],
                ram_total_bytes=256 * G, ram_free_bytes=ram_free_gib * G)


def text(gib, name="llm"):
    return ModelNeed(model=name, kind="text", weights_bytes=int(gib * G))


def image(weights_gib, largest_gib, name="sd"):
    weights = int(weights_gib * G)
    return ModelNeed(model=name, kind="image", weights_bytes=weights, runtime_bytes=int(weights * 0.15),
                     largest_part_bytes=int(largest_gib * G))


def one_node(*frees, **kw):
    return Inventory(nodes=[node("a", list(frees), **kw)])


# ------------------------------------------------------------------------------------------ fit


def test_fit_on_the_only_gpu():
    p = place(text(10), one_node(80))
    assert (p.node_id, p.gpu_indices, p.device, p.offload, p.device_map) == ("a", [0], "cuda", None, None)
    assert p.num_gpus == 0.13  # 10/80 = 0.125 rounded up
    assert p.reason and "node a GPU 0" in p.reason


def test_best_fit_picks_least_left_over():
    p = place(text(18), one_node(12, 20, 79, 40))
    assert p.gpu_indices == [1]
    assert "node a GPU 0: 12.0 GiB free, needs 18.4 GiB" in p.reason  # 0.23 × 80 GiB promised


def test_foreign_processes_count_because_free_is_measured():
    held = GPUProcess(pid=42, used_bytes=70 * G, name="someone-elses-job")
    inv = Inventory(nodes=[Node(node_id="a", gpus=[gpu(0, 10, processes=[held]), gpu(1, 30)],
                                ram_total_bytes=64 * G, ram_free_bytes=64 * G)])
    p = place(text(20), inv)
    assert p.gpu_indices == [1]
    assert "70.0 GiB held by 1 processes" in p.reason


def test_rounding_up_to_a_hundredth_with_a_floor():
    assert place(text(0.001), one_node(80)).num_gpus == 0.01
    assert place(text(8), one_node(80)).num_gpus == 0.1
    assert place(text(8.01), one_node(80)).num_gpus == 0.11
    assert place(text(8), one_node(40, total_gib=40)).num_gpus == 0.2  # fraction of that GPU's total


# ------------------------------------------------------------------------------ several GPUs, nodes


def test_fragmentation_uses_several_gpus_of_one_node_never_across_nodes():
    inv = Inventory(nodes=[node("a", [30, 30]), node("b", [25, 25, 25])])
    p = place(text(70), inv)  # a has 60 free, b has 75: only b holds it, and 70 GiB fits no single GPU
    assert (p.node_id, p.gpu_indices, p.num_gpus, p.device_map) == ("b", [0, 1, 2], 3.0, "auto")
    assert "node a: 2 unshared GPUs with 60.0 GiB free together" in p.reason


def test_fewest_gpus_win():
    inv = Inventory(nodes=[node("a", [40, 40, 40]), node("b", [70, 70])])
    p = place(text(100), inv)
    assert (p.node_id, p.num_gpus) == ("b", 2.0)


def test_a_model_needing_several_gpus_takes_them_whole():
    p = place(text(150), one_node(80, 80, 80, 80))
    assert p.num_gpus == 2.0 and p.gpu_indices == [0, 1]
    assert p.gpu_bytes == {0: 80 * G, 1: 80 * G}


def test_several_nodes_best_fit_across_them():
    inv = Inventory(nodes=[node("a", [50, 60]), node("b", [21, 70])])
    assert (lambda p: (p.node_id, p.gpu_indices))(place(text(20), inv)) == ("b", [0])


def test_audio_never_splits():
    need = ModelNeed(model="musicgen", kind="audio", weights_bytes=60 * G)
    with pytest.raises(PlacementError):
        place(need, one_node(40, 40))


# ------------------------------------------------------------------------------------ reservations


def test_reserved_bytes_prevent_over_commit():
    inv = Inventory(nodes=[node("a", [80, 60, 30]), node("b", [50, 45])])
    reserved: dict = {}
    placements = []
    for i in range(10):
        p = place(text(12 + i, name=f"m{i}"), inv, reserved=reserved)
        placements.append(p)
        reserved = reserve(reserved, p)
    for n in inv.nodes:
        for g in n.gpus:
            assert reserved.get((n.node_id, g.index), 0) <= g.free_bytes
    fractions = {}
    for p in placements:
        for i in p.gpu_indices:
            fractions[(p.node_id, i)] = fractions.get((p.node_id, i), 0) + p.num_gpus / len(p.gpu_indices)
    assert all(f <= 1.0 + 1e-9 for f in fractions.values())  # Ray's own accounting holds too


def test_reserved_makes_a_full_gpu_unavailable():
    inv = one_node(40, 40)
    p = place(text(30), inv, reserved={("a", 0): 20 * G})
    assert p.gpu_indices == [1]


def test_shared_gpus_are_not_granted_whole():
    with pytest.raises(PlacementError, match="num_gpus=2 once those GPUs are not shared"):
        place(text(70), one_node(40, 40), reserved={("a", 0): 1 * G})


# ---------------------------------------------------------------------------------- image offload


def test_image_whole_then_model_offload_then_sequential():
    assert place(image(1.5, 1), one_node(20)).offload is None  # aimu's tiers: 20 GiB / [1, 1]
    p = place(image(16, 10), one_node(12))  # 12 GiB free / [10, 6] → model offload
    assert (p.offload, p.device, p.memory_bytes) == ("model", "cuda", 16 * G)
    assert place(image(22, 12), one_node(8)).offload == "sequential"  # 8 GiB / [10, 12]
    assert "model CPU offload: node a GPU 0" in place(image(22, 12), one_node(8)).reason


def test_offload_needs_ram_for_the_weights():
    with pytest.raises(PlacementError, match="offload needs 22.0 GiB"):
        place(image(22, 12), one_node(8, ram_free_gib=10))


def test_image_never_splits_over_gpus():
    assert place(image(30, 20), one_node(25, 25)).offload == "model"


# ------------------------------------------------------------------------------------------- CPU


def test_no_gpu_anywhere_goes_to_the_cpu_with_most_ram():
    inv = Inventory(nodes=[node("a", [], ram_free_gib=30), node("b", [], ram_free_gib=90)])
    p = place(text(14), inv)
    assert (p.node_id, p.device, p.num_gpus, p.memory_bytes, p.gpu_indices) == ("b", "cpu", 0.0, 14 * G, [])
    assert "no GPU in the inventory" in p.reason


def test_cpu_reservations_accumulate():
    inv = Inventory(nodes=[node("a", [], ram_free_gib=30), node("b", [], ram_free_gib=40)])
    first = place(text(20), inv)
    second = place(text(20), inv, reserved=reserve({}, first))
    assert (first.node_id, second.node_id) == ("b", "a")


def test_cpu_without_ram_fails_unless_forced():
    inv = Inventory(nodes=[node("a", [], ram_free_gib=8)])
    with pytest.raises(PlacementError, match="needs 14.0 GiB of RAM"):
        place(text(14), inv)
    assert place(text(14), inv, PlacementOptions(force=True)).device == "cpu"


# --------------------------------------------------------------------------------- nothing fits


def test_nothing_fits_says_what_would():
    inv = Inventory(nodes=[node("a", [80, 80, 80, 80]), node("b", [10])])
    with pytest.raises(PlacementError) as err:
        place(text(400), inv)
    message = str(err.value)
    assert isinstance(err.value, ValueError)
    assert "needs 400.0 GiB" in message
    assert "The largest node, a, has 4×80.0 GiB GPUs with 320.0 GiB free together" in message
    assert "smaller dtype" in message and "device='cpu'" in message
    assert "node b GPU 0: 10.0 GiB free" in message


# ------------------------------------------------------------------------------------- overrides


def test_device_cpu_override():
    p = place(text(10), one_node(80), PlacementOptions(device="cpu"))
    assert (p.device, p.memory_bytes) == ("cpu", 10 * G)


def test_device_cuda_index_pins_the_gpu():
    p = place(text(10), one_node(80, 20), PlacementOptions(device="cuda:1"))
    assert p.gpu_indices == [1]


def test_device_map_wins_over_device_and_passes_through():
    p = place(text(10), one_node(80, 20), PlacementOptions(device="cpu", device_map="balanced"))
    assert (p.device, p.device_map) == ("cuda", "balanced")


def test_users_fraction_wins_but_the_gpu_must_fit():
    p = place(text(10), one_node(12, 50), PlacementOptions(num_gpus=0.5))
    assert (p.num_gpus, p.gpu_indices) == (0.5, [1])  # 0.5 × 80 = 40 GiB promised: GPU 0 cannot
    assert p.gpu_bytes == {1: 40 * G}


def test_users_whole_gpu_count():
    p = place(text(10), one_node(80, 80, 80), PlacementOptions(num_gpus=2))
    assert (p.num_gpus, p.gpu_indices, p.device_map) == (2.0, [0, 1], "auto")


def test_fixed_placement_validated_then_forced():
    inv = Inventory(nodes=[node("a", [80]), node("b", [10, 60])])
    assert place(text(20), inv, PlacementOptions(node_id="b")).gpu_indices == [1]
    pinned = PlacementOptions(node_id="b", gpu_index=0)
    with pytest.raises(PlacementError, match="node b GPU 0: 10.0 GiB free, needs 20.0 GiB"):
        place(text(20), inv, pinned)
    p = place(text(20), inv, pinned.model_copy(update={"force": True}))
    assert (p.node_id, p.gpu_indices) == ("b", [0]) and "Forced" in p.reason


def test_unknown_node_or_gpu():
    with pytest.raises(PlacementError, match="no node 'z'"):
        place(text(1), one_node(80), PlacementOptions(node_id="z"))
    with pytest.raises(PlacementError, match="No GPU matches"):
        place(text(1), one_node(80), PlacementOptions(gpu_index=5))


def test_measured_bytes_replace_the_estimate():
    p = place(text(10), one_node(80, 30), PlacementOptions(measured_bytes=40 * G))
    assert (p.gpu_indices, p.num_gpus) == ([0], 0.5)


@pytest.mark.parametrize("kwargs", [{"num_gpus": 1.5}, {"device": "cuda:0", "gpu_index": 1},
                                    {"device": "cpu", "num_gpus": 0.5}, {"device": "tpu"}])
def test_inconsistent_options_are_refused(kwargs):
    with pytest.raises(ValueError):
        PlacementOptions(**kwargs)


# --------------------------------------------------------------------------------- inventories


def test_nvml_absent_gives_no_gpus_and_real_ram():
    local = read_local_node("here", "127.0.0.1")
    assert local.gpus == [] and local.node_id == "here"
    assert 0 < local.ram_free_bytes <= local.ram_total_bytes


def test_fake_inventory_from_python_and_env(monkeypatch, tmp_path):
    inv = one_node(80, 40)
    monkeypatch.delenv(FAKE_INVENTORY_ENV, raising=False)
    assert current_inventory_override() is None
    monkeypatch.setenv(FAKE_INVENTORY_ENV, inv.model_dump_json())
    assert current_inventory_override() == inv
    path = tmp_path / "inv.json"
    path.write_text(json.dumps(inv.model_dump()))
    monkeypatch.setenv(FAKE_INVENTORY_ENV, str(path))
    assert current_inventory_override() == inv
    other = one_node(10)
    set_fake_inventory(other)
    try:
        assert current_inventory_override() == other  # Python wins over the variable
    finally:
        set_fake_inventory(None)
    assert current_inventory_override() == inv


# ----------------------------------------------------------------------------------- properties


def random_inventory(rng: random.Random) -> Inventory:
    nodes = []
    for n in range(rng.randint(1, 4)):
        total = rng.choice([24, 40, 80])
        gpus = [gpu(i, rng.uniform(0, total), total) for i in range(rng.randint(0, 8))]
        nodes.append(Node(node_id=f"n{n}", gpus=gpus, ram_total_bytes=512 * G, ram_free_bytes=rng.randint(8, 512) * G))
    return Inventory(nodes=nodes)


def random_need(rng: random.Random) -> ModelNeed:
    kind = rng.choice(["text", "gguf", "image", "audio"])
    weights = int(rng.uniform(0.1, 200) * G)
    return ModelNeed(model="r", kind=kind, weights_bytes=weights, runtime_bytes=int(weights * rng.uniform(0, 0.3)),
                     largest_part_bytes=int(weights * rng.uniform(0.2, 1.0)))


def test_random_placements_never_over_commit():
    rng = random.Random(1234)
    for _ in range(300):
        inv = random_inventory(rng)
        reserved: dict = {}
        for _ in range(rng.randint(1, 6)):
            try:
                p = place(random_need(rng), inv, reserved=reserved)
            except PlacementError as err:
                assert str(err)
                continue
            assert p.reason
            gpus = {g.index: g for n in inv.nodes if n.node_id == p.node_id for g in n.gpus}
            if p.device == "cuda":
                assert 0 < p.num_gpus <= len(gpus)
                assert set(p.gpu_indices) <= set(gpus) and set(p.gpu_bytes) == set(p.gpu_indices)
            reserved = reserve(reserved, p)
        for n in inv.nodes:
            for g in n.gpus:
                assert reserved.get((n.node_id, g.index), 0) <= g.free_bytes
            assert reserved.get((n.node_id, None), 0) <= n.ram_free_bytes
