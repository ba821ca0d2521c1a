"""AnthropicEngine against the loopback fake of the Messages API: conversion, incremental streams, errors."""

from __future__ import annotations

import time

import anthropic
import httpx2
import pytest

from aimu_ray.adapters.anthropic import anthropic_messages
from aimu_ray.engines.remote.anthropic import AnthropicEngine
from aimu_ray.engines.remote.errors import translate
from aimu_ray.models import (ChatDelta, ChatRequest, ContextOverflowError, Endpoint, ModelRefusalError, RateLimitError, ToolCall, Usage)
from tests.fakes import CONTEXT_LENGTH_EXCEEDED
from tests.unit.engine_kit import failure, run, text_of

pytest_plugins = ["tests.fakes.fixtures"]

KEY = "sk-ant-test-8c1e5a0f3d"
USER = [{"role": "user", "content": "What time is it?"}]
TIME_TOOL = {"type": "function", "function": {
    "name": "get_time", "description": "Current time.",
    "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}}}}


def make_request(base_url: str, *, max_retries: int = 0, timeout: float = 10.0, **fields) -> ChatRequest:
    fields.setdefault("messages", USER)
    fields.setdefault("params", {"max_tokens": 1024})
    return ChatRequest(provider="anthropic", model="claude-test", **fields,
                       endpoint=Endpoint(base_url=base_url, api_key=KEY, max_retries=max_retries, timeout=timeout))



# -- answers -----------------------------------------------------------------------------------------------

@pytest.mark.asyncio
@pytest.mark.parametrize("stream", [False, True])
async def test_text_usage_with_cache_counts_and_stop_reason(fake, stream):
    fake.reply("It is noon in Paris.", prompt_tokens=11, completion_tokens=7, cache_read_tokens=3,
               cache_creation_tokens=2, finish="length")

    deltas, result = await run(make_request(fake.url, stream=stream))

    assert result.content == "It is noon in Paris." and result.stop_reason == "max_tokens"
    assert result.usage == Usage(input_tokens=11, output_tokens=7, total_tokens=18,
                                 cache_creation_input_tokens=2, cache_read_input_tokens=3)
    if stream:
        assert len(deltas) > 1 and text_of(deltas, "generating") == result.content


@pytest.mark.asyncio
@pytest.mark.parametrize("stream", [False, True])
async def test_thinking_blocks_are_thinking(fake, stream):
    fake.reply("Noon.", reasoning="The user wants the time.")

    deltas, result = await run(make_request(fake.url, stream=stream))

    assert (result.thinking, result.content) == ("The user wants the time.", "Noon.")
    if stream:
        assert [d.phase for d in deltas] == ["thinking"] * 5 + ["generating"]


@pytest.mark.asyncio
@pytest.mark.parametrize("stream", [False, True])
async def test_tool_use_keeps_real_ids_and_dict_arguments(fake, stream):
    fake.reply("Let me look.", tool_calls=[("get_time", {"tz": "UTC"}),
                                           ("get_time", {"tz": "Europe/Paris", "n": [1, 2]})])

    _, result = await run(make_request(fake.url, stream=stream, tools=[TIME_TOOL]))

    assert result.content == "Let me look." and result.stop_reason == "tool_use"
    assert result.tool_calls == [ToolCall(id="toolu_fake000001_0", name="get_time", arguments={"tz": "UTC"}),
                                 ToolCall(id="toolu_fake000001_1", name="get_time",
                                          arguments={"tz": "Europe/Paris", "n": [1, 2]})]


@pytest.mark.asyncio
async def test_stream_is_incremental(fake):
    fake.reply("one two three four five six seven eight", reasoning="a b c")
    fake.fault(chunk_delay_s=0.03)
    request = make_request(fake.url, stream=True)
    engine = AnthropicEngine(request.endpoint)

    arrivals = [(time.monotonic(), item) async for item in engine.stream(request)]
    await engine.aclose()

    first_delta, end = arrivals[0][0], arrivals[-1][0]
    assert arrivals[0][1] == ChatDelta(phase="thinking", text="a") and end - first_delta >= 0.3


@pytest.mark.asyncio
@pytest.mark.parametrize("stream", [False, True])
async def test_refusal_is_an_error_with_the_explanation(fake, stream):
    fake.reply(refusal="I can't help with that.")

    error = await failure(make_request(fake.url, stream=stream, max_retries=2))

    assert isinstance(error, ModelRefusalError) and error.explanation == "I can't help with that."
    assert "claude-test" in str(error) and len(fake.requests) == 1


# -- the request on the wire -------------------------------------------------------------------------------

CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": [{"type": "text", "text": "Compare these."},
                                 {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQ"}},
                                 {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]},
    {"role": "assistant", "content": "Checking both.", "tool_calls": [
        {"type": "function", "id": "toolu_01", "function": {"name": "get_time", "arguments": {"tz": "UTC"}}},
        {"type": "function", "id": "toolu_02", "function": {"name": "get_time", "arguments": '{"tz": "CET"}'}}]},
    {"role": "tool", "name": "get_time", "content": "12:00", "tool_call_id": "toolu_01"},
    {"role": "tool", "name": "get_time", "content": "13:00", "tool_call_id": "toolu_02"},
    {"role": "assistant", "content": ""},
    {"role": "user", "content": "Thanks."},
]
CONVERTED = [
    {"role": "user", "content": [
        {"type": "text", "text": "Compare these."},
        {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/4AAQ"}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}}]},
    {"role": "assistant", "content": [
        {"type": "text", "text": "Checking both."},
        {"type": "tool_use", "id": "toolu_01", "name": "get_time", "input": {"tz": "UTC"}},
        {"type": "tool_use", "id": "toolu_02", "name": "get_time", "input": {"tz": "CET"}}]},
    {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "toolu_01", "content": "12:00"},
        {"type": "tool_result", "tool_use_id": "toolu_02", "content": "13:00"},
        {"type": "text", "text": "Thanks."}]},
]


def test_conversation_conversion():
    assert anthropic_messages(CONVERSATION) == ("Be brief.", CONVERTED)


def test_audio_input_is_refused_before_any_request():
    with pytest.raises(ValueError, match="no audio"):
        anthropic_messages([{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "UklG"}}]}])


