"""Anthropic's Messages API on the Serve app, through the official ``anthropic`` SDK only.

One app for the module serves the tiny HF text model, the real SmolLM2 through llama.cpp, and remote models on the
loopback fake server: an OpenAI-compatible one with tools and thinking, and an Anthropic one. Answers, streams, a
tool round trip, thinking blocks, errors as Anthropic error objects and ``x-api-key`` auth are checked against it.
"""

from __future__ import annotations

import os

import anthropic
import httpx
import pytest

from aimu_ray.demo.servers import free_port
from aimu_ray.deployments import AppConfig
from tests.fakes.wire.anthropic_messages import token_count

pytest_plugins = ["tests.fixtures.pytest_fixtures", "tests.fakes.fixtures"]

KEY = "sk-test-anthropic-route-0123456789"
PROVIDER_KEY = "sk-ant-provider-secret-9876543210"
GUARD_S = 60.0
WEATHER = {"name": "weather", "description": "Weather in a city.",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}
HI = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def app(serve_app, tiny_hf_dir, smollm2_gguf_path, fake_server, tmp_path_factory):
    os.environ["AIMU_RAY_TEST_ANTHROPIC_KEY"] = PROVIDER_KEY        # reaches the remote replicas, never a response
    config = AppConfig(port=free_port(), output_dir=tmp_path_factory.mktemp("served"), api_keys=[KEY], models=[
        {"name": "tiny", "model": f"hf:{tiny_hf_dir}", "options": {"max_batch_size": 4}},
        {"name": "smollm2", "model": "llamacpp:smollm2", "options": {"model_path": str(smollm2_gguf_path),
                                                                     "n_ctx": 2048}},
        {"name": "gpt", "model": f"openai-compat:m@{fake_server.url}/v1;tools,thinking",
         "options": {"max_retries": 0}},
        {"name": "claude", "model": "anthropic:claude-sonnet-4-5", "api_key_env": "AIMU_RAY_TEST_ANTHROPIC_KEY",
         "options": {"base_url": fake_server.url, "max_retries": 0}},
    ])
    return serve_app(config)


@pytest.fixture(scope="module")
def client(app) -> anthropic.Anthropic:
    """The SDK as applications make it: it sends the key as ``x-api-key``."""
    return anthropic.Anthropic(base_url=app, api_key=KEY, max_retries=0, timeout=GUARD_S)


# ----- answers and streams -----

def test_a_message_from_an_in_process_model(client):
    message = client.messages.create(model="tiny", max_tokens=6, messages=HI, extra_body={"temperature": 0})
    assert message.type == "message" and message.role == "assistant" and message.model == "tiny"
    assert message.id.startswith("msg_") and all(block.type == "text" for block in message.content)
    assert message.stop_reason in ("end_turn", "max_tokens")
    assert 0 < message.usage.output_tokens <= 6 and message.usage.input_tokens > 0


def test_the_real_model_answers_through_llamacpp(client):
    message = client.messages.create(model="smollm2", max_tokens=24, system="Answer in one sentence.",
                                     messages=[{"role": "user", "content": "What is the capital of France?"}],
                                     extra_body={"temperature": 0})
    assert "Paris" in message.content[0].text and message.stop_reason in ("end_turn", "max_tokens")


def test_a_stream_of_text_ends_in_the_same_message(client):
    with client.messages.stream(model="smollm2", max_tokens=24, system="Answer in one sentence.",
                                messages=[{"role": "user", "content": "What is the capital of France?"}],
                                extra_body={"temperature": 0}) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert len(pieces) >= 2 and "Paris" in "".join(pieces)
    assert [block.type for block in final.content] == ["text"] and final.content[0].text == "".join(pieces)
    assert final.stop_reason in ("end_turn", "max_tokens")


def test_a_streams_usage_comes_with_its_end(client):
    """Input tokens are known at the end (the HF engine counts them; llama.cpp's streams report none)."""
    with client.messages.stream(model="tiny", max_tokens=6, messages=HI) as stream:
        final = stream.get_final_message()
    assert 0 < final.usage.output_tokens <= 6 and final.usage.input_tokens > 0


# ----- tools and thinking -----

