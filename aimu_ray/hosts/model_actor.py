"""The model actor: one in-process model (HF text, llama.cpp, diffusers, HF audio) living in a Ray actor.

One actor per ``ModelLoad`` on the whole cluster, named after it and created only by the registry
(``hosts.registry``), so every client that asks for the same model shares its weights. It serves
requests concurrently (the engines batch what can share a forward pass), streams incrementally,
measures the memory it really holds after loading and reports it, and retires itself after an idle
keep-alive so its GPU share goes back to the cluster.

A crash (the process dies) fails the requests in flight; Ray then restarts the actor, which loads the
model again. A load that raises (bad path, missing package) does not crash: ``ready()`` re-raises the
error, typed, to the caller that asked for the model.
"""

from __future__ import annotations

import logging
import threading
import time
from contextlib import aclosing
from typing import AsyncIterator

import ray

from ..models.load import ModelLoad, Target
from .core import HostCore
from .model import HostedModel, MeasuredUse

logger = logging.getLogger("aimu_ray")
CONTROL = "control"
MAX_IDLE_CHECK_S = 5.0
END_WAIT_S = 10.0        # how long ending the requests in flight may take (a denoising step, a batch step)


@ray.remote(concurrency_groups={CONTROL: 2})
class ModelActor:
    def __init__(self, load: ModelLoad, target: Target, registry_name: str, namespace: str) -> None:
        self._load = load
        self._registry = (registry_name, namespace)
        self._core = HostCore(load.label())
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
        return await self._core.run(self._model, request)

    async def stream(self, request) -> AsyncIterator[list]:
        """The engine's stream in batches of what is ready (``coalesce``)."""
        async with aclosing(self._core.stream(self._model, request)) as batches:
            async for batch in batches:
                yield batch

    @ray.method(concurrency_group=CONTROL)
    def info(self) -> dict:
        """The measured use now, requests in flight and idle time: a row of ``aimu_ray.placements()``."""
        return {"use": self._model.current_use(), "in_flight": self._core.in_flight, "idle_s": self._core.idle_s(),
                "retiring": self._core.retiring, "engine": self._model.stats()}

    @ray.method(concurrency_group=CONTROL)
    def retire(self) -> int:
        """Refuse new requests from now on (the registry is unloading this model); returns those in flight."""
        return self._core.retire()

    @ray.method(concurrency_group=CONTROL)
    def end_requests(self) -> int:
        """End the requests still in flight with ``ModelUnloadedError`` (an unload's grace ran out); returns how
        many. A control method, so that requests filling the default group cannot hold it up."""
        return self._core.end_requests(END_WAIT_S)

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
            if self._core.retire_if_idle(keep_alive):
                logger.info("%s idle for %.0f s: unloading", self._load.label(), keep_alive)
                self._registry_handle().retired.remote(self._load.key(), ray.get_runtime_context().get_actor_id())
                return
