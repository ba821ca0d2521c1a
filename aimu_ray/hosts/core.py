"""What every host does around a request, written once: pool workers, model actors and Serve replicas each hold one.

A host counts the requests it runs (the pool grows by that count, an idle model actor retires by it, ``aimu-ray
status`` shows it), refuses new ones once it is retiring, ends those still running when its model is unloaded, and
hands an engine's stream back in batches of what is ready (``coalesce``). Each host adds only what is its own:
naming, reports to the registry, a provider's permit, endpoint rewriting.

Control calls (retire, end the requests, read the counts) may come on another thread than the requests (a Ray
actor's control concurrency group), so the state they share changes under one lock.
"""

from __future__ import annotations

import asyncio
import threading
import time
from contextlib import AbstractAsyncContextManager, aclosing, contextmanager, nullcontext
from typing import AsyncIterator

from ..engines.base import Engine
from ..models.errors import ModelBusyError, ModelError, ModelUnloadedError
from ..models.modality import Result
from .coalesce import coalesce


RESULTS = Result.__args__       # the types of a whole answer (a stream ends with one), timed here


class ModelRetiredError(ModelError):
    """The host was retiring (its model being unloaded) when the request came; the caller asks the registry again."""


class HostCore:
    """The requests in flight on one host; ``label`` names what it serves in the errors it raises, and ``limit`` is
    how many it takes at once (None: no limit; beyond it, ``ModelBusyError``, which HTTP answers 503 + Retry-After)."""

    def __init__(self, label: str, limit: int | None = None) -> None:
        self._label = label
        self._limit = limit
        self._lock = threading.Lock()
        self._in_flight = 0
        self._last_used = time.monotonic()
        self._retiring = False
        self._ended = False
        self._running: set[asyncio.Task] = set()     # the requests' tasks, to end them when the model is unloaded

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def retiring(self) -> bool:
        return self._retiring

    def idle_s(self) -> float:
        """Seconds since the last request ended (or the host started)."""
        return time.monotonic() - self._last_used

    async def run(self, engine: Engine, request, hold: AbstractAsyncContextManager = nullcontext()):
        """The engine's whole answer, counted and timed (its ``engine_s``); ``hold`` (a provider's permit) is held
        around it once counted, and its wait is not the engine's time."""
        with self._serving():
            async with hold:
                started = time.perf_counter()
                result = await engine.run(request)
                if isinstance(result, RESULTS):
                    result.engine_s = time.perf_counter() - started
                return result

    async def stream(self, engine: Engine, request,
                     hold: AbstractAsyncContextManager = nullcontext()) -> AsyncIterator[list]:
        """The engine's stream in batches of what is ready, counted; closing it stops the engine. The result (last)
        carries the engine's time from the ask to the result (``coalesce`` reads the engine on, whatever the pace
        of the reader, so a slow reader does not slow it)."""
        with self._serving():
            async with hold:
                started = time.perf_counter()
                async with aclosing(coalesce(engine.stream(request))) as batches:
                    async for batch in batches:
                        if isinstance(batch[-1], RESULTS):
                            batch[-1].engine_s = time.perf_counter() - started
                        yield batch

    def retire(self) -> int:
        """Refuse new requests from now on; returns those in flight."""
        with self._lock:
            self._retiring = True
            return self._in_flight

    def retire_if_idle(self, keep_alive_s: float) -> bool:
        """Retire if nothing ran for ``keep_alive_s``: checked and set at once, so no request slips in between."""
        with self._lock:
            if self._in_flight == 0 and time.monotonic() - self._last_used >= keep_alive_s:
                self._retiring = True
                return True
            return False

    def end_requests(self, wait_s: float) -> int:
        """Cancel the requests in flight, each on its own event loop, so they fail with ``ModelUnloadedError``; waits
        up to ``wait_s`` for them to end (a denoising step, a batch step) and returns how many there were."""
        with self._lock:
            self._ended = True
            running = list(self._running)
        for task in running:
            task.get_loop().call_soon_threadsafe(task.cancel)
        deadline = time.monotonic() + wait_s
        while self._running and time.monotonic() < deadline:
            time.sleep(0.05)
        return len(running)

    @contextmanager
    def _serving(self):
        with self._lock:
            if self._retiring:
                raise ModelRetiredError(f"{self._label} is being unloaded; ask for it again.")
            if self._limit is not None and self._in_flight >= self._limit:
                raise ModelBusyError(f"{self._label} is at capacity ({self._limit} requests in flight per copy); "
                                     "retry in a moment.")
            self._in_flight += 1
            task = asyncio.current_task()
            self._running.add(task)
        try:
            yield
        except asyncio.CancelledError:
            if self._ended:
                raise ModelUnloadedError(f"{self._label} was unloaded while this request ran (its grace period "
                                         "ended); send it again to load the model again.") from None
            raise
        finally:
            with self._lock:
                self._running.discard(task)
                self._in_flight -= 1
                self._last_used = time.monotonic()
