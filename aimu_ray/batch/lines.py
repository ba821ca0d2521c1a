"""Input lines of a batch job: one JSON object per line, validated once, never dropped.

A line that is not JSON or fails validation becomes an ``InputLine`` with a ``problem``, which the runner
records as a failed output line. Only duplicate ids stop a job, before any work: resuming matches lines
to output records by id, so an id must name one line.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

ROLES = ("system", "user", "assistant", "tool")


class DuplicateIdError(ValueError):
    """Two input lines share an id; a resumed job could not tell them apart."""


class BatchLine(BaseModel):
    """Fields every task shares. ``id`` defaults to the 1-based line number (as a string)."""

    model_config = ConfigDict(extra="forbid")

    id: str


class TextLine(BatchLine):
    """One chat request: ``prompt`` or an OpenAI-format ``messages`` list, exactly one of the two."""

    prompt: str | None = None
    messages: list[dict[str, Any]] | None = Field(None, min_length=1)
    system: str | None = None
    generate_kwargs: dict[str, Any] | None = None
    thinking: bool | Literal["low", "medium", "high"] | None = None
    tools: list[dict[str, Any]] | None = None

    @model_validator(mode="after")
    def _one_input(self) -> TextLine:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give exactly one of 'prompt' and 'messages'")
        for index, message in enumerate(self.messages or []):
            if message.get("role") not in ROLES:
                raise ValueError(f"messages[{index}] needs a 'role' among {', '.join(ROLES)}")
        return self


class ImageLine(BatchLine):
    """One ``generate_image`` call; ``None`` leaves the pipeline's default."""

    prompt: str
    num_images: int = Field(1, ge=1)
    negative_prompt: str | None = None
    width: int | None = Field(None, gt=0)
    height: int | None = Field(None, gt=0)
    num_inference_steps: int | None = Field(None, ge=1)
    guidance_scale: float | None = None
    seed: int | None = None


class AudioLine(BatchLine):
    """One ``generate_audio`` call; ``None`` leaves the model's default."""

    prompt: str
    num_audio: int = Field(1, ge=1)
    duration_s: float | None = Field(None, gt=0)
    num_inference_steps: int | None = Field(None, ge=1)
    seed: int | None = None


LINE_MODELS: dict[str, type[BatchLine]] = {"text": TextLine, "image": ImageLine, "audio": AudioLine}


@dataclass(frozen=True)
class InputLine:
    """One non-blank input line: its number, its id, and the validated line or what is wrong with it."""

    number: int
    id: str
    parsed: BatchLine | None = None
    problem: str | None = None


def numbered_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """Non-blank lines with their 1-based numbers; bytes, so a stray non-UTF-8 line fails alone."""
    with path.open("rb") as file:
        for number, raw in enumerate(file, 1):
            if raw.strip():
                yield number, raw


def given_id(data: Any) -> str | None:
    """The line's own id when it is a non-empty string or an integer; None when absent or of another type."""
    given = data.get("id") if isinstance(data, dict) else None
    if isinstance(given, bool) or not isinstance(given, (str, int)) or given == "":
        return None
    return str(given)


def id_of(data: Any, number: int) -> str:
    return given_id(data) or str(number)


def parse_line(number: int, raw: bytes, model: type[BatchLine]) -> InputLine:
    try:
        data = json.loads(raw)
    except ValueError as error:
        return InputLine(number, str(number), problem=f"line {number} is not JSON: {error}")
    line_id = id_of(data, number)
    if not isinstance(data, dict):
        return InputLine(number, line_id, problem=f"line {number} is not a JSON object")
    if data.get("id") is not None and given_id(data) is None:
        return InputLine(number, line_id, problem=f"line {number}: 'id' must be a non-empty string or an integer")
    try:
        return InputLine(number, line_id, parsed=model.model_validate({**data, "id": line_id}))
    except ValidationError as error:
        return InputLine(number, line_id, problem=f"line {number}: {error_summary(error)}")


def read_lines(path: Path, model: type[BatchLine]) -> Iterator[InputLine]:
    for number, raw in numbered_lines(path):
        yield parse_line(number, raw, model)


def unique_ids(path: Path) -> set[str]:
    """Every line's id, checked unique before any work (an unreadable line's id is its number)."""
    first_seen: dict[str, int] = {}
    for number, raw in numbered_lines(path):
        try:
            data = json.loads(raw)
        except ValueError:
            data = None
        line_id = id_of(data, number)
        first = first_seen.setdefault(line_id, number)
        if first != number:
            raise DuplicateIdError(f"{path}: id {line_id!r} is on lines {first} and {number}; ids must be unique "
                                   "because a rerun resumes by id (a line without an id gets its line number).")
    return set(first_seen)


def error_summary(error: ValidationError) -> str:
    """Pydantic's errors on one line: ``field: message; …``, without its documentation links."""
    parts = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"])
        parts.append(f"{where}: {item['msg']}" if where else item["msg"])
    return "; ".join(parts)
