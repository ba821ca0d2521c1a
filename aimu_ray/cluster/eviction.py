"""Eviction: when a model does not fit, which idle loaded models to unload so that it does.

The rule is memory, not a count of models per GPU: unload the least recently used idle models, as few as make
``place`` succeed, and of those only the ones holding memory where the model then goes; a model with requests in
flight, or pinned, stays. Pure, like ``place``, so it is tested with made-up inventories and replayed over a
simulated day against a count rule (benchmarks/eviction.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

from ..models.load import PlacementOptions
from .inventory import Inventory
from .need import ModelNeed
from .placement import Placement, PlacementError, ReservedKey, gib, place


@dataclass(frozen=True)
class Evictable:
    """One loaded model copy that could give its memory back."""

    ident: str                        # the ledger's id of that copy (an actor id)
    label: str                        # "hf:org/name", for messages
    frees: Mapping[ReservedKey, int]  # bytes each slot gets back when it goes: max(reservation, measured use)
    idle_s: float                     # seconds since its last request ended: larger is less recently used
    in_flight: int = 0                # requests running now: never evicted while any run
    pinned: bool = False              # pinned by the user: never evicted
    reason_kept: str | None = None    # any other reason it may not go ("same model"), None if it may

    @property
    def why_kept(self) -> str | None:
        """Why it may not go, in words, or None when it may."""
        if self.in_flight:
            return f"busy with {self.in_flight} requests"
        if self.pinned:
            return "pinned"
        return self.reason_kept


@dataclass(frozen=True)
class EvictionPlan:
    """Where the model goes once ``victims`` are unloaded (none when it fits as it is), and why they go."""

    placement: Placement
    victims: tuple[Evictable, ...]    # least recently used first
    reason: str                       # one sentence per victim


def frees_of(reservations: Mapping[ReservedKey, int], measured: Mapping[ReservedKey, int]) -> dict[ReservedKey, int]:
    """What unloading a copy gives back on each slot: its promise, or what it was measured holding when more."""
    keys = dict.fromkeys([*reservations, *measured])
    return {key: max(reservations.get(key, 0), measured.get(key, 0)) for key in keys}


def place_evicting(need: ModelNeed, inventory: Inventory, options: PlacementOptions | None,
                   reserved: Mapping[ReservedKey, int] | None, candidates: Sequence[Evictable],
                   copies: Mapping[ReservedKey, int] | None = None) -> EvictionPlan:
    """``place``, and when nothing fits, the least recently used idle ``candidates`` whose unloading makes it fit.

    The shortest prefix of the idle models, least recently used first, that makes room is found by binary search
    (room only grows as more memory comes back); victims holding nothing where the model then goes are spared.
    Raises ``PlacementError`` naming every holder and why it stays when even unloading all idle ones is not
    enough; nothing is evicted then.
    """
    options = options or PlacementOptions()
    reserved = reserved or {}
    try:
        return EvictionPlan(place(need, inventory, options, reserved, copies), (), "")
    except PlacementError as error:
        if options.force or not candidates:
            raise
        original = str(error)
    idle = sorted((c for c in candidates if c.why_kept is None), key=lambda c: (-c.idle_s, c.ident))
    fits = _fitting(need, inventory, options, reserved, idle, copies)
    if fits is None:
        raise PlacementError(f"{original} {_holders(candidates)}")
    victims, placement = fits
    used = _slots_of(placement)
    needed = tuple(v for v in victims if any(n > 0 and key in used for key, n in v.frees.items()))
    if needed != victims:
        kept = _try(need, inventory, options, reserved, needed, copies)
        if kept is not None and _same_slots(kept, placement):
            victims, placement = needed, kept
    return EvictionPlan(placement, victims, " ".join(_why_goes(v) for v in victims))


def _fitting(need: ModelNeed, inventory: Inventory, options: PlacementOptions, reserved: Mapping[ReservedKey, int],
             idle: list[Evictable], copies: Mapping[ReservedKey, int] | None
             ) -> tuple[tuple[Evictable, ...], Placement] | None:
    """The shortest least-recently-used prefix of ``idle`` whose memory makes ``need`` fit, with its placement."""
    if not idle:
        return None
    everything = _try(need, inventory, options, reserved, tuple(idle), copies)
    if everything is None:
        return None
    low, high, best = 1, len(idle), everything   # high fits; find the smallest that does
    while low < high:
        middle = (low + high) // 2
        placement = _try(need, inventory, options, reserved, tuple(idle[:middle]), copies)
        if placement is None:
            low = middle + 1
        else:
            high, best = middle, placement
    return tuple(idle[:high]), best


def _try(need: ModelNeed, inventory: Inventory, options: PlacementOptions, reserved: Mapping[ReservedKey, int],
         victims: tuple[Evictable, ...], copies: Mapping[ReservedKey, int] | None = None) -> Placement | None:
    """``place`` with what ``victims`` hold given back (a slot may go below zero: memory they held beyond promises)."""
    freed = dict(reserved)
    for victim in victims:
        for key, nbytes in victim.frees.items():
            freed[key] = freed.get(key, 0) - nbytes
    try:
        return place(need, inventory, options, freed, copies)
    except PlacementError:
        return None


def _slots_of(placement: Placement) -> set[ReservedKey]:
    slots: set[ReservedKey] = {(placement.node_id, i) for i in placement.gpu_indices}
    if placement.memory_bytes:
        slots.add((placement.node_id, None))
    return slots


def _same_slots(a: Placement, b: Placement) -> bool:
    return (_slots_of(a), a.device, a.offload) == (_slots_of(b), b.device, b.offload)


def _where(frees: Mapping[ReservedKey, int]) -> str:
    parts = [f"{gib(n)} on {'RAM' if gpu is None else f'GPU {gpu}'} of node {node}"
             for (node, gpu), n in sorted(frees.items(), key=lambda kv: (kv[0][0], kv[0][1] is None, kv[0][1] or 0))
             if n > 0]
    return ", ".join(parts) or "nothing"


def _why_goes(victim: Evictable) -> str:
    return (f"Evicts {victim.label} ({victim.ident}): idle for {victim.idle_s:.0f} s, frees "
            f"{_where(victim.frees)}.")


def _holders(candidates: Sequence[Evictable]) -> str:
    """Every loaded copy, what it holds and why it stays: the second half of a refusal."""
    order = sorted(candidates, key=lambda c: (-c.idle_s, c.ident))
    lines = [f"{c.label} ({c.ident}) holds {_where(c.frees)}: "
             + (c.why_kept or f"idle for {c.idle_s:.0f} s, but unloading every idle model is not enough")
             for c in order]
    return "Evicting every idle model would not make room. Loaded: " + "; ".join(lines) + "."
