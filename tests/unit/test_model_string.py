"""Model strings parse and fail exactly as aimu's do (aimu-interface.md §2)."""

import pytest

from aimu_ray.models import parse_model_string, resolve_model
from aimu_ray.models.providers import PROVIDERS


def test_split_order_takes_first_delimiters():
    ref = parse_model_string("llamaserver:my.gguf@http://u:p@gpu:8080/v1;tools, thinking")
    assert (ref.provider, ref.model_id, ref.base_url, ref.flags) == (
        "llamaserver", "my.gguf", "http://u:p@gpu:8080/v1", ("tools", "thinking"))


@pytest.mark.parametrize("text, model_id", [
    ("ollama:qwen3.5:9b", "qwen3.5:9b"),
    ("omlx:Qwen3.6-35B-A3B:fast", "Qwen3.6-35B-A3B:fast"),
    ("vllm:Qwen/Qwen3-8B", "Qwen/Qwen3-8B"),
])
def test_colons_stay_in_model_ids(text, model_id):
    assert parse_model_string(text).model_id == model_id


def test_empty_flags_are_dropped():
    assert parse_model_string("vllm:m;tools,, ,vision").flags == ("tools", "vision")


@pytest.mark.parametrize("text, message", [
    ("gpt-4.1", "provider:model_id"),
    ("openai:", "no model id"),
    ("vllm:m@", "no URL"),
])
def test_malformed_strings_say_what_form_is_expected(text, message):
    with pytest.raises(ValueError, match=message):
        parse_model_string(text)


def test_non_string_is_a_type_error():
    with pytest.raises(TypeError):
        parse_model_string(42)


def test_unknown_provider_lists_the_valid_ones():
    with pytest.raises(ValueError, match="Unknown provider 'nope'.*anthropic"):
        resolve_model("nope:model")


def test_cloud_providers_refuse_at_url():
    with pytest.raises(ValueError, match="does not accept an @base_url.*Supported"):
        resolve_model("gemini:gemini-2.5-flash@http://localhost:1/v1")


def test_ollama_and_compat_servers_accept_at_url():
    assert resolve_model("ollama:llama3.1:8b@http://gpu:11434").base_url == "http://gpu:11434"
    assert resolve_model("vllm:Qwen/Qwen3-8B@http://gpu-7:8000/v1").base_url == "http://gpu-7:8000/v1"


def test_unknown_flag_lists_valid_flags():
    with pytest.raises(ValueError, match="Valid flags: audio, structured, thinking, tools, vision"):
        resolve_model("vllm:m;fast")


def test_any_cloud_id_is_accepted_with_family_capabilities():
    model = resolve_model("anthropic:claude-some-future-model")
    assert model.caps.tools and model.caps.thinking and model.caps.vision
    assert resolve_model("openai:o4-mini").caps.reasoning_rewrite
    assert not resolve_model("openai:gpt-4.1").caps.reasoning_rewrite


def test_flags_replace_family_capabilities():
    caps = resolve_model("vllm:Qwen/Qwen3-8B;vision").caps
    assert caps.vision and not caps.tools and not caps.thinking


def test_local_ids_get_open_family_capabilities():
    assert resolve_model("vllm:Qwen/Qwen3-8B").caps.thinking
    assert resolve_model("ollama:llama3.1:8b").caps.tools
    assert not resolve_model("lmstudio:some-unknown-model").caps.tools


def test_missing_sdk_names_the_install_command(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "anthropic" else real(name, *a))
    with pytest.raises(ImportError, match=r"pip install 'aimu_ray\[anthropic\]'"):
        resolve_model("anthropic:claude-sonnet-4-6")


def test_every_provider_of_the_matrix_is_there():
    assert set(PROVIDERS) >= {"anthropic", "openai", "gemini", "ollama", "lmstudio", "ollama-openai", "hf-openai",
                              "vllm", "llamaserver", "sglang", "openai-compat"}
