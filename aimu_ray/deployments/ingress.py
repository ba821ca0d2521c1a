"""The OpenAI-compatible HTTP ingress: routes from one table, each answered without a client object.

Each served model is resolved once (``served_models``). A chat body becomes a ``ChatRequest`` through the request
core the Python clients use (kwargs mapping per provider, thinking, limits) and goes to the model: an in-process
model's copies through the model registry (loaded at start, or at the first request with ``load: on_demand``,
which waits up to ``load_wait_s``), a remote model through the remote deployment's handle. Its ``ChatResult`` (or
stream) comes back as OpenAI's JSON (or SSE). A remote model takes tools, images and ``reasoning_effort`` as asked
and its provider judges them; an in-process model is checked here. Admin routes (their own keys) load, unload, add
and remove models at runtime, within the config's ``admin`` policy. Errors answer from the one table in ``errors``;
bodies over the limit stop in ``body_limit``.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import logging
import re
import secrets
import time
from contextlib import aclosing, asynccontextmanager
from typing import Any, AsyncIterator

from fastapi import Body, Depends, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, Response, StreamingResponse
from ray import serve

from ..backends.serve import INGRESS
from ..clients.requests import audio_request, fold, image_request
from ..hosts.registry import get_registry
from ..models.limits import set_limits
from ..models.outputs import encode_audio, encode_image
from ..models.placements import ModelPlacement
from ..models.wire import ChatDelta, ChatResult
from .admin import served_as
from .body_limit import BodyLimit
from .config import AppConfig
from .errors import HANDLED, RESPONSES, answer_for, error_handler
from .metrics import Metrics
from .openai_api import (AudioGenerationRequest, ChatCompletionRequest, ImageGenerationRequest, chat_chunk,
                         chat_completion, completion_id, delta_out, finish_reason, tool_calls_delta, usage_out)
from .served_models import Served, ServedModels
from .status import model_state, serve_apps

logger = logging.getLogger("aimu_ray")
FILE_NAME = re.compile(r"^[A-Za-z0-9_-]{20,64}\.(png|wav)$")
REMOTE = "remote"              # the one deployment of every remote-provider model
CARD_PLACEMENT = {"replica", "state", "node_id", "device", "gpu_ids", "num_gpus", "need_bytes", "reserved_bytes",
                  "used_bytes", "estimate_error_pct", "used_vram_bytes", "used_ram_bytes", "in_flight",
                  "reason"}   # a card's view of one copy
CLIENT_CLOSED = 499            # nginx's status for a request whose client went away; only metrics see it

api = FastAPI(title="aimu_ray", version="1", description="OpenAI-compatible chat, images and audio over Ray Serve.")


class Ingress:
    async def __init__(self, config: AppConfig, deployments: dict) -> None:
        """``deployments``: the remote deployment's handle (Serve binds it), when the app has remote models."""
        self._config = config
        self._app = serve.get_replica_context().app_name
        self.keys, self.admin_keys = config.bearer_keys(), config.admin_keys()
        self._files = config.output_dir.resolve()
        self._files.mkdir(parents=True, exist_ok=True)
        self._models = ServedModels(config, deployments.get(REMOTE), self._app)
        self._metrics = Metrics()
        set_limits(config.limits)          # the request core checks the app's limits here; BodyLimit reads them too
        await self._models.load_at_start()

    # ----- for Python callers (``clients.served.connect``) -----

    async def describe(self, name: str) -> dict:
        """What a caller needs to reach the model itself: an in-process model's load (its copies), or the remote
        deployment that serves it."""
        await self._models.sync()
        served = self._models.get(name)
        if served is None:
            raise ValueError(f"No served model named {name!r}. Served: {self._names()}.")
        return {"model": served.config.model, "task": served.config.task, "load": served.load,
                "deployment": None if served.load else REMOTE}

    # ----- HTTP -----

    async def healthz(self) -> dict:
        return {"status": "ok"}

    async def metrics(self) -> Response:
        rows, (_, evicted) = await asyncio.gather(_registry_rows(), _registry_evictions())
        self._metrics.set_memory(self._named(rows))
        self._metrics.set_evictions(evicted)
        return Response(self._metrics.render(), media_type="text/plain; version=0.0.4")

    async def list_models(self) -> dict:
        await self._models.sync()
        status = (await asyncio.to_thread(serve_apps)).get(self._app, {})
        rows = self._named(await _registry_rows())
        cards = await asyncio.gather(*(self._model_card(served, status, rows) for served in self._models.all()))
        return {"object": "list", "data": list(cards)}

    async def get_model(self, name: str) -> dict:
        """One served model's card, as OpenAI's ``GET /v1/models/{id}`` answers; 404 for a name not served."""
        served = await self._known(name)
        status = (await asyncio.to_thread(serve_apps)).get(self._app, {})
        return await self._model_card(served, status, self._named(await _registry_rows()))

    async def chat_completions(self, body: ChatCompletionRequest, request: Request):
        served = await self._serving(body.model, "text")
        if body.has_images() and not served.model.caps.vision:
            raise HTTPException(400, f"Model {body.model!r} does not take images.")
        if body.tools and body.tool_choice != "none" and not served.model.caps.tools:
            raise HTTPException(400, f"Model {body.model!r} does not take tools (its config can say so with "
                                     "';tools' after its model string).")
        if body.stream:
            return await self._event_stream(body.model, "chat", self._chat_events(served, body))
        async with self._observed(body.model, "chat"):
            answer = fold(await served.backend.call(body.as_request(served.model, served.warn)), served.model)
        self._metrics.count_tokens(body.model, answer.usage)
        return chat_completion(completion_id(), body.model, answer)

    async def image_generations(self, body: ImageGenerationRequest, request: Request) -> dict:
        served = await self._serving(body.model, "image")
        settings = {key: value for key in ("negative_prompt", "num_inference_steps", "guidance_scale", "seed")
                    if (value := getattr(body, key)) is not None}
        async with self._observed(body.model, "images"):
            asked = image_request(provider=served.model.provider, model=served.model.model_id, prompt=body.prompt,
                                  num_images=body.n, **body.dimensions(), **settings)
            pngs = [encode_image(pixels, "bytes") for pixels in (await served.backend.call(asked)).images]
        return self._media(pngs, "png", body.response_format, request)

    async def audio_generations(self, body: AudioGenerationRequest, request: Request):
        served = await self._serving(body.model, "audio")
        async with self._observed(body.model, "audio"):
            asked = audio_request(provider=served.model.provider, model=served.model.model_id, prompt=body.prompt,
                                  duration_s=body.duration_s, num_inference_steps=body.num_inference_steps,
                                  num_audio=body.n, seed=body.seed)
            wavs = [encode_audio(clip, "bytes") for clip in (await served.backend.call(asked)).clips]
        if body.response_format == "wav":                # one clip: the body checked n == 1
            return Response(wavs[0], media_type="audio/wav")
        return self._media(wavs, "wav", body.response_format, request)

    async def files(self, name: str) -> FileResponse:
        """A generated image or clip, by the unguessable name its response carried."""
        path = self._files / name
        if not FILE_NAME.fullmatch(name) or not path.is_file():
            raise HTTPException(404, "No such file.")
        return FileResponse(path, media_type="image/png" if name.endswith(".png") else "audio/wav")

    # ----- helpers -----

    async def _serving(self, name: str, task: str) -> Served:
        """The served model a request names, loaded: 404 if none, 400 if it makes something else, 503 while it
        is still loading after ``load_wait_s``."""
        await self._models.sync()
        served = self._models.get(name)
        if served is None:
            raise HTTPException(404, f"The model {name!r} does not exist. Served models: {self._names()}.")
        if served.config.task != task:
            raise HTTPException(400, f"Model {name!r} makes {served.config.task}, not {task}.")
        await self._models.loaded(served, self._config.load_wait_s)
        return served

    def _names(self) -> str:
        return ", ".join(served.config.name for served in self._models.all())

    def _named(self, rows: list[ModelPlacement]) -> list[ModelPlacement]:
        """The registry's rows of the models served here, each under its served name."""
        names = {served.load.key(): served.config.name for served in self._models.all() if served.load}
        return [row.model_copy(update={"name": names[row.key]}) for row in rows if row.key in names]

    def _media(self, files: list[bytes], suffix: str, response_format: str, request: Request) -> dict:
        """OpenAI's images answer shape: each file inline (``b64_json``) or as a URL this app serves."""
        if response_format == "url":
            data = [{"url": self._publish(file, suffix, request)} for file in files]
        else:
            data = [{"b64_json": base64.b64encode(file).decode()} for file in files]
        return {"created": int(time.time()), "data": data}

    def _publish(self, data: bytes, suffix: str, request: Request) -> str:
        name = f"{secrets.token_urlsafe(24)}.{suffix}"
        (self._files / name).write_bytes(data)
        base = self._config.public_url or str(request.base_url)
        return f"{base.rstrip('/')}/v1/files/{name}"

    async def _model_card(self, served: Served, status: dict, rows: list[ModelPlacement]) -> dict:
        """OpenAI's model object, with its state and, for an in-process model, a row per copy."""
        name = served.config.name
        mine = [row for row in rows if row.name == name]
        if served.load is None:
            state, error = model_state(status.get(REMOTE))
            if state == "ready":                       # the deployment runs: is the model usable (its key)?
                state, error = await self._models.remote_state(name)
        else:
            state, error = _copies_state(mine), self._models.load_errors.get(name)
            state = "failed" if error and state == "unloaded" else state
        card = {"id": name, "object": "model", "created": 0, "owned_by": "aimu_ray", "modality": served.config.task,
                "state": state, "placement": [row.model_dump(include=CARD_PLACEMENT) for row in mine]}
        if served.load is not None:
            card.update(load=served.config.load, pinned=served.config.pin, replicas=len(mine))
        if error:
            card["error"] = error
        return card

    # ----- admin: its own keys (``admin_keys_env``), within the config's ``admin`` policy -----

    async def load_model(self, name: str) -> dict:
        """Load an in-process model now (waits up to ``load_wait_s``; 503 while it goes on loading)."""
        served = await self._known(name, in_process=True)
        await self._models.loaded(served, self._config.load_wait_s)
        return await self._card_of(name)

    async def unload_model(self, name: str) -> dict:
        """Unload every copy of an in-process model; the next request to it loads it again."""
        served = await self._known(name, in_process=True)
        await get_registry().unload.remote(served.load.key())
        served.backend.asked(served.load)            # this replica's handles point at nothing now
        return await self._card_of(name)

    async def put_model(self, name: str, body: dict[str, Any] = Body(...)) -> dict:
        """Serve a model under a new name, or change one added at runtime; those of the config stay as they are."""
        await self._models.sync(now=True)
        if self._models.in_config(name):
            raise HTTPException(409, f"Model {name!r} comes from the app's config; change it there and deploy.")
        model = served_as(name, body)
        self._config.admin.check(model)
        previous = self._models.get(name)
        served = await self._models.put(model)
        if previous is not None and previous.load is not None and previous.load.key() != served.load.key():
            await get_registry().unload.remote(previous.load.key())
        if model.load == "startup":
            self._models.load_soon(served)                 # the card says how it goes
        logger.info("admin: %s now serves %s", name, model.model)
        return await self._card_of(name)

    async def delete_model(self, name: str) -> dict:
        """Stop serving a model (unloading its copies); one of the config's comes back at the next deploy."""
        served = await self._known(name)
        await self._models.remove(name)
        if served.load is not None and not any(s.load == served.load for s in self._models.all()):
            await get_registry().unload.remote(served.load.key())
        logger.info("admin: %s removed", name)
        return {"id": name, "object": "model", "deleted": True}

    async def _known(self, name: str, in_process: bool = False) -> Served:
        await self._models.sync(now=True)
        served = self._models.get(name)
        if served is None:
            raise HTTPException(404, f"The model {name!r} does not exist. Served models: {self._names()}.")
        if served.load is None and in_process:
            raise HTTPException(400, f"Model {name!r} is a remote provider's: there is nothing to load or unload.")
        return served

    async def _card_of(self, name: str) -> dict:
        rows = self._named(await _registry_rows())
        return await self._model_card(self._models.get(name), {}, rows)

    async def _event_stream(self, model: str, route: str, events: AsyncIterator[dict]) -> Response:
        """An SSE response; the first event is awaited here so that an early error is a real status code."""
        observed = self._observed(model, route)
        await observed.__aenter__()
        try:
            first = await anext(events)
        except BaseException as error:
            await observed.__aexit__(type(error), error, error.__traceback__)
            await events.aclose()
            raise

        async def body() -> AsyncIterator[str]:
            failure: BaseException | None = None
            try:
                yield _sse(first)
                async with aclosing(events):
                    async for event in events:
                        yield _sse(event)
                yield "data: [DONE]\n\n"
            except Exception as error:        # headers are out: the error travels as an event, as OpenAI's does
                failure = error
                payload = answer_for(error).body
                logger.warning("stream for %s failed after it started: %s", model, payload["error"]["message"])
                yield _sse(payload)
            except BaseException as error:    # cancelled or closed: the client went away, which is no fault here
                failure = error
                logger.info("stream for %s ended early: its client went away or the request was cancelled", model)
                raise
            finally:
                await observed.__aexit__(type(failure) if failure else None, failure, None)

        return StreamingResponse(body(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def _chat_events(self, served: Served, body: ChatCompletionRequest) -> AsyncIterator[dict]:
        """OpenAI's chunks; the model's first item is awaited before the role chunk, so an early error has a status."""
        id, name = completion_id(), body.model
        result = ChatResult()                         # the stream's last item replaces it
        async with aclosing(served.backend.stream(body.as_request(served.model, served.warn))) as items:
            item = await anext(items, None)
            yield chat_chunk(id, name, {"role": "assistant", "content": ""})
            while item is not None:
                if isinstance(item, ChatDelta):
                    yield chat_chunk(id, name, delta_out(item))
                else:
                    result = item
                item = await anext(items, None)
        answer = fold(result, served.model)
        if answer.tool_calls:
            yield chat_chunk(id, name, tool_calls_delta(answer.tool_calls))
        yield chat_chunk(id, name, {}, finish_reason(answer.stop_reason, answer.tool_calls))
        self._metrics.count_tokens(name, answer.usage)
        if body.stream_options and body.stream_options.include_usage:
            yield chat_chunk(id, name, None, usage=usage_out(answer.usage))

    @asynccontextmanager
    async def _observed(self, model: str, route: str):
        """Count, time and gauge one request; the status recorded is the one the caller will see."""
        self._metrics.in_flight.labels(model).inc()
        started = time.perf_counter()
        status = 200
        try:
            yield
        except BaseException as error:
            status = answer_for(error).status if isinstance(error, Exception) else CLIENT_CLOSED
            self._metrics.errors.labels(model, route, type(error).__name__).inc()
            raise
        finally:
            self._metrics.in_flight.labels(model).dec()
            self._metrics.latency.labels(model, route).observe(time.perf_counter() - started)
            self._metrics.requests.labels(model, route, str(status)).inc()


OPEN, KEY, ADMIN = "open", "key", "admin"   # who may call a route: anyone, API keys, admin keys
ROUTES = [       # verb, path, method, who (open: probes, scrapers, <img src> of a generated file)
    ("GET", "/healthz", "healthz", OPEN),
    ("GET", "/metrics", "metrics", OPEN),
    ("GET", "/v1/models", "list_models", KEY),
    ("GET", "/v1/models/{name}", "get_model", KEY),
    ("POST", "/v1/chat/completions", "chat_completions", KEY),
    ("POST", "/v1/images/generations", "image_generations", KEY),
    ("POST", "/v1/audio/generations", "audio_generations", KEY),
    ("GET", "/v1/files/{name}", "files", OPEN),
    ("POST", "/v1/models/{name}/load", "load_model", ADMIN),
    ("POST", "/v1/models/{name}/unload", "unload_model", ADMIN),
    ("PUT", "/v1/models/{name}", "put_model", ADMIN),
    ("DELETE", "/v1/models/{name}", "delete_model", ADMIN),
]


async def require_key(request: Request) -> None:
    """Bearer auth, as a route dependency: it runs before the body is read, and costs nothing without keys. An
    admin key opens these routes too."""
    ingress = serve.get_replica_context().servable_object
    if ingress.keys and not _authorized(request, ingress.keys | ingress.admin_keys):
        raise HTTPException(401, "Missing or wrong API key: send 'Authorization: Bearer <key>'.")


async def require_admin_key(request: Request) -> None:
    """Admin routes: 401 without a key, 403 with any key but an admin key (or when the app has none: the admin API
    is off)."""
    admin_keys = serve.get_replica_context().servable_object.admin_keys
    if not request.headers.get("authorization"):
        raise HTTPException(401, "Admin routes need an admin key: send 'Authorization: Bearer <admin key>'.")
    if not admin_keys:
        raise HTTPException(403, "The admin API is off: the app's config names no admin_keys_env.")
    if not _authorized(request, admin_keys):
        raise HTTPException(403, "Admin routes need an admin key; this key may only call the model routes.")


def _authorized(request: Request, keys: set[str]) -> bool:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and any(hmac.compare_digest(token.encode(), key.encode()) for key in keys)


GUARDS = {OPEN: [], KEY: [Depends(require_key)], ADMIN: [Depends(require_admin_key)]}
for _verb, _path, _method, _who in ROUTES:
    api.add_api_route(_path, getattr(Ingress, _method), methods=[_verb], responses=RESPONSES, dependencies=GUARDS[_who])
for _error in HANDLED:
    api.add_exception_handler(_error, error_handler)
api.add_middleware(BodyLimit)


# ----- small helpers -----

def _copies_state(rows: list[ModelPlacement]) -> str:
    """An in-process model's state from its copies' rows: ready once one serves, else loading, else unloaded."""
    states = {row.state for row in rows}
    return "ready" if "ready" in states else "loading" if states & {"loading", "queued"} else "unloaded"


def _sse(event: dict) -> str:
    return f"data: {json.dumps(event, separators=(',', ':'))}\n\n"


async def _registry_rows() -> list[ModelPlacement]:
    from ..hosts.registry import read_placements

    return await _from_registry(read_placements, [])


async def _registry_evictions() -> tuple[list, dict[str, int]]:
    from ..hosts.registry import read_evictions

    return await _from_registry(read_evictions, ([], {}))


async def _from_registry(read, unknown):
    """What the registry answers, or ``unknown``: metrics and model cards are still worth answering without it."""
    try:
        return await read()
    except Exception as error:
        logger.warning("model registry unreachable: %s", error)
        return unknown


IngressDeployment = serve.deployment(name=INGRESS)(serve.ingress(api)(Ingress))
