"""The OpenAI-compatible HTTP ingress: routes from one table, requests answered by the aimu clients.

Each request builds a served client (``handles.served_client``) for the model it names, so HTTP gets
exactly the contract Python callers get: kwargs mapping per provider, thinking, tool recording, typed
errors. A remote model takes tools, images and ``reasoning_effort`` as asked and its provider judges them;
an in-process model is checked here. Typed errors become OpenAI-style error objects with the status a client
can act on (400 fix the request, also when the provider refused it with 400/422; 404 no such model; 429/503
come back after Retry-After; 502/504 the provider failed).
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
from typing import AsyncIterator

from fastapi import Depends, FastAPI, HTTPException, Request
from starlette.exceptions import HTTPException as RoutingError     # the router's 404/405, unparsable bodies
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from ray import serve
from ray.exceptions import TaskCancelledError

from ..models.errors import (ContextOverflowError, LimitExceededError, MissingAPIKeyError, ModelBusyError,
                             ModelConnectionError, ModelError, ModelLoadError, ModelRefusalError, ModelTimeoutError,
                             ProviderError, RateLimitError)
from ..models.limits import current_limits, set_limits
from ..models.placements import ModelPlacement
from ..models.stream import StreamingContentType
from .config import AppConfig, ServedModel
from ..backends.serve import INGRESS, ServeBackend
from ..clients.served import served_client
from .metrics import Metrics
from .status import model_state, serve_apps
from .openai_api import (AudioGenerationRequest, ChatCompletionRequest, ErrorResponse, ImageGenerationRequest,
                         chat_chunk, chat_completion, completion_id, error_response, finish_reason, tool_calls_out,
                         usage_out)

logger = logging.getLogger("aimu_ray")
FILE_NAME = re.compile(r"^[A-Za-z0-9_-]{20,64}\.(png|wav)$")
RETRY_AFTER_S = 1
REMOTE = "remote"              # the one deployment of every remote-provider model
UPSTREAM_REFUSALS = (400, 422)  # a provider refused the request itself (e.g. tools for a model without them)
CARD_PLACEMENT = {"node_id", "device", "gpu_ids", "num_gpus", "reserved_bytes", "used_vram_bytes", "used_ram_bytes",
                  "reason"}                # what a model card shows of each replica
CLIENT_CLOSED = 499            # nginx's status for a request whose client went away; only metrics see it

api = FastAPI(title="aimu_ray", version="1", description="OpenAI-compatible chat, images and audio over Ray Serve.")


class Ingress:
    def __init__(self, config: AppConfig, deployments: dict) -> None:
        """``deployments``: each model deployment's handle by deployment name (Serve binds them)."""
        self._config = config
        self._app = serve.get_replica_context().app_name
        self.keys = config.bearer_keys()
        self._files = config.output_dir.resolve()
        self._files.mkdir(parents=True, exist_ok=True)
        self._handles = {model.name: deployments[_deployment_of(model)] for model in config.models}
        self._metrics = Metrics()
        set_limits(config.limits)          # this replica's clients check the app's limits; BodyLimit reads them too

    # ----- for Python callers (``handles.connect``) -----

    def describe(self, name: str) -> dict:
        model = self._config.model(name)
        if model is None:
            raise ValueError(f"No served model named {name!r}. Served: {', '.join(m.name for m in self._config.models)}.")
        return {"model": model.model, "task": model.task, "deployment": _deployment_of(model)}

    # ----- HTTP -----

    async def healthz(self) -> dict:
        return {"status": "ok"}

    async def metrics(self) -> Response:
        rows = await _registry_rows()
        self._metrics.set_memory(rows)
        return Response(self._metrics.render(), media_type="text/plain; version=0.0.4")

    async def list_models(self) -> dict:
        status = (await asyncio.to_thread(serve_apps)).get(self._app, {})
        rows = await _registry_rows()
        data = await asyncio.gather(*(self._model_card(model, status, rows) for model in self._config.models))
        return {"object": "list", "data": list(data)}

    async def chat_completions(self, body: ChatCompletionRequest, request: Request):
        model, client = self._client(body.model, "text")
        client.messages = [message.as_aimu() for message in body.messages]
        if _has_images(client.messages) and not client.is_vision_model:
            raise HTTPException(400, f"Model {model.name!r} does not take images.")
        if body.tools and body.tool_choice != "none" and not client.is_tool_using_model:
            raise HTTPException(400, f"Model {model.name!r} does not take tools (its config can say so with "
                                     "';tools' after its model string).")
        options = dict(generate_kwargs=body.generate_kwargs(), tools=body.tool_dicts(),
                       use_tools=body.tool_choice != "none", thinking=body.thinking())
        if body.stream:
            return await self._event_stream(model.name, "chat", self._chat_events(client, options, body))
        async with self._observed(model.name, "chat"):
            content = await client.chat(None, **options)
        self._metrics.count_tokens(model.name, client.last_usage)
        return chat_completion(completion_id(), model.name, content, client.last_thinking, client.last_tool_calls,
                               client.last_stop_reason, client.last_usage)

    async def image_generations(self, body: ImageGenerationRequest, request: Request) -> dict:
        model, client = self._client(body.model, "image")
        extras = {key: value for key in ("negative_prompt", "num_inference_steps", "guidance_scale", "seed")
                  if (value := getattr(body, key)) is not None}
        async with self._observed(model.name, "images"):
            pngs = await client.generate(body.prompt, num_images=body.n, format="bytes", **body.dimensions(),
                                         **extras)
        return self._media(pngs, "png", body.response_format, request)

    async def audio_generations(self, body: AudioGenerationRequest, request: Request):
        model, client = self._client(body.model, "audio")
        async with self._observed(model.name, "audio"):
            wavs = await client.generate(body.prompt, duration_s=body.duration_s,
                                         num_inference_steps=body.num_inference_steps, seed=body.seed,
                                         num_audio=body.n, format="bytes")
        if body.response_format == "wav":                # one clip: the body checked n == 1
            return Response(wavs, media_type="audio/wav")
        return self._media(wavs, "wav", body.response_format, request)

    async def files(self, name: str) -> FileResponse:
        """A generated image or clip, by the unguessable name its response carried."""
        path = self._files / name
        if not FILE_NAME.fullmatch(name) or not path.is_file():
            raise HTTPException(404, "No such file.")
        return FileResponse(path, media_type="image/png" if name.endswith(".png") else "audio/wav")

    # ----- helpers -----

    def _client(self, name: str, task: str):
        """The served model a request names (404 if none, 400 if it makes something else) and its aimu client."""
        model = self._config.model(name)
        if model is None:
            raise HTTPException(404, f"The model {name!r} does not exist. Served models: "
                                     f"{', '.join(m.name for m in self._config.models)}.")
        if model.task != task:
            raise HTTPException(400, f"Model {name!r} makes {model.task}, not {task}.")
        return model, served_client(model.model, ServeBackend(self._handles[name], name), task)

    def _media(self, files: bytes | list[bytes], suffix: str, response_format: str, request: Request) -> dict:
        """OpenAI's images answer shape: each file inline (``b64_json``) or as a URL this app serves."""
        files = files if isinstance(files, list) else [files]
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
                answer = await self._handles[model.name].state.remote(model.name)
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
                _, payload, _ = error_payload(error)
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

    async def _chat_events(self, client, options: dict, body: ChatCompletionRequest) -> AsyncIterator[dict]:
        """OpenAI's chunks; the model's first chunk is awaited before the role chunk, so an early error has a status."""
        id, name = completion_id(), body.model
        chunks = await client.chat(None, stream=True, **options)
        async with aclosing(chunks):
            first = await anext(chunks, None)
            yield chat_chunk(id, name, {"role": "assistant", "content": ""})
            if first is not None:
                yield chat_chunk(id, name, _delta(first))
            async for chunk in chunks:
                yield chat_chunk(id, name, _delta(chunk))
        calls = client.last_tool_calls
        if calls:
            yield chat_chunk(id, name, {"tool_calls": [dict(call, index=i) for i, call in
                                                       enumerate(tool_calls_out(calls))]})
        yield chat_chunk(id, name, {}, finish_reason(client.last_stop_reason, calls))
        self._metrics.count_tokens(name, client.last_usage)
        if body.stream_options and body.stream_options.include_usage:
            yield chat_chunk(id, name, None, usage=usage_out(client.last_usage))

    @asynccontextmanager
    async def _observed(self, model: str, route: str):
        """Count, time and gauge one request; the status recorded is the one the caller will see."""
        self._metrics.in_flight.labels(model).inc()
        started = time.perf_counter()
        status = 200
        try:
            yield
        except BaseException as error:
            status = error_payload(error)[0] if isinstance(error, Exception) else CLIENT_CLOSED
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
ERRORS = {status: {"model": ErrorResponse, "description": why} for status, why in (
    (400, "invalid body or parameters, here or at the provider"), (401, "missing or wrong API key"),
    (404, "no such model or route"), (413, "the body is over limits.max_body_bytes"),
    (429, "the provider is rate limiting (Retry-After)"), (502, "the provider failed"),
    (503, "model at capacity, not loaded, or unreachable (Retry-After)"), (504, "the provider timed out"))}


