"""What every wire adapter shares: aimu's four-tier merge of generation kwargs, and the walk that puts it on a wire.

Tiers, lowest first: the provider's defaults, the model family's profile (its instruct profile when thinking is
off), the client's ``default_generate_kwargs``, the call's ``generate_kwargs``. ``None`` cancels a lower tier.
An ``Adapter`` subclass says only what differs per wire protocol: how it spells the portable keys, where other
keys go, what it never sends and how it asks for thinking. Its module also holds the protocol's message converters.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar, Mapping

from ..models.capabilities import ModelCaps
from ..models.providers import ProviderSpec
from ..models.thinking import ResolvedThinking

RESERVED_KEY = "_thinking"
PORTABLE_KEYS = ("temperature", "top_p", "top_k", "min_p", "presence_penalty", "repetition_penalty",
                 "max_tokens", "context_length")


def kwarg_table(**renames: str | None) -> Mapping[str, str | None]:
    """A wire's names for the portable keys: key -> wire path (dots nest), ``None`` = not taken (dropped)."""
    base: dict[str, str | None] = {key: key for key in PORTABLE_KEYS}
    base.update(renames)
    return MappingProxyType(base)


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


def put(params: dict, path: str, value: Any) -> None:
    """Set ``a.b.c`` in nested dicts, keeping what a caller already put there (e.g. their own extra_body)."""
    *parents, leaf = path.split(".")
    node = params
    for name in parents:
        node = node.setdefault(name, {})
    node[leaf] = value


class Adapter(ABC):
    """One wire protocol's spelling of a request's parameters; pure, so the client can run it before any I/O."""

    protocol: ClassVar[str]
    kwarg_support: ClassVar[Mapping[str, str | None]]   # the protocol's table; a provider row may override keys
    passthrough_prefix: ClassVar[str] = ""               # where non-portable kwargs go ("options." for Ollama)
    call_keys: ClassVar[frozenset[str]] = frozenset()    # non-portable kwargs of the call itself: never prefixed

    def prepare(self, spec: ProviderSpec, caps: ModelCaps, thinking: ResolvedThinking,
                client_kwargs: dict | None, call_kwargs: dict | None) -> PreparedParams:
        for tier in (client_kwargs, call_kwargs):
            if tier and RESERVED_KEY in tier:
                raise ValueError(f"'{RESERVED_KEY}' is reserved; pass thinking= instead of putting it in "
                                 "generate_kwargs.")
        profile = caps.nonthinking_generation_kwargs if thinking.enabled is False and \
            caps.nonthinking_generation_kwargs else caps.generation_kwargs
        merged, caller_keys = merge_tiers(dict(spec.default_generate_kwargs), dict(profile), client_kwargs,
                                          call_kwargs)
        self.drop_unsent(merged, caps, thinking)
        params: dict[str, Any] = {}
        dropped: list[str] = []
        for key, value in merged.items():
            if key in PORTABLE_KEYS:
                target = self.wire_path(spec, key)
                if target is None:
                    if key in caller_keys:
                        dropped.append(key)
                    continue
            else:
                target = key if key in self.call_keys else self.passthrough_prefix + key
            put(params, target, value)
        self.write_thinking(spec, caps, thinking, params)
        self.rewrite_for_model(caps, params)
        return PreparedParams(params, dropped)

    def wire_path(self, spec: ProviderSpec, key: str) -> str | None:
        """Where a portable key goes: the provider row's override if it has one, else the protocol's table."""
        return spec.kwarg_overrides[key] if key in spec.kwarg_overrides else self.kwarg_support[key]

    def drop_unsent(self, merged: dict, caps: ModelCaps, thinking: ResolvedThinking) -> None:
        """Remove merged keys the wire must not get, before mapping (not reported as dropped: no caller asked)."""

    @abstractmethod
    def write_thinking(self, spec: ProviderSpec, caps: ModelCaps, thinking: ResolvedThinking, params: dict) -> None:
        """Put the resolved thinking request into ``params`` in the wire's own terms."""

    def rewrite_for_model(self, caps: ModelCaps, params: dict) -> None:
        """The last word for models that take the wire's parameters their own way."""
