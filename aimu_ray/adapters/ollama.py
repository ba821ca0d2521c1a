"""The native Ollama wire (``/api/chat``): sampling and every non-portable key go in ``options`` under Ollama's
names, thinking is ``think`` (a level or a bool, always sent), images travel as bare base64 beside the
message text and tool-call arguments stay objects."""

from __future__ import annotations

from ..models.capabilities import ModelCaps
from ..models.messages import parse_arguments
from ..models.providers import ProviderSpec
from ..models.thinking import ResolvedThinking
from .base import Adapter, kwarg_table


class OllamaAdapter(Adapter):
    protocol = "ollama"
    kwarg_support = kwarg_table(min_p=None, repetition_penalty="options.repeat_penalty",
                                max_tokens="options.num_predict", context_length="options.num_ctx",
                                temperature="options.temperature", top_p="options.top_p", top_k="options.top_k",
                                presence_penalty="options.presence_penalty")
    passthrough_prefix = "options."
    call_keys = frozenset({"logprobs", "top_logprobs"})    # arguments of /api/chat itself, not model options

    def write_thinking(self, spec: ProviderSpec, caps: ModelCaps, thinking: ResolvedThinking, params: dict) -> None:
        """Sent even when not asked: Ollama's default is off, aimu's is the model's own."""
        enabled = caps.thinking if thinking.enabled is None else thinking.enabled
        params["think"] = thinking.level if (enabled and thinking.level) else bool(enabled)


def ollama_messages(messages: list[dict]) -> list[dict]:
    return [_ollama_message(message) for message in messages]


def _ollama_message(message: dict) -> dict:
    """Content parts become text plus message-level images; a tool result names its tool as ``tool_name``."""
    converted = dict(message)
    content = message.get("content")
    if isinstance(content, list):
        converted["content"] = "\n".join(part["text"] for part in content if part.get("type") == "text")
        images = [_bare_base64(part["image_url"]["url"]) for part in content if part.get("type") == "image_url"]
        if any(part.get("type") == "input_audio" for part in content):
            raise ValueError("Ollama models take no audio input; send text or images.")
        if images:
            converted["images"] = images
    if message.get("role") == "tool" and message.get("name"):
        converted["tool_name"] = message["name"]
    if message.get("tool_calls"):
        converted["tool_calls"] = [{"function": {"name": call["function"]["name"],
                                                 "arguments": parse_arguments(call["function"]["arguments"])}}
                                   for call in message["tool_calls"]]
    return converted


def _bare_base64(url: str) -> str:
    if url.startswith("data:"):
        return url.partition(",")[2]
    raise ValueError(f"Ollama needs the image bytes, not a link ({url[:80]}): pass a file path, bytes or a "
                     "data: URL instead.")
