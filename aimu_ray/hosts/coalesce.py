"""Streams across Ray: send what is ready together, so a fast provider costs one Ray message per batch.

Each item a Ray generator yields is one message back to the caller (~0.2-1 ms here). A provider that
produces tokens faster than that would make Ray the bottleneck; one that is slower sees every token
sent alone, at once. ``coalesce`` does both: it waits for the first item, then takes everything else
that has already arrived.
"""

from __future__ import annotations

import asyncio
from contextlib import aclosing, suppress
from typing import AsyncIterator, TypeVar

T = TypeVar("T")
_END = object()


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


async def coalesce(items: AsyncIterator[T]) -> AsyncIterator[list[T]]:
    """Batches of ``items`` in order; a failure is raised after the items that came before it."""
    queue: asyncio.Queue = asyncio.Queue()

    async def pump() -> None:
        try:
            async with aclosing(items):
                async for item in items:
                    queue.put_nowait(item)
        except Exception as error:
            queue.put_nowait(_Failure(error))
        else:
            queue.put_nowait(_END)

    task = asyncio.create_task(pump())
    try:
        while True:
            batch = [await queue.get()]
            while not queue.empty():
                batch.append(queue.get_nowait())
            tail = batch[-1]
            if tail is _END or isinstance(tail, _Failure):
                if len(batch) > 1:
                    yield batch[:-1]
                if isinstance(tail, _Failure):
                    raise tail.error
                return
            yield batch
    finally:
        task.cancel()                    # the caller went away: stop reading from the provider
        with suppress(asyncio.CancelledError):
            await task
