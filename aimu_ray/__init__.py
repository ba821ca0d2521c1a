"""aimu's model interface on Ray: ``import aimu_ray as aimu`` and keep your aimu code.

Importing is cheap: Ray and the provider SDKs load on first use. Every call runs on Ray: an embedded
local Ray started on first use, or the cluster named by ``RAY_ADDRESS`` or ``aimu_ray.init(address=...)``.
"""

from __future__ import annotations

from typing import Iterable

from . import aio
from .models.errors import (ConnectionDroppedError, ContextOverflowError, LimitExceededError, MissingAPIKeyError,
                            ModelBusyError, ModelConnectionError, ModelError, ModelLoadError, ModelLoadingError,
                            ModelRefusalError, ModelTimeoutError, ModelUnloadedError, ProviderError,
                            ProviderResponseError, RateLimitError, RegistryUnavailableError, ToolArgumentError,
                            ToolSignatureError)
from .models.discovery import (HAS_GEMINI_IMAGE, HAS_HF_AUDIO, HAS_HF_IMAGE, available_audio_models,
                               available_image_models, available_text_models, resolve_model_string)
from .models.limits import Limits, set_limits
from .models.messages import INERT_MESSAGE_KEYS, encode_tool_call_arguments, extract_tool_calls, strip_inert_keys
from .models.stream import StreamChunk, StreamingContentType
from .models.structured import generate_json, parse_json_response
from .models.tools import coerce_tool_arguments, tool
from .clients.sync import AudioClient, ImageClient, TextClient, iterate, run, sync_twin

ModelClient = TextClient        # aimu's name for the text client: ModelClient(model, **kwargs), model a string or enum

__all__ = [
    "ConnectionDroppedError", "ContextOverflowError", "LimitExceededError", "Limits", "MissingAPIKeyError",
    "ModelBusyError", "ModelConnectionError", "ModelError", "ModelLoadError", "ModelLoadingError", "ModelRefusalError",
    "ModelTimeoutError", "ModelUnloadedError", "ProviderError", "ProviderResponseError", "RateLimitError",
    "RegistryUnavailableError", "StreamChunk", "StreamingContentType", "ToolArgumentError", "ToolSignatureError",
    "AudioClient", "ImageClient", "TextClient", "aio", "audio_client", "chat", "client", "coerce_tool_arguments",
    "connect", "evictions", "generate_audio", "generate_image", "image_client", "init",
    "placements", "set_gpu_memory_utilization", "set_limits", "shutdown", "tool", "unload",
    # aimu's names for the factories' own surface
    "HAS_GEMINI_IMAGE", "HAS_HF_AUDIO", "HAS_HF_IMAGE", "INERT_MESSAGE_KEYS", "ModelClient", "available_audio_models",
    "available_image_models", "available_text_models", "clear_hf_cache", "clear_llamacpp_cache",
    "encode_tool_call_arguments", "extract_tool_calls", "generate_json", "parse_json_response",
    "resolve_model_string", "strip_inert_keys",
]

_RUNTIME_NAMES = ("init", "shutdown")


def client(model: str | None = None, *, system: str | None = None, **kwargs) -> TextClient:
    """A conversation with ``model`` (``provider:model_id[@url][;flags]``); kwargs go to the provider."""
    return TextClient(model or aio.default_text_model(), system_message=system, **kwargs)


def chat(user_message: str, *, model: str | None = None, system: str | None = None,
         generate_kwargs: dict | None = None, stream: bool = False, images: list | None = None,
         include: Iterable | None = None, thinking=None):
    """One-shot: a fresh client, one request; a string, or an iterator of StreamChunk with ``stream=True``."""
    result = run(aio.chat(user_message, model=model, system=system, generate_kwargs=generate_kwargs,
                          stream=stream, images=images, include=include, thinking=thinking))
    return iterate(result) if stream else result


def image_client(model: str | None = None, **kwargs) -> ImageClient:
    """An image model: ``hf:<repo or folder>`` (diffusers, in a placed actor) or ``gemini:<id or alias>``;
    kwargs are loader options (``model_kwargs``, ``pipeline_class``) and placement pins (``device``, ``num_gpus``)."""
    return ImageClient(model, **kwargs)


def generate_image(prompt: str, *, model: str | None = None, format: str = "pil", **kwargs):
    """One image (a list when ``num_images`` > 1); kwargs go to ``generate``, as in aimu."""
    result = run(aio.generate_image(prompt, model=model, format=format, **kwargs))
    return iterate(result) if kwargs.get("stream") else result


def audio_client(model: str | None = None, **kwargs) -> AudioClient:
    """An audio model: ``hf:<repo or folder>`` (MusicGen, AudioLDM2, Stable Audio), in a placed actor."""
    return AudioClient(model, **kwargs)


def generate_audio(prompt: str, *, model: str | None = None, format: str = "path", **kwargs):
    """One clip (a list when ``num_audio`` > 1), by default a WAV file path, as in aimu."""
    result = run(aio.generate_audio(prompt, model=model, format=format, **kwargs))
    return iterate(result) if kwargs.get("stream") else result


def connect(name: str, *, app: str = "aimu_ray", system: str | None = None):
    """A client for the model a running aimu_ray Serve app serves as ``name`` (see ``aio.connect``)."""
    return sync_twin(run(aio.connect(name, app=app, system=system)))


def placements():
    """Every in-process model loaded on the cluster: node, GPU share, memory reserved vs used, and why."""
    return run(aio.placements())


def set_gpu_memory_utilization(fraction: float) -> float:
    """Let placement use only ``fraction`` of each GPU's memory, cluster-wide; returns the fraction before."""
    return run(aio.set_gpu_memory_utilization(fraction))


def evictions():
    """The idle models unloaded to make room for others, oldest first: what each freed, for which model, and why."""
    return run(aio.evictions())


def unload(model: str | None = None, *, grace_s: float = 30.0) -> list[str]:
    """Unload ``model`` ("hf:org/name") or every model, giving their GPU shares back; requests in flight get
    ``grace_s`` to finish, then fail with ``ModelUnloadedError``."""
    return run(aio.unload(model, grace_s=grace_s))


def clear_hf_cache(model=None, *, grace_s: float = 30.0) -> list[str]:
    """aimu frees its process's cached Hugging Face weights; here they live in model actors on the cluster, so
    this unloads them: ``model`` (aimu's enum member, ``"hf:org/name"`` or a repo id), or every ``hf:`` model,
    text, image and audio (for every process on the cluster: the copies are shared). Requests in flight get
    ``grace_s`` to finish, as with ``unload``. Returns the models unloaded (aimu returns None)."""
    return run(aio.unload_provider("hf", model, grace_s=grace_s))


def clear_llamacpp_cache(model=None, *, grace_s: float = 30.0) -> list[str]:
    """aimu frees its process's cached llama.cpp models; here this unloads the ``llamacpp:`` model actors:
    ``model`` (aimu's ``LlamaCppModel`` member, ``"llamacpp:<name>"`` or the name), or all of them. aimu_ray names a
    llama.cpp model by its id, not its ``model_path``, so a path matches only a model whose id is that path.
    Returns the models unloaded (aimu returns None)."""
    return run(aio.unload_provider("llamacpp", model, grace_s=grace_s))


def __getattr__(name: str):
    if name in _RUNTIME_NAMES:          # ray is imported only when the runtime is asked for
        from .clients import runtime
        return getattr(runtime, name)
    raise AttributeError(f"module 'aimu_ray' has no attribute {name!r}")
