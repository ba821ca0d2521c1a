"""OpenAICompatEngine against the loopback fake of the OpenAI API (also Gemini's compatible path),
plus what every engine shares: the reply accumulator and the engine cache."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import httpx2
import openai
import pytest
from openai.types.chat import ChatCompletionMessage

from aimu_ray.engines import ENGINES, EngineCache, engine_class
from aimu_ray.engines.remote.anthropic import AnthropicEngine
from aimu_ray.engines.remote.ollama import OllamaEngine
from aimu_ray.engines.remote.openai import OpenAICompatEngine
from aimu_ray.engines.remote.errors import translate
from aimu_ray.engines.reply import ReplyBuilder
from aimu_ray.engines.remote.openai import _absorb
from aimu_ray.models import (ChatDelta, ChatRequest, ContextOverflowError, Endpoint,
                             ModelTimeoutError, ProviderError, RateLimitError, ToolCall, Usage)
from aimu_ray.models.providers import IN_PROCESS
from tests.fakes import CONTEXT_LENGTH_EXCEEDED
from tests.unit.engine_kit import failure, run, text_of

pytest_plugins = ["tests.fakes.fixtures"]

KEY = "sk-test-openai-4f9d2c7b1e"
USER = [{"role": "user", "content": "What time is it?"}]
TIME_TOOL = {"type": "function", "function": {
    "name": "get_time", "description": "Current time.",
    "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}}}}


def make_request(base_url: str, *, provider: str = "openai", max_retries: int = 0, timeout: float = 10.0,
                 **fields) -> ChatRequest:
    fields.setdefault("messages", USER)
    return ChatRequest(provider=provider, model="gpt-test", **fields,
                       endpoint=Endpoint(base_url=base_url, api_key=KEY, max_retries=max_retries, timeout=timeout))



# -- answers -----------------------------------------------------------------------------------------------

@pytest.mark.asyncio
@pytest.mark.parametrize("stream", [False, True])
async def test_text_usage_and_stop_reason(fake, stream):
    fake.reply("It is noon in Paris.", prompt_tokens=11, completion_tokens=7, finish="length")

    deltas, result = await run(make_request(fake.url + "/v1", stream=stream))

    assert result.content == "It is noon in Paris."
    assert (result.thinking, result.tool_calls) == ("", [])
    assert result.usage == Usage(input_tokens=11, output_tokens=7, total_tokens=18)
    assert result.stop_reason == "length"
    if stream:
        assert len(deltas) > 1 and text_of(deltas, "generating") == result.content


@pytest.mark.asyncio
@pytest.mark.parametrize("stream", [False, True])
async def test_reasoning_field_is_thinking(fake, stream):
    fake.reply("Noon.", reasoning="The user wants the time.")

    deltas, result = await run(make_request(fake.url + "/v1", stream=stream, parse_think_tags=True))

    assert (result.thinking, result.content) == ("The user wants the time.", "Noon.")
    if stream:
        assert [d.phase for d in deltas] == ["thinking"] * 5 + ["generating"]
        assert text_of(deltas, "thinking") == result.thinking


def test_the_reasoning_field_is_read_too():
    """Ollama's /v1 and LM Studio name the field ``reasoning``; the fake only speaks ``reasoning_content``."""
    reply = ReplyBuilder(parse_think_tags=True)

    message = ChatCompletionMessage.model_validate({"role": "assistant", "content": "Noon.", "reasoning": "Clock."})
    _absorb(reply, message)

    assert (reply.result().thinking, reply.result().content) == ("Clock.", "Noon.")


@pytest.mark.asyncio
@pytest.mark.parametrize("stream", [False, True])
async def test_think_tags_are_split_only_when_asked(fake, stream):
    tagged = "<think>\nThe user wants the time.\n</think>\n\nIt is noon."
    fake.reply(tagged)
    fake.reply(tagged)

    deltas, parsed = await run(make_request(fake.url + "/v1", stream=stream, parse_think_tags=True))
    _, literal = await run(make_request(fake.url + "/v1", stream=stream))

    assert (parsed.thinking, parsed.content) == ("The user wants the time.", "It is noon.")
    assert (literal.thinking, literal.content) == ("", tagged)
    if stream:
        assert text_of(deltas, "thinking").strip() == parsed.thinking
        assert text_of(deltas, "generating").strip() == parsed.content


def test_think_tags_cut_anywhere_across_pieces():
    reply = ReplyBuilder(parse_think_tags=True)
    pieces = ["<thi", "nk>Rea", "soning</th", "ink", ">An", "swer <", "b>"]

    *deltas, result = [delta for piece in pieces for delta in reply.add_text(piece)] + reply.finish()

    assert (result.thinking, result.content) == ("Reasoning", "Answer <b>")
    assert text_of(deltas, "thinking") == "Reasoning" and text_of(deltas, "generating") == "Answer <b>"


