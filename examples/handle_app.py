"""Another Ray Serve app that calls models the aimu_ray app serves, through deployment handles.

The same works from any Ray job or actor on the cluster: ``aimu_ray.connect(name)`` (sync) or
``await aimu_ray.aio.connect(name)`` gives the aimu client contract — messages, streams, ``last_*``,
typed errors — over the served model, with the server's keys and weights. No HTTP on the way.

    ray start --head                                # one Ray for both apps (`serve run` finds it, as aimu-ray does)
    aimu-ray serve examples/serve.yaml &            # the models, at / on port 8000
    serve run --non-blocking --name summarize --route-prefix /summarize examples.handle_app:app
    curl -X POST localhost:8000/summarize -d 'Ray is a framework for scaling AI and Python apps...'

Run from the repository root (the app's module is ``examples.handle_app``). Every flag matters. ``serve run``
deploys at ``/`` unless told otherwise, and ``/`` is the aimu_ray app's; it names every app ``default``, so a
second app of that name would replace the first; and when a deploy fails, or on Ctrl-C when it blocks, it
shuts all of Serve down (``serve.shutdown()``), the aimu_ray app with it. ``serve shutdown`` stops both apps.
Without ``ray start``, ``aimu-ray serve`` runs on an embedded Ray that ``serve run`` cannot find by itself:
give ``serve run`` ``--address`` with the Ray address ``aimu-ray serve`` prints when it starts.
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
