"""HostCore, without Ray: what every host does around a request (count it, refuse it once retiring, end it when
the model is unloaded, batch its stream)."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager

import pytest

from aimu_ray.hosts.core import HostCore, ModelRetiredError
from aimu_ray.models.errors import ModelUnloadedError


class SlowEngine:
    """Answers once ``release`` is set; streams its items one at a time."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.closed = False

    async def run(self, request):
        await self.release.wait()
        return f"answer to {request}"

    async def stream(self, request):
        try:
            for item in ("a", "b", "c"):
                await self.release.wait()
                yield item
        finally:
            self.closed = True


async def test_a_request_is_counted_until_it_ends_and_resets_the_idle_clock():
    core, engine = HostCore("m"), SlowEngine()
    running = asyncio.create_task(core.run(engine, "q"))
    await asyncio.sleep(0.01)
    assert core.in_flight == 1 and not core.retire_if_idle(0.0)
    engine.release.set()
    assert await running == "answer to q"
    assert core.in_flight == 0 and core.idle_s() < 1.0


async def test_hold_is_entered_once_the_request_is_counted():
    core, engine, seen = HostCore("m"), SlowEngine(), []

    @asynccontextmanager
    async def permit():
        seen.append(core.in_flight)
        yield

    engine.release.set()
    await core.run(engine, "q", permit())
    assert [batch async for batch in core.stream(engine, "q", permit())]
    assert seen == [1, 1]


async def test_a_stream_comes_in_batches_and_closing_it_stops_the_engine():
    core, engine = HostCore("m"), SlowEngine()
    engine.release.set()
    batches = [batch async for batch in core.stream(engine, "q")]
    assert [item for batch in batches for item in batch] == ["a", "b", "c"] and core.in_flight == 0

    engine = SlowEngine()
    stream = core.stream(engine, "q")
    waiting = asyncio.create_task(stream.__anext__())
    await asyncio.sleep(0.01)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await stream.aclose()
    assert engine.closed and core.in_flight == 0


async def test_a_retiring_host_refuses_new_requests_and_says_how_many_run():
    core, engine = HostCore("tiny model"), SlowEngine()
    running = asyncio.create_task(core.run(engine, "q"))
    await asyncio.sleep(0.01)
    assert core.retire() == 1 and core.retiring
    with pytest.raises(ModelRetiredError, match="tiny model is being unloaded"):
        await core.run(engine, "late")
    engine.release.set()
    assert await running == "answer to q"


async def test_an_idle_host_retires_itself_once():
    core = HostCore("m")
    assert not core.retire_if_idle(60.0)
    assert core.retire_if_idle(0.0) and core.retiring


async def test_ending_the_requests_fails_them_as_unloaded_but_a_plain_cancel_stays_a_cancel():
    core, engine = HostCore("tiny model"), SlowEngine()
    cancelled = asyncio.create_task(core.run(engine, "q"))
    await asyncio.sleep(0.01)
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled

    requests = [asyncio.create_task(core.run(engine, "q")), asyncio.create_task(_drain(core.stream(engine, "q")))]
    await asyncio.sleep(0.01)
    assert await asyncio.to_thread(core.end_requests, 5.0) == 2      # a control call, from another thread
    for request in requests:
        with pytest.raises(ModelUnloadedError, match="tiny model was unloaded"):
            await request
    assert core.in_flight == 0


async def _drain(stream):
    return [batch async for batch in stream]
