"""The in-process engines: models whose weights live in the hosting process (a ModelActor, a Serve replica).

Each is a plain class built from ``(ModelLoad, Target)`` that loads its weights in ``__init__``. They
are named here by import path, so that torch, transformers, diffusers and llama_cpp are imported only
in the process that hosts a model, never in a client.
"""

from __future__ import annotations

import importlib
from typing import AsyncIterator, Protocol

from ...models.load import ModelLoad, Target
from ...models.media import AudioProgress, AudioRequest, AudioResult, ImageProgress, ImageRequest, ImageResult
from ...models.providers import PROVIDERS

ENGINE_PATHS: dict[tuple[str, str], str] = {
    ("hf", "text"): "aimu_ray.engines.local.hf_text:HFTextEngine",
    ("llamacpp", "text"): "aimu_ray.engines.local.llamacpp:LlamaCppEngine",
    ("hf", "image"): "aimu_ray.engines.local.diffusers_image:DiffusersImageEngine",
    ("hf", "audio"): "aimu_ray.engines.local.hf_audio:HFAudioEngine",
}
EXTRAS = {"text": None, "image": "image", "audio": "audio"}


class ImageEngine(Protocol):
    async def generate(self, request: ImageRequest) -> ImageResult: ...

    def stream(self, request: ImageRequest) -> AsyncIterator[ImageProgress | ImageResult]: ...

    async def aclose(self) -> None: ...


class AudioEngine(Protocol):
    async def generate(self, request: AudioRequest) -> AudioResult: ...

    def stream(self, request: AudioRequest) -> AsyncIterator[AudioProgress | AudioResult]: ...

    async def aclose(self) -> None: ...


def engine_class(provider: str, task: str) -> type:
    """The engine class for (provider, task); an ImportError names the extra to install."""
    path = ENGINE_PATHS.get((provider, task))
    if path is None:
        known = ", ".join(f"{p}:{t}" for p, t in ENGINE_PATHS)
        raise ValueError(f"No in-process engine for provider {provider!r} and task {task!r}. Known: {known}.")
    module_name, _, class_name = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        extra = EXTRAS[task] or PROVIDERS[provider].extra
        raise ImportError(f"{provider}:{task} models need packages missing where the model runs ({error.name}): "
                          f"pip install 'aimu_ray[{extra}]' on every node that hosts models.") from error
    return getattr(module, class_name)


def load_engine(load: ModelLoad, target: Target):
    """Build (and so load) the engine for ``load`` on ``target``."""
    return engine_class(load.provider, load.task)(load, target)
