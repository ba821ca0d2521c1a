"""The engine protocol and the retry policy every remote provider shares (the loop itself: ``models.retry``).

An engine is a plain class that knows nothing of Ray: it turns one request (text, image or audio) into its
whole answer (``run``) or a stream of progress ending in it (``stream``), and raises only
``aimu_ray.models.errors`` types. The remote engines' HTTP retries are decided here, once, not in each engine:
the SDKs' own retries are switched off so every provider backs off the same way and honours
``Retry-After``.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import AsyncIterator, Awaitable, Callable, Protocol, TypeVar

from ..models.errors import ConnectionDroppedError, ModelTimeoutError, ProviderError
from ..models.retry import ShouldRetry, retried, retried_stream
from ..models.modality import Item, Request, Result

logger = logging.getLogger("aimu_ray")

T = TypeVar("T")
BASE_DELAY_S = 0.5
MAX_DELAY_S = 20.0
MAX_RETRY_AFTER_S = 60.0


class Engine(Protocol):
    """Every engine, whatever it makes: ``run`` gives the whole answer, ``stream`` progress (deltas of text,
    denoising steps) ending in that answer. Requests and answers go by modality: a ``ChatRequest`` gets a
    ``ChatResult``, an ``ImageRequest`` an ``ImageResult``, an ``AudioRequest`` an ``AudioResult``; and from ``run``, a
    ``ChatRequest`` marked ``count_only`` gets a ``TokenCount`` of its prompt (a provider that cannot count refuses
    with a ValueError naming itself)."""

    async def run(self, request: Request) -> Result: ...

    def stream(self, request: Request) -> AsyncIterator[Item]: ...

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
    return await retried(call, _backing_off(max_retries, ""))


def stream_with_retries(open_stream: Callable[[], AsyncIterator[T]], max_retries: int) -> AsyncIterator[T]:
    """Retry a stream only while it has produced nothing: once text reached the caller, a retry would repeat it."""
    return retried_stream(open_stream, _backing_off(max_retries, " before the first chunk"))


def _backing_off(max_retries: int, when: str) -> ShouldRetry:
    """Retry what may succeed later (``is_retryable``), up to ``max_retries`` times, after ``backoff_delay``."""
    async def should_retry(error: Exception, attempt: int, started: bool) -> bool:
        if started or attempt == max_retries or not is_retryable(error):
            return False
        delay = backoff_delay(attempt, error)
        logger.warning("%s%s; retry %d/%d in %.2fs", type(error).__name__, when, attempt + 1, max_retries, delay)
        await asyncio.sleep(delay)
        return True

    return should_retry
