"""Anthropic's Messages API over every served text model: request bodies (validated), their conversion to the
request every route builds, and the answer as Anthropic's Message JSON or its named SSE events; and its token count
(``/v1/messages/count_tokens``) of the prompt such a body would send.

A body becomes the ``ChatRequest`` an OpenAI chat body becomes (``chat_request``): its blocks are rewritten into
aimu's OpenAI-like messages (``tool_use`` → the assistant turn's ``tool_calls``, ``tool_result`` → a ``tool``
message, thinking blocks → aimu's inert ``thinking`` key, which no provider is sent), its tools into function specs
and its thinking config into aimu's ``thinking``. Every field of Anthropic's ``MessageCreateParams`` is taken: those
that change nothing here are ignored (``metadata``, ``service_tier``, ``speed``, ``cache_control``, ...), those that
cannot be honoured are a 400 naming them (server tools, a forced ``tool_choice`` on Ollama, images by URL or file id:
the server never fetches, documents, a code-execution ``container``); fields Anthropic does not have are refused too.
Thinking blocks go out with an empty ``signature``: no model here signs its thinking.
"""

from __future__ import annotations

import json
import uuid
from contextlib import aclosing
from typing import TYPE_CHECKING, Annotated, Any, AsyncIterator, Callable, Literal, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator, model_validator

from ..adapters.anthropic import THINKING_BUDGETS
from ..clients.requests import Answer, advertised_tools, chat_request, fold
from ..models.model_string import ResolvedModel
from ..models.structured import ResponseSchema
from ..models.wire import ChatDelta, ChatRequest, ChatResult, Endpoint, TokenCount
from .errors import ErrorAnswer

if TYPE_CHECKING:
    from .served_models import Served

EFFORTS = {"low": "low", "medium": "medium", "high": "high", "xhigh": "high", "max": "high"}   # → aimu's levels
STOP_REASONS = {"length": "max_tokens", "max_tokens": "max_tokens", "stop_sequence": "stop_sequence",
                "content_filter": "refusal", "refusal": "refusal", "pause_turn": "pause_turn"}   # else end_turn
SIGNATURE = ""                  # thinking blocks' signature: nothing here signs thinking, and nothing checks it


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ----- content blocks -----

class TextBlock(Body):
    type: Literal["text"]
    text: str
    cache_control: dict[str, Any] | None = None      # a prompt-cache breakpoint: no prompt cache here to steer
    citations: list[dict[str, Any]] | None = None    # where an earlier answer's text came from: changes nothing


class ImageSource(Body):
    type: Literal["base64"]
    media_type: Literal["image/jpeg", "image/png", "image/gif", "image/webp"]
    data: str = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _inline_only(cls, source: Any) -> Any:
        if isinstance(source, dict) and source.get("type") in ("url", "file"):
            raise ValueError(f"images must be base64 sources, not {source['type']!r}: the server does not fetch "
                             "URLs or read files")
        return source


class ImageBlock(Body):
    type: Literal["image"]
    source: ImageSource
    cache_control: dict[str, Any] | None = None
    transformations: dict[str, Any] | None = None    # Anthropic's server-side image edits: none here ({} is none)

    @field_validator("transformations")
    @classmethod
    def _untransformed(cls, transformations: dict | None) -> dict | None:
        if transformations:
            raise ValueError("image transformations are not applied here: send the image as the model should see it")
        return transformations

    def as_part(self) -> dict:
        return {"type": "image_url", "image_url": {"url": f"data:{self.source.media_type};base64,{self.source.data}"}}


class ThinkingBlock(Body):
    type: Literal["thinking"]
    thinking: str
    signature: str


class RedactedThinkingBlock(Body):
    type: Literal["redacted_thinking"]
    data: str


class ToolUseBlock(Body):
    type: Literal["tool_use"]
    id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    input: dict[str, Any]
    cache_control: dict[str, Any] | None = None
    caller: dict[str, Any] | None = None             # who made the call: the model itself, the only caller here
    toolset_name: str | None = None


