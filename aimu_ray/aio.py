"""Async twins of the top-level factories: ``await aio.client(...).chat(...)``.

Native async all the way to the provider, so this works inside a running event loop, a notebook, or
another Ray actor, and thousands of conversations can be in flight from one process.
"""

from __future__ import annotations

import os
from typing import Iterable

from .clients.text import AsyncTextClient
from .clients.loaded_models import evictions, placements, set_gpu_memory_utilization, unload, unload_provider
from .clients.media import AsyncAudioClient, AsyncImageClient
from .models.limits import set_limits

AsyncModelClient = AsyncTextClient      # aimu's name: aio.AsyncModelClient(model, **kwargs)

__all__ = ["AsyncAudioClient", "AsyncImageClient", "AsyncModelClient", "AsyncTextClient", "audio_client", "chat",
           "client", "connect", "evictions", "generate_audio", "generate_image", "image_client", "placements",
           "set_gpu_memory_utilization", "set_limits", "unload", "unload_provider"]


def default_text_model() -> str:
    """``AIMU_LANGUAGE_MODEL`` when set; aimu_ray never guesses a model (and never picks a cloud one)."""
    model = os.environ.get("AIMU_LANGUAGE_MODEL")
    if not model:
        raise ValueError("No model given and AIMU_LANGUAGE_MODEL is not set: pass model='provider:model_id' "
                         "(e.g. 'ollama:qwen3:8b', 'anthropic:claude-sonnet-4-6').")
    return model


def client(model: str | None = None, *, system: str | None = None, **kwargs) -> AsyncTextClient:
    return AsyncTextClient(model or default_text_model(), system_message=system, **kwargs)


async def chat(user_message: str, *, model: str | None = None, system: str | None = None,
               generate_kwargs: dict | None = None, stream: bool = False, images: list | None = None,
               include: Iterable | None = None, thinking=None):
    """One-shot: a fresh client, one request."""
    return await client(model, system=system).chat(user_message, generate_kwargs=generate_kwargs, stream=stream,
                                                   images=images, include=include, thinking=thinking)


def image_client(model: str | None = None, **kwargs) -> AsyncImageClient:
    """An image model: ``hf:<repo or folder>`` (diffusers, in a placed actor) or ``gemini:<id or alias>``."""
    return AsyncImageClient(model, **kwargs)


async def generate_image(prompt: str, *, model: str | None = None, format: str = "pil", **kwargs):
    """One-shot: a fresh image client, one ``generate`` (kwargs go to ``generate``, as in aimu)."""
    return await image_client(model).generate(prompt, format=format, **kwargs)


def audio_client(model: str | None = None, **kwargs) -> AsyncAudioClient:
    """An audio model: ``hf:<repo or folder>`` (MusicGen, AudioLDM2, Stable Audio), in a placed actor."""
    return AsyncAudioClient(model, **kwargs)


async def generate_audio(prompt: str, *, model: str | None = None, format: str = "path", **kwargs):
    """One-shot: a fresh audio client, one ``generate``."""
    return await audio_client(model).generate(prompt, format=format, **kwargs)


async def connect(name: str, *, app: str = "aimu_ray", system: str | None = None):
    """A client for the model a running aimu_ray Serve app serves as ``name``, over its deployment handles.

    From any Ray app, actor or job on the cluster; the same contract as ``client()`` (text) or
    ``image_client()`` / ``audio_client()`` (media), with the server's endpoint, keys and weights.
    """
    from .clients.served import connect as connect_handles   # ray.serve is imported only here

    return await connect_handles(name, app=app, system_message=system)
