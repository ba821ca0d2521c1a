"""What the fake server should do next, and what it has seen.

Tests queue `Reply` and `Fault` objects; the server pops them on its own event-loop thread, so
every access to the queues and to the request log goes through one lock.

Per chat request the server pops one `Fault` first (if any), then one `Reply`:

* a fault with `status` or `malformed` fails the request and consumes no reply, so the SDK's
  retry gets the next reply (the usual "429, then success" script);
* a fault with only `delay_s`, `chunk_delay_s`, `drop_after` or `stream_anyway` shapes how the
  next reply is delivered (slow start, slow stream, connection cut after N stream events, a
  stream where a whole answer was asked for);
* with no reply queued the server answers ``"echo: <last user message text>"``, so benchmarks
  can fire requests without scripting anything.

Queues are shared by all three protocols and consumed first-in, first-out.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Sequence

CONTEXT_LENGTH_EXCEEDED = "context_length_exceeded"
"""`Fault.code` that makes each protocol answer with its own context-overflow error."""

ToolCall = tuple[str, dict[str, Any]]


@dataclass(frozen=True)
class Reply:
    """One scripted model answer, rendered by each protocol in its own shape.

    `finish` takes neutral names: ``stop``, ``length``, ``tool_calls``, ``refusal``,
    ``content_filter``; each protocol maps them (``length`` is Anthropic's ``max_tokens``,
    ``tool_calls`` its ``tool_use``); any other value goes to the wire verbatim. Left as None it
    follows the reply: ``refusal`` if `refusal` is set, ``tool_calls`` if there are tool calls,
    else ``stop``. Token counts left as None are estimated at four characters per token.
    `refusal` is OpenAI's ``message.refusal``, Anthropic's ``stop_details.explanation``, and
    plain content for Ollama, which has no refusal field.
    """

    content: str = ""
    reasoning: str | None = None
    tool_calls: Sequence[ToolCall] = ()
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cache_read_tokens: int = 0
    cache_creation_tokens: int = 0
    finish: str | None = None
    refusal: str | None = None


@dataclass(frozen=True)
class Fault:
    """One scripted failure; fields combine (e.g. `chunk_delay_s` with `drop_after`).

    `status` answers that HTTP status with the protocol's own error body; `message`, `code` and
    `error_type` override its defaults, and ``code=CONTEXT_LENGTH_EXCEEDED`` picks each
    provider's context-overflow error. `retry_after` (seconds) is sent as ``retry-after``
    (whole seconds, rounded up) and ``retry-after-ms``, which both SDKs prefer, so retry tests
    can wait milliseconds. `malformed` answers 200 with a body that is not JSON (a garbage
    event when the request streams). `delay_s` waits before answering, `chunk_delay_s` between
    stream events, and `drop_after` closes the connection after that many stream events.
    `stream_anyway` streams the reply to a request that asked for a whole answer, as a server or
    proxy that ignores ``stream: false`` does.
    """

    status: int | None = None
    message: str | None = None
    code: str | None = None
    error_type: str | None = None
    retry_after: float | None = None
    malformed: bool = False
    delay_s: float = 0.0
    chunk_delay_s: float = 0.0
    drop_after: int | None = None
    stream_anyway: bool = False

    @property
    def fails(self) -> bool:
        """True when the request gets no reply at all."""
        return self.status is not None or self.malformed


NO_FAULT = Fault()


@dataclass(frozen=True)
class RecordedRequest:
    """One request as it reached the server: lower-cased headers, parsed JSON body or None."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass(frozen=True)
class Turn:
    """One chat request being answered; gives every protocol the same ids and numbers."""

    body: dict[str, Any]
    reply: Reply
    number: int
    created: int = field(default_factory=lambda: int(time.time()))

    @property
    def model(self) -> str:
        return str(self.body.get("model") or "fake-model")

    def ident(self, prefix: str, index: int | None = None) -> str:
        """Deterministic id such as ``chatcmpl-fake000001`` or ``toolu_fake000001_0``."""
        suffix = "" if index is None else f"_{index}"
        return f"{prefix}fake{self.number:06d}{suffix}"

    @property
    def finish(self) -> str:
        reply = self.reply
        if reply.finish:
            return reply.finish
        if reply.refusal is not None:
            return "refusal"
        return "tool_calls" if reply.tool_calls else "stop"

    @property
    def prompt_tokens(self) -> int:
        if self.reply.prompt_tokens is not None:
            return self.reply.prompt_tokens
        return estimate_tokens(str(self.body.get("messages") or self.body.get("contents") or ""))

    @property
    def completion_tokens(self) -> int:
        reply = self.reply
        if reply.completion_tokens is not None:
            return reply.completion_tokens
        calls = "".join(name + str(args) for name, args in reply.tool_calls)
        return estimate_tokens((reply.content or "") + (reply.reasoning or "") + (reply.refusal or "") + calls)


def estimate_tokens(text: str) -> int:
    """Rough token count (four characters per token), at least 1, like a real tokenizer's order."""
    return max(1, len(text) // 4)


def last_user_text(body: dict[str, Any]) -> str:
    """Text of the last user message: role/content with str or parts, or Gemini's contents/parts."""
    for message in reversed(body.get("messages") or body.get("contents") or []):
        if message.get("role") != "user":
            continue
        content = message.get("content", message.get("parts"))
        if isinstance(content, str):
            return content
        return "".join(part.get("text", "") for part in content or [] if isinstance(part, dict))
    return ""


class Script:
    """Thread-safe reply/fault queues and request log shared by the server and the test."""

    def __init__(self, *, record: bool = True) -> None:
        self._record = record
        self._lock = threading.Lock()
        self._replies: deque[Reply] = deque()
        self._faults: deque[Fault] = deque()
        self._requests: list[RecordedRequest] = []
        self._numbers = itertools.count(1)

    def push_reply(self, reply: Reply) -> None:
        with self._lock:
            self._replies.append(reply)

    def push_fault(self, fault: Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def pop_fault(self) -> Fault:
        with self._lock:
            return self._faults.popleft() if self._faults else NO_FAULT

    def next_turn(self, body: dict[str, Any]) -> Turn:
        """Pop the next reply (or make the echo reply) and number the turn."""
        with self._lock:
            reply = self._replies.popleft() if self._replies else None
            number = next(self._numbers)
        return Turn(body, reply or Reply(content=f"echo: {last_user_text(body)}"), number)

    def record(self, request: RecordedRequest) -> None:
        if self._record:
            with self._lock:
                self._requests.append(request)

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def clear(self) -> None:
        with self._lock:
            self._replies.clear()
            self._faults.clear()
            self._requests.clear()
            self._numbers = itertools.count(1)
