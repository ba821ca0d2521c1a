"""End to end on a local Ray: aimu_ray's clients -> worker pool -> engines -> each provider's real SDK ->
a loopback server speaking that provider's protocol. One Ray for the whole module.
"""

from __future__ import annotations

import asyncio
import glob
import os

import pytest
import ray

import aimu_ray
from aimu_ray import aio
from aimu_ray.models import errors

pytest_plugins = ["tests.fakes.fixtures"]
pytestmark = pytest.mark.usefixtures("local_ray")

SECRET = "sk-e2e-secret-0123456789abcdef"


def anthropic(fake, model="claude-sonnet-4-6", **kwargs):
    return aimu_ray.client(f"anthropic:{model}", base_url=fake.url, api_key=SECRET, **kwargs)


def test_anthropic_thinking_and_tool_use_are_recorded(fake):
    fake.reply(content="Let me check.", reasoning="The user wants weather.", tool_calls=[("weather", {"city": "Oslo"})],
               prompt_tokens=11, completion_tokens=7, cache_read_tokens=3)
    c = anthropic(fake, system="Be brief.")
    spec = {"type": "function", "function": {"name": "weather", "description": "w",
                                             "parameters": {"type": "object", "properties": {}}}}
    assert c.chat("Weather in Oslo?", tools=[spec], thinking="high") == "Let me check."
    call = c.messages[-1]["tool_calls"][0]
    assert call["id"].startswith("toolu_") and call["function"]["arguments"] == {"city": "Oslo"}
    assert c.last_thinking == "The user wants weather." and c.last_stop_reason == "tool_use"
    assert c.last_usage["input_tokens"] == 11 and c.last_usage["cache_read_input_tokens"] == 3
    sent = fake.requests[-1].body
    assert sent["system"] == "Be brief." and sent["thinking"] == {"type": "adaptive", "display": "summarized"}
    assert sent["output_config"] == {"effort": "high"} and sent["tools"][0]["name"] == "weather"


def test_anthropic_stream_is_incremental_with_phases(fake):
    fake.reply(content="Ray is a framework.", reasoning="Think first.")
    chunks = list(anthropic(fake, model="claude-haiku-4-5").chat("What is Ray?", stream=True, thinking=True))
    phases = [str(ch.phase) for ch in chunks]
    assert phases[0] == "thinking" and phases[-1] == "generating" and len(chunks) > 2
    assert "".join(ch.content for ch in chunks if ch.phase == "generating") == "Ray is a framework."
    assert fake.requests[-1].body["thinking"] == {"type": "enabled", "budget_tokens": 8000}


def test_anthropic_refusal_is_typed(fake):
    fake.reply(refusal="I can't help with that.")
    with pytest.raises(errors.ModelRefusalError):
        anthropic(fake).chat("something bad")


def test_openai_o_series_rewrite_reaches_the_wire(fake):
    fake.reply(content="ok")
    aimu_ray.client("openai:o4-mini", base_url=f"{fake.url}/v1", api_key=SECRET).chat("hi")
    body = fake.requests[-1].body
    assert body["max_completion_tokens"] == 16000 and body["temperature"] == 1 and "max_tokens" not in body


def test_gemini_uses_the_openai_compatible_path_and_think_tags(fake):
    fake.reply(content="<think>hmm</think>Paris.")
    c = aimu_ray.client("gemini:gemini-2.5-flash", base_url=f"{fake.url}/v1beta/openai/", api_key=SECRET)
    assert c.chat("Capital of France?") == "Paris." and c.last_thinking == "hmm"
    assert fake.requests[-1].path.startswith("/v1beta/openai/")


def test_vllm_stream_reasoning_and_tool_calls_get_aimu_ids(fake):
    fake.reply(reasoning="plan", tool_calls=[("add", {"a": 1, "b": 2})])
    c = aimu_ray.client(f"vllm:Qwen/Qwen3-8B@{fake.url}/v1")
    chunks = list(c.chat("1+2?", stream=True, tools=[{"type": "function", "function": {"name": "add"}}],
                         thinking=False))
    assert [ch.content for ch in chunks if ch.phase == "thinking"] and c.last_thinking == "plan"
    call = c.last_tool_calls[0]
    assert call["arguments"] == {"a": 1, "b": 2} and len(call["id"]) == 9
    body = fake.requests[-1].body
    assert body["chat_template_kwargs"] == {"enable_thinking": False} and body["temperature"] == 0.7


