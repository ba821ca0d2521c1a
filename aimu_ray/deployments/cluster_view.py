"""``GET /v1/cluster``: each node's GPUs and RAM, with what every model copy of the app reserved and holds there.

A pure function of the inventory (measured by NVML and psutil, or made up) and the registry's rows, so the
dashboard's memory bars are tested without Ray. A copy over several GPUs (``device_map``) is split evenly over
them: its row carries only the sum. ``available_bytes`` is what placement could still promise: a measured
inventory already counts what the copies hold, so only the part of a reservation not yet held comes off its
free memory; a made-up one sees none of it, so the whole of each copy comes off.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from ..cluster.inventory import Inventory
from ..models.placements import ModelPlacement


class CopyView(BaseModel):
    """One model copy's share of one device."""

    model: str                           # the name the app serves it under
    replica: int
    state: str
    reserved_bytes: int                  # what placement promised it here
    used_bytes: int | None               # what it measured holding here (None until it has loaded)
    in_flight: int | None = None


class DeviceView(BaseModel):
    """A GPU, or a node's RAM (``kind == "ram"``, for the copies placed on its CPU)."""

    kind: Literal["gpu", "ram"]
    index: int | None = None             # the GPU's index, as NVML numbers them
    total_bytes: int
    free_bytes: int                      # measured (or made up): what the device reported free
    available_bytes: int                 # free memory no copy was promised: what placement could still give
    other_bytes: int                     # held by neither copy nor free: other processes, the driver, the OS
    copies: list[CopyView]


class NodeView(BaseModel):
    node_id: str
    address: str = ""
    devices: list[DeviceView]


class ClusterView(BaseModel):
    made_up: bool                        # the inventory is AIMU_RAY_FAKE_INVENTORY's, not measured
    nodes: list[NodeView]
    elsewhere: list[CopyView]            # copies on a node or GPU the inventory does not show (it left, or timed out)


def cluster_view(inventory: Inventory, rows: list[ModelPlacement], made_up: bool) -> ClusterView:
    """Each node's GPUs then its RAM, each with the copies placed there; rows are the registry's, named."""
    placed: dict[tuple[str, int | None], list[CopyView]] = {}
    for row in rows:
        for slot, copy in _shares(row):
            placed.setdefault(slot, []).append(copy)
    nodes = []
    for node in inventory.nodes:
        devices = [_device("gpu", gpu.index, gpu.total_bytes, gpu.free_bytes, placed.pop((node.node_id, gpu.index), []),
                           made_up) for gpu in node.gpus]
        devices.append(_device("ram", None, node.ram_total_bytes, node.ram_free_bytes,
                               placed.pop((node.node_id, None), []), made_up))
        nodes.append(NodeView(node_id=node.node_id, address=node.address, devices=devices))
    return ClusterView(made_up=made_up, nodes=nodes, elsewhere=[copy for copies in placed.values() for copy in copies])


def _shares(row: ModelPlacement) -> list[tuple[tuple[str, int | None], CopyView]]:
    """Where one row's memory is: each of its GPUs (VRAM), or its node's RAM."""
    on_gpu = row.device == "cuda" and bool(row.gpu_indices)
    indices: list[int | None] = list(row.gpu_indices) if on_gpu else [None]
    used = row.used_vram_bytes if on_gpu else row.used_bytes
    split = len(indices)
    return [((row.node_id, index), CopyView(model=row.name or row.model, replica=row.replica, state=row.state,
                                            reserved_bytes=row.reserved_bytes // split,
                                            used_bytes=None if used is None else used // split,
                                            in_flight=row.in_flight))
            for index in indices]


def _device(kind: Literal["gpu", "ram"], index: int | None, total: int, free: int, copies: list[CopyView],
            made_up: bool) -> DeviceView:
    held = sum(max(c.reserved_bytes, c.used_bytes or 0) for c in copies)
    unheld = sum(max(0, c.reserved_bytes - (c.used_bytes or 0)) for c in copies)
    available = max(0, free - (held if made_up else unheld))
    return DeviceView(kind=kind, index=index, total_bytes=total, free_bytes=free, available_bytes=available,
                      other_bytes=max(0, total - held - available), copies=copies)
