"""The one retry loop engines and backends share, the engines' backoff policy over it, and the Retry-After hints
it honours; no server, no Ray."""

from __future__ import annotations

import email.utils
import logging
import time
from types import SimpleNamespace

import pytest

from aimu_ray.engines import base as engine_base
from aimu_ray.engines.remote.errors import retry_after
from aimu_ray.engines.base import backoff_delay, is_retryable, stream_with_retries, with_retries
from aimu_ray.models import (ContextOverflowError, ModelConnectionError, ModelTimeoutError, ProviderError,
                             ProviderResponseError, RateLimitError)
from aimu_ray.models.retry import retried, retried_stream


@pytest.fixture
def sleeps(monkeypatch) -> list[float]:
    """Record the backoff delays instead of waiting them out."""
    delays: list[float] = []

    async def record(delay: float) -> None:
        delays.append(delay)

    monkeypatch.setattr(engine_base, "asyncio", SimpleNamespace(sleep=record))   # this module only: servers keep theirs
    return delays


class Flaky:
    """Fails with the given errors in turn, then answers ``"ok"``."""

    def __init__(self, *errors: Exception):
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


def status(code: int, wait: float | None = None) -> ProviderError:
    kind = RateLimitError if code in (429, 529) else ProviderError
    return kind(f"HTTP {code}", provider="fake", status_code=code, retry_after=wait)


# -- Retry-After ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("headers, expected", [
    ({"retry-after": "2"}, 2.0),
    ({"retry-after": "0.5"}, 0.5),
    ({"retry-after-ms": "1500", "retry-after": "2"}, 1.5),
    ({"retry-after-ms": "soon", "retry-after": "2"}, 2.0),
    ({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, 0.0),          # a date already past: no wait
    ({"retry-after": "whenever"}, None),
    ({}, None),
])
def test_retry_after_header_forms(headers, expected):
    assert retry_after(headers) == expected


def test_retry_after_as_a_future_http_date():
    date = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 27 < retry_after({"retry-after": date}) <= 30


# -- what is retried -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("error, retryable", [
    (status(429), True), (status(529), True), (status(500), True), (status(503), True), (status(408), True),
    (status(409), True), (status(400), False), (status(401), False), (status(404), False),
    (ModelTimeoutError("slow"), True), (ModelConnectionError("refused"), False),
    (ProviderResponseError("garbage", provider="fake"), False), (ContextOverflowError("too long"), False),
    (ValueError("bad input"), False),
])
def test_is_retryable(error, retryable):
    assert is_retryable(error) is retryable


def test_backoff_honours_the_hint_up_to_a_cap():
    assert backoff_delay(0, status(429, wait=1.0)) == 1.0
    assert backoff_delay(3, status(429, wait=3600)) == engine_base.MAX_RETRY_AFTER_S


def test_backoff_without_a_hint_is_jittered_exponential_and_capped():
    for attempt in range(12):
        ceiling = min(engine_base.MAX_DELAY_S, engine_base.BASE_DELAY_S * 2 ** attempt)
        assert all(0 <= backoff_delay(attempt, status(500)) <= ceiling for _ in range(20))


# -- with_retries --------------------------------------------------------------------------------------------

@pytest.mark.asyncio
async def test_retries_until_success_waiting_the_hint(sleeps):
    call = Flaky(status(429, wait=1.0), status(503, wait=0.25))

    assert await with_retries(call, max_retries=3) == "ok"
    assert call.calls == 3 and sleeps == [1.0, 0.25]


@pytest.mark.asyncio
async def test_gives_up_after_max_retries_with_the_last_error(sleeps):
    last = status(500)
    call = Flaky(status(500), status(500), last)

    with pytest.raises(ProviderError) as caught:
        await with_retries(call, max_retries=2)

    assert caught.value is last and call.calls == 3 and len(sleeps) == 2


@pytest.mark.asyncio
@pytest.mark.parametrize("error", [status(400), ModelConnectionError("refused"), ContextOverflowError("long")])
async def test_does_not_retry_what_cannot_succeed(sleeps, error):
    call = Flaky(error)

    with pytest.raises(type(error)):
        await with_retries(call, max_retries=5)

    assert call.calls == 1 and sleeps == []


