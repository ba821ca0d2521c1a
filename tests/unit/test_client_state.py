"""The client contract without Ray: message state, tool recording, streams, errors before requests.

The backend is a scripted in-memory double of the worker pool, so these tests pin what the client does
with requests and answers; the pool and the engines have their own tests.
"""

import base64
import logging

import pytest

from aimu_ray import aio, tool
from aimu_ray.models import ChatDelta, ChatResult, MissingAPIKeyError, ToolCall, Usage
from aimu_ray.clients.sync import TextClient, sync_twin
from aimu_ray.clients.requests import fold, served_model
from aimu_ray.clients.text import ServedTextClient
from aimu_ray.deployments.openai_api import ChatCompletionRequest


class ScriptedBackend:
    def __init__(self, *results):
        self.results = list(results)
        self.requests = []

    async def call(self, request):
        self.requests.append(request)
        return self.results.pop(0)

    async def stream(self, request):
        self.requests.append(request)
        for item in self.results.pop(0):
            yield item


def make(model="vllm:Qwen/Qwen3-8B", *results, **kwargs):
    backend = ScriptedBackend(*results)
    return aio.client(model, backend=backend, **kwargs), backend


async def test_chat_is_one_request_and_records_both_turns():
    c, backend = make("vllm:m", ChatResult(content="Hi!", usage=Usage(input_tokens=3, output_tokens=2,
                                                                       total_tokens=5), stop_reason="stop"),
                      system="Be brief.")
    assert await c.chat("hello") == "Hi!"
    assert [m["role"] for m in c.messages] == ["system", "user", "assistant"]
    assert all("timestamp" in m for m in c.messages)
    assert backend.requests[0].messages == [{"role": "system", "content": "Be brief."},
                                            {"role": "user", "content": "hello"}]
    assert c.last_usage == {"input_tokens": 3, "output_tokens": 2, "total_tokens": 5}
    assert c.last_stop_reason == "stop" and not c.last_output_truncated


async def test_inert_keys_are_stored_but_never_sent():
    c, backend = make("vllm:Qwen/Qwen3-8B", ChatResult(content="a", thinking="t"), ChatResult(content="b"))
    await c.chat("one")
    assert c.messages[-1]["thinking"] == "t" and c.last_thinking == "t"
    await c.chat("two")
    assert all(set(m) <= {"role", "content"} for m in backend.requests[1].messages)


async def test_system_message_setter_rewrites_in_place_and_reset_keeps_or_replaces():
    c, _ = make("vllm:m", ChatResult(content="x"))
    c.system_message = "first"
    await c.chat("hi")
    c.system_message = "second"
    assert c.messages[0]["content"] == "second"
    c.system_message = None
    assert c.messages[0]["role"] == "user"
    c.system_message = "third"
    assert c.messages[0] == {**c.messages[0], "role": "system", "content": "third"}
    c.reset()
    assert c.messages == [] and c.system_message == "third" and c.last_thinking is None
    c.reset(None)
    assert c.system_message is None


async def test_tool_calls_are_recorded_with_aimu_ids_and_not_executed():
    ran = []

    @tool
    def weather(city: str, unit: str = "C") -> str:
        """Current weather.

        Args:
            city: Where.
            unit: C or F.
        """
        ran.append(city)
        return "sunny"

    c, backend = make("vllm:Qwen/Qwen3-8B", ChatResult(tool_calls=[ToolCall(id="call_server", name="weather",
                                                                             arguments={"city": "Oslo"})],
                                                        stop_reason="tool_calls"))
    c.tools = [weather]
    assert await c.chat("weather?") == ""
    message = c.messages[-1]
    call = message["tool_calls"][0]
    assert call["function"] == {"name": "weather", "arguments": {"city": "Oslo"}}
    assert len(call["id"]) == 9 and call["id"] != "call_server" and "content" not in message
    assert c.last_tool_calls == [{"name": "weather", "arguments": {"city": "Oslo"}, "id": call["id"]}]
    assert ran == []
    spec = backend.requests[0].tools[0]["function"]
    assert spec["name"] == "weather" and spec["parameters"]["required"] == ["city"]
    assert spec["parameters"]["properties"]["city"] == {"type": "string", "description": "Where."}


