"""The cluster-wide cap on requests in flight per provider, as one actor that workers ask for permits.

Workers call it only for providers that have a limit, so unlimited providers pay no extra hop. Each
permit is a *ticket* named by the worker, which makes every exit path safe to report blindly:
``release(ticket)`` frees a held permit, withdraws a waiting one, or (if it overtook its ``acquire``)
cancels that acquire in advance. Tickets also record their *holder* (a worker key) so the pool
manager can return everything a dead worker held with ``release_holder``.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter, defaultdict, deque
from dataclasses import dataclass, field

import ray

LIMITER_NAME = "limiter"
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
        self._limits: dict[str, int] = {}
        self._tickets: dict[str, _Ticket] = {}
        self._queues: dict[str, deque[str]] = defaultdict(deque)
        self._in_use: Counter[str] = Counter()
        self._released_early: set[str] = set()

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

    def _grant(self, provider: str) -> None:
        queue = self._queues[provider]
        while queue and self._in_use[provider] < self._limits.get(provider, math.inf):
            entry = self._tickets.get(queue.popleft())
            if entry is not None and not entry.granted.done():
                self._in_use[provider] += 1
                entry.granted.set_result(None)
