"""Placement policy: (model need, load options, cluster inventory) → where the model goes, and why.

A pure function, so it is tested with made-up inventories on machines without a GPU. Following
GPUStack's scheduler, candidates go through small filters that each say in words why they reject a
GPU, the survivors are scored (best fit: least memory left over), and the decision carries a paragraph
naming every rejected candidate. Ray then enforces the decision with ``num_gpus`` fractions, node
affinity and the ``memory`` resource.

Tiers, tried in order (aimu's own order, section 7 of aimu-interface.md):
  1. the whole model on one GPU;
  2. text and GGUF models: several whole GPUs of one node with ``device_map="auto"`` (never across
     nodes: one process cannot span machines);
  3. images: model CPU offload (the largest component × 1.15 on the GPU), then sequential offload;
  4. no GPU in the inventory at all: the CPU of the node with the most free RAM.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Literal, Mapping, Optional, Protocol

from pydantic import BaseModel, Field

from ..models.load import PlacementOptions, Target
from .inventory import GPU, Inventory, Node
from .need import ModelNeed

GIB = 1024**3
MEMORY_MARGIN = 1.15  # aimu's headroom for activations and workspace on top of the weights
SEQUENTIAL_FLOOR_BYTES = GIB  # sequential offload streams layer by layer; the GPU still holds activations
MULTI_GPU_KINDS = ("text", "gguf")  # transformers and llama.cpp can split one model over GPUs

ReservedKey = tuple[str, Optional[int]]  # (node_id, gpu_index); gpu_index None means the node's RAM
Offload = Literal["model", "sequential"]


def gib(nbytes: float) -> str:
    """Bytes in the unit people read GPU memory in."""
    return f"{nbytes / GIB:.1f} GiB"


class PlacementError(ValueError):
    """No placement fits; the message says what would (more GPUs, a smaller dtype, offload, CPU)."""


class Placement(BaseModel):
    """Where one model goes, as Ray and aimu need it, with the reason in words.

    ``gpu_bytes`` is what this placement promises on each GPU of ``node_id`` (its ``num_gpus`` share,
    or the whole free memory of GPUs taken whole); feed it back through ``reserve`` so the next
    placement does not promise the same bytes again.
    """

    node_id: str
    gpu_indices: list[int] = Field(default_factory=list)
    num_gpus: float = 0.0
    memory_bytes: int = 0
    device: Literal["cuda", "cpu"]
    device_map: str | dict[str, Any] | None = None
    offload: Offload | None = None
    gpu_bytes: dict[int, int] = Field(default_factory=dict)
    reason: str

    def target(self) -> Target:
        """The part of the decision the engine loads by: device, device map, offload."""
        return Target(device=self.device, device_map=self.device_map, offload=self.offload)

    def reservations(self) -> dict[ReservedKey, int]:
        """Bytes this placement promises, keyed as ``place``'s ``reserved`` argument."""
        promised: dict[ReservedKey, int] = {(self.node_id, i): n for i, n in self.gpu_bytes.items()}
        if self.memory_bytes:
            promised[(self.node_id, None)] = self.memory_bytes
        return promised


def reserve(reserved: Mapping[ReservedKey, int], placement: Placement) -> dict[ReservedKey, int]:
    """``reserved`` plus what ``placement`` promises: the ledger for the next call to ``place``."""
    total = dict(reserved)
    for key, nbytes in placement.reservations().items():
        total[key] = total.get(key, 0) + nbytes
    return total


# ---------------------------------------------------------------------------------------------- slots