class ToolResultBlock(Body):
    type: Literal["tool_result"]
    tool_use_id: str = Field(min_length=1)
    content: Content = ""
    is_error: bool | None = None
    cache_control: dict[str, Any] | None = None
    toolset_name: str | None = None

    @field_validator("content")
    @classmethod
    def _text_only(cls, content: str | list) -> str | list:
        if not isinstance(content, str) and (kinds := {block.type for block in content} - {"text"}):
            raise ValueError(f"a tool result carries text here, not {', '.join(sorted(kinds))} blocks: a tool "
                             "message of the served models' requests is text")
        return content

    def as_aimu(self) -> dict:
        """A ``tool`` message; the text of an error result says so, as OpenAI-format messages have no flag."""
        text = self.content if isinstance(self.content, str) else "\n".join(block.text for block in self.content)
        content = f"Error: {text}" if self.is_error else text
        return {"role": "tool", "tool_call_id": self.tool_use_id, "content": content}


class UnsupportedBlock(BaseModel):
    """Anthropic's other blocks (documents, search results, server tools' calls and results): not honoured here."""

    model_config = ConfigDict(extra="allow")
    type: str

    @model_validator(mode="after")
    def _refuse(self) -> UnsupportedBlock:
        raise ValueError(f"{self.type!r} blocks are not supported here: send text, image (base64), tool_use, "
                         "tool_result and thinking blocks")


BLOCKS = {"text", "image", "thinking", "redacted_thinking", "tool_use", "tool_result"}


def _block_kind(block: Any) -> str:
    kind = block.get("type") if isinstance(block, dict) else getattr(block, "type", None)
    return kind if isinstance(kind, str) and kind in BLOCKS else "other"


Block = Annotated[Union[Annotated[TextBlock, Tag("text")], Annotated[ImageBlock, Tag("image")],
                        Annotated[ThinkingBlock, Tag("thinking")],
                        Annotated[RedactedThinkingBlock, Tag("redacted_thinking")],
                        Annotated[ToolUseBlock, Tag("tool_use")], Annotated[ToolResultBlock, Tag("tool_result")],
                        Annotated[UnsupportedBlock, Tag("other")]], Discriminator(_block_kind)]


def _text_or_blocks(content: Any) -> str:
    return "text" if isinstance(content, str) else "blocks"


Content = Annotated[Union[Annotated[str, Tag("text")], Annotated[list[Block], Tag("blocks")]],
                    Discriminator(_text_or_blocks)]      # one error for a bad block, not one for the string too
ToolResultBlock.model_rebuild()                          # its content holds blocks, defined only now


class MessageIn(Body):
    role: Literal["user", "assistant", "system"]
    content: Content

    def as_aimu(self) -> list[dict]:
        """This turn as aimu's messages: a user turn's tool results become ``tool`` messages, in order."""
        if isinstance(self.content, str):
            return [{"role": self.role, "content": self.content}]
        if self.role == "assistant":
            return [_assistant_turn(self.content)]
        allowed = (TextBlock,) if self.role == "system" else (TextBlock, ImageBlock, ToolResultBlock)
        if wrong := [block.type for block in self.content if not isinstance(block, allowed)]:
            raise ValueError(f"a {self.role} turn cannot carry {', '.join(sorted(set(wrong)))} blocks")
        messages, parts = [], []
        for block in self.content:
            if isinstance(block, ToolResultBlock):
                messages += [_user_turn(parts)] if parts else []
                messages.append(block.as_aimu())
                parts = []
            else:
                parts.append(block)
        return messages + ([_user_turn(parts, self.role)] if parts else [])


def _user_turn(blocks: list[TextBlock | ImageBlock], role: str = "user") -> dict:
    """Text alone as one string (every engine reads it), text with images as OpenAI content parts."""
    if all(isinstance(block, TextBlock) for block in blocks):
        return {"role": role, "content": "\n".join(block.text for block in blocks)}
    return {"role": role, "content": [block.as_part() if isinstance(block, ImageBlock)
                                      else {"type": "text", "text": block.text} for block in blocks]}