def test_a_reasoning_field_turns_tag_parsing_off():
    reply = ReplyBuilder(parse_think_tags=True)

    reply.add_thinking("From the field.")
    reply.add_text("<think>literal</think> text")

    assert (reply.result().thinking, reply.result().content) == ("From the field.", "<think>literal</think> text")


@pytest.mark.asyncio
@pytest.mark.parametrize("stream", [False, True])
async def test_tool_calls_have_parsed_arguments(fake, stream):
    fake.reply("Let me look.", tool_calls=[("get_time", {"tz": "UTC"}),
                                           ("get_time", {"tz": "Europe/Paris", "n": [1, 2]})])

    _, result = await run(make_request(fake.url + "/v1", stream=stream, tools=[TIME_TOOL]))

    assert result.content == "Let me look." and result.stop_reason == "tool_calls"
    assert result.tool_calls == [ToolCall(id="call_fake000001_0", name="get_time", arguments={"tz": "UTC"}),
                                 ToolCall(id="call_fake000001_1", name="get_time",
                                          arguments={"tz": "Europe/Paris", "n": [1, 2]})]


@pytest.mark.asyncio
async def test_stream_is_incremental(fake):
    fake.reply("one two three four five six seven eight")
    fake.fault(chunk_delay_s=0.05)
    request = make_request(fake.url + "/v1", stream=True)
    engine = OpenAICompatEngine(request.endpoint)

    arrivals = [(time.monotonic(), item) async for item in engine.stream(request)]
    await engine.aclose()

    first_delta, end = arrivals[0][0], arrivals[-1][0]
    assert isinstance(arrivals[0][1], ChatDelta) and end - first_delta >= 0.3


# -- the request on the wire -------------------------------------------------------------------------------

@pytest.mark.asyncio
@pytest.mark.parametrize("stream", [False, True])
async def test_request_on_the_wire(fake, stream):
    image = "data:image/png;base64,iVBORw0KGgo="
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "What is this?"},
                                     {"type": "image_url", "image_url": {"url": image}}]},
        {"role": "assistant", "tool_calls": [{"type": "function", "id": "abc123XYZ",
                                              "function": {"name": "get_time", "arguments": {"tz": "UTC"}}}]},
        {"role": "tool", "name": "get_time", "content": "12:00", "tool_call_id": "abc123XYZ"},
    ]
    params = {"max_completion_tokens": 64, "temperature": 1, "reasoning_effort": "low",
              "extra_body": {"top_k": 20, "chat_template_kwargs": {"enable_thinking": False}}}

    await run(make_request(fake.url + "/v1", stream=stream, messages=messages, params=params, tools=[TIME_TOOL]))

    [sent] = fake.requests
    body = sent.body
    assert sent.path == "/v1/chat/completions" and sent.headers["authorization"] == f"Bearer {KEY}"
    assert (body["model"], body["max_completion_tokens"], body["temperature"], body["reasoning_effort"]) == \
        ("gpt-test", 64, 1, "low")
    assert body["top_k"] == 20 and body["chat_template_kwargs"] == {"enable_thinking": False}
    assert body["tools"] == [TIME_TOOL]
    assert body["messages"][1] == messages[1]
    assert json.loads(body["messages"][2]["tool_calls"][0]["function"]["arguments"]) == {"tz": "UTC"}
    assert body["messages"][3]["tool_call_id"] == "abc123XYZ"
    assert body.get("stream", False) is stream
    assert body.get("stream_options") == ({"include_usage": True} if stream else None)


@pytest.mark.asyncio
async def test_no_tools_key_without_tools_and_no_key_needed_locally(fake):
    await run(ChatRequest(provider="vllm", model="tiny", messages=USER, endpoint=Endpoint(base_url=fake.url + "/v1")))

    [sent] = fake.requests
    assert "tools" not in sent.body and sent.headers["authorization"] == "Bearer not-needed"


@pytest.mark.asyncio
async def test_gemini_uses_its_openai_compatible_path(fake):
    fake.reply("Hi from Gemini.")

    _, result = await run(make_request(fake.url + "/v1beta/openai/", provider="gemini"))

    assert result.content == "Hi from Gemini."
    assert [r.path for r in fake.requests] == ["/v1beta/openai/chat/completions"]


# -- failures and retries ----------------------------------------------------------------------------------

