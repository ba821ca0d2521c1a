"""The OpenAI chat-completions wire: OpenAI, Gemini's OpenAI-compatible endpoint and every local server that speaks
it (LM Studio, Ollama's /v1, transformers serve, vLLM, llama.cpp, SGLang, oMLX).

Sampling keys OpenAI lacks ride in ``extra_body``, where the local servers read them; a server that takes a
chat-template switch gets thinking as ``enable_thinking``; OpenAI's reasoning models take ``max_completion_tokens``
and only ``temperature=1``. Conversations are stored in this format already: only tool-call arguments change.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

from ..models.capabilities import ModelCaps
from ..models.providers import ProviderSpec
from ..models.thinking import ResolvedThinking
from .base import Adapter, kwarg_table, put

_COMPAT_EFFORT = {"low": "low", "medium": "medium", "high": "xhigh"}


class OpenAIAdapter(Adapter):
    protocol = "openai"
    kwarg_support = kwarg_table(top_k="extra_body.top_k", min_p="extra_body.min_p",
                                repetition_penalty="extra_body.repetition_penalty", context_length=None)
    template_kwargs_path: ClassVar[str] = "extra_body.chat_template_kwargs"   # where chat-template kwargs go

    def write_thinking(self, spec: ProviderSpec, caps: ModelCaps, thinking: ResolvedThinking, params: dict) -> None:
        if thinking.enabled is None:
            return
        if spec.chat_template_thinking:
            put(params, f"{self.template_kwargs_path}.enable_thinking", thinking.enabled)
            if thinking.enabled and thinking.level and caps.thinking_levels:
                params["reasoning_effort"] = _COMPAT_EFFORT[thinking.level]
        elif caps.passthrough and thinking.enabled and thinking.level:    # a served openai:/gemini: model, as asked
            params["reasoning_effort"] = thinking.level

    def rewrite_for_model(self, caps: ModelCaps, params: dict) -> None:
        if caps.reasoning_rewrite:
            params["max_completion_tokens"] = params.pop("max_tokens", 1024)
            params["temperature"] = 1
            params.pop("top_p", None)


def openai_messages(messages: list[dict]) -> list[dict]:
    """Tool-call arguments are stored as dicts; OpenAI-format wires want them as JSON strings."""
    out = []
    for message in messages:
        if message.get("tool_calls"):
            message = dict(message, tool_calls=[
                dict(call, function=dict(call["function"], arguments=_json_arguments(call["function"]["arguments"])))
                for call in message["tool_calls"]
            ])
        out.append(message)
    return out


def _json_arguments(arguments: Any) -> str:
    return arguments if isinstance(arguments, str) else json.dumps(arguments)
