"""``copies_that_fit`` (``replicas="auto"``) against made-up inventories: copies placed one after the other as the
registry places them, counted while they land on a GPU, never past ``most``."""

from __future__ import annotations

from aimu_ray.cluster import GPU, Inventory, ModelNeed, Node, PlacementOptions
from aimu_ray.cluster.placement import copies_that_fit

G = 1024**3


def one_node(*frees, total_gib=80, node_id="a"):
    gpus = [GPU(index=i, total_bytes=total_gib * G, free_bytes=int(f * G), used_bytes=int((total_gib - f) * G))
            for i, f in enumerate(frees)]
    return Inventory(nodes=[Node(node_id=node_id, gpus=gpus, ram_total_bytes=256 * G, ram_free_bytes=200 * G)])


def text(gib):
    return ModelNeed(model="llm", kind="text", weights_bytes=int(gib * G))


def test_copies_fill_every_gpu_with_room():
    assert copies_that_fit(text(10), one_node(25, 12)) == 3        # each copy promises 10.4 GiB: two, then one


def test_a_full_gpu_is_skipped():
    assert copies_that_fit(text(10), one_node(5, 21)) == 2
    assert copies_that_fit(text(10), one_node(40, 40), reserved={("a", 0): 35 * G}) == 3   # promised to others


def test_copies_already_placed_only_change_where_the_next_go():
    assert copies_that_fit(text(10), one_node(25, 12), copies={("a", 1): 1}) == 3


def test_no_gpu_or_cpu_asked_for_fits_none():
    assert copies_that_fit(text(1), Inventory(nodes=[Node(node_id="a", ram_total_bytes=64 * G,
                                                          ram_free_bytes=64 * G)])) == 0
    assert copies_that_fit(text(1), one_node(80), PlacementOptions(device="cpu")) == 0


def test_nothing_fits_and_force_does_not_make_it_fit():
    assert copies_that_fit(text(100), one_node(40)) == 0
    assert copies_that_fit(text(100), one_node(40), PlacementOptions(force=True)) == 0


def test_a_copy_split_over_whole_gpus_counts_once():
    assert copies_that_fit(text(70), one_node(40, 40)) == 1


def test_most_caps_the_count():
    assert copies_that_fit(text(1), one_node(80, 80)) == 64
    assert copies_that_fit(text(1), one_node(80), most=5) == 5
    assert copies_that_fit(text(1), one_node(80), most=0) == 0

