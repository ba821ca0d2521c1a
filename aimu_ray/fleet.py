"""The in-process models loaded on the cluster: where each runs and why (``placements``), and ``unload``.

Async here; ``aimu_ray.placements()`` / ``aimu_ray.unload()`` are the sync forms.
"""

from __future__ import annotations

import asyncio

from pydantic import BaseModel


class ModelPlacement(BaseModel):
    """One loaded model: its node and GPU share, memory reserved against memory measured, and the reason."""

    model: str
    task: str
    key: str
    state: str
    node_id: str
    device: str
    gpu_indices: list[int] = []
    gpu_ids: list[int] = []              # the GPUs Ray actually gave the actor
    num_gpus: float = 0.0
    offload: str | None = None
    need_bytes: int = 0
    reserved_bytes: int = 0
    used_vram_bytes: int | None = None
    used_ram_bytes: int | None = None
    in_flight: int | None = None
    idle_s: float | None = None
    load_s: float | None = None
    note: str = ""
    reason: str = ""
    deployment: str | None = None        # set for a Serve replica: the deployment it belongs to


class Placements(list):
    """A list of ``ModelPlacement`` that prints as a table, with each reason below its row."""

    def __str__(self) -> str:
        if not self:
            return "No models loaded."
        header = f"{'model':<40} {'task':<6} {'state':<10} {'where':<22} {'share':>6} {'reserved':>10} {'used':>10}"
        lines = [header]
        for row in self:
            where = f"{row.node_id[:12]} {row.device}{row.gpu_ids or row.gpu_indices or ''}"
            used = _gib(row.used_vram_bytes if row.device == "cuda" else row.used_ram_bytes)
            lines.append(f"{row.model[:40]:<40} {row.task:<6} {row.state[:10]:<10} {where[:22]:<22} "
                         f"{row.num_gpus:>6.2f} {_gib(row.reserved_bytes):>10} {used:>10}")
            lines.append(f"    {row.reason}" + (f" ({row.note})" if row.note else ""))
        return "\n".join(lines)

    __repr__ = __str__


def _gib(nbytes: int | None) -> str:
    return "-" if nbytes is None else f"{nbytes / 1024**3:.2f} GiB"


async def placements() -> Placements:
    registry = await _registry()
    rows = await registry.placements.remote()
    return Placements(ModelPlacement(**row) for row in rows)


async def unload(model: str | None = None, *, grace_s: float = 30.0) -> list[str]:
    """Unload the models matching ``model`` ("hf:org/name", or an actor key), or every model; returns their names.

    New requests wait for a fresh load; requests in flight get ``grace_s`` seconds to finish, then fail with
    ``ModelUnloadedError``. Nothing is loaded again unless a new request asks for it.
    """
    from .actors.model_backend import reset_model_backends

    registry = await _registry()
    unloaded = await registry.unload.remote(model, grace_s)
    reset_model_backends()          # this process's handles to those actors point at nothing now
    return unloaded


async def _registry():
    from .actors.registry import get_registry
    from .runtime import ensure_ray

    await asyncio.to_thread(ensure_ray)
    return get_registry()
