"""``provider:model_id[@base_url][;flag,flag]``, parsed exactly as aimu does.

Split order is fixed and each split takes the first occurrence: ``;`` (flags), then ``@`` (endpoint),
then ``:`` (provider). So ids may hold colons (``ollama:qwen3.5:9b``) and URLs may hold ``:``, ``/``
and userinfo ``@``; ids may not hold ``@`` or ``;``.

Wherever a model string is taken, aimu's own enum members are taken too when aimu is installed beside
aimu_ray (``aimu_ray.client(AnthropicModel.CLAUDE_SONNET_4_6)``): ``model_text`` turns one into
``provider:id`` by aimu's table of enum classes, recognised by module and class name, so aimu is never
imported here.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import Enum
from types import MappingProxyType
from typing import Any

from .capabilities import ModelCaps, capabilities
from .providers import PROVIDERS, ProviderSpec
from .thinking import LEVELS


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


# aimu's enum classes (module, class) -> (aimu_ray provider, task), as aimu's factories route them
# (aimu.models.model_client._TEXT_PROVIDERS, image_client._entries, audio_client._entries)
_COMPAT = "aimu.models.providers.openai_compat"
AIMU_ENUMS: dict[tuple[str, str], tuple[str, str]] = {
    ("aimu.models.providers.ollama", "OllamaModel"): ("ollama", "text"),
    ("aimu.models.providers.hf.text", "HuggingFaceModel"): ("hf", "text"),
    ("aimu.models.providers.anthropic", "AnthropicModel"): ("anthropic", "text"),
    ("aimu.models.providers.openai.text", "OpenAIModel"): ("openai", "text"),
    ("aimu.models.providers.gemini.text", "GeminiModel"): ("gemini", "text"),
    (_COMPAT, "LMStudioOpenAIModel"): ("lmstudio", "text"),
    (_COMPAT, "OllamaOpenAIModel"): ("ollama-openai", "text"),
    (_COMPAT, "HFOpenAIModel"): ("hf-openai", "text"),
    (_COMPAT, "VLLMOpenAIModel"): ("vllm", "text"),
    (_COMPAT, "LlamaServerOpenAIModel"): ("llamaserver", "text"),
    (_COMPAT, "SGLangOpenAIModel"): ("sglang", "text"),
    (_COMPAT, "OMLXOpenAIModel"): ("omlx", "text"),
    ("aimu.models.providers.llamacpp", "LlamaCppModel"): ("llamacpp", "text"),
    ("aimu.models.providers.hf.image", "HuggingFaceImageModel"): ("hf", "image"),
    ("aimu.models.providers.gemini.image", "GeminiImageModel"): ("gemini", "image"),
    ("aimu.models.providers.hf.audio", "HuggingFaceAudioModel"): ("hf", "audio"),
}


def _from_aimu(model: Any) -> bool:
    return type(model).__module__.startswith("aimu.")


def aimu_member(model: Any) -> tuple[str, str, str] | None:
    """``(provider, model id, task)`` for one of aimu's enum members (duck-typed: an Enum from an ``aimu.``
    module whose member holds a spec with an id); None for anything else. A member of an aimu enum that aimu_ray
    has no provider for (speech, transcription, embedding) is a ValueError naming it."""
    if not (isinstance(model, Enum) and _from_aimu(model)
            and isinstance(getattr(getattr(model, "spec", None), "id", None), str)):
        return None
    cls = type(model)
    row = AIMU_ENUMS.get((cls.__module__, cls.__name__))
    if row is None:
        raise ValueError(f"aimu_ray serves text, image and audio models; it has no provider for aimu's "
                         f"{cls.__name__} ({cls.__name__}.{model.name}).")
    provider, task = row
    return provider, model.spec.id, task


def model_text(model: Any) -> str:
    """The model string for a model argument: a string as given, aimu's enum member as ``provider:id``, a
    ``ResolvedModel`` as its own string; aimu's bare specs are refused in aimu's words."""
    if isinstance(model, str):
        return model
    if isinstance(model, ResolvedModel):
        return str(model)
    member = aimu_member(model)
    if member is not None:
        return f"{member[0]}:{member[1]}"
    spec_id = getattr(model, "id", None)
    if _from_aimu(model) and isinstance(spec_id, str) and type(model).__name__.endswith("Spec"):
        raise TypeError(f"Pass a model enum member or a 'provider:model_id' string. {type(model).__name__} is the "
                        "value type held by enum members.")
    raise TypeError(f"A model must be given as a 'provider:model_id' string, not {type(model).__name__}.")


def parse_model_string(text: str) -> ModelRef:
    """Split a model string (or one of aimu's enum members, see ``model_text``); only syntax is checked here."""
    text = model_text(text)
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
    """Parse and check a model string against the provider matrix (aimu's errors and wording); a ``ResolvedModel``
    is returned as it is, and one of aimu's enum members must be a text model's."""
    if isinstance(text, ResolvedModel):
        return text
    member = aimu_member(text)
    if member is not None:
        if member[2] != "text":
            raise ValueError(f"{type(text).__name__}.{text.name} is an {member[2]} model: pass it to "
                             f"{member[2]}_client(), not to a text client.")
        resolved = resolve_model(f"{member[0]}:{member[1]}")
        return replace(resolved, caps=_aimu_caps(text.spec, resolved.caps))
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


def _aimu_caps(spec: Any, caps: ModelCaps) -> ModelCaps:
    """An aimu enum member's capabilities are its catalog entry's, as ``client.model`` reads them in aimu (flags,
    thinking control, sampling profiles, effort values); aimu_ray's rules keep only what is the wire's own
    (Anthropic's adaptive thinking and refused sampling, OpenAI's reasoning rewrite)."""
    def profile(value: Any) -> MappingProxyType:
        return MappingProxyType(dict(value or {}))

    return replace(caps, tools=bool(spec.tools), thinking=bool(spec.thinking), vision=bool(spec.vision),
                   audio=bool(getattr(spec, "audio", False)),
                   structured=bool(getattr(spec, "structured_output", False)),
                   thinking_optional=bool(getattr(spec, "thinking_optional", True)),
                   thinking_levels=LEVELS if getattr(spec, "thinking_levels", False) else (),
                   generation_kwargs=profile(getattr(spec, "generation_kwargs", None)),
                   nonthinking_generation_kwargs=profile(getattr(spec, "nonthinking_generation_kwargs", None)),
                   effort_levels=tuple(getattr(spec, "effort_levels", ()) or ()))
