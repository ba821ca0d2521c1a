"""Engines: plain classes that turn one request into its whole answer (``run``) or into a stream ending in it
(``stream``), for every modality, with no Ray in sight.

``ENGINES`` names the engine of each (wire protocol, task), remote and in-process alike, by import path: a
module is imported on first use, so an SDK, torch, diffusers or llama_cpp loads only in the process where such
a request runs. A provider's protocol for a task comes from its row (``ProviderSpec.protocol_for``).
``EngineCache`` keeps one remote engine per protocol, task and endpoint, so that concurrent requests share one
SDK client and its connection pool; ``local_engine_class`` names the class of an in-process one.
"""

from __future__ import annotations

import asyncio
import importlib
from types import MappingProxyType
from typing import Mapping

from ..models.load import ModelLoad, Target, Task
from ..models.media import AudioRequest, ImageRequest
from ..models.providers import PROVIDERS, ProviderSpec
from ..models.wire import ChatRequest
from .base import Engine

ENGINES: Mapping[tuple[str, Task], str] = MappingProxyType({
    ("openai", "text"): "aimu_ray.engines.remote.openai:OpenAICompatEngine",
    ("anthropic", "text"): "aimu_ray.engines.remote.anthropic:AnthropicEngine",
    ("ollama", "text"): "aimu_ray.engines.remote.ollama:OllamaEngine",
    ("gemini", "image"): "aimu_ray.engines.remote.gemini_image:GeminiImageEngine",
    ("hf", "text"): "aimu_ray.engines.local.hf_text:HFTextEngine",
    ("llamacpp", "text"): "aimu_ray.engines.local.llamacpp:LlamaCppEngine",
    ("hf", "image"): "aimu_ray.engines.local.diffusers_image:DiffusersImageEngine",
    ("hf", "audio"): "aimu_ray.engines.local.hf_audio:HFAudioEngine",
})
# The engines that need more than their protocol's own extra (PROVIDERS[protocol].extra): diffusers and the rest.
EXTRAS: Mapping[tuple[str, Task], str] = MappingProxyType({("hf", "image"): "image", ("hf", "audio"): "audio"})
TASKS: Mapping[type, Task] = MappingProxyType({ChatRequest: "text", ImageRequest: "image", AudioRequest: "audio"})


class EngineCache:
    """One remote engine per (protocol, task, endpoint), built on first use and reused by every later request."""

    def __init__(self) -> None:
        self._engines: dict[tuple, Engine] = {}

    def get(self, request: ChatRequest | ImageRequest) -> Engine:
        """The remote engine for the request's provider and modality."""
        task = TASKS[type(request)]
        protocol = protocol_of(request.provider, task)
        key = (protocol, task, request.endpoint.cache_key())
        if key not in self._engines:
            self._engines[key] = engine_class(protocol, task)(request.endpoint)
        return self._engines[key]

    async def aclose(self) -> None:
        engines, self._engines = list(self._engines.values()), {}
        await asyncio.gather(*(engine.aclose() for engine in engines))


def local_engine_class(load: ModelLoad) -> type[Engine]:
    """The in-process engine class for ``load``, imported now; building it, ``(load, target)``, loads the weights."""
    return engine_class(protocol_of(load.provider, load.task, in_process=True), load.task)


def protocol_of(provider: str, task: Task = "text", *, in_process: bool = False) -> str:
    """The wire protocol of a provider's ``task`` requests, or a ValueError naming the providers that have an
    engine for it: remote ones, or with ``in_process`` those whose model runs in the hosting process."""
    def has_engine(spec: ProviderSpec) -> bool:
        return spec.in_process == in_process and (spec.protocol_for(task), task) in ENGINES

    spec = PROVIDERS.get(provider)
    if spec is None or not has_engine(spec):
        where = "in-process" if in_process else "remote"
        known = ", ".join(key for key, s in PROVIDERS.items() if has_engine(s))
        raise ValueError(f"No {where} engine for provider {provider!r} and task {task!r}. "
                         f"{where.capitalize()} providers: {known}.")
    return spec.protocol_for(task)


def engine_class(protocol: str, task: Task) -> type[Engine]:
    """The engine class of (protocol, task), imported now; an ImportError names the extra to install."""
    module_name, _, class_name = ENGINES[(protocol, task)].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        extra = EXTRAS.get((protocol, task), PROVIDERS[protocol].extra)
        raise ImportError(f"{protocol}:{task} models need packages missing where the model runs ({error.name}): "
                          f"pip install 'aimu_ray[{extra}]' on every node that hosts models.") from error
    return getattr(module, class_name)


__all__ = ["ENGINES", "EngineCache", "engine_class", "local_engine_class", "protocol_of"]
