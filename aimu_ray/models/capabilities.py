"""What a model can do, without a catalog.

aimu rejects ids it has not catalogued; aimu_ray accepts any id. Capabilities come from the model
string's ``;flags`` when given (omitted flags are off, as for aimu's ad-hoc models), else from the
small table of known model families below, else from the provider's defaults.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Mapping

from .thinking import LEVELS

FLAGS = ("audio", "structured", "thinking", "tools", "vision")
_EMPTY: Mapping[str, object] = MappingProxyType({})


@dataclass(frozen=True)
class ModelCaps:
    tools: bool = False
    thinking: bool = False
    vision: bool = False
    audio: bool = False
    structured: bool = False
    thinking_optional: bool = True           # can thinking be turned off?
    thinking_levels: tuple[str, ...] = ()     # levels the wire accepts (low/medium/high)
    generation_kwargs: Mapping[str, object] = field(default_factory=lambda: _EMPTY)              # card profile
    nonthinking_generation_kwargs: Mapping[str, object] = field(default_factory=lambda: _EMPTY)  # profile when thinking is off
    anthropic_adaptive: bool = False          # Anthropic "adaptive" thinking instead of token budgets
    effort_levels: tuple[str, ...] = ()       # Anthropic output_config.effort values the model takes
    rejects_sampling: bool = False            # Anthropic models that refuse temperature/top_p/top_k
    reasoning_rewrite: bool = False           # OpenAI o-series/gpt-5: max_completion_tokens, temperature=1
    passthrough: bool = False                 # a served remote model: a thinking request goes upstream unjudged


_ALL = dict(tools=True, vision=True, structured=True)
_QWEN3_THINKING = MappingProxyType({"temperature": 0.6, "top_p": 0.95, "top_k": 20, "min_p": 0.0})
_QWEN3_INSTRUCT = MappingProxyType({"temperature": 0.7, "top_p": 0.8, "top_k": 20, "min_p": 0.0})
_EFFORT_FULL = ("low", "medium", "high", "xhigh", "max")

# (providers the rule applies to, pattern searched in the lower-cased id, capabilities); first match wins.
_CLOUD_FAMILIES: tuple[tuple[frozenset[str], str, ModelCaps], ...] = (
    (frozenset({"anthropic"}), r"claude-fable-5", ModelCaps(**_ALL, thinking=True, thinking_optional=False,
     anthropic_adaptive=True, effort_levels=_EFFORT_FULL, rejects_sampling=True, thinking_levels=("low", "medium", "high"))),
    (frozenset({"anthropic"}), r"claude-(opus|sonnet)-5|claude-opus-4-[78]", ModelCaps(**_ALL, thinking=True,
     anthropic_adaptive=True, effort_levels=_EFFORT_FULL, rejects_sampling=True, thinking_levels=("low", "medium", "high"))),
    (frozenset({"anthropic"}), r"claude-(opus|sonnet)-4-6", ModelCaps(**_ALL, thinking=True, anthropic_adaptive=True,
     effort_levels=("low", "medium", "high", "max"), thinking_levels=("low", "medium", "high"))),
    (frozenset({"anthropic"}), r"claude", ModelCaps(**_ALL, thinking=True, thinking_levels=("low", "medium", "high"))),
    (frozenset({"openai"}), r"^(o\d|gpt-5)", ModelCaps(**_ALL, reasoning_rewrite=True)),
    (frozenset({"openai"}), r"", ModelCaps(**_ALL)),
    (frozenset({"gemini"}), r"gemini-2\.5-pro", ModelCaps(**_ALL, thinking=True, thinking_optional=False)),
    (frozenset({"gemini"}), r"gemini-2\.5", ModelCaps(**_ALL, thinking=True, thinking_optional=False)),
    (frozenset({"gemini"}), r"", ModelCaps(**_ALL)),
)

# Open-weight families, recognised under any local provider (ids like "qwen3:8b", "Qwen/Qwen3-8B").
_OPEN_FAMILIES: tuple[tuple[str, ModelCaps], ...] = (
    (r"qwen3[.-]?\d*[.-]?vl|qwen2\.5-vl", ModelCaps(tools=True, vision=True)),
    (r"qwen3", ModelCaps(tools=True, thinking=True, generation_kwargs=_QWEN3_THINKING,
                         nonthinking_generation_kwargs=_QWEN3_INSTRUCT)),
    (r"gpt-oss", ModelCaps(tools=True, thinking=True, thinking_levels=("low", "medium", "high"))),
    (r"deepseek-r1|qwq", ModelCaps(thinking=True, thinking_optional=False)),
    (r"gemma-?[34]|llava|pixtral|llama-?3\.2-vision|-vl\b|minicpm-v", ModelCaps(vision=True)),
    (r"llama-?3\.[123]|llama3|mistral|mixtral|ministral|granite|phi-?4-mini|smollm3|hermes",
     ModelCaps(tools=True)),
)


def from_flags(flags: tuple[str, ...]) -> ModelCaps:
    unknown = sorted(set(flags) - set(FLAGS))
    if unknown:
        raise ValueError(f"Unknown capability flag(s) {', '.join(unknown)}. Valid flags: {', '.join(FLAGS)}")
    return ModelCaps(tools="tools" in flags, thinking="thinking" in flags, vision="vision" in flags,
                     audio="audio" in flags, structured="structured" in flags)


def capabilities(provider: str, model_id: str, flags: tuple[str, ...] = ()) -> ModelCaps:
    """Flags if given, else the first family rule that matches, else nothing assumed."""
    if flags:
        return from_flags(flags)
    lowered = model_id.lower()
    for providers, pattern, caps in _CLOUD_FAMILIES:
        if provider in providers and re.search(pattern, lowered):
            return caps
    for pattern, caps in _OPEN_FAMILIES:
        if re.search(pattern, lowered):
            return replace(caps, structured=caps.structured or provider == "ollama")
    return ModelCaps(structured=provider == "ollama")


def passthrough_caps(caps: ModelCaps) -> ModelCaps:
    """What a served remote model takes (over HTTP, through ``connect``): tools, images, thinking and a response
    schema, as asked; its upstream judges them.

    ``thinking`` keeps the model's own value, so a request that asks nothing sends what aimu would (nothing for an
    OpenAI-compatible server) and ``<think>`` parsing is unchanged; a level goes out even where none is known."""
    return replace(caps, tools=True, vision=True, structured=True, thinking_levels=caps.thinking_levels or LEVELS,
                   passthrough=True)
