"""What the engine tests share: run one request on a fresh engine, catch its failure, join its deltas."""

from __future__ import annotations

import pytest

from aimu_ray.engines import EngineCache, engine_class, local_engine_class, protocol_of
from aimu_ray.models import ChatDelta, ChatRequest, ChatResult
from aimu_ray.models.load import ModelLoad, Target


async def run(request: ChatRequest) -> tuple[list[ChatDelta], ChatResult]:
    """The deltas (none unless streaming) and the final result of one request on a fresh engine."""
    engine = engine_class(protocol_of(request.provider), "text")(request.endpoint)
    try:
        if not request.stream:
            return [], await engine.run(request)
        items = [item async for item in engine.stream(request)]
        assert all(isinstance(item, ChatDelta) for item in items[:-1]) and isinstance(items[-1], ChatResult)
        return items[:-1], items[-1]
    finally:
        await engine.aclose()


async def failure(request: ChatRequest) -> Exception:
    with pytest.raises(Exception) as caught:
        await run(request)
    return caught.value


def text_of(deltas: list[ChatDelta], phase: str) -> str:
    return "".join(d.text for d in deltas if d.phase == phase)


def loaded(load: ModelLoad, target: Target | None = None):
    """The in-process engine for ``load``, found as a host finds it and loaded on ``target`` (CPU by default)."""
    return local_engine_class(load)(load, target or Target())


class Direct:
    """The real engines, called in this process: the request crosses the wire to the fake."""

    def __init__(self) -> None:
        self.engines = EngineCache()
        self.requests = []

    async def call(self, request):
        self.requests.append(request)
        return await self.engines.get(request).run(request)

    def stream(self, request):
        self.requests.append(request)
        return self.engines.get(request).stream(request)
