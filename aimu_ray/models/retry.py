"""The one retry loop: try a request again only while nothing of its answer has reached the caller.

Engines retry a provider's HTTP call after a backoff; backends retry an actor call on another pool
worker or once a restarted model actor is back. Both run through here, so the rule that matters most is
written once: a stream that already yielded is never tried again, because that would repeat its text.
What is worth another try, and the recovery work before it, belong to the caller's ``should_retry``.
"""

from __future__ import annotations

from contextlib import aclosing
from itertools import count
from typing import AsyncIterator, Awaitable, Callable, TypeVar

T = TypeVar("T")

ShouldRetry = Callable[[Exception, int, bool], Awaitable[bool]]
"""``should_retry(error, attempt, started)``: may the request go again after ``error`` ended attempt number
``attempt`` (from 0)? ``started`` says a stream had yielded: it is never retried then, whatever the answer, and is
asked only so that it can raise a clearer error. It does any recovery work (a backoff, a fresh actor) before
answering True, and may raise the error the caller should see instead of answering False."""


async def retried(call: Callable[[], Awaitable[T]], should_retry: ShouldRetry) -> T:
    """``call()``'s answer, calling it again after each failure that ``should_retry`` approves."""
    for attempt in count():
        try:
            return await call()
        except Exception as error:
            if not await should_retry(error, attempt, False):
                raise


async def retried_stream(open_attempt: Callable[[], AsyncIterator[T]], should_retry: ShouldRetry) -> AsyncIterator[T]:
    """The items of ``open_attempt()``, opened again after a failure that ``should_retry`` approves as long as none
    was yielded. Closing this early closes the attempt in progress, and with it the work behind it."""
    for attempt in count():
        started = False
        try:
            async with aclosing(open_attempt()) as items:
                async for item in items:
                    started = True
                    yield item
            return
        except Exception as error:
            if not await should_retry(error, attempt, started) or started:
                raise
