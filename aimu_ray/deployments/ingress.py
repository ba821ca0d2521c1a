"""The OpenAI-compatible HTTP ingress: routes from one table, each answered without a client object.

Each served model is resolved once (``served_models``). A chat body becomes a ``ChatRequest`` through the request
core the Python clients use (kwargs mapping per provider, thinking, limits) and goes to the model: an in-process
model's copies through the model registry (loaded at start, or at the first request with ``load: on_demand``,
which waits up to ``load_wait_s``), a remote model straight from this replica (``remote_models``). Its
``ChatResult`` (or stream) comes back as OpenAI's JSON or SSE, or Anthropic's on ``/v1/messages``. A remote model takes tools, images and ``reasoning_effort`` as asked
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
import time
from contextlib import aclosing, asynccontextmanager
from typing import Any, AsyncIterator, Callable

from fastapi import Body, Depends, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, Response, StreamingResponse
from ray import serve

from ..backends.serve import INGRESS
from ..clients.requests import audio_request, image_request
from ..cluster.survey import is_made_up, survey
from ..hosts.registry import get_registry
from ..models.limits import set_limits
from ..models.outputs import encode_audio, encode_image
from ..models.placements import ModelPlacement
from .admin import served_as
from .anthropic_api import (AnthropicEvents, CountTokensRequest, MessagesRequest, message_answer, message_events,
                            token_count)
from .body_limit import BodyLimit
from .cluster_view import ClusterView, cluster_view
from .config import AppConfig
from .errors import HANDLED, RESPONSES, ErrorAnswer, answer_for, error_handler
from .files import FILE_NAME, FILES, by_reference, media_type
from .metrics import EngineClock, Metrics
from .openai_api import AudioGenerationRequest, ChatCompletionRequest, ImageGenerationRequest
from .openai_completions import CompletionRequest, chat_answer, chat_chunks, text_answer, text_chunks
from .remote_models import RemoteModel
from .served_models import Served, ServedModels
from .server_timing import ServerTiming, record_engine_time
from .ui import asset as ui_asset

logger = logging.getLogger("aimu_ray")
CARD_PLACEMENT = {"replica", "state", "node_id", "device", "gpu_ids", "num_gpus", "need_bytes", "reserved_bytes",
                  "used_bytes", "estimate_error_pct", "used_vram_bytes", "used_ram_bytes", "in_flight",
                  "reason"}   # a card's view of one copy
CLIENT_CLOSED = 499            # nginx's status for a request whose client went away; only metrics see it

api = FastAPI(title="aimu_ray", version="1", description="OpenAI-compatible chat, images and audio over Ray Serve.")


class Ingress:
    async def __init__(self, config: AppConfig, deployments: dict) -> None:
        """``deployments``: handles of the app's other deployments, by name (Serve binds them)."""
        self._config = config
        self._app = serve.get_replica_context().app_name
        self.keys, self.admin_keys = config.bearer_keys(), config.admin_keys()
        self._files = by_reference(deployments.get(FILES))     # none: the app makes no images or clips
        self._models = ServedModels(config, self._app)
        self._metrics = Metrics()
        set_limits(config.limits)          # the request core checks the app's limits here; BodyLimit reads them too
        await self._models.load_at_start()

    # ----- for Python callers (``clients.served.connect``) -----

    async def describe(self, name: str) -> dict:
        """What a caller needs to reach the model itself: an in-process model's load (its copies), or this
        deployment, which calls a remote provider itself (``run`` and ``stream`` below)."""
        await self._models.sync()
        served = self._models.get(name)
        if served is None:
            raise ValueError(f"No served model named {name!r}. Served: {self._names()}.")
        return {"model": served.config.model, "task": served.config.task, "load": served.load,
                "deployment": None if served.load else INGRESS}

    async def run(self, name: str, request):
        """A remote model's whole answer, for a handle (``backends.serve.ServeBackend``)."""
        return await (await self._remote(name)).call(request)

    async def stream(self, name: str, request) -> AsyncIterator[list]:
        """A remote model's stream for a handle, in batches of what is ready (one message per batch)."""
        async with aclosing((await self._remote(name)).batches(request)) as batches:
            async for batch in batches:
                yield batch

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
        rows = self._named(await _registry_rows())
        cards = [self._model_card(served, rows) for served in self._models.all()]
        return {"object": "list", "data": list(cards)}

    async def get_model(self, name: str) -> dict:
        """One served model's card, as OpenAI's ``GET /v1/models/{id}`` answers; 404 for a name not served."""
        served = await self._known(name)
        return self._model_card(served, self._named(await _registry_rows()))

    async def chat_completions(self, body: ChatCompletionRequest, request: Request):
        served = await self._serving(body.model, "text")
        if body.has_images() and not served.model.caps.vision:
            raise HTTPException(400, f"Model {body.model!r} does not take images.")
        if body.tool_list() and body.choice() != "none" and not served.model.caps.tools:
            raise HTTPException(400, f"Model {body.model!r} does not take tools (its config can say so with "
                                     "';tools' after its model string).")
        return await self._text_answer(served, body, "chat", chat_answer, chat_chunks)

    async def completions(self, body: CompletionRequest, request: Request):
        """OpenAI's legacy text completions, each prompt sent as a user message (``openai_completions``)."""
        served = await self._serving(body.model, "text")
        return await self._text_answer(served, body, "completions", text_answer, text_chunks)

    async def messages(self, body: MessagesRequest, request: Request):
        """Anthropic's Messages API on the same models (``anthropic_api``); ``anthropic-version`` is not read."""
        served = await self._serving(body.model, "text")
        return await self._text_answer(served, body, "messages", message_answer, message_events, AnthropicEvents)

    async def count_message_tokens(self, body: CountTokensRequest, request: Request) -> dict:
        """Anthropic's token count of a Messages body, by the served model or its provider (``anthropic_api``)."""
        served = await self._serving(body.model, "text")
        async with self._observed(body.model, "count_tokens") as clock:
            return await token_count(clock.around(served), body)

    async def image_generations(self, body: ImageGenerationRequest, request: Request) -> dict:
        served = await self._serving(body.model, "image")
        settings = {key: value for key in ("negative_prompt", "num_inference_steps", "guidance_scale", "seed")
                    if (value := getattr(body, key)) is not None}
        async with self._observed(body.model, "images") as clock:
            asked = image_request(provider=served.model.provider, model=served.model.model_id, prompt=body.prompt,
                                  num_images=body.n, **body.dimensions(), **settings)
            pngs = [encode_image(pixels, "bytes") for pixels in (await clock.around(served).backend.call(asked)).images]
        return await self._media(pngs, "png", body.response_format, request)

    async def audio_generations(self, body: AudioGenerationRequest, request: Request):
        served = await self._serving(body.model, "audio")
        async with self._observed(body.model, "audio") as clock:
            asked = audio_request(provider=served.model.provider, model=served.model.model_id, prompt=body.prompt,
                                  duration_s=body.duration_s, num_inference_steps=body.num_inference_steps,
                                  num_audio=body.n, seed=body.seed)
            wavs = [encode_audio(clip, "bytes") for clip in (await clock.around(served).backend.call(asked)).clips]
        if body.response_format == "wav":                # one clip: the body checked n == 1
            return Response(wavs[0], media_type="audio/wav")
        return await self._media(wavs, "wav", body.response_format, request)

    async def files(self, name: str) -> Response:
        """A generated image or clip, by the unguessable name its response carried, from the files deployment: any
        ingress replica serves it until it expires."""
        data = await self._files.get.remote(name) if self._files and FILE_NAME.fullmatch(name) else None
        if data is None:
            raise HTTPException(404, "No such file.")
        return Response(data, media_type=media_type(name))

    async def cluster(self) -> ClusterView:
        """Each node's GPUs and RAM with this app's model copies on them: the dashboard's memory bars."""
        inventory, rows = await asyncio.gather(survey(), _registry_rows())
        return cluster_view(inventory, self._named(rows), is_made_up())

    async def ui(self) -> FileResponse:
        """The dashboard's page (open: it holds no data, and asks for a key to read any)."""
        return ui_asset("index.html")

    async def ui_file(self, asset: str) -> FileResponse:
        return ui_asset(asset)

    # ----- helpers -----

    async def _remote(self, name: str) -> RemoteModel:
        await self._models.sync()
        served = self._models.get(name)
        if served is None or served.load is not None:
            raise ValueError(f"No remote model named {name!r} is served here.")
        return served.backend

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

    async def _media(self, files: list[bytes], suffix: str, response_format: str, request: Request) -> dict:
        """OpenAI's images answer shape: each file inline (``b64_json``) or as a URL this app serves."""
        if response_format == "url":
            urls = await asyncio.gather(*(self._publish(file, suffix, request) for file in files))
            data = [{"url": url} for url in urls]
        else:
            data = [{"b64_json": base64.b64encode(file).decode()} for file in files]
        return {"created": int(time.time()), "data": data}

    async def _publish(self, data: bytes, suffix: str, request: Request) -> str:
        name = await self._files.put.remote(data, suffix)
        base = self._config.public_url or str(request.base_url)
        return f"{base.rstrip('/')}/v1/files/{name}"

    def _model_card(self, served: Served, rows: list[ModelPlacement]) -> dict:
        """OpenAI's model object, with its state and, for an in-process model, a row per copy."""
        name = served.config.name
        mine = [row for row in rows if row.name == name]
        if served.load is None:
            state, error = served.backend.state()      # usable, or why not (its key, say)
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
        return self._model_card(self._models.get(name), rows)

    async def _event_stream(self, served: Served, route: str, events_of: Callable[[Served], AsyncIterator[dict]],
                            wire=None) -> Response:
        """An SSE response of the events ``events_of`` makes from the served model (clocked for the metrics); the
        first event is awaited here so that an early error is a real status code. ``wire`` writes the events
        (``OpenAIEvents`` unless given: Anthropic's route names its events)."""
        wire, model = wire or OpenAIEvents, served.config.name
        observed = self._observed(model, route)
        events = events_of((await observed.__aenter__()).around(served))
        try:
            first = await anext(events)
        except BaseException as error:
            await observed.__aexit__(type(error), error, error.__traceback__)
            await events.aclose()
            raise

        async def body() -> AsyncIterator[str]:
            failure: BaseException | None = None
            try:
                yield wire.event(first)
                async with aclosing(events):
                    async for event in events:
                        yield wire.event(event)
                if wire.end:
                    yield wire.end
            except Exception as error:        # headers are out: the error travels as an event, as OpenAI's does
                failure = error
                answer = answer_for(error)
                logger.warning("stream for %s failed after it started: %s", model, answer.body["error"]["message"])
                yield wire.error(answer)
            except BaseException as error:    # cancelled or closed: the client went away, which is no fault here
                failure = error
                logger.info("stream for %s ended early: its client went away or the request was cancelled", model)
                raise
            finally:
                await observed.__aexit__(type(failure) if failure else None, failure, None)

        return StreamingResponse(body(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def _text_answer(self, served: Served, body, route: str, answer_of: Callable, events_of: Callable,
                           wire=None):
        """A text route's answer from the served model, clocked for the metrics: SSE events when the body streams,
        else the whole answer. ``answer_of`` and ``events_of`` take the clocked model, the body and the token
        counter (``openai_completions``, ``anthropic_api``); ``wire`` as ``_event_stream`` takes it."""
        count = self._metrics.count_tokens
        if body.stream:
            return await self._event_stream(served, route, lambda clocked: events_of(clocked, body, count), wire)
        async with self._observed(body.model, route) as clock:
            return await answer_of(clock.around(served), body, count)

    @asynccontextmanager
    async def _observed(self, model: str, route: str):
        """Count, time and gauge one request, and split an answered one's time into the engine's and ours (the clock
        it yields times the served model it is put ``around``); the status recorded is the one the caller will see."""
        self._metrics.in_flight.labels(model).inc()
        started, clock = time.perf_counter(), EngineClock()
        status = 200
        try:
            yield clock
        except BaseException as error:
            status = answer_for(error).status if isinstance(error, Exception) else CLIENT_CLOSED
            self._metrics.errors.labels(model, route, type(error).__name__).inc()
            raise
        finally:
            self._metrics.in_flight.labels(model).dec()
            elapsed = time.perf_counter() - started
            self._metrics.latency.labels(model, route).observe(elapsed)
            if status == 200:
                self._metrics.split_time(model, route, elapsed, clock)
                record_engine_time(clock.seconds)
            self._metrics.requests.labels(model, route, str(status)).inc()


OPEN, KEY, ADMIN = "open", "key", "admin"   # who may call a route: anyone, API keys, admin keys
ROUTES = [       # verb, path, method, who (open: probes, scrapers, <img src> of a generated file)
    ("GET", "/healthz", "healthz", OPEN),
    ("GET", "/metrics", "metrics", OPEN),
    ("GET", "/v1/models", "list_models", KEY),
    ("GET", "/v1/models/{name}", "get_model", KEY),
    ("POST", "/v1/chat/completions", "chat_completions", KEY),
    ("POST", "/v1/completions", "completions", KEY),
    ("POST", "/v1/messages", "messages", KEY),     # Anthropic's Messages API
    ("POST", "/v1/messages/count_tokens", "count_message_tokens", KEY),
    ("POST", "/v1/images/generations", "image_generations", KEY),
    ("POST", "/v1/audio/generations", "audio_generations", KEY),
    ("GET", "/v1/files/{name}", "files", OPEN),
    ("GET", "/v1/cluster", "cluster", KEY),
    ("GET", "/ui", "ui", OPEN),                 # the dashboard: its files hold no data
    ("GET", "/ui/{asset}", "ui_file", OPEN),
    ("POST", "/v1/models/{name}/load", "load_model", ADMIN),
    ("POST", "/v1/models/{name}/unload", "unload_model", ADMIN),
    ("PUT", "/v1/models/{name}", "put_model", ADMIN),
    ("DELETE", "/v1/models/{name}", "delete_model", ADMIN),
]


async def require_key(request: Request) -> None:
    """Bearer auth, as a route dependency: it runs before the body is read, and costs nothing without keys. An
    admin key opens these routes too, and Anthropic's clients' ``x-api-key`` header does as a bearer token does."""
    ingress = serve.get_replica_context().servable_object
    keys = ingress.keys | ingress.admin_keys
    if ingress.keys and not (_authorized(request, keys) or _is_key(request.headers.get("x-api-key"), keys)):
        raise HTTPException(401, "Missing or wrong API key: send 'Authorization: Bearer <key>' (or 'x-api-key: "
                                 "<key>').")


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
    return scheme.lower() == "bearer" and _is_key(token, keys)


def _is_key(token: str | None, keys: set[str]) -> bool:
    return token is not None and any(hmac.compare_digest(token.encode(), key.encode()) for key in keys)


GUARDS = {OPEN: [], KEY: [Depends(require_key)], ADMIN: [Depends(require_admin_key)]}
for _verb, _path, _method, _who in ROUTES:
    api.add_api_route(_path, getattr(Ingress, _method), methods=[_verb], responses=RESPONSES, dependencies=GUARDS[_who])
for _error in HANDLED:
    api.add_exception_handler(_error, error_handler)
api.add_middleware(BodyLimit)
api.add_middleware(ServerTiming)      # added last, so outermost: its clock starts first


# ----- small helpers -----

def _copies_state(rows: list[ModelPlacement]) -> str:
    """An in-process model's state from its copies' rows: ready once one serves, else loading, else unloaded."""
    states = {row.state for row in rows}
    return "ready" if "ready" in states else "loading" if states & {"loading", "queued"} else "unloaded"


def _sse(event: dict) -> str:
    return f"data: {json.dumps(event, separators=(',', ':'))}\n\n"


class OpenAIEvents:
    """How the stream core writes OpenAI's streams: ``data:`` lines, a failure as one more holding the error object,
    and ``[DONE]`` at the end (``anthropic_api.AnthropicEvents`` is the other wire)."""

    end = "data: [DONE]\n\n"
    event = staticmethod(_sse)

    @staticmethod
    def error(answer: ErrorAnswer) -> str:
        return _sse(answer.body)


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
