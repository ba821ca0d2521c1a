"""One accumulator for a model's answer, fed piece by piece by a stream or in one go by a whole reply.

Both paths of every engine go through ``ReplyBuilder``, so ``chat`` and ``stream`` cannot disagree on
how thinking is split, how tool-call fragments are joined or what the final ``ChatResult`` holds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Hashable, Protocol

from ..models.messages import parse_arguments
from ..models.thinking import ThinkingParser
from ..models.wire import ChatDelta, ChatResult, ToolCall, Usage


@dataclass
class _PendingCall:
    """A tool call still arriving: its arguments come whole (a dict) or as JSON fragments."""

    id: str | None = None
    name: str = ""
    arguments: dict[str, Any] = field(default_factory=dict)
    fragments: list[str] = field(default_factory=list)

    def done(self) -> ToolCall:
        arguments = parse_arguments("".join(self.fragments)) if self.fragments else self.arguments
        return ToolCall(id=self.id, name=self.name, arguments=arguments)


class TextToolCalls(Protocol):
    """Finds tool calls that a model writes into its answer text (``engines._tool_formats.ToolCallStream``)."""

    def feed(self, text: str) -> str: ...                           # the part safe to show now

    def close(self) -> tuple[str, list[ToolCall]]: ...                # the rest to show, and the calls


class ReplyBuilder:
    """Collects text, thinking, tool calls, usage and stop reason; ``add_*`` return the deltas to stream now.

    ``start_inside``: the prompt already opened a ``<think>`` block. ``text_tool_calls``: answer text
    (after thinking) passes through it, for models that write tool calls as text.
    """

    def __init__(self, parse_think_tags: bool = False, *, start_inside: bool = False,
                 text_tool_calls: TextToolCalls | None = None):
        self._parser = ThinkingParser(start_inside) if parse_think_tags else None
        self._text_calls = text_tool_calls
        self._tagged = False                                  # thinking came from <think> tags in the text
        self._text: dict[str, list[str]] = {"thinking": [], "generating": []}
        self._calls: dict[Hashable, _PendingCall] = {}
        self.usage: Usage | None = None
        self.stop_reason: str | None = None

    def add_thinking(self, text: str | None) -> list[ChatDelta]:
        """Reasoning from the provider's own field; once it is seen, ``<think>`` tags are no longer looked for."""
        if not text:
            return []
        return self._stop_parsing() + self._emit("thinking", text)

    def add_text(self, text: str | None) -> list[ChatDelta]:
        if not text:
            return []
        if self._parser is None:
            return self._emit("generating", text)
        return self._emit_parsed(self._parser.feed(text))

    def add_tool_call(self, key: Hashable | None = None, *, id: str | None = None, name: str | None = None,
                      arguments: dict | str | None = None) -> None:
        """Start or extend the call at ``key`` (a stream index); ``key=None`` is a new, complete call."""
        call = self._calls.setdefault(object() if key is None else key, _PendingCall())
        call.id = id or call.id
        call.name = name or call.name
        if isinstance(arguments, str):
            call.fragments.append(arguments)
        elif arguments:
            call.arguments = dict(arguments)

    def finish(self) -> list[ChatDelta | ChatResult]:
        """A stream's last items: any text held back as a possible tag start, then the result."""
        return [*self._flush(), self.result()]

    def result(self) -> ChatResult:
        self._flush()
        thinking, content = ("".join(self._text[phase]) for phase in ("thinking", "generating"))
        if self._tagged:                                      # no blank lines around a <think> split
            thinking, content = thinking.strip(), content.lstrip()
        return ChatResult(content=content, thinking=thinking, tool_calls=[c.done() for c in self._calls.values()],
                          usage=self.usage, stop_reason=self.stop_reason)

    def _flush(self) -> list[ChatDelta]:
        return self._stop_parsing() + self._close_text_calls()

    def _close_text_calls(self) -> list[ChatDelta]:
        if self._text_calls is None:
            return []
        (text, calls), self._text_calls = self._text_calls.close(), None
        for call in calls:
            self.add_tool_call(id=call.id, name=call.name, arguments=call.arguments)
        return self._emit("generating", text)

    def _stop_parsing(self) -> list[ChatDelta]:
        if self._parser is None:
            return []
        parts, self._parser = self._parser.flush(), None
        return self._emit_parsed(parts)

    def _emit_parsed(self, parts: list[tuple[str, str]]) -> list[ChatDelta]:
        self._tagged = self._tagged or any(phase == "thinking" for phase, _ in parts)
        return [delta for phase, piece in parts for delta in self._emit(phase, piece)]

    def _emit(self, phase: str, text: str) -> list[ChatDelta]:
        if phase == "generating" and self._text_calls is not None:
            text = self._text_calls.feed(text)
        if not text:
            return []
        self._text[phase].append(text)
        return [ChatDelta(phase=phase, text=text)]
