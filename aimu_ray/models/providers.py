"""The provider matrix: what each ``provider:`` key talks to, and where a server departs from its protocol.

A row names the wire protocol, the endpoint, the SDK and the provider's default generation kwargs. How a
protocol spells parameters, thinking and messages is its adapter's (``aimu_ray.adapters``); a row only overrides
the kwarg names its server takes differently, so a new OpenAI-compatible server is one row here.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal, Mapping

Protocol = Literal["openai", "anthropic", "ollama", "gemini", "hf", "llamacpp"]   # "gemini": Google's native API
IN_PROCESS: frozenset[str] = frozenset({"hf", "llamacpp"})   # protocols whose model runs in a ModelActor

_OPENAI_SAMPLING_ONLY = MappingProxyType(dict.fromkeys(("top_k", "min_p", "repetition_penalty")))  # no extra_body keys
_LOCAL_DEFAULTS = MappingProxyType({"max_tokens": 4096, "temperature": 0.1})
_CLOUD_DEFAULTS = MappingProxyType({"max_tokens": 16000, "temperature": 0.1})
_NONE: Mapping[str, str | None] = MappingProxyType({})


@dataclass(frozen=True)
class ProviderSpec:
    key: str
    protocol: Protocol                         # what its chat requests speak
    default_base_url: str | None
    extra: str                                 # pip extra that installs the SDK
    sdk_module: str                            # import name checked before use
    api_key_env: str | None = None             # set for cloud providers: the key is required
    base_url_env: str | None = None            # the SDK's own variable for the endpoint, read when none is given
    accepts_endpoint: bool = True              # may the model string carry "@url"?
    default_generate_kwargs: Mapping[str, object] = field(default_factory=lambda: _LOCAL_DEFAULTS)
    # portable key -> wire path where this server differs from its protocol's table (None = not taken)
    kwarg_overrides: Mapping[str, str | None] = field(default_factory=lambda: _NONE)
    chat_template_thinking: bool = True        # chat-completions wires: thinking as the template's enable_thinking
    task_protocols: Mapping[str, Protocol] = field(default_factory=lambda: MappingProxyType({}))  # task -> protocol

    @property
    def is_cloud(self) -> bool:
        return self.api_key_env is not None

    @property
    def in_process(self) -> bool:
        """The model runs in a ModelActor: its packages are needed where the actor runs, not here."""
        return self.protocol in IN_PROCESS

    def protocol_for(self, task: str) -> Protocol:
        """What its requests of ``task`` (text, image, audio) speak: the chat protocol unless the task has its own."""
        return self.task_protocols.get(task, self.protocol)

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
                 default_generate_kwargs=_CLOUD_DEFAULTS),
    _compat("openai", "https://api.openai.com/v1", api_key_env="OPENAI_API_KEY", base_url_env="OPENAI_BASE_URL",
            accepts_endpoint=False, kwarg_overrides=_OPENAI_SAMPLING_ONLY, default_generate_kwargs=_CLOUD_DEFAULTS,
            chat_template_thinking=False),
    _compat("gemini", "https://generativelanguage.googleapis.com/v1beta/openai/", api_key_env="GOOGLE_API_KEY",
            accepts_endpoint=False, kwarg_overrides=_OPENAI_SAMPLING_ONLY, default_generate_kwargs=_CLOUD_DEFAULTS,
            chat_template_thinking=False, task_protocols=MappingProxyType({"image": "gemini"})),
    ProviderSpec("ollama", "ollama", "http://127.0.0.1:11434", extra="ollama", sdk_module="ollama",
                 base_url_env="OLLAMA_HOST", default_generate_kwargs=MappingProxyType({})),
    _compat("lmstudio", "http://localhost:1234/v1"),
    _compat("ollama-openai", "http://localhost:11434/v1", kwarg_overrides=_OPENAI_SAMPLING_ONLY),
    _compat("hf-openai", "http://localhost:8000/v1"),
    _compat("vllm", "http://localhost:8000/v1"),
    _compat("llamaserver", "http://localhost:8080/v1",
            kwarg_overrides=MappingProxyType({"repetition_penalty": "extra_body.repeat_penalty"})),
    _compat("sglang", "http://localhost:30000/v1"),
    _compat("omlx", "http://localhost:8000/v1"),
    _compat("openai-compat", None),
    # In-process models (aimu's HuggingFaceClient / LlamaCppClient tier-1 defaults).
    ProviderSpec("hf", "hf", None, extra="hf", sdk_module="transformers", accepts_endpoint=False,
                 default_generate_kwargs=MappingProxyType({"max_new_tokens": 4096, "temperature": 0.1, "top_p": 0.95,
                                                           "top_k": 50, "repetition_penalty": 1.1, "do_sample": True,
                                                           "num_beams": 1})),
    ProviderSpec("llamacpp", "llamacpp", None, extra="llamacpp", sdk_module="llama_cpp", accepts_endpoint=False,
                 chat_template_thinking=False),
)})
