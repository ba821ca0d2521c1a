"""``thinking=`` validation and the ``<think>`` parser that survives tags split across chunks."""

from __future__ import annotations

import logging
from dataclasses import dataclass

logger = logging.getLogger("aimu_ray")

LEVELS = ("low", "medium", "high")
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"


@dataclass(frozen=True)
class ResolvedThinking:
    """What the caller asked for, after validation: ``enabled`` None means "provider default"."""

    enabled: bool | None = None
    level: str | None = None


def validate_thinking(value) -> None:
    """Reject anything but None, bool or a level, before any request is made."""
    if value is None or isinstance(value, bool) or value in LEVELS:
        return
    raise ValueError(f"Invalid thinking={value!r}. Use None, True, False, or one of {', '.join(LEVELS)}.")


def resolve_thinking(value, caps, warn) -> ResolvedThinking:
    """Turn ``thinking=`` into a request for this model, warning (once, via ``warn``) where it cannot apply.

    Rule from aimu: validate the argument, never the model. A model without thinking ignores True and
    levels with a warning and ``False`` silently; a model that cannot turn thinking off ignores ``False``.
    A served remote model (``caps.passthrough``) takes the request as asked: its upstream answers for it.
    """
    validate_thinking(value)
    if value is None:
        return ResolvedThinking()
    if not (caps.thinking or caps.passthrough):
        if value is not False:
            warn(f"thinking={value!r} ignored: this model does not think (add ';thinking' to the model "
                 "string if it does).")
        return ResolvedThinking()
    if value is False:
        if not caps.thinking_optional:
            warn("thinking=False ignored: this model always thinks.")
            return ResolvedThinking()
        return ResolvedThinking(enabled=False)
    level = value if isinstance(value, str) else None
    if level and not caps.thinking_levels:
        warn(f"thinking={level!r}: this model has no thinking levels; thinking is on at its default.")
        level = None
    return ResolvedThinking(enabled=True, level=level)


class ThinkingParser:
    """Splits a text stream into thinking and answer parts at ``<think>``/``</think>``.

    A tag may arrive cut anywhere (``"<thi"`` + ``"nk>"``), so text that could be the start of a tag is
    held back until the next piece decides it. ``feed`` returns ``[(phase, text), ...]``.
    """

    def __init__(self, start_inside: bool = False):
        self._inside = start_inside
        self._pending = ""

    def feed(self, text: str) -> list[tuple[str, str]]:
        self._pending += text
        out: list[tuple[str, str]] = []
        while self._pending:
            tag = THINK_CLOSE if self._inside else THINK_OPEN
            idx = self._pending.find(tag)
            if idx >= 0:
                self._emit(out, self._pending[:idx])
                self._pending = self._pending[idx + len(tag):]
                self._inside = not self._inside
                continue
            keep = _partial_suffix(self._pending, tag)
            self._emit(out, self._pending[: len(self._pending) - keep])
            self._pending = self._pending[len(self._pending) - keep:]
            break
        return out

    def flush(self) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        self._emit(out, self._pending)
        self._pending = ""
        return out

    def _emit(self, out: list, text: str) -> None:
        if text:
            out.append(("thinking" if self._inside else "generating", text))


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest end of ``text`` that is a proper start of ``tag``."""
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:n]):
            return n
    return 0