async def require_key(request: Request) -> None:
    """Bearer auth, as a route dependency: it runs before the body is read, and costs nothing without keys."""
    keys = serve.get_replica_context().servable_object.keys
    if keys and not _authorized(request, keys):
        raise HTTPException(401, "Missing or wrong API key: send 'Authorization: Bearer <key>'.")


def _authorized(request: Request, keys: set[str]) -> bool:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and any(hmac.compare_digest(token.encode(), key.encode()) for key in keys)


for _verb, _path, _method, _open in ROUTES:
    api.add_api_route(_path, getattr(Ingress, _method), methods=[_verb], responses=ERRORS,
                      dependencies=[] if _open else [Depends(require_key)])


class BodyLimit:
    """ASGI middleware: a body over ``limits.max_body_bytes`` is a 413 before FastAPI reads or parses it, known from
    its Content-Length or counted as it streams in (chunked); a body within the limit is handed on whole.

    Every ``receive`` of a request passes here, so this is also where Serve's way of saying that a client left (its
    ``receive()`` raises ``TaskCancelledError``, a race in its proxy) becomes ASGI's: an ``http.disconnect`` message.
    Raised, it escaped a stream's disconnect listener as an error, which Starlette re-raises after any handler.
    """

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limits = current_limits()
        try:
            limits.check_body(int(dict(scope["headers"]).get(b"content-length", 0)))
            body = await _read_body(receive, limits)
        except LimitExceededError as error:
            status, payload, _ = error_payload(error)
            return await JSONResponse(payload, status_code=status)(scope, receive, send)
        if body is None:                                 # the client left before its body was in
            return
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await _received(receive)          # after the body: the disconnect, when it comes
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