def _assistant_turn(blocks: list) -> dict:
    """Text as the content, tool_use blocks as tool calls (arguments as dicts, as aimu keeps them), thinking as the
    inert key aimu stores it under; redacted thinking is dropped (nothing here can read it)."""
    allowed = (TextBlock, ToolUseBlock, ThinkingBlock, RedactedThinkingBlock)
    if wrong := [block.type for block in blocks if not isinstance(block, allowed)]:
        raise ValueError(f"an assistant turn cannot carry {', '.join(sorted(set(wrong)))} blocks")
    text = "".join(block.text for block in blocks if isinstance(block, TextBlock))
    calls = [{"id": block.id, "type": "function", "function": {"name": block.name, "arguments": block.input}}
             for block in blocks if isinstance(block, ToolUseBlock)]
    thinking = "\n".join(block.thinking for block in blocks if isinstance(block, ThinkingBlock))
    message: dict[str, Any] = {"role": "assistant"}
    if text or not calls:
        message["content"] = text
    if calls:
        message["tool_calls"] = calls
    if thinking:
        message["thinking"] = thinking
    return message


# ----- tools, thinking, output -----

class ToolDef(Body):
    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_-]+$")
    description: str | None = None
    input_schema: dict[str, Any]
    type: Literal["custom"] | None = None
    cache_control: dict[str, Any] | None = None
    strict: bool | None = None                       # taken as OpenAI's route takes it: what the provider does
    # Anthropic's tool search, fine-grained streaming, examples and programmatic callers: the model sees the tool
    # as it is, its input arrives whole at the end, and only the model calls it
    defer_loading: bool | None = None
    eager_input_streaming: bool | None = None
    input_examples: list[dict[str, Any]] | None = None
    allowed_callers: list[str] | None = None

    @model_validator(mode="before")
    @classmethod
    def _custom_only(cls, tool: Any) -> Any:
        if isinstance(tool, dict) and tool.get("type") not in (None, "custom"):
            raise ValueError(f"server tool {tool['type']!r} is not available here: only custom tools (name, "
                             "description, input_schema), which the caller runs")
        return tool

    def as_function(self) -> dict:
        function = {"name": self.name, "parameters": self.input_schema}
        if self.description is not None:
            function["description"] = self.description
        if self.strict is not None:
            function["strict"] = self.strict
        return {"type": "function", "function": function}


class ToolChoice(Body):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None    # with any: exactly one call; else each call the model makes

    @model_validator(mode="after")
    def _name_with_tool(self) -> ToolChoice:
        if (self.type == "tool") != (self.name is not None):
            raise ValueError("tool_choice: name goes with type 'tool', and only with it")
        return self

    def forced(self, model: ResolvedModel, tools: list[ToolDef] | None) -> dict[str, Any]:
        """A forced call (any, tool) as generate kwargs in the model's terms: Anthropic's own ``tool_choice`` to an
        Anthropic model; OpenAI's to an OpenAI-compatible upstream and to an in-process engine, which answers it
        under a grammar of the tools' schemas (``disable_parallel_tool_use``: exactly one call). Ollama has no way to
        force a call: a 400."""
        if self.type not in ("any", "tool"):
            return {}
        if not tools:
            raise ValueError(f"tool_choice {self.type!r} forces a call to one of the tools: it goes with tools")
        if model.spec.protocol == "anthropic":
            return {"tool_choice": self.model_dump(exclude_none=True)}
        if model.spec.protocol == "ollama":
            raise ValueError(f"tool_choice {self.type!r} forces a tool call, which Ollama cannot: use 'auto' or "
                             "'none'")
        if self.type == "any":
            return {"tool_choice": "required", "parallel_tool_calls": not self.disable_parallel_tool_use}
        return {"tool_choice": {"type": "function", "function": {"name": self.name}}}


class ThinkingConfig(Body):
    type: Literal["enabled", "disabled", "adaptive", "between_tools"]
    budget_tokens: int | None = Field(None, ge=1024)
    display: Literal["summarized", "omitted"] | None = None

    @model_validator(mode="after")
    def _budget_with_enabled(self) -> ThinkingConfig:
        if (self.type == "enabled") != (self.budget_tokens is not None):
            raise ValueError("budget_tokens goes with type 'enabled', and only with it")
        return self

    def level(self) -> bool | str:
        """aimu's ``thinking``: off for 'disabled' and 'between_tools' (thinking off), on for 'adaptive', and for
        'enabled' the smallest of aimu's levels whose Anthropic budget covers ``budget_tokens``."""
        if self.type in ("disabled", "between_tools"):
            return False
        if self.type == "adaptive":
            return True
        return next((level for level in ("low", "medium") if self.budget_tokens <= THINKING_BUDGETS[level]), "high")


