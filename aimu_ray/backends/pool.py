"""The caller's side of the pool: pick a worker, send it the request, hand back answers and typed errors.

One ``PoolBackend`` per process (``pool_backend()``) serves every client in it. It works in any
event loop, and in several at once (the sync API's background loop, a notebook's loop, a Ray actor's
loop): it holds nothing bound to a loop, only Ray handles and counters behind a thread lock, and it
never blocks a loop on ``ray.get``. A request costs one actor call: the manager is asked for the
worker list on first use, after a worker is lost, and at most once every ``REFRESH_S`` otherwise.
"""

from __future__ import annotations

import asyncio
import math
import random
import threading
import time
from collections import Counter
from contextlib import asynccontextmanager
from typing import AsyncIterator

import ray
from ray.actor import ActorHandle
from ray.exceptions import RayActorError

from ..models.errors import ModelConnectionError
from ..models.media import ImageRequest, ImageResult
from ..models.retry import retried, retried_stream
from ..models.wire import ChatDelta, ChatRequest, ChatResult
from ..cluster.connection import ensure_ray
from . import calls
from ..hosts.pool_manager import get_manager

MAX_ATTEMPTS = 3     # workers tried for one request, each time the one running it died
REFRESH_S = 1.0      # how old the cached worker list may get before one request refetches it (the pool grows)
NO_WORKER_LEFT = (f"No pool worker could finish the request: {MAX_ATTEMPTS} died under it in a row. "
                  "Check the Ray cluster's health (`ray status`).")
LOST_MID_STREAM = ("The pool worker running this stream was lost mid-stream, after part of the answer had arrived; "
                   "it was not retried because that would repeat text. Send it again.")


class PoolBackend:
    """Sends each request to the worker with the fewest requests in flight *from this process*.

    Ties go to this process's preferred worker (a random offset into the manager's list, drawn once):
    at low load one process keeps using one warm worker (a worker that sat idle is slower to wake, a
    measured ~1 ms here), at high load the counts spread requests over every worker, and different
    processes prefer different workers. No shared counters are asked. A request whose worker died
    before it produced anything is sent to another worker.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._preference = random.randrange(1 << 30)
        self.reset()

    def reset(self) -> None:
        """Forget the manager and the workers (after ``ray.shutdown`` their handles point at nothing)."""
        with self._lock:
            self._manager: ActorHandle | None = None
            self._workers: dict[str, ActorHandle] = {}
            self._in_flight: Counter[str] = Counter()
            self._fetched_at = -math.inf
            self._pending: ray.ObjectRef | None = None

    async def call(self, request: ChatRequest | ImageRequest) -> ChatResult | ImageResult:
        """One whole answer from a pool worker."""
        tries = _Tries()

        async def attempt():
            async with self._worker(tries) as worker:
                return await calls.call(worker.run, request)

        return await retried(attempt, tries.on_another_worker)

    def stream(self, request: ChatRequest) -> AsyncIterator[ChatDelta | ChatResult]:
        """Deltas as the provider sends them, then the ``ChatResult``; closing it early cancels the work."""
        tries = _Tries()

        async def attempt():
            async with self._worker(tries) as worker:
                async for item in calls.stream(worker.stream, request):
                    yield item

        return retried_stream(attempt, tries.on_another_worker)

    @asynccontextmanager
    async def _worker(self, tries: _Tries):
        """A worker for one attempt, counted in flight from this process until the attempt ends."""
        tries.worker = None
        if self._manager is None:
            await asyncio.to_thread(self._connect)       # may start Ray: seconds, so off the loop
        stale = time.monotonic() - self._fetched_at > REFRESH_S and self._pending is None
        if tries.lost or stale or not self._workers:
            await self._fetch(tries.lost)
        with self._lock:
            workers = list(self._workers.items())
            start = self._preference % len(workers)
            key, worker = min(workers[start:] + workers[:start], key=lambda item: self._in_flight[item[0]])
            self._in_flight[key] += 1
        tries.worker = key
        try:
            yield worker
        finally:
            with self._lock:
                self._in_flight[key] -= 1

    def _connect(self) -> None:
        with self._lock:
            if self._manager is None:
                ensure_ray()
                self._manager = get_manager()

    async def _fetch(self, lost: list[str]) -> None:
        """Get the worker list from the manager; concurrent callers share one call unless they report a loss."""
        with self._lock:
            ref = self._pending
            if ref is None or lost:
                ref = self._pending = self._manager.workers.remote(lost)
        try:
            workers = await ref
        finally:
            with self._lock:
                if self._pending is ref:
                    self._pending = None
        with self._lock:
            self._workers = workers
            self._fetched_at = time.monotonic()


class _Tries:
    """One request's attempts: the worker the current one reached, and the worker lost under the one before."""

    def __init__(self) -> None:
        self.worker: str | None = None     # None while finding a worker: a failure there is the caller's, unretried
        self.lost: list[str] = []

    async def on_another_worker(self, error: Exception, attempt: int, started: bool) -> bool:
        """Send it again when its worker died before anything came back, to MAX_ATTEMPTS workers in all."""
        if self.worker is None or not isinstance(error, RayActorError):
            return False
        if started:
            raise ModelConnectionError(LOST_MID_STREAM) from error
        if attempt + 1 == MAX_ATTEMPTS:
            raise ModelConnectionError(NO_WORKER_LEFT) from error
        self.lost = [self.worker]
        return True


_backend = PoolBackend()


def pool_backend() -> PoolBackend:
    """This process's backend: one per process, so every client shares its worker handles."""
    return _backend
