"""The adapter table: every protocol a provider chats in has its adapter, and a server is one row over it."""

from aimu_ray.adapters import ADAPTERS, prepare_params
from aimu_ray.adapters.base import PORTABLE_KEYS
from aimu_ray.models.capabilities import capabilities
from aimu_ray.models.providers import PROVIDERS, ProviderSpec
from aimu_ray.models.thinking import ResolvedThinking


def test_every_chat_protocol_has_its_adapter():
    assert set(ADAPTERS) == {spec.protocol for spec in PROVIDERS.values()}
    assert all(adapter.protocol == protocol for protocol, adapter in ADAPTERS.items())


def test_tables_and_row_overrides_speak_only_portable_keys():
    assert all(set(adapter.kwarg_support) == set(PORTABLE_KEYS) for adapter in ADAPTERS.values())
    assert all(set(spec.kwarg_overrides) <= set(PORTABLE_KEYS) for spec in PROVIDERS.values())


def test_a_new_openai_compatible_server_is_one_row():
    row = ProviderSpec("newserver", "openai", "http://localhost:9000/v1", extra="openai", sdk_module="openai")
    out = prepare_params(row, "Qwen/Qwen3-8B", capabilities("newserver", "Qwen/Qwen3-8B"), ResolvedThinking(False),
                         None, {"top_k": 5, "context_length": 8192})
    assert out.params == {"max_tokens": 4096, "temperature": 0.7, "top_p": 0.8,
                          "extra_body": {"top_k": 5, "min_p": 0.0, "chat_template_kwargs": {"enable_thinking": False}}}
    assert out.dropped == ["context_length"]