class JsonFormat(Body):
    type: Literal["json_schema"]
    json_schema: dict[str, Any] = Field(alias="schema")

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class OutputConfig(Body):
    effort: Literal["low", "medium", "high", "xhigh", "max"] | None = None
    format: JsonFormat | None = None


# ----- the request -----

class MessagesRequest(Body):
    """Anthropic's ``MessageCreateParams``; ``temperature``, ``top_p`` and ``top_k`` too (the SDK sends them in
    ``extra_body``)."""

    model: str = Field(min_length=1)
    max_tokens: int = Field(ge=1)                    # 0 (warm Anthropic's prompt cache, answer nothing): no cache here
    messages: list[MessageIn] = Field(min_length=1)
    system: str | list[TextBlock] | None = None
    stop_sequences: list[str] | None = None
    temperature: float | None = Field(None, ge=0, le=1)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=0)
    tools: list[ToolDef] | None = None
    tool_choice: ToolChoice | None = None
    thinking: ThinkingConfig | None = None
    output_config: OutputConfig | None = None
    stream: bool = False
    container: None = None                           # a code-execution container: none here
    # taken and ignored, as they change nothing here: the caller's tags, capacity and speed tiers, the prompt cache,
    # Anthropic's regions, cache diagnostics and account scoping
    metadata: dict[str, Any] | None = None
    service_tier: Literal["auto", "standard_only"] | None = None
    speed: Literal["standard", "fast"] | None = None
    cache_control: dict[str, Any] | None = None
    inference_geo: str | None = None
    diagnostics: dict[str, Any] | None = None
    user_profile_id: str | None = None
    workspace_id: str | None = None

    @model_validator(mode="after")
    def _budget_within_max_tokens(self) -> MessagesRequest:
        if self.thinking and self.thinking.budget_tokens and self.thinking.budget_tokens >= self.max_tokens:
            raise ValueError("max_tokens must be greater than thinking.budget_tokens (thinking counts toward it)")
        return self

    def uses_tools(self) -> bool:
        return bool(self.tools) and not (self.tool_choice and self.tool_choice.type == "none")

    def has_images(self) -> bool:
        return any(isinstance(message.content, list) and any(isinstance(block, ImageBlock) for block in message.content)
                   for message in self.messages)

    def shows_thinking(self) -> bool:
        return not (self.thinking and self.thinking.display == "omitted")

    def aimu_messages(self) -> list[dict]:
        system = self.system if isinstance(self.system, str) else "\n\n".join(block.text for block in self.system or [])
        head = [{"role": "system", "content": system}] if system else []
        return head + [turn for message in self.messages for turn in message.as_aimu()]

    def thinking_level(self) -> bool | str | None:
        """aimu's ``thinking``: ``output_config.effort`` sets the level (xhigh and max are aimu's high) unless
        thinking is off; without either, the model's default."""
        effort = EFFORTS[self.output_config.effort] if self.output_config and self.output_config.effort else None
        if self.thinking is None:
            return effort
        level = self.thinking.level()
        return effort if level is not False and effort else level

    def generate_kwargs(self, model: ResolvedModel) -> dict[str, Any]:
        """Sampling and stop settings in aimu's terms; an Anthropic model also gets the exact thinking budget and
        its own name for stop sequences."""
        anthropic = model.spec.protocol == "anthropic"
        kwargs = {"max_tokens": self.max_tokens, "temperature": self.temperature, "top_p": self.top_p,
                  "top_k": self.top_k, "stop_sequences" if anthropic else "stop": self.stop_sequences or None}
        if anthropic and self.thinking and self.thinking.budget_tokens:
            kwargs["thinking_budget_tokens"] = self.thinking.budget_tokens
        if self.tool_choice:
            kwargs.update(self.tool_choice.forced(model, self.tools))
        return {key: value for key, value in kwargs.items() if value is not None}

    def as_request(self, model: ResolvedModel, warn: Callable[[str], None]) -> ChatRequest:
        """This body as the request for a served ``model``; what the model cannot take is a 400 here."""
        if self.has_images() and not model.caps.vision:
            raise ValueError(f"Model {self.model!r} does not take images.")
        if self.uses_tools() and not model.caps.tools:
            raise ValueError(f"Model {self.model!r} does not take tools (its config can say so with ';tools' after "
                             "its model string).")
        if self.messages[-1].role == "assistant" and model.spec.protocol != "anthropic":
            raise ValueError("messages: the last turn is the assistant's (a prefill), which only an Anthropic model "
                             "continues; end with a user turn")
        asked = self.output_config.format if self.output_config else None
        schema = ResponseSchema(name="response", json_schema=asked.json_schema) if asked else None
        tools = advertised_tools(model, [tool.as_function() for tool in self.tools or []], self.uses_tools())
        if schema is not None and model.provider == "anthropic" and tools:
            raise ValueError("output_config.format on an Anthropic model is answered through a forced tool, which "
                             "cannot go with tools: drop one of the two.")
        return chat_request(model, Endpoint(), self.aimu_messages(), warn=warn,
                            generate_kwargs=self.generate_kwargs(model), thinking=self.thinking_level(), tools=tools,
                            stream=self.stream, response_schema=schema)


