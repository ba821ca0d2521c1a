"""``cluster_view``: the dashboard's memory bars from an inventory and the registry's rows, without Ray."""

from __future__ import annotations

from aimu_ray.cluster import GPU, GPUProcess, Inventory, Node
from aimu_ray.deployments.cluster_view import cluster_view
from aimu_ray.models.placements import ModelPlacement

GiB = 1 << 30


def node(node_id: str, *gpus: GPU, ram_total: int = 64 * GiB, ram_free: int = 48 * GiB) -> Node:
    return Node(node_id=node_id, address="10.0.0.1", gpus=list(gpus), ram_total_bytes=ram_total,
                ram_free_bytes=ram_free)


def row(name: str, node_id: str, device: str = "cuda", gpus: tuple[int, ...] = (0,), reserved: int = 10 * GiB,
        vram: int | None = None, ram_added: int | None = None, replica: int = 0,
        state: str = "ready") -> ModelPlacement:
    return ModelPlacement(model=f"hf:org/{name}", task="text", key=name, replica=replica, state=state, node_id=node_id,
                          device=device, gpu_indices=list(gpus) if device == "cuda" else [], reserved_bytes=reserved,
                          used_vram_bytes=vram, used_bytes=vram if device == "cuda" else ram_added, in_flight=1,
                          name=name)


def test_each_gpu_holds_the_copies_placed_on_it_with_reservation_and_measured_use():
    inventory = Inventory(nodes=[node("a", GPU(index=0, total_bytes=80 * GiB, free_bytes=60 * GiB),
                                      GPU(index=1, total_bytes=80 * GiB, free_bytes=80 * GiB))])
    view = cluster_view(inventory, [row("chat", "a", reserved=20 * GiB, vram=15 * GiB),
                                    row("chat", "a", gpus=(1,), replica=1, state="loading")], made_up=False)
    [a] = view.nodes
    gpu0, gpu1, ram = a.devices
    assert (gpu0.kind, gpu0.index, gpu1.index, ram.kind, ram.index) == ("gpu", 0, 1, "ram", None)
    assert [(c.model, c.replica, c.reserved_bytes, c.used_bytes) for c in gpu0.copies] == [("chat", 0, 20 * GiB,
                                                                                         15 * GiB)]
    assert [(c.replica, c.state, c.used_bytes) for c in gpu1.copies] == [(1, "loading", None)]
    assert ram.copies == [] and view.elsewhere == [] and not view.made_up


def test_measured_free_memory_already_counts_what_copies_hold_so_only_the_unheld_promise_comes_off():
    gpu = GPU(index=0, total_bytes=80 * GiB, free_bytes=49 * GiB,     # 80 less 26 held by copies, 5 by a stranger
              processes=[GPUProcess(pid=7, used_bytes=5 * GiB)])
    view = cluster_view(Inventory(nodes=[node("a", gpu)]), [row("chat", "a", reserved=20 * GiB, vram=20 * GiB),
                                                           row("draw", "a", reserved=8 * GiB, vram=6 * GiB)],
                        made_up=False)
    device = view.nodes[0].devices[0]
    assert device.free_bytes == 49 * GiB
    assert device.available_bytes == 47 * GiB             # 2 GiB promised to `draw` and not yet held
    assert device.other_bytes == 5 * GiB                  # the stranger's


def test_a_made_up_inventory_sees_nothing_the_copies_hold_so_their_whole_share_comes_off():
    gpu = GPU(index=0, total_bytes=24 * GiB, free_bytes=24 * GiB)
    view = cluster_view(Inventory(nodes=[node("a", gpu)]), [row("chat", "a", reserved=10 * GiB, vram=0),
                                                           row("draw", "a", reserved=4 * GiB, vram=6 * GiB)],
                        made_up=True)
    device = view.nodes[0].devices[0]
    assert view.made_up and device.available_bytes == 24 * GiB - 10 * GiB - 6 * GiB and device.other_bytes == 0


def test_a_copy_on_the_cpu_shows_in_its_nodes_ram_with_the_ram_its_load_added():
    inventory = Inventory(nodes=[node("cpu-only", ram_total=32 * GiB, ram_free=20 * GiB)])
    view = cluster_view(inventory, [row("tiny", "cpu-only", device="cpu", reserved=1 * GiB, ram_added=GiB // 2)],
                        made_up=False)
    [ram] = view.nodes[0].devices
    assert ram.kind == "ram" and ram.total_bytes == 32 * GiB and ram.free_bytes == 20 * GiB
    assert [(c.model, c.reserved_bytes, c.used_bytes) for c in ram.copies] == [("tiny", GiB, GiB // 2)]
    assert ram.available_bytes == 20 * GiB - GiB // 2


def test_a_copy_over_several_gpus_is_split_evenly_over_them():
    inventory = Inventory(nodes=[node("a", *(GPU(index=i, total_bytes=80 * GiB, free_bytes=40 * GiB)
                                             for i in range(3)))])
    view = cluster_view(inventory, [row("big", "a", gpus=(0, 2), reserved=100 * GiB, vram=90 * GiB)], made_up=False)
    gpu0, gpu1, gpu2, _ = view.nodes[0].devices
    assert [(c.reserved_bytes, c.used_bytes) for c in gpu0.copies + gpu2.copies] == [(50 * GiB, 45 * GiB)] * 2
    assert gpu1.copies == []


def test_copies_on_a_node_or_gpu_the_inventory_lacks_are_listed_elsewhere_not_dropped():
    inventory = Inventory(nodes=[node("a", GPU(index=0, total_bytes=80 * GiB, free_bytes=80 * GiB))])
    view = cluster_view(inventory, [row("gone", "b"), row("ghost", "a", gpus=(3,))], made_up=False)
    assert sorted(c.model for c in view.elsewhere) == ["ghost", "gone"]
    assert all(device.copies == [] for device in view.nodes[0].devices)


def test_a_view_round_trips_through_json():
    inventory = Inventory(nodes=[node("a", GPU(index=0, total_bytes=80 * GiB, free_bytes=70 * GiB))])
    view = cluster_view(inventory, [row("chat", "a", vram=9 * GiB)], made_up=False)
    assert type(view).model_validate_json(view.model_dump_json()) == view
