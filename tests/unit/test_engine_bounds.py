"""What one request can cost an in-process engine: a prompt sure to overflow is refused before it is tokenized,
and work whose caller went away stops within one token (HF text, MusicGen) or one step (diffusers audio).

A spy on the tokenizing call shows that it never ran; a hook held inside the model's forward pass shows where the
work stood when the caller left, so no test depends on timing.
"""

from __future__ import annotations

import asyncio
import threading
import tracemalloc
from contextlib import suppress

import pytest

from aimu_ray.engines.local.hf_text import HFTextEngine
from aimu_ray.models import ChatRequest, ContextOverflowError
from aimu_ray.models.load import ModelLoad, Target
from aimu_ray.models.media import AudioRequest
from tests.unit.engine_kit import loaded

pytest_plugins = ["tests.fixtures.pytest_fixtures", "tests.fixtures.audio_fixtures"]
pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")

GUARD_S = 60            # only against a hang
TINY_CONTEXT = 512      # the tiny Llama's position table
TINY_LONGEST = 13       # bytes of its longest token, "<|endoftext|>"


def chat(text: str, max_new_tokens: int = 4, **params) -> ChatRequest:
    return ChatRequest(provider="hf", model="tiny", messages=[{"role": "user", "content": text}],
                       params={"max_new_tokens": max_new_tokens, "do_sample": False, **params})


class Spy:
    """Wraps a callable and counts its calls."""

    def __init__(self, wrapped):
        self.wrapped, self.calls = wrapped, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.wrapped(*args, **kwargs)


class Held:
    """A forward hook that counts passes and holds the generation thread in pass ``at`` until released."""

    def __init__(self, module, at: int):
        self.passes, self.at = 0, at
        self.reached, self.release = threading.Event(), threading.Event()
        self._handle = module.register_forward_hook(self)

    def __call__(self, module, args, output):
        self.passes += 1
        if self.passes == self.at:
            self.reached.set()
            self.release.wait(GUARD_S)

    def remove(self) -> None:
        self.release.set()
        self._handle.remove()


# ----- HF text -----

@pytest.fixture(scope="module")
async def engine(tiny_hf_dir):
    engine = HFTextEngine(ModelLoad(provider="hf", task="text", model_id=str(tiny_hf_dir)), Target())
    yield engine
    await engine.aclose()


async def test_a_prompt_just_past_the_bound_is_refused_without_tokenizing(engine, monkeypatch):
    spy = Spy(engine._encode)
    monkeypatch.setattr(engine, "_encode", spy)
    with pytest.raises(ContextOverflowError, match=f"at least \\d+ tokens but .* at most {TINY_CONTEXT}"):
        await engine.run(chat("x" * (TINY_LONGEST * TINY_CONTEXT)))          # the template's text tips it over
    assert spy.calls == 0


async def test_a_prompt_the_bound_cannot_judge_is_tokenized_and_counted(engine, monkeypatch):
    spy = Spy(engine._encode)
    monkeypatch.setattr(engine, "_encode", spy)
    with pytest.raises(ContextOverflowError, match=f"is \\d+ tokens but .* at most {TINY_CONTEXT}"):
        await engine.run(chat("hello " * 600))                  # 3.6 kB: the bound says >= 277, the count 1,200
    assert spy.calls == 1
    assert (await engine.run(chat("hello"))).content is not None     # and a prompt that fits is answered


async def test_a_50_mb_scale_prompt_costs_no_tokenizing_and_a_few_copies_of_itself(engine, monkeypatch):
    """The issue's 50 MB body grew a replica to 16 GB; 5 MB (the same text, scaled down) now costs a few copies
    of the text (template rendering and its UTF-8 length) and no tokenizer work at all."""
    spy = Spy(engine._encode)
    monkeypatch.setattr(engine, "_encode", spy)
    text = "x " * (5 * 2**20 // 2)
    tracemalloc.start()
    try:
        with pytest.raises(ContextOverflowError, match="at least"):
            await asyncio.to_thread(engine._prepare, chat(text))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert spy.calls == 0
    assert peak < 8 * len(text), f"{peak / 2**20:.0f} MiB traced for a {len(text) / 2**20:.0f} MiB prompt"


async def test_a_closed_stream_stops_its_row_within_one_token(engine):
    tokens = engine.stats.tokens
    held = Held(engine._model, at=11)                  # the prompt's pass, then 10 tokens: hold the 11th
    try:
        items = engine.stream(chat("hello", max_new_tokens=300, min_new_tokens=300))
        await asyncio.wait_for(anext(items), GUARD_S)
        await asyncio.to_thread(held.reached.wait, GUARD_S)
        await items.aclose()                           # the caller leaves while token 11 is being made
    finally:
        held.remove()
    await engine.run(chat("hello", 1))                # runs once the closed row's batch has ended
    assert engine.stats.tokens - tokens <= 10 + 1      # 10 tokens made, then this request's one


# ----- llama.cpp -----

async def test_llama_cpp_refuses_a_prompt_past_the_bound_without_tokenizing(tiny_gguf_path, monkeypatch):
    engine = loaded(ModelLoad(provider="llamacpp", task="text", model_id="tiny",
                              options={"model_path": str(tiny_gguf_path), "n_ctx": 256}))
    try:
        spy = Spy(engine._llm.tokenize)
        monkeypatch.setattr(engine._llm, "tokenize", spy)
        request = ChatRequest(provider="llamacpp", model="tiny", params={"max_tokens": 4},
                              messages=[{"role": "user", "content": "x " * 2**20}])     # 2 MB
        with pytest.raises(ContextOverflowError, match="at least \\d+ tokens .* n_ctx=256"):
            await engine.run(request)
        assert spy.calls == 0
    finally:
        await engine.aclose()


# ----- audio: one token (MusicGen) or one step (diffusers) after the caller left -----

@pytest.mark.parametrize("folder, kind, module", [
    ("tiny_musicgen_dir", "musicgen", lambda model: model.model.decoder),
    ("tiny_audioldm2_dir", "audioldm2", lambda model: model.pipe.unet),
], ids=["musicgen", "audioldm2"])
async def test_audio_whose_caller_left_stops_within_one_token_or_step(request, folder, kind, module):
    engine = loaded(ModelLoad(provider="hf", task="audio", model_id=str(request.getfixturevalue(folder))))
    long = AudioRequest(provider="hf", model="tiny", prompt="drums", duration_s=30 if kind == "musicgen" else 0.2,
                        num_inference_steps=200, seed=0)
    held = Held(module(engine._model), at=3)
    try:
        task = asyncio.create_task(engine.run(long))
        await asyncio.to_thread(held.reached.wait, GUARD_S)
        task.cancel()                                  # the caller leaves during pass 3
        with suppress(asyncio.CancelledError):
            await task
        held.release.set()
        await asyncio.get_running_loop().run_in_executor(engine._worker, lambda: None)   # the abandoned work ended
        assert held.passes <= 3 + 1                    # pass 3 finished, at most one more began
    finally:
        held.remove()
        await engine.aclose()
