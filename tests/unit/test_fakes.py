"""The fake provider server, proven with the real SDKs (openai 3, anthropic 2, ollama 0.6).

Each SDK must parse what the fake sends (JSON, SSE, NDJSON, reasoning, tool calls) and turn
each scripted fault into its own error class, so tests of aimu_ray built on the fake exercise
the same code paths a real provider would.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import AsyncIterator

import anthropic
import httpx
import httpx2
import ollama
import openai
import pytest
import pytest_asyncio

from tests.fakes import CONTEXT_LENGTH_EXCEEDED, FakeServer

pytest_plugins = ["tests.fakes.fixtures"]

USER = [{"role": "user", "content": "What time is it?"}]
TZ_SCHEMA = {"type": "object", "properties": {"tz": {"type": "string"}}}
OPENAI_TOOL = {"type": "function", "function": {"name": "get_time", "parameters": TZ_SCHEMA}}
ANTHROPIC_TOOL = {"name": "get_time", "input_schema": TZ_SCHEMA}
GET_UTC = ("get_time", {"tz": "UTC"})


@pytest_asyncio.fixture(loop_scope="function")
async def oai(fake: FakeServer) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=f"{fake.url}/v1", api_key="sk-test", max_retries=0) as client:
        yield client


@pytest_asyncio.fixture(loop_scope="function")
async def claude(fake: FakeServer) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with anthropic.AsyncAnthropic(base_url=fake.url, api_key="sk-ant-test", max_retries=0) as client:
        yield client


@pytest_asyncio.fixture(loop_scope="function")
async def olla(fake: FakeServer) -> AsyncIterator[ollama.AsyncClient]:
    async with ollama.AsyncClient(host=fake.url) as client:
        yield client


# -- OpenAI --------------------------------------------------------------------------------


def test_openai_json_reply_carries_reasoning_usage_and_reaches_the_wire(fake):
    fake.reply("It is noon.", reasoning="Check clock.", prompt_tokens=11, completion_tokens=7, cache_read_tokens=3)
    with openai.OpenAI(base_url=f"{fake.url}/v1", api_key="sk-test", max_retries=0) as client:
        completion = client.chat.completions.create(model="gpt-test", messages=USER, max_completion_tokens=64)

    message = completion.choices[0].message
    assert (message.content, completion.choices[0].finish_reason) == ("It is noon.", "stop")
    assert completion.model == "gpt-test" and completion.id.startswith("chatcmpl-")
    assert message.model_extra["reasoning_content"] == "Check clock."
    assert message.reasoning_content == "Check clock."  # type: ignore[attr-defined]
    usage = completion.usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (11, 7, 18)
    assert usage.prompt_tokens_details.cached_tokens == 3
    [request] = fake.requests
    assert request.path == "/v1/chat/completions"
    assert request.body["max_completion_tokens"] == 64
    assert request.headers["authorization"] == "Bearer sk-test"


@pytest.mark.asyncio
async def test_openai_stream_sends_reasoning_first_tool_call_deltas_and_usage(fake, oai):
    calls = [("get_time", {"tz": "UTC"}), ("get_time", {"tz": "Europe/Paris"})]
    fake.reply("Let me look.", reasoning="The user wants the time.", tool_calls=calls)

    stream = await oai.chat.completions.create(
        model="gpt-test", messages=USER, tools=[OPENAI_TOOL], stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]

    deltas = [chunk.choices[0].delta for chunk in chunks if chunk.choices]
    reasoning = [d.model_extra.get("reasoning_content") for d in deltas if d.model_extra.get("reasoning_content")]
    content = [d.content for d in deltas if d.content]
    assert "".join(reasoning) == "The user wants the time." and len(reasoning) > 1
    assert "".join(content) == "Let me look." and len(content) > 1
    first_content = next(i for i, d in enumerate(deltas) if d.content)
    assert all(not d.model_extra.get("reasoning_content") for d in deltas[first_content:])
    calls: dict[int, dict[str, str]] = {}
    for delta in deltas:
        for call in delta.tool_calls or []:
            entry = calls.setdefault(call.index, {"id": call.id, "name": call.function.name, "arguments": ""})
            entry["arguments"] += call.function.arguments or ""
    assert [json.loads(c["arguments"]) for c in calls.values()] == [{"tz": "UTC"}, {"tz": "Europe/Paris"}]
    assert all(c["id"].startswith("call_") and c["name"] == "get_time" for c in calls.values())
    assert chunks[-2].choices[0].finish_reason == "tool_calls"
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens > 0


@pytest.mark.asyncio
async def test_openai_stream_helper_accumulates_the_final_completion(fake, oai):
    fake.reply("", tool_calls=[GET_UTC])

    async with oai.chat.completions.stream(model="gpt-test", messages=USER, tools=[OPENAI_TOOL]) as stream:
        completion = await stream.get_final_completion()

    [call] = completion.choices[0].message.tool_calls
    assert (call.function.name, json.loads(call.function.arguments)) == ("get_time", {"tz": "UTC"})


@pytest.mark.asyncio
async def test_gemini_openai_compatible_path_and_model_list(fake):
    async with openai.AsyncOpenAI(base_url=f"{fake.url}/v1beta/openai/", api_key="gm-test", max_retries=0) as client:
        completion = await client.chat.completions.create(model="gemini-test", messages=USER)
        models = await client.models.list()

    assert completion.choices[0].message.content == "echo: What time is it?"
    assert [m.id for m in models.data] == ["fake-model"]
    assert [r.path for r in fake.requests] == ["/v1beta/openai/chat/completions", "/v1beta/openai/models"]


@pytest.mark.asyncio
async def test_openai_refusal(fake, oai):
    fake.reply(refusal="I can't help with that.")

    completion = await oai.chat.completions.create(model="gpt-test", messages=USER)

    message = completion.choices[0].message
    assert (message.content, message.refusal) == (None, "I can't help with that.")


# -- Anthropic -----------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_anthropic_json_has_thinking_text_and_tool_use(fake, claude):
    fake.reply("Checking.", reasoning="Need a tool.", tool_calls=[GET_UTC], cache_read_tokens=5)

    message = await claude.messages.create(
        model="claude-test",
        max_tokens=2048,
        messages=USER,
        thinking={"type": "enabled", "budget_tokens": 1024},
        tools=[ANTHROPIC_TOOL],
    )

    thinking, text, tool_use = message.content
    assert (thinking.type, thinking.thinking, text.text) == ("thinking", "Need a tool.", "Checking.")
    assert thinking.signature
    assert tool_use.id.startswith("toolu_") and (tool_use.name, tool_use.input) == ("get_time", {"tz": "UTC"})
    assert message.stop_reason == "tool_use"
    assert message.usage.cache_read_input_tokens == 5 and message.usage.output_tokens > 0
    [request] = fake.requests
    assert request.body["thinking"] == {"type": "enabled", "budget_tokens": 1024}
    assert request.body["tools"][0]["name"] == "get_time"
    assert request.headers["authorization"] == "Bearer sk-ant-test" and "anthropic-version" in request.headers


@pytest.mark.asyncio
async def test_anthropic_raw_stream_events_follow_the_protocol(fake, claude):
    fake.reply("It is noon.", reasoning="Look at the clock.", tool_calls=[GET_UTC], completion_tokens=9)

    stream = await claude.messages.create(model="claude-test", max_tokens=256, messages=USER, stream=True)
    events = [event async for event in stream]

    kinds = [e.type for e in events]
    assert kinds[0] == "message_start" and kinds[-2:] == ["message_delta", "message_stop"]
    assert kinds.count("content_block_start") == kinds.count("content_block_stop") == 3
    deltas = [e.delta.type for e in events if e.type == "content_block_delta"]
    assert {"thinking_delta", "signature_delta", "text_delta", "input_json_delta"} <= set(deltas)
    assert deltas.index("signature_delta") < deltas.index("text_delta") < deltas.index("input_json_delta")
    assert (events[-2].delta.stop_reason, events[-2].usage.output_tokens) == ("tool_use", 9)


@pytest.mark.asyncio
async def test_anthropic_stream_helper_rebuilds_the_message(fake, claude):
    fake.reply("It is noon.", reasoning="Look at the clock.", tool_calls=[("get_time", {"tz": "UTC", "fmt": "24h"})])

    async with claude.messages.stream(model="claude-test", max_tokens=256, messages=USER) as stream:
        text = "".join([t async for t in stream.text_stream])
        message = await stream.get_final_message()

    assert text == "It is noon."
    assert [b.type for b in message.content] == ["thinking", "text", "tool_use"]
    assert message.content[0].thinking == "Look at the clock."
    assert message.content[2].input == {"tz": "UTC", "fmt": "24h"}


@pytest.mark.asyncio
async def test_anthropic_refusal_and_model_list(fake, claude):
    fake.reply(refusal="Not allowed.")
    message = await claude.messages.create(model="claude-test", max_tokens=16, messages=USER)
    models = await claude.models.list()

    assert (message.stop_reason, message.stop_details.explanation) == ("refusal", "Not allowed.")
    assert [m.id for m in models.data] == ["fake-model"]


# -- Ollama --------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_ollama_stream_thinking_content_and_tool_calls(fake, olla):
    fake.reply("Let me check.", reasoning="Use the tool.", tool_calls=[GET_UTC], completion_tokens=6)

    parts = [
        part
        async for part in await olla.chat(
            model="qwen3:test", messages=USER, tools=[OPENAI_TOOL], think=True, keep_alive="5m", stream=True
        )
    ]

    assert "".join(p.message.thinking or "" for p in parts) == "Use the tool."
    assert "".join(p.message.content for p in parts) == "Let me check."
    [call] = [c for p in parts for c in p.message.tool_calls or []]
    assert (call.function.name, call.function.arguments) == ("get_time", {"tz": "UTC"})
    assert [p.done for p in parts].count(True) == 1 and parts[-1].done
    assert (parts[-1].done_reason, parts[-1].eval_count) == ("stop", 6)
    body = fake.requests[-1].body
    assert (body["think"], body["keep_alive"], body["stream"], body["tools"][0]["function"]["name"]) == (
        True,
        "5m",
        True,
        "get_time",
    )


@pytest.mark.asyncio
async def test_ollama_json_reply_and_tags(fake, olla):
    fake.reply("Noon.", reasoning="Easy.")
    response = await olla.chat(model="qwen3:test", messages=USER, stream=False)
    listed = await olla.list()

    assert (response.message.content, response.message.thinking, response.done) == ("Noon.", "Easy.", True)
    assert [m.model for m in listed.models] == ["fake-model"]


# -- scripting -----------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_replies_are_fifo_across_protocols_then_echo(fake, oai, claude, olla):
    for text in ("one", "two", "three"):
        fake.reply(text)

    first = await oai.chat.completions.create(model="m", messages=USER)
    second = await claude.messages.create(model="m", max_tokens=8, messages=USER)
    third = await olla.chat(model="m", messages=USER)
    parts = [{"type": "text", "text": "hey"}]
    fourth = await oai.chat.completions.create(model="m", messages=[{"role": "user", "content": parts}])

    assert first.choices[0].message.content == "one"
    assert second.content[0].text == "two"
    assert third.message.content == "three"
    assert fourth.choices[0].message.content == "echo: hey"


@pytest.mark.asyncio
async def test_neutral_finish_maps_to_each_protocols_stop_reason(fake, oai, claude, olla):
    for _ in range(3):
        fake.reply("cut", finish="length")

    completion = await oai.chat.completions.create(model="m", messages=USER)
    message = await claude.messages.create(model="m", max_tokens=1, messages=USER)
    response = await olla.chat(model="m", messages=USER)

    assert completion.choices[0].finish_reason == "length"
    assert message.stop_reason == "max_tokens"
    assert response.done_reason == "length"


def test_reset_forgets_queues_log_and_delay():
    with FakeServer(delay_s=0.0) as server, openai.OpenAI(base_url=f"{server.url}/v1", api_key="x") as client:
        client.models.list()
        server.reply("queued")
        server.fault(status=500)
        server.delay_s = 5.0

        server.reset()

        assert (server.requests, server.delay_s) == ([], 0.0)
        completion = client.chat.completions.create(model="m", messages=USER)
        assert completion.choices[0].message.content == "echo: What time is it?"


# -- faults --------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_openai_429_is_rate_limit_error_with_retry_after(fake, oai):
    fake.fault(status=429, retry_after=1.5)

    with pytest.raises(openai.RateLimitError) as caught:
        await oai.chat.completions.create(model="m", messages=USER)

    headers = caught.value.response.headers
    assert (headers["retry-after"], headers["retry-after-ms"]) == ("2", "1500")
    assert caught.value.code == "rate_limit_exceeded"


@pytest.mark.asyncio
@pytest.mark.parametrize("status", [500, 503])
async def test_openai_server_errors_are_internal_server_error(fake, oai, status):
    fake.fault(status=status)

    with pytest.raises(openai.InternalServerError) as caught:
        await oai.chat.completions.create(model="m", messages=USER, stream=True)

    assert caught.value.status_code == status and caught.value.type == "server_error"


@pytest.mark.asyncio
async def test_openai_context_length_is_bad_request_with_code(fake, oai):
    fake.fault(status=400, code=CONTEXT_LENGTH_EXCEEDED)

    with pytest.raises(openai.BadRequestError) as caught:
        await oai.chat.completions.create(model="m", messages=USER)

    assert (caught.value.code, caught.value.param) == ("context_length_exceeded", "messages")


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "fault, error_class, text",
    [
        ({"status": 429, "retry_after": 3}, anthropic.RateLimitError, "rate_limit_error"),
        ({"status": 500}, anthropic.InternalServerError, "api_error"),
        ({"status": 529}, anthropic.OverloadedError, "overloaded_error"),
        ({"status": 400, "code": CONTEXT_LENGTH_EXCEEDED}, anthropic.BadRequestError, "prompt is too long"),
    ],
)
async def test_anthropic_errors_map_to_sdk_classes(fake, claude, fault, error_class, text):
    fake.fault(**fault)

    with pytest.raises(error_class) as caught:
        await claude.messages.create(model="m", max_tokens=8, messages=USER)

    assert text in str(caught.value)
    assert caught.value.response.headers.get("retry-after") == ("3" if "retry_after" in fault else None)


@pytest.mark.asyncio
async def test_ollama_500_is_response_error(fake, olla):
    fake.fault(status=500, message="model runner crashed")

    with pytest.raises(ollama.ResponseError) as caught:
        [part async for part in await olla.chat(model="m", messages=USER, stream=True)]

    assert (caught.value.status_code, caught.value.error) == (500, "model runner crashed")


@pytest.mark.asyncio
async def test_fault_consumes_no_reply_so_a_retry_gets_it(fake, oai):
    fake.fault(status=429, retry_after=0.01)
    fake.reply("after retry")

    completion = await oai.with_options(max_retries=1).chat.completions.create(model="m", messages=USER)

    assert completion.choices[0].message.content == "after retry"
    assert len(fake.requests) == 2


@pytest.mark.asyncio
async def test_malformed_bodies_fail_to_parse_in_every_sdk(fake, oai, claude, olla):
    for _ in range(4):
        fake.fault(malformed=True)

    with pytest.raises(json.JSONDecodeError):
        await oai.chat.completions.create(model="m", messages=USER)
    with pytest.raises(json.JSONDecodeError):
        [c async for c in await oai.chat.completions.create(model="m", messages=USER, stream=True)]
    with pytest.raises(json.JSONDecodeError):
        [e async for e in await claude.messages.create(model="m", max_tokens=8, messages=USER, stream=True)]
    with pytest.raises(json.JSONDecodeError):
        [p async for p in await olla.chat(model="m", messages=USER, stream=True)]


@pytest.mark.asyncio
async def test_dropped_stream_surfaces_as_connection_errors(fake, oai, claude, olla):
    for _ in range(3):
        fake.fault(drop_after=3)
    received = []

    with pytest.raises(openai.APIConnectionError):
        async for chunk in await oai.chat.completions.create(model="m", messages=USER, stream=True):
            received.append(chunk)
    with pytest.raises(anthropic.APIConnectionError) as dropped:  # anthropic >= 2.17 wraps it mid-stream too
        async for _ in await claude.messages.create(model="m", max_tokens=8, messages=USER, stream=True):
            pass
    assert isinstance(dropped.value.__cause__, httpx2.RemoteProtocolError)
    with pytest.raises(httpx.RemoteProtocolError):  # nor does ollama
        async for _ in await olla.chat(model="m", messages=USER, stream=True):
            pass

    assert len(received) == 3


@pytest.mark.asyncio
async def test_delays_before_answer_between_chunks_and_global(fake, oai):
    fake.fault(delay_s=0.2)
    fake.fault(chunk_delay_s=0.05)
    fake.reply("a b c d e")

    await oai.models.list()  # faults wait for a chat request
    started = time.perf_counter()
    await oai.chat.completions.create(model="m", messages=USER)
    assert time.perf_counter() - started >= 0.2
    started = time.perf_counter()
    chunks = [c async for c in await oai.chat.completions.create(model="m", messages=USER, stream=True)]
    assert time.perf_counter() - started >= 0.05 * (len(chunks) - 1)
    fake.delay_s = 0.1
    started = time.perf_counter()
    await oai.models.list()
    assert time.perf_counter() - started >= 0.1


@pytest.mark.asyncio
async def test_delays_do_not_block_concurrent_requests(fake, oai):
    fake.delay_s = 0.2

    started = time.perf_counter()
    replies = await asyncio.gather(*(oai.chat.completions.create(model="m", messages=USER) for _ in range(100)))

    assert len(replies) == 100
    assert time.perf_counter() - started < 3.0  # serialized delays would take 20 s


def test_script_mode_prints_ready_and_serves():
    root = Path(__file__).resolve().parents[2]
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes", "--port", "0", "--delay", "0.01"],
        cwd=root,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stdout.readline().split()
        assert line[0] == "READY"
        with openai.OpenAI(base_url=f"{line[1]}/v1", api_key="x", max_retries=0) as client:
            completion = client.chat.completions.create(model="m", messages=USER)
        assert completion.choices[0].message.content == "echo: What time is it?"
    finally:
        process.terminate()
        assert process.wait(10) == 0
