"""HFTextEngine on the tiny random Llama: answers, streams, batching, early close and failures.

The model writes noise, so tests assert shapes, counts and equalities, never words. Timing never
decides a test: where an order of events matters, the generation thread is held inside the model's
forward pass (``paused``) until the test has seen what it needs.
"""

from __future__ import annotations

import asyncio
import base64
import io
import itertools
import threading
from contextlib import contextmanager
from pathlib import Path

import pytest

from aimu_ray.adapters.hf import hf_messages
from aimu_ray.engines.local.hf_text import HFTextEngine, IncrementalDecoder, model_kwargs
from aimu_ray.models import ChatDelta, ChatRequest, ChatResult, ContextOverflowError, ModelError
from aimu_ray.models.load import ModelLoad, Target

pytest_plugins = ["tests.fixtures.pytest_fixtures"]

GUARD_S = 60          # only against a hang: no test waits this long when the engine works


@pytest.fixture(scope="module")
async def engine(tiny_hf_dir):
    engine = HFTextEngine(ModelLoad(provider="hf", task="text", model_id=str(tiny_hf_dir)), Target())
    yield engine
    await engine.aclose()


def request(max_new_tokens: int = 8, text: str | list[dict] = "hello world", **fields) -> ChatRequest:
    params = {"max_new_tokens": max_new_tokens, "do_sample": False, **fields.pop("params", {})}
    return ChatRequest(provider="hf", model="tiny", messages=[{"role": "user", "content": text}], params=params,
                       **fields)


@contextmanager
def paused(engine: HFTextEngine, after: int = 0):
    """Hold the generation thread in the model's forward pass after ``after`` passes, until released."""
    release, passes = threading.Event(), itertools.count()

    def hook(module, args, output):
        if next(passes) >= after:
            release.wait(GUARD_S)

    handle = engine._model.register_forward_hook(hook)
    try:
        yield release
    finally:
        release.set()
        handle.remove()


async def until(condition) -> None:
    for _ in range(GUARD_S * 100):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition never became true")


async def in_one_batch(engine: HFTextEngine, requests: list[ChatRequest]) -> list[ChatResult]:
    """Run ``requests`` concurrently, queued behind a held request, so that they form one batch."""
    with paused(engine) as release:
        calls = engine.stats.generate_calls
        blocker = asyncio.create_task(engine.run(request(2)))
        await until(lambda: engine.stats.generate_calls == calls + 1)
        tasks = [asyncio.create_task(engine.run(r)) for r in requests]
        await until(lambda: engine.stats.waiting == len(requests))
        release.set()
        await blocker
        results = await asyncio.gather(*tasks)
    assert engine.stats.generate_calls == calls + 2
    return results


async def test_chat_returns_text_usage_and_length(engine):
    result = await engine.run(request(8))
    assert isinstance(result.content, str) and result.content
    assert result.usage.output_tokens == 8 and result.usage.input_tokens > 0
    assert result.usage.total_tokens == result.usage.input_tokens + 8
    assert result.stop_reason == "length" and result.tool_calls == []


async def test_stream_yields_deltas_then_the_result(engine):
    items = [item async for item in engine.stream(request(8))]
    *deltas, result = items
    assert deltas and all(isinstance(d, ChatDelta) and d.phase == "generating" for d in deltas)
    assert isinstance(result, ChatResult)
    assert result.content == "".join(d.text for d in deltas) == (await engine.run(request(8))).content


async def test_stream_is_incremental(engine):
    with paused(engine, after=20) as release:          # held at pass 21 of 60: generation cannot have ended
        items = engine.stream(request(60, params={"min_new_tokens": 60}))
        first = await asyncio.wait_for(anext(items), GUARD_S)
        assert isinstance(first, ChatDelta)
        release.set()
        rest = [item async for item in items]
    assert rest[-1].usage.output_tokens == 60


async def test_concurrent_chats_share_generate_calls_and_keep_their_own_lengths(engine):
    rows = engine.stats.rows
    results = await in_one_batch(engine, [request(n, "hello " * n, params={"min_new_tokens": 8})
                                          for n in range(1, 9)])
    assert engine.stats.rows == rows + 9
    assert [r.usage.output_tokens for r in results] == list(range(1, 9))
    assert {r.stop_reason for r in results} == {"length"}


