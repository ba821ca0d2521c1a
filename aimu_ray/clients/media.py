"""aimu's image and audio clients, async, over the same backends as text.

``hf:`` models (diffusers pipelines, MusicGen/AudioLDM2/Stable Audio) live in a ModelActor placed by
measured memory; ``gemini:`` images are stateless requests on the shared pool. Pixels and samples come
back as arrays and are encoded here, in the caller's process, so ``format="path"`` writes into the
caller's ``output_dir`` and every file gets its own name (aimu overwrote same-second outputs).
"""

from __future__ import annotations

import os
from typing import AsyncIterator

from ..backends import backend_for
from ..models.load import ModelLoad, load_for
from ..models.media import AudioProgress, ImageProgress
from ..models.model_string import parse_model_string
from ..models.outputs import (AUDIO_FORMATS, IMAGE_FORMATS, audio_final_chunks, audio_progress_chunk, check_format,
                             encode_audio, encode_image, image_bytes, image_final_chunks, image_progress_chunk)
from ..models.stream import StreamChunk, StreamingContentType
from ..models.wire import Endpoint
from .endpoints import gemini_image_endpoint
from .requests import audio_request, image_request

_IMAGE_CALL_KEYS = ("negative_prompt", "width", "height", "num_inference_steps", "guidance_scale", "seed", "strength")


class _AsyncMediaClient:
    task: str
    providers: tuple[str, ...]
    env_var: str

    def __init__(self, model: str | None = None, *, backend=None, **kwargs):
        """``backend`` replaces the one the model would get (a dataset worker's own engine)."""
        model = model or os.environ.get(self.env_var)
        if not model:
            raise ValueError(f"No model given and {self.env_var} is not set: pass model='hf:<repo or folder>'.")
        ref = parse_model_string(model)
        if ref.provider not in self.providers:             # aimu's words, then ours
            raise ValueError(f"Unknown {self.task} provider {ref.provider!r}. Available: {sorted(self.providers)}")
        if ref.base_url or ref.flags:
            forms = " or ".join(f"'{provider}:<id>'" for provider in self.providers)
            raise ValueError(f"{self.task.capitalize()} models are {forms} strings (no @url or ;flags), got {model!r}.")
        self.provider, self.model_id = ref.provider, ref.model_id
        self._load: ModelLoad | None = None
        self._endpoint: Endpoint | None = None
        if ref.provider == "hf":
            self._load = load_for("hf", self.task, ref.model_id, kwargs)
        else:
            self._endpoint = gemini_image_endpoint(**kwargs)
        self._backend = backend

    @property
    def model(self) -> str:
        return f"{self.provider}:{self.model_id}"

    @property
    def model_load(self) -> ModelLoad | None:
        """What an ``hf:`` model's copies are keyed by (its loader options and pins); None for a remote one."""
        return self._load

    @property
    def model_kwargs(self) -> dict:
        return dict(self._load.options.get("model_kwargs") or {}) if self._load else {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.model!r})"

    async def _stream(self, request, phase: StreamingContentType, progress_type: type, progress_chunk,
                      final_chunks) -> AsyncIterator[StreamChunk]:
        """aimu's chunk dicts for one modality: one per progress item, then the finals built from the result."""
        async for item in self._get_backend().stream(request):
            dicts = [progress_chunk(item)] if isinstance(item, progress_type) else final_chunks(item)
            for content in dicts:
                yield StreamChunk(phase, content)

    def _get_backend(self):
        if self._backend is None:
            self._backend = backend_for(self._load)
        return self._backend


class AsyncImageClient(_AsyncMediaClient):
    """``generate`` returns one image (``num_images=1``), a list, or with ``stream=True`` progress chunks."""

    task, providers, env_var = "image", ("hf", "gemini"), "AIMU_IMAGE_MODEL"

    async def generate(self, prompt: str, *, num_images: int = 1, format: str = "pil", output_dir=None,
                       stream: bool = False, preview_every: int | None = None, reference_image=None, **kwargs):
        if num_images < 1:
            raise ValueError(f"num_images must be at least 1, got {num_images}.")
        check_format(format, IMAGE_FORMATS)
        calls = {key: kwargs.pop(key) for key in _IMAGE_CALL_KEYS if key in kwargs}
        request = image_request(provider=self.provider, model=self.model_id, endpoint=self._endpoint, prompt=prompt,
                                num_images=num_images, preview_every=preview_every,
                                reference_image=None if reference_image is None else image_bytes(reference_image),
                                options=kwargs, **calls)

        def encode(pixels):
            return encode_image(pixels, format, output_dir=output_dir, prompt=prompt)

        if stream:
            return self._stream(request, StreamingContentType.IMAGE_GENERATING, ImageProgress, image_progress_chunk,
                                lambda result: image_final_chunks(result, encode))
        images = [encode(pixels) for pixels in (await self._get_backend().call(request)).images]
        return images[0] if num_images == 1 else images


class AsyncAudioClient(_AsyncMediaClient):
    """``generate`` returns one clip (``num_audio=1``), a list, or with ``stream=True`` progress chunks."""

    task, providers, env_var = "audio", ("hf",), "AIMU_AUDIO_MODEL"

    async def generate(self, prompt: str, *, duration_s: float | None = None, num_inference_steps: int | None = None,
                       num_audio: int = 1, format: str = "path", output_dir=None, seed: int | None = None,
                       stream: bool = False, **kwargs):
        if num_audio < 1:
            raise ValueError(f"num_audio must be at least 1, got {num_audio}.")
        check_format(format, AUDIO_FORMATS)
        request = audio_request(provider=self.provider, model=self.model_id, prompt=prompt, duration_s=duration_s,
                                num_inference_steps=num_inference_steps, num_audio=num_audio, seed=seed,
                                options=kwargs)

        def encode(clip):
            return encode_audio(clip, format, output_dir=output_dir, prompt=prompt)

        if stream:
            return self._stream(request, StreamingContentType.AUDIO_GENERATING, AudioProgress, audio_progress_chunk,
                                lambda result: audio_final_chunks(result, encode))
        clips = [encode(clip) for clip in (await self._get_backend().call(request)).clips]
        return clips[0] if num_audio == 1 else clips


class _Served:
    """A media client for a model a server configured (a Serve app, through its handle): the server owns the
    weights, endpoint and key, so none are taken here."""

    def __init__(self, model: str, backend) -> None:
        ref = parse_model_string(model)
        self.provider, self.model_id = ref.provider, ref.model_id
        self._load, self._endpoint, self._backend = None, None, backend


class ServedImageClient(_Served, AsyncImageClient):
    """``AsyncImageClient`` for a served image model."""


class ServedAudioClient(_Served, AsyncAudioClient):
    """``AsyncAudioClient`` for a served audio model."""
