"""Engines: plain classes that turn a ``ChatRequest`` into one provider call, with no Ray in sight.

``ENGINES`` maps a provider's wire protocol (``PROVIDERS[key].protocol``) to its engine class, and
``EngineCache`` keeps one engine per protocol and endpoint so that concurrent requests share one SDK
client and its connection pool. SDKs are imported only when an engine is built.
"""

from __future__ import annotations

import asyncio

from ..models.providers import PROVIDERS
from ..models.media import ImageRequest
from ..models.wire import ChatRequest, Endpoint
from .remote.anthropic import AnthropicEngine
from .base import Engine
from .remote.ollama import OllamaEngine
from .remote.openai import OpenAICompatEngine

ENGINES: dict[str, type[Engine]] = {
    "openai": OpenAICompatEngine,
    "anthropic": AnthropicEngine,
    "ollama": OllamaEngine,
}


class EngineCache:
    """One engine per (protocol, endpoint), built on first use and reused by every later request."""

    def __init__(self) -> None:
        self._engines: dict[tuple, Engine] = {}

    def get(self, request: ChatRequest | ImageRequest) -> Engine:
        """The chat engine of the request's provider, or the image engine for a remote image request."""
        image = isinstance(request, ImageRequest)
        protocol = _image_protocol(request.provider) if image else protocol_of(request.provider)
        key = (protocol, request.endpoint.cache_key())
        if key not in self._engines:
            self._engines[key] = _image_engine(request.endpoint) if image else ENGINES[protocol](request.endpoint)
        return self._engines[key]

    async def run(self, request: ChatRequest | ImageRequest):
        """One whole answer from the request's engine: a chat, or images from a remote image provider."""
        engine = self.get(request)
        return await (engine.chat(request) if isinstance(request, ChatRequest) else engine.generate(request))

    async def aclose(self) -> None:
        engines, self._engines = list(self._engines.values()), {}
        await asyncio.gather(*(engine.aclose() for engine in engines))


def _image_protocol(provider: str) -> str:
    if provider != "gemini":
        raise ValueError(f"No remote image engine for provider {provider!r}: remote images come from 'gemini'.")
    return "gemini-image"


def _image_engine(endpoint: Endpoint) -> Engine:
    from .remote.gemini_image import GeminiImageEngine   # google-genai is imported only where images are made
    return GeminiImageEngine(endpoint)


def protocol_of(provider: str) -> str:
    """The wire protocol a provider key speaks, or a ValueError listing the keys that exist."""
    spec = PROVIDERS.get(provider)
    if spec is None or spec.protocol not in ENGINES:
        known = ", ".join(key for key, s in PROVIDERS.items() if s.protocol in ENGINES)
        raise ValueError(f"No remote engine for provider {provider!r}. Remote providers: {known}.")
    return spec.protocol


__all__ = ["ENGINES", "AnthropicEngine", "Engine", "EngineCache", "OllamaEngine", "OpenAICompatEngine",
           "protocol_of"]
