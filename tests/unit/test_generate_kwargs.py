"""The four-tier merge and the per-provider wire mapping (aimu-interface.md §3.5-§3.6)."""

import pytest

from aimu_ray.models import resolve_model
from aimu_ray.adapters import prepare_params
from aimu_ray.models.thinking import ResolvedThinking

OFF, ON = ResolvedThinking(enabled=False), ResolvedThinking(enabled=True)


def params(model: str, thinking=ResolvedThinking(), client=None, call=None):
    m = resolve_model(model)
    return prepare_params(m.spec, m.model_id, m.caps, thinking, client, call)


def test_tiers_merge_lowest_first_and_none_cancels():
    out = params("vllm:m", client={"temperature": 0.5, "seed": 1}, call={"temperature": 0.9, "max_tokens": None})
    assert out.params == {"temperature": 0.9, "seed": 1}


def test_local_compat_routes_non_openai_keys_to_extra_body():
    out = params("vllm:m", call={"top_k": 20, "min_p": 0.1, "repetition_penalty": 1.1, "context_length": 8192})
    assert out.params["extra_body"] == {"top_k": 20, "min_p": 0.1, "repetition_penalty": 1.1}
    assert out.dropped == ["context_length"]


def test_llamaserver_spells_repeat_penalty_its_way():
    assert params("llamaserver:x.gguf", call={"repetition_penalty": 1.2}).params["extra_body"] == {"repeat_penalty": 1.2}


def test_cloud_openai_drops_what_it_cannot_take_and_reports_only_caller_keys():
    out = params("openai:gpt-4.1", call={"top_k": 5})
    assert "top_k" not in out.params and out.dropped == ["top_k"]
    assert out.params == {"max_tokens": 16000, "temperature": 0.1}


def test_qwen3_vllm_high_thinking_matches_aimu():
    out = params("vllm:Qwen/Qwen3-8B", ResolvedThinking(True, None))
    assert out.params["temperature"] == 0.6 and out.params["top_p"] == 0.95
    assert out.params["extra_body"] == {"top_k": 20, "min_p": 0.0, "chat_template_kwargs": {"enable_thinking": True}}
    assert out.dropped == []


def test_thinking_off_selects_the_instruct_profile():
    out = params("vllm:Qwen/Qwen3-8B", OFF)
    assert out.params["temperature"] == 0.7 and out.params["top_p"] == 0.8
    assert out.params["extra_body"]["chat_template_kwargs"] == {"enable_thinking": False}


def test_levelled_compat_model_gets_xhigh_for_high():
    out = params("vllm:openai/gpt-oss-20b", ResolvedThinking(True, "high"))
    assert out.params["reasoning_effort"] == "xhigh"


def test_o_series_rewrite():
    assert params("openai:o3").params == {"temperature": 1, "max_completion_tokens": 16000}
    assert params("openai:o4-mini", call={"top_p": 0.5}).params == {"temperature": 1, "max_completion_tokens": 16000}


def test_ollama_puts_everything_in_options_and_sends_think():
    out = params("ollama:qwen3:8b", call={"max_tokens": 64, "repetition_penalty": 1.1, "num_gpu": 1, "min_p": 0.1})
    assert out.params["options"] == {"temperature": 0.6, "top_p": 0.95, "top_k": 20, "num_predict": 64,
                                     "repeat_penalty": 1.1, "num_gpu": 1}
    assert out.params["think"] is True            # thinking=None sends the model's own default
    assert out.dropped == ["min_p"]
    assert params("ollama:qwen3:8b", OFF).params["think"] is False
    assert params("ollama:gpt-oss:20b", ResolvedThinking(True, "low")).params["think"] == "low"
    assert params("ollama:llama3.1:8b").params["think"] is False


def test_anthropic_budget_style_raises_max_tokens_and_drops_sampling():
    out = params("anthropic:claude-haiku-4-5", ResolvedThinking(True, "high"), call={"max_tokens": 1000})
    assert out.params["thinking"] == {"type": "enabled", "budget_tokens": 16000}
    assert out.params["max_tokens"] == 17024
    assert "extra_body" not in out.params      # temperature dropped while thinking


def test_anthropic_caller_budget_wins():
    out = params("anthropic:claude-haiku-4-5", ON, call={"thinking_budget_tokens": 3000})
    assert out.params["thinking"]["budget_tokens"] == 3000
    assert "thinking_budget_tokens" not in out.params


def test_anthropic_sampling_goes_to_extra_body_without_thinking():
    out = params("anthropic:claude-haiku-4-5", call={"top_k": 40, "presence_penalty": 1.0})
    assert out.params["extra_body"] == {"temperature": 0.1, "top_k": 40}
    assert out.dropped == ["presence_penalty"]


def test_anthropic_adaptive_levels_and_disable():
    on = params("anthropic:claude-opus-4-7", ResolvedThinking(True, "high"), call={"max_tokens": 100})
    assert on.params["thinking"] == {"type": "adaptive", "display": "summarized"}
    assert on.params["output_config"] == {"effort": "xhigh"} and on.params["max_tokens"] == 4096
    assert params("anthropic:claude-sonnet-4-6", ResolvedThinking(True, "high")).params["output_config"] == {"effort": "high"}
    off = params("anthropic:claude-sonnet-4-6", OFF, call={"output_config": {"effort": "max"}})
    assert off.params["thinking"] == {"type": "disabled"} and off.params["output_config"] == {"effort": "high"}


def test_anthropic_models_that_reject_sampling_never_get_it():
    assert "extra_body" not in params("anthropic:claude-opus-4-7", call={"temperature": 0.3}).params


def test_reserved_key_is_refused():
    with pytest.raises(ValueError, match="reserved"):
        params("vllm:m", call={"_thinking": True})