@pytest.mark.asyncio
async def test_zero_retries_is_one_attempt(sleeps):
    call = Flaky(ModelTimeoutError("slow"))

    with pytest.raises(ModelTimeoutError):
        await with_retries(call, max_retries=0)

    assert call.calls == 1


@pytest.mark.asyncio
async def test_a_retry_is_logged_by_error_type_only(sleeps, caplog):
    await with_retries(Flaky(RateLimitError("secret detail sk-123", provider="fake", status_code=429)), max_retries=1)

    [record] = [r for r in caplog.records if r.name == "aimu_ray"]
    assert record.levelno == logging.WARNING and "RateLimitError" in record.getMessage()
    assert "sk-123" not in caplog.text


# -- stream_with_retries -------------------------------------------------------------------------------------

def flaky_stream(*plans: list):
    """A stream opener whose n-th opening yields the items of plans[n], raising any exception among them."""
    openings = iter(plans)

    async def open_stream():
        for item in next(openings):
            if isinstance(item, Exception):
                raise item
            yield item

    return open_stream


@pytest.mark.asyncio
async def test_stream_is_retried_while_nothing_was_yielded(sleeps):
    opener = flaky_stream([status(429, wait=0.5)], [ModelTimeoutError("slow")], ["a", "b"])

    assert [item async for item in stream_with_retries(opener, max_retries=2)] == ["a", "b"]
    assert sleeps[0] == 0.5 and len(sleeps) == 2


@pytest.mark.asyncio
async def test_stream_is_not_retried_once_text_reached_the_caller(sleeps):
    opener = flaky_stream(["a", status(503)], ["a", "b"])
    received = []

    with pytest.raises(ProviderError):
        async for item in stream_with_retries(opener, max_retries=3):
            received.append(item)

    assert received == ["a"] and sleeps == []


# -- the shared loop (models.retry): what engines and backends both run ---------------------------------------

class Judge:
    """A ``should_retry`` that records what it was asked and answers from a list (then False)."""

    def __init__(self, *answers: bool):
        self.answers = list(answers)
        self.asked: list[tuple[str, int, bool]] = []

    async def __call__(self, error: Exception, attempt: int, started: bool) -> bool:
        self.asked.append((str(error), attempt, started))
        return self.answers.pop(0) if self.answers else False


@pytest.mark.asyncio
async def test_a_call_is_retried_only_while_should_retry_says_so():
    call = Flaky(ValueError("one"), ValueError("two"), ValueError("three"))
    judge = Judge(True, True, False)

    with pytest.raises(ValueError, match="three"):
        await retried(call, judge)

    assert call.calls == 3 and judge.asked == [("one", 0, False), ("two", 1, False), ("three", 2, False)]


@pytest.mark.asyncio
async def test_a_call_that_succeeds_on_a_retry_returns_its_answer():
    call = Flaky(ValueError("once"))

    assert await retried(call, Judge(True)) == "ok"
    assert call.calls == 2


@pytest.mark.asyncio
async def test_should_retry_may_raise_a_clearer_error():
    async def clearer(error, attempt, started):
        raise ModelConnectionError("clearer") from error

    with pytest.raises(ModelConnectionError, match="clearer") as caught:
        await retried(Flaky(ValueError("raw")), clearer)

    assert isinstance(caught.value.__cause__, ValueError)


@pytest.mark.asyncio
async def test_a_stream_that_failed_before_its_first_item_is_retried():
    opener = flaky_stream([ValueError("refused")], ["a", "b"])
    judge = Judge(True)

    assert [item async for item in retried_stream(opener, judge)] == ["a", "b"]
    assert judge.asked == [("refused", 0, False)]


@pytest.mark.asyncio
async def test_a_stream_that_failed_after_its_first_item_is_not_retried_whatever_the_answer():
    opener = flaky_stream(["a", ValueError("lost")], ["a", "b"])
    judge = Judge(True)
    received = []

    with pytest.raises(ValueError, match="lost"):
        async for item in retried_stream(opener, judge):
            received.append(item)

    assert received == ["a"] and judge.asked == [("lost", 0, True)]


@pytest.mark.asyncio
async def test_closing_a_stream_early_closes_the_attempt():
    closed = []

    async def attempt():
        try:
            yield "a"
            yield "b"
        finally:
            closed.append(True)

    items = retried_stream(attempt, Judge())
    assert await items.__anext__() == "a"
    await items.aclose()

    assert closed == [True]