class CountTokensRequest(Body):
    """Anthropic's ``MessageCountTokensParams``: the prompt of a Messages body (no ``max_tokens``, nothing sampled)."""

    model: str = Field(min_length=1)
    messages: list[MessageIn] = Field(min_length=1)
    system: str | list[TextBlock] | None = None
    tools: list[ToolDef] | None = None
    tool_choice: ToolChoice | None = None
    thinking: ThinkingConfig | None = None
    output_config: OutputConfig | None = None
    # taken and ignored, as on /v1/messages
    cache_control: dict[str, Any] | None = None
    speed: Literal["standard", "fast"] | None = None
    user_profile_id: str | None = None
    workspace_id: str | None = None

    def as_request(self, model: ResolvedModel, warn: Callable[[str], None]) -> ChatRequest:
        """The request ``/v1/messages`` would send for this prompt, marked to be counted: the same checks, messages,
        tools and thinking. It asks for no answer, so the least ``max_tokens`` its thinking budget allows stands in."""
        budget = self.thinking.budget_tokens if self.thinking and self.thinking.budget_tokens else 0
        body = MessagesRequest(**dict(self), max_tokens=budget + 1)
        return body.as_request(model, warn).model_copy(update={"count_only": True})


# ----- the answer -----

def message_id() -> str:
    return f"msg_{uuid.uuid4().hex[:24]}"


def stop_reason(answer: Answer) -> str:
    return "tool_use" if answer.tool_calls else STOP_REASONS.get(answer.stop_reason or "", "end_turn")


def usage_out(usage: dict | None) -> dict:
    usage = usage or {}
    counts = {"input_tokens": usage.get("input_tokens", 0), "output_tokens": usage.get("output_tokens", 0)}
    for name in ("cache_creation_input_tokens", "cache_read_input_tokens"):
        if usage.get(name) is not None:
            counts[name] = usage[name]
    return counts


def thinking_block(text: str) -> dict:
    return {"type": "thinking", "thinking": text, "signature": SIGNATURE}


def tool_use_block(call: dict, input: dict | None = None) -> dict:
    return {"type": "tool_use", "id": call["id"], "name": call["name"],
            "input": call["arguments"] if input is None else input}


def message_out(id: str, model: str, answer: Answer, show_thinking: bool = True) -> dict:
    """Anthropic's Message: thinking, then text, then the tool calls, as Anthropic orders them."""
    content = []
    if answer.thinking:
        content.append(thinking_block(answer.thinking if show_thinking else ""))
    if answer.content:
        content.append({"type": "text", "text": answer.content})
    content += [tool_use_block(call) for call in answer.tool_calls]
    return {"id": id, "type": "message", "role": "assistant", "model": model, "content": content,
            "stop_reason": stop_reason(answer), "stop_sequence": None, "usage": usage_out(answer.usage)}


