"""Rows of the placement table: one copy of an in-process model, where it runs, the memory estimated,
promised and measured, and why. The model registry makes them; ``placements()``, ``aimu-ray status``, the HTTP
model cards and ``/metrics`` read them."""

from __future__ import annotations

from pydantic import BaseModel, computed_field


class Eviction(BaseModel):
    """One idle model copy unloaded to make room for another, and why: what ``aimu-ray status`` and ``/metrics``
    count per model."""

    model: str
    replica: int = 0
    node_id: str
    gpu_indices: list[int] = []
    freed_bytes: int                     # what its going gave back: the larger of its share and its measured use
    idle_s: float                        # how long it had been without a request
    for_model: str                       # the model it made room for
    at: float                            # when (epoch seconds)
    reason: str


class ModelPlacement(BaseModel):
    """One loaded model: its node and GPU share, memory estimated, reserved and measured, and the reason."""

    model: str
    task: str
    key: str
    replica: int = 0                     # which copy of the model (replicas=N: 0 … N-1)
    pinned: bool = False                 # never evicted
    state: str
    node_id: str
    device: str
    gpu_indices: list[int] = []
    gpu_ids: list[int] = []              # the GPUs Ray actually gave the actor
    num_gpus: float = 0.0
    offload: str | None = None
    need_bytes: int = 0                  # the estimate: what sizing read from the weight files before loading
    reserved_bytes: int = 0              # what placement promised: VRAM on a GPU, RAM on the CPU
    used_bytes: int | None = None        # what the model measured holding: the figure the estimate is held against
    used_vram_bytes: int | None = None
    used_ram_bytes: int | None = None    # the whole hosting process's RSS, Python and torch included
    in_flight: int | None = None
    idle_s: float | None = None
    load_s: float | None = None
    note: str = ""
    reason: str = ""
    name: str | None = None              # the name an HTTP app serves the model under (its rows there)

    @computed_field
    @property
    def estimate_error_pct(self) -> float | None:
        """How far the measured use is from the estimate, in percent of the estimate (+25: a quarter more)."""
        return estimate_error_pct(self.need_bytes, self.used_bytes)

    @property
    def shown_as(self) -> str:
        """How a table names the row: the served name, else the model string (a long path keeps its end)."""
        return self.name or _tail(self.model, MODEL_WIDTH)


def estimate_error_pct(estimated: int | None, measured: int | None) -> float | None:
    """(measured − estimated) / estimated in percent, to 0.1; None when either is unknown or zero."""
    if not estimated or not measured:
        return None
    return round((measured - estimated) / estimated * 100, 1)


MODEL_WIDTH = 36
SIZE_WIDTH = 9


class Placements(list):
    """A list of ``ModelPlacement`` that prints as a table, with each reason below its row.

    ``estimate`` is the need sizing read from the weight files; ``reserved`` what placement promised: VRAM on a
    GPU, RAM through Ray's ``memory`` resource on a CPU; ``used`` what the model measured holding: its VRAM on a
    GPU, the RSS its load added on a CPU (not Python's and torch's own); ``error`` is used against estimate.
    """

    def __str__(self) -> str:
        if not self:
            return "No models loaded."
        lines = [f"{'model':<{MODEL_WIDTH}} {'task':<5} {'state':<10} {'where':<22} {'share':>5} "
                 f"{'estimate':>{SIZE_WIDTH}} {'reserved':>{SIZE_WIDTH}} {'used':>{SIZE_WIDTH}} {'error':>6}"]
        for row in self:
            where = f"{row.node_id[:12]} {row.device}{row.gpu_ids or row.gpu_indices or ''}"
            share = f"{row.num_gpus:.2f}" if row.device == "cuda" else "-"
            error = "-" if row.estimate_error_pct is None else f"{row.estimate_error_pct:+.0f}%"
            sizes = " ".join(f"{_size(n):>{SIZE_WIDTH}}" for n in (row.need_bytes, row.reserved_bytes, row.used_bytes))
            lines.append(f"{row.shown_as:<{MODEL_WIDTH}} {row.task:<5} {row.state[:10]:<10} {where[:22]:<22} "
                         f"{share:>5} {sizes} {error:>6}")
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
    """GiB from 1 GiB up, MiB below: a CPU row's few MiB must not read as zero; unknown (or nothing) is a dash."""
    if not nbytes:
        return "-"
    return f"{nbytes / 1024**3:.2f} GiB" if nbytes >= 1024**3 else f"{nbytes / 1024**2:.0f} MiB"