async def test_a_batch_of_greedy_requests_answers_as_each_alone(engine):
    requests = [request(12, text) for text in ("hi", "hello world, how are you today?", "the quick brown fox")]
    alone = [await engine.run(r) for r in requests]
    batched = await in_one_batch(engine, requests)
    assert [r.content for r in batched] == [r.content for r in alone]
    assert [r.usage for r in batched] == [r.usage for r in alone]


async def test_closing_a_stream_early_stops_its_row(engine):
    tokens = engine.stats.tokens
    with paused(engine, after=10) as release:
        items = engine.stream(request(300, params={"min_new_tokens": 300}))
        await asyncio.wait_for(anext(items), GUARD_S)
        await items.aclose()
        release.set()
    await engine.run(request(2))                      # runs once the closed row's batch has ended
    assert engine.stats.tokens - tokens < 300


async def test_a_prompt_longer_than_the_context_is_refused(engine):
    with pytest.raises(ContextOverflowError, match="at most 512"):
        await engine.run(request(4, "hello " * 600))


@pytest.mark.parametrize("params, match", [
    ({"bogus_knob": 1}, "bogus_knob"),
    ({"num_return_sequences": 2}, "num_return_sequences"),
    ({"max_new_tokens": 0}, "max_new_tokens"),
])
async def test_bad_parameters_are_value_errors(engine, params, match):
    with pytest.raises(ValueError, match=match):
        await engine.run(request(params=params))


async def test_repeat_penalty_and_beam_search_are_accepted(engine):
    result = await engine.run(request(4, params={"repeat_penalty": 1.1, "num_beams": 2}))
    assert 0 < result.usage.output_tokens <= 4


async def test_a_generation_failure_fails_its_batch_and_the_engine_serves_on(engine):
    def broken(module, args, output):
        raise RuntimeError("device fell over")

    handle = engine._model.register_forward_hook(broken)
    try:
        with pytest.raises(ModelError, match="device fell over") as caught:
            await engine.run(request(4))
    finally:
        handle.remove()
    assert isinstance(caught.value.__cause__, RuntimeError)
    assert (await engine.run(request(4))).usage.output_tokens == 4


async def test_a_prompt_that_opens_think_makes_the_answer_thinking(engine):
    template = engine._tokenizer.chat_template
    engine._tokenizer.chat_template = template + "{% if enable_thinking %}<think>\n{% endif %}"
    try:
        thinking = await engine.run(request(8, parse_think_tags=True))
        off = await engine.run(request(8, parse_think_tags=True,
                                        params={"chat_template_kwargs": {"enable_thinking": False}}))
    finally:
        engine._tokenizer.chat_template = template
    assert thinking.thinking and thinking.content == ""      # the block never closed: all of it is thinking
    assert off.content and off.thinking == ""


def test_incremental_decoding_waits_for_a_whole_character(engine):
    tokenizer = engine._tokenizer
    ids = tokenizer.encode("é", add_special_tokens=False)
    assert len(ids) == 2                               # the tiny tokenizer never saw é: two byte tokens
    decoder = IncrementalDecoder(tokenizer)
    assert [decoder.push([ids[0]]), decoder.push([ids[1]]), decoder.flush()] == ["", "é", ""]


def test_model_kwargs_follow_aimus_rule():
    assert model_kwargs(None, Target()) == {"dtype": "auto"}
    assert model_kwargs(None, Target(device="cuda")) == {"dtype": "auto", "device_map": "cuda"}
    assert model_kwargs(None, Target(device="cuda", device_map="auto")) == {"dtype": "auto", "device_map": "auto"}
    assert model_kwargs({"dtype": "float32"}, Target()) == {"dtype": "float32"}                # replaces
    assert model_kwargs({"dtype": "float32"}, Target(device="cuda")) == {"dtype": "float32", "device_map": "cuda"}
    assert model_kwargs({"device_map": "auto"}, Target(device="cuda")) == {"device_map": "auto"}


