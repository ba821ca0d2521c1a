"""Anthropic messages API.

Content blocks come in the order Claude emits them: ``thinking`` (with a signature), ``text``,
then one ``tool_use`` per tool call. Streams are SSE with ``event:`` lines, in Anthropic's
order: message_start, ping, then per block content_block_start / content_block_delta
(thinking_delta + signature_delta, text_delta, input_json_delta) / content_block_stop, then
message_delta (stop reason and usage) and message_stop. The SDK skips SSE events without an
``event:`` line, so every event here, garbage included, carries one. ``/v1/messages/count_tokens``
answers ``{"input_tokens": n}``, estimated over the system, messages, tools and thinking it was sent.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any, Iterator

from tests.fakes.script import CONTEXT_LENGTH_EXCEEDED, Fault, Turn, estimate_tokens
from tests.fakes.wire import dumps, fragments, words

STREAM_MEDIA_TYPE = "text/event-stream"
GARBAGE_STREAM = b'event: message_start\ndata: {"type": "message_start", "message": {"id": \n\n'

_STOP = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}
_ERRORS = {  # status -> (type, message) as the Anthropic API sends them
    400: ("invalid_request_error", "Invalid request."),
    401: ("authentication_error", "invalid x-api-key"),
    403: ("permission_error", "Your API key does not have permission to use the specified resource."),
    404: ("not_found_error", "The requested resource could not be found."),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: ("rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit."),
    500: ("api_error", "Internal server error"),
    503: ("api_error", "Service temporarily unavailable"),
    529: ("overloaded_error", "Overloaded"),
}
_CONTEXT_LENGTH = ("invalid_request_error", "prompt is too long: 200001 tokens > 200000 maximum")


def wants_stream(body: dict[str, Any]) -> bool:
    return body.get("stream") is True


def complete(turn: Turn) -> dict[str, Any]:
    return {**_message(turn), "content": _blocks(turn), **_stop(turn), "usage": _usage(turn)}


def stream(turn: Turn) -> Iterator[bytes]:
    start = {**_message(turn), "content": [], "stop_reason": None, "stop_sequence": None}
    yield _event("message_start", message={**start, "usage": {**_usage(turn), "output_tokens": 1}})
    yield _event("ping")
    for index, block in enumerate(_blocks(turn)):
        yield _event("content_block_start", index=index, content_block=_empty(block))
        for delta in _deltas(block):
            yield _event("content_block_delta", index=index, delta=delta)
        yield _event("content_block_stop", index=index)
    yield _event("message_delta", delta=_stop(turn), usage=_usage(turn))
    yield _event("message_stop")


def token_count(body: dict[str, Any]) -> dict[str, Any]:
    """The answer of ``/v1/messages/count_tokens``: what of the body makes the prompt, estimated."""
    prompt = [body.get(name) for name in ("system", "messages", "tools", "tool_choice", "thinking")]
    return {"input_tokens": estimate_tokens(dumps(prompt))}


def error(status: int, fault: Fault) -> dict[str, Any]:
    if fault.code == CONTEXT_LENGTH_EXCEEDED:
        kind, message = _CONTEXT_LENGTH
    else:
        fallback = ("api_error" if status >= 500 else "invalid_request_error", f"HTTP {status}")
        kind, message = _ERRORS.get(status, fallback)
    return {"type": "error", "error": {"type": fault.error_type or kind, "message": fault.message or message}}


def _message(turn: Turn) -> dict[str, Any]:
    return {"id": turn.ident("msg_"), "type": "message", "role": "assistant", "model": turn.model}


def _blocks(turn: Turn) -> list[dict[str, Any]]:
    reply = turn.reply
    blocks: list[dict[str, Any]] = []
    if reply.reasoning is not None:
        blocks.append({"type": "thinking", "thinking": reply.reasoning, "signature": _signature(reply.reasoning)})
    if reply.content:
        blocks.append({"type": "text", "text": reply.content})
    for index, (name, args) in enumerate(reply.tool_calls):
        blocks.append({"type": "tool_use", "id": turn.ident("toolu_", index), "name": name, "input": args})
    return blocks


def _empty(block: dict[str, Any]) -> dict[str, Any]:
    """The block as content_block_start announces it, before any delta."""
    empty = {"thinking": {"thinking": "", "signature": ""}, "text": {"text": ""}, "tool_use": {"input": {}}}
    return {**block, **empty[block["type"]]}


def _deltas(block: dict[str, Any]) -> Iterator[dict[str, Any]]:
    if block["type"] == "thinking":
        yield from ({"type": "thinking_delta", "thinking": piece} for piece in words(block["thinking"]))
        yield {"type": "signature_delta", "signature": block["signature"]}
    elif block["type"] == "text":
        yield from ({"type": "text_delta", "text": piece} for piece in words(block["text"]))
    else:
        pieces = fragments(json.dumps(block["input"]))
        yield from ({"type": "input_json_delta", "partial_json": piece} for piece in pieces)


def _stop(turn: Turn) -> dict[str, Any]:
    stop: dict[str, Any] = {"stop_reason": _STOP.get(turn.finish, turn.finish), "stop_sequence": None}
    if turn.reply.refusal is not None:
        stop["stop_details"] = {"type": "refusal", "category": None, "explanation": turn.reply.refusal}
    return stop


def _usage(turn: Turn) -> dict[str, Any]:
    return {
        "input_tokens": turn.prompt_tokens,
        "output_tokens": turn.completion_tokens,
        "cache_creation_input_tokens": turn.reply.cache_creation_tokens,
        "cache_read_input_tokens": turn.reply.cache_read_tokens,
    }


def _signature(thinking: str) -> str:
    """Deterministic stand-in for the opaque base64 signature that guards a thinking block."""
    return base64.b64encode(hashlib.sha256(thinking.encode()).digest()).decode()


def _event(kind: str, **fields: Any) -> bytes:
    return f"event: {kind}\ndata: {dumps({'type': kind, **fields})}\n\n".encode()
