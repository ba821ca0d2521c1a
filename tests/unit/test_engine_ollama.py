"""OllamaEngine against the loopback fake of Ollama's native /api/chat (JSON and NDJSON streams)."""

from __future__ import annotations


import pytest

from aimu_ray.models import (ChatRequest, ContextOverflowError, Endpoint, ProviderError, RateLimitError, ToolCall,
                             Usage)
from tests.fakes import CONTEXT_LENGTH_EXCEEDED
from tests.unit.engine_kit import failure, run, text_of

pytest_plugins = ["tests.fakes.fixtures"]

KEY = "ollama-test-key-6b2f9e1d"
USER = [{"role": "user", "content": "What time is it?"}]
IMAGE = "data:image/png;base64,iVBORw0KGgo="
TIME_TOOL = {"type": "function", "function": {
    "name": "get_time", "description": "Current time.",
    "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}}}}


def make_request(base_url: str, *, max_retries: int = 0, timeout: float = 10.0, api_key: str | None = None,
                 **fields) -> ChatRequest:
    fields.setdefault("messages", USER)
    fields.setdefault("params", {"think": False})
    return ChatRequest(provider="ollama", model="qwen3:8b", **fields,
                       endpoint=Endpoint(base_url=base_url, api_key=api_key, max_retries=max_retries, timeout=timeout))



# -- answers -----------------------------------------------------------------------------------------------

@pytest.mark.asyncio
@pytest.mark.parametrize("stream", [False, True])
async def test_text_usage_and_stop_reason(fake, stream):
    fake.reply("It is noon in Paris.", prompt_tokens=11, completion_tokens=7, finish="length")

    deltas, result = await run(make_request(fake.url, stream=stream))

    assert result.content == "It is noon in Paris." and result.stop_reason == "length"
    assert result.usage == Usage(input_tokens=11, output_tokens=7, total_tokens=18)
    if stream:
        assert len(deltas) > 1 and text_of(deltas, "generating") == result.content


@pytest.mark.asyncio
@pytest.mark.parametrize("stream", [False, True])
async def test_thinking_field_is_thinking(fake, stream):
    fake.reply("Noon.", reasoning="The user wants the time.")

    deltas, result = await run(make_request(fake.url, stream=stream, params={"think": True}))

    assert (result.thinking, result.content) == ("The user wants the time.", "Noon.")
    if stream:
        assert [d.phase for d in deltas] == ["thinking"] * 5 + ["generating"]


@pytest.mark.asyncio
@pytest.mark.parametrize("stream", [False, True])
async def test_think_tags_in_content_are_split_when_asked(fake, stream):
    fake.reply("<think>\nThe user wants the time.\n</think>\n\nIt is noon.")

    deltas, result = await run(make_request(fake.url, stream=stream, parse_think_tags=True))

    assert (result.thinking, result.content) == ("The user wants the time.", "It is noon.")
    if stream:
        assert text_of(deltas, "thinking").strip() == result.thinking


@pytest.mark.asyncio
@pytest.mark.parametrize("stream", [False, True])
async def test_tool_calls_from_any_part_are_kept(fake, stream):
    fake.reply("", tool_calls=[("get_time", {"tz": "UTC"}), ("get_time", {"tz": "Europe/Paris", "n": [1, 2]})])

    deltas, result = await run(make_request(fake.url, stream=stream, tools=[TIME_TOOL]))

    assert result.content == "" and deltas == []           # the calls rode on a part with empty content
    assert result.tool_calls == [ToolCall(name="get_time", arguments={"tz": "UTC"}),
                                 ToolCall(name="get_time", arguments={"tz": "Europe/Paris", "n": [1, 2]})]


# -- the request on the wire -------------------------------------------------------------------------------

@pytest.mark.asyncio
@pytest.mark.parametrize("stream", [False, True])
async def test_request_on_the_wire(fake, stream):
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "What is this?"},
                                     {"type": "image_url", "image_url": {"url": IMAGE}}]},
        {"role": "assistant", "tool_calls": [{"type": "function", "id": "abc123XYZ",
                                              "function": {"name": "get_time", "arguments": {"tz": "UTC"}}}]},
        {"role": "tool", "name": "get_time", "content": "12:00", "tool_call_id": "abc123XYZ"},
    ]
    params = {"options": {"num_ctx": 8192, "temperature": 0.2, "num_predict": 64}, "think": "high", "keep_alive": 60}

    await run(make_request(fake.url, stream=stream, messages=messages, params=params, tools=[TIME_TOOL],
                           api_key=KEY))

    [sent] = fake.requests
    body = sent.body
    assert sent.path == "/api/chat" and sent.headers["authorization"] == f"Bearer {KEY}"
    assert (body["model"], body["stream"], body["think"], body["keep_alive"]) == ("qwen3:8b", stream, "high", 60)
    assert body["options"] == params["options"]
    assert body["tools"][0]["function"]["name"] == "get_time"
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is this?", "images": ["iVBORw0KGgo="]},
        {"role": "assistant", "tool_calls": [{"function": {"name": "get_time", "arguments": {"tz": "UTC"}}}]},
        {"role": "tool", "content": "12:00", "tool_name": "get_time"},
    ]


@pytest.mark.asyncio
async def test_image_links_are_refused_before_any_request(fake):
    messages = [{"role": "user", "content": [{"type": "text", "text": "What is this?"},
                                             {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}]

    with pytest.raises(ValueError, match="needs the image bytes"):
        await run(make_request(fake.url, messages=messages))

    assert fake.requests == []


# -- failures and retries ----------------------------------------------------------------------------------

@pytest.mark.asyncio
@pytest.mark.parametrize("stream", [False, True])
async def test_429_is_retried_then_a_rate_limit_error(fake, fast_backoff, stream):
    for _ in range(2):
        fake.fault(status=429)

    error = await failure(make_request(fake.url, max_retries=1, stream=stream))

    assert isinstance(error, RateLimitError) and error.status_code == 429 and len(fake.requests) == 2


@pytest.mark.asyncio
@pytest.mark.parametrize("fault", [dict(status=500, message="no user query found in messages"),
                                   dict(status=400, code=CONTEXT_LENGTH_EXCEEDED)])
@pytest.mark.parametrize("stream", [False, True])
async def test_context_overflow_is_not_retried(fake, fault, stream):
    fake.fault(**fault)

    error = await failure(make_request(fake.url, max_retries=3, stream=stream))

    assert isinstance(error, ContextOverflowError) and len(fake.requests) == 1


@pytest.mark.asyncio
async def test_no_user_query_without_a_user_turn_is_not_an_overflow(fake):
    fake.fault(status=500, message="no user query found in messages")

    error = await failure(make_request(fake.url, messages=[{"role": "system", "content": "Be brief."}]))

    assert type(error) is ProviderError and error.status_code == 500


