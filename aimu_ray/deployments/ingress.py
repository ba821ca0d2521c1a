"""The OpenAI-compatible HTTP ingress: routes from one table, each answered without a client object.

Each served model is resolved once, when the replica starts. A chat body becomes a ``ChatRequest`` through the
request core the Python clients use (kwargs mapping per provider, thinking, limits), goes to the model's deployment
through its handle, and its ``ChatResult`` (or stream) comes back as OpenAI's JSON (or SSE). A remote model takes
tools, images and ``reasoning_effort`` as asked and its provider judges them; an in-process model is checked here.
Errors answer from the one table in ``errors``; bodies over the limit stop in ``body_limit``.
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
from dataclasses import dataclass
from typing import AsyncIterator

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, Response, StreamingResponse
from ray import serve
from ray.serve.handle import DeploymentHandle

from ..backends.serve import INGRESS, ServeBackend
from ..clients.requests import audio_request, fold, image_request, served_model
from ..models.limits import set_limits
from ..models.model_string import ResolvedModel
from ..models.outputs import encode_audio, encode_image
from ..models.placements import ModelPlacement
from ..models.wire import ChatDelta, ChatResult
from .body_limit import BodyLimit
from .config import AppConfig, ServedModel
from .errors import HANDLED, RESPONSES, answer_for, error_handler
from .metrics import Metrics
from .openai_api import (AudioGenerationRequest, ChatCompletionRequest, ImageGenerationRequest, chat_chunk,
                         chat_completion, completion_id, delta_out, finish_reason, tool_calls_delta, usage_out)
from .status import model_state, serve_apps

logger = logging.getLogger("aimu_ray")
FILE_NAME = re.compile(r"^[A-Za-z0-9_-]{20,64}\.(png|wav)$")
REMOTE = "remote"              # the one deployment of every remote-provider model
CARD_PLACEMENT = {"node_id", "device", "gpu_ids", "num_gpus", "need_bytes", "reserved_bytes", "used_bytes",
                  "estimate_error_pct", "used_vram_bytes", "used_ram_bytes", "reason"}   # a card's view of a replica
CLIENT_CLOSED = 499            # nginx's status for a request whose client went away; only metrics see it

api = FastAPI(title="aimu_ray", version="1", description="OpenAI-compatible chat, images and audio over Ray Serve.")


@dataclass(frozen=True)
class Served:
    """One served model as this ingress sends to it, resolved once, at start."""

    config: ServedModel
    model: ResolvedModel           # as served: a remote model passes tools, images and thinking through
    handle: DeploymentHandle       # its deployment's, which also answers for its state
    backend: ServeBackend          # requests through that handle, with Serve's failures typed

    def warn(self, message: str) -> None:
        """What the model cannot honour of a request (a dropped kwarg, thinking it does not do), in the log."""
        logger.warning("%s: %s", self.model, message)


class Ingress:
    def __init__(self, config: AppConfig, deployments: dict) -> None:
        """``deployments``: each model deployment's handle by deployment name (Serve binds them)."""
        self._config = config
        self._app = serve.get_replica_context().app_name
        self.keys = config.bearer_keys()
        self._files = config.output_dir.resolve()
        self._files.mkdir(parents=True, exist_ok=True)
        self._served = {model.name: _served(model, deployments[_deployment_of(model)]) for model in config.models}
        self._metrics = Metrics()
        set_limits(config.limits)          # the request core checks the app's limits here; BodyLimit reads them too

    # ----- for Python callers (``clients.served.connect``) -----

    def describe(self, name: str) -> dict:
        model = self._config.model(name)
        if model is None:
            raise ValueError(f"No served model named {name!r}. Served: {', '.join(m.name for m in self._config.models)}.")
        return {"model": model.model, "task": model.task, "deployment": _deployment_of(model)}

    # ----- HTTP -----

    async def healthz(self) -> dict:
        return {"status": "ok"}

    async def metrics(self) -> Response:
        rows, (_, evicted) = await asyncio.gather(_registry_rows(), _registry_evictions())
        self._metrics.set_memory(rows)
        self._metrics.set_evictions(evicted)
        return Response(self._metrics.render(), media_type="text/plain; version=0.0.4")

    async def list_models(self) -> dict:
        status = (await asyncio.to_thread(serve_apps)).get(self._app, {})
        rows = await _registry_rows()
        data = await asyncio.gather(*(self._model_card(model, status, rows) for model in self._config.models))
        return {"object": "list", "data": list(data)}

    async def chat_completions(self, body: ChatCompletionRequest, request: Request):
        served = self._serving(body.model, "text")
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
        served = self._serving(body.model, "image")
        settings = {key: value for key in ("negative_prompt", "num_inference_steps", "guidance_scale", "seed")
                    if (value := getattr(body, key)) is not None}
        async with self._observed(body.model, "images"):
            asked = image_request(provider=served.model.provider, model=served.model.model_id, prompt=body.prompt,
                                  num_images=body.n, **body.dimensions(), **settings)
            pngs = [encode_image(pixels, "bytes") for pixels in (await served.backend.call(asked)).images]
        return self._media(pngs, "png", body.response_format, request)

    async def audio_generations(self, body: AudioGenerationRequest, request: Request):
        served = self._serving(body.model, "audio")
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

    def _serving(self, name: str, task: str) -> Served:
        """The served model a request names: 404 if none, 400 if it makes something else."""
        served = self._served.get(name)
        if served is None:
            raise HTTPException(404, f"The model {name!r} does not exist. Served models: "
                                     f"{', '.join(m.name for m in self._config.models)}.")
        if served.config.task != task:
            raise HTTPException(400, f"Model {name!r} makes {served.config.task}, not {task}.")
        return served

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

    async def _model_card(self, model: ServedModel, status: dict, rows: list[ModelPlacement]) -> dict:
        deployment = _deployment_of(model)
        state, error = model_state(status.get(deployment))
        if state == "ready":
            try:
                answer = await self._served[model.name].handle.state.remote(model.name)
                state, error = answer["state"], answer.get("error")
            except Exception as failure:
                state, error = "failed", type(failure).__name__
        placement = [row.model_dump(include=CARD_PLACEMENT) for row in rows if row.deployment == deployment]
        card = {"id": model.name, "object": "model", "created": 0, "owned_by": "aimu_ray", "modality": model.task,
                "state": state, "placement": placement}
        if error:
            card["error"] = error
        return card

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


