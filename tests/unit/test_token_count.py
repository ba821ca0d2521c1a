"""Counting a prompt's tokens (``count_only``): the in-process engines on the real SmolLM2 count exactly what a
generation of the same messages takes in; Anthropic's own count through its loopback fake; the other remote providers
refuse, naming themselves; and Anthropic's ``count_tokens`` body becomes the request ``/v1/messages`` would send."""

from __future__ import annotations

import pytest
from llama_cpp.llama_chat_format import Jinja2ChatFormatter
from pydantic import ValidationError

from aimu_ray.clients.requests import served_model
from aimu_ray.deployments.anthropic_api import CountTokensRequest
from aimu_ray.engines import engine_class, protocol_of
from aimu_ray.hosts.core import HostCore
from aimu_ray.models import ChatRequest, Endpoint, ProviderError
from aimu_ray.models.load import ModelLoad
from aimu_ray.models.wire import TokenCount
from tests.unit.engine_kit import loaded

pytest_plugins = ["tests.fixtures.pytest_fixtures", "tests.fakes.fixtures"]
on_module_loop = pytest.mark.asyncio(loop_scope="module")   # the shared engines belong to the module's loop
KEY = "sk-test-count-5f2a"

ASKED = [{"role": "system", "content": "Answer in one word."},
         {"role": "user", "content": "What is the capital of France?"},
         {"role": "assistant", "content": "Paris."},
         {"role": "user", "content": "And of Norway?"}]
WEATHER = {"type": "function", "function": {"name": "weather", "description": "Weather in a city.",
                                            "parameters": {"type": "object",
                                                           "properties": {"city": {"type": "string"}}}}}
