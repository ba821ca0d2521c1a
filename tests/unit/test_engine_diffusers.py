"""The diffusers image engine on a tiny random-weight Stable Diffusion: outputs are noise, so the tests
check shapes, steps, seeds, batching and failures, never what the pictures show."""

from __future__ import annotations

import asyncio
import io
import threading
from contextlib import aclosing

import numpy as np
import pytest
import pytest_asyncio
from PIL import Image

from aimu_ray.engines.local.diffusers_image import DiffusersImageEngine
from aimu_ray.models.errors import ModelError
from aimu_ray.models.load import ModelLoad, Target
from aimu_ray.models.media import ImageProgress, ImageRequest, ImageResult

pytest_plugins = ["tests.fixtures.image_fixtures"]


def load(model_dir, **options) -> ModelLoad:
    return ModelLoad(provider="hf", task="image", model_id=str(model_dir), options=options)


def request(prompt: str = "a red square", **fields) -> ImageRequest:
    """64x64 in 2 steps unless said otherwise: the tiny model's size, and fast."""
    settings = {"width": 64, "height": 64, "num_inference_steps": 2, **fields}
    return ImageRequest(provider="hf", model="tiny", prompt=prompt, **settings)


def png(size: int, color=(200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buffer, format="PNG")
    return buffer.getvalue()


async def collect(engine, req: ImageRequest) -> tuple[list[ImageProgress], ImageResult]:
    items = [item async for item in engine.stream(req)]
    assert all(isinstance(item, ImageProgress) for item in items[:-1])
    assert isinstance(items[-1], ImageResult)
    return items[:-1], items[-1]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def engine(tiny_sd_dir):
    engine = DiffusersImageEngine(load(tiny_sd_dir), Target(device="cpu"))
    yield engine
    await engine.aclose()


async def test_images_are_rgb_uint8_arrays(engine):
    result = await engine.run(request())
    assert len(result.images) == 1 and result.total_steps == 2
    image = result.images[0]
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8


async def test_unset_size_is_the_pipelines_default(engine):
    result = await engine.run(request(width=None, height=None))
    assert result.images[0].shape == (64, 64, 3)     # the tiny UNet's sample size x the VAE's scale


async def test_num_images(engine):
    result = await engine.run(request(num_images=3))
    assert len(result.images) == 3
    assert not np.array_equal(result.images[0], result.images[1])


async def test_same_seed_same_pixels(engine):
    first, second, other = [await engine.run(request(seed=seed)) for seed in (3, 3, 4)]
    assert np.array_equal(first.images[0], second.images[0])
    assert not np.array_equal(first.images[0], other.images[0])


async def test_seeded_images_are_seed_plus_index(engine):
    """Image i of a request seeded s is the image a one-image request seeded s+i makes."""
    pair = await engine.run(request(seed=10, num_images=2))
    second = await engine.run(request(seed=11))
    assert np.abs(pair.images[1].astype(int) - second.images[0]).max() <= 1


async def test_concurrent_requests_with_equal_settings_share_a_call(engine, monkeypatch):
    seeded = request("a blue circle", seed=7, num_images=2)
    alone = await engine.run(seeded)

    gate = threading.Event()
    run = engine._run
    monkeypatch.setattr(engine, "_run", lambda batch: (gate.wait(), run(batch)))    # hold the worker
    before = engine.stats.calls, engine.stats.requests
    requests = [request("blocker", guidance_scale=1.0),             # settings nobody else has: runs alone
                seeded, request("a green cat", num_images=2), request("a dog", seed=1, num_images=2),
                request("a dog", num_images=2, guidance_scale=3.0)]  # differs in a setting: its own call
    tasks = [asyncio.create_task(engine.run(r)) for r in requests]
    await asyncio.sleep(0)                  # every task runs to its first await: all are queued
    gate.set()
    results = await asyncio.gather(*tasks)

    assert (engine.stats.calls - before[0], engine.stats.requests - before[1]) == (3, 5)
    assert [len(r.images) for r in results] == [1, 2, 2, 2, 2]
    # Batched kernels may round a float differently: allow one level of 255.
    assert all(np.abs(a.astype(int) - b).max() <= 1 for a, b in zip(results[1].images, alone.images))
    assert not np.array_equal(results[1].images[0], results[2].images[0])


async def test_batches_stay_within_max_batch_size(tiny_sd_dir):
    engine = DiffusersImageEngine(load(tiny_sd_dir, max_batch_size=4), Target())
    try:
        results = await asyncio.gather(*(engine.run(request(num_images=2)) for _ in range(5)))
        assert [len(r.images) for r in results] == [2] * 5
        assert engine.stats.calls >= 3 and engine.stats.images == 10
    finally:
        await engine.aclose()


async def test_stream_reports_each_step_then_the_result(engine):
    progress, result = await collect(engine, request(num_inference_steps=3))
    assert [(p.step, p.total_steps) for p in progress] == [(1, 3), (2, 3), (3, 3)]
    assert all(p.preview is None for p in progress)
    assert result.total_steps == 3


async def test_preview_every_decodes_every_kth_and_the_last_step(engine):
    progress, _ = await collect(engine, request(num_inference_steps=5, preview_every=2))
    assert [p.step for p in progress if p.preview is not None] == [2, 4, 5]
    preview = progress[1].preview
    assert preview.shape == (64, 64, 3) and preview.dtype == np.uint8


async def test_reference_image_runs_image_to_image_with_strength(engine):
    progress, result = await collect(engine, request(reference_image=png(32), num_inference_steps=4, strength=0.5))
    assert len(progress) == result.total_steps == 2          # strength 0.5 of 4 steps
    assert result.images[0].shape == (32, 32, 3)             # the reference's size: width/height are dropped

    default = await engine.run(request(reference_image=png(32), num_inference_steps=4))
    assert default.total_steps == 3                          # aimu's default strength 0.75


async def test_negative_prompt_is_passed(engine):
    plain = await engine.run(request(seed=5))
    negative = await engine.run(request(seed=5, negative_prompt="blurry"))
    assert not np.array_equal(plain.images[0], negative.images[0])


async def test_negative_prompt_refused_by_a_pipeline_without_one(engine, monkeypatch):
    class NoNegativePrompt:
        def __call__(self, prompt, num_images_per_prompt, generator, output_type, callback_on_step_end,
                     width=None, height=None, num_inference_steps=None, guidance_scale=None, **kwargs):
            raise AssertionError("must not be called")

    monkeypatch.setattr(engine, "_pipe", NoNegativePrompt())
    with pytest.raises(ValueError, match="NoNegativePrompt does not take negative_prompt"):
        await engine.run(request(negative_prompt="blurry"))


async def test_unknown_request_options_are_ignored(engine):
    result = await engine.run(request(options={"aspect_ratio": "16:9"}))
    assert len(result.images) == 1


async def test_bad_request_fails_as_value_error(engine):
    with pytest.raises(ValueError, match="divisible by 8") as caught:
        await engine.run(request(width=60))
    assert caught.value.__cause__ is not None
    assert len((await engine.run(request())).images) == 1   # the engine carries on


async def test_pipeline_failure_fails_its_batch_with_the_cause_chained(engine, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("CUDA out of memory (simulated)")

    monkeypatch.setattr(engine._pipe.unet, "forward", broken)
    with pytest.raises(ModelError, match="out of memory") as caught:
        await engine.run(request())
    assert isinstance(caught.value.__cause__, RuntimeError)


async def test_a_call_nobody_listens_to_stops_early(engine, monkeypatch):
    """The consumer leaves after step 1 while step 2 runs: the pipeline skips steps 3..20."""
    left, forwards = threading.Event(), []
    forward = engine._pipe.unet.forward

    def counted(*args, **kwargs):
        forwards.append(1)
        if len(forwards) == 2:
            left.wait()
        return forward(*args, **kwargs)

    monkeypatch.setattr(engine._pipe.unet, "forward", counted)
    async with aclosing(engine.stream(request(num_inference_steps=20))) as items:
        assert (await anext(items)).step == 1
    left.set()
    await engine.run(request(num_inference_steps=1))       # runs once the abandoned call has ended
    assert len(forwards) == 3                                    # steps 1 and 2, then the 1-step request


def test_unknown_pipeline_class_is_refused(tiny_sd_dir):
    with pytest.raises(ValueError, match="no pipeline class 'NoSuchPipeline'"):
        DiffusersImageEngine(load(tiny_sd_dir, pipeline_class="NoSuchPipeline"), Target())


async def test_named_pipeline_classes_and_dtype(tiny_sd_dir):
    options = {"pipeline_class": "StableDiffusionPipeline", "img2img_pipeline_class": "StableDiffusionImg2ImgPipeline",
               "model_kwargs": {"dtype": "float32"}}
    engine = DiffusersImageEngine(load(tiny_sd_dir, **options), Target())
    try:
        assert type(engine._pipe).__name__ == "StableDiffusionPipeline"
        result = await engine.run(request(reference_image=png(64)))
        assert type(engine._img2img).__name__ == "StableDiffusionImg2ImgPipeline"
        assert result.images[0].shape == (64, 64, 3)
    finally:
        await engine.aclose()


async def test_close_finishes_the_running_call_and_fails_the_waiting_ones(tiny_sd_dir, monkeypatch):
    engine = DiffusersImageEngine(load(tiny_sd_dir), Target())
    running, release = threading.Event(), threading.Event()
    run = engine._run
    monkeypatch.setattr(engine, "_run", lambda batch: (running.set(), release.wait(), run(batch)))
    first = asyncio.create_task(engine.run(request()))
    await asyncio.to_thread(running.wait)
    waiting = asyncio.create_task(engine.run(request(guidance_scale=1.0)))
    await asyncio.sleep(0)                  # queued behind the running call
    closing = asyncio.create_task(engine.aclose())
    await asyncio.sleep(0)                  # closed while the first call still runs
    release.set()
    await closing

    assert len((await first).images) == 1
    with pytest.raises(ModelError, match="closed before this request ran"):
        await waiting
    with pytest.raises(ModelError, match="is closed"):
        await engine.run(request())
