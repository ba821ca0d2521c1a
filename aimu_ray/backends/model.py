"""The caller's side of an in-process model: find its copies (the registry places and loads them), send requests.

A model runs as one or more copies (``replicas``), each its own actor. This process keeps the copies' handles and
counts the requests it has on each; a request goes to the less loaded of two copies drawn at random (power of two
choices: near the least loaded, without a shared counter), and a stream stays on its copy. The list comes from
the registry, once, then again every ``REFRESH_S`` while requests flow, so copies the scaler adds or removes are
seen within seconds. Errors come back typed, and a request is sent again only when it never ran:
- the copy was unloading (idle keep-alive, scale-in, eviction, ``unload``) and refused it → another copy, once (the
  registry loads a fresh one when none is left);
- the copy was restarting when the request came (Ray: unavailable) → it waits for the reload, once;
- the copy was already ended on purpose (the registry says so; it had nothing in flight) → another copy;
- an unload's grace ran out under the request → ``ModelUnloadedError``, never re-sent;
- the copy died under the request → ``ModelConnectionError`` saying so; Ray restarts it (the model
  loads again) unless it is out of restarts, in which case the registry's scaler replaces it.

The registry may restart under any of this: Ray sends it the call again once it is back with its ledger rebuilt,
and a registry ended for good is made anew for one more try (its calls are safe to repeat).
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import AsyncIterator, Iterator

import ray
from ray.actor import ActorHandle
from ray.exceptions import ActorUnavailableError, RayActorError, RayTaskError

from ..cluster.connection import ensure_ray, result_of, unwrapped
from ..cluster.inventory import current_inventory_override
from ..cluster.model_size import need_for
from ..hosts.core import ModelRetiredError
from ..hosts.registry import get_registry
from ..models.errors import ModelConnectionError
from ..models.load import ModelLoad
from ..models.retry import retried, retried_stream
from . import calls

logger = logging.getLogger("aimu_ray")
_resolver = ThreadPoolExecutor(max_workers=4, thread_name_prefix="aimu_ray-models")
RESTART_WAIT_S = 600.0      # a restarting actor reloads its model: minutes for a large one
RESTART_POLL_S = 0.2
REFRESH_S = 2.0             # how often the list of copies is read again while requests flow
REFRESH_WAIT_S = 5.0


class ModelBackend:
    """Requests for one ``ModelLoad``: ``call`` for a whole answer, ``stream`` for chunks as they come."""

    def __init__(self, load: ModelLoad) -> None:
        self.load = load
        self._lock = threading.Lock()
        self._copies: list[ActorHandle] = []
        self._in_flight: dict[str, int] = {}         # actor id → this process's requests on that copy
        self._resolving: Future | None = None
        self._refreshed_at = 0.0
        self._refreshing = False

    async def call(self, request):
        tries = _Tries(self)

        async def attempt():
            copy = await tries.actor()
            with self._counted(copy):
                return await calls.call(copy.run, request)

        return await retried(attempt, tries.resend)

    def stream(self, request) -> AsyncIterator:
        tries = _Tries(self)

        async def attempt():
            copy = await tries.actor()
            with self._counted(copy):
                async for item in calls.stream(copy.stream, request):
                    yield item

        return retried_stream(attempt, tries.resend)

    async def actor(self) -> ActorHandle:
        """The copy the next request would go to, loaded (the first call places and loads the model: seconds to
        minutes)."""
        return self._least_loaded(await self._group())

    @property
    def has_copies(self) -> bool:
        """Whether this process knows loaded copies to send to (no trip to the registry needed)."""
        return bool(self._copies)

    def asked(self, load: ModelLoad) -> None:
        """The same model asked for with other serving settings: the next request takes them to the registry."""
        with self._lock:
            self.load, self._copies = load, []

    def in_flight(self) -> dict[str, int]:
        """This process's requests on each copy, by actor id."""
        with self._lock:
            return dict(self._in_flight)

    def _least_loaded(self, copies: list[ActorHandle]) -> ActorHandle:
        """The less loaded of two copies drawn at random; ties go to the first drawn."""
        self._refresh_if_stale()
        if len(copies) == 1:
            return copies[0]
        first, second = random.sample(copies, 2)
        with self._lock:
            return min((first, second), key=lambda copy: self._in_flight.get(_actor_id(copy), 0))

    @contextmanager
    def _counted(self, copy: ActorHandle) -> Iterator[None]:
        actor_id = _actor_id(copy)
        with self._lock:
            self._in_flight[actor_id] = self._in_flight.get(actor_id, 0) + 1
        try:
            yield
        finally:
            with self._lock:
                self._in_flight[actor_id] -= 1
                if not self._in_flight[actor_id]:
                    del self._in_flight[actor_id]

    async def _group(self, gone_actor_id: str | None = None) -> list[ActorHandle]:
        """The model's copies: those known here, else the registry's (which places and loads them first)."""
        with self._lock:
            if self._copies and gone_actor_id is None:
                return list(self._copies)
            if self._resolving is None:
                self._resolving = _resolver.submit(self._resolve, gone_actor_id)
            resolving = self._resolving
        try:
            copies = await asyncio.wrap_future(resolving)
        finally:
            with self._lock:
                if self._resolving is resolving:
                    self._resolving = None
        with self._lock:
            self._copies, self._refreshed_at = list(copies), time.monotonic()
        return copies

    def _resolve(self, gone_actor_id: str | None) -> list[ActorHandle]:
        """Through the registry, which places and loads the model's copies unless they run already."""
        ensure_ray()
        need, inventory = need_for(self.load), current_inventory_override()
        for attempt in range(2):
            try:
                return ray.get(get_registry().ensure.remote(self.load, need, inventory, gone_actor_id))
            except RayTaskError as failure:    # the load or placement error itself, not Ray's wrapper
                raise unwrapped(failure) from None
            except RayActorError as failure:   # the registry was ended for good: a new one is made on the next try
                if attempt:
                    raise ModelConnectionError(f"The model registry ended while placing {self.load.label()} "
                                               f"({type(failure).__name__}); send the request again.") from None

    def _refresh_if_stale(self) -> None:
        """Read the list of copies again in the background if it is older than ``REFRESH_S``: copies added by the
        scaler get requests, copies removed stop getting them."""
        with self._lock:
            if self._refreshing or time.monotonic() - self._refreshed_at < REFRESH_S:
                return
            self._refreshing = True
        _resolver.submit(self._refresh)

    def _refresh(self) -> None:
        try:
            copies = ray.get(get_registry().replicas.remote(self.load.key()), timeout=REFRESH_WAIT_S)
        except Exception as error:             # the registry restarting, say: the list known here still serves
            logger.debug("Could not refresh the copies of %s: %s", self.load.label(), error)
            copies = None
        with self._lock:
            self._refreshing, self._refreshed_at = False, time.monotonic()
            if copies is not None:
                self._copies = copies          # empty when the model was unloaded: the next request asks again

    def _drop(self, copy: ActorHandle) -> bool:
        """Forget a copy that is unloading or gone; says whether others are left to send to."""
        with self._lock:
            self._copies = [c for c in self._copies if _actor_id(c) != _actor_id(copy)]
            return bool(self._copies)

    async def _recovered(self, copy: ActorHandle, failure: RayActorError, sent_at: float) -> bool:
        """May the request go again? Yes when it never ran: the copy was restarting (wait for the reload) or was
        gone before the request was sent (another copy takes it); no when the copy died under it."""
        if isinstance(failure, ActorUnavailableError) and await _restarted(copy):
            return True
        return await self._ended(copy, sent_at)

    async def _ended(self, copy: ActorHandle, sent_at: float) -> bool:
        """Was the copy gone before ``sent_at`` (unloaded, idle, evicted, or found dead for good)? Then go to
        another and say so. A crash under the request may have run it: the caller hears of it, and the scaler
        replaces the copy."""
        if not await result_of(get_registry().ended.remote(_actor_id(copy), sent_at)):
            with self._lock:
                self._refreshed_at = 0.0       # the next request reads the list again
            return False
        await self._replace(copy)
        return True

    async def _replace(self, copy: ActorHandle) -> None:
        """Forget a copy that is unloading or gone; with no other copy left, get the model's current ones (the
        registry loads one anew once the unload is over)."""
        if not self._drop(copy):
            await self._group(gone_actor_id=_actor_id(copy))

    def _died(self, failure: RayActorError) -> ModelConnectionError:
        return ModelConnectionError(
            f"The actor serving {self.load.label()} died while running this request ({type(failure).__name__}). "
            "Ray restarts it and the model loads again; send the request again.")