# ChatML that shows the model its tools (SmolLM2's own template leaves them out): a count that missed them would differ
TOOLS_TEMPLATE = ("{% if tools %}<|im_start|>system\nTools: {{ tools | tojson }}<|im_end|>\n{% endif %}"
                  "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
                  "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def counting(request: ChatRequest) -> ChatRequest:
    return request.model_copy(update={"count_only": True})


async def counted_and_generated(engine, request: ChatRequest) -> tuple[int, int]:
    """The count of the request's prompt, and the input tokens a generation of it reports."""
    count = await engine.run(counting(request))
    assert isinstance(count, TokenCount)
    return count.input_tokens, (await engine.run(request)).usage.input_tokens


# -- in-process: the exact count of what the model is fed --------------------------------------------------

@pytest.fixture(scope="module")
async def llama(smollm2_gguf_path):
    engine = loaded(ModelLoad(provider="llamacpp", task="text", model_id="smollm2",
                              options={"model_path": str(smollm2_gguf_path), "n_ctx": 1024}))
    yield engine
    await engine.aclose()


@pytest.fixture(scope="module")
async def llama_with_tools(smollm2_gguf_path):
    """SmolLM2 through a chat handler whose template renders the tools."""
    handler = Jinja2ChatFormatter(template=TOOLS_TEMPLATE, eos_token="<|im_end|>", bos_token="").to_chat_handler()
    engine = loaded(ModelLoad(provider="llamacpp", task="text", model_id="smollm2-tools",
                              options={"model_path": str(smollm2_gguf_path), "n_ctx": 1024,
                                       "chat_handler": handler}))
    yield engine
    await engine.aclose()


@pytest.fixture(scope="module")
async def hf(smollm2_hf_folder):
    engine = loaded(ModelLoad(provider="hf", task="text", model_id=str(smollm2_hf_folder)))
    yield engine
    await engine.aclose()


def llama_request(tools=(), **params) -> ChatRequest:
    return ChatRequest(provider="llamacpp", model="smollm2", messages=ASKED, tools=list(tools),
                       params={"max_tokens": 3, "temperature": 0, **params})


def hf_request(tools=(), **params) -> ChatRequest:
    return ChatRequest(provider="hf", model="smollm2", messages=ASKED, tools=list(tools),
                       params={"max_new_tokens": 3, "do_sample": False, **params})


@on_module_loop
async def test_llamacpp_counts_the_prompt_a_generation_takes_in(llama):
    count, generated = await counted_and_generated(llama, llama_request())
    assert count == generated > 20                     # the template's own tokens around four turns


@on_module_loop
async def test_llamacpp_counts_the_tools_its_chat_handler_renders(llama_with_tools):
    without, _ = await counted_and_generated(llama_with_tools, llama_request())
    count, generated = await counted_and_generated(llama_with_tools, llama_request([WEATHER]))
    assert count == generated and count > without + 10


@on_module_loop
async def test_llamacpp_counts_a_prompt_longer_than_its_window_instead_of_refusing_it(llama):
    long = [{"role": "user", "content": "hello world " * 600}]
    count = await llama.run(counting(llama_request().model_copy(update={"messages": long})))
    assert count.input_tokens > 1024


@on_module_loop
async def test_hf_counts_the_prompt_a_generation_takes_in(hf):
    count, generated = await counted_and_generated(hf, hf_request())
    assert count == generated > 20
    calls = hf.stats.generate_calls
    await hf.run(counting(hf_request()))
    assert hf.stats.generate_calls == calls            # a count queues nothing


@on_module_loop
async def test_hf_counts_the_tools_its_template_renders(hf, monkeypatch):
    monkeypatch.setattr(hf._tokenizer, "chat_template", TOOLS_TEMPLATE)
    without, _ = await counted_and_generated(hf, hf_request())
    count, generated = await counted_and_generated(hf, hf_request([WEATHER]))
    assert count == generated and count > without + 10


@on_module_loop
async def test_both_engines_count_the_same_prompt_alike(llama, hf):
    """One model, one template, two tokenizers (llama.cpp's and transformers'): the same count."""
    assert (await llama.run(counting(llama_request()))) == (await hf.run(counting(hf_request())))


@on_module_loop
async def test_a_count_through_a_host_is_timed_like_an_answer(llama):
    count = await HostCore("smollm2").run(llama, counting(llama_request()))
    assert count.input_tokens > 0 and count.engine_s > 0


# -- remote: the provider's own count, or a refusal --------------------------------------------------------

def remote(provider: str, model: str, base_url: str, **fields) -> ChatRequest:
    return ChatRequest(provider=provider, model=model, messages=ASKED, count_only=True,
                       endpoint=Endpoint(base_url=base_url, api_key=KEY, max_retries=1), **fields)


async def on_engine(request: ChatRequest):
    engine = engine_class(protocol_of(request.provider), "text")(request.endpoint)
    try:
        return await engine.run(request)
    finally:
        await engine.aclose()


async def test_anthropic_counts_with_its_own_endpoint(fake):
    request = remote("anthropic", "claude-test", fake.url, tools=[WEATHER],
                     params={"max_tokens": 100, "thinking": {"type": "enabled", "budget_tokens": 2048},
                             "extra_body": {"temperature": 0.5}, "stop_sequences": ["x"]})

    count = await on_engine(request)

    [sent] = fake.requests
    assert sent.path == "/v1/messages/count_tokens"
    assert KEY in (sent.headers.get("x-api-key"), sent.headers.get("authorization", "").removeprefix("Bearer "))
    assert set(sent.body) == {"model", "system", "messages", "tools", "thinking"}     # nothing sampled, no max_tokens
    assert sent.body["system"] == "Answer in one word." and [m["role"] for m in sent.body["messages"]] == [
        "user", "assistant", "user"]
    assert sent.body["tools"][0]["name"] == "weather" and "input_schema" in sent.body["tools"][0]
    assert count == TokenCount(input_tokens=fake_count(sent.body)) and count.input_tokens > 20


def fake_count(body: dict) -> int:
    from tests.fakes.wire.anthropic_messages import token_count
    return token_count(body)["input_tokens"]


async def test_anthropics_count_is_retried_and_its_refusal_typed(fake, fast_backoff):
    fake.fault(status=529)
    assert (await on_engine(remote("anthropic", "claude-test", fake.url))).input_tokens > 0
    fake.fault(status=400, message="messages: roles must alternate")
    with pytest.raises(ProviderError, match="roles must alternate"):
        await on_engine(remote("anthropic", "claude-test", fake.url))


@pytest.mark.parametrize("provider, model, path", [("openai", "gpt-test", "/v1"), ("lmstudio", "qwen", "/v1"),
                                                   ("ollama", "qwen3:8b", "")])
async def test_providers_without_a_counting_endpoint_refuse_by_name(fake, provider, model, path):
    with pytest.raises(ValueError, match=f"Provider '{provider}' has no token-counting endpoint"):
        await on_engine(remote(provider, model, fake.url + path))
    assert fake.requests == []                         # nothing guessed, nothing sent


# -- Anthropic's count_tokens body ----------------------------------------------------------------------------

def test_a_count_body_becomes_the_request_a_message_would_send_marked_to_be_counted():
    body = CountTokensRequest(model="smollm2", system="Answer in one word.", messages=[
        {"role": "user", "content": "hi"}], tools=[{"name": "weather", "input_schema": {"type": "object"}}],
        thinking={"type": "enabled", "budget_tokens": 4096})
    request = body.as_request(served_model("anthropic:claude-sonnet-4-5"), lambda said: None)
    assert request.count_only and request.messages == [{"role": "system", "content": "Answer in one word."},
                                                       {"role": "user", "content": "hi"}]
    assert request.tools[0]["function"]["name"] == "weather"
    assert request.params["thinking"] == {"type": "enabled", "budget_tokens": 4096}


def test_a_count_body_is_checked_as_a_message_body_is():
    with pytest.raises(ValidationError, match="max_tokens"):
        CountTokensRequest(model="m", messages=[{"role": "user", "content": "hi"}], max_tokens=5)
    body = CountTokensRequest(model="m", messages=[{"role": "user", "content": "hi"},
                                                   {"role": "assistant", "content": "Hel"}])
    with pytest.raises(ValueError, match="prefill"):
        body.as_request(served_model("hf:some/model"), lambda said: None)
