"""aimu's stream chunk and phase names, unchanged, so aimu code that reads streams keeps working."""

from __future__ import annotations

from enum import Enum
from typing import Any, Iterable, NamedTuple


class StreamingContentType(str, Enum):
    THINKING = "thinking"
    TOOL_CALLING = "tool_calling"
    CONTINUING = "continuing"
    INBOX = "inbox"
    GENERATING = "generating"
    IMAGE_GENERATING = "image_generating"
    AUDIO_GENERATING = "audio_generating"
    SPEECH_GENERATING = "speech_generating"
    DONE = "done"

    def __str__(self) -> str:
        return self.value


class StreamChunk(NamedTuple):
    phase: StreamingContentType
    content: Any
    agent: str | None = None
    iteration: int = 0

    def is_text(self) -> bool:
        return self.phase in (StreamingContentType.THINKING, StreamingContentType.GENERATING)

    def is_tool_call(self) -> bool:
        return self.phase == StreamingContentType.TOOL_CALLING

    def is_continuing(self) -> bool:
        return self.phase == StreamingContentType.CONTINUING

    def is_inbox(self) -> bool:
        return self.phase == StreamingContentType.INBOX

    def is_image_progress(self) -> bool:
        return self.phase == StreamingContentType.IMAGE_GENERATING

    def is_audio_progress(self) -> bool:
        return self.phase == StreamingContentType.AUDIO_GENERATING

    def is_speech_progress(self) -> bool:
        return self.phase == StreamingContentType.SPEECH_GENERATING

    def is_done(self) -> bool:
        return self.phase == StreamingContentType.DONE


def resolve_include(include: Iterable[str | StreamingContentType] | None) -> frozenset[StreamingContentType] | None:
    """Normalise ``include=`` (strings or members) to a set of phases; ``None`` keeps every phase."""
    if include is None:
        return None
    if isinstance(include, (str, StreamingContentType)):
        include = [include]
    phases = set()
    for item in include:
        try:
            phases.add(StreamingContentType(item))
        except ValueError:
            valid = ", ".join(p.value for p in StreamingContentType)
            raise ValueError(f"Unknown stream phase {item!r} in include=. Valid phases: {valid}") from None
    return frozenset(phases)