ROUTES = [       # verb, path, method, open (no key needed: probes, scrapers, <img src> of a generated file)
    ("GET", "/healthz", "healthz", True),
    ("GET", "/metrics", "metrics", True),
    ("GET", "/v1/models", "list_models", False),
    ("POST", "/v1/chat/completions", "chat_completions", False),
    ("POST", "/v1/images/generations", "image_generations", False),
    ("POST", "/v1/audio/generations", "audio_generations", False),
    ("GET", "/v1/files/{name}", "files", True),
]


async def require_key(request: Request) -> None:
    """Bearer auth, as a route dependency: it runs before the body is read, and costs nothing without keys."""
    keys = serve.get_replica_context().servable_object.keys
    if keys and not _authorized(request, keys):
        raise HTTPException(401, "Missing or wrong API key: send 'Authorization: Bearer <key>'.")


def _authorized(request: Request, keys: set[str]) -> bool:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and any(hmac.compare_digest(token.encode(), key.encode()) for key in keys)


for _verb, _path, _method, _open in ROUTES:
    api.add_api_route(_path, getattr(Ingress, _method), methods=[_verb], responses=RESPONSES,
                      dependencies=[] if _open else [Depends(require_key)])
for _error in HANDLED:
    api.add_exception_handler(_error, error_handler)
api.add_middleware(BodyLimit)


# ----- small helpers -----

def _deployment_of(model: ServedModel) -> str:
    return model.deployment_name if model.in_process else REMOTE


def _served(model: ServedModel, handle: DeploymentHandle) -> Served:
    return Served(model, served_model(model.model), handle, ServeBackend(handle, model.name))


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
