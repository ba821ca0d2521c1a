"""The engine protocol and the one retry loop every remote provider shares.

An engine is a plain class that knows nothing of Ray: it turns a ``ChatRequest`` into one provider
call and the answer into a ``ChatResult`` (or a stream of ``ChatDelta`` ending in a ``ChatResult``).
It raises only ``aimu_ray.models.errors`` types. HTTP retries live here, once, not in each engine:
the SDKs' own retries are switched off so every provider backs off the same way and honours
``Retry-After``.
"""

from __future__ import annotations

import asyncio
import logging
import random
from contextlib import aclosing
from typing import AsyncIterator, Awaitable, Callable, Protocol, TypeVar

from ..models.errors import ConnectionDroppedError, ModelTimeoutError, ProviderError
from ..models.wire import ChatDelta, ChatRequest, ChatResult

logger = logging.getLogger("aimu_ray")

T = TypeVar("T")
BASE_DELAY_S = 0.5
MAX_DELAY_S = 20.0
MAX_RETRY_AFTER_S = 60.0


class Engine(Protocol):
    async def chat(self, request: ChatRequest) -> ChatResult: ...

    def stream(self, request: ChatRequest) -> AsyncIterator[ChatDelta | ChatResult]: ...

    async def aclose(self) -> None: ...


def is_retryable(error: BaseException) -> bool:
    """429, 5xx (and 408/409), timeouts and dropped connections; never 4xx, refusals or broken protocol."""
    if isinstance(error, (ModelTimeoutError, ConnectionDroppedError)):
        return True
    return isinstance(error, ProviderError) and error.retryable


def backoff_delay(attempt: int, error: BaseException) -> float:
    """The server's Retry-After when it gave one (capped), else exponential backoff with full jitter."""
    hint = getattr(error, "retry_after", None)
    if hint is not None:
        return min(max(hint, 0.0), MAX_RETRY_AFTER_S)
    return random.uniform(0, min(MAX_DELAY_S, BASE_DELAY_S * 2 ** attempt))


async def with_retries(call: Callable[[], Awaitable[T]], max_retries: int) -> T:
    for attempt in range(max_retries + 1):
        try:
            return await call()
        except Exception as error:
            if attempt == max_retries or not is_retryable(error):
                raise
            delay = backoff_delay(attempt, error)
            logger.warning("%s; retry %d/%d in %.2fs", type(error).__name__, attempt + 1, max_retries, delay)
            await asyncio.sleep(delay)
    raise AssertionError("unreachable")


async def stream_with_retries(open_stream: Callable[[], AsyncIterator[T]], max_retries: int) -> AsyncIterator[T]:
    """Retry a stream only while it has produced nothing: once text reached the caller, a retry would repeat it."""
    for attempt in range(max_retries + 1):
        started = False
        try:
            async with aclosing(open_stream()) as items:   # a consumer that stops early closes the provider stream
                async for item in items:
                    started = True
                    yield item
            return
        except Exception as error:
            if started or attempt == max_retries or not is_retryable(error):
                raise
            delay = backoff_delay(attempt, error)
            logger.warning("%s before the first chunk; retry %d/%d in %.2fs",
                           type(error).__name__, attempt + 1, max_retries, delay)
            await asyncio.sleep(delay)
