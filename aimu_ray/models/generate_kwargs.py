"""aimu's four-tier generation-kwargs merge and its per-provider wire mapping, as one pure function.

Tiers, lowest first: the provider's defaults, the model family's profile (its instruct profile when
thinking is off), the client's ``default_generate_kwargs``, the call's ``generate_kwargs``. ``None``
cancels a lower tier. Portable keys are then renamed or dropped per provider; thinking is written in
the provider's own terms; OpenAI reasoning models and Anthropic get their special rules.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .capabilities import ModelCaps
from .providers import PORTABLE_KEYS, ProviderSpec
from .thinking import ResolvedThinking

RESERVED_KEY = "_thinking"
ANTHROPIC_BUDGETS = {"low": 2048, "medium": 8000, "high": 16000, None: 8000}
_COMPAT_EFFORT = {"low": "low", "medium": "medium", "high": "xhigh"}
_SAMPLING = ("temperature", "top_p", "top_k")


@dataclass
class PreparedParams:
    params: dict[str, Any]
    dropped: list[str] = field(default_factory=list)   # keys the caller set that this provider cannot take


def merge_tiers(*tiers: dict | None) -> tuple[dict, set[str]]:
    """Merge lowest-first; returns the merged kwargs and the keys that the top two tiers (the caller) set."""
    merged: dict = {}
    for tier in tiers:
        for key, value in (tier or {}).items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = value
    caller_keys = {k for tier in tiers[-2:] for k, v in (tier or {}).items() if v is not None}
    return merged, caller_keys


def prepare_params(spec: ProviderSpec, model_id: str, caps: ModelCaps, thinking: ResolvedThinking,
                   client_kwargs: dict | None, call_kwargs: dict | None) -> PreparedParams:
    for tier in (client_kwargs, call_kwargs):
        if tier and RESERVED_KEY in tier:
            raise ValueError(f"'{RESERVED_KEY}' is reserved; pass thinking= instead of putting it in generate_kwargs.")
    profile = caps.nonthinking_generation_kwargs if thinking.enabled is False and caps.nonthinking_generation_kwargs \
        else caps.generation_kwargs
    merged, caller_keys = merge_tiers(dict(spec.default_generate_kwargs), dict(profile), client_kwargs, call_kwargs)

    anthropic_thinking = spec.protocol == "anthropic" and _anthropic_thinking_on(caps, thinking)
    if spec.protocol == "anthropic":
        for key in ("max_new_tokens", "do_sample", "num_return_sequences"):
            merged.pop(key, None)
        if anthropic_thinking or caps.rejects_sampling:
            for key in _SAMPLING:
                merged.pop(key, None)

    params: dict[str, Any] = {}
    dropped: list[str] = []
    for key, value in merged.items():
        if key in PORTABLE_KEYS:
            target = spec.kwarg_support.get(key)
            if target is None:
                if key in caller_keys:
                    dropped.append(key)
                continue
            if spec.protocol == "anthropic" and key in _SAMPLING:
                target = f"extra_body.{key}"      # the anthropic SDK has no sampling arguments
        else:
            target = spec.passthrough_prefix + key
        put(params, target, value)

    _write_thinking(spec, model_id, caps, thinking, params)
    if caps.reasoning_rewrite:
        params["max_completion_tokens"] = params.pop("max_tokens", 1024)
        params["temperature"] = 1
        params.pop("top_p", None)
    return PreparedParams(params, dropped)


def put(params: dict, path: str, value: Any) -> None:
    """Set ``a.b.c`` in nested dicts, keeping what a caller already put there (e.g. their own extra_body)."""
    *parents, leaf = path.split(".")
    node = params
    for name in parents:
        node = node.setdefault(name, {})
    node[leaf] = value


def _anthropic_thinking_on(caps: ModelCaps, thinking: ResolvedThinking) -> bool:
    return bool(caps.thinking and thinking.enabled)


def _write_thinking(spec: ProviderSpec, model_id: str, caps: ModelCaps, thinking: ResolvedThinking,
                    params: dict) -> None:
    if spec.protocol == "ollama":
        enabled = caps.thinking if thinking.enabled is None else thinking.enabled
        params["think"] = thinking.level if (enabled and thinking.level) else bool(enabled)
        return
    if spec.protocol == "anthropic":
        _write_anthropic_thinking(caps, thinking, params)
        return
    if thinking.enabled is None:
        return
    if spec.chat_template_thinking:
        put(params, f"{spec.template_kwargs_path}.enable_thinking", thinking.enabled)
        if thinking.enabled and thinking.level and caps.thinking_levels:
            params["reasoning_effort"] = _COMPAT_EFFORT[thinking.level]
    elif caps.passthrough and thinking.enabled and thinking.level:    # a served openai:/gemini: model, as asked
        params["reasoning_effort"] = thinking.level


def _write_anthropic_thinking(caps: ModelCaps, thinking: ResolvedThinking, params: dict) -> None:
    budget = params.pop("thinking_budget_tokens", None)     # aimu's key, not an Anthropic argument
    if not caps.thinking or thinking.enabled is None:
        return
    if caps.anthropic_adaptive:
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
        return
    if thinking.enabled:
        budget = budget or ANTHROPIC_BUDGETS[thinking.level]
        params["thinking"] = {"type": "enabled", "budget_tokens": budget}
        if params.get("max_tokens", 0) <= budget:
            params["max_tokens"] = budget + 1024
