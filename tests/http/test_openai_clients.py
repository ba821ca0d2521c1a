"""The OpenAI API as clients no one here wrote send it: the openai SDK's helpers and LiteLLM.

One app for the module serves the tiny HF Llama (noise, greedy by its generation config), the real SmolLM2 through
llama.cpp (loaded with ``logits_all`` so that it answers logprobs) and a remote model on the loopback fake server.
Tests assert shapes, counts and equalities of answers, never their words.
"""

from __future__ import annotations

import asyncio
import os

import httpx
import openai
import pytest
from pydantic import BaseModel

from aimu_ray.demo.servers import free_port
from aimu_ray.deployments import AppConfig
from aimu_ray.deployments.openai_api import CHAT_FIELDS

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")    # offline: LiteLLM would fetch its price list
import litellm  # noqa: E402

pytest_plugins = ["tests.fixtures.pytest_fixtures", "tests.fakes.fixtures"]

KEY = "sk-test-clients-key-0123456789"
GUARD_S = 120.0
USER = [{"role": "user", "content": "Name a colour."}]
WEATHER = {"type": "function", "function": {"name": "weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}}}}
IN_PROCESS = ("tiny", "smol")


@pytest.fixture(scope="module")
def app(serve_app, tiny_hf_dir, smollm2_gguf_path, fake_server, tmp_path_factory):
    os.environ["AIMU_RAY_TEST_CLIENTS_KEY"] = "sk-provider-secret"
    config = AppConfig(port=free_port(), output_dir=tmp_path_factory.mktemp("served"), api_keys=[KEY],
                       limits={"max_choices": 4}, models=[
        {"name": "tiny", "model": f"hf:{tiny_hf_dir}", "options": {"max_batch_size": 4}},
        {"name": "smol", "model": "llamacpp:smollm2", "options": {
            "model_path": str(smollm2_gguf_path), "n_ctx": 1024, "model_kwargs": {"logits_all": True}}},
        {"name": "gpt", "model": f"openai-compat:m@{fake_server.url}/v1;tools", "options": {"max_retries": 0},
         "api_key_env": "AIMU_RAY_TEST_CLIENTS_KEY"},
    ])
    return serve_app(config)


@pytest.fixture(scope="module")
def sdk(app) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{app}/v1", api_key=KEY, max_retries=0, timeout=GUARD_S)


def post(app: str, path: str, body: dict) -> httpx.Response:
    return httpx.post(f"{app}{path}", json=body, headers={"Authorization": f"Bearer {KEY}"}, timeout=GUARD_S)


class Verdict(BaseModel):
    ok: bool


# ----- the openai SDK's helpers -----

@pytest.mark.parametrize("model", IN_PROCESS)
def test_parse_with_a_pydantic_model(sdk, model):
    reply = sdk.chat.completions.parse(model=model, messages=USER, response_format=Verdict, max_tokens=20)
    assert isinstance(reply.choices[0].message.parsed, Verdict)


def test_the_streaming_helper_collects_text_and_logprobs(sdk):
    with sdk.chat.completions.stream(model="smol", messages=USER, max_tokens=100, logprobs=True,
                                     top_logprobs=2) as stream:
        texts = [event.delta for event in stream if event.type == "content.delta"]
        final = stream.get_final_completion()
    choice = final.choices[0]
    assert "".join(texts) == choice.message.content and choice.message.content
    tokens = choice.logprobs.content
    assert tokens and all(len(token.top_logprobs) == 2 and token.logprob <= 0 for token in tokens)


@pytest.mark.parametrize("model", IN_PROCESS)
def test_logprobs_with_top_logprobs(sdk, model):
    reply = sdk.chat.completions.create(model=model, messages=USER, max_tokens=6, temperature=0, logprobs=True,
                                        top_logprobs=2)
    tokens = reply.choices[0].logprobs.content
    assert tokens and all(token.logprob <= 0 and len(token.top_logprobs) == 2 for token in tokens)
    assert tokens[0].logprob == pytest.approx(max(top.logprob for top in tokens[0].top_logprobs))  # greedy


@pytest.mark.parametrize("model", IN_PROCESS)
def test_a_seed_repeats_the_answer(sdk, model):
    ask = dict(model=model, messages=USER, max_tokens=10, temperature=1.0, seed=1234)
    assert sdk.chat.completions.create(**ask).choices[0].message.content == \
        sdk.chat.completions.create(**ask).choices[0].message.content


@pytest.mark.parametrize("model", IN_PROCESS)
def test_a_stop_string_ends_the_answer_before_it(sdk, model):
    whole = sdk.chat.completions.create(model=model, messages=USER, max_tokens=24, temperature=0)
    text = whole.choices[0].message.content
    stop = text[5:8]
    assert len(stop) == 3 and stop not in text[:7]
    cut = sdk.chat.completions.create(model=model, messages=USER, max_tokens=24, temperature=0, stop=[stop])
    assert cut.choices[0].message.content == text[:text.index(stop)]
    assert cut.choices[0].finish_reason == "stop"


def test_n_choices_each_with_its_index_and_the_usage_summed(sdk):
    one = sdk.chat.completions.create(model="smol", messages=USER, max_tokens=8, seed=5)
    two = sdk.chat.completions.create(model="smol", messages=USER, max_tokens=8, seed=5, n=2)
    assert [choice.index for choice in two.choices] == [0, 1]
    assert two.choices[0].message.content == one.choices[0].message.content         # choice 0 has the seed itself
    assert two.usage.prompt_tokens == 2 * one.usage.prompt_tokens


@pytest.mark.parametrize("model", ["tiny", "gpt"])
def test_a_stream_of_n_choices_carries_each_index(sdk, model):
    chunks = list(sdk.chat.completions.create(model=model, messages=USER, max_tokens=6, n=3, stream=True,
                                              stream_options={"include_usage": True}))
    texts, finished = {}, set()
    for chunk in chunks:
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + (choice.delta.content or "")
            if choice.finish_reason:
                finished.add(choice.index)
    assert set(texts) == finished == {0, 1, 2}
    assert chunks[-1].usage.completion_tokens > 0


def test_more_choices_than_the_limit_is_400_naming_it(sdk):
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.create(model="tiny", messages=USER, n=5)
    assert caught.value.body["code"] == "max_choices"


# ----- legacy completions -----

@pytest.mark.parametrize("model", IN_PROCESS)
def test_completions_a_choice_per_prompt_and_n(sdk, model):
    reply = sdk.completions.create(model=model, prompt=["Say hi.", "Say bye."], max_tokens=5, n=2, temperature=0)
    assert reply.object == "text_completion" and [choice.index for choice in reply.choices] == [0, 1, 2, 3]
    assert reply.choices[0].text == reply.choices[1].text and reply.usage.completion_tokens > 0


def test_completions_stream_echo_and_legacy_logprobs(sdk):
    text = "".join(chunk.choices[0].text for chunk in sdk.completions.create(
        model="smol", prompt="Say hi.", max_tokens=5, stream=True, echo=True, temperature=0) if chunk.choices)
    whole = sdk.completions.create(model="smol", prompt="Say hi.", max_tokens=5, temperature=0, logprobs=2)
    assert text == "Say hi." + whole.choices[0].text
    logprobs = whole.choices[0].logprobs
    assert len(logprobs.tokens) == len(logprobs.token_logprobs) == len(logprobs.text_offset) == 5
    assert all(len(top) == 2 for top in logprobs.top_logprobs) and logprobs.text_offset[0] == 0


@pytest.mark.parametrize("body, param", [
    ({"suffix": "end"}, "suffix"),
    ({"best_of": 3}, "best_of"),
    ({"echo": True, "logprobs": 1}, "echo"),
    ({"promt": "typo"}, "promt"),
])
def test_completions_refuse_what_they_cannot_honour(app, body, param):
    answer = post(app, "/v1/completions", {"model": "tiny", "prompt": "x", **body})
    assert answer.status_code == 400 and param in answer.json()["error"]["message"]


# ----- every field: forwarded, honoured, ignored or refused by name -----

def test_remote_models_get_the_fields_their_upstream_takes(sdk, fake):
    sdk.chat.completions.create(model="gpt", messages=USER, tools=[WEATHER], tool_choice="required", seed=3,
                                stop=["x"], logprobs=True, top_logprobs=2, logit_bias={"42": -5},
                                frequency_penalty=0.5, verbosity="low", parallel_tool_calls=False, store=True,
                                metadata={"a": "b"}, user="u", service_tier="flex", prediction={
                                    "type": "content", "content": "x"}, prompt_cache_key="k")
    sent = fake.requests[-1].body
    assert {key: sent[key] for key in ("tool_choice", "seed", "stop", "logprobs", "top_logprobs", "logit_bias",
                                       "frequency_penalty", "verbosity", "parallel_tool_calls")} == {
        "tool_choice": "required", "seed": 3, "stop": ["x"], "logprobs": True, "top_logprobs": 2,
        "logit_bias": {"42": -5}, "frequency_penalty": 0.5, "verbosity": "low", "parallel_tool_calls": False}
    assert not {"store", "metadata", "user", "service_tier", "prediction", "prompt_cache_key"} & set(sent)


def test_fields_that_change_nothing_are_accepted_by_in_process_models(sdk):
    reply = sdk.chat.completions.create(model="tiny", messages=USER, max_tokens=2, store=True, metadata={"a": "b"},
                                        user="u", safety_identifier="s", prompt_cache_key="k", service_tier="auto",
                                        parallel_tool_calls=True, prediction={"type": "content", "content": "x"},
                                        modalities=["text"], tool_choice="auto")
    assert reply.choices[0].finish_reason in ("length", "stop")


@pytest.mark.parametrize("model, fields, param", [
    ("tiny", {"audio": {"voice": "alloy", "format": "wav"}, "modalities": ["text"]}, "audio"),
    ("gpt", {"modalities": ["text", "audio"]}, "modalities"),
    ("tiny", {"web_search_options": {}}, "web_search_options"),
    ("smol", {"verbosity": "low"}, "verbosity"),
    ("tiny", {"frequency_penalty": 0.5}, "frequency_penalty"),
    ("tiny", {"tool_choice": "required"}, "tool_choice"),              # a forced call goes with tools
    ("smol", {"function_call": {"name": "weather"}}, "function_call"),
    ("tiny", {"top_logprobs": 2}, "top_logprobs"),
    ("tiny", {"temprature": 0.5}, "temprature"),
])
def test_what_cannot_be_honoured_is_400_naming_the_field(app, model, fields, param):
    answer = post(app, "/v1/chat/completions", {"model": model, "messages": USER, **fields})
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["type"] == "invalid_request_error" and param in error["message"]


def test_the_table_covers_every_field_of_the_sdks_request():
    from openai.types.chat import completion_create_params

    assert set(completion_create_params.CompletionCreateParamsBase.__annotations__) <= set(CHAT_FIELDS)


# ----- LiteLLM as a client -----

def test_litellm_completion(app):
    reply = litellm.completion(model="openai/smol", api_base=f"{app}/v1", api_key=KEY, messages=USER, max_tokens=6,
                               seed=7, n=2)
    assert len(reply.choices) == 2 and reply.choices[0].message.content


def test_litellm_acompletion_stream(app):
    async def collect() -> str:
        chunks = await litellm.acompletion(model="openai/tiny", api_base=f"{app}/v1", api_key=KEY, messages=USER,
                                           max_tokens=6, stream=True, stop=["\n\n"])
        return "".join([chunk.choices[0].delta.content or "" async for chunk in chunks])

    assert asyncio.run(collect())
