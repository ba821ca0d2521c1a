"""Another Ray Serve app that calls models the aimu_ray app serves, through deployment handles.

The same works from any Ray job or actor on the cluster: ``aimu_ray.connect(name)`` (sync) or
``await aimu_ray.aio.connect(name)`` gives the aimu client contract — messages, streams, ``last_*``,
typed errors — over the served model, with the server's keys and weights. No HTTP on the way.

    aimu-ray serve examples/serve.yaml &                                  # the models
    serve run examples.handle_app:app                                     # this app, at /summarize
    curl -X POST localhost:8000/summarize -d 'Ray is a framework for scaling AI and Python apps...'
"""

from __future__ import annotations

from ray import serve
from starlette.requests import Request

from aimu_ray import aio


@serve.deployment
class Summarizer:
    def __init__(self, model: str = "qwen3-8b", app: str = "aimu_ray") -> None:
        self._model, self._app = model, app

    async def summarize(self, text: str, max_tokens: int = 64) -> str:
        """One conversation per call: a fresh client, so concurrent calls never share messages."""
        client = await aio.connect(self._model, app=self._app, system="Summarize in one sentence.")
        return await client.chat(text, generate_kwargs={"max_tokens": max_tokens})

    async def __call__(self, request: Request) -> dict:
        return {"summary": await self.summarize((await request.body()).decode())}


app = Summarizer.bind()
