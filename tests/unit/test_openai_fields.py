"""The chat body's field table: each OpenAI field honoured, forwarded, ignored or refused by name, per wire."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import ValidationError

from aimu_ray.deployments.openai_api import CHAT_FIELDS, ChatCompletionRequest
from aimu_ray.deployments.openai_completions import CompletionRequest, legacy_logprobs, merged
from aimu_ray.models.limits import Limits
from aimu_ray.models.errors import LimitExceededError
from aimu_ray.models.wire import TokenLogprob, TopLogprob

USER = [{"role": "user", "content": "hi"}]
TOOL = {"type": "function", "function": {"name": "f"}}


def body(**fields) -> ChatCompletionRequest:
    return ChatCompletionRequest(model="m", messages=USER, **fields)


def test_the_table_covers_every_field_of_openais_request_and_the_body_takes_each():
    from openai.types.chat import completion_create_params

    fields = set(completion_create_params.CompletionCreateParamsBase.__annotations__)
    assert fields <= set(CHAT_FIELDS) and fields <= set(ChatCompletionRequest.model_fields)


def test_a_field_that_is_not_openais_is_refused_by_name():
    with pytest.raises(ValidationError, match="temprature"):
        body(temprature=0.2)


@pytest.mark.parametrize("fields, name", [
    ({"audio": {"voice": "alloy"}}, "audio"),
    ({"modalities": ["text", "audio"]}, "modalities"),
    ({"top_logprobs": 2}, "top_logprobs"),
    ({"logit_bias": {"word": 1}}, "logit_bias"),
    ({"functions": [TOOL["function"]], "tools": [TOOL]}, "functions"),
    ({"tool_choice": "required"}, "tool_choice forces a call to one of the tools"),
    ({"function_call": {"name": "f"}}, "function_call forces a call to one of the tools"),
])
def test_what_no_model_can_honour_is_refused_by_name(fields, name):
    with pytest.raises(ValidationError, match=name):
        body(**fields)


@pytest.mark.parametrize("protocol, fields, refused", [
    ("hf", {"seed": 1, "stop": "x", "logprobs": True, "top_logprobs": 3, "logit_bias": {"5": 1}}, None),
    ("hf", {"frequency_penalty": 0.5}, "frequency_penalty"),
    ("hf", {"presence_penalty": 0.5}, "presence_penalty"),
    ("hf", {"tools": [TOOL], "tool_choice": "required", "parallel_tool_calls": False}, None),
    ("ollama", {"tools": [TOOL], "tool_choice": "required"}, "tool_choice"),
    ("hf", {"web_search_options": {}}, "web_search_options"),
    ("llamacpp", {"functions": [TOOL["function"]], "function_call": {"name": "f"}}, None),
    ("ollama", {"functions": [TOOL["function"]], "function_call": {"name": "f"}}, "function_call"),
    ("llamacpp", {"verbosity": "low"}, "verbosity"),
    ("anthropic", {"seed": 3}, "seed"),
    ("anthropic", {"logprobs": True}, "logprobs"),
    ("anthropic", {"tools": [TOOL], "tool_choice": "required", "stop": ["x"]}, None),
    ("ollama", {"logit_bias": {"5": 1}}, "logit_bias"),
    ("ollama", {"logprobs": True, "top_logprobs": 3, "seed": 1}, None),
    ("openai", {"verbosity": "low", "web_search_options": {}, "logprobs": True, "moderation": {"model": "x"}}, None),
])
def test_fields_are_checked_against_the_models_wire(protocol, fields, refused):
    asked = body(**fields)
    if refused is None:
        asked.check_fields(protocol)
    else:
        with pytest.raises(ValueError, match=f"^{refused} is not supported"):
            asked.check_fields(protocol)


def test_fields_that_change_nothing_are_ignored_everywhere_and_not_sent():
    asked = body(store=True, metadata={"a": "b"}, user="u", safety_identifier="s", prompt_cache_key="k",
                 prompt_cache_retention="24h", service_tier="flex", prediction={"type": "content", "content": "x"},
                 parallel_tool_calls=True, logprobs=False, tool_choice="auto", modalities=["text"])
    for protocol in ("openai", "anthropic", "ollama", "hf", "llamacpp"):
        asked.check_fields(protocol)
        kwargs = asked.generate_kwargs(protocol)
        assert not {"store", "metadata", "user", "service_tier", "prediction", "logprobs"} & set(kwargs)
    assert asked.generate_kwargs("openai")["parallel_tool_calls"] is True


def test_generate_kwargs_in_each_wires_terms():
    asked = body(seed=10, stop="END", tools=[TOOL], tool_choice={"type": "function", "function": {"name": "f"}},
                 max_completion_tokens=5, logprobs=True)
    assert asked.generate_kwargs("openai", 2) == {
        "seed": 12, "stop": ["END"], "max_tokens": 5, "logprobs": True,
        "tool_choice": {"type": "function", "function": {"name": "f"}}}
    anthropic = body(stop="END", tools=[TOOL], tool_choice="required").generate_kwargs("anthropic")
    assert anthropic == {"stop_sequences": ["END"], "tool_choice": {"type": "any"}}
    assert body(logprobs=True).generate_kwargs("llamacpp") == {"logprobs": True, "top_logprobs": 0}


def test_deprecated_functions_are_tools_and_function_call_a_tool_choice():
    asked = body(functions=[TOOL["function"]], function_call={"name": "f"})
    assert asked.tool_dicts() == [{"type": "function", "function": {
        "name": "f", "parameters": {"type": "object", "properties": {}}}}]
    assert asked.generate_kwargs("openai")["tool_choice"] == {"type": "function", "function": {"name": "f"}}


def test_reasoning_effort_takes_openais_new_levels():
    assert [body(reasoning_effort=level).thinking() for level in ("none", "minimal", "xhigh", "max")] == \
        [False, "low", "high", "high"]


def test_choices_are_bounded_by_max_choices():
    Limits(max_choices=4).check_choices(4)
    with pytest.raises(LimitExceededError, match="max_choices"):
        Limits(max_choices=4).check_choices(5)


def test_a_legacy_completion_is_a_chat_of_one_user_message():
    legacy = CompletionRequest(model="m", prompt=["a", "b"], n=2, logprobs=3, stop="x", seed=1)
    chat = legacy.as_chat("a")
    assert chat.messages[0].content == "a" and (chat.logprobs, chat.top_logprobs, chat.n) == (True, 3, 2)
    assert chat.max_tokens == 16 and legacy.prompts() == ["a", "b"]
    for fields, name in (({"suffix": "s"}, "suffix"), ({"best_of": 2}, "best_of"), ({"echo": True, "logprobs": 1},
                                                                                       "echo")):
        with pytest.raises(ValidationError, match=name):
            CompletionRequest(model="m", prompt="p", **fields)


def test_legacy_logprobs_shape():
    tokens = [TokenLogprob(token="He", logprob=-0.5, top_logprobs=[TopLogprob(token="He", logprob=-0.5)]),
              TokenLogprob(token="llo", logprob=-1.0)]
    assert legacy_logprobs(tokens) == {"tokens": ["He", "llo"], "token_logprobs": [-0.5, -1.0],
                                       "top_logprobs": [{"He": -0.5}, {}], "text_offset": [0, 2]}
    assert legacy_logprobs(None) is None


def test_merged_streams_carry_their_index_and_the_first_failure_ends_all():
    async def items(values, fail=False):
        for value in values:
            await asyncio.sleep(0)
            yield value
        if fail:
            raise ValueError("boom")

    async def collect(streams):
        return [pair async for pair in merged(streams)]

    pairs = asyncio.run(collect([items("ab"), items("xyz")]))
    assert sorted(pairs) == [(0, "a"), (0, "b"), (1, "x"), (1, "y"), (1, "z")]
    with pytest.raises(ValueError, match="boom"):
        asyncio.run(collect([items("ab", fail=True), items("x" * 100)]))