async def test_anthropic_keeps_its_real_tool_ids(monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    c, _ = make("anthropic:claude-sonnet-4-6", ChatResult(tool_calls=[ToolCall(id="toolu_1", name="f")]))
    await c.chat("x", tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}])
    assert c.messages[-1]["tool_calls"][0]["id"] == "toolu_1"


async def test_per_call_tools_swap_and_use_tools_false():
    c, backend = make("vllm:Qwen/Qwen3-8B", ChatResult(content="a"), ChatResult(content="b"), ChatResult(content="c"))
    spec = {"type": "function", "function": {"name": "f", "parameters": {}}}
    c.tools = [spec]
    await c.chat("1", tools=[])
    await c.chat("2", use_tools=False)
    await c.chat("3")
    assert [len(r.tools) for r in backend.requests] == [0, 0, 1]
    assert c.tools == [spec]


async def test_bad_tool_is_a_clear_error():
    c, _ = make("vllm:Qwen/Qwen3-8B")
    with pytest.raises(ValueError, match="@aimu_ray.tool"):
        await c.chat("x", tools=[lambda: 1])


async def test_continuation_without_user_turn():
    c, backend = make("vllm:m", ChatResult(content="a"), ChatResult(content="b"))
    await c.chat("q")
    c.messages.append({"role": "tool", "name": "f", "content": "42", "tool_call_id": "abcdefghi"})
    await c.chat(None)
    assert [m["role"] for m in backend.requests[1].messages] == ["user", "assistant", "tool"]


async def test_generate_is_stateless():
    c, backend = make("vllm:m", ChatResult(content="g", thinking=""))
    c.system_message = "sys"
    assert await c.generate("p") == "g"
    assert c.messages == [] and backend.requests[0].messages == [{"role": "user", "content": "p"}]


async def test_stream_yields_phases_filters_include_and_folds_at_the_end():
    script = [ChatDelta(phase="thinking", text="hm"), ChatDelta(phase="generating", text="He"),
              ChatDelta(phase="generating", text="llo"),
              ChatResult(content="Hello", thinking="hm", usage=Usage(output_tokens=2), stop_reason="length")]
    c, _ = make("vllm:Qwen/Qwen3-8B", script, list(script))
    chunks = [ch async for ch in await c.chat("x", stream=True)]
    assert [(str(ch.phase), ch.content) for ch in chunks] == [("thinking", "hm"), ("generating", "He"),
                                                               ("generating", "llo")]
    assert chunks[0].is_text() and chunks[0].phase == "thinking"
    assert c.messages[-1]["content"] == "Hello" and c.last_output_truncated
    only = [ch async for ch in await c.chat("y", stream=True, include=["generating"])]
    assert [ch.content for ch in only] == ["He", "llo"]


async def test_user_turn_is_appended_eagerly_when_streaming():
    c, backend = make("vllm:m", [ChatResult(content="x")])
    stream = await c.chat("hi", stream=True)
    assert c.messages[-1]["content"] == "hi" and backend.requests == []
    _ = [ch async for ch in stream]
    assert len(backend.requests) == 1


async def test_images_become_openai_blocks_and_need_vision(tmp_path):
    png = tmp_path / "dot.png"
    png.write_bytes(b"\x89PNG fake")
    c, backend = make("vllm:llava-1.6;vision", ChatResult(content="ok"))
    await c.chat("what?", images=[png, b"raw", "https://x/y.png", "data:image/jpeg;base64,AAAA"])
    blocks = backend.requests[0].messages[0]["content"]
    urls = [b["image_url"]["url"] for b in blocks[1:]]
    assert blocks[0] == {"type": "text", "text": "what?"}
    assert urls[0] == "data:image/png;base64," + base64.b64encode(b"\x89PNG fake").decode()
    assert urls[1].startswith("data:image/png;base64,") and urls[2:] == ["https://x/y.png", "data:image/jpeg;base64,AAAA"]
    plain, _ = make("vllm:m")
    with pytest.raises(ValueError, match=";vision"):
        await plain.chat("x", images=[b"raw"])
    assert plain.messages == []


