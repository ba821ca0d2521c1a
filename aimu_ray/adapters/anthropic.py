"""The Anthropic Messages wire.

Anthropic's SDK has no sampling arguments, so ``temperature``, ``top_p`` and ``top_k`` ride in ``extra_body``,
and none are sent while a model thinks or to a model that refuses them. Thinking is a token budget, or
"adaptive" with an effort level on the models that take it. Conversations are stored in OpenAI format and
converted here: the system text apart, tool results as user turns, roles alternating.
"""

from __future__ import annotations

from typing import Any

from ..models.capabilities import ModelCaps
from ..models.messages import parse_arguments
from ..models.providers import ProviderSpec
from ..models.thinking import ResolvedThinking
from .base import Adapter, kwarg_table

THINKING_BUDGETS = {"low": 2048, "medium": 8000, "high": 16000, None: 8000}   # budget_tokens per thinking level
_SAMPLING = ("temperature", "top_p", "top_k")
_HF_ONLY = ("max_new_tokens", "do_sample", "num_return_sequences")           # a shared profile's transformers keys


class AnthropicAdapter(Adapter):
    protocol = "anthropic"
    kwarg_support = kwarg_table(temperature="extra_body.temperature", top_p="extra_body.top_p",
                                top_k="extra_body.top_k", min_p=None, presence_penalty=None,
                                repetition_penalty=None, context_length=None)

    def drop_unsent(self, merged: dict, caps: ModelCaps, thinking: ResolvedThinking) -> None:
        for key in _HF_ONLY:
            merged.pop(key, None)
        if (caps.thinking and thinking.enabled) or caps.rejects_sampling:
            for key in _SAMPLING:
                merged.pop(key, None)

    def write_thinking(self, spec: ProviderSpec, caps: ModelCaps, thinking: ResolvedThinking, params: dict) -> None:
        budget = params.pop("thinking_budget_tokens", None)     # aimu's key, not an Anthropic argument
        if not caps.thinking or thinking.enabled is None:
            return
        if caps.anthropic_adaptive:
            _write_adaptive(caps, thinking, params)
            return
        if thinking.enabled:
            budget = budget or THINKING_BUDGETS[thinking.level]
            params["thinking"] = {"type": "enabled", "budget_tokens": budget}
            if params.get("max_tokens", 0) <= budget:
                params["max_tokens"] = budget + 1024


def _write_adaptive(caps: ModelCaps, thinking: ResolvedThinking, params: dict) -> None:
    """Adaptive models choose their own budget: thinking is on or off, with an effort level."""
    if not thinking.enabled:
        params["thinking"] = {"type": "disabled"}
        effort = params.get("output_config", {}).get("effort")
        if effort in ("xhigh", "max"):
            params["output_config"]["effort"] = "high"
        return
    params["thinking"] = {"type": "adaptive", "display": "summarized"}
    params["max_tokens"] = max(params.get("max_tokens", 0), 4096)
    if thinking.level:
        effort = "xhigh" if thinking.level == "high" and "xhigh" in caps.effort_levels else thinking.level
        params.setdefault("output_config", {}).setdefault("effort", effort)


def anthropic_messages(messages: list[dict]) -> tuple[str, list[dict]]:
    """``(system, messages)``: system text apart, tool results as user turns, empty turns dropped and
    consecutive turns of one role merged (Anthropic requires alternating roles)."""
    system = "\n\n".join(_text_of(m.get("content")) for m in messages if m.get("role") == "system")
    turns: list[dict] = []
    for message in messages:
        if message.get("role") == "system":
            continue
        role, blocks = _turn(message)
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    return system, turns


def anthropic_tools(tools: list[dict]) -> list[dict]:
    """OpenAI function specs as Anthropic tools; tools already in Anthropic's shape pass through."""
    converted = []
    for tool in tools:
        function = tool.get("function")
        if function is None:
            converted.append(tool)
            continue
        converted.append({"name": function["name"], "description": function.get("description", ""),
                          "input_schema": function.get("parameters") or {"type": "object", "properties": {}}})
    return converted


def _turn(message: dict) -> tuple[str, list[dict]]:
    role = message.get("role")
    if role == "tool":
        return "user", [{"type": "tool_result", "tool_use_id": message.get("tool_call_id"),
                         "content": _tool_output(message.get("content"))}]
    blocks = _content_blocks(message.get("content"))
    if role == "assistant":
        blocks += [{"type": "tool_use", "id": call.get("id"), "name": call["function"]["name"],
                    "input": parse_arguments(call["function"].get("arguments"))}
                   for call in message.get("tool_calls") or []]
    return role, blocks


def _content_blocks(content: Any) -> list[dict]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    return [block for part in content or [] if (block := _block(part)) is not None]


def _block(part: dict) -> dict | None:
    """One OpenAI content part as an Anthropic block (None for an empty text)."""
    kind = part.get("type")
    if kind == "text":
        return {"type": "text", "text": part["text"]} if part.get("text") else None
    if kind == "image_url":
        return _image_block(part["image_url"]["url"])
    if kind == "input_audio":
        raise ValueError("Anthropic models take no audio input; send text or images.")
    return part                                           # already an Anthropic block (document, image, ...)


def _image_block(url: str) -> dict:
    if url.startswith("data:"):
        header, _, data = url.partition(",")
        media_type = header[len("data:"):].split(";")[0]
        return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
    return {"type": "image", "source": {"type": "url", "url": url}}


def _tool_output(content: Any) -> Any:
    """Tool results are text or content blocks on both wires; anything else is sent as its text."""
    return content if isinstance(content, (str, list)) else str(content)


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content or [] if isinstance(part, dict))
