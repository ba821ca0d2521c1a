"""The Anthropic Messages engine. Conversations are stored in OpenAI format and converted per request;
streams are incremental (aimu buffers the whole answer before yielding)."""

from __future__ import annotations

from typing import Any, AsyncIterator

from ...models.errors import ModelRefusalError
from ...models.messages import parse_arguments
from ...models.wire import ChatDelta, ChatRequest, ChatResult, Endpoint, Usage
from .errors import json_answer
from .base import RemoteEngine, import_sdk, sdk_client_options
from ..reply import ReplyBuilder

_USAGE_FIELDS = ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")


class AnthropicEngine(RemoteEngine):
    protocol = "anthropic"

    def __init__(self, endpoint: Endpoint):
        anthropic = import_sdk(self.protocol)
        self._client = anthropic.AsyncAnthropic(**sdk_client_options(endpoint))

    def _conversation(self, messages: list[dict]) -> dict[str, Any]:
        system, converted = anthropic_messages(messages)
        return {"messages": converted, "system": system} if system else {"messages": converted}

    def _tools(self, tools: list[dict]) -> list[dict]:
        return anthropic_tools(tools)

    async def _complete(self, kwargs: dict[str, Any], request: ChatRequest) -> ChatResult:
        message = json_answer(await self._client.messages.create(**kwargs), request)
        reply = ReplyBuilder()
        for index, block in enumerate(message.content):
            _absorb_block(reply, index, block)
        reply.usage = _usage(message.usage)
        _stop(reply, message.stop_reason, message.stop_details, request)
        return reply.result()

    async def _stream_once(self, kwargs: dict[str, Any], request: ChatRequest) -> AsyncIterator[ChatDelta | ChatResult]:
        reply = ReplyBuilder()
        async with await self._client.messages.create(**{**kwargs, "stream": True}) as events:
            async for event in events:
                for delta in _absorb_event(reply, event, request):
                    yield delta
        for item in reply.finish():
            yield item


# -- answer: the same block handling for whole messages and for stream events ------------------------------

def _absorb_event(reply: ReplyBuilder, event: Any, request: ChatRequest) -> list[ChatDelta]:
    if event.type == "message_start":
        reply.usage = _usage(event.message.usage)
    elif event.type == "content_block_start":
        return _absorb_block(reply, event.index, event.content_block)
    elif event.type == "content_block_delta":
        return _absorb_delta(reply, event.index, event.delta)
    elif event.type == "message_delta":
        reply.usage = _usage(event.usage, reply.usage)
        _stop(reply, event.delta.stop_reason, event.delta.stop_details, request)
    return []


def _absorb_block(reply: ReplyBuilder, index: int, block: Any) -> list[ChatDelta]:
    """A whole content block, or the opening of one in a stream (then mostly empty)."""
    if block.type == "thinking":
        return reply.add_thinking(block.thinking)
    if block.type == "text":
        return reply.add_text(block.text)
    if block.type == "tool_use":
        reply.add_tool_call(index, id=block.id, name=block.name, arguments=block.input)
    return []


def _absorb_delta(reply: ReplyBuilder, index: int, delta: Any) -> list[ChatDelta]:
    if delta.type == "thinking_delta":
        return reply.add_thinking(delta.thinking)
    if delta.type == "text_delta":
        return reply.add_text(delta.text)
    if delta.type == "input_json_delta":
        reply.add_tool_call(index, arguments=delta.partial_json)
    return []


def _stop(reply: ReplyBuilder, stop_reason: str | None, details: Any, request: ChatRequest) -> None:
    """Record why the answer ended; a refusal is an error, with Anthropic's category and explanation."""
    reply.stop_reason = stop_reason or reply.stop_reason
    if stop_reason != "refusal":
        return
    category, explanation = getattr(details, "category", None), getattr(details, "explanation", None)
    said = ": ".join(part for part in (category, explanation) if part)
    raise ModelRefusalError(f"{request.model} ({request.provider}) declined to answer{f' ({said})' if said else ''}. "
                            "Rephrase the request or use another model.", category=category, explanation=explanation)


def _usage(reported: Any, earlier: Usage | None = None) -> Usage:
    """Counts are cumulative; a stream's message_delta may omit the input counts that message_start gave."""
    counts = earlier.model_dump() if earlier else {}
    counts.update({name: value for name in _USAGE_FIELDS if (value := getattr(reported, name, None)) is not None})
    counts["total_tokens"] = counts.get("input_tokens", 0) + counts.get("output_tokens", 0)
    return Usage(**counts)


# -- request: OpenAI-format conversation -> Anthropic messages -----------------------------------------------

def anthropic_messages(messages: list[dict]) -> tuple[str, list[dict]]:
    """``(system, messages)``: system text apart, tool results as user turns, empty turns dropped and
    consecutive turns of one role merged (Anthropic requires alternating roles)."""
    system = "\n\n".join(_text_of(m.get("content")) for m in messages if m.get("role") == "system")
    turns: list[dict] = []
    for message in messages:
        if message.get("role") == "system":
            continue
        role, blocks = _turn(message)
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    return system, turns


def anthropic_tools(tools: list[dict]) -> list[dict]:
    """OpenAI function specs as Anthropic tools; tools already in Anthropic's shape pass through."""
    converted = []
    for tool in tools:
        function = tool.get("function")
        if function is None:
            converted.append(tool)
            continue
        converted.append({"name": function["name"], "description": function.get("description", ""),
                          "input_schema": function.get("parameters") or {"type": "object", "properties": {}}})
    return converted


def _turn(message: dict) -> tuple[str, list[dict]]:
    role = message.get("role")
    if role == "tool":
        return "user", [{"type": "tool_result", "tool_use_id": message.get("tool_call_id"),
                         "content": _tool_output(message.get("content"))}]
    blocks = _content_blocks(message.get("content"))
    if role == "assistant":
        blocks += [{"type": "tool_use", "id": call.get("id"), "name": call["function"]["name"],
                    "input": parse_arguments(call["function"].get("arguments"))}
                   for call in message.get("tool_calls") or []]
    return role, blocks


def _content_blocks(content: Any) -> list[dict]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    return [block for part in content or [] if (block := _block(part)) is not None]


def _block(part: dict) -> dict | None:
    """One OpenAI content part as an Anthropic block (None for an empty text)."""
    kind = part.get("type")
    if kind == "text":
        return {"type": "text", "text": part["text"]} if part.get("text") else None
    if kind == "image_url":
        return _image_block(part["image_url"]["url"])
    if kind == "input_audio":
        raise ValueError("Anthropic models take no audio input; send text or images.")
    return part                                           # already an Anthropic block (document, image, ...)


def _image_block(url: str) -> dict:
    if url.startswith("data:"):
        header, _, data = url.partition(",")
        media_type = header[len("data:"):].split(";")[0]
        return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
    return {"type": "image", "source": {"type": "url", "url": url}}


def _tool_output(content: Any) -> Any:
    """Tool results are text or content blocks on both wires; anything else is sent as its text."""
    return content if isinstance(content, (str, list)) else str(content)


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content or [] if isinstance(part, dict))
