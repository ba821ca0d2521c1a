"""``provider:model_id[@base_url][;flag,flag]``, parsed exactly as aimu does.

Split order is fixed and each split takes the first occurrence: ``;`` (flags), then ``@`` (endpoint),
then ``:`` (provider). So ids may hold colons (``ollama:qwen3.5:9b``) and URLs may hold ``:``, ``/``
and userinfo ``@``; ids may not hold ``@`` or ``;``.
"""

from __future__ import annotations

from dataclasses import dataclass

from .capabilities import ModelCaps, capabilities
from .providers import PROVIDERS, ProviderSpec


@dataclass(frozen=True)
class ModelRef:
    provider: str
    model_id: str
    base_url: str | None = None
    flags: tuple[str, ...] = ()


@dataclass(frozen=True)
class ResolvedModel:
    spec: ProviderSpec
    model_id: str
    base_url: str | None
    caps: ModelCaps

    @property
    def provider(self) -> str:
        return self.spec.key

    # aimu's read surface of ``client.model`` (an enum member there, or an AdHocModel for an id it does not list)

    @property
    def value(self) -> str:
        """The provider's wire id."""
        return self.model_id

    @property
    def name(self) -> str:
        """As aimu names a model outside its enums: by its id."""
        return self.model_id

    @property
    def supports_tools(self) -> bool:
        return self.caps.tools

    @property
    def supports_thinking(self) -> bool:
        return self.caps.thinking

    @property
    def supports_vision(self) -> bool:
        return self.caps.vision

    @property
    def supports_audio(self) -> bool:
        return self.caps.audio

    @property
    def supports_structured_output(self) -> bool:
        return self.caps.structured

    @property
    def generation_kwargs(self) -> dict:
        return dict(self.caps.generation_kwargs)

    @property
    def nonthinking_generation_kwargs(self) -> dict:
        return dict(self.caps.nonthinking_generation_kwargs)

    @property
    def thinking_levels(self) -> tuple[str, ...]:
        return self.caps.thinking_levels

    @property
    def thinking_optional(self) -> bool:
        return self.caps.thinking_optional

    def __str__(self) -> str:
        return f"{self.provider}:{self.model_id}" + (f"@{self.base_url}" if self.base_url else "")


def parse_model_string(text: str) -> ModelRef:
    """Split a model string; only syntax is checked here."""
    if not isinstance(text, str):
        raise TypeError(f"A model must be given as a 'provider:model_id' string, not {type(text).__name__}.")
    rest, _, flag_text = text.partition(";")
    flags = tuple(f.strip() for f in flag_text.split(",") if f.strip())
    rest, at, base_url = rest.partition("@")
    provider, colon, model_id = rest.partition(":")
    if not colon:
        raise ValueError(f"Model string must be in 'provider:model_id' form (e.g. 'openai:gpt-4.1'), got {text!r}.")
    provider, model_id = provider.strip(), model_id.strip()
    if not model_id:
        raise ValueError(f"Model string {text!r} names no model id after '{provider}:'.")
    if at and not base_url.strip():
        raise ValueError(f"Model string {text!r} has an '@' but no URL after it.")
    return ModelRef(provider, model_id, base_url.strip() or None, flags)


def resolve_model(text: str) -> ResolvedModel:
    """Parse and check a model string against the provider matrix (aimu's errors and wording)."""
    ref = parse_model_string(text)
    spec = PROVIDERS.get(ref.provider)
    if spec is None:
        raise ValueError(f"Unknown provider '{ref.provider}'. Available providers: {sorted(PROVIDERS)}")
    if ref.base_url and not spec.accepts_endpoint:
        supported = sorted(k for k, s in PROVIDERS.items() if s.accepts_endpoint)
        raise ValueError(f"Provider '{spec.key}' does not accept an @base_url (use base_url= instead). "
                         f"Supported: {supported}")
    if not spec.in_process:      # in-process models need their packages where the actor runs, not here
        spec.require_sdk()
    return ResolvedModel(spec, ref.model_id, ref.base_url, capabilities(spec.key, ref.model_id, ref.flags))
