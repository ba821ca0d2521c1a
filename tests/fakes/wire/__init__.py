"""Wire formats of the three protocols the fake server speaks.

Each module here renders a `Turn` (see ``script.py``) in one provider's format and exposes the
same names, so the server treats them alike:

* ``STREAM_MEDIA_TYPE``: content type of the streamed answer;
* ``wants_stream(body)``: whether the request asked for a stream (the protocols' defaults differ);
* ``complete(turn)``: the non-streaming JSON answer;
* ``stream(turn)``: the streamed answer, one bytes item per SSE event or NDJSON line, so the
  server can pace the items or cut the connection between them;
* ``error(status, fault)``: the provider's JSON error body;
* ``GARBAGE_STREAM``: a stream event whose data is not JSON, framed so the SDK tries to parse it.
"""

from __future__ import annotations

import json
import re
from typing import Any

GARBAGE_JSON = b'{"id": "broken", "choices": [{"index": 0, "mess'
"""Truncated JSON: what a 200 answer looks like when a proxy cuts it."""

_WORDS = re.compile(r"\s*\S+|\s+")


def words(text: str | None) -> list[str]:
    """Split text into word-sized deltas that join back to the exact text."""
    return _WORDS.findall(text or "")


def fragments(text: str, size: int = 8) -> list[str]:
    """Split JSON into fixed-size pieces, as providers stream tool arguments mid-token."""
    return [text[i : i + size] for i in range(0, len(text), size)]


def dumps(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"))