def png_data_url() -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (4, 3), "red").save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def test_messages_for_a_processor_carry_images_as_placeholders():
    messages = [{"role": "user", "content": [{"type": "text", "text": "What is this?"},
                                             {"type": "image_url", "image_url": {"url": png_data_url()}}]}]
    converted, images = hf_messages(messages, vision=True)
    assert converted[0]["content"] == [{"type": "text", "text": "What is this?"}, {"type": "image"}]
    assert [image.size for image in images] == [(4, 3)]


def build_tiny_llava(text_model: Path, out: Path) -> Path:
    """A tiny Llava (a CLIP vision tower on a Llama) with a processor, built offline: the image path for real."""
    import torch
    from transformers import (AutoTokenizer, CLIPImageProcessorPil, CLIPVisionConfig, LlamaConfig, LlavaConfig,
                              LlavaForConditionalGeneration, LlavaProcessor)

    tokenizer = AutoTokenizer.from_pretrained(text_model)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    template = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{% if m.content is string %}{{ m.content }}"
                "{% else %}{% for p in m.content %}{{ '<image>' if p.type == 'image' else p.text }}{% endfor %}"
                "{% endif %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    processor = LlavaProcessor(image_processor=CLIPImageProcessorPil(size={"shortest_edge": 16},
                                                                     crop_size={"height": 16, "width": 16}),
                               tokenizer=tokenizer, patch_size=8, vision_feature_select_strategy="default",
                               num_additional_image_tokens=1, chat_template=template)
    text = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                       eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                              image_size=16, patch_size=8)
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(LlavaConfig(
        vision_config=vision, text_config=text, image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_select_strategy="default", vision_feature_layer=-1))
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    processor.save_pretrained(out)
    model.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
async def vision_engine(tiny_hf_dir, tmp_path_factory):
    folder = build_tiny_llava(tiny_hf_dir, tmp_path_factory.mktemp("tiny-llava"))
    engine = HFTextEngine(ModelLoad(provider="hf", task="text", model_id=str(folder)), Target())
    yield engine
    await engine.aclose()


async def test_a_vision_model_reads_images(vision_engine):
    question = [{"type": "text", "text": "What is this?"}]
    looked, read = await asyncio.gather(*(vision_engine.run(request(4, content)) for content in (
        [*question, {"type": "image_url", "image_url": {"url": png_data_url()}}], question)))
    assert looked.usage.output_tokens == read.usage.output_tokens == 4
    assert looked.usage.input_tokens > read.usage.input_tokens       # the image became prompt tokens


