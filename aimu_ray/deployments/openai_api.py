"""The OpenAI-compatible HTTP surface: request bodies (validated), response bodies, error objects.

Bodies take every field of OpenAI's request and reject any other, so a typo is a 400 naming it; what each of
OpenAI's fields does here (honoured, forwarded, ignored, refused by name) is decided once, in ``CHAT_FIELDS``.
Images may arrive only as ``data:`` URLs: the server never fetches a URL a request names (engines would: HF
vision loads http URLs and file paths). A chat body becomes a
``ChatRequest`` through the request core the Python clients use, and a ``ChatResult`` comes back as
OpenAI's answer, with no client object between.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, Callable, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..clients.requests import Answer, advertised_tools, chat_request
from ..models.model_string import ResolvedModel
from ..models.structured import ResponseSchema
from ..models.wire import ChatDelta, ChatRequest, ChatResult, Endpoint, TokenLogprob


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ImageURL(Body):
    url: str = Field(min_length=1)
    detail: Literal["auto", "low", "high"] | None = None

    @field_validator("url")
    @classmethod
    def _inline_only(cls, url: str) -> str:
        if not url.startswith("data:image/"):
            raise ValueError("images must be inline data URLs (data:image/png;base64,...): the server does not "
                             "fetch URLs or read paths")
        return url


class TextPart(Body):
    type: Literal["text"]
    text: str


class ImagePart(Body):
    type: Literal["image_url"]
    image_url: ImageURL


class FunctionCall(Body):
    name: str = Field(min_length=1)
    arguments: str = "{}"

    @field_validator("arguments")
    @classmethod
    def _json_object(cls, text: str) -> str:
        try:
            value = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"tool call arguments must be a JSON object: {error}") from None
        if not isinstance(value, dict):
            raise ValueError("tool call arguments must be a JSON object")
        return text


class ToolCallIn(Body):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class Message(Body):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart | ImagePart] | None = None
    name: str | None = None
    tool_calls: list[ToolCallIn] | None = None
    tool_call_id: str | None = None

    def as_aimu(self) -> dict[str, Any]:
        """The message as a request carries it (aimu's form): ``developer`` is a system turn, tool-call arguments
        parsed to dicts, as the limits measure them and every engine reads them."""
        message: dict[str, Any] = {"role": "system" if self.role == "developer" else self.role}
        if self.content is not None:
            message["content"] = (self.content if isinstance(self.content, str)
                                  else [part.model_dump(exclude_none=True) for part in self.content])
        if self.name:
            message["name"] = self.name
        if self.tool_call_id:
            message["tool_call_id"] = self.tool_call_id
        if self.tool_calls:
            message["tool_calls"] = [{"id": call.id, "type": "function",
                                      "function": {"name": call.function.name,
                                                   "arguments": json.loads(call.function.arguments)}}
                                     for call in self.tool_calls]
        return message


class FunctionDef(Body):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    description: str | None = None
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})
    strict: bool | None = None


class ToolDef(Body):
    type: Literal["function"]
    function: FunctionDef


class StreamOptions(Body):
    include_usage: bool = False


class JsonSchemaFormat(Body):
    """OpenAI's ``response_format.json_schema``: a named JSON Schema."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str = Field("response", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    description: str | None = None
    json_schema: dict[str, Any] = Field(default_factory=lambda: {"type": "object"}, alias="schema")
    strict: bool | None = None


class ResponseFormat(Body):
    """``text``, ``json_object`` (any JSON object) or ``json_schema`` (an object of that schema)."""

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_given(self) -> ResponseFormat:
        if (self.type == "json_schema") != (self.json_schema is not None):
            raise ValueError("json_schema goes with type 'json_schema', and only with it")
        return self

    def response_schema(self) -> ResponseSchema | None:
        """What every served text model holds its answer to: remote ones upstream, in-process ones by grammar."""
        if self.type == "json_schema":
            return ResponseSchema(name=self.json_schema.name, json_schema=self.json_schema.json_schema)
        if self.type == "json_object":
            return ResponseSchema(name="json_object", json_schema={"type": "object"})
        return None


class FunctionName(Body):
    name: str = Field(min_length=1)


class NamedToolChoice(Body):
    """``{"type": "function", "function": {"name": ...}}``: the model must call that function."""

    type: Literal["function"]
    function: FunctionName


EVERY_WIRE = frozenset({"openai", "anthropic", "ollama", "hf", "llamacpp"})   # the text protocols a model speaks
IN_PROCESS = frozenset({"hf", "llamacpp"})


class FieldRule(BaseModel):
    """What the server does with one field of OpenAI's chat-completions body, by the served model's wire protocol:
    the protocols in ``takes`` honour it (an in-process engine, or the upstream it is forwarded to); for the others
    it is ignored (it changes nothing here) or refused with a 400 naming it."""

    model_config = ConfigDict(frozen=True)

    takes: frozenset[str]
    otherwise: Literal["ignore", "refuse"] = "refuse"
    why: str


def _rule(takes: frozenset[str] | set[str], why: str, otherwise: Literal["ignore", "refuse"] = "refuse") -> FieldRule:
    return FieldRule(takes=frozenset(takes), otherwise=otherwise, why=why)


# Every field of OpenAI's request (openai SDK: types/chat/completion_create_params.py), decided once. A field that
# is not here is not OpenAI's: the body refuses it (a typo is a 400 naming it). Value-dependent fields (``n`` > 1,
# ``tool_choice`` beyond none/auto, ``modalities`` with audio, ``reasoning_effort``) count as asked only then.
CHAT_FIELDS: dict[str, FieldRule] = {
    **{name: _rule(EVERY_WIRE, "the request itself, or a setting every engine takes") for name in (
        "model", "messages", "stream", "stream_options", "temperature", "top_p", "max_tokens",
        "max_completion_tokens", "tools", "functions", "response_format", "reasoning_effort", "n")},
    "stop": _rule(EVERY_WIRE, "upstream as stop (Anthropic: stop_sequences); in-process engines cut the answer "
                              "before it"),
    "seed": _rule({"openai", "ollama", "hf", "llamacpp"}, "a sampling seed; Anthropic has none"),
    "frequency_penalty": _rule({"openai", "ollama", "llamacpp"}, "transformers and Anthropic have no such penalty"),
    "presence_penalty": _rule({"openai", "ollama", "llamacpp"}, "transformers and Anthropic have no such penalty"),
    "logit_bias": _rule({"openai", "hf", "llamacpp"}, "token ids of the model's vocabulary; HF as sequence_bias"),
    "logprobs": _rule({"openai", "ollama", "hf", "llamacpp"}, "HF from the generation scores, llama.cpp from its "
                                                              "logits (load it with model_kwargs logits_all), "
                                                              "upstream as asked"),
    "top_logprobs": _rule({"openai", "ollama", "hf", "llamacpp"}, "goes with logprobs"),
    "tool_choice": _rule({"openai", "anthropic", "hf", "llamacpp"},
                         "required or a named function: upstream (Anthropic: any/tool); in-process engines generate "
                         "the call under a grammar of the tools' schemas; Ollama cannot force a call"),
    "function_call": _rule({"openai", "anthropic", "hf", "llamacpp"}, "the deprecated tool_choice, read as one"),
    "parallel_tool_calls": _rule({"openai", "hf", "llamacpp"}, "upstream as asked; in-process, false holds a "
                                 "required call to exactly one; every other engine returns each call the model makes",
                                 otherwise="ignore"),
    "verbosity": _rule({"openai"}, "an OpenAI model's setting: forwarded to OpenAI-compatible upstreams"),
    "web_search_options": _rule({"openai"}, "search is the upstream's own tool; no other model here has one"),
    "moderation": _rule({"openai"}, "moderation is the upstream's own; nothing here would run it"),
    "modalities": _rule(set(), "only text comes back: a request for audio is refused"),
    "audio": _rule(set(), "audio output: every answer here is text"),
    **{name: _rule(set(), "a hint or a record for OpenAI's platform that changes no answer", otherwise="ignore")
       for name in ("store", "metadata", "user", "safety_identifier", "prompt_cache_key", "prompt_cache_retention",
                    "prompt_cache_options", "service_tier", "prediction")},
}
_REFUSED_ALWAYS = ("audio", "modalities")
_OFF_WHEN_FALSE = ("logprobs", "stream")         # false asks nothing; parallel_tool_calls false does


class ChatCompletionRequest(Body):
    model: str = Field(min_length=1)
    messages: list[Message] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    logit_bias: dict[str, float] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    tools: list[ToolDef] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    functions: list[FunctionDef] | None = None
    function_call: Literal["none", "auto"] | FunctionName | None = None
    parallel_tool_calls: bool | None = None
    reasoning_effort: Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"] | None = None
    response_format: ResponseFormat | None = None
    n: int = Field(1, ge=1)                               # at most limits.max_choices, checked by the client
    verbosity: Literal["low", "medium", "high"] | None = None
    web_search_options: dict[str, Any] | None = None
    moderation: dict[str, Any] | None = None
    modalities: list[Literal["text", "audio"]] | None = None
    audio: dict[str, Any] | None = None
    # accepted and ignored: see CHAT_FIELDS
    store: bool | None = None
    metadata: dict[str, str] | None = None
    user: str | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None
    prompt_cache_retention: Literal["in_memory", "24h"] | None = None
    prompt_cache_options: dict[str, Any] | None = None
    service_tier: str | None = None
    prediction: dict[str, Any] | None = None

    @field_validator("logit_bias")
    @classmethod
    def _token_ids(cls, bias: dict[str, float] | None) -> dict[str, float] | None:
        for token, value in (bias or {}).items():
            if not token.isdigit() or not -100 <= value <= 100:
                raise ValueError("logit_bias maps token ids (digits) to a bias from -100 to 100")
        return bias

    @field_validator("modalities")
    @classmethod
    def _text_out(cls, modalities: list[str] | None) -> list[str] | None:
        if modalities and "audio" in modalities:
            raise ValueError(f"modalities: {CHAT_FIELDS['modalities'].why}")
        return modalities

    @field_validator("audio")
    @classmethod
    def _no_audio(cls, audio: dict | None) -> None:
        if audio is not None:
            raise ValueError(f"audio: {CHAT_FIELDS['audio'].why}")
        return None

    @model_validator(mode="after")
    def _consistent(self) -> ChatCompletionRequest:
        if self.top_logprobs is not None and not self.logprobs:
            raise ValueError("top_logprobs goes with logprobs: true")
        if self.functions and self.tools:
            raise ValueError("functions is the deprecated form of tools: send one of the two")
        if self.function_call is not None and self.tool_choice is not None:
            raise ValueError("function_call is the deprecated form of tool_choice: send one of the two")
        if self.choice() not in (None, "none", "auto") and not self.tool_list():
            field = "tool_choice" if self.tool_choice is not None else "function_call"
            raise ValueError(f"{field} forces a call to one of the tools: it goes with tools (or functions)")
        return self

    def asked(self) -> list[str]:
        """The fields this body sets beyond what every model does: each must be honoured by the model's wire."""
        fields = [name for name in self.model_fields_set
                  if getattr(self, name) is not None and not (name in _OFF_WHEN_FALSE and getattr(self, name) is False)]
        choice = self.choice()
        if choice in (None, "none", "auto"):
            fields = [name for name in fields if name not in ("tool_choice", "function_call")]
        return sorted(name for name in fields if name not in _REFUSED_ALWAYS)

    def check_fields(self, protocol: str) -> None:
        """A 400 (ValueError) naming the first field the served model's ``protocol`` cannot honour."""
        for name in self.asked():
            rule = CHAT_FIELDS[name]
            if protocol not in rule.takes and rule.otherwise == "refuse":
                takers = ", ".join(_WIRE_NAMES[wire] for wire in sorted(rule.takes)) or "no model here"
                raise ValueError(f"{name} is not supported for this model ({_WIRE_NAMES[protocol]}); it is taken by "
                                 f"{takers} ({rule.why}).")

    def choice(self) -> str | NamedToolChoice | None:
        """``tool_choice``, or the deprecated ``function_call`` read as one."""
        if isinstance(self.function_call, FunctionName):
            return NamedToolChoice(type="function", function=self.function_call)
        return self.tool_choice if self.tool_choice is not None else self.function_call

    def generate_kwargs(self, protocol: str = "openai", index: int = 0) -> dict[str, Any]:
        """The settings as generate kwargs, in the terms of the model's wire; a seeded choice ``index`` > 0 takes
        ``seed + index``, so that n choices differ, each deterministically."""
        rules = {name: CHAT_FIELDS[name] for name in self.asked()}
        stop = [self.stop] if isinstance(self.stop, str) else self.stop
        kwargs = {"temperature": self.temperature, "top_p": self.top_p,
                  "max_tokens": self.max_completion_tokens or self.max_tokens,
                  "seed": None if self.seed is None else self.seed + index}
        if stop:
            kwargs["stop_sequences" if protocol == "anthropic" else "stop"] = stop
        for name in ("presence_penalty", "frequency_penalty", "logit_bias", "logprobs", "top_logprobs", "verbosity",
                     "web_search_options", "moderation", "parallel_tool_calls"):
            if name in rules and protocol in rules[name].takes:
                kwargs[name] = getattr(self, name)
        if self.logprobs and protocol == "llamacpp":
            kwargs.setdefault("top_logprobs", 0)          # llama-cpp-python returns none without a count
        choice = self.choice()
        if choice not in (None, "none", "auto") and self.tool_list():
            kwargs["tool_choice"] = _anthropic_choice(choice) if protocol == "anthropic" else (
                choice if isinstance(choice, str) else choice.model_dump())
        return {key: value for key, value in kwargs.items() if value is not None}

    def thinking(self) -> bool | str | None:
        """``reasoning_effort`` in aimu's terms: none → off, minimal → low, xhigh and max → high."""
        if self.reasoning_effort is None:
            return None
        if self.reasoning_effort == "none":
            return False
        return {"minimal": "low", "xhigh": "high", "max": "high"}.get(self.reasoning_effort, self.reasoning_effort)

    def tool_list(self) -> list[ToolDef]:
        """``tools``, or the deprecated ``functions`` as tools."""
        return self.tools or [ToolDef(type="function", function=function) for function in self.functions or []]

    def tool_dicts(self) -> list[dict]:
        return [tool.model_dump(exclude_none=True) for tool in self.tool_list()]

    def has_images(self) -> bool:
        return any(isinstance(message.content, list) and any(isinstance(part, ImagePart) for part in message.content)
                   for message in self.messages)

    def as_request(self, model: ResolvedModel, warn: Callable[[str], None], index: int = 0) -> ChatRequest:
        """This body as the request for a served ``model`` (choice ``index`` of n); the server owns the endpoint."""
        self.check_fields(model.spec.protocol)
        use_tools = self.choice() != "none"
        tools = advertised_tools(model, self.tool_dicts(), use_tools)
        schema = self.response_format.response_schema() if self.response_format else None
        if schema is not None and model.provider == "anthropic" and tools:
            raise ValueError("response_format on an Anthropic model is answered through a forced tool, which cannot "
                             "go with tools: drop one of the two.")
        return chat_request(model, Endpoint(), [message.as_aimu() for message in self.messages], warn=warn,
                            generate_kwargs=self.generate_kwargs(model.spec.protocol, index),
                            thinking=self.thinking(), tools=tools, stream=self.stream, response_schema=schema)


_WIRE_NAMES = {"openai": "an OpenAI-compatible upstream", "anthropic": "Anthropic", "ollama": "Ollama",
               "hf": "in-process transformers", "llamacpp": "in-process llama.cpp"}


def _anthropic_choice(choice: str | NamedToolChoice) -> dict:
    return {"type": "any"} if choice == "required" else {"type": "tool", "name": choice.function.name}


SIZE = r"^(auto|[1-9][0-9]{1,3}x[1-9][0-9]{1,3})$"


class ImageGenerationRequest(Body):
    model: str = Field(min_length=1)
    prompt: str = Field(min_length=1)
    n: int = Field(1, ge=1)                               # at most limits.max_images, checked by the client
    size: str = Field("auto", pattern=SIZE)               # at most limits.max_image_pixels, likewise
    response_format: Literal["b64_json", "url"] = "b64_json"
    negative_prompt: str | None = None                    # extensions for diffusion models
    num_inference_steps: int | None = Field(None, ge=1)   # at most limits.max_inference_steps
    guidance_scale: float | None = Field(None, ge=0, le=50)
    seed: int | None = Field(None, ge=0, lt=2**63)
    user: str | None = None

    def dimensions(self) -> dict[str, int]:
        if self.size == "auto":
            return {}
        width, height = (int(side) for side in self.size.split("x"))
        return {"width": width, "height": height}


class AudioGenerationRequest(Body):
    """Not in OpenAI's API (it has speech, not music): text-to-audio, answered with a WAV file by default."""

    model: str = Field(min_length=1)
    prompt: str = Field(min_length=1)
    duration_s: float | None = Field(None, gt=0)          # at most limits.max_audio_s, checked by the client
    num_inference_steps: int | None = Field(None, ge=1)   # at most limits.max_inference_steps
    seed: int | None = Field(None, ge=0, lt=2**63)
    n: int = Field(1, ge=1)                               # at most limits.max_audio_clips, likewise
    response_format: Literal["wav", "b64_json", "url"] = "wav"

    @model_validator(mode="after")
    def _one_wav(self) -> AudioGenerationRequest:
        if self.response_format == "wav" and self.n > 1:
            raise ValueError("response_format 'wav' carries one clip: use n=1, or 'b64_json' / 'url'")
        return self


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


def error_response(message: str, type: str, *, code: str | None = None, param: str | None = None) -> dict:
    return ErrorResponse(error=ErrorBody(message=message, type=type, code=code, param=param)).model_dump()


# ----- responses -----

FINISH_REASONS = {"length": "length", "max_tokens": "length", "tool_calls": "tool_calls", "tool_use": "tool_calls",
                  "content_filter": "content_filter", "refusal": "content_filter"}


def finish_reason(stop_reason: str | None, tool_calls: list, functions: bool = False) -> str:
    if tool_calls:
        return "function_call" if functions else "tool_calls"
    return FINISH_REASONS.get(stop_reason or "", "stop")


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex[:24]}"


