"""The in-process models loaded on the cluster: where each runs and why (``placements``), what was evicted to
make room (``evictions``), how many copies of one fit now (``copies_that_fit``), and ``unload``.

Async here; ``aimu_ray.placements()`` / ``aimu_ray.evictions()`` / ``aimu_ray.unload()`` are the sync forms.
"""

from __future__ import annotations

import asyncio

from ..models.load import ModelLoad
from ..models.placements import Eviction, Placements


async def placements() -> Placements:
    """Every model actor and replica's row; ``RegistryUnavailableError`` if the registry does not answer within a
    few seconds (it restarts by itself and rebuilds its ledger), never a hang."""
    from ..hosts.registry import read_placements

    await _connected()
    return Placements(await read_placements())


async def set_gpu_memory_utilization(fraction: float) -> float:
    """Let placement use only ``fraction`` of each GPU's memory, cluster-wide (vLLM's ``gpu_memory_utilization``):
    room for processes outside aimu_ray, or a test of eviction on a GPU that is not full. Returns the fraction
    before. Models already placed stay; the registry keeps the setting until it restarts."""
    from ..cluster.connection import unwrapped
    from ..hosts.registry import get_registry
    from ray.exceptions import RayTaskError

    await _connected()
    try:
        return await get_registry().set_gpu_memory_utilization.remote(fraction)
    except RayTaskError as failure:
        raise unwrapped(failure) from None


async def evictions() -> list[Eviction]:
    """The idle models unloaded to make room for others, oldest first, each with what it freed and why (the latest
    few hundred since the registry started)."""
    from ..hosts.registry import read_evictions

    await _connected()
    return (await read_evictions())[0]


async def unload(model: str | None = None, *, grace_s: float = 30.0) -> list[str]:
    """Unload the models matching ``model`` ("hf:org/name", or an actor key), or every model; returns their names.

    New requests wait for a fresh load; requests in flight get ``grace_s`` seconds to finish, then fail with
    ``ModelUnloadedError``. Nothing is loaded again unless a new request asks for it.
    """
    from ..backends import reset_backends
    from ..hosts.registry import get_registry

    await _connected()
    unloaded = await get_registry().unload.remote(model, grace_s)
    reset_backends(pool=False)      # this process's handles to those actors point at nothing now
    return unloaded


async def copies_that_fit(load: ModelLoad, most: int = 64) -> int:
    """``replicas="auto"``: the copies of ``load`` already loaded plus those that fit in free GPU memory now, never
    evicting anything; at most ``most``, and at least 1, since one copy loads anyway (evicting if it must)."""
    from ..cluster.connection import unwrapped
    from ..cluster.inventory import current_inventory_override
    from ..cluster.model_size import need_for
    from ..hosts.registry import get_registry
    from ray.exceptions import RayTaskError

    await _connected()
    need = await asyncio.to_thread(need_for, load)          # reads the model's files
    registry = get_registry()
    try:
        loaded = await registry.replicas.remote(load.key())
        room = await registry.room_for.remote(load, need, max(0, most - len(loaded)), current_inventory_override())
    except RayTaskError as failure:
        raise unwrapped(failure) from None
    return max(1, min(most, len(loaded) + room))


async def unload_provider(provider: str, model=None, *, grace_s: float = 30.0) -> list[str]:
    """Unload one provider's in-process models (aimu's ``clear_hf_cache`` / ``clear_llamacpp_cache``): ``model``
    (aimu's enum member, ``"<provider>:<id>"`` or a bare id), or all of them, every task. A model of another
    provider unloads nothing. Returns the models unloaded."""
    from ..models.model_string import parse_model_string

    if model is None:
        labels = sorted({row.model for row in await placements() if row.model.startswith(f"{provider}:")})
    else:
        bare = isinstance(model, str) and not model.startswith(f"{provider}:")
        ref = parse_model_string(f"{provider}:{model}" if bare else model)
        if ref.provider != provider:
            return []
        labels = [f"{provider}:{ref.model_id}"]
    unloaded = await asyncio.gather(*(unload(label, grace_s=grace_s) for label in labels))
    return [name for names in unloaded for name in names]


async def _connected() -> None:
    from ..cluster.connection import ensure_ray

    await asyncio.to_thread(ensure_ray)