def test_a_tool_round_trip(client, fake):
    fake.reply("Checking.", tool_calls=[("weather", {"city": "Oslo"})])
    asked = [{"role": "user", "content": "Weather in Oslo?"}]
    first = client.messages.create(model="gpt", max_tokens=100, tools=[WEATHER], messages=asked)
    assert first.stop_reason == "tool_use" and [block.type for block in first.content] == ["text", "tool_use"]
    call = first.content[1]
    assert call.name == "weather" and call.input == {"city": "Oslo"} and call.id
    assert fake.requests[-1].body["tools"][0]["function"]["name"] == "weather"

    fake.reply("It is sunny in Oslo.")
    second = client.messages.create(model="gpt", max_tokens=100, tools=[WEATHER], messages=[
        *asked, {"role": "assistant", "content": first.content},          # the SDK's own blocks, sent back as they are
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "sunny"}]}])
    assert second.content[0].text == "It is sunny in Oslo." and second.stop_reason == "end_turn"
    sent = fake.requests[-1].body["messages"]
    assert sent[1]["role"] == "assistant" and sent[1]["content"] == "Checking."
    assert sent[1]["tool_calls"][0]["function"] == {"name": "weather", "arguments": '{"city": "Oslo"}'}
    assert sent[2] == {"role": "tool", "tool_call_id": call.id, "content": "sunny"}


def test_a_streamed_tool_call_arrives_whole(client, fake):
    fake.reply("", tool_calls=[("weather", {"city": "Bergen"})])
    with client.messages.stream(model="gpt", max_tokens=100, tools=[WEATHER], messages=HI) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use" and [block.type for block in final.content] == ["tool_use"]
    assert final.content[0].input == {"city": "Bergen"}


def test_thinking_blocks_from_a_thinking_model(client, fake):
    fake.reply("The answer.", reasoning="They want an answer.")
    message = client.messages.create(model="gpt", max_tokens=2048, messages=HI,
                                     thinking={"type": "enabled", "budget_tokens": 1024})
    assert [block.type for block in message.content] == ["thinking", "text"]
    assert message.content[0].thinking == "They want an answer." and message.content[0].signature == ""
    assert fake.requests[-1].body["chat_template_kwargs"] == {"enable_thinking": True}


def test_a_stream_carries_thinking_deltas_then_text(client, fake):
    fake.reply("The answer.", reasoning="Thinking it over.")
    with client.messages.stream(model="gpt", max_tokens=2048, messages=HI,
                                thinking={"type": "enabled", "budget_tokens": 1024}) as stream:
        events = list(stream)
        final = stream.get_final_message()
    thinking = "".join(event.delta.thinking for event in events
                       if event.type == "content_block_delta" and event.delta.type == "thinking_delta")
    assert thinking == "Thinking it over." and final.content[0].thinking == "Thinking it over."
    assert final.content[1].text == "The answer."
    assert [event.type for event in events][:2] == ["message_start", "content_block_start"]


def test_an_anthropic_model_gets_stop_sequences_and_the_budget_in_its_own_terms(client, fake):
    fake.reply("Sunny", reasoning="Short.", finish="stop_sequence")
    message = client.messages.create(model="claude", max_tokens=4000, messages=HI, stop_sequences=["END"],
                                     thinking={"type": "enabled", "budget_tokens": 3000})
    assert message.stop_reason == "stop_sequence" and message.content[1].text == "Sunny"
    sent = fake.requests[-1]
    assert sent.body["stop_sequences"] == ["END"] and sent.body["thinking"] == {"type": "enabled",
                                                                                 "budget_tokens": 3000}
    assert sent.body["model"] == "claude-sonnet-4-5" and sent.headers["authorization"] == f"Bearer {PROVIDER_KEY}"
    assert PROVIDER_KEY not in message.model_dump_json()


# ----- token counts (POST /v1/messages/count_tokens) -----

def test_an_in_process_model_counts_what_its_answer_takes_in(client):
    asked = {"model": "smollm2", "system": "Answer in one sentence.",
             "messages": [{"role": "user", "content": "What is the capital of France?"}]}
    count = client.messages.count_tokens(**asked)
    message = client.messages.create(max_tokens=2, extra_body={"temperature": 0}, **asked)
    assert count.input_tokens == message.usage.input_tokens > 10


def test_an_anthropic_model_counts_with_its_provider(client, fake):
    count = client.messages.count_tokens(model="claude", system="Be brief.", messages=HI, tools=[WEATHER],
                                         thinking={"type": "enabled", "budget_tokens": 2048})
    sent = fake.requests[-1]
    assert sent.path == "/v1/messages/count_tokens" and sent.body["model"] == "claude-sonnet-4-5"
    assert sent.body["system"] == "Be brief." and sent.body["tools"][0]["name"] == "weather"
    assert sent.body["thinking"] == {"type": "enabled", "budget_tokens": 2048} and "max_tokens" not in sent.body
    assert count.input_tokens == token_count(sent.body)["input_tokens"] and PROVIDER_KEY not in count.to_json()


