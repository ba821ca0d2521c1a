"""The model actor: one in-process model (HF text, llama.cpp, diffusers, HF audio) living in a Ray actor.

One actor per ``ModelLoad`` on the whole cluster, named after it and created only by the registry
(``actors.registry``), so every client that asks for the same model shares its weights. It serves
requests concurrently (the engines batch what can share a forward pass), streams incrementally,
measures the memory it really holds after loading and reports it, and retires itself after an idle
keep-alive so its GPU share goes back to the cluster.

A crash (the process dies) fails the requests in flight; Ray then restarts the actor, which loads the
model again. A load that raises (bad path, missing package) does not crash: ``ready()`` re-raises the
error, typed, to the caller that asked for the model.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from contextlib import aclosing, contextmanager
from typing import Any, AsyncIterator

import ray
from pydantic import BaseModel

from ..engines.inprocess import load_engine
from ..models.errors import ModelError, ModelLoadError
from ..models.load import ModelLoad, Target
from .streaming import coalesce

logger = logging.getLogger("aimu_ray")
CONTROL = "control"
MAX_IDLE_CHECK_S = 5.0


class ModelRetiredError(ModelError):
    """The actor was unloading when the request came; the caller asks the registry for a fresh one."""


class MeasuredUse(BaseModel):
    """What the loaded model really holds, as the actor measured it right after loading (and since)."""

    pid: int
    node_id: str
    gpu_ids: list[int]
    device: str
    vram_bytes: int = 0          # the larger of torch's peak allocation and NVML's figure for this process
    torch_peak_bytes: int = 0
    nvml_bytes: int = 0
    ram_bytes: int = 0
    load_s: float = 0.0
    note: str = ""


@ray.remote(concurrency_groups={CONTROL: 2})
class ModelActor:
    def __init__(self, load: ModelLoad, target: Target, registry_name: str, namespace: str) -> None:
        self._load = load
        self._registry = (registry_name, namespace)
        self._lock = threading.Lock()
        self._in_flight = 0
        self._last_used = time.monotonic()
        self._retiring = False
        self._engine: Any = None
        self._load_error: BaseException | None = None
        self._use: MeasuredUse | None = None
        started = time.perf_counter()
        target, note = _usable(target)
        try:
            logger.info("Loading %s on %s", load.label(), target.device)
            self._engine = load_engine(load, target)
        except ImportError as error:          # its message already says what to install
            self._load_error = error
            return
        except Exception as error:            # kept for ready(): the caller that asked for the model sees it
            self._load_error = ModelLoadError(f"Could not load {load.label()} on {target.device}: "
                                              f"{type(error).__name__}: {error}")
            self._load_error.__cause__ = error
            return
        self._use = _measure(target, time.perf_counter() - started, note)
        self._report()
        if load.keep_alive_s is not None:
            threading.Thread(target=self._watch_idle, name="aimu_ray-idle", daemon=True).start()

    @ray.method(concurrency_group=CONTROL)
    def ready(self) -> MeasuredUse:
        """Returns once the model is loaded (the registry awaits it); raises the load error if it failed."""
        if self._load_error is not None:
            raise self._load_error
        return self._use

    async def run(self, request):
        """One whole answer: a ChatResult, ImageResult or AudioResult."""
        with self._serving():
            call = self._engine.chat if self._load.task == "text" else self._engine.generate
            return await call(request)

    async def stream(self, request) -> AsyncIterator[list]:
        """The engine's stream in batches of what is ready (``streaming.coalesce``)."""
        with self._serving():
            async with aclosing(coalesce(self._engine.stream(request))) as batches:
                async for batch in batches:
                    yield batch

    @ray.method(concurrency_group=CONTROL)
    def info(self) -> dict:
        """The measured use now, requests in flight and idle time: a row of ``aimu_ray.placements()``."""
        use = self._use and self._use.model_copy(update=_current_use(self._use))
        return {"use": use, "in_flight": self._in_flight, "idle_s": time.monotonic() - self._last_used,
                "retiring": self._retiring, "engine": _stats(self._engine)}

    @ray.method(concurrency_group=CONTROL)
    def retire(self) -> int:
        """Refuse new requests from now on (the registry is unloading this model); returns those in flight."""
        with self._lock:
            self._retiring = True
            return self._in_flight

    @contextmanager
    def _serving(self):
        with self._lock:
            if self._retiring:
                raise ModelRetiredError(f"{self._load.label()} is being unloaded; ask for it again.")
            self._in_flight += 1
        try:
            yield
        finally:
            with self._lock:
                self._in_flight -= 1
                self._last_used = time.monotonic()

    def _registry_handle(self):
        name, namespace = self._registry
        return ray.get_actor(name, namespace=namespace)

    def _report(self) -> None:
        """Tell the registry what the model really holds (it warns and remembers if over the share)."""
        try:
            self._registry_handle().loaded.remote(self._load.key(), self._use)
        except ValueError:
            logger.warning("No model registry to report %s's memory use to.", self._load.label())

    def _watch_idle(self) -> None:
        """Retire after ``keep_alive_s`` without requests: the registry then kills this actor for good."""
        keep_alive = self._load.keep_alive_s
        while True:
            time.sleep(min(keep_alive / 4, MAX_IDLE_CHECK_S))
            with self._lock:
                idle = self._in_flight == 0 and time.monotonic() - self._last_used >= keep_alive
                if idle:
                    self._retiring = True
            if idle:
                logger.info("%s idle for %.0f s: unloading", self._load.label(), keep_alive)
                self._registry_handle().retired.remote(self._load.key(), ray.get_runtime_context().get_actor_id())
                return


def _stats(engine) -> dict | None:
    """The engine's own counters (batches run, rows served) when it keeps any."""
    stats = getattr(engine, "stats", None)
    if stats is None:
        return None
    return dict(stats) if isinstance(stats, dict) else (stats.model_dump() if hasattr(stats, "model_dump")
                                                         else dict(vars(stats)))


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


def _measure(target: Target, load_s: float, note: str) -> MeasuredUse:
    context = ray.get_runtime_context()
    use = MeasuredUse(pid=os.getpid(), node_id=context.get_node_id(), gpu_ids=[int(i) for i in ray.get_gpu_ids()],
                      device=target.device, load_s=load_s, note=note)
    return use.model_copy(update=_current_use(use))


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
