"""One worker of the shared pool: an async actor that runs any remote-provider request it is given.

A worker keeps no conversation (the request carries the messages), only SDK clients (``EngineCache``),
so any worker can serve any request and one can die without losing anything but its requests in
flight. Retries against the provider happen inside the engines; the worker adds the cluster-wide
in-flight limit, and only for providers that have one.

Workers are named, detached actors: they are the pool's data plane and outlive the manager that started
them (a restarted manager adopts them by name, ``named_workers``), and each knows the permits it holds,
so a restarted limiter can count them again.
"""

from __future__ import annotations

import itertools
from contextlib import aclosing, asynccontextmanager
from typing import AsyncIterator

import ray
from ray.actor import ActorHandle

from ..cluster.connection import NAMESPACE, named_actor
from ..engines import EngineCache
from ..models.media import ImageRequest, ImageResult
from ..models.wire import ChatRequest, ChatResult
from .core import HostCore

# A full worker (max_concurrency requests running) must still answer the manager: control calls get a
# concurrency group of their own. They only read or swap attributes, so running on another thread is safe.
CONTROL = "control"
WORKER_PREFIX = "pool-worker-"  # a worker's name is this and its key


@ray.remote(concurrency_groups={CONTROL: 2})
class PoolWorker:
    def __init__(self, key: str, limits: dict[str, int], limiter: ActorHandle | None) -> None:
        self._key = key
        self._limits = limits
        self._limiter = limiter
        self._engines = EngineCache()
        self._core = HostCore(f"pool worker {key}")
        self._tickets = itertools.count()
        self._held: dict[str, str] = {}          # ticket -> provider, for each permit held now

    async def run(self, request: ChatRequest | ImageRequest) -> ChatResult | ImageResult:
        """One whole answer: a chat from any remote provider, or images from a remote image provider."""
        return await self._core.run(self._engines.get(request), request, self._permit(request.provider))

    async def stream(self, request: ChatRequest | ImageRequest) -> AsyncIterator[list]:
        """The engine's stream in batches of what is ready (see ``coalesce``)."""
        batches = self._core.stream(self._engines.get(request), request, self._permit(request.provider))
        async with aclosing(batches):
            async for batch in batches:
                yield batch

    @ray.method(concurrency_group=CONTROL)
    def in_flight(self) -> int:
        """Requests running now (waiting for a permit included); the manager reads it to decide when the pool grows."""
        return self._core.in_flight

    @ray.method(concurrency_group=CONTROL)
    def held_permits(self) -> dict[str, str]:
        """The permits this worker holds (ticket -> provider): what a restarted limiter counts before it grants."""
        return dict(self._held)

    @ray.method(concurrency_group=CONTROL)
    def set_limits(self, limits: dict[str, int], limiter: ActorHandle | None) -> None:
        self._limits = limits
        self._limiter = limiter

    @asynccontextmanager
    async def _permit(self, provider: str):
        """A permit of the provider's cluster-wide limit, held around the request if the provider has one.

        The permit is released on every exit (answer, error, cancellation), and a release never waits:
        the limiter accepts it even before the acquire it cancels.
        """
        limiter = self._limiter if provider in self._limits else None
        if limiter is None:
            yield
            return
        ticket = f"{self._key}:{next(self._tickets)}"
        try:
            await limiter.acquire.remote(provider, self._key, ticket)
            self._held[ticket] = provider
            yield
        finally:
            self._held.pop(ticket, None)
            limiter.release.remote(ticket)


def named_workers() -> dict[str, ActorHandle]:
    """The pool's live workers by key, found by name, whoever started them."""
    names = [actor["name"] for actor in ray.util.list_named_actors(all_namespaces=True)
             if actor["namespace"] == NAMESPACE and actor["name"].startswith(WORKER_PREFIX)]
    found = {name.removeprefix(WORKER_PREFIX): named_actor(name) for name in names}
    return {key: worker for key, worker in found.items() if worker is not None}     # None: gone since the listing
