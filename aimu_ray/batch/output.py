"""The output file: one JSON record per input line, appended as each finishes, and the log a rerun resumes from.

Each record is written with one ``os.write`` of a whole line, so a killed job leaves complete lines and at
most one torn line at the end. ``recover`` cuts that tail before anything is appended; its line is redone.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel

logger = logging.getLogger("aimu_ray")

SYNC_EVERY_S = 1.0   # fsync at most this often: a kill loses nothing written, a host crash at most ~1 s of lines


class OutputFileError(ValueError):
    """The output file holds a line that is not a batch record before its last line: not a torn tail."""


class LineError(BaseModel):
    type: str
    message: str


class LineRecord(BaseModel):
    """One output line. Fields never set are left out, so text, media and failure records each keep their shape."""

    id: str
    line: int
    ok: bool
    output: str | list[str] | None = None
    thinking: str | None = None
    usage: dict[str, Any] | None = None
    stop_reason: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    elapsed_s: float | None = None
    error: LineError | None = None

    def to_line(self) -> bytes:
        return (self.model_dump_json(exclude_unset=True) + "\n").encode()


def recover(path: Path) -> dict[str, bool]:
    """Ids recorded so far (``True`` when that line succeeded), after cutting a torn tail left by a kill."""
    if not path.exists():
        return {}
    recorded: dict[str, bool] = {}
    complete_bytes, first_bad = 0, None
    with path.open("rb") as file:
        for number, raw in enumerate(file, 1):
            record = _record(raw)
            if record is None:
                first_bad = first_bad or number
                continue
            if first_bad is not None:
                raise OutputFileError(f"{path}: line {first_bad} is not a batch record, and records follow it. "
                                      "Remove or fix that line, or write to a new output file.")
            recorded[record["id"]] = record["ok"]
            complete_bytes += len(raw)
    if first_bad is not None:
        logger.warning("%s: cutting an incomplete last record (from an interrupted run); its line is redone.", path)
        os.truncate(path, complete_bytes)
    return recorded


def drop_failures(path: Path, recorded: dict[str, bool]) -> dict[str, bool]:
    """Rewrite the output without its failed records (atomically), so their lines run again and each id
    still has one record; a kill before they are redone only leaves them to do."""
    if all(recorded.values()):
        return recorded
    partial = path.with_name(path.name + ".partial")
    with path.open("rb") as source, partial.open("wb") as kept:
        for raw in source:
            if json.loads(raw)["ok"]:
                kept.write(raw)
        kept.flush()
        os.fsync(kept.fileno())
    os.replace(partial, path)
    return {line_id: ok for line_id, ok in recorded.items() if ok}


class Appender:
    """Appends records to the output; one ``os.write`` per line, no Python buffer that a kill could tear."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._synced_at = time.monotonic()

    def write(self, record: LineRecord) -> None:
        data = memoryview(record.to_line())
        while data:
            data = data[os.write(self._fd, data):]
        if time.monotonic() - self._synced_at >= SYNC_EVERY_S:
            self._sync()

    def close(self) -> None:
        self._sync()
        os.close(self._fd)

    def _sync(self) -> None:
        os.fsync(self._fd)
        self._synced_at = time.monotonic()


def _record(raw: bytes) -> dict | None:
    """A complete batch record (a JSON object with ``id`` and ``ok``, ending in a newline), else None."""
    if not raw.endswith(b"\n"):
        return None
    try:
        record = json.loads(raw)
    except ValueError:
        return None
    if isinstance(record, dict) and isinstance(record.get("id"), str) and isinstance(record.get("ok"), bool):
        return record
    return None
