"""The caller's side of one actor call, shared by the pool and model backends: await it, unwrap its error, cancel it.

The backends differ only in what they do when an actor is lost (another pool worker, a restarted
model actor: their ``should_retry`` for ``models.retry``); sending, flattening a stream's batches and
cancelling on close are the same and live here.
"""

from __future__ import annotations

import asyncio
from typing import AsyncIterator

import ray
from ray.exceptions import RayTaskError

from ..cluster.connection import result_of, unwrapped


async def call(method, *args):
    """One whole answer from ``method`` (an actor method); cancelling the caller cancels the call."""
    ref = method.remote(*args)
    try:
        return await result_of(ref)
    except RayTaskError as failure:
        raise unwrapped(failure)
    except asyncio.CancelledError:
        ray.cancel(ref)
        raise


async def stream(method, *args) -> AsyncIterator:
    """The items of ``method``'s stream (a Ray generator of batches), one by one; closing this cancels it."""
    items = method.remote(*args)
    try:
        async for ref in items:
            for item in await result_of(ref):
                yield item
    except RayTaskError as failure:
        raise unwrapped(failure)
    except (asyncio.CancelledError, GeneratorExit):
        ray.cancel(items)
        raise
