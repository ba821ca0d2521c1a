"""OpenAI chat completions (also Gemini's OpenAI-compatible endpoint).

JSON answers are ``chat.completion`` objects; streams are SSE ``data:`` lines carrying
``chat.completion.chunk`` objects and ending in ``data: [DONE]``. Reasoning goes in the
``reasoning_content`` extension that DeepSeek, vLLM and llama.cpp servers use, streamed before
the content. Tool calls stream by index: the first delta carries id, type and name, later ones
append argument fragments. ``stream_options.include_usage`` adds ``usage: null`` to every chunk
and a last chunk with empty ``choices`` and the usage, as OpenAI does.
"""

from __future__ import annotations

import json
from typing import Any, Iterator

from tests.fakes.script import CONTEXT_LENGTH_EXCEEDED, Fault, Turn
from tests.fakes.wire import dumps, fragments, words

STREAM_MEDIA_TYPE = "text/event-stream"
GARBAGE_STREAM = b'data: {"id": "chatcmpl-broken", "choices": [\n\n'

_FINISH = {"refusal": "stop"}
_ERRORS = {  # status -> (type, code, message) as the OpenAI API sends them
    400: ("invalid_request_error", None, "Invalid request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    404: ("invalid_request_error", "model_not_found", "The model does not exist or you do not have access to it."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests per min (RPM). Please try again later."),
    500: ("server_error", None, "The server had an error while processing your request. Sorry about that!"),
    503: ("server_error", None, "The server is overloaded or not ready yet."),
}
_CONTEXT_LENGTH = (
    "invalid_request_error",
    CONTEXT_LENGTH_EXCEEDED,
    "This model's maximum context length is 128000 tokens. However, your messages resulted in 130000 tokens. "
    "Please reduce the length of the messages.",
)


def wants_stream(body: dict[str, Any]) -> bool:
    return body.get("stream") is True


def complete(turn: Turn) -> dict[str, Any]:
    reply = turn.reply
    message: dict[str, Any] = {
        "role": "assistant",
        "content": reply.content or (None if reply.tool_calls or reply.refusal else ""),
        "refusal": reply.refusal,
        "annotations": [],
    }
    if reply.reasoning is not None:
        message["reasoning_content"] = reply.reasoning
    if reply.tool_calls:
        message["tool_calls"] = [
            {"id": call_id, "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}
            for call_id, name, args in _calls(turn)
        ]
    choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": _finish(turn)}
    return {**_head(turn, "chat.completion"), "choices": [choice], "usage": _usage(turn)}


def stream(turn: Turn) -> Iterator[bytes]:
    reply = turn.reply
    with_usage = bool((turn.body.get("stream_options") or {}).get("include_usage"))
    head = _head(turn, "chat.completion.chunk")

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        data = {**head, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
        return _sse({**data, "usage": None} if with_usage else data)

    yield chunk({"role": "assistant", "content": "", "refusal": None})
    for piece in words(reply.reasoning):
        yield chunk({"reasoning_content": piece})
    for piece in words(reply.content):
        yield chunk({"content": piece})
    for piece in words(reply.refusal):
        yield chunk({"refusal": piece})
    for index, (call_id, name, args) in enumerate(_calls(turn)):
        function = {"name": name, "arguments": ""}
        yield chunk({"tool_calls": [{"index": index, "id": call_id, "type": "function", "function": function}]})
        for piece in fragments(json.dumps(args)):
            yield chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
    yield chunk({}, _finish(turn))
    if with_usage:
        yield _sse({**head, "choices": [], "usage": _usage(turn)})
    yield b"data: [DONE]\n\n"


def error(status: int, fault: Fault) -> dict[str, Any]:
    if fault.code == CONTEXT_LENGTH_EXCEEDED:
        kind, code, message = _CONTEXT_LENGTH
    else:
        fallback = ("server_error" if status >= 500 else "invalid_request_error", None, f"HTTP {status}")
        kind, code, message = _ERRORS.get(status, fallback)
    param = "messages" if fault.code == CONTEXT_LENGTH_EXCEEDED else None
    type_ = fault.error_type or kind
    return {"error": {"message": fault.message or message, "type": type_, "param": param, "code": fault.code or code}}


def _head(turn: Turn, kind: str) -> dict[str, Any]:
    return {
        "id": turn.ident("chatcmpl-"),
        "object": kind,
        "created": turn.created,
        "model": turn.model,
        "system_fingerprint": "fp_fake",
    }


def _calls(turn: Turn) -> list[tuple[str, str, dict[str, Any]]]:
    return [(turn.ident("call_", i), name, args) for i, (name, args) in enumerate(turn.reply.tool_calls)]


def _finish(turn: Turn) -> str:
    return _FINISH.get(turn.finish, turn.finish)


def _usage(turn: Turn) -> dict[str, Any]:
    reply = turn.reply
    reasoning = min(turn.completion_tokens, len(reply.reasoning or "") // 4)
    return {
        "prompt_tokens": turn.prompt_tokens,
        "completion_tokens": turn.completion_tokens,
        "total_tokens": turn.prompt_tokens + turn.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": reply.cache_read_tokens},
        "completion_tokens_details": {"reasoning_tokens": reasoning},
    }


def _sse(data: dict[str, Any]) -> bytes:
    return f"data: {dumps(data)}\n\n".encode()