class _Tries:
    """One request's attempts, each on the model's current actor: a failure is judged against the actor it hit."""

    def __init__(self, backend: ModelBackend) -> None:
        self._backend = backend
        self._handle: ActorHandle | None = None
        self._sent_at = 0.0

    async def actor(self) -> ActorHandle:
        self._handle = None                # None while finding the copy: a failure there (a load) is never retried
        self._handle = await self._backend.actor()
        self._sent_at = time.time()
        return self._handle

    async def resend(self, error: Exception, attempt: int, started: bool) -> bool:
        """Send it again, once, when it never ran (see the module's docstring)."""
        backend, handle = self._backend, self._handle
        if handle is None:
            return False
        if isinstance(error, ModelRetiredError):
            if started or attempt:
                return False
            await backend._replace(handle)
            return True
        if isinstance(error, RayActorError):
            if started or not (attempt == 0 and await backend._recovered(handle, error, self._sent_at)):
                raise backend._died(error) from error
            return True
        return False


async def _restarted(handle: ActorHandle) -> bool:
    """Wait for a restarting actor to have reloaded its model; False if it died for good meanwhile."""
    deadline = time.monotonic() + RESTART_WAIT_S
    while time.monotonic() < deadline:
        try:
            await result_of(handle.ready.remote())
            return True
        except ActorUnavailableError:          # still restarting: Ray refuses calls instead of queueing them
            await asyncio.sleep(RESTART_POLL_S)
        except RayActorError:
            return False
    return False


def _actor_id(handle: ActorHandle) -> str:
    return handle._actor_id.hex()


_backends: dict[str, ModelBackend] = {}
_backends_lock = threading.Lock()


def model_backend(load: ModelLoad) -> ModelBackend:
    """This process's backend for ``load``: one per model, shared by every client of it in the process. A client
    that asks with other serving settings (replicas, keep-alive, pin) makes the next request tell the registry."""
    with _backends_lock:
        backend = _backends.setdefault(load.key(), ModelBackend(load))
    if backend.load != load:
        backend.asked(load)
    return backend


def reset_model_backends() -> None:
    """Forget every actor handle (after ``ray.shutdown`` they point at nothing)."""
    with _backends_lock:
        _backends.clear()
