"""The OpenAI-compatible HTTP surface: request bodies (validated), response bodies, error objects.

Bodies reject unknown fields, so a parameter the server would ignore (``logprobs``, ``n=2``) is a 400
naming it, not a silent surprise. Images may arrive only as ``data:`` URLs: the server never fetches
a URL a request names (engines would: HF vision loads http URLs and file paths). A chat body becomes a
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
from ..models.wire import ChatDelta, ChatRequest, Endpoint


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
        return ResponseSchema(name="json_object", json_schema={"type": "object"}) if self.type == "json_object" else None


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
    tools: list[ToolDef] | None = None
    tool_choice: Literal["none", "auto"] | None = None
    reasoning_effort: Literal["none", "minimal", "low", "medium", "high"] | None = None
    response_format: ResponseFormat | None = None
    n: Literal[1] = 1
    user: str | None = None
    # taken and ignored, as they change nothing here: OpenAI's stored completions, their tags, and parallel tool
    # calls (every engine here returns each call the model makes)
    store: bool | None = None
    metadata: dict[str, str] | None = None
    parallel_tool_calls: bool | None = None

    def generate_kwargs(self) -> dict[str, Any]:
        kwargs = {"temperature": self.temperature, "top_p": self.top_p,
                  "max_tokens": self.max_completion_tokens or self.max_tokens, "stop": self.stop,
                  "seed": self.seed, "presence_penalty": self.presence_penalty,
                  "frequency_penalty": self.frequency_penalty}
        return {key: value for key, value in kwargs.items() if value is not None}

    def thinking(self) -> bool | str | None:
        """``reasoning_effort`` in aimu's terms: none → off, minimal → low, the levels as they are."""
        if self.reasoning_effort is None:
            return None
        if self.reasoning_effort == "none":
            return False
        return "low" if self.reasoning_effort == "minimal" else self.reasoning_effort

    def tool_dicts(self) -> list[dict]:
        return [tool.model_dump(exclude_none=True) for tool in self.tools or []]

    def has_images(self) -> bool:
        return any(isinstance(message.content, list) and any(isinstance(part, ImagePart) for part in message.content)
                   for message in self.messages)

    def as_request(self, model: ResolvedModel, warn: Callable[[str], None]) -> ChatRequest:
        """This body as the request for a served ``model``; the server owns the endpoint."""
        use_tools = self.tool_choice != "none"
        tools = advertised_tools(model, self.tool_dicts(), use_tools)
        schema = self.response_format.response_schema() if self.response_format else None
        if schema is not None and model.provider == "anthropic" and tools:
            raise ValueError("response_format on an Anthropic model is answered through a forced tool, which cannot "
                             "go with tools: drop one of the two.")
        return chat_request(model, Endpoint(), [message.as_aimu() for message in self.messages], warn=warn,
                            generate_kwargs=self.generate_kwargs(), thinking=self.thinking(), tools=tools,
                            stream=self.stream, response_schema=schema)


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


def finish_reason(stop_reason: str | None, tool_calls: list) -> str:
    if tool_calls:
        return "tool_calls"
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


def chat_completion(id: str, model: str, answer: Answer) -> dict:
    calls = answer.tool_calls
    message: dict[str, Any] = {"role": "assistant", "content": answer.content or (None if calls else "")}
    if answer.thinking:
        message["reasoning_content"] = answer.thinking
    if calls:
        message["tool_calls"] = tool_calls_out(calls)
    return {"id": id, "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish_reason(answer.stop_reason, calls)}],
            "usage": usage_out(answer.usage)}


def delta_out(delta: ChatDelta) -> dict:
    """A streamed piece as OpenAI's delta: thinking as ``reasoning_content``, the answer as ``content``."""
    return {"reasoning_content" if delta.phase == "thinking" else "content": delta.text}


def tool_calls_delta(calls: list[dict]) -> dict:
    """The recorded tool calls as one stream delta, each with its index."""
    return {"tool_calls": [dict(call, index=index) for index, call in enumerate(tool_calls_out(calls))]}


def chat_chunk(id: str, model: str, delta: dict | None, finish: str | None = None, usage: dict | None = None) -> dict:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    chunk = {"id": id, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
             "choices": choices}
    if usage is not None:
        chunk["usage"] = usage
    return chunk


__all__ = ["AudioGenerationRequest", "ChatCompletionRequest", "ImageGenerationRequest", "chat_chunk",
           "chat_completion", "completion_id", "delta_out", "error_response", "finish_reason", "tool_calls_delta",
           "usage_out"]
