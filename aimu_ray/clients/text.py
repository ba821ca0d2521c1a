"""The aimu text-client contract, written once, async.

State (``messages``, ``last_*``) lives here, in the caller's object; a request carries the whole
conversation to whichever worker serves it, so workers stay stateless. The sync client in
``clients.sync`` drives this class; nothing here is written twice.
"""

from __future__ import annotations

import logging
from typing import AsyncIterator, Iterable

from ..backends import backend_for
from ..models.load import ModelLoad, load_for
from ..models.messages import stamp
from ..models.messages import user_message as user_turn
from ..models.model_string import ResolvedModel, resolve_model
from ..models.structured import parse_json_response
from ..models.stream import StreamChunk, StreamingContentType, resolve_include
from ..models.thinking import validate_thinking
from ..models.wire import ChatDelta, ChatRequest, ChatResult, Endpoint
from .endpoints import build_endpoint
from .requests import StructuredAsk, advertised_tools, chat_request, fold, served_model, structured_ask

logger = logging.getLogger("aimu_ray")

TRUNCATED_STOP_REASONS = frozenset({"length", "max_tokens"})
_KEEP = "__keep__"


class AsyncTextClient:
    """One conversation with one model. ``chat()`` is exactly one model request."""

    def __init__(self, model: str, *, system_message: str | None = None, base_url: str | None = None,
                 host: str | None = None, api_key: str | None = None, timeout: float | None = None,
                 max_retries: int | None = None, model_keep_alive_seconds: float | None = None,
                 backend=None, **load_options):
        """Remote providers take the endpoint arguments; in-process ones (hf, llamacpp) their loader options
        (``model_kwargs``, ``model_path``, ``n_ctx``, …) and placement pins (``device``, ``num_gpus``, …)."""
        self.model: ResolvedModel = resolve_model(model)
        if model_keep_alive_seconds is not None and self.model.provider != "ollama":
            raise TypeError("model_keep_alive_seconds= applies to the 'ollama' provider only.")
        self._load: ModelLoad | None = None
        if self.model.spec.in_process:
            remote_only = [name for name, value in (("base_url", base_url), ("host", host), ("api_key", api_key),
                                                    ("timeout", timeout), ("max_retries", max_retries)) if value]
            if remote_only:
                raise TypeError(f"{', '.join(remote_only)} apply to remote providers, not to in-process "
                                f"'{self.model.provider}' models.")
            self._load = load_for(self.model.provider, "text", self.model.model_id, load_options)
            self.endpoint = Endpoint()
        else:
            if load_options:
                raise TypeError(f"Provider '{self.model.provider}' takes no argument "
                                f"{', '.join(map(repr, sorted(load_options)))}.")
            self.endpoint = build_endpoint(self.model, base_url=base_url, host=host, api_key=api_key,
                                           timeout=timeout, max_retries=max_retries)
        self._start(system_message, backend, model_keep_alive_seconds)

    def _start(self, system_message: str | None, backend, keep_alive: float | None) -> None:
        self._keep_alive = keep_alive
        self._backend = backend
        self._system_message = system_message
        self._warned: set[str] = set()
        self.messages: list[dict] = []
        self.default_generate_kwargs: dict = {}
        self.tools: list = []
        self._clear_last()

    @property
    def model_load(self) -> ModelLoad | None:
        """What an in-process model's copies are keyed by (its loader options and pins); None for a remote one."""
        return self._load

    # ----- aimu's state surface -----

    def _clear_last(self) -> None:
        self.last_thinking: str | None = None
        self.last_usage: dict | None = None
        self.last_stop_reason: str | None = None
        self.last_request: dict | None = None
        self.last_tool_calls: list[dict] = []
        self.last_structured = None
        self.last_output_truncated = False       # a plain attribute, as in aimu: callers may reset it

    @property
    def system_message(self) -> str | None:
        return self._system_message

    @system_message.setter
    def system_message(self, value: str | None) -> None:
        """Rewrite the system turn in place when a conversation exists; otherwise seed the first turn."""
        self._system_message = value
        has_system = bool(self.messages) and self.messages[0].get("role") == "system"
        if not self.messages:
            return
        if value is None and has_system:
            del self.messages[0]
        elif value is not None and has_system:
            self.messages[0]["content"] = value
        elif value is not None:
            self.messages.insert(0, {"role": "system", "content": value})     # as aimu inserts it: no timestamp

    @property
    def is_thinking_model(self) -> bool:
        return self.model.caps.thinking

    @property
    def is_tool_using_model(self) -> bool:
        return self.model.caps.tools

    @property
    def is_vision_model(self) -> bool:
        return self.model.caps.vision

    @property
    def is_audio_model(self) -> bool:
        return self.model.caps.audio

    @property
    def supports_structured_output(self) -> bool:
        return self.model.caps.structured

    def reset(self, system_message: str | None = _KEEP) -> None:
        self.messages = []
        if system_message != _KEEP:
            self._system_message = system_message
        self._clear_last()

    def __deepcopy__(self, memo):
        return self      # aimu: clients are not copyable

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.model)!r}, messages={len(self.messages)})"

    # ----- requests -----

    async def chat(self, user_message: str | None = None, generate_kwargs: dict | None = None,
                   use_tools: bool = True, stream: bool = False, images: list | None = None,
                   include: Iterable | None = None, tools: list | None = None, thinking=None, schema=None,
                   audio: list | None = None):
        """Append the user turn (if any), make one request, append the answer; tools are recorded, not run.
        With ``schema`` (a dataclass type or pydantic model) the answer is that object (``last_structured``)."""
        self.last_request, self.last_tool_calls = None, []
        validate_thinking(thinking)
        phases = resolve_include(include)
        self._require_vision(images)
        self._require_audio(audio)
        advertised = advertised_tools(self.model, self.tools if tools is None else tools, use_tools)
        ask = structured_ask(self.model, schema, advertised)
        turns = []                   # joined to the conversation once the request is built: a refused one adds nothing
        if user_message is not None:
            if not self.messages and self._system_message:
                turns.append(stamp({"role": "system", "content": self._system_message}))
            turns.append(stamp(user_turn(user_message + (ask.suffix if ask else ""), images, audio)))
        elif ask and ask.suffix:
            raise ValueError(f"schema= on {self.model} asks for JSON in the user turn: give a user message.")
        request = self._request([*self.messages, *turns], generate_kwargs, thinking, advertised, stream, ask)
        self.messages.extend(turns)
        if stream:
            return self._stream(request, phases, record=True, schema=schema)
        return self._answer(self._fold(await self._send(request), record=True), schema)

    async def generate(self, prompt: str, generate_kwargs: dict | None = None, stream: bool = False,
                       images: list | None = None, include: Iterable | None = None, thinking=None, schema=None,
                       audio: list | None = None):
        """A stateless one-off request: ``messages`` is not touched."""
        self.last_request, self.last_tool_calls = None, []
        validate_thinking(thinking)
        phases = resolve_include(include)
        self._require_vision(images)
        self._require_audio(audio)
        ask = structured_ask(self.model, schema, [])
        request = self._request([user_turn(prompt + (ask.suffix if ask else ""), images, audio)], generate_kwargs,
                                thinking, [], stream, ask)
        if stream:
            return self._stream(request, phases, record=False, schema=schema)
        return self._answer(self._fold(await self._send(request), record=False), schema)

    def _require_vision(self, images: list | None) -> None:
        if images and not self.model.caps.vision:
            raise ValueError(f"{self.model} does not take images. If it does, add ';vision' to the model string "
                             f"('{self.model.provider}:{self.model.model_id};vision').")

    def _require_audio(self, audio: list | None) -> None:
        if audio and not self.model.caps.audio:
            raise ValueError(f"Model {self.model.name} does not support audio input. Use a model with "
                             f"supports_audio=True (or add ';audio' to the model string).")

    def _request(self, messages: list[dict], generate_kwargs: dict | None, thinking, tools: list[dict],
                 stream: bool, ask: StructuredAsk | None = None) -> ChatRequest:
        request = chat_request(self.model, self.endpoint, messages, warn=self._warn_once,
                               default_generate_kwargs=self.default_generate_kwargs,
                               generate_kwargs=generate_kwargs, thinking=thinking, tools=tools, stream=stream,
                               keep_alive=self._keep_alive, response_schema=ask.native if ask else None)
        self.last_request = {"model": request.model, "messages": request.messages, "tools": request.tools,
                             **request.params}
        return request

    def _warn_once(self, message: str) -> None:
        if message not in self._warned:
            self._warned.add(message)
            logger.warning("%s: %s", self.model, message)

    async def _send(self, request: ChatRequest) -> ChatResult:
        return await self._get_backend().call(request)

    def _get_backend(self):
        if self._backend is None:
            self._backend = backend_for(self._load)
        return self._backend

    async def _stream(self, request: ChatRequest, phases, *, record: bool, schema=None) -> AsyncIterator[StreamChunk]:
        """The chunks ``include`` selects; with ``schema``, then always aimu's ``DONE`` chunk ``{"result": obj}``."""
        text = ""
        async for item in self._get_backend().stream(request):
            if isinstance(item, ChatDelta):
                phase = StreamingContentType(item.phase)
                if phases is None or phase in phases:
                    yield StreamChunk(phase, item.text)
            else:
                text = self._fold(item, record=record)
        if schema is not None:
            yield StreamChunk(StreamingContentType.DONE, {"result": self._answer(text, schema)})

    def _answer(self, text: str, schema):
        """The answer as the caller asked for it: the text, or the object of ``schema`` (``last_structured``)."""
        if schema is None:
            return text
        self.last_structured = parse_json_response(text, schema)
        return self.last_structured

    def _fold(self, result: ChatResult, *, record: bool) -> str:
        """Fold an answer into state: aimu's last_* always, the assistant turn only for chat()."""
        answer = fold(result, self.model)
        self.last_thinking, self.last_usage, self.last_stop_reason = answer.thinking, answer.usage, answer.stop_reason
        self.last_output_truncated = answer.stop_reason in TRUNCATED_STOP_REASONS
        self.last_tool_calls = answer.tool_calls
        if record:
            self.messages.append(answer.message)
        return answer.content


class ServedTextClient(AsyncTextClient):
    """A conversation with a model a server configured (a Serve app, through its handle): the server owns the
    endpoint, key and load options, so none are taken here. A remote model takes tools, images and thinking as
    asked and its upstream answers; an in-process one keeps aimu's checks."""

    def __init__(self, model: str, backend, *, system_message: str | None = None) -> None:
        self.model, self._load, self.endpoint = served_model(model), None, Endpoint()
        self._start(system_message, backend, None)