async def _read_body(receive, limits) -> bytes | None:
    chunks, size, more = [], 0, True
    while more:
        message = await _received(receive)
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        size += len(chunks[-1])
        limits.check_body(size)
        more = message.get("more_body", False)
    return b"".join(chunks)


async def _received(receive) -> dict:
    try:
        return await receive()
    except TaskCancelledError:
        return {"type": "http.disconnect"}


api.add_middleware(BodyLimit)


# ----- errors, for every route -----


@api.exception_handler(RequestValidationError)
async def invalid_body(request: Request, error: RequestValidationError) -> JSONResponse:
    problems = error.errors()
    first = problems[0] if problems else {}
    param = ".".join(str(part) for part in first.get("loc", ())[1:]) or None
    message = "; ".join(f"{'.'.join(map(str, p.get('loc', ())[1:])) or 'body'}: {p.get('msg')}" for p in problems[:5])
    return JSONResponse(error_response(message or "Invalid request body.", "invalid_request_error", param=param),
                        status_code=400)


@api.exception_handler(RoutingError)
async def http_error(request: Request, error: RoutingError) -> JSONResponse:
    """Our 4xx and Starlette's (no such route, wrong method, a body that is not UTF-8), as OpenAI errors."""
    type_ = "not_found_error" if error.status_code == 404 else "invalid_request_error"
    code = {401: "invalid_api_key", 404: "model_not_found" if "model" in str(error.detail) else None}.get(
        error.status_code)
    return JSONResponse(error_response(str(error.detail), type_, code=code), status_code=error.status_code,
                        headers=error.headers)


