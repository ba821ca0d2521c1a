"""Images, audio and llama.cpp through their model actors on a local Ray, placed from the real survey.

No made-up inventory here: the registry surveys this machine with NVML (no GPU), so every model is
placed on the CPU with Ray's ``memory`` resource reserving its RAM. The same bytes must come back
through the actor as from the engine called in-process, seeds must repeat, and every output format
must round-trip. Gemini images go through the shared pool to the fake Gemini server.
"""

from __future__ import annotations

import asyncio
import base64
import io
from pathlib import Path

import numpy as np
import pytest
import soundfile
from PIL import Image

import aimu_ray
from aimu_ray import aio
from aimu_ray.engines.local.diffusers_image import DiffusersImageEngine
from aimu_ray.models.load import Target, load_for
from aimu_ray.models.media import ImageRequest

pytest_plugins = ["tests.fixtures.pytest_fixtures", "tests.fixtures.image_fixtures", "tests.fixtures.audio_fixtures",
                  "tests.fakes.fixtures"]
pytestmark = pytest.mark.usefixtures("local_ray")
RAY_INIT = {"num_cpus": 4}
GUARD_S = 120
IMAGE = {"num_inference_steps": 2, "seed": 7}
# Float sums depend on the kernels CPU BLAS picks for a thread count and a batch shape: the same seed gives
# pixels that differ in the last bits of the float, at most 2 of 255 levels after the VAE and rounding.
# Exact equality only where the computation is identical (same process, same batch shape).
PIXEL_LEVELS = 2


def pixels_close(a, b) -> bool:
    return np.abs(np.asarray(a).astype(int) - np.asarray(b).astype(int)).max() <= PIXEL_LEVELS


@pytest.fixture(scope="module")
async def unload_after_module():
    yield
    await aio.unload()


async def test_a_seeded_image_is_the_same_through_the_actor_as_in_process(tiny_sd_dir, unload_after_module):
    client = aio.image_client(f"hf:{tiny_sd_dir}")
    first = await asyncio.wait_for(client.generate("a red fox", format="bytes", **IMAGE), GUARD_S)
    again = await client.generate("a red fox", format="bytes", **IMAGE)
    assert first == again
    engine = DiffusersImageEngine(load_for("hf", "image", str(tiny_sd_dir), {}), Target())
    direct = (await engine.run(ImageRequest(provider="hf", model=str(tiny_sd_dir), prompt="a red fox",
                                                 **IMAGE))).images[0]
    await engine.aclose()
    # Ray gives the actor one CPU thread, this process has two.
    assert pixels_close(Image.open(io.BytesIO(first)).convert("RGB"), direct)
    [row] = [r for r in await aio.placements() if r.task == "image"]
    assert row.device == "cpu" and row.reserved_bytes > 0 and "memory resource" in row.reason


async def test_image_formats_and_distinct_paths_through_the_actor(tiny_sd_dir, tmp_path, unload_after_module):
    client = aio.image_client(f"hf:{tiny_sd_dir}")
    pil = await client.generate("fox", format="pil", **IMAGE)
    url = await client.generate("fox", format="data_url", **IMAGE)
    paths = await client.generate("fox", format="path", output_dir=tmp_path, num_images=2, **IMAGE)
    assert isinstance(pil, Image.Image) and url.startswith("data:image/png;base64,")
    assert len(set(paths)) == 2 and all(Path(p).parent == tmp_path and Path(p).is_file() for p in paths)
    decoded = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert np.array_equal(np.asarray(decoded), np.asarray(pil))
    assert pixels_close(Image.open(paths[0]), pil)      # seed s → first image, from a batch of two