def test_ollama_native_think_keep_alive_and_options(fake):
    fake.reply(content="Hi!", reasoning="greeting")
    c = aimu_ray.client("ollama:qwen3:8b", host=fake.url, model_keep_alive_seconds=120)
    assert "".join(ch.content for ch in c.chat("hi", stream=True, include=["generating"],
                                               generate_kwargs={"max_tokens": 5})) == "Hi!"
    assert c.last_thinking == "greeting"
    body = fake.requests[-1].body
    assert body["think"] is True and body["keep_alive"] == 120 and body["options"]["num_predict"] == 5


def test_conversation_state_stays_in_the_caller(fake):
    c = aimu_ray.client(f"openai-compat:m@{fake.url}/v1", system="S")
    c.chat("one")
    c.chat("two")
    sent = fake.requests[-1].body["messages"]
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "user"]
    assert sent[2]["content"] == "echo: one"


def test_one_shot_chat_helper(fake):
    assert aimu_ray.chat("hello", model=f"vllm:m@{fake.url}/v1") == "echo: hello"


def test_retry_after_is_honoured_then_succeeds(fake):
    fake.fault(status=429, retry_after=0.2)
    fake.reply(content="after the wait")
    assert aimu_ray.client(f"vllm:m@{fake.url}/v1").chat("x") == "after the wait"
    assert len([r for r in fake.requests if r.path.endswith("/chat/completions")]) == 2


def test_persistent_5xx_ends_in_a_typed_error(fake):
    for _ in range(3):
        fake.fault(status=500)
    with pytest.raises(errors.ProviderError) as info:
        aimu_ray.client(f"vllm:m@{fake.url}/v1", max_retries=2).chat("x")
    assert info.value.status_code == 500 and isinstance(info.value.__cause__, errors.UpstreamError)


def test_context_overflow_is_typed(fake):
    from tests.fakes import CONTEXT_LENGTH_EXCEEDED

    fake.fault(status=400, code=CONTEXT_LENGTH_EXCEEDED)
    with pytest.raises(errors.ContextOverflowError):
        anthropic(fake).chat("a very long prompt")


def test_hang_becomes_a_timeout_not_a_hang(fake):
    fake.fault(delay_s=5)
    fake.fault(delay_s=5)
    with pytest.raises(errors.ModelTimeoutError):
        aimu_ray.client(f"vllm:m@{fake.url}/v1", timeout=0.3, max_retries=1).chat("x")


def test_garbage_answer_is_a_protocol_error(fake):
    fake.fault(malformed=True)
    with pytest.raises(errors.ProviderResponseError):
        aimu_ray.client(f"vllm:m@{fake.url}/v1", max_retries=0).chat("x")


def test_refused_connection_is_a_connection_error():
    with pytest.raises(errors.ModelConnectionError):
        aimu_ray.client("vllm:m@http://127.0.0.1:9/v1", max_retries=0).chat("x")


async def test_aio_inside_a_running_loop_runs_conversations_concurrently(fake):
    fake.delay_s = 0.3
    clients = [aio.client(f"vllm:m@{fake.url}/v1") for _ in range(50)]
    answers = await asyncio.wait_for(asyncio.gather(*(c.chat(f"q{i}") for i, c in enumerate(clients))), 30)
    assert answers == [f"echo: q{i}" for i in range(50)]
    chunks = [ch async for ch in await clients[0].chat("more", stream=True)]
    assert "".join(ch.content for ch in chunks) == "echo: more"


@ray.remote
class CallerApp:
    """Another Ray app's actor using aimu_ray from its own event loop."""

    async def ask(self, url: str) -> tuple[str, int]:
        from aimu_ray import aio as aimu_aio

        c = aimu_aio.client(f"vllm:m@{url}/v1")
        await c.chat("from an actor")
        return c.messages[-1]["content"], len(c.messages)


def test_aio_inside_another_ray_actor(fake):
    app = CallerApp.remote()
    assert ray.get(app.ask.remote(fake.url), timeout=60) == ("echo: from an actor", 2)


def test_api_key_never_reaches_errors_or_worker_logs(fake):
    fake.fault(status=401, message=f"Incorrect API key provided: {SECRET}")
    with pytest.raises(errors.ProviderError) as info:
        anthropic(fake).chat("x")
    assert SECRET not in str(info.value) and SECRET not in str(info.value.__cause__)
    session = ray._private.worker._global_node.get_session_dir_path()
    leaked = [path for path in glob.glob(os.path.join(session, "logs", "*"))
              if os.path.isfile(path) and SECRET.encode() in open(path, "rb").read()]
    assert leaked == []
