"""LlamaCppEngine on the tiny random-weight GGUF, and on a scripted stand-in for the replies it cannot produce."""

from __future__ import annotations

import asyncio
import json
from typing import ClassVar

import pytest

from aimu_ray.engines.local import llamacpp
from aimu_ray.engines.local.llamacpp import LlamaCppEngine, llama_kwargs
from aimu_ray.models import ChatDelta, ChatRequest, ChatResult, ContextOverflowError, ToolCall, Usage
from aimu_ray.models.load import ModelLoad, Target
from tests.unit.engine_kit import loaded

pytest_plugins = ["tests.fixtures.pytest_fixtures"]
on_module_loop = pytest.mark.asyncio(loop_scope="module")  # the shared engine's FIFO lock belongs to one loop

N_CTX = 256
HELLO = [{"role": "user", "content": "Hello, how are you?"}]


def load(model_path, **options) -> ModelLoad:
    return ModelLoad(provider="llamacpp", task="text", model_id="tiny",
                     options={"model_path": str(model_path), **options})


def ask(messages=HELLO, *, seed: int = 0, max_tokens: int = 8, **fields) -> ChatRequest:
    return ChatRequest(provider="llamacpp", model="tiny", messages=messages,
                       params={"max_tokens": max_tokens, "temperature": 0.8, "seed": seed}, **fields)


async def streamed(engine: LlamaCppEngine, request: ChatRequest) -> tuple[list[ChatDelta], ChatResult]:
    items = [item async for item in engine.stream(request)]
    assert all(isinstance(item, ChatDelta) for item in items[:-1]) and isinstance(items[-1], ChatResult)
    return items[:-1], items[-1]


@pytest.fixture(scope="module")
async def engine(tiny_gguf_path):
    engine = loaded(load(tiny_gguf_path, n_ctx=N_CTX))        # found as a host finds it
    yield engine
    await engine.aclose()


# -- answers -----------------------------------------------------------------------------------------------

@on_module_loop
async def test_chat_answers_with_usage_and_stop_reason(engine):
    result = await engine.run(ask())

    assert isinstance(result, ChatResult) and result.content and not result.thinking and not result.tool_calls
    assert result.usage.input_tokens > 0 and result.usage.output_tokens > 0     # llama.cpp may pass max_tokens
    assert result.usage.total_tokens == result.usage.input_tokens + result.usage.output_tokens
    assert result.stop_reason in ("length", "stop")


@on_module_loop
async def test_stream_yields_deltas_then_the_result(engine):
    deltas, result = await streamed(engine, ask())

    assert len(deltas) > 1 and {delta.phase for delta in deltas} == {"generating"}
    assert result.content == "".join(delta.text for delta in deltas)
    assert result.stop_reason in ("length", "stop")


async def answers(engine: LlamaCppEngine, seeds: range, concurrently: bool) -> list[str]:
    """The contents of a chat and a stream per seed, asked one after another or all at once."""
    calls = [call for seed in seeds for call in (engine.run(ask(seed=seed)), streamed(engine, ask(seed=seed)))]
    results = await asyncio.gather(*calls) if concurrently else [await call for call in calls]
    return [result.content if isinstance(result, ChatResult) else result[1].content for result in results]


@on_module_loop
async def test_concurrent_requests_take_turns_and_all_finish(engine):
    one_by_one = await answers(engine, range(3), concurrently=False)

    at_once = await asyncio.wait_for(answers(engine, range(3), concurrently=True), timeout=30)

    assert at_once == one_by_one                      # interleaved calls into llama.cpp would garble them


@on_module_loop
async def test_a_stream_closed_early_frees_the_model(engine):
    stream = engine.stream(ask(max_tokens=32))
    first = await anext(stream)
    await stream.aclose()

    assert isinstance(first, ChatDelta)
    assert (await asyncio.wait_for(engine.run(ask()), timeout=10)).content


# -- context window ------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("messages", "found_by"), [
    pytest.param([{"role": "user", "content": "hello world " * 200}], "about \\d+ tokens", id="pre-flight-estimate"),
    pytest.param([{"role": "user", "content": "hi"}] * 40, "exceed context window", id="llama-cpp-exact-count"),
])
@pytest.mark.parametrize("stream", [False, True])
@on_module_loop
async def test_a_prompt_longer_than_the_window_is_a_context_overflow(engine, messages, found_by, stream):
    with pytest.raises(ContextOverflowError, match=found_by) as caught:
        await (streamed(engine, ask(messages)) if stream else engine.run(ask(messages)))

    assert "n_ctx" in str(caught.value)                            # it says what to change
    assert (await engine.run(ask())).content                      # and the engine still answers


# -- loading ---------------------------------------------------------------------------------------------------

def test_model_path_is_required():
    with pytest.raises(ValueError, match="model_path"):
        LlamaCppEngine(ModelLoad(provider="llamacpp", task="text", model_id="tiny"), Target())


@pytest.mark.parametrize(("device", "given", "expected"), [("cuda", None, -1), ("cpu", None, 0), ("cuda", 10, 10)])
def test_gpu_layers_follow_placement_unless_given(device, given, expected):
    assert llama_kwargs(Target(device=device), model_path="m.gguf", n_gpu_layers=given)["n_gpu_layers"] == expected


def test_window_is_rounded_up_to_what_llama_cpp_allocates_and_model_kwargs_pass_through():
    kwargs = llama_kwargs(Target(), model_path="m.gguf", n_ctx=300, model_kwargs={"seed": 3, "n_batch": 64})

    assert (kwargs["n_ctx"], kwargs["seed"], kwargs["n_batch"]) == (512, 3, 64)


# -- replies the tiny model cannot give: thinking fields, <think> tags, tool calls -----------------------------

