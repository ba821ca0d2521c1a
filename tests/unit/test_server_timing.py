"""Server-Timing: the app's time on every answer, and the engine's share where the request recorded one."""

from __future__ import annotations

import asyncio
import re

import httpx
from fastapi import FastAPI

from aimu_ray.deployments.server_timing import ServerTiming, record_engine_time


def timed_app() -> FastAPI:
    app = FastAPI()

    @app.get("/engine")
    async def engine() -> dict:
        await asyncio.sleep(0.02)
        record_engine_time(0.015)
        return {"ok": True}

    @app.get("/plain")
    async def plain() -> dict:
        return {"ok": True}

    app.add_middleware(ServerTiming)
    return app


async def get(path: str) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=timed_app()), base_url="http://t") as client:
        return await client.get(path)


def durations(header: str) -> dict[str, float]:
    return {name: float(ms) for name, ms in re.findall(r"(\w+);dur=([0-9.]+)", header)}


async def test_a_whole_answer_carries_the_apps_time_and_the_engines_share_of_it():
    answer = await get("/engine")
    timing = durations(answer.headers["server-timing"])
    assert timing["engine"] == 15.0 and timing["app"] >= 20.0
    assert answer.json() == {"ok": True}


async def test_an_answer_without_an_engine_carries_the_apps_time_only_and_a_404_too():
    assert list(durations((await get("/plain")).headers["server-timing"])) == ["app"]
    assert "app;dur=" in (await get("/nowhere")).headers["server-timing"]


def test_outside_a_request_recording_does_nothing():
    record_engine_time(1.0)
