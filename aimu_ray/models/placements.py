"""Rows of the placement table: one in-process model replica or actor, where it runs, memory promised against
memory measured, and why. The model registry makes them; ``placements()``, ``aimu-ray status``, the HTTP model
cards and ``/metrics`` read them."""

from __future__ import annotations

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
    name: str | None = None              # and the name its app serves the model under

    @property
    def shown_as(self) -> str:
        """How a table names the row: the served name, else the model string (a long path keeps its end)."""
        return self.name or _tail(self.model, MODEL_WIDTH)


MODEL_WIDTH = 36


class Placements(list):
    """A list of ``ModelPlacement`` that prints as a table, with each reason below its row.

    ``reserved`` is what placement promised: VRAM on a GPU, RAM through Ray's ``memory`` resource on a CPU;
    ``used`` is what the host measured: its VRAM on a GPU, the whole process's RAM on a CPU.
    """

    def __str__(self) -> str:
        if not self:
            return "No models loaded."
        header = (f"{'model':<{MODEL_WIDTH}} {'task':<6} {'state':<10} {'where':<22} {'share':>6} {'reserved':>10} "
                  f"{'used':>10}")
        lines = [header]
        for row in self:
            where = f"{row.node_id[:12]} {row.device}{row.gpu_ids or row.gpu_indices or ''}"
            used = row.used_vram_bytes if row.device == "cuda" else row.used_ram_bytes
            share = f"{row.num_gpus:.2f}" if row.device == "cuda" else "-"
            lines.append(f"{row.shown_as:<{MODEL_WIDTH}} {row.task:<6} {row.state[:10]:<10} {where[:22]:<22} "
                         f"{share:>6} {_size(row.reserved_bytes):>10} {_size(used):>10}")
            lines.append(f"    {row.reason}" + (f" ({row.note})" if row.note else ""))
        return "\n".join(lines)

    __repr__ = __str__


def _tail(model: str, width: int) -> str:
    """A model string cut to ``width`` inside, keeping its provider and the end of its path, so that paths
    that share a start stay apart: ``hf:…/models/smollm2-135m-instruct``."""
    if len(model) <= width:
        return model
    provider, _, rest = model.partition(":")
    return f"{provider}:…{rest[-(width - len(provider) - 2):]}"


def _size(nbytes: int | None) -> str:
    """GiB from 1 GiB up, MiB below: a CPU row's few MiB must not read as zero."""
    if nbytes is None:
        return "-"
    return f"{nbytes / 1024**3:.2f} GiB" if nbytes >= 1024**3 else f"{nbytes / 1024**2:.0f} MiB"