class BlockStream:
    """The content blocks of a stream as Anthropic's events: a block opens when its phase starts and closes when
    another begins; tool calls (known at the end) come whole, their input as one ``input_json_delta``."""

    def __init__(self, show_thinking: bool) -> None:
        self._show_thinking = show_thinking
        self._index, self._open = -1, None         # the open block's index and kind

    def delta(self, delta: ChatDelta) -> list[dict]:
        kind = "thinking" if delta.phase == "thinking" else "text"
        events = [] if kind == self._open else [*self.close(), self._start(kind)]
        if kind == "text":
            events.append(self._delta({"type": "text_delta", "text": delta.text}))
        elif self._show_thinking:
            events.append(self._delta({"type": "thinking_delta", "thinking": delta.text}))
        return events

    def tool_use(self, call: dict) -> list[dict]:
        return [*self.close(), self._start("tool_use", tool_use_block(call, {})),
                self._delta({"type": "input_json_delta", "partial_json": json.dumps(call["arguments"])}), *self.close()]

    def close(self) -> list[dict]:
        if self._open is None:
            return []
        self._open = None
        return [{"type": "content_block_stop", "index": self._index}]

    def _start(self, kind: str, block: dict | None = None) -> dict:
        self._index, self._open = self._index + 1, kind
        block = block or (thinking_block("") if kind == "thinking" else {"type": "text", "text": ""})
        return {"type": "content_block_start", "index": self._index, "content_block": block}

    def _delta(self, delta: dict) -> dict:
        return {"type": "content_block_delta", "index": self._index, "delta": delta}


async def message_answer(served: Served, body: MessagesRequest,
                         count_tokens: Callable[[str, dict | None], None]) -> dict:
    """Anthropic's Message for ``body``, its tokens counted."""
    answer = fold(await served.backend.call(body.as_request(served.model, served.warn)), served.model)
    count_tokens(body.model, answer.usage)
    return message_out(message_id(), body.model, answer, body.shows_thinking())


async def message_events(served: Served, body: MessagesRequest,
                         count_tokens: Callable[[str, dict | None], None]) -> AsyncIterator[dict]:
    """Anthropic's stream events; the model's first item is awaited before ``message_start``, so an early error
    has a real status. Input tokens are known at the end and come with ``message_delta``."""
    id, name, blocks = message_id(), body.model, BlockStream(body.shows_thinking())
    result = ChatResult()                                       # the stream's last item replaces it
    async with aclosing(served.backend.stream(body.as_request(served.model, served.warn))) as items:
        item = await anext(items, None)
        yield {"type": "message_start", "message": {"id": id, "type": "message", "role": "assistant", "model": name,
                                                    "content": [], "stop_reason": None, "stop_sequence": None,
                                                    "usage": usage_out(None)}}
        while item is not None:
            if isinstance(item, ChatDelta):
                for event in blocks.delta(item):
                    yield event
            else:
                result = item
            item = await anext(items, None)
    answer = fold(result, served.model)
    for event in [*blocks.close(), *(event for call in answer.tool_calls for event in blocks.tool_use(call))]:
        yield event
    count_tokens(name, answer.usage)
    yield {"type": "message_delta", "delta": {"stop_reason": stop_reason(answer), "stop_sequence": None},
           "usage": usage_out(answer.usage)}
    yield {"type": "message_stop"}


async def token_count(served: Served, body: CountTokensRequest) -> dict:
    """Anthropic's ``MessageTokensCount``: the model's own count of the body's prompt (its host counts it: nothing is
    generated); a model whose provider has no counting endpoint refuses (400)."""
    counted: TokenCount = await served.backend.call(body.as_request(served.model, served.warn))
    return {"input_tokens": counted.input_tokens}


class AnthropicEvents:
    """How the ingress's one stream core writes this API: named events, a failure after the start as an ``error``
    event carrying Anthropic's error object, and no end marker (``message_stop`` is the end)."""

    end = ""

    @staticmethod
    def event(event: dict) -> str:
        return f"event: {event['type']}\ndata: {json.dumps(event, separators=(',', ':'))}\n\n"

    @staticmethod
    def error(answer: ErrorAnswer) -> str:
        return AnthropicEvents.event(answer.anthropic().body)


__all__ = ["AnthropicEvents", "CountTokensRequest", "MessagesRequest", "message_answer", "message_events",
           "message_out", "token_count"]