TOOL_REPLY = {
    "reasoning_content": "The user wants the time.",
    "content": "Let me check.",
    "tool_calls": [{"id": "call_1", "type": "function",
                    "function": {"name": "get_time", "arguments": json.dumps({"tz": "UTC"})}}],
}


class ScriptedLlama:
    """Stands in for ``llama_cpp.Llama``: answers ``message`` whole, or cut into chunks when streaming."""

    message: ClassVar[dict] = {}
    finish_reason: ClassVar[str] = "stop"

    def __init__(self, **kwargs):
        pass

    def reset(self):
        pass

    def n_ctx(self) -> int:
        return 4096

    def tokenize(self, text: bytes, add_bos: bool, special: bool) -> list[int]:
        return list(text)

    def close(self) -> None:
        pass

    def create_chat_completion(self, *, messages, tools, stream, **params):
        if not stream:
            return {"choices": [{"message": self.message, "finish_reason": self.finish_reason}],
                    "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}}
        return iter([*map(_chunk, _deltas(self.message)), _chunk({}, self.finish_reason)])


def _deltas(message: dict) -> list[dict]:
    """Every text field in two pieces; a tool call as its name, then its arguments in two fragments."""
    deltas = [{field: piece} for field in ("reasoning_content", "content") if message.get(field)
              for piece in _halves(message[field])]
    for index, call in enumerate(message.get("tool_calls", [])):
        deltas.append({"tool_calls": [{"index": index, "id": call["id"], "type": "function",
                                       "function": {"name": call["function"]["name"], "arguments": ""}}]})
        deltas += [{"tool_calls": [{"index": index, "function": {"arguments": piece}}]}
                   for piece in _halves(call["function"]["arguments"])]
    return deltas


def _halves(text: str) -> list[str]:
    return [text[: len(text) // 2], text[len(text) // 2:]]


def _chunk(delta: dict, finish_reason: str | None = None) -> dict:
    return {"choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]}


@pytest.fixture
def scripted(monkeypatch):
    """An engine over ``ScriptedLlama``, answering with ``message``."""
    monkeypatch.setattr(llamacpp.llama_cpp, "Llama", ScriptedLlama)
    monkeypatch.setattr(llamacpp, "longest_token_bytes", lambda llm: None)     # a stand-in has no vocabulary

    def build(message: dict, finish_reason: str = "stop") -> LlamaCppEngine:
        monkeypatch.setattr(ScriptedLlama, "message", message)
        monkeypatch.setattr(ScriptedLlama, "finish_reason", finish_reason)
        return LlamaCppEngine(load("scripted.gguf"), Target())

    return build


@pytest.mark.parametrize("stream", [False, True])
async def test_reasoning_field_and_tool_calls(scripted, stream):
    engine = scripted(TOOL_REPLY, finish_reason="tool_calls")

    deltas, result = await streamed(engine, ask()) if stream else ([], await engine.run(ask()))

    assert (result.thinking, result.content) == ("The user wants the time.", "Let me check.")
    assert result.tool_calls == [ToolCall(id="call_1", name="get_time", arguments={"tz": "UTC"})]
    assert result.stop_reason == "tool_calls"
    assert result.usage == (None if stream else Usage(input_tokens=12, output_tokens=5, total_tokens=17))
    if stream:
        assert [d.phase for d in deltas] == ["thinking", "thinking", "generating", "generating"]
    await engine.aclose()


@pytest.mark.parametrize("stream", [False, True])
async def test_think_tags_split_when_asked(scripted, stream):
    engine = scripted({"content": "<think>Time?</think>It is noon."})

    _, result = await streamed(engine, ask(parse_think_tags=True)) if stream else ([], await engine.run(
        ask(parse_think_tags=True)))

    assert (result.thinking, result.content) == ("Time?", "It is noon.")
    await engine.aclose()


# -- OpenAI's seed, stop and logprobs ------------------------------------------------------------------------

@on_module_loop
async def test_a_seed_repeats_a_sampled_answer_even_after_another_prompt(engine):
    first = (await engine.run(ask(seed=11, max_tokens=12))).content
    await engine.run(ask([{"role": "user", "content": "Something else entirely."}], seed=3))
    assert (await engine.run(ask(seed=11, max_tokens=12))).content == first


@on_module_loop
async def test_a_stop_string_ends_the_answer_before_it(engine):
    whole = (await engine.run(ask(seed=5, max_tokens=24))).content
    stop = whole[4:7]
    assert len(stop) == 3 and stop not in whole[:6]
    request = ask(seed=5, max_tokens=24)
    request.params["stop"] = [stop]
    result = await engine.run(request)
    assert result.content == whole[:whole.index(stop)] and result.stop_reason == "stop"


@on_module_loop
async def test_logprobs_need_a_model_loaded_with_logits_all(engine):
    request = ask()
    request.params.update(logprobs=True, top_logprobs=2)
    with pytest.raises(ValueError, match="logits_all"):
        await engine.run(request)


async def test_logprobs_of_a_model_loaded_with_logits_all(tiny_gguf_path):
    engine = loaded(load(tiny_gguf_path, n_ctx=N_CTX, model_kwargs={"logits_all": True}))
    try:
        request = ask(max_tokens=6)
        request.params.update(logprobs=True, top_logprobs=2)
        result = await engine.run(request)
        _, streamed_result = await streamed(engine, request)
    finally:
        await engine.aclose()
    assert len(result.logprobs) == result.usage.output_tokens
    assert all(token.logprob <= 0 and len(token.top_logprobs) == 2 for token in result.logprobs)
    assert [t.token for t in streamed_result.logprobs] == [t.token for t in result.logprobs]