@pytest.mark.asyncio
@pytest.mark.parametrize("stream", [False, True])
async def test_request_on_the_wire(fake, stream):
    params = {"max_tokens": 16000, "thinking": {"type": "adaptive", "display": "summarized"},
              "output_config": {"effort": "xhigh"}, "extra_body": {"top_k": 5}}

    await run(make_request(fake.url, stream=stream, messages=CONVERSATION, params=params, tools=[TIME_TOOL]))

    [sent] = fake.requests
    body = sent.body
    assert sent.path == "/v1/messages"
    assert KEY in (sent.headers.get("x-api-key"), sent.headers.get("authorization", "").removeprefix("Bearer "))
    assert (body["model"], body["max_tokens"], body["top_k"]) == ("claude-test", 16000, 5)
    assert body["thinking"] == params["thinking"] and body["output_config"] == {"effort": "xhigh"}
    assert body["system"] == "Be brief." and body["messages"] == CONVERTED
    assert body["tools"] == [{"name": "get_time", "description": "Current time.",
                              "input_schema": TIME_TOOL["function"]["parameters"]}]
    assert body.get("stream", False) is stream


@pytest.mark.asyncio
async def test_no_system_or_tools_keys_when_there_are_none(fake):
    await run(make_request(fake.url))

    [sent] = fake.requests
    assert "system" not in sent.body and "tools" not in sent.body


# -- failures and retries ----------------------------------------------------------------------------------

@pytest.mark.asyncio
async def test_429_waits_for_retry_after_then_succeeds(fake):
    fake.fault(status=429, retry_after=1)
    fake.reply("Made it.")

    started = time.monotonic()
    _, result = await run(make_request(fake.url, max_retries=2))

    assert result.content == "Made it." and len(fake.requests) == 2
    assert time.monotonic() - started >= 1.0


@pytest.mark.asyncio
@pytest.mark.parametrize("stream", [False, True])
async def test_overloaded_529_is_a_rate_limit_error_after_retries(fake, fast_backoff, stream):
    for _ in range(2):
        fake.fault(status=529)

    error = await failure(make_request(fake.url, max_retries=1, stream=stream))

    assert isinstance(error, RateLimitError) and error.status_code == 529 and len(fake.requests) == 2
    assert "anthropic" in str(error)


@pytest.mark.asyncio
@pytest.mark.parametrize("fault", [dict(status=400, code=CONTEXT_LENGTH_EXCEEDED), dict(status=413)])
@pytest.mark.parametrize("stream", [False, True])
async def test_context_overflow(fake, fault, stream):
    fake.fault(**fault)

    error = await failure(make_request(fake.url, max_retries=3, stream=stream))

    assert isinstance(error, ContextOverflowError) and len(fake.requests) == 1


def test_an_error_event_inside_a_stream_keeps_its_real_status():
    """Anthropic reports overload mid-stream as an ``error`` event in a 200 answer; the SDK keeps the 200."""
    response = httpx2.Response(200, request=httpx2.Request("POST", "http://fake/v1/messages"))
    body = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}

    error = translate(anthropic.APIStatusError("Overloaded", response=response, body=body), make_request("http://fake"))

    assert isinstance(error, RateLimitError) and error.status_code == 529 and error.retryable