async def test_pil_images_are_encoded_as_png():
    from PIL import Image

    c, backend = make("vllm:m;vision", ChatResult(content="ok"))
    await c.generate("x", images=[Image.new("RGB", (2, 2))])
    url = backend.requests[0].messages[0]["content"][1]["image_url"]["url"]
    assert base64.b64decode(url.split(",", 1)[1]).startswith(b"\x89PNG")


async def test_invalid_thinking_fails_before_anything_changes():
    c, backend = make("vllm:Qwen/Qwen3-8B")
    with pytest.raises(ValueError, match="Invalid thinking"):
        await c.chat("x", thinking="max")
    assert c.messages == [] and backend.requests == []


async def test_dropped_caller_kwargs_warn_once_per_client(caplog):
    c, _ = make("openai:gpt-4.1", ChatResult(content="a"), ChatResult(content="b"), api_key="sk-test")
    with caplog.at_level(logging.WARNING, logger="aimu_ray"):
        await c.chat("1", generate_kwargs={"top_k": 3})
        await c.chat("2", generate_kwargs={"top_k": 3})
    assert sum("top_k" in r.message for r in caplog.records) == 1


def test_missing_cloud_key_is_named_before_any_request(monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    with pytest.raises(MissingAPIKeyError, match="ANTHROPIC_API_KEY"):
        aio.client("anthropic:claude-sonnet-4-6")


def test_key_never_shows_in_repr_or_request(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-value-123")
    c = aio.client("openai:gpt-4.1")
    assert "sk-secret" not in repr(c) and "sk-secret" not in repr(c.endpoint)


def test_endpoints_defaults_and_overrides(monkeypatch):
    monkeypatch.setenv("OLLAMA_HOST", "http://ollama-box:11434")
    assert aio.client("ollama:qwen3:8b").endpoint.base_url == "http://ollama-box:11434"
    assert aio.client("ollama:qwen3:8b", host="http://h:1").endpoint.base_url == "http://h:1"
    assert aio.client("vllm:m").endpoint.base_url == "http://localhost:8000/v1"
    assert aio.client("vllm:m@http://gpu-7:8000/v1").endpoint.base_url == "http://gpu-7:8000/v1"
    assert aio.client("lmstudio:m", base_url="http://b/v1").endpoint.base_url == "http://b/v1"
    with pytest.raises(ValueError, match="needs a URL"):
        aio.client("openai-compat:m")
    with pytest.raises(ValueError, match="ollama-openai"):
        aio.client("ollama:m@http://h:11434/v1")
    with pytest.raises(TypeError):
        aio.client("vllm:m", model_keep_alive_seconds=5)


@pytest.mark.parametrize("model, variable, default", [
    ("openai:gpt-4.1", "OPENAI_BASE_URL", "https://api.openai.com/v1"),
    ("anthropic:claude-sonnet-4-6", "ANTHROPIC_BASE_URL", "https://api.anthropic.com"),
])
async def test_the_sdks_base_url_variable_ranks_below_base_url_and_above_the_default(monkeypatch, model, variable,
                                                                                    default):
    assert make(model, api_key="sk-test")[0].endpoint.base_url == default
    monkeypatch.setenv(variable, "http://proxy:4000/v1")
    c, backend = make(model, ChatResult(content="ok"), api_key="sk-test")
    await c.chat("hi")
    assert backend.requests[0].endpoint.base_url == "http://proxy:4000/v1"
    assert make(model, api_key="sk-test", base_url="http://mine/v1")[0].endpoint.base_url == "http://mine/v1"
    with pytest.raises(ValueError, match="does not accept an @base_url"):     # no @url step for these providers
        aio.client(f"{model}@http://at/v1", api_key="sk-test")


def test_the_model_strings_url_ranks_above_the_variable(monkeypatch):
    monkeypatch.setenv("OLLAMA_HOST", "http://from-env:11434")
    assert aio.client("ollama:m@http://from-string:11434").endpoint.base_url == "http://from-string:11434"
    assert aio.client("ollama:m@http://from-string:11434", host="http://h:1").endpoint.base_url == "http://h:1"


def test_a_base_url_variable_applies_to_its_own_provider_only(monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", "http://proxy/v1")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "http://proxy")
    assert aio.client("vllm:m").endpoint.base_url == "http://localhost:8000/v1"
    assert aio.client("gemini:gemini-2.5-flash", api_key="k").endpoint.base_url.startswith("https://generative")
    with pytest.raises(ValueError, match="needs a URL"):
        aio.client("openai-compat:m")


def test_a_served_remote_model_reads_the_variable_on_its_replica(monkeypatch):
    from aimu_ray.deployments.config import ServedModel
    from aimu_ray.deployments.remote_models import _endpoint

    monkeypatch.setenv("OPENAI_BASE_URL", "http://replica-proxy/v1")
    monkeypatch.setenv("AIMU_RAY_TEST_KEY", "sk-test")
    plain = ServedModel(name="gpt", model="openai:gpt-4.1", api_key_env="AIMU_RAY_TEST_KEY")
    configured = plain.model_copy(update={"options": {"base_url": "http://configured/v1"}})
    assert _endpoint(plain.resolved(), plain).base_url == "http://replica-proxy/v1"
    assert _endpoint(configured.resolved(), configured).base_url == "http://configured/v1"


def served(model, *results):
    backend = ScriptedBackend(*results)
    return ServedTextClient(model, backend), backend


TOOL = {"type": "function", "function": {"name": "f", "parameters": {}}}


def test_a_served_client_reads_as_the_client_it_stands_for():
    c, _ = served("vllm:plain")
    assert repr(sync_twin(c)) == "TextClient('vllm:plain', messages=0)"


async def test_a_served_remote_model_takes_tools_images_and_thinking_and_asks_nothing_unasked():
    c, backend = served("vllm:plain", ChatResult(content="a"), ChatResult(content="b"))
    await c.chat("x", images=[b"raw"], tools=[TOOL], thinking="medium")
    asked = backend.requests[0]
    assert asked.tools[0]["function"]["name"] == "f" and asked.messages[0]["content"][1]["type"] == "image_url"
    assert asked.params["reasoning_effort"] == "medium"
    assert asked.params["extra_body"] == {"chat_template_kwargs": {"enable_thinking": True}}
    await c.chat("y")
    assert backend.requests[1].params == {"max_tokens": 4096, "temperature": 0.1}


@pytest.mark.parametrize("model", ["openai:gpt-4.1", "gemini:gemini-2.0-flash"])
async def test_a_served_cloud_model_gets_reasoning_effort_as_asked_and_nothing_unasked(model):
    c, backend = served(model, ChatResult(content="a"), ChatResult(content="b"))
    await c.chat("x", thinking="high")
    await c.chat("y")
    assert backend.requests[0].params["reasoning_effort"] == "high"
    assert "reasoning_effort" not in backend.requests[1].params


async def test_a_served_ollama_model_thinks_as_its_own_unless_asked():
    c, backend = served("ollama:llama3.1:8b", ChatResult(content="a"), ChatResult(content="b"))
    await c.chat("x")
    await c.chat("y", thinking="low")
    assert [request.params["think"] for request in backend.requests] == [False, "low"]


async def test_the_python_client_and_served_in_process_models_keep_aimus_checks(caplog):
    c, backend = make("vllm:plain", ChatResult(content="a"))
    with caplog.at_level(logging.WARNING, logger="aimu_ray"):
        await c.chat("x", tools=[TOOL], thinking="medium")
    assert backend.requests[0].tools == [] and "reasoning_effort" not in backend.requests[0].params
    assert "does not think" in caplog.text
    local, _ = served("hf:/models/plain")
    assert not local.is_tool_using_model
    with pytest.raises(ValueError, match=";vision"):
        await local.chat("x", images=[b"raw"])


@pytest.mark.parametrize("model", ["vllm:plain", "ollama:llama3.1:8b", "hf:/models/plain"])
async def test_an_http_body_builds_the_request_a_served_client_sends_and_folds_its_answer_alike(model):
    """The ingress has no client object: it calls the same request core, from the OpenAI body straight."""
    body = ChatCompletionRequest(model="m", max_tokens=7, stop="x", reasoning_effort="medium", tools=[TOOL], messages=[
        {"role": "developer", "content": "Be brief."}, {"role": "user", "content": "hi"},
        {"role": "assistant", "tool_calls": [{"id": "c1", "function": {"name": "f", "arguments": '{"a": [1]}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "ok"}])
    result = ChatResult(content="done", thinking="t", usage=Usage(input_tokens=1), stop_reason="tool_calls",
                        tool_calls=[ToolCall(id="x", name="f", arguments={"a": 2})])
    c, backend = served(model, result)
    c.messages = [message.as_aimu() for message in body.messages]
    await c.chat(None, generate_kwargs=body.generate_kwargs(), tools=[TOOL], thinking="medium")
    resolved = served_model(model)
    assert body.as_request(resolved, warn=lambda message: None) == backend.requests[0]
    answer = fold(result, resolved)
    assert (answer.content, answer.thinking, answer.usage, answer.stop_reason) == \
        ("done", c.last_thinking, c.last_usage, c.last_stop_reason)
    assert [call["arguments"] for call in answer.tool_calls] == [call["arguments"] for call in c.last_tool_calls]


async def test_ollama_keep_alive_reaches_params():
    c, backend = make("ollama:llama3.1:8b", ChatResult(content="x"), model_keep_alive_seconds=300)
    await c.chat("hi")
    assert backend.requests[0].params["keep_alive"] == 300


def test_default_model_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("AIMU_LANGUAGE_MODEL", "vllm:Qwen/Qwen3-8B@http://gpu:8000/v1")
    assert str(aio.client().model) == "vllm:Qwen/Qwen3-8B@http://gpu:8000/v1"
    monkeypatch.delenv("AIMU_LANGUAGE_MODEL")
    with pytest.raises(ValueError, match="AIMU_LANGUAGE_MODEL"):
        aio.client()


def test_sync_client_drives_the_async_one_and_shares_state():
    backend = ScriptedBackend(ChatResult(content="sync!"),
                              [ChatDelta(phase="generating", text="s"), ChatResult(content="s")])
    c = TextClient("vllm:m", backend=backend, system_message="S")
    assert c.chat("hi") == "sync!"
    assert [ch.content for ch in c.chat("more", stream=True)] == ["s"]
    assert len(c.messages) == 5 and c.aio.messages is c.messages
    c.default_generate_kwargs = {"seed": 7}
    assert c.aio.default_generate_kwargs == {"seed": 7}


def test_client_model_reads_as_aimus_model_does():
    model = aio.client("anthropic:claude-sonnet-4-6", api_key="sk-ant-x").model
    assert (model.value, model.name) == ("claude-sonnet-4-6", "claude-sonnet-4-6")
    assert model.supports_tools and model.supports_thinking and model.supports_structured_output
    local = aio.client("vllm:m@http://h:1/v1;tools").model
    assert local.supports_tools and not local.supports_vision and not local.supports_audio
    assert isinstance(local.generation_kwargs, dict) and isinstance(local.thinking_levels, tuple)


async def test_a_system_message_set_mid_conversation_is_inserted_as_aimu_does():
    client, _ = make("vllm:m", ChatResult(content="a", stop_reason="length"))
    await client.chat("hi")
    assert client.last_output_truncated is True
    client.last_output_truncated = False                 # a plain attribute in aimu: callers reset it
    assert client.last_output_truncated is False
    client.system_message = "Be brief."
    assert client.messages[0] == {"role": "system", "content": "Be brief."}
