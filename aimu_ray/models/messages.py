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

# OpenAI's input_audio formats, by file extension (aimu's table); anything else is taken as WAV, as aimu does
AUDIO_INPUT_FORMATS = {".wav": "wav", ".mp3": "mp3", ".ogg": "ogg", ".flac": "flac", ".m4a": "m4a", ".webm": "webm"}
AUDIO_FETCH_TIMEOUT_S = 30.0

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


def audio_block(clip: Any) -> dict:
    """One ``audio=`` entry as aimu stores it, an OpenAI ``input_audio`` block: bytes (WAV), a ``data:audio/`` URL,
    a path (its format from the extension), or an http(s) URL fetched here, in the caller (the block has no URL)."""
    if isinstance(clip, (bytes, bytearray)):
        data, format_ = bytes(clip), "wav"
    elif isinstance(clip, str) and clip.startswith("data:audio/"):
        header, _, encoded = clip.partition(";base64,")
        if not encoded:
            raise ValueError(f"Not a base64 audio data URL: {clip[:64]!r}")
        subtype = header.removeprefix("data:audio/")
        return _input_audio(encoded, subtype if subtype in AUDIO_INPUT_FORMATS.values() else "wav")
    elif isinstance(clip, str) and clip.startswith(("http://", "https://")):
        data, format_ = _fetched(clip), _audio_format(clip.split("?")[0])
    elif isinstance(clip, (str, Path)):
        path = Path(clip)
        if not path.is_file():
            raise ValueError(f"Audio path {str(path)!r} is not a file (give a path, bytes, URL or data URL).")
        data, format_ = path.read_bytes(), _audio_format(path.name)
    else:
        raise TypeError(f"Unsupported audio input type: {type(clip).__name__}")
    return _input_audio(base64.b64encode(data).decode("ascii"), format_)


def user_message(text: str, images: list | None = None, audio: list | None = None) -> dict:
    if images and audio:
        raise ValueError("images= and audio= are mutually exclusive per turn. Pass one or the other, not both.")
    if not images and not audio:
        return {"role": "user", "content": text}
    blocks: list[dict] = [{"type": "text", "text": text}]
    blocks += [{"type": "image_url", "image_url": {"url": image_url(img)}} for img in images or []]
    blocks += [audio_block(clip) for clip in audio or []]
    return {"role": "user", "content": blocks}


def _input_audio(encoded: str, format_: str) -> dict:
    return {"type": "input_audio", "input_audio": {"data": encoded, "format": format_}}


def _audio_format(name: str) -> str:
    return AUDIO_INPUT_FORMATS.get(Path(name).suffix.lower(), "wav")


def _fetched(url: str) -> bytes:
    import urllib.request

    with urllib.request.urlopen(url, timeout=AUDIO_FETCH_TIMEOUT_S) as response:
        return response.read()


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


def extract_tool_calls(messages: list[dict]) -> list[dict]:
    """aimu's: each tool call of an OpenAI-format conversation with its result, in order, as
    ``{"iteration", "tool", "arguments", "result"}``. ``iteration`` counts the assistant turns that called tools;
    ``arguments`` is parsed (``{"_raw": text}`` when it is not JSON); ``result`` is the matching tool message's
    content, or ``""``. ``messages`` is not changed."""
    results_by_id = {m.get("tool_call_id", ""): m.get("content", "") for m in messages if m.get("role") == "tool"}
    calls, iteration = [], 0
    for message in messages:
        if message.get("role") != "assistant" or not message.get("tool_calls"):
            continue
        iteration += 1
        for call in message["tool_calls"]:
            function = call.get("function", {})
            raw = function.get("arguments") or function.get("parameters") or "{}"
            if isinstance(raw, str):
                try:
                    arguments = json.loads(raw)
                except ValueError:
                    arguments = {"_raw": raw}
            else:
                arguments = raw
            calls.append({"iteration": iteration, "tool": function.get("name", ""), "arguments": arguments,
                          "result": results_by_id.get(call.get("id", ""), "")})
    return calls


def encode_tool_call_arguments(messages: list[dict]) -> list[dict]:
    """aimu's: the messages with each tool call's parsed ``arguments`` as a JSON string, as OpenAI's schema types
    it (aimu_ray stores them parsed, as aimu does). A string passes through, a call without ``arguments`` gets
    none, and messages without tool calls are returned as they are."""
    return [dict(m, tool_calls=[_encoded(call) for call in m["tool_calls"]]) if m.get("tool_calls") else m
            for m in messages]


def _encoded(call: dict) -> dict:
    function = call.get("function")
    if not isinstance(function, dict) or "arguments" not in function or isinstance(function["arguments"], str):
        return call
    return {**call, "function": {**function, "arguments": json.dumps(function["arguments"])}}