@dataclass(frozen=True)
class Slot:
    """One GPU as placement sees it: measured free memory less what earlier placements promised."""

    node: Node
    gpu: GPU
    free_bytes: int
    ram_free_bytes: int
    untouched: bool  # no earlier placement promised anything here, so Ray can still grant it whole

    @property
    def name(self) -> str:
        return f"node {self.node.node_id} GPU {self.gpu.index}"

    def share(self, nbytes: int, user_fraction: float | None) -> tuple[float, int]:
        """(num_gpus, bytes promised) to hold ``nbytes`` here.

        The fraction of this GPU's total is rounded up to 0.01 and the promise is that rounded share, so
        the fractions Ray adds up on a GPU never pass 1 while the bytes fit. A user's fraction wins for
        Ray but the promise never drops below the bytes the model needs.
        """
        if user_fraction is not None:
            return user_fraction, max(nbytes, math.ceil(user_fraction * self.gpu.total_bytes))
        hundredths = max(1, -(-nbytes * 100 // self.gpu.total_bytes))
        return hundredths / 100, -(-hundredths * self.gpu.total_bytes // 100)


def _ram_free(node: Node, reserved: Mapping[ReservedKey, int]) -> int:
    return node.ram_free_bytes - reserved.get((node.node_id, None), 0)


def _slots(nodes: list[Node], reserved: Mapping[ReservedKey, int], gpu_index: int | None) -> list[Slot]:
    return [
        Slot(node, gpu, gpu.free_bytes - reserved.get((node.node_id, gpu.index), 0), _ram_free(node, reserved),
             reserved.get((node.node_id, gpu.index), 0) <= 0)   # below 0: an evicted model's memory came back
        for node in nodes for gpu in node.gpus if gpu_index in (None, gpu.index)
    ]


# -------------------------------------------------------------------------------------------- filters


class SlotFilter(Protocol):
    def reject(self, slot: Slot) -> str | None:
        """Why ``slot`` cannot take the model, in words, or None when it can."""


@dataclass(frozen=True)
class HasRoom:
    """The GPU's effective free memory holds the promised share (other processes' memory is already out)."""

    gpu_bytes: int
    user_fraction: float | None

    def reject(self, slot: Slot) -> str | None:
        _, promised = slot.share(self.gpu_bytes, self.user_fraction)
        if promised <= slot.free_bytes:
            return None
        foreign = sum(p.used_bytes for p in slot.gpu.processes)
        held = f" ({gib(foreign)} held by {len(slot.gpu.processes)} processes)" if slot.gpu.processes else ""
        return f"{slot.name}: {gib(slot.free_bytes)} free{held}, needs {gib(promised)}"


@dataclass(frozen=True)
class HasRAM:
    """The node's RAM holds what offload keeps off the GPU."""

    ram_bytes: int

    def reject(self, slot: Slot) -> str | None:
        if self.ram_bytes <= slot.ram_free_bytes:
            return None
        return f"{slot.name}: node RAM {gib(slot.ram_free_bytes)} free, offload needs {gib(self.ram_bytes)}"


def select(slots: list[Slot], filters: list[SlotFilter]) -> tuple[list[Slot], list[str]]:
    """Slots every filter accepts, and the first rejection reason of each other slot."""
    kept, rejected = [], []
    for slot in slots:
        reason = next((r for f in filters if (r := f.reject(slot)) is not None), None)
        if reason is None:
            kept.append(slot)
        else:
            rejected.append(reason)
    return kept, rejected


def least_leftover(slot: Slot, promised: int) -> tuple[int, str, int]:
    """Best-fit score (lower wins): bytes left over, then node and index so ties are deterministic."""
    return slot.free_bytes - promised, slot.node.node_id, slot.gpu.index


def spread_then_fit(copies: Mapping[ReservedKey, int]) -> Callable[[Slot, int], tuple]:
    """Score for another copy of a model (lower wins): a GPU without a copy of it first, then a node with the
    fewest, then best fit. Copies spread over GPUs and nodes before they pack, so one lost GPU or node leaves the
    others serving, and copies do not share one GPU's compute."""
    per_node: dict[str, int] = {}
    for (node_id, _), count in copies.items():
        per_node[node_id] = per_node.get(node_id, 0) + count

    def score(slot: Slot, promised: int) -> tuple:
        here = copies.get((slot.node.node_id, slot.gpu.index), 0)
        return (here, per_node.get(slot.node.node_id, 0), *least_leftover(slot, promised))

    return score


# -------------------------------------------------------------------------------------------- tiers


@dataclass(frozen=True)
class Request:
    """Everything a tier needs to decide: the model, its bytes, the options, the candidate GPUs."""

    need: ModelNeed
    nbytes: int
    options: PlacementOptions
    slots: list[Slot]
    copies: Mapping[ReservedKey, int]   # where other copies of this model already run (GPU → how many)

    @property
    def device_map(self) -> str | dict[str, Any] | None:
        return self.options.device_map


Outcome = tuple[Optional[Placement], list[str]]  # a placement, or the reasons every candidate failed


def one_gpu(label: str, gpu_bytes: int, offload: Offload | None, ram_bytes: int) -> Callable[[Request], Outcome]:
    """A tier that puts ``gpu_bytes`` on the single best-fitting GPU and ``ram_bytes`` in its node's RAM."""

    def tier(request: Request) -> Outcome:
        fraction = request.options.num_gpus
        kept, rejected = select(request.slots, [HasRoom(gpu_bytes, fraction), HasRAM(ram_bytes)])
        if not kept:
            return None, rejected
        score = spread_then_fit(request.copies) if request.copies else least_leftover
        best = min(kept, key=lambda s: score(s, s.share(gpu_bytes, fraction)[1]))
        num_gpus, promised = best.share(gpu_bytes, fraction)
        fit = f"fewest copies of this model ({sum(request.copies.values())} elsewhere), then best fit" \
            if request.copies else "best fit"
        reason = (f"{label[:1].upper() + label[1:]} on {best.name}: {fit}, {gib(best.free_bytes)} free, "
                  f"promises {gib(promised)} "
                  f"(num_gpus={num_gpus:g} of {gib(best.gpu.total_bytes)}), leaves {gib(best.free_bytes - promised)}"
                  + (f"; {gib(ram_bytes)} of RAM for the offloaded weights" if ram_bytes else "") + ".")
        return Placement(node_id=best.node.node_id, gpu_indices=[best.gpu.index], num_gpus=num_gpus,
                         memory_bytes=ram_bytes, device="cuda", device_map=request.device_map, offload=offload,
                         gpu_bytes={best.gpu.index: promised}, reason=reason), rejected

    return tier


def several_gpus(request: Request) -> Outcome:
    """The fewest whole GPUs of one node whose free memory together holds the model, split by ``device_map``.

    Ray grants whole GPUs only when no fractional actor sits on them, so GPUs promised to earlier
    placements are left out, and the GPUs taken are promised entirely.
    """
    count = int(request.options.num_gpus) if request.options.num_gpus else None
    groups, rejected = [], []
    for node in dict.fromkeys(s.node.node_id for s in request.slots):
        free = sorted((s for s in request.slots if s.node.node_id == node and s.untouched),
                      key=lambda s: (-s.free_bytes, s.gpu.index))
        group = _fewest_covering(free, request.nbytes, count)
        if group is None:
            wanted = f"{count} " if count else ""
            rejected.append(f"node {node}: {len(free)} unshared GPUs with {gib(sum(s.free_bytes for s in free))} "
                            f"free together, {wanted}GPUs need {gib(request.nbytes)}")
        else:
            groups.append(group)
    if not groups:
        return None, rejected
    best = min(groups, key=lambda g: (len(g), sum(s.free_bytes for s in g) - request.nbytes, g[0].node.node_id))
    node_id, indices = best[0].node.node_id, sorted(s.gpu.index for s in best)
    together = sum(s.free_bytes for s in best)
    reason = (f"{len(best)} whole GPUs of node {node_id} (GPUs {', '.join(map(str, indices))}): "
              f"{gib(together)} free together for {gib(request.nbytes)}, split with device_map.")
    return Placement(node_id=node_id, gpu_indices=indices, num_gpus=float(len(best)), device="cuda",
                     device_map=request.device_map or "auto", gpu_bytes={s.gpu.index: s.free_bytes for s in best},
                     reason=reason), rejected


def _fewest_covering(free_desc: list[Slot], nbytes: int, count: int | None) -> list[Slot] | None:
    """The freest GPUs, as few as cover ``nbytes`` (or exactly ``count`` of them); None when they cannot."""
    if count is not None:
        group = free_desc[:count]
        return group if len(group) == count and sum(s.free_bytes for s in group) >= nbytes else None
    total = 0
    for n, slot in enumerate(free_desc, 1):
        total += slot.free_bytes
        if total >= nbytes:
            return free_desc[:n]
    return None


def tiers_for(request: Request) -> list[tuple[str, Callable[[Request], Outcome]]]:
    """The tiers to try, in aimu's order, given the model kind and what the user pinned."""
    need, options = request.need, request.options
    if options.num_gpus is not None and options.num_gpus > 1:
        return [(f"{int(options.num_gpus)} whole GPUs", several_gpus)]
    tiers = [("whole model on one GPU", one_gpu("whole model", request.nbytes, None, 0))]
    if need.kind in MULTI_GPU_KINDS and options.gpu_constraint is None and options.num_gpus is None:
        tiers.append(("several GPUs of one node", several_gpus))
    if need.kind == "image" and options.device_map is None:
        largest = math.ceil(need.largest_part_bytes * MEMORY_MARGIN)
        sequential = max(need.runtime_bytes, SEQUENTIAL_FLOOR_BYTES)
        tiers.append(("model CPU offload", one_gpu("model CPU offload", largest, "model", need.weights_bytes)))
        tiers.append(("sequential CPU offload",
                      one_gpu("sequential CPU offload", sequential, "sequential", need.weights_bytes)))
    return tiers


# ------------------------------------------------------------------------------------------------ CPU


def on_cpu(request: Request, nodes: list[Node], reserved: Mapping[ReservedKey, int], why: str) -> Placement:
    """The node with the most free RAM, reserving the model's bytes with Ray's ``memory`` resource."""
    best = max(nodes, key=lambda n: (_ram_free(n, reserved), n.node_id))
    free = _ram_free(best, reserved)
    if free < request.nbytes and not request.options.force:
        raise PlacementError(f"{request.need.model} needs {gib(request.nbytes)} of RAM on CPU ({why}); the node "
                             f"with the most free RAM, {best.node_id}, has {gib(free)}. Use a smaller dtype, or "
                             f"force=True to load anyway.")
    forced = " Forced: it does not fit." if free < request.nbytes else ""
    return Placement(node_id=best.node_id, memory_bytes=request.nbytes, device="cpu",
                     device_map=request.device_map,
                     reason=f"On the CPU of node {best.node_id} ({why}): most free RAM, {gib(free)}, reserves "
                            f"{gib(request.nbytes)} through Ray's memory resource.{forced}")


# ---------------------------------------------------------------------------------------------- place


def place(need: ModelNeed, inventory: Inventory, options: PlacementOptions | None = None,
          reserved: Mapping[ReservedKey, int] | None = None, copies: Mapping[ReservedKey, int] | None = None
          ) -> Placement:
    """Decide where ``need`` goes in ``inventory``, given bytes ``reserved`` by earlier placements.

    ``reserved`` maps (node_id, gpu_index) — or (node_id, None) for RAM — to bytes promised to actors
    that may not have allocated them yet, so two placements in a row never promise the same memory.
    ``copies`` counts the copies of this same model already placed per GPU: another copy spreads before it packs.
    Raises ``PlacementError`` when nothing fits, unless ``options.force`` is set.
    """
    options = options or PlacementOptions()
    reserved = reserved or {}
    nbytes = options.measured_bytes if options.measured_bytes is not None else need.total_bytes
    nodes = [n for n in inventory.nodes if options.node_id in (None, n.node_id)]
    if not nodes:
        known = ", ".join(n.node_id for n in inventory.nodes) or "none"
        raise PlacementError(f"no node {options.node_id!r} in the inventory (nodes: {known})")
    request = Request(need, nbytes, options, _slots(nodes, reserved, options.gpu_constraint), copies or {})
    header = f"{need.model} ({need.kind}, {need.dtype}) needs {gib(nbytes)}{_pinned(options)}."
    if options.wants_cpu:
        return _with_header(on_cpu(request, nodes, reserved, "device='cpu' requested"), header, [])
    if not any(n.gpus for n in nodes) and not options.wants_gpu:
        return _with_header(on_cpu(request, nodes, reserved, "no GPU in the inventory"), header, [])
    notes = []
    for label, tier in tiers_for(request):
        placement, rejected = tier(request)
        if placement is not None:
            return _with_header(placement, header, notes + _rejections(label, rejected))
        notes += _rejections(label, rejected)
    if options.force and request.slots:
        return _with_header(_forced(request), header, notes)
    raise PlacementError(_nothing_fits(request, nodes, header, notes))


def copies_that_fit(need: ModelNeed, inventory: Inventory, options: PlacementOptions | None = None,
                    reserved: Mapping[ReservedKey, int] | None = None,
                    copies: Mapping[ReservedKey, int] | None = None, most: int = 64) -> int:
    """How many more copies of ``need`` fit on GPUs in free memory now, at most ``most``: ``replicas="auto"``.

    Each copy is placed as the registry would place it (spreading from ``copies``, reserving its share before the
    next), so the count is what loading them one by one would get. It stops at the first copy that does not fit or
    would go to the CPU: a copy on the CPU adds no GPU throughput. ``force`` is ignored, since a forced copy does
    not fit; nothing is evicted.
    """
    options = (options or PlacementOptions()).model_copy(update={"force": False})
    reserved, copies = dict(reserved or {}), dict(copies or {})
    for count in range(most):
        try:
            placement = place(need, inventory, options, reserved, copies)
        except PlacementError:
            return count
        if placement.device != "cuda":
            return count
        reserved = reserve(reserved, placement)
        for index in placement.gpu_indices:
            copies[(placement.node_id, index)] = copies.get((placement.node_id, index), 0) + 1
    return most


def _pinned(options: PlacementOptions) -> str:
    pins = [f"{k}={v!r}" for k, v in options.model_dump(exclude_defaults=True).items()]
    return f", with {', '.join(pins)}" if pins else ""


def _rejections(label: str, rejected: list[str]) -> list[str]:
    return [f"{label}: {'; '.join(rejected)}"] if rejected else []


def _with_header(placement: Placement, header: str, notes: list[str]) -> Placement:
    rejected = f" Rejected — {' | '.join(notes)}." if notes else ""
    return placement.model_copy(update={"reason": f"{header} {placement.reason}{rejected}"})


def _forced(request: Request) -> Placement:
    """``force=True``: the whole model on the freest allowed GPU although it does not fit."""
    slot = max(request.slots, key=lambda s: (s.free_bytes, s.node.node_id, -s.gpu.index))
    num_gpus, promised = slot.share(min(request.nbytes, slot.gpu.total_bytes), request.options.num_gpus)
    return Placement(node_id=slot.node.node_id, gpu_indices=[slot.gpu.index], num_gpus=min(num_gpus, 1.0),
                     device="cuda", device_map=request.device_map, gpu_bytes={slot.gpu.index: promised},
                     reason=f"Forced onto {slot.name} with {gib(slot.free_bytes)} free although it does not fit; "
                            f"loading may run out of memory.")


def _nothing_fits(request: Request, nodes: list[Node], header: str, notes: list[str]) -> str:
    """Why nothing fits, what the largest node offers, and which options would help."""
    if not request.slots:
        return f"{header} No GPU matches the options; drop gpu_index/device, or use device='cpu'."
    by_node = {n.node_id: [s for s in request.slots if s.node.node_id == n.node_id] for n in nodes}
    node_id, slots = max(by_node.items(), key=lambda kv: sum(s.free_bytes for s in kv[1]))
    together = sum(s.free_bytes for s in slots)
    sizes = sorted({gib(s.gpu.total_bytes) for s in slots})
    offer = (f"The largest node, {node_id}, has {len(slots)}×{'/'.join(sizes)} GPUs with {gib(together)} free "
             f"together (the freest GPU {gib(max(s.free_bytes for s in slots))}) and "
             f"{gib(slots[0].ram_free_bytes)} RAM free.")
    hints = ["a smaller dtype or quantisation (e.g. 8-bit or 4-bit)", "device='cpu'"]
    if request.need.kind in MULTI_GPU_KINDS and together >= request.nbytes:
        hints.insert(0, f"num_gpus={_gpus_to_cover(slots, request.nbytes)} once those GPUs are not shared")
    if request.need.kind == "image":
        hints.insert(0, "CPU offload needs the RAM for the weights")
    return f"{header} Nothing fits. {offer} Try {', or '.join(hints)}. Rejected — {' | '.join(notes)}."


def _gpus_to_cover(slots: list[Slot], nbytes: int) -> int:
    total = 0
    for n, free in enumerate(sorted((s.free_bytes for s in slots), reverse=True), 1):
        total += free
        if total >= nbytes:
            return n
    return len(slots)
