"""The caller's side of an in-process model: find its actor (or have the registry create it), send requests.

The actor is looked up by its cluster-wide name, so a second script finds the first one's model
without asking the registry. Only a missing actor costs a trip to the registry, and concurrent first
calls in one process share that trip. Errors come back typed, and a request is sent again only when it never ran:
- the actor was unloading (idle keep-alive, ``unload``) and refused it → it goes to a fresh actor, once;
- the actor was restarting when the request came (Ray: unavailable) → it waits for the reload, once;
- the actor was already ended on purpose (the registry says so; it had nothing in flight) → a fresh actor;
- an unload's grace ran out under the request → ``ModelUnloadedError``, never re-sent;
- the actor died under the request → ``ModelConnectionError`` saying so; Ray restarts it (the model
  loads again) unless it is out of restarts, in which case the next request gets a new actor.

The registry may restart under any of this: Ray sends it the call again once it is back with its ledger rebuilt,
and a registry ended for good is made anew for one more try (its calls are safe to repeat).
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import AsyncIterator

import ray
from ray.actor import ActorHandle
from ray.exceptions import ActorUnavailableError, RayActorError, RayTaskError

from ..cluster.connection import ensure_ray, named_actor, result_of, unwrapped
from ..cluster.inventory import current_inventory_override
from ..cluster.model_size import need_for
from ..hosts.core import ModelRetiredError
from ..hosts.registry import get_registry
from ..models.errors import ModelConnectionError
from ..models.load import ModelLoad
from ..models.retry import retried, retried_stream
from . import calls

_resolver = ThreadPoolExecutor(max_workers=4, thread_name_prefix="aimu_ray-models")
RESTART_WAIT_S = 600.0      # a restarting actor reloads its model: minutes for a large one
RESTART_POLL_S = 0.2


class ModelBackend:
    """Requests for one ``ModelLoad``: ``call`` for a whole answer, ``stream`` for chunks as they come."""

    def __init__(self, load: ModelLoad) -> None:
        self.load = load
        self._lock = threading.Lock()
        self._handle: ActorHandle | None = None
        self._resolving: Future | None = None

    async def call(self, request):
        tries = _Tries(self)

        async def attempt():
            return await calls.call((await tries.actor()).run, request)

        return await retried(attempt, tries.resend)

    def stream(self, request) -> AsyncIterator:
        tries = _Tries(self)

        async def attempt():
            async for item in calls.stream((await tries.actor()).stream, request):
                yield item

        return retried_stream(attempt, tries.resend)

    async def actor(self) -> ActorHandle:
        """The model's actor, loaded (the first call places and loads it: seconds to minutes)."""
        return await self._actor()

    async def _actor(self, gone_actor_id: str | None = None) -> ActorHandle:
        with self._lock:
            if self._handle is not None and gone_actor_id is None:
                return self._handle
            if self._resolving is None:
                self._resolving = _resolver.submit(self._resolve, gone_actor_id)
            resolving = self._resolving
        try:
            handle = await asyncio.wrap_future(resolving)
        finally:
            with self._lock:
                if self._resolving is resolving:
                    self._resolving = None
        with self._lock:
            self._handle = handle
        return handle

    def _resolve(self, gone_actor_id: str | None) -> ActorHandle:
        """By name if it exists (and is not the dead one), else through the registry, which places and loads it."""
        ensure_ray()
        if gone_actor_id is None:
            handle = named_actor(self.load.actor_name())
            if handle is not None:
                return handle
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

    def _drop(self, handle: ActorHandle) -> None:
        with self._lock:
            if self._handle is handle:
                self._handle = None

    async def _recovered(self, handle: ActorHandle, failure: RayActorError) -> bool:
        """May the request go again? Yes when it never ran: the actor was restarting (wait for the reload) or had
        been ended on purpose (a fresh one is ready); no when the actor died under it."""
        if isinstance(failure, ActorUnavailableError) and await _restarted(handle):
            return True
        return await self._ended(handle)

    async def _ended(self, handle: ActorHandle) -> bool:
        """Was the actor ended on purpose (unloaded, idle)? Then fetch a fresh one and say so. A crash, even one
        Ray will not restart, may have run the request: the caller hears of it, and the next request resolves anew."""
        actor_id = handle._actor_id.hex()
        if not await result_of(get_registry().ended.remote(actor_id)):
            if await asyncio.to_thread(named_actor, self.load.actor_name()) is None:
                self._drop(handle)             # dead for good: the next request gets a new actor
            return False
        await self._replace(handle)
        return True

    async def _replace(self, handle: ActorHandle) -> None:
        """Forget an actor that is unloading or gone, and get the model's current one (the registry loads it anew
        once the unload is over)."""
        self._drop(handle)
        await self._actor(gone_actor_id=handle._actor_id.hex())

    def _died(self, failure: RayActorError) -> ModelConnectionError:
        return ModelConnectionError(
            f"The actor serving {self.load.label()} died while running this request ({type(failure).__name__}). "
            "Ray restarts it and the model loads again; send the request again.")


class _Tries:
    """One request's attempts, each on the model's current actor: a failure is judged against the actor it hit."""

    def __init__(self, backend: ModelBackend) -> None:
        self._backend = backend
        self._handle: ActorHandle | None = None

    async def actor(self) -> ActorHandle:
        self._handle = None                # None while finding the actor: a failure there (a load) is never retried
        self._handle = await self._backend._actor()
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
            if started or not (attempt == 0 and await backend._recovered(handle, error)):
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



_backends: dict[str, ModelBackend] = {}
_backends_lock = threading.Lock()


def model_backend(load: ModelLoad) -> ModelBackend:
    """This process's backend for ``load``: one per model, shared by every client of it in the process."""
    with _backends_lock:
        return _backends.setdefault(load.key(), ModelBackend(load))


def reset_model_backends() -> None:
    """Forget every actor handle (after ``ray.shutdown`` they point at nothing)."""
    with _backends_lock:
        _backends.clear()
