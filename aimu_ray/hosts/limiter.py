"""The cluster-wide cap on requests in flight per provider, as one actor that workers ask for permits.

Workers call it only for providers that have a limit, so unlimited providers pay no extra hop. Each
permit is a *ticket* named by the worker, which makes every exit path safe to report blindly:
``release(ticket)`` frees a held permit, withdraws a waiting one, or (if it overtook its ``acquire``)
cancels that acquire in advance. Tickets also record their *holder* (a worker key) so the pool
manager can return everything a dead worker held with ``release_holder``.

Nothing here is lost with the actor. The limits live in Ray's GCS (its internal KV, ``save_limits``),
which outlives every actor; the permits live in the workers that hold them. A limiter that Ray restarts
reads the limits and asks every worker which permits it holds before it grants any, so the provider never
sees more than its limit while the limiter was away; the acquires and releases sent meanwhile are retried.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections import Counter, defaultdict, deque
from dataclasses import dataclass, field

import ray
from ray.experimental.internal_kv import _internal_kv_get, _internal_kv_put

from ..cluster.connection import NAMESPACE, result_of
from .pool_worker import named_workers

logger = logging.getLogger("aimu_ray")

LIMITER_NAME = "limiter"
LIMITS_KEY = b"pool:max_in_flight"
COUNT_WAIT_S = 10    # a live worker answers at once (its control calls have threads of their own)
# Waiting acquires occupy concurrency slots, and a release must always find one free; there can be no
# more waiters than requests the workers run at once, far below this.
MAX_CONCURRENCY = 1_000_000


@dataclass
class _Ticket:
    provider: str
    holder: str
    granted: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())

    @property
    def held(self) -> bool:
        return self.granted.done() and not self.granted.cancelled()


@ray.remote
class Limiter:
    """Every method is a coroutine on purpose: they then all run on the actor's one event loop, which
    the permit futures need (a sync method or a concurrency group would run on another thread)."""

    def __init__(self) -> None:
        self._limits = saved_limits()
        self._tickets: dict[str, _Ticket] = {}
        self._queues: dict[str, deque[str]] = defaultdict(deque)
        self._in_use: Counter[str] = Counter()
        self._released_early: set[str] = set()
        self._counted = False                    # no grant before the permits the workers hold are counted
        self._counting = asyncio.get_running_loop().create_task(self._count_held())   # kept: loops hold tasks weakly

    async def acquire(self, provider: str, holder: str, ticket: str) -> None:
        """Return once ``ticket`` holds one of ``provider``'s permits (first come, first served)."""
        if ticket in self._released_early:
            self._released_early.discard(ticket)
            return
        entry = self._tickets[ticket] = _Ticket(provider, holder)
        self._queues[provider].append(ticket)
        self._grant(provider)
        await entry.granted

    async def release(self, ticket: str) -> None:
        entry = self._tickets.pop(ticket, None)
        if entry is None:
            self._released_early.add(ticket)
        elif entry.held:
            self._in_use[entry.provider] -= 1
            self._grant(entry.provider)
        else:
            entry.granted.cancel()          # still queued: _grant skips it

    async def release_holder(self, holder: str) -> None:
        for ticket in [t for t, entry in self._tickets.items() if entry.holder == holder]:
            await self.release(ticket)

    async def set_limits(self, limits: dict[str, int]) -> None:
        """Replace the limits; a provider left out has none. Raising a limit lets waiters in at once."""
        self._limits = dict(limits)
        for provider in list(self._queues):
            self._grant(provider)

    async def in_use(self) -> dict[str, int]:
        return {provider: n for provider, n in self._in_use.items() if n}

    async def _count_held(self) -> None:
        """Take in the permits the workers hold: none on a first start, those granted before a restart after one."""
        try:
            workers = await asyncio.to_thread(named_workers)
            answers = await asyncio.gather(*(asyncio.wait_for(result_of(worker.held_permits.remote()), COUNT_WAIT_S)
                                             for worker in workers.values()), return_exceptions=True)
            for holder, held in zip(workers, answers):
                if isinstance(held, Exception):          # dead, or still starting: it holds none
                    continue
                for ticket, provider in held.items():
                    if ticket in self._released_early:   # released since the worker answered
                        self._released_early.discard(ticket)
                    else:
                        self._tickets[ticket] = _Ticket(provider, holder)
                        self._tickets[ticket].granted.set_result(None)
                        self._in_use[provider] += 1
        except Exception:
            logger.exception("The limiter could not count the permits the pool's workers hold; granting anyway")
        finally:
            self._counted = True
            for provider in list(self._queues):
                self._grant(provider)

    def _grant(self, provider: str) -> None:
        if not self._counted:
            return
        queue = self._queues[provider]
        while queue and self._in_use[provider] < self._limits.get(provider, math.inf):
            entry = self._tickets.get(queue.popleft())
            if entry is not None and not entry.granted.done():
                self._in_use[provider] += 1
                entry.granted.set_result(None)


def save_limits(limits: dict[str, int]) -> None:
    """Keep the limits where no actor's death can lose them: Ray's GCS, for as long as the cluster lives."""
    _internal_kv_put(LIMITS_KEY, json.dumps(limits).encode(), overwrite=True, namespace=NAMESPACE)


def saved_limits() -> dict[str, int]:
    raw = _internal_kv_get(LIMITS_KEY, namespace=NAMESPACE)
    return json.loads(raw) if raw else {}