async def test_image_stream_reports_each_step_then_one_final_per_image(tiny_sd_dir, unload_after_module):
    stream = await aio.image_client(f"hf:{tiny_sd_dir}").generate("fox", stream=True, num_images=2,
                                                                 format="bytes", **IMAGE)
    chunks = [chunk async for chunk in stream]
    assert all(c.is_image_progress() for c in chunks)
    progress = [c.content for c in chunks if not c.content["final"]]
    finals = [c.content for c in chunks if c.content["final"]]
    assert [p["step"] for p in progress] == [1, 2] and progress[0]["result"] is None
    assert [(f["image_index"], f["num_images"], f["step"]) for f in finals] == [(0, 2, 2), (1, 2, 2)]
    assert all(isinstance(f["result"], bytes) for f in finals)


async def test_audio_seed_repeats_and_formats_round_trip(tiny_musicgen_dir, tmp_path, unload_after_module):
    client = aio.audio_client(f"hf:{tiny_musicgen_dir}")
    rate, samples = await asyncio.wait_for(client.generate("calm piano", duration_s=0.2, seed=3, format="numpy"),
                                           GUARD_S)
    _, again = await client.generate("calm piano", duration_s=0.2, seed=3, format="numpy")
    assert np.array_equal(samples, again) and samples.ndim == 1
    wav = await client.generate("calm piano", duration_s=0.2, seed=3, format="bytes")
    decoded, wav_rate = soundfile.read(io.BytesIO(wav), dtype="float32")
    assert wav_rate == rate and np.allclose(decoded, samples, atol=1 / 2**15)
    paths = await client.generate("calm piano", duration_s=0.2, seed=3, num_audio=2, output_dir=tmp_path)
    assert len(set(paths)) == 2 and all(p.endswith(".wav") and Path(p).is_file() for p in paths)


async def test_diffusers_audio_streams_steps_through_the_actor(tiny_audioldm2_dir, unload_after_module):
    stream = await aio.audio_client(f"hf:{tiny_audioldm2_dir}").generate(
        "rain", duration_s=0.5, num_inference_steps=2, seed=1, format="numpy", stream=True)
    chunks = [chunk.content async for chunk in stream]
    assert [c["step"] for c in chunks if not c["final"]] == [1, 2]
    [final] = [c for c in chunks if c["final"]]
    assert final["duration_s"] > 0 and final["result"][1].ndim == 1


async def test_llamacpp_chats_and_streams_through_its_actor(tiny_gguf_path, unload_after_module):
    client = aio.client("llamacpp:tiny", model_path=str(tiny_gguf_path), chat_format="chatml")
    answer = await asyncio.wait_for(client.chat("hello", generate_kwargs={"max_tokens": 8}), GUARD_S)
    assert isinstance(answer, str) and client.messages[-1]["role"] == "assistant"
    stream = await client.chat("more", stream=True, generate_kwargs={"max_tokens": 8})
    chunks = [chunk async for chunk in stream]
    assert all(c.is_text() for c in chunks)
    assert "".join(c.content for c in chunks) == client.messages[-1]["content"]


def test_sync_generate_image_and_audio(tiny_sd_dir, tiny_musicgen_dir, tmp_path):
    image = aimu_ray.generate_image("fox", model=f"hf:{tiny_sd_dir}", **IMAGE)
    assert isinstance(image, Image.Image)
    path = aimu_ray.generate_audio("piano", model=f"hf:{tiny_musicgen_dir}", duration_s=0.2, output_dir=tmp_path)
    assert Path(path).suffix == ".wav" and Path(path).parent == tmp_path
    chunks = list(aimu_ray.generate_image("fox", model=f"hf:{tiny_sd_dir}", stream=True, **IMAGE))
    assert chunks[-1].content["final"]


async def test_gemini_images_run_on_the_pool_against_the_fake(fake):
    client = aio.image_client("gemini:nano-banana", base_url=fake.url, model_kwargs={"api_key": "sk-test"})
    images = await asyncio.wait_for(client.generate("a fox", num_images=2, format="pil"), GUARD_S)
    assert len(images) == 2 and all(isinstance(i, Image.Image) for i in images)
    assert [r.path for r in fake.requests] == ["/v1beta/models/gemini-2.5-flash-image:generateContent"] * 2
