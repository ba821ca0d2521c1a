"""coalesce: what is ready travels together, nothing waits for company, order and failures are kept."""

import asyncio

import pytest

from aimu_ray.hosts.coalesce import coalesce


async def produce(items, gap_s=0.0, fail=None, closed=None):
    try:
        for item in items:
            if gap_s:
                await asyncio.sleep(gap_s)
            yield item
        if fail:
            raise fail
    finally:
        if closed is not None:
            closed.append(True)


async def test_items_that_are_ready_arrive_in_one_batch():
    batches = [b async for b in coalesce(produce(range(5)))]
    assert [i for b in batches for i in b] == [0, 1, 2, 3, 4] and len(batches) < 5


async def test_a_slow_producer_sees_every_item_sent_alone_and_at_once():
    loop = asyncio.get_running_loop()
    arrivals = []
    async for batch in coalesce(produce("abc", gap_s=0.05)):
        arrivals.append((batch, loop.time()))
    assert [b for b, _ in arrivals] == [["a"], ["b"], ["c"]]
    assert arrivals[1][1] - arrivals[0][1] >= 0.04       # not held back for a batch


async def test_failure_comes_after_the_items_before_it():
    seen = []
    with pytest.raises(RuntimeError, match="boom"):
        async for batch in coalesce(produce([1, 2], fail=RuntimeError("boom"))):
            seen += batch
    assert seen == [1, 2]


async def test_closing_early_closes_the_producer():
    closed = []
    batches = coalesce(produce(range(100), gap_s=0.01, closed=closed))
    assert await batches.__anext__() == [0]
    await batches.aclose()
    await asyncio.sleep(0)
    assert closed == [True]
