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

import asyncio
import logging
import threading
import time
from contextlib import aclosing, contextmanager
from typing import AsyncIterator

import ray

from ..models.errors import ModelError, ModelUnloadedError
from ..models.load import ModelLoad, Target
from .model import HostedModel, MeasuredUse

logger = logging.getLogger("aimu_ray")
CONTROL = "control"
MAX_IDLE_CHECK_S = 5.0
END_WAIT_S = 10.0        # how long ending the requests in flight may take (a denoising step, a batch step)


class ModelRetiredError(ModelError):
    """The actor was unloading when the request came; the caller asks the registry for a fresh one."""


@ray.remote(concurrency_groups={CONTROL: 2})
class ModelActor:
    def __init__(self, load: ModelLoad, target: Target, registry_name: str, namespace: str) -> None:
        self._load = load
        self._registry = (registry_name, namespace)
        self._lock = threading.Lock()
        self._in_flight = 0
        self._last_used = time.monotonic()
        self._retiring = False
        self._running: set[asyncio.Task] = set()     # the requests in flight, to end them when unloaded
        self._ended = False
        self._model = HostedModel(load, target)
        if self._model.error is not None:
            return
        self._report()
        if load.keep_alive_s is not None:
            threading.Thread(target=self._watch_idle, name="aimu_ray-idle", daemon=True).start()

    @ray.method(concurrency_group=CONTROL)
    def ready(self) -> MeasuredUse:
        """Returns once the model is loaded (the registry awaits it); raises the load error if it failed."""
        return self._model.ready()

    async def run(self, request):
        """One whole answer: a ChatResult, ImageResult or AudioResult."""
        with self._serving():
            return await self._model.run(request)

    async def stream(self, request) -> AsyncIterator[list]:
        """The engine's stream in batches of what is ready (``streaming.coalesce``)."""
        with self._serving():
            async with aclosing(self._model.stream(request)) as batches:
                async for batch in batches:
                    yield batch

    @ray.method(concurrency_group=CONTROL)
    def info(self) -> dict:
        """The measured use now, requests in flight and idle time: a row of ``aimu_ray.placements()``."""
        return {"use": self._model.current_use(), "in_flight": self._in_flight,
                "idle_s": time.monotonic() - self._last_used, "retiring": self._retiring,
                "engine": self._model.stats()}

    @ray.method(concurrency_group=CONTROL)
    def retire(self) -> int:
        """Refuse new requests from now on (the registry is unloading this model); returns those in flight."""
        with self._lock:
            self._retiring = True
            return self._in_flight

    @ray.method(concurrency_group=CONTROL)
    def end_requests(self) -> int:
        """End the requests still in flight with ``ModelUnloadedError`` (an unload's grace ran out); returns how
        many. A control method, so that requests filling the default group cannot hold it up: each request's
        task is cancelled on its own event loop."""
        with self._lock:
            self._ended = True
            running = list(self._running)
        for task in running:
            task.get_loop().call_soon_threadsafe(task.cancel)
        deadline = time.monotonic() + END_WAIT_S
        while self._running and time.monotonic() < deadline:
            time.sleep(0.05)
        return len(running)

    @contextmanager
    def _serving(self):
        with self._lock:
            if self._retiring:
                raise ModelRetiredError(f"{self._load.label()} is being unloaded; ask for it again.")
            self._in_flight += 1
            task = asyncio.current_task()
            self._running.add(task)
        try:
            yield
        except asyncio.CancelledError:
            if self._ended:
                raise ModelUnloadedError(f"{self._load.label()} was unloaded while this request ran (its grace "
                                         "period ended); send it again to load the model again.") from None
            raise
        finally:
            with self._lock:
                self._running.discard(task)
                self._in_flight -= 1
                self._last_used = time.monotonic()

    def _registry_handle(self):
        name, namespace = self._registry
        return ray.get_actor(name, namespace=namespace)

    def _report(self) -> None:
        """Tell the registry what the model really holds (it warns and remembers if over the share)."""
        try:
            self._registry_handle().loaded.remote(self._load.key(), self._model.use)
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