def test_a_count_is_refused_by_a_provider_that_cannot_count_for_an_unknown_model_and_without_a_key(app, client, fake):
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.count_tokens(model="gpt", messages=HI)
    assert caught.value.body["error"]["type"] == "invalid_request_error"
    assert "has no token-counting endpoint" in caught.value.body["error"]["message"] and fake.requests == []
    with pytest.raises(anthropic.NotFoundError):
        client.messages.count_tokens(model="nope", messages=HI)
    with pytest.raises(anthropic.AuthenticationError):
        anthropic.Anthropic(base_url=app, api_key="sk-wrong", max_retries=0).messages.count_tokens(model="tiny",
                                                                                                  messages=HI)


# ----- errors, as Anthropic error objects -----

def test_an_unknown_model_is_not_found(client):
    with pytest.raises(anthropic.NotFoundError) as caught:
        client.messages.create(model="nope", max_tokens=5, messages=HI)
    assert caught.value.body["type"] == "error" and caught.value.body["error"]["type"] == "not_found_error"
    assert "nope" in caught.value.body["error"]["message"]


@pytest.mark.parametrize("fields, said", [
    ({"messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "url",
                                                                             "url": "http://example.com/a.png"}}]}]},
     "does not fetch URLs"),
    ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "server tool"),
    ({"extra_body": {"logprobs": True}}, "logprobs"),
])
def test_what_cannot_be_honoured_is_a_bad_request_naming_it(client, fields, said):
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(**{"model": "gpt", "max_tokens": 5, "messages": HI, **fields})
    error = caught.value.body["error"]
    assert caught.value.body["type"] == "error" and error["type"] == "invalid_request_error" and said in error["message"]


def test_a_forced_tool_choice_goes_to_an_openai_compatible_upstream_as_its_own(client, fake):
    fake.reply("ok")
    client.messages.create(model="gpt", max_tokens=5, messages=HI, tools=[WEATHER],
                           tool_choice={"type": "tool", "name": "weather"})
    assert fake.requests[-1].body["tool_choice"] == {"type": "function", "function": {"name": "weather"}}


def test_a_model_without_tools_refuses_them(client):
    with pytest.raises(anthropic.BadRequestError, match="does not take tools"):
        client.messages.create(model="tiny", max_tokens=5, messages=HI, tools=[WEATHER])


def test_a_stream_that_fails_after_it_started_ends_in_an_error_event(client, fake):
    fake.reply("one two three four five six seven eight")
    fake.fault(drop_after=4)                                 # the provider's connection drops mid-answer
    with pytest.raises(anthropic.APIStatusError) as caught:
        with client.messages.stream(model="gpt", max_tokens=100, messages=HI) as stream:
            for _ in stream.text_stream:
                pass
    assert caught.value.status_code == 200               # the headers were out: the error came as an event
    assert caught.value.body["type"] == "error" and caught.value.body["error"]["type"] in ("api_error",
                                                                                           "overloaded_error")


def test_a_stream_that_fails_first_gets_a_status(client, fake):
    fake.fault(status=429, retry_after=1)
    with pytest.raises(anthropic.RateLimitError) as caught:
        with client.messages.stream(model="gpt", max_tokens=100, messages=HI) as stream:
            stream.get_final_message()
    assert caught.value.body["error"]["type"] == "rate_limit_error"


# ----- auth -----

def test_keys_as_x_api_key_or_bearer_and_a_wrong_one_is_refused(app, client, fake):
    """The SDK sends its key as a bearer token (``client`` above); curl, older SDKs and other tools send
    ``x-api-key``, which opens the model routes as well."""
    def by_header(key: str) -> anthropic.Anthropic:
        return anthropic.Anthropic(base_url=app, default_headers={"x-api-key": key, "Authorization": anthropic.Omit()},
                                   max_retries=0, timeout=GUARD_S)

    assert by_header(KEY).messages.create(model="gpt", max_tokens=5, messages=HI).content[0].text == "echo: hi"
    for wrong in (anthropic.Anthropic(base_url=app, api_key="sk-wrong", max_retries=0, timeout=GUARD_S),
                  by_header("sk-wrong")):
        with pytest.raises(anthropic.AuthenticationError) as caught:
            wrong.messages.create(model="gpt", max_tokens=5, messages=HI)
        assert caught.value.body == {"type": "error", "error": {
            "type": "authentication_error", "message": "Missing or wrong API key: send 'Authorization: Bearer <key>' "
                                                       "(or 'x-api-key: <key>')."}}


# ----- metrics -----

def test_the_route_is_observed_and_its_tokens_counted(app, client):
    client.messages.create(model="tiny", max_tokens=4, messages=HI)
    metrics = httpx.get(f"{app}/metrics", timeout=GUARD_S).text
    assert 'aimu_ray_requests_total{model="tiny",route="messages",status="200"}' in metrics
    completion = next(line for line in metrics.splitlines()
                      if line.startswith('aimu_ray_tokens_total{kind="completion",model="tiny"}'))
    assert float(completion.split()[-1]) > 0
