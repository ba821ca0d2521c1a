"""The provider matrix: what each ``provider:`` key talks to and how its parameters are spelled.

This is the LiteLLM-style transformation table, as data. The client uses it to turn portable
generation kwargs into the provider's own vocabulary; the engines (``aimu_ray.engines``) only do I/O.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal, Mapping

Protocol = Literal["openai", "anthropic", "ollama", "hf", "llamacpp"]
IN_PROCESS: frozenset[str] = frozenset({"hf", "llamacpp"})   # protocols whose model runs in a ModelActor

PORTABLE_KEYS = ("temperature", "top_p", "top_k", "min_p", "presence_penalty", "repetition_penalty",
                 "max_tokens", "context_length")


def _table(**renames: str | None) -> Mapping[str, str | None]:
    """A kwarg-support table: portable key -> wire path (dots nest), ``None`` = not supported (dropped)."""
    base = {key: key for key in PORTABLE_KEYS}
    base.update(renames)
    return MappingProxyType(base)


_LOCAL_COMPAT = _table(top_k="extra_body.top_k", min_p="extra_body.min_p",
                       repetition_penalty="extra_body.repetition_penalty", context_length=None)
_CLOUD_OPENAI = _table(top_k=None, min_p=None, repetition_penalty=None, context_length=None)
_LOCAL_DEFAULTS = MappingProxyType({"max_tokens": 4096, "temperature": 0.1})
_CLOUD_DEFAULTS = MappingProxyType({"max_tokens": 16000, "temperature": 0.1})


@dataclass(frozen=True)
class ProviderSpec:
    key: str
    protocol: Protocol
    default_base_url: str | None
    extra: str                                 # pip extra that installs the SDK
    sdk_module: str                            # import name checked before use
    api_key_env: str | None = None             # set for cloud providers: the key is required
    base_url_env: str | None = None            # the SDK's own variable for the endpoint, read when none is given
    accepts_endpoint: bool = True              # may the model string carry "@url"?
    kwarg_support: Mapping[str, str | None] = field(default_factory=lambda: _LOCAL_COMPAT)
    default_generate_kwargs: Mapping[str, object] = field(default_factory=lambda: _LOCAL_DEFAULTS)
    passthrough_prefix: str = ""               # where non-portable kwargs go ("options." for Ollama)
    chat_template_thinking: bool = True        # send enable_thinking through chat_template_kwargs
    template_kwargs_path: str = "extra_body.chat_template_kwargs"   # where chat-template kwargs go on the wire

    @property
    def is_cloud(self) -> bool:
        return self.api_key_env is not None

    @property
    def in_process(self) -> bool:
        """The model runs in a ModelActor: its packages are needed where the actor runs, not here."""
        return self.protocol in IN_PROCESS

    def install_hint(self) -> str:
        return f"pip install 'aimu_ray[{self.extra}]'"

    def require_sdk(self) -> None:
        """ImportError naming the install command when this provider's SDK is absent."""
        if importlib.util.find_spec(self.sdk_module) is None:
            raise ImportError(f"Provider '{self.key}' needs the '{self.sdk_module}' package: "
                              f"{self.install_hint()}")


def _compat(key: str, url: str | None, **overrides) -> ProviderSpec:
    return ProviderSpec(key=key, protocol="openai", default_base_url=url, extra="openai",
                        sdk_module="openai", **overrides)


PROVIDERS: Mapping[str, ProviderSpec] = MappingProxyType({spec.key: spec for spec in (
    ProviderSpec("anthropic", "anthropic", "https://api.anthropic.com", extra="anthropic", sdk_module="anthropic",
                 api_key_env="ANTHROPIC_API_KEY", base_url_env="ANTHROPIC_BASE_URL", accepts_endpoint=False,
                 kwarg_support=_table(min_p=None, presence_penalty=None, repetition_penalty=None,
                                      context_length=None),
                 default_generate_kwargs=_CLOUD_DEFAULTS, chat_template_thinking=False),
    _compat("openai", "https://api.openai.com/v1", api_key_env="OPENAI_API_KEY", base_url_env="OPENAI_BASE_URL",
            accepts_endpoint=False,
            kwarg_support=_CLOUD_OPENAI, default_generate_kwargs=_CLOUD_DEFAULTS, chat_template_thinking=False),
    _compat("gemini", "https://generativelanguage.googleapis.com/v1beta/openai/", api_key_env="GOOGLE_API_KEY",
            accepts_endpoint=False, kwarg_support=_CLOUD_OPENAI, default_generate_kwargs=_CLOUD_DEFAULTS,
            chat_template_thinking=False),
    ProviderSpec("ollama", "ollama", "http://127.0.0.1:11434", extra="ollama", sdk_module="ollama",
                 base_url_env="OLLAMA_HOST",
                 kwarg_support=_table(min_p=None, repetition_penalty="options.repeat_penalty",
                                      max_tokens="options.num_predict", context_length="options.num_ctx",
                                      temperature="options.temperature", top_p="options.top_p",
                                      top_k="options.top_k", presence_penalty="options.presence_penalty"),
                 default_generate_kwargs=MappingProxyType({}), passthrough_prefix="options.",
                 chat_template_thinking=False),
    _compat("lmstudio", "http://localhost:1234/v1"),
    _compat("ollama-openai", "http://localhost:11434/v1",
            kwarg_support=_table(top_k=None, min_p=None, repetition_penalty=None, context_length=None)),
    _compat("hf-openai", "http://localhost:8000/v1"),
    _compat("vllm", "http://localhost:8000/v1"),
    _compat("llamaserver", "http://localhost:8080/v1",
            kwarg_support=_table(top_k="extra_body.top_k", min_p="extra_body.min_p",
                                 repetition_penalty="extra_body.repeat_penalty", context_length=None)),
    _compat("sglang", "http://localhost:30000/v1"),
    _compat("omlx", "http://localhost:8000/v1"),
    _compat("openai-compat", None),
    # In-process models (aimu's HuggingFaceClient / LlamaCppClient tables and tier-1 defaults).
    ProviderSpec("hf", "hf", None, extra="hf", sdk_module="transformers", accepts_endpoint=False,
                 kwarg_support=_table(max_tokens="max_new_tokens", presence_penalty=None, context_length=None),
                 default_generate_kwargs=MappingProxyType({"max_new_tokens": 4096, "temperature": 0.1, "top_p": 0.95,
                                                           "top_k": 50, "repetition_penalty": 1.1, "do_sample": True,
                                                           "num_beams": 1}),
                 template_kwargs_path="chat_template_kwargs"),
    ProviderSpec("llamacpp", "llamacpp", None, extra="llamacpp", sdk_module="llama_cpp", accepts_endpoint=False,
                 kwarg_support=_table(repetition_penalty="repeat_penalty", context_length=None),
                 chat_template_thinking=False),
)})
