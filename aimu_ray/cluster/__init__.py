"""The cluster: connecting to Ray (``connection``), GPU inventory (NVML per node), model sizing, and the placement
policy.

Placement is a pure function of a model's measured need and an inventory, so every rule here is
tested with made-up clusters on machines without a GPU; Ray only enforces the decision.
"""

from .eviction import Evictable, EvictionPlan, place_evicting
from .inventory import GPU, GPUProcess, Inventory, Node, current_inventory_override, read_local_node, set_fake_inventory
from .need import ModelNeed
from ..models.load import PlacementOptions
from .placement import Placement, PlacementError, place, reserve
from .sizing import size_diffusers_folder, size_gguf, size_hf_folder, size_model

__all__ = [
    "Evictable",
    "EvictionPlan",
    "GPU",
    "GPUProcess",
    "Inventory",
    "ModelNeed",
    "Node",
    "Placement",
    "PlacementError",
    "PlacementOptions",
    "current_inventory_override",
    "place",
    "place_evicting",
    "read_local_node",
    "reserve",
    "set_fake_inventory",
    "size_diffusers_folder",
    "size_gguf",
    "size_hf_folder",
    "size_model",
]