def tool_calls_out(calls: list[dict]) -> list[dict]:
    """aimu's recorded calls (arguments as dicts) as OpenAI's (arguments as a JSON string)."""
    return [{"id": call["id"], "type": "function",
             "function": {"name": call["name"], "arguments": json.dumps(call["arguments"])}}
            for call in calls]


def usage_out(usage: dict | None) -> dict | None:
    if not usage:
        return None
    return {"prompt_tokens": usage.get("input_tokens", 0), "completion_tokens": usage.get("output_tokens", 0),
            "total_tokens": usage.get("total_tokens", 0)}


def summed_usage(answers: list[Answer]) -> dict | None:
    """The usage of n choices together: each choice is its own generation, its prompt included."""
    usages = [answer.usage for answer in answers if answer.usage]
    keys = ("input_tokens", "output_tokens", "total_tokens")
    return {key: sum(usage.get(key, 0) for usage in usages) for key in keys} if usages else None


def logprobs_out(logprobs: list[TokenLogprob] | None) -> dict | None:
    """OpenAI's ``choices[i].logprobs`` of a chat answer."""
    if logprobs is None:
        return None
    return {"content": [token.model_dump() for token in logprobs], "refusal": None}


def chat_message(answer: Answer, functions: bool) -> dict:
    """The assistant message; asked with the deprecated ``functions``, a call is also its ``function_call``."""
    calls = answer.tool_calls
    message: dict[str, Any] = {"role": "assistant", "content": answer.content or (None if calls else "")}
    if answer.thinking:
        message["reasoning_content"] = answer.thinking
    if calls:
        message["tool_calls"] = tool_calls_out(calls)
        if functions:
            message["function_call"] = message["tool_calls"][0]["function"]
    return message


