"""The in-process transformers wire: GenerationConfig names for the portable keys, thinking through the chat
template's kwargs (the engine renders the template), and messages as HF chat templates read them, with the
images a processor needs as PIL images."""

from __future__ import annotations

import base64
import io
import urllib.request
from pathlib import Path

from ..models.messages import parse_arguments
from .base import kwarg_table
from .openai import OpenAIAdapter


class HFAdapter(OpenAIAdapter):
    """OpenAI's conventions (``reasoning_effort``, ``chat_template_kwargs``) with transformers' own names."""

    protocol = "hf"
    kwarg_support = kwarg_table(max_tokens="max_new_tokens", presence_penalty=None, context_length=None)
    template_kwargs_path = "chat_template_kwargs"


def hf_messages(messages: list[dict], vision: bool) -> tuple[list[dict], list]:
    """OpenAI-format messages as HF chat templates read them, and the images they carry (as PIL images).

    Tool-call arguments become dicts (templates iterate them); content parts become one string for a
    text model, or text and ``{"type": "image"}`` placeholders for a processor.
    """
    images: list = []
    return [_hf_message(message, vision, images) for message in messages], images


def _hf_message(message: dict, vision: bool, images: list) -> dict:
    converted = dict(message)
    content = message.get("content")
    if isinstance(content, list):
        converted["content"] = _hf_content(content, vision, images)
    elif content is None:
        converted["content"] = ""                  # an assistant turn with only tool calls
    if message.get("tool_calls"):
        converted["tool_calls"] = [dict(call, function=dict(call["function"],
                                                            arguments=parse_arguments(call["function"]["arguments"])))
                                   for call in message["tool_calls"]]
    return converted


def _hf_content(parts: list[dict], vision: bool, images: list) -> str | list[dict]:
    kinds = {part.get("type") for part in parts}
    if not vision:
        if kinds - {"text"}:
            raise ValueError(f"This model takes text only, not {', '.join(sorted(kinds - {'text'}))} content: "
                             "use a vision model (one that ships an image processor).")
        return "\n".join(part["text"] for part in parts)
    if kinds - {"text", "image_url"}:
        raise ValueError(f"Unsupported content part(s) {', '.join(sorted(kinds - {'text', 'image_url'}))}: "
                         "this engine takes text and images.")
    converted = []
    for part in parts:
        if part["type"] == "text":
            converted.append({"type": "text", "text": part["text"]})
        else:
            images.append(load_image(part["image_url"]["url"]))
            converted.append({"type": "image"})
    return converted


def load_image(url: str):
    """A data URL, an http(s) URL (fetched) or a file path, as an RGB PIL image."""
    from PIL import Image

    try:
        if url.startswith("data:"):
            data = base64.b64decode(url.partition(",")[2])
        elif url.startswith(("http://", "https://")):
            with urllib.request.urlopen(url, timeout=30) as response:
                data = response.read()
        else:
            data = Path(url).read_bytes()
        return Image.open(io.BytesIO(data)).convert("RGB")
    except (OSError, ValueError) as error:
        raise ValueError(f"Could not read the image {url[:80]!r}: {error}") from error
