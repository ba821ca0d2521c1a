"""Ollama's native chat API.

``/api/chat`` streams NDJSON unless the body says ``"stream": false`` (the opposite default of
the cloud APIs). Thinking lines (``message.thinking``) come first, then content lines, then
one line with all tool calls (arguments as objects, not JSON strings), then a final line with
``done: true``, ``done_reason`` and the token counts and durations. Errors are
``{"error": "..."}``. Ollama has no refusal field, so a refusal is spoken as content.

Asked with ``"logprobs": true``, the answer carries Ollama's ``logprobs``: one entry per content token (each word
of the content is a token here) with ``token``, ``logprob``, ``bytes`` and, with ``top_logprobs`` > 0, that many
alternatives, the token itself first; a stream's content lines each carry their own token's entry. The numbers are
made up, but fixed: the i-th token has log-probability -(i + 1) / 8, its k-th alternative k less.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Iterator

from tests.fakes.script import CONTEXT_LENGTH_EXCEEDED, Fault, Turn
from tests.fakes.wire import dumps, words

STREAM_MEDIA_TYPE = "application/x-ndjson"
GARBAGE_STREAM = b'{"model": "broken", "message": {"role": \n'

_DONE = {"tool_calls": "stop", "refusal": "stop", "content_filter": "stop"}
_ERRORS = {
    400: "invalid request",
    404: "model not found, try pulling it first",
    429: "too many requests",
    500: "llama runner process has terminated: exit status 2",
    503: "server busy, please try again.  maximum pending requests exceeded",
}
_CONTEXT_LENGTH = "the input length exceeds the context length"


def wants_stream(body: dict[str, Any]) -> bool:
    return body.get("stream", True) is not False


def complete(turn: Turn) -> dict[str, Any]:
    reply = turn.reply
    message = _message(content=_content(turn), thinking=reply.reasoning, tool_calls=_tool_calls(turn))
    return {**_done(turn, message), **_logprobs(turn, words(_content(turn)))}


def stream(turn: Turn) -> Iterator[bytes]:
    reply = turn.reply
    for piece in words(reply.reasoning):
        yield _line(_chunk(turn, _message(thinking=piece)))
    for index, piece in enumerate(words(_content(turn))):
        yield _line({**_chunk(turn, _message(content=piece)), **_logprobs(turn, [piece], index)})
    if reply.tool_calls:
        yield _line(_chunk(turn, _message(tool_calls=_tool_calls(turn))))
    yield _line(_done(turn, _message()))


def error(status: int, fault: Fault) -> dict[str, Any]:
    default = _CONTEXT_LENGTH if fault.code == CONTEXT_LENGTH_EXCEEDED else _ERRORS.get(status, f"HTTP {status}")
    return {"error": fault.message or default}


def _content(turn: Turn) -> str:
    return turn.reply.content or turn.reply.refusal or ""


def _message(content: str = "", thinking: str | None = None, tool_calls: list | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if thinking is not None:
        message["thinking"] = thinking
    if tool_calls:
        message["tool_calls"] = tool_calls
    return message


def _logprobs(turn: Turn, tokens: list[str], first: int = 0) -> dict[str, Any]:
    """``{"logprobs": [...]}`` for ``tokens`` (the first being the answer's ``first``-th), or nothing when not asked."""
    if not turn.body.get("logprobs"):
        return {}
    top = turn.body.get("top_logprobs") or 0

    def entry(token: str, logprob: float) -> dict[str, Any]:
        return {"token": token, "logprob": logprob, "bytes": list(token.encode())}

    logprobs = []
    for index, token in enumerate(tokens, start=first):
        chosen = -(index + 1) / 8
        alternatives = [entry(token, chosen), *(entry(f"{token.strip()}~{k}", chosen - k) for k in range(1, top))]
        logprobs.append({**entry(token, chosen), **({"top_logprobs": alternatives} if top else {})})
    return {"logprobs": logprobs}


def _tool_calls(turn: Turn) -> list[dict[str, Any]]:
    return [{"function": {"name": name, "arguments": args}} for name, args in turn.reply.tool_calls]


def _chunk(turn: Turn, message: dict[str, Any]) -> dict[str, Any]:
    created_at = datetime.fromtimestamp(turn.created, timezone.utc).isoformat().replace("+00:00", "Z")
    return {"model": turn.model, "created_at": created_at, "message": message, "done": False}


def _done(turn: Turn, message: dict[str, Any]) -> dict[str, Any]:
    return {
        **_chunk(turn, message),
        "done": True,
        "done_reason": _DONE.get(turn.finish, turn.finish),
        "total_duration": 1_000_000,
        "load_duration": 100_000,
        "prompt_eval_count": turn.prompt_tokens,
        "prompt_eval_duration": 200_000,
        "eval_count": turn.completion_tokens,
        "eval_duration": 700_000,
    }


def _line(data: dict[str, Any]) -> bytes:
    return dumps(data).encode() + b"\n"
