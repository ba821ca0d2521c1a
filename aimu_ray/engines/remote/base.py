"""The part every remote engine shares: the retry loop and error translation around one provider call.

A subclass only converts the conversation and tools (``_conversation``, ``_tools``) and makes one attempt
(``_complete``, ``_stream_once``, or ``_count`` where the provider counts tokens); ``run`` and ``stream`` here add
the rest, written once, so every provider retries, backs off and fails the same way and an engine used directly (a unit test, a Serve
replica) is as safe as one used through an actor.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from contextlib import aclosing
from types import ModuleType
from typing import Any, AsyncIterator, Awaitable, ClassVar, TypeVar

from ...models.providers import PROVIDERS
from ...models.structured import ResponseSchema
from ...models.wire import ChatDelta, ChatRequest, ChatResult, Endpoint, TokenCount
from .errors import translate
from ..base import stream_with_retries, with_retries

T = TypeVar("T")


def import_sdk(protocol: str) -> ModuleType:
    """The SDK module, imported when an engine is built so that importing ``aimu_ray.engines`` needs none."""
    spec = PROVIDERS[protocol]            # each protocol is also the key of its reference provider
    try:
        return importlib.import_module(spec.sdk_module)
    except ImportError as error:
        raise ImportError(f"The {protocol} engine needs the '{spec.sdk_module}' package: "
                          f"{spec.install_hint()}") from error


def sdk_client_options(endpoint: Endpoint, default_key: str | None = None) -> dict[str, Any]:
    """Constructor options for the openai and anthropic clients; their own retries are off (ours honour Retry-After)."""
    options: dict[str, Any] = {"api_key": secret(endpoint) or default_key, "timeout": endpoint.timeout,
                               "max_retries": 0}
    if endpoint.base_url:
        options["base_url"] = endpoint.base_url
    return options


def secret(endpoint: Endpoint) -> str | None:
    return endpoint.api_key.get_secret_value() if endpoint.api_key else None


class RemoteEngine(ABC):
    """Base of the engines that call a provider over HTTP through its SDK client (``self._client``)."""

    protocol: ClassVar[str]
    _client: Any

    async def run(self, request: ChatRequest) -> ChatResult | TokenCount:
        kwargs = self._prepare(request)
        attempt = self._count if request.count_only else self._complete
        return await with_retries(lambda: _translated(attempt(kwargs, request), request), request.endpoint.max_retries)

    async def stream(self, request: ChatRequest) -> AsyncIterator[ChatDelta | ChatResult]:
        kwargs = self._prepare(request)
        attempts = stream_with_retries(lambda: _translated_stream(self._stream_once(kwargs, request), request),
                                       request.endpoint.max_retries)
        async with aclosing(attempts):
            async for item in attempts:
                yield item

    async def aclose(self) -> None:
        await self._client.close()

    def _prepare(self, request: ChatRequest) -> dict[str, Any]:
        """The SDK call's keyword arguments. Runs once, before any attempt: a bad input fails here, unretried."""
        kwargs = {**request.params, "model": request.model, **self._conversation(request.messages)}
        if request.tools:
            kwargs["tools"] = self._tools(request.tools)
        if request.response_schema is not None:
            self._hold_to(request.response_schema, kwargs)
        return kwargs

    @abstractmethod
    def _hold_to(self, schema: ResponseSchema, kwargs: dict[str, Any]) -> None:
        """Ask the provider, in its own terms, for an answer that is a JSON object of ``schema``."""

    @abstractmethod
    def _conversation(self, messages: list[dict]) -> dict[str, Any]:
        """The messages in the provider's format, as SDK keyword arguments (``messages``, maybe ``system``)."""

    def _tools(self, tools: list[dict]) -> list[dict]:
        """OpenAI function specs in the provider's format; OpenAI-compatible servers and Ollama take them as is."""
        return tools

    @abstractmethod
    async def _complete(self, kwargs: dict[str, Any], request: ChatRequest) -> ChatResult:
        """One non-streaming attempt."""

    @abstractmethod
    def _stream_once(self, kwargs: dict[str, Any], request: ChatRequest) -> AsyncIterator[ChatDelta | ChatResult]:
        """One streaming attempt: deltas, then the ``ChatResult``."""

    async def _count(self, kwargs: dict[str, Any], request: ChatRequest) -> TokenCount:
        """One count of the prompt's tokens by the provider. Most have no endpoint for it, and a count guessed here
        would differ from the provider's own, so they refuse."""
        raise ValueError(f"Provider {request.provider!r} has no token-counting endpoint, so its models cannot count "
                         "a prompt's tokens here (no count is guessed). Counts come from in-process models (hf:, "
                         "llamacpp:) and Anthropic's.")


# The typed error is raised after the ``except`` block, not inside it: raised inside, it would keep the
# SDK exception as ``__context__``, and that exception holds the request headers with the API key.

async def _translated(call: Awaitable[T], request: ChatRequest) -> T:
    try:
        return await call
    except Exception as error:
        failure = translate(error, request)
    raise failure


async def _translated_stream(items: AsyncIterator[T], request: ChatRequest) -> AsyncIterator[T]:
    try:
        async with aclosing(items):
            async for item in items:
                yield item
        return
    except Exception as error:
        failure = translate(error, request)
    raise failure