@api.exception_handler(ModelError)
@api.exception_handler(ValueError)
@api.exception_handler(Exception)
async def model_error(request: Request, error: Exception) -> JSONResponse:
    status, payload, retry_after = error_payload(error)
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return JSONResponse(payload, status_code=status, headers=headers)


def error_payload(error: BaseException) -> tuple[int, dict, int | None]:
    """(status, OpenAI-style body, Retry-After seconds or None) for an error a request ended in."""
    if isinstance(error, HTTPException):
        return error.status_code, error_response(str(error.detail), "invalid_request_error"), None
    if isinstance(error, LimitExceededError):
        return error.status_code, error_response(str(error), "invalid_request_error", code=error.limit), None
    if isinstance(error, ModelBusyError):
        return 503, error_response(str(error), "overloaded_error", code="overloaded"), RETRY_AFTER_S
    if isinstance(error, RateLimitError):
        return 429, error_response(str(error), "rate_limit_error"), max(1, round(error.retry_after or RETRY_AFTER_S))
    if isinstance(error, ContextOverflowError):
        return 400, error_response(str(error), "invalid_request_error", code="context_length_exceeded"), None
    if isinstance(error, ModelRefusalError):
        return 400, error_response(str(error), "invalid_request_error", code="content_filter"), None
    if isinstance(error, ModelTimeoutError):
        return 504, error_response(str(error), "timeout_error"), None
    if isinstance(error, (ModelLoadError, MissingAPIKeyError)):
        return 503, error_response(str(error), "model_unavailable_error", code="model_not_loaded"), RETRY_AFTER_S * 30
    if isinstance(error, ModelConnectionError):
        return 503, error_response(str(error), "model_unavailable_error"), RETRY_AFTER_S
    if isinstance(error, ProviderError) and error.status_code in UPSTREAM_REFUSALS:   # the caller can fix it
        return 400, error_response(str(error), "invalid_request_error"), None
    if isinstance(error, ProviderError):
        return 502, error_response(str(error), "upstream_error"), None
    if isinstance(error, ValueError):
        return 400, error_response(str(error), "invalid_request_error"), None
    if isinstance(error, ModelError):                 # the model failed this request; its message is sanitised
        return 500, error_response(str(error), "model_error"), None
    logger.exception("internal error", exc_info=error)
    return 500, error_response("Internal server error.", "server_error"), None


# ----- small helpers -----

def _deployment_of(model: ServedModel) -> str:
    return model.deployment_name if model.in_process else REMOTE


def _has_images(messages: list[dict]) -> bool:
    return any(isinstance(m.get("content"), list) and any(p.get("type") == "image_url" for p in m["content"])
               for m in messages)


def _delta(chunk) -> dict:
    return {"reasoning_content" if chunk.phase == StreamingContentType.THINKING else "content": chunk.content}


def _sse(event: dict) -> str:
    return f"data: {json.dumps(event, separators=(',', ':'))}\n\n"


async def _registry_rows() -> list[ModelPlacement]:
    from ..hosts.registry import get_registry

    try:
        return await get_registry().placements.remote()
    except Exception as error:        # metrics and model cards are still worth answering without placement
        logger.warning("model registry unreachable: %s", error)
        return []


IngressDeployment = serve.deployment(name=INGRESS)(serve.ingress(api)(Ingress))
