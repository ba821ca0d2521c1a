"""Loopback HTTP server speaking OpenAI, Anthropic, Ollama and Gemini's native API at once.

Routes (all on one port, so one server covers every provider in a test):

* ``POST /v1/chat/completions``, ``POST /v1beta/openai/chat/completions``: OpenAI chat
  (the second is Gemini's OpenAI-compatible path);
* ``POST /v1/messages``: Anthropic messages; ``POST /v1/messages/count_tokens``: its token count;
* ``POST /api/chat``: Ollama chat;
* ``POST /v1beta/models/{model}:generateContent``: Gemini's native API, as its image models answer;
* ``GET /v1/models`` (OpenAI shape, or Anthropic's when the request has ``anthropic-version``),
  ``GET /v1beta/openai/models``, ``GET /api/tags``: model lists.

Base URLs for the SDKs: OpenAI ``f"{url}/v1"``, Gemini ``f"{url}/v1beta/openai/"``,
Anthropic, Ollama and google-genai ``url``.

The app is Starlette served by uvicorn on an asyncio loop in a daemon thread; delays use
``asyncio.sleep``, so a thousand slow requests in flight cost no threads.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import socket
import threading
import time
from types import ModuleType
from typing import Any, AsyncIterator, Awaitable, Callable, Iterable

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.fakes.script import Fault, RecordedRequest, Reply, Script
from tests.fakes.wire import GARBAGE_JSON, anthropic_messages, gemini_native, ollama_chat, openai_chat

Handler = Callable[[Request], Awaitable[Response]]
_NO_CACHE = {"cache-control": "no-cache"}
_EPOCH, _EPOCH_ISO = 1767225600, "2026-01-01T00:00:00Z"  # fixed creation time of the listed models


class _DroppedConnection(Exception):
    """Raised inside a stream; uvicorn answers it by closing the socket mid-body, as a network fault would."""


class _QuietDrops(logging.Filter):
    """Keeps uvicorn from logging a traceback for each connection dropped on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], _DroppedConnection))


_QUIET_DROPS = _QuietDrops()


async def _paced(events: Iterable[bytes], fault: Fault) -> AsyncIterator[bytes]:
    """Yield stream events with the fault's pacing, cutting the connection where it says."""
    for index, event in enumerate(events):
        if index == fault.drop_after:
            raise _DroppedConnection
        if index and fault.chunk_delay_s:
            await asyncio.sleep(fault.chunk_delay_s)
        yield event