def chat_completion(id: str, body: ChatCompletionRequest, choices: list[tuple[ChatResult, Answer]]) -> dict:
    """OpenAI's answer with a choice per generation, index 0..n-1, and their usage summed."""
    out = [{"index": index, "message": chat_message(answer, bool(body.functions)),
            "logprobs": logprobs_out(result.logprobs),
            "finish_reason": finish_reason(answer.stop_reason, answer.tool_calls, bool(body.functions))}
           for index, (result, answer) in enumerate(choices)]
    return {"id": id, "object": "chat.completion", "created": int(time.time()), "model": body.model, "choices": out,
            "usage": usage_out(summed_usage([answer for _, answer in choices]))}


def delta_out(delta: ChatDelta) -> dict:
    """A streamed piece as OpenAI's delta: thinking as ``reasoning_content``, the answer as ``content``."""
    return {"reasoning_content" if delta.phase == "thinking" else "content": delta.text}


def tool_calls_delta(calls: list[dict]) -> dict:
    """The recorded tool calls as one stream delta, each with its index."""
    return {"tool_calls": [dict(call, index=index) for index, call in enumerate(tool_calls_out(calls))]}


def chat_chunk(id: str, model: str, delta: dict | None, finish: str | None = None, usage: dict | None = None, *,
               index: int = 0, logprobs: dict | None = None) -> dict:
    """One stream chunk: a delta of choice ``index`` (with its logprobs, if any), or the usage alone."""
    choices = [] if delta is None else [{"index": index, "delta": delta, "finish_reason": finish}]
    if logprobs is not None:
        choices[0]["logprobs"] = logprobs
    chunk = {"id": id, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
             "choices": choices}
    if usage is not None:
        chunk["usage"] = usage
    return chunk


__all__ = ["CHAT_FIELDS", "AudioGenerationRequest", "ChatCompletionRequest", "FieldRule", "ImageGenerationRequest",
           "chat_chunk", "chat_completion", "completion_id", "delta_out", "error_response", "finish_reason",
           "logprobs_out", "summed_usage", "tool_calls_delta", "usage_out"]
