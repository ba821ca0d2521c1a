"""The Hugging Face audio engine: text to music and sound in this process, as aimu's HuggingFaceAudioClient does it.

Three kinds of model: MusicGen (transformers; autoregressive codec tokens, so no steps to report), and
AudioLDM2 and Stable Audio (diffusers; one progress report per denoising step). Generation runs on the
engine's one worker thread, so requests take turns in arrival order and the event loop stays free; a
diffusers pipeline reports each step from that thread to the loop as it finishes.

Where aimu's code no longer runs on current libraries, this engine does what aimu meant: MusicGen's
sample rate and frame rate come from the model's config (aimu: 32 kHz and 50 frames/s, right for the
released checkpoints), a MusicGen seed seeds torch's RNG (transformers 5 refuses ``generate(generator=)``),
and step progress uses the callback each pipeline accepts (the audio pipelines still take ``callback``).
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import aclosing, contextmanager, nullcontext
from pathlib import Path
from typing import Any, AsyncIterator, Callable, ClassVar, Iterator

import diffusers
import numpy as np
import torch
from transformers import AutoProcessor, MusicgenForConditionalGeneration, StoppingCriteria, StoppingCriteriaList

from ...models.errors import ModelError
from ...models.load import ModelLoad, Target
from ...models.media import AudioClip, AudioProgress, AudioRequest, AudioResult

DEFAULT_DURATION_S = 10.0
DEFAULT_STEPS = 200                     # diffusers pipelines only
MUSICGEN_FRAME_RATE = 50                # codec frames (tokens) per second, for a model whose config does not say

_NAME_HINTS = {"musicgen": "musicgen", "audioldm2": "audioldm2", "stable-audio": "stable_audio"}
_PIPELINE_CLASSES = {"AudioLDM2Pipeline": "audioldm2", "StableAudioPipeline": "stable_audio"}

OnStep = Callable[[int | None], None]     # step k of N done, or None: a MusicGen token, with nothing to report


class HFAudioEngine:
    """One text-to-audio model, loaded in ``__init__`` onto the device placement chose (the whole model there).

    ``load.options``: ``pipeline_type`` (else detected from the model's folder or its name) and
    ``model_kwargs`` for ``from_pretrained``.
    """

    def __init__(self, load: ModelLoad, target: Target):
        pipeline_type, model_kwargs = _load_options(**load.options)
        self.pipeline_type = resolve_pipeline_type(load.model_id, pipeline_type)
        self._device = torch.device(target.device)
        self._model = _MODELS[self.pipeline_type](load.model_id, self._device, model_kwargs)
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hf-audio")

    async def run(self, request: AudioRequest) -> AudioResult:
        async with aclosing(self.stream(request)) as items:
            async for item in items:
                pass
        return item

    async def stream(self, request: AudioRequest) -> AsyncIterator[AudioProgress | AudioResult]:
        """One ``AudioProgress`` per denoising step (none for MusicGen), then the ``AudioResult``."""
        duration_s = request.duration_s or DEFAULT_DURATION_S
        steps = (request.num_inference_steps or DEFAULT_STEPS) if self._model.denoises else 1
        loop = asyncio.get_running_loop()
        progress: asyncio.Queue[AudioProgress | None] = asyncio.Queue()
        abandoned = threading.Event()

        def on_step(step: int | None) -> None:         # on the worker thread, after every step or token
            if abandoned.is_set():
                raise _Abandoned                       # stop spending the device on a caller who has gone
            if step is not None:
                report = AudioProgress(step=step, total_steps=steps, duration_s=duration_s)
                loop.call_soon_threadsafe(progress.put_nowait, report)

        def run() -> list[AudioClip]:
            try:
                on_step(None)                          # a caller who left while this waited: nothing starts
                return self._model.generate(request, duration_s, steps, on_step)
            except _Abandoned:
                return []

        job = loop.run_in_executor(self._worker, run)
        job.add_done_callback(lambda _: progress.put_nowait(None))   # after every step the thread reported
        try:
            while (report := await progress.get()) is not None:
                yield report
            if job.cancelled():
                raise ModelError("The audio engine was closed before this request ran.")
            yield AudioResult(clips=await job, total_steps=steps)
        finally:
            abandoned.set()

    async def aclose(self) -> None:
        """Let the running generation finish, drop the waiting ones, and release the weights."""
        await asyncio.to_thread(self._worker.shutdown, cancel_futures=True)
        self._model = None
        gc.collect()
        if self._device.type == "cuda":
            torch.cuda.empty_cache()


def resolve_pipeline_type(model_id: str, pipeline_type: str | None = None) -> str:
    """The type asked for, else the one a local folder's config declares, else the one the model's name suggests."""
    found = pipeline_type or _declared_type(Path(model_id)) or next(
        (kind for hint, kind in _NAME_HINTS.items() if hint in model_id.lower()), None)
    if found not in _MODELS:
        problem = f"Unknown pipeline_type {found!r}" if found else f"Cannot tell the pipeline type of {model_id!r}"
        raise ValueError(f"{problem}: set options['pipeline_type'] to one of {', '.join(_MODELS)}.")
    return found


def _declared_type(folder: Path) -> str | None:
    """From ``model_index.json`` (a diffusers pipeline) or ``config.json`` (a transformers model)."""
    if (folder / "model_index.json").is_file():
        return _PIPELINE_CLASSES.get(json.loads((folder / "model_index.json").read_text()).get("_class_name"))
    if (folder / "config.json").is_file():
        model_type = json.loads((folder / "config.json").read_text()).get("model_type")
        return "musicgen" if model_type == "musicgen" else None
    return None


def _load_options(pipeline_type: str | None = None, model_kwargs: dict | None = None) -> tuple[str | None, dict]:
    """The load options this engine takes; any other name is a TypeError that names it."""
    return pipeline_type, dict(model_kwargs or {})


class _Abandoned(Exception):
    """Raised in the worker thread to stop a pipeline whose stream the caller closed."""


class _MusicGen:
    """transformers' MusicGen: duration is a number of codec frames, and there are no steps to report."""

    denoises = False

    def __init__(self, model_id: str, device: torch.device, model_kwargs: dict):
        self.device = device
        self.processor = AutoProcessor.from_pretrained(model_id, **model_kwargs)
        self.model = MusicgenForConditionalGeneration.from_pretrained(model_id, **model_kwargs).to(device).eval()
        codec = self.model.config.audio_encoder
        self.sample_rate = codec.sampling_rate
        self.frame_rate = getattr(codec, "frame_rate", MUSICGEN_FRAME_RATE)

    def generate(self, request: AudioRequest, duration_s: float, steps: int, on_step: OnStep) -> list[AudioClip]:
        inputs = self.processor(text=[request.prompt] * request.num_audio, padding=True, return_tensors="pt")
        seeded = _seeded_global_rng(request.seed, self.device) if request.seed is not None else nullcontext()
        with seeded:
            audio = self.model.generate(**inputs.to(self.device), max_new_tokens=int(duration_s * self.frame_rate),
                                        stopping_criteria=StoppingCriteriaList([_EachToken(on_step)]))
        return [_clip(clip.float().cpu().numpy(), self.sample_rate) for clip in audio]


class _EachToken(StoppingCriteria):
    """MusicGen's turn after each token to stop a generation whose caller left (``on_step`` raises then)."""

    def __init__(self, on_step: OnStep):
        self.on_step = on_step

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        self.on_step(None)
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


class _DiffusersAudio:
    """A diffusers text-to-audio pipeline: half precision on a GPU, as the model cards load them."""

    denoises = True
    pipeline_class: ClassVar[str]
    duration_argument: ClassVar[str]    # the pipeline argument that sets the clip's length in seconds
    rate_component: ClassVar[str]       # the component whose config holds the output sample rate

    def __init__(self, model_id: str, device: torch.device, model_kwargs: dict):
        self.device = device
        if not {"dtype", "torch_dtype"} & model_kwargs.keys():
            model_kwargs = {**model_kwargs, "dtype": torch.float16 if device.type == "cuda" else torch.float32}
        self.pipe = getattr(diffusers, self.pipeline_class).from_pretrained(model_id, **model_kwargs).to(device)
        self.pipe.set_progress_bar_config(disable=True)          # progress goes to the caller instead
        self.sample_rate = getattr(self.pipe, self.rate_component).config.sampling_rate

    def generate(self, request: AudioRequest, duration_s: float, steps: int, on_step: OnStep) -> list[AudioClip]:
        generator = None if request.seed is None else torch.Generator(self.device).manual_seed(request.seed)
        output = self.pipe(prompt=[request.prompt] * request.num_audio, num_inference_steps=steps, generator=generator,
                           output_type="np", **{self.duration_argument: duration_s},
                           **_step_callback(self.pipe, on_step))
        return [_clip(clip, self.sample_rate) for clip in output.audios]


class _AudioLDM2(_DiffusersAudio):
    pipeline_class, duration_argument, rate_component = "AudioLDM2Pipeline", "audio_length_in_s", "vocoder"


class _StableAudio(_DiffusersAudio):
    """Stereo: clips come back ``(2, n)``."""

    pipeline_class, duration_argument, rate_component = "StableAudioPipeline", "audio_end_in_s", "vae"


_MODELS: dict[str, type[_MusicGen | _DiffusersAudio]] = {
    "musicgen": _MusicGen, "audioldm2": _AudioLDM2, "stable_audio": _StableAudio}


def _step_callback(pipe: Any, on_step: OnStep) -> dict[str, Any]:
    """Report step k of N as k: ``callback_on_step_end`` where the pipeline has it, else the older ``callback``."""
    if "callback_on_step_end" in inspect.signature(pipe.__call__).parameters:
        def on_step_end(_pipe: Any, step: int, _timestep: Any, tensors: dict) -> dict:
            on_step(step + 1)
            return tensors
        return {"callback_on_step_end": on_step_end}
    return {"callback": lambda step, _timestep, _latents: on_step(step + 1), "callback_steps": 1}


@contextmanager
def _seeded_global_rng(seed: int, device: torch.device) -> Iterator[None]:
    """MusicGen's ``generate`` takes no generator: seed torch's global RNG, and restore it afterwards."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


def _clip(samples: np.ndarray, sample_rate: int) -> AudioClip:
    """float32 samples; one channel becomes mono ``(n,)``, more stay ``(channels, n)``."""
    samples = np.ascontiguousarray(samples, dtype=np.float32)
    if samples.ndim == 2 and samples.shape[0] == 1:
        samples = samples[0]
    return AudioClip(sample_rate=int(sample_rate), samples=samples)