def test_messages_for_a_text_model():
    messages = [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
                {"role": "assistant", "tool_calls": [{"type": "function", "id": "x1",
                                                      "function": {"name": "now", "arguments": '{"tz": "UTC"}'}}]}]
    converted, images = hf_messages(messages, vision=False)
    assert converted[0]["content"] == "a\nb" and images == []
    assert converted[1]["content"] == "" and converted[1]["tool_calls"][0]["function"]["arguments"] == {"tz": "UTC"}
    with pytest.raises(ValueError, match="text only"):
        hf_messages([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x.png"}}]}],
                    vision=False)


async def test_a_closed_engine_fails_running_and_new_requests(tiny_hf_dir):
    engine = HFTextEngine(ModelLoad(provider="hf", task="text", model_id=str(tiny_hf_dir)), Target())
    with paused(engine) as release:
        running = asyncio.create_task(engine.run(request(50)))
        await until(lambda: engine.stats.generate_calls == 1)
        closing = asyncio.create_task(engine.aclose())
        with pytest.raises(ModelError, match="closed while this request ran"):
            await running
        release.set()
        await closing
    with pytest.raises(ModelError, match="closed"):
        await engine.run(request(2))


async def test_batches_hold_equal_settings_up_to_max_batch_size(tiny_hf_dir):
    load = ModelLoad(provider="hf", task="text", model_id=str(tiny_hf_dir), options={"max_batch_size": 2})
    engine = HFTextEngine(load, Target())
    sampled = request(3, params={"do_sample": True, "temperature": 0.7})
    try:
        with paused(engine) as release:
            blocker = asyncio.create_task(engine.run(request(2)))
            await until(lambda: engine.stats.generate_calls == 1)
            tasks = []
            for r in (request(3), request(4), sampled, request(5), request(6)):   # queued in this order
                tasks.append(asyncio.create_task(engine.run(r)))
                await until(lambda: engine.stats.waiting == len(tasks))
            release.set()
            await asyncio.gather(blocker, *tasks)
        assert (engine.stats.generate_calls, engine.stats.rows) == (4, 6)    # [2 greedy], [sampled], [2 greedy]
    finally:
        await engine.aclose()


@pytest.mark.parametrize("wait_s, generate_calls", [(1.0, 1), (0.0, 2)])
async def test_an_idle_engine_waits_its_window_so_that_a_burst_shares_one_batch(tiny_hf_dir, wait_s, generate_calls):
    load = ModelLoad(provider="hf", task="text", model_id=str(tiny_hf_dir), options={"batch_wait_timeout_s": wait_s})
    engine = HFTextEngine(load, Target())
    try:
        first = asyncio.create_task(engine.run(request(8)))
        await asyncio.sleep(0.02)                    # the second request of the burst comes 20 ms later
        second = asyncio.create_task(engine.run(request(8)))
        await asyncio.wait_for(asyncio.gather(first, second), GUARD_S)
        assert (engine.stats.generate_calls, engine.stats.rows) == (generate_calls, 2)
    finally:
        await engine.aclose()


# ----- OpenAI's seed, stop, logprobs and logit_bias -----

SAMPLED = {"do_sample": True, "temperature": 1.0, "top_k": 0}


async def test_a_seed_repeats_a_sampled_answer_and_runs_in_a_batch_of_its_own(engine):
    seeded = [request(12, params={**SAMPLED, "seed": seed}) for seed in (7, 7, 8)]
    calls = engine.stats.generate_calls
    first, again, other = await asyncio.gather(*(engine.run(r) for r in seeded))
    assert first.content == again.content and first.content != other.content
    assert engine.stats.generate_calls == calls + 3


async def test_a_stop_string_ends_the_answer_before_it_in_run_and_stream(engine):
    whole = await engine.run(request(16))
    stop = whole.content[3:6]
    assert len(stop) == 3 and stop not in whole.content[:3]   # the noise must hold it past its start
    result = await engine.run(request(16, params={"stop": ["never there", stop]}))
    assert result.content == whole.content[:whole.content.index(stop)] and result.stop_reason == "stop"
    items = [item async for item in engine.stream(request(16, params={"stop": stop}))]
    assert "".join(item.text for item in items if isinstance(item, ChatDelta)) == result.content
    assert result.usage.output_tokens <= whole.usage.output_tokens


def test_stop_strings_hold_back_text_that_may_start_one():
    from aimu_ray.engines.local.hf_text import StopStrings

    stops = StopStrings(["END"])
    assert [stops.push("abc E"), stops.push("N"), stops.push("x")] == ["abc ", "", "ENx"]
    assert (stops.push("tail E", final=True), stops.hit) == ("tail E", False)
    assert (stops.push("a EN"), stops.push("D b"), stops.hit) == ("a ", "", True)


async def test_logprobs_name_each_generated_token_with_its_alternatives(engine):
    result = await engine.run(request(6, params={"logprobs": True, "top_logprobs": 3}))
    assert len(result.logprobs) == result.usage.output_tokens
    for token in result.logprobs:
        assert token.logprob <= 0 and len(token.top_logprobs) == 3
        assert token.logprob == max(top.logprob for top in token.top_logprobs)     # greedy takes the likeliest
        assert bytes(token.bytes).decode(errors="backslashreplace") == token.token
    assert bytes(b for token in result.logprobs for b in token.bytes).decode(errors="replace") == result.content
    plain = await engine.run(request(6, params={"logprobs": True}))
    assert plain.logprobs[0].top_logprobs == [] and (await engine.run(request(6))).logprobs is None


async def test_logit_bias_is_honoured_as_sequence_bias(engine):
    whole = await engine.run(request(4, params={"logprobs": True}))
    banned = whole.logprobs[0].bytes
    first = engine._tokenizer(bytes(banned).decode(), add_special_tokens=False)["input_ids"][0]
    biased = await engine.run(request(4, params={"logprobs": True, "logit_bias": {str(first): -100}}))
    assert biased.logprobs[0].bytes != banned
