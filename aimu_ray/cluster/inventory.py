"""What each node holds: GPUs with their measured free memory, and RAM.

Free memory is read from NVML rather than taken from Ray's resource counters, so memory held by
processes outside Ray (another user's job, a desktop session) is seen and placement does not promise
it twice. Machines without a GPU can stand in for a cluster with a made-up inventory, set from Python
or from ``AIMU_RAY_FAKE_INVENTORY``.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, Field

FAKE_INVENTORY_ENV = "AIMU_RAY_FAKE_INVENTORY"


class GPUProcess(BaseModel):
    """A process holding GPU memory, in or out of Ray: shown in reasons so a user sees who holds what."""

    pid: int
    used_bytes: int = Field(default=0, ge=0)
    name: str = ""


class GPU(BaseModel):
    """One GPU as NVML reports it; ``free_bytes`` already excludes what every process holds."""

    index: int = Field(ge=0)
    total_bytes: int = Field(gt=0)
    free_bytes: int = Field(ge=0)
    used_bytes: int = Field(default=0, ge=0)
    processes: list[GPUProcess] = Field(default_factory=list)


class Node(BaseModel):
    """One machine of the cluster: its GPUs and its RAM."""

    node_id: str
    address: str = ""
    gpus: list[GPU] = Field(default_factory=list)
    ram_total_bytes: int = Field(ge=0)
    ram_free_bytes: int = Field(ge=0)


class Inventory(BaseModel):
    """Every node of the cluster at one moment: the input placement decides from."""

    nodes: list[Node] = Field(default_factory=list)

    def capped(self, utilization: float) -> Inventory:
        """The inventory as placement may use it when only ``utilization`` of each GPU's memory is aimu_ray's (vLLM's
        ``gpu_memory_utilization``, for the whole cluster): each GPU's free memory less the share kept back."""
        if utilization >= 1.0:
            return self
        return self.model_copy(update={"nodes": [node.model_copy(update={"gpus": [
            gpu.model_copy(update={"free_bytes": max(0, gpu.free_bytes - int(gpu.total_bytes * (1 - utilization)))})
            for gpu in node.gpus]}) for node in self.nodes]})


def read_local_node(node_id: str, address: str = "") -> Node:
    """This machine's GPUs (none when NVML or an NVIDIA driver is absent) and RAM."""
    total, free = _read_ram()
    return Node(node_id=node_id, address=address, gpus=_read_gpus(), ram_total_bytes=total, ram_free_bytes=free)


def _read_gpus() -> list[GPU]:
    """Every GPU NVML sees; an NVML error means no NVIDIA GPU or driver here, hence no GPUs."""
    import pynvml

    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return []
    try:
        return [_read_gpu(pynvml, i) for i in range(pynvml.nvmlDeviceGetCount())]
    finally:
        pynvml.nvmlShutdown()


def _read_gpu(pynvml, index: int) -> GPU:
    handle = pynvml.nvmlDeviceGetHandleByIndex(index)
    memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
    processes = [
        GPUProcess(pid=p.pid, used_bytes=p.usedGpuMemory or 0, name=_process_name(pynvml, p.pid))
        for p in pynvml.nvmlDeviceGetComputeRunningProcesses(handle)
    ]
    return GPU(index=index, total_bytes=memory.total, free_bytes=memory.free, used_bytes=memory.used,
               processes=processes)


def _process_name(pynvml, pid: int) -> str:
    """The process's name, or "" when NVML may not see it (another container, no permission)."""
    try:
        name = pynvml.nvmlSystemGetProcessName(pid)
    except pynvml.NVMLError:
        return ""
    return name.decode() if isinstance(name, bytes) else name


def _read_ram() -> tuple[int, int]:
    """(total, available) RAM in bytes: psutil when installed (it comes with Ray), else /proc/meminfo."""
    try:
        import psutil
    except ImportError:
        return _read_proc_meminfo()
    memory = psutil.virtual_memory()
    return memory.total, memory.available


def _read_proc_meminfo() -> tuple[int, int]:
    fields = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = int(value.split()[0]) * 1024  # values are in kB
    return fields["MemTotal"], fields.get("MemAvailable", fields["MemFree"])


_fake_inventory: Inventory | None = None


def set_fake_inventory(inventory: Inventory | None) -> None:
    """Stand in a made-up cluster for the measured one (tests, laptops); None goes back to measuring."""
    global _fake_inventory
    _fake_inventory = inventory


def current_inventory_override() -> Inventory | None:
    """The made-up inventory in force: the one set from Python first, else ``AIMU_RAY_FAKE_INVENTORY``.

    The variable holds either the JSON of an ``Inventory`` or a path to a file holding it, so it can be
    set on the command line or passed to Ray workers through ``runtime_env``.
    """
    if _fake_inventory is not None:
        return _fake_inventory
    value = os.environ.get(FAKE_INVENTORY_ENV, "").strip()
    if not value:
        return None
    text = value if value.startswith("{") else Path(value).read_text()
    return Inventory.model_validate_json(text)
