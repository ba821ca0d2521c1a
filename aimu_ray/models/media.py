"""Image and audio requests, progress and results: the wire format of the modality engines.

Pixels and samples cross Ray as numpy arrays (cheap to pickle, lossless); the caller's process turns
them into the format asked for (PIL, PNG/WAV bytes, data URL, a file in the caller's ``output_dir``),
so no worker ever writes into a folder the caller did not choose.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from .wire import Endpoint


class ImageRequest(BaseModel):
    """One call of ``generate_image``; ``None`` means the pipeline's own default."""

    provider: str
    model: str
    endpoint: Endpoint | None = None          # remote providers (Gemini) only
    prompt: str
    num_images: int = Field(default=1, ge=1)
    negative_prompt: str | None = None
    width: int | None = Field(default=None, gt=0)
    height: int | None = Field(default=None, gt=0)
    num_inference_steps: int | None = Field(default=None, ge=1)
    guidance_scale: float | None = None
    seed: int | None = None
    reference_image: bytes | None = None      # an encoded image file (PNG, JPEG, …): image-to-image
    strength: float | None = Field(default=None, gt=0, le=1)
    preview_every: int | None = Field(default=None, ge=1)
    options: dict[str, Any] = Field(default_factory=dict)   # provider extras, e.g. Gemini aspect_ratio


class ImageProgress(BaseModel):
    """One denoising step done; ``preview`` is the decoded latents when ``preview_every`` asked for it."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    step: int = Field(ge=0)
    total_steps: int = Field(ge=1)
    preview: np.ndarray | None = None         # HxWx3 uint8
    image_index: int | None = None            # Gemini: which of the sequential requests this is
    num_images: int | None = None


class ImageResult(BaseModel):
    """Every image of one request, HxWx3 (or HxWx4) uint8 arrays, in order; the last item of every image stream."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    images: list[np.ndarray]
    total_steps: int = 1
    engine_s: float | None = None     # seconds its host's engine spent on it (``HostCore``)


class AudioRequest(BaseModel):
    """One call of ``generate_audio``; ``None`` means the model's default."""

    provider: str
    model: str
    prompt: str
    duration_s: float | None = Field(default=None, gt=0)
    num_inference_steps: int | None = Field(default=None, ge=1)
    num_audio: int = Field(default=1, ge=1)
    seed: int | None = None
    options: dict[str, Any] = Field(default_factory=dict)


class AudioClip(BaseModel):
    """One clip: float32 samples shaped ``(n,)`` (mono) or ``(channels, n)``."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    sample_rate: int = Field(gt=0)
    samples: np.ndarray

    @property
    def duration_s(self) -> float:
        return self.samples.shape[-1] / self.sample_rate


class AudioProgress(BaseModel):
    step: int = Field(ge=0)
    total_steps: int = Field(ge=1)
    duration_s: float


class AudioResult(BaseModel):
    """Every clip of one request, in order; the last item of every audio stream."""

    clips: list[AudioClip]
    total_steps: int = 1
    engine_s: float | None = None     # seconds its host's engine spent on it (``HostCore``)
