"""HFAudioEngine on the three tiny random-weight audio models: MusicGen, AudioLDM2 and Stable Audio."""

from __future__ import annotations

import asyncio
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from aimu_ray.engines.local.hf_audio import HFAudioEngine, _step_callback, resolve_pipeline_type
from aimu_ray.models.load import ModelLoad, Target
from aimu_ray.models.media import AudioProgress, AudioRequest, AudioResult
from tests.unit.engine_kit import loaded

pytest_plugins = ["tests.fixtures.audio_fixtures"]
pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")   # deprecations inside diffusers and transformers

DURATION_S = 0.2
STEPS = 2


@dataclass(frozen=True)
class Kind:
    pipeline_type: str
    folder_fixture: str
    sample_rate: int
    channels: int | None                # None: mono, shaped (n,)


KINDS = [
    Kind("musicgen", "tiny_musicgen_dir", 24000, None),     # the tiny codec's rate: read from config, not aimu's 32 kHz
    Kind("audioldm2", "tiny_audioldm2_dir", 16000, None),
    Kind("stable_audio", "tiny_stable_audio_dir", 256, 2),
]


@dataclass(frozen=True)
class Loaded:
    kind: Kind
    folder: Path
    engine: HFAudioEngine


@pytest.fixture(scope="module", params=KINDS, ids=lambda kind: kind.pipeline_type)
def model(request) -> Loaded:
    """Each tiny model loaded once per module, its type detected from its folder."""
    kind, folder = request.param, request.getfixturevalue(request.param.folder_fixture)
    engine = loaded(ModelLoad(provider="hf", task="audio", model_id=str(folder)))    # as a host finds it
    yield Loaded(kind, folder, engine)
    asyncio.run(engine.aclose())


def ask(*, seed: int = 0, num_audio: int = 1, steps: int = STEPS) -> AudioRequest:
    return AudioRequest(provider="hf", model="tiny", prompt="calm piano with drums", duration_s=DURATION_S,
                        num_inference_steps=steps, num_audio=num_audio, seed=seed)


def expected_samples(model: Loaded) -> int:
    """Diffusers cut their output to the duration. MusicGen is asked for ``int(duration * frame_rate)`` tokens,
    as aimu does, and makes one codec frame per token after the first ``num_codebooks - 1`` (its delay pattern)."""
    if model.kind.pipeline_type != "musicgen":
        return int(DURATION_S * model.kind.sample_rate)
    config = json.loads((model.folder / "config.json").read_text())
    hop = math.prod(config["audio_encoder"]["upsampling_ratios"])
    tokens = int(DURATION_S * model.kind.sample_rate / hop)
    return (tokens - config["decoder"]["num_codebooks"] + 1) * hop


async def test_the_type_is_detected_from_the_folder(model):
    assert model.engine.pipeline_type == model.kind.pipeline_type


async def test_clips_have_the_models_rate_channels_and_the_asked_length(model):
    result = await model.engine.run(ask(num_audio=2))

    assert isinstance(result, AudioResult) and len(result.clips) == 2
    channels = () if model.kind.channels is None else (model.kind.channels,)
    for clip in result.clips:
        assert clip.sample_rate == model.kind.sample_rate and clip.samples.dtype == np.float32
        assert clip.samples.shape == (*channels, expected_samples(model))
        assert np.isfinite(clip.samples).all()


async def test_a_seed_makes_the_same_clip_on_either_path(model):
    engine = model.engine

    generated = await engine.run(ask(seed=3))
    streamed = [item async for item in engine.stream(ask(seed=3))][-1]
    other = await engine.run(ask(seed=4))

    assert np.array_equal(generated.clips[0].samples, streamed.clips[0].samples)
    assert not np.array_equal(generated.clips[0].samples, other.clips[0].samples)


async def test_stream_reports_each_denoising_step_then_the_result(model):
    items = [item async for item in model.engine.stream(ask(steps=3))]

    *progress, result = items
    assert isinstance(result, AudioResult) and len(result.clips) == 1
    if model.kind.pipeline_type == "musicgen":                    # autoregressive: nothing to report on the way
        assert progress == [] and result.total_steps == 1
    else:
        assert progress == [AudioProgress(step=k, total_steps=3, duration_s=DURATION_S) for k in (1, 2, 3)]
        assert result.total_steps == 3


async def test_concurrent_requests_take_turns_and_all_finish(model):
    engine = model.engine

    results = await asyncio.wait_for(asyncio.gather(*(engine.run(ask(seed=s)) for s in range(3))), timeout=60)

    alone = await engine.run(ask(seed=2))
    assert np.array_equal(results[2].clips[0].samples, alone.clips[0].samples)


async def test_a_stream_closed_early_leaves_the_engine_ready(model):
    engine = model.engine
    stream = engine.stream(ask(steps=50))

    first = await anext(stream)
    await stream.aclose()

    assert isinstance(first, AudioProgress | AudioResult)
    assert len((await asyncio.wait_for(engine.run(ask()), timeout=30)).clips) == 1


@pytest.mark.parametrize(("model_id", "expected"), [
    ("facebook/musicgen-small", "musicgen"),
    ("cvssp/audioldm2", "audioldm2"),
    ("stabilityai/stable-audio-open-1.0", "stable_audio"),
])
def test_the_type_is_told_from_a_hub_name(model_id, expected):
    assert resolve_pipeline_type(model_id) == expected


@pytest.mark.parametrize("options", [{"pipeline_type": "bark"}, {}])
def test_an_unknown_type_is_refused_naming_the_three(options):
    load = ModelLoad(provider="hf", task="audio", model_id="suno/bark", options=options)

    with pytest.raises(ValueError, match="pipeline_type") as caught:
        HFAudioEngine(load, Target())

    assert all(name in str(caught.value) for name in ("musicgen", "audioldm2", "stable_audio"))


def test_progress_uses_callback_on_step_end_where_a_pipeline_has_it():
    class NewerPipeline:
        def __call__(self, prompt, callback_on_step_end=None):
            pass

    steps: list[int] = []
    callback = _step_callback(NewerPipeline(), steps.append)["callback_on_step_end"]

    assert callback(None, 0, 999, {"latents": "kept"}) == {"latents": "kept"} and steps == [1]