@pytest.mark.asyncio
async def test_429_waits_for_retry_after_then_succeeds(fake):
    fake.fault(status=429, retry_after=1)
    fake.reply("Made it.")

    started = time.monotonic()
    _, result = await run(make_request(fake.url + "/v1", max_retries=2))

    assert result.content == "Made it." and len(fake.requests) == 2
    assert time.monotonic() - started >= 1.0


@pytest.mark.asyncio
async def test_stream_429_is_retried_before_the_first_chunk(fake):
    fake.fault(status=429, retry_after=0.05)
    fake.reply("Made it.")

    started = time.monotonic()
    _, result = await run(make_request(fake.url + "/v1", max_retries=1, stream=True))

    assert result.content == "Made it." and len(fake.requests) == 2
    assert time.monotonic() - started >= 0.05


@pytest.mark.asyncio
async def test_429_past_the_retries_is_a_rate_limit_error(fake):
    for _ in range(2):
        fake.fault(status=429, retry_after=0.05)

    error = await failure(make_request(fake.url + "/v1", max_retries=1))

    assert isinstance(error, RateLimitError) and error.status_code == 429 and error.retry_after == 0.05
    assert "openai" in str(error) and "retry" in str(error) and len(fake.requests) == 2


@pytest.mark.asyncio
@pytest.mark.parametrize("stream", [False, True])
async def test_context_overflow(fake, stream):
    fake.fault(status=400, code=CONTEXT_LENGTH_EXCEEDED)

    error = await failure(make_request(fake.url + "/v1", max_retries=3, stream=stream))

    assert isinstance(error, ContextOverflowError) and len(fake.requests) == 1
    assert "gpt-test" in str(error) and "Shorten the history" in str(error)


@pytest.mark.asyncio
async def test_stream_stalled_before_any_text_is_retried_then_times_out(fake, fast_backoff):
    for _ in range(2):
        fake.fault(chunk_delay_s=1.0)

    error = await failure(make_request(fake.url + "/v1", timeout=0.2, max_retries=1, stream=True))

    assert isinstance(error, ModelTimeoutError) and len(fake.requests) == 2


@pytest.mark.asyncio
async def test_a_caller_mistake_surfaces_as_it_is_without_retry(fake, fast_backoff):
    error = await failure(make_request(fake.url + "/v1", max_retries=3, params={"frobnicate": True}))

    assert isinstance(error, TypeError) and "frobnicate" in str(error) and fake.requests == []


def test_an_error_inside_a_stream_is_a_provider_error_without_status():
    sdk_error = openai.APIError("An error occurred during streaming", httpx2.Request("POST", "http://fake/v1"),
                                body={"message": f"server exploded near {KEY}", "type": "server_error"})

    error = translate(sdk_error, make_request("http://fake/v1"))

    assert type(error) is ProviderError and error.status_code is None and not error.retryable
    assert "server exploded" in str(error) and KEY not in str(error)


# -- engine table and cache --------------------------------------------------------------------------------

@pytest.mark.asyncio
async def test_engine_cache_shares_one_engine_per_protocol_and_endpoint(fake):
    cache = EngineCache()
    openai_request = make_request(fake.url + "/v1")
    vllm_request = make_request(fake.url + "/v1", provider="vllm", max_retries=5)   # retries are per request
    other_key = openai_request.model_copy(update={"endpoint": Endpoint(base_url=fake.url + "/v1", api_key="sk-other")})

    engine = cache.get(openai_request)

    assert isinstance(engine, OpenAICompatEngine)
    assert cache.get(vllm_request) is engine
    assert cache.get(other_key) is not engine
    assert (await engine.run(openai_request)).content == "echo: What time is it?"
    await cache.aclose()
    assert cache.get(openai_request) is not engine
    await cache.aclose()


def test_engines_are_keyed_by_protocol_and_unknown_providers_are_refused():
    remote_chat = {protocol: engine_class(protocol, task) for protocol, task in ENGINES
                   if task == "text" and protocol not in IN_PROCESS}
    assert remote_chat == {"openai": OpenAICompatEngine, "anthropic": AnthropicEngine, "ollama": OllamaEngine}
    with pytest.raises(ValueError, match="Remote providers: .*anthropic"):
        EngineCache().get(ChatRequest(provider="hf", model="x", messages=USER))


def test_importing_engines_needs_no_sdk():
    code = ("import sys, aimu_ray.engines; "
            "print(sorted(m for m in ('openai', 'anthropic', 'ollama') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_missing_sdk_names_the_extra_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "openai", None)
    with pytest.raises(ImportError, match=r"pip install 'aimu_ray\[openai\]'"):
        OpenAICompatEngine(Endpoint())
