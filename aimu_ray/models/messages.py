"""Conversation plumbing in aimu's OpenAI message format: user turns, images, tools, tool-call records."""

from __future__ import annotations

import base64
import io
import json
import mimetypes
import secrets
import string
import time
from pathlib import Path
from typing import Any, Iterable

from .wire import ToolCall

INERT_MESSAGE_KEYS = frozenset({"thinking", "provenance", "timestamp"})
_ID_ALPHABET = string.ascii_letters + string.digits


def strip_inert_keys(messages: Iterable[dict]) -> list[dict]:
    """Copies of the messages without the keys aimu stores but never sends."""
    return [{k: v for k, v in m.items() if k not in INERT_MESSAGE_KEYS} for m in messages]


def stamp(message: dict) -> dict:
    message["timestamp"] = time.time()
    return message


def image_url(image: Any) -> str:
    """One ``images=`` entry as a URL an OpenAI-format message can carry (http(s) or data URL)."""
    if isinstance(image, str) and image.startswith(("http://", "https://", "data:image/")):
        return image
    if isinstance(image, (str, Path)):
        path = Path(image)
        if not path.is_file():
            raise ValueError(f"Image path {str(path)!r} is not a file (give a path, bytes, URL, data URL or PIL image).")
        mime = mimetypes.guess_type(path.name)[0] or "image/png"
        return _data_url(path.read_bytes(), mime)
    if isinstance(image, (bytes, bytearray)):
        return _data_url(bytes(image), "image/png")
    if hasattr(image, "save") and hasattr(image, "mode"):      # a PIL image, without importing PIL here
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return _data_url(buffer.getvalue(), "image/png")
    raise TypeError(f"Unsupported image type {type(image).__name__}: use a path, bytes, URL, data URL or PIL image.")


def _data_url(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def user_message(text: str, images: list | None = None) -> dict:
    if not images:
        return {"role": "user", "content": text}
    blocks: list[dict] = [{"type": "text", "text": text}]
    blocks += [{"type": "image_url", "image_url": {"url": image_url(img)}} for img in images]
    return {"role": "user", "content": blocks}


def tool_specs(tools: Iterable) -> list[dict]:
    """OpenAI function specs from ``@tool`` callables or ready OpenAI tool dicts."""
    specs = []
    for item in tools:
        if isinstance(item, dict) and item.get("type") == "function" and "function" in item:
            specs.append(item)
        elif callable(item) and hasattr(item, "__tool_spec__"):
            specs.append(item.__tool_spec__)
        else:
            raise ValueError(f"Tool {item!r} is neither an @aimu_ray.tool callable nor an OpenAI tool dict "
                             "({'type': 'function', 'function': {...}}).")
    return specs


def new_tool_call_id() -> str:
    """aimu's 9-character ids: tool results are matched on these, whatever id the server sent."""
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(9))


def assistant_message(content: str, thinking: str, tool_calls: list[ToolCall], keep_ids: bool) -> dict:
    """The assistant turn aimu appends: prose, tool calls with parsed arguments, thinking as an inert key."""
    message: dict[str, Any] = {"role": "assistant"}
    if tool_calls:
        message["tool_calls"] = [
            {"type": "function", "id": (call.id if keep_ids and call.id else new_tool_call_id()),
             "function": {"name": call.name, "arguments": call.arguments}}
            for call in tool_calls
        ]
        if content:
            message["content"] = content
    else:
        message["content"] = content
    if thinking:
        message["thinking"] = thinking
    return stamp(message)


def recorded_calls(message: dict) -> list[dict]:
    """``last_tool_calls`` as aimu reports it: name, arguments, id."""
    return [{"name": c["function"]["name"], "arguments": c["function"]["arguments"], "id": c["id"]}
            for c in message.get("tool_calls", [])]


def parse_arguments(raw: Any) -> dict:
    """Tool-call arguments from a wire (JSON string or dict) as a dict; unparseable text is kept, not lost."""
    if isinstance(raw, dict):
        return raw
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except (TypeError, ValueError):
        return {"_raw": raw}
    return value if isinstance(value, dict) else {"_value": value}