class FakeServer:
    """The fake provider server; see the package docstring for scripting.

    `delay_s` is added to every request (benchmarks use 0.2 s); `reset()` restores it to the
    value given here. `record=False` keeps no request log (long benchmark runs).
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        delay_s: float = 0.0,
        models: Iterable[str] = ("fake-model",),
        record: bool = True,
    ) -> None:
        self.host = host
        self.port = port
        self.delay_s = self._initial_delay_s = delay_s
        self._generation = 0
        self.models = list(models)
        self._script = Script(record=record)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.app = Starlette(routes=self._routes())

    # -- scripting -------------------------------------------------------------------------

    def reply(self, content: str = "", **fields: Any) -> Reply:
        """Queue a reply; `fields` are those of `Reply` (reasoning, tool_calls, finish, ...)."""
        reply = Reply(content, **fields)
        self._script.push_reply(reply)
        return reply

    def fault(self, **fields: Any) -> Fault:
        """Queue a fault; `fields` are those of `Fault` (status, retry_after, drop_after, ...)."""
        fault = Fault(**fields)
        self._script.push_fault(fault)
        return fault

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far, oldest first (a copy)."""
        return self._script.requests

    def reset(self) -> None:
        """Forget queued replies and faults, the request log and ids; restore `delay_s`.

        Requests still sleeping when this is called belong to the previous test: when they wake they
        answer 503 instead of consuming the next test's script.
        """
        self._script.clear()
        self._generation += 1
        self.delay_s = self._initial_delay_s

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout_s: float = 10.0) -> FakeServer:
        """Bind (port 0 picks a free port), serve in a daemon thread, return once accepting."""
        if self._thread is not None:
            raise RuntimeError("FakeServer already started")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        logging.getLogger("uvicorn.error").addFilter(_QUIET_DROPS)
        config = uvicorn.Config(
            self.app,
            log_config=None,
            log_level="warning",
            access_log=False,
            lifespan="off",
            backlog=2048,
            timeout_keep_alive=75,      # as long as real providers' fronts (nginx's default): uvicorn's 5 s let a
                                        # pooled connection close under a client reusing it (a ReadError)
            limit_concurrency=None,
            timeout_graceful_shutdown=1,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="fake-provider-server", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("FakeServer did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(5)
        self._server = self._thread = None

    def wait(self) -> None:
        """Block until the server thread ends (foreground use)."""
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> FakeServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- HTTP ------------------------------------------------------------------------------

    def _routes(self) -> list[Route]:
        openai = self._chat(openai_chat)
        return [
            Route("/v1/chat/completions", openai, methods=["POST"]),
            Route("/v1beta/openai/chat/completions", openai, methods=["POST"]),
            Route("/v1/messages", self._chat(anthropic_messages), methods=["POST"]),
            Route("/v1/messages/count_tokens", self._count_tokens, methods=["POST"]),
            Route("/api/chat", self._chat(ollama_chat), methods=["POST"]),
            Route("/v1beta/models/{model}:generateContent", self._chat(gemini_native), methods=["POST"]),
            Route("/v1/models", self._models, methods=["GET"]),
            Route("/v1beta/openai/models", self._models, methods=["GET"]),
            Route("/api/tags", self._tags, methods=["GET"]),
        ]

    def _chat(self, wire: ModuleType) -> Handler:
        """Handler for one protocol's chat endpoint: fault first, then the reply."""

        async def handle(request: Request) -> Response:
            generation = self._generation
            body = await self._receive(request)
            if not isinstance(body, dict):
                return _error(wire, 400, Fault(status=400, message="request body is not a JSON object"))
            fault = self._script.pop_fault()
            if fault.delay_s:
                await asyncio.sleep(fault.delay_s)
            if generation != self._generation:
                return _error(wire, 503, Fault(status=503, message="request outlived a reset of the fake"))
            if fault.status is not None:
                return _error(wire, fault.status, fault)
            wants_stream = wire.wants_stream(body) or fault.stream_anyway
            if fault.malformed:
                if wants_stream:
                    return Response(wire.GARBAGE_STREAM, media_type=wire.STREAM_MEDIA_TYPE)
                return Response(GARBAGE_JSON, media_type="application/json")
            turn = self._script.next_turn(body)
            if wants_stream:
                events = _paced(wire.stream(turn), fault)
                return StreamingResponse(events, media_type=wire.STREAM_MEDIA_TYPE, headers=_NO_CACHE)
            return JSONResponse(wire.complete(turn))

        return handle

    async def _count_tokens(self, request: Request) -> Response:
        """Anthropic's token count: a queued fault fails it (no reply is consumed), else the body's estimate."""
        body = await self._receive(request)
        fault = self._script.pop_fault()
        if fault.status is not None:
            return _error(anthropic_messages, fault.status, fault)
        if not isinstance(body, dict):
            return _error(anthropic_messages, 400, Fault(status=400, message="request body is not a JSON object"))
        return JSONResponse(anthropic_messages.token_count(body))

    async def _receive(self, request: Request) -> Any:
        """Record the request, apply the global delay, return the parsed body (None if not JSON)."""
        raw = await request.body()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        self._script.record(RecordedRequest(request.method, request.url.path, dict(request.headers), body))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        return body

    async def _models(self, request: Request) -> Response:
        """OpenAI's model list, or Anthropic's (same path) when the Anthropic SDK asks."""
        await self._receive(request)
        if "anthropic-version" in request.headers:
            data = [{"type": "model", "id": m, "display_name": m, "created_at": _EPOCH_ISO} for m in self.models]
            page = {"has_more": False, "first_id": self.models[0], "last_id": self.models[-1]}
            return JSONResponse({"data": data, **page})
        data = [{"id": m, "object": "model", "created": _EPOCH, "owned_by": "fake"} for m in self.models]
        return JSONResponse({"object": "list", "data": data})

    async def _tags(self, request: Request) -> Response:
        await self._receive(request)
        details = {"format": "gguf", "family": "fake", "parameter_size": "1M", "quantization_level": "Q8_0"}
        models = [
            {"name": m, "model": m, "modified_at": _EPOCH_ISO, "size": 10**6, "digest": "0" * 64, "details": details}
            for m in self.models
        ]
        return JSONResponse({"models": models})


def _error(wire: ModuleType, status: int, fault: Fault) -> Response:
    """The protocol's error body, with retry-after headers when the fault asks for them."""
    headers = {}
    if fault.retry_after is not None:
        seconds = fault.retry_after
        headers = {"retry-after": str(math.ceil(seconds)), "retry-after-ms": str(round(seconds * 1000))}
    return JSONResponse(wire.error(status, fault), status_code=status, headers=headers)
