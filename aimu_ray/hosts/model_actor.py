"""The model actor: one in-process model (HF text, llama.cpp, diffusers, HF audio) living in a Ray actor.

One actor per copy of a ``ModelLoad`` on the whole cluster (``replicas``: one or more), named after it and its
copy number and created only by the registry (``hosts.registry``), so every client that asks for the same model
shares its copies. It serves
requests concurrently (the engines batch what can share a forward pass), streams incrementally,
measures the memory it really holds after loading and reports it, and retires itself after an idle
keep-alive so its GPU share goes back to the cluster.

It carries its own line of the registry's ledger (model, need and placement come with it; the measured use it
takes itself) and answers ``info`` from the moment it starts: the model loads in a thread, and requests wait for
it. So a registry that restarts rebuilds its ledger from the live actors, loading ones included, and forgets or
double-promises no share.

A crash (the process dies) fails the requests in flight; Ray then restarts the actor, which loads the
model again. A load that raises (bad path, missing package) does not crash: ``ready()`` re-raises the
error, typed, to the caller that asked for the model.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from concurrent.futures import Future
from contextlib import aclosing
from typing import AsyncIterator

import ray

from ..cluster.need import ModelNeed
from ..cluster.placement import Placement
from ..models.load import ModelLoad
from .core import HostCore
from .model import HostedModel, MeasuredUse

logger = logging.getLogger("aimu_ray")
CONTROL = "control"
MAX_IDLE_CHECK_S = 5.0
END_WAIT_S = 10.0        # how long ending the requests in flight may take (a denoising step, a batch step)


@ray.remote(concurrency_groups={CONTROL: 2})
class ModelActor:
    def __init__(self, load: ModelLoad, need: ModelNeed, placement: Placement, replica: int = 0) -> None:
        self._load, self._need, self._placement, self._replica = load, need, placement, replica
        self._created_at = time.time()
        self._core = HostCore(load.label(), load.max_in_flight)
        self._loading: Future[HostedModel] = Future()
        self._loading.set_running_or_notify_cancel()      # a caller that gives up waiting must not cancel the load
        threading.Thread(target=self._load_then_watch, name="aimu_ray-load", daemon=True).start()

    async def ready(self) -> MeasuredUse:
        """Returns once the model is loaded (the registry awaits it); raises the load error if it failed."""
        return (await self._model()).ready()

    async def run(self, request):
        """One whole answer: a ChatResult, ImageResult or AudioResult."""
        return await self._core.run(await self._model(), request)

    async def stream(self, request) -> AsyncIterator[list]:
        """The engine's stream in batches of what is ready (``coalesce``)."""
        async with aclosing(self._core.stream(await self._model(), request)) as batches:
            async for batch in batches:
                yield batch

    @ray.method(concurrency_group=CONTROL)
    def info(self) -> dict:
        """This actor's line of the ledger (model, need, placement, start) and its state now: loaded or not, the
        measured use, requests in flight, idle time. A row of ``aimu_ray.placements()``, and what a restarted
        registry rebuilds its ledger from."""
        model = self._loading.result() if self._loading.done() and not self._loading.exception() else None
        return {"load": self._load, "replica": self._replica, "need": self._need, "placement": self._placement,
                "created_at": self._created_at,
                "loading": not self._loading.done(), "use": model.current_use() if model else None,
                "in_flight": self._core.in_flight, "idle_s": self._core.idle_s(), "retiring": self._core.retiring,
                "engine": model.stats() if model else None}

    @ray.method(concurrency_group=CONTROL)
    def retire(self) -> int:
        """Refuse new requests from now on (the registry is unloading this model); returns those in flight."""
        return self._core.retire()

    @ray.method(concurrency_group=CONTROL)
    def end_requests(self) -> int:
        """End the requests still in flight with ``ModelUnloadedError`` (an unload's grace ran out); returns how
        many. A control method, so that requests filling the default group cannot hold it up."""
        return self._core.end_requests(END_WAIT_S)

    async def _model(self) -> HostedModel:
        """The hosted model once its load is over (its load error, if any, is raised by its methods)."""
        return await asyncio.wrap_future(self._loading)

    def _load_then_watch(self) -> None:
        """Load the model, tell the registry what it really holds, then retire after ``keep_alive_s`` without
        requests (the registry then ends this actor for good)."""
        from .registry import tell_registry       # the registry module creates model actors: imported when used

        placement = self._placement
        try:
            model = HostedModel(self._load, placement.target())
        except BaseException as error:        # a bug, not a load failure (HostedModel keeps those): never hang
            self._loading.set_exception(error)
            raise
        self._loading.set_result(model)
        if model.error is not None:
            return
        tell_registry("loaded", ray.get_runtime_context().current_actor)
        keep_alive = self._load.keep_alive_s
        while keep_alive is not None:
            time.sleep(min(keep_alive / 4, MAX_IDLE_CHECK_S))
            if self._core.retire_if_idle(keep_alive):
                logger.info("%s idle for %.0f s: unloading", self._load.label(), keep_alive)
                tell_registry("retired", self._load.actor_name(self._replica), ray.get_runtime_context().get_actor_id())
                return
