"""aimu's model interface on Ray: ``import aimu_ray as aimu`` and keep your aimu code.

Importing is cheap: Ray and the provider SDKs load on first use. Every call runs on Ray: an embedded
local Ray started on first use, or the cluster named by ``RAY_ADDRESS`` or ``aimu_ray.init(address=...)``.
"""

from __future__ import annotations

from typing import Iterable

from . import aio
from .models.errors import (ConnectionDroppedError, ContextOverflowError, MissingAPIKeyError, ModelConnectionError, ModelError,
                            ModelRefusalError, ModelTimeoutError, ProviderError, ProviderResponseError,
                            RateLimitError)
from .models.stream import StreamChunk, StreamingContentType
from .models.tools import tool
from .sync import TextClient, iterate, run

__all__ = [
    "ConnectionDroppedError", "ContextOverflowError", "MissingAPIKeyError", "ModelConnectionError", "ModelError", "ModelRefusalError",
    "ModelTimeoutError", "ProviderError", "ProviderResponseError", "RateLimitError", "StreamChunk",
    "StreamingContentType", "TextClient", "aio", "chat", "client", "init", "shutdown", "tool",
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


def __getattr__(name: str):
    if name in _RUNTIME_NAMES:          # ray is imported only when the runtime is asked for
        from . import runtime
        return getattr(runtime, name)
    raise AttributeError(f"module 'aimu_ray' has no attribute {name!r}")
