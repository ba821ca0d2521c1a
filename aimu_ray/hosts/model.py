"""One loaded in-process model, whatever hosts it: a ModelActor, a Serve replica, or a test.

``HostedModel`` loads the engine where placement put it (falling back to CPU when the process cannot
see CUDA), keeps a load failure to re-raise to whoever asks instead of crashing the host, measures the
memory the model really holds, and stands for the engine to its host's ``HostCore`` (``run`` / ``stream``
raise the load failure instead). The hosts add only what is theirs: naming, idle retirement and registry
reports for actors; deployment options and health for Serve.
"""

from __future__ import annotations

import logging
import os
import time
from typing import AsyncIterator

import ray
from pydantic import BaseModel

from ..engines import local_engine_class
from ..engines.base import Engine
from ..models.errors import ModelLoadError
from ..models.load import ModelLoad, Target

logger = logging.getLogger("aimu_ray")
NOSET_CUDA_VISIBLE_DEVICES = "RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES"   # Ray then leaves a process's GPUs to us


class MeasuredUse(BaseModel):
    """What the loaded model really holds, as its host measured it right after loading (and since)."""

    pid: int
    node_id: str
    gpu_ids: list[int]
    device: str
    offload: str | None = None   # "model" or "sequential" when weights wait in RAM for their turn on the GPU
    vram_bytes: int = 0          # the larger of torch's peak allocation and NVML's figure for this process
    torch_peak_bytes: int = 0
    nvml_bytes: int = 0
    ram_bytes: int = 0           # the whole process's RSS: Python, Ray and torch's own share included
    ram_added_bytes: int = 0     # the RSS the load added, read once: the engine's libraries were imported before
    load_s: float = 0.0
    note: str = ""

    @property
    def model_bytes(self) -> int:
        """What the model itself holds, the figure its estimate is held against: its VRAM on a GPU (plus the RAM
        its load added when weights are offloaded there), the RAM its load added on the CPU."""
        if self.device != "cuda":
            return self.ram_added_bytes
        return self.vram_bytes + (self.ram_added_bytes if self.offload else 0)


class HostedModel:
    """The engine of one ``ModelLoad`` on one ``Target``, loaded in the constructor."""

    def __init__(self, load: ModelLoad, target: Target) -> None:
        self.engine: Engine | None = None
        self.error: BaseException | None = None
        self.use: MeasuredUse | None = None
        started = time.perf_counter()
        target, note = _usable(target)
        try:
            logger.info("Loading %s on %s", load.label(), target.device)
            engine_type = local_engine_class(load)
            ram_before = _rss_bytes()          # torch & co. are imported by now: not counted as the model's
            self.engine = engine_type(load, target)
        except ImportError as error:          # its message already says what to install
            self.error = error
            return
        except Exception as error:            # kept: the caller that asked for the model sees it, typed
            self.error = ModelLoadError(f"Could not load {load.label()} on {target.device}: "
                                        f"{type(error).__name__}: {error}")
            self.error.__cause__ = error
            return
        self.use = _measure(target, time.perf_counter() - started, note, ram_before)

    def ready(self) -> MeasuredUse:
        """The measured use; raises the load error if loading failed."""
        if self.error is not None:
            raise self.error
        return self.use

    async def run(self, request):
        """The engine's whole answer: a ChatResult, ImageResult or AudioResult."""
        return await self._loaded().run(request)

    def stream(self, request) -> AsyncIterator:
        """The engine's stream: progress or deltas, ending in the answer."""
        return self._loaded().stream(request)

    def _loaded(self) -> Engine:
        self.ready()
        return self.engine

    def current_use(self) -> MeasuredUse | None:
        return self.use and self.use.model_copy(update=_current_use(self.use))

    def stats(self) -> dict | None:
        """The engine's own counters (batches run, rows served) when it keeps any."""
        stats = getattr(self.engine, "stats", None)
        if stats is None:
            return None
        if isinstance(stats, dict):
            return dict(stats)
        return stats.model_dump() if hasattr(stats, "model_dump") else dict(vars(stats))


def _usable(target: Target) -> tuple[Target, str]:
    """The target, or CPU when placement chose a GPU that torch cannot see (Ray's logical GPUs on a CPU machine)."""
    if target.device != "cuda" or _cuda_available():
        return target, ""
    note = "placed on a GPU share, but CUDA is not available in this process: running on CPU"
    logger.warning(note)
    return Target(device="cpu"), note


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def _measure(target: Target, load_s: float, note: str, ram_before: int) -> MeasuredUse:
    context = ray.get_runtime_context()
    use = MeasuredUse(pid=os.getpid(), node_id=context.get_node_id(), gpu_ids=_gpu_ids(),
                      device=target.device, offload=target.offload, load_s=load_s, note=note)
    current = _current_use(use)
    return use.model_copy(update={**current, "ram_added_bytes": max(0, current["ram_bytes"] - ram_before)})


def pinned_gpus(indices: list[int]) -> dict[str, str]:
    """The environment that puts a model's process on the GPUs placement chose. Ray hands a fractional share out on
    whichever GPU it likes, blind to the memory the ledger measured there; so Ray keeps counting the fraction, and
    the process sees the GPUs the decision named (numbered as NVML numbers them)."""
    return {NOSET_CUDA_VISIBLE_DEVICES: "1", "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
            "CUDA_VISIBLE_DEVICES": ",".join(map(str, indices))}


def _gpu_ids() -> list[int]:
    """The GPUs this process computes on: those placement pinned it to (the registry sets them and tells Ray to keep
    out), else those Ray granted."""
    pinned = os.environ.get("CUDA_VISIBLE_DEVICES", "") if os.environ.get(NOSET_CUDA_VISIBLE_DEVICES) == "1" else ""
    return [int(i) for i in pinned.split(",") if i.strip().isdigit()] or [int(i) for i in ray.get_gpu_ids()]


def _current_use(use: MeasuredUse) -> dict[str, int]:
    torch_peak = _torch_peak_bytes() if use.device == "cuda" else 0
    nvml = _nvml_process_bytes(use.pid)
    return {"torch_peak_bytes": torch_peak, "nvml_bytes": nvml, "vram_bytes": max(torch_peak, nvml),
            "ram_bytes": _rss_bytes()}


def _torch_peak_bytes() -> int:
    import torch

    return sum(torch.cuda.max_memory_allocated(i) for i in range(torch.cuda.device_count()))


def _nvml_process_bytes(pid: int) -> int:
    """GPU memory NVML sees this process holding on any GPU (CUDA context included); 0 without NVML."""
    import pynvml

    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return 0
    try:
        total = 0
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            total += sum(p.usedGpuMemory or 0 for p in pynvml.nvmlDeviceGetComputeRunningProcesses(handle)
                         if p.pid == pid)
        return total
    finally:
        pynvml.nvmlShutdown()


def _rss_bytes() -> int:
    import psutil

    return psutil.Process().memory_info().rss
