"""The Anthropic Messages engine. Conversations are stored in OpenAI format and converted per request;
streams are incremental (aimu buffers the whole answer before yielding)."""

from __future__ import annotations

import json
import logging
import re
from typing import Any, AsyncIterator

from ...adapters.anthropic import anthropic_messages, anthropic_tools
from ...models.errors import ModelRefusalError
from ...models.structured import ResponseSchema
from ...models.wire import ChatDelta, ChatRequest, ChatResult, Endpoint, TokenCount, Usage
from .errors import json_answer
from .base import RemoteEngine, import_sdk, sdk_client_options
from ..reply import ReplyBuilder

logger = logging.getLogger("aimu_ray")
_USAGE_FIELDS = ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
# What of a message's arguments shapes its prompt, and so what ``messages.count_tokens`` takes of them (no sampling,
# no max_tokens, no stop sequences)
_COUNTED = ("model", "messages", "system", "tools", "tool_choice", "thinking", "output_config")


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

    def _hold_to(self, schema: ResponseSchema, kwargs: dict[str, Any]) -> None:
        """aimu's way: one tool whose input is the schema, forced; its input is the answer. Anthropic refuses
        thinking beside a forced tool, so thinking is dropped, with a warning."""
        name = re.sub(r"[^a-zA-Z0-9_-]", "_", schema.name)[:64] or "Response"
        if kwargs.pop("thinking", None) is not None:
            logger.warning("%s: thinking is dropped for schema=: Anthropic refuses it beside the forced tool that "
                           "holds the answer to the schema.", kwargs["model"])
        kwargs["tools"] = [{"name": name, "description": f"Emit the answer as a {name} object.",
                            "input_schema": schema.json_schema}]
        kwargs["tool_choice"] = {"type": "tool", "name": name}

    async def _complete(self, kwargs: dict[str, Any], request: ChatRequest) -> ChatResult:
        message = json_answer(await self._client.messages.create(**kwargs), request)
        reply = ReplyBuilder()
        structured = request.response_schema is not None
        for index, block in enumerate(message.content):
            _absorb_block(reply, index, block, structured)
        reply.usage = _usage(message.usage)
        _stop(reply, message.stop_reason, message.stop_details, request)
        return reply.result()

    async def _count(self, kwargs: dict[str, Any], request: ChatRequest) -> TokenCount:
        """Anthropic's own count of the message's prompt (``/v1/messages/count_tokens``): tools, system and thinking
        included, as the message would send them."""
        asked = {name: kwargs[name] for name in _COUNTED if name in kwargs}
        counted = json_answer(await self._client.messages.count_tokens(**asked), request)
        return TokenCount(input_tokens=counted.input_tokens)

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
    structured = request.response_schema is not None
    if event.type == "message_start":
        reply.usage = _usage(event.message.usage)
    elif event.type == "content_block_start":
        return _absorb_block(reply, event.index, event.content_block, structured)
    elif event.type == "content_block_delta":
        return _absorb_delta(reply, event.index, event.delta, structured)
    elif event.type == "message_delta":
        reply.usage = _usage(event.usage, reply.usage)
        _stop(reply, event.delta.stop_reason, event.delta.stop_details, request)
    return []


def _absorb_block(reply: ReplyBuilder, index: int, block: Any, structured: bool = False) -> list[ChatDelta]:
    """A whole content block, or the opening of one in a stream (then mostly empty). Under ``schema=`` the forced
    tool's input is the answer's text."""
    if block.type == "thinking":
        return reply.add_thinking(block.thinking)
    if block.type == "text":
        return reply.add_text(block.text)
    if block.type == "tool_use" and structured:
        return reply.add_text(json.dumps(block.input)) if block.input else []
    if block.type == "tool_use":
        reply.add_tool_call(index, id=block.id, name=block.name, arguments=block.input)
    return []


def _absorb_delta(reply: ReplyBuilder, index: int, delta: Any, structured: bool = False) -> list[ChatDelta]:
    if delta.type == "thinking_delta":
        return reply.add_thinking(delta.thinking)
    if delta.type == "text_delta":
        return reply.add_text(delta.text)
    if delta.type == "input_json_delta" and structured:
        return reply.add_text(delta.partial_json)
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

