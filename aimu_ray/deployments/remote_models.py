"""Remote providers (cloud APIs and local model servers), answered by the ingress replica itself.

A remote model holds no weights and no state of a conversation, so a second Serve deployment between the ingress and
the provider would only add a hop (about 2.5 ms a request, measured in ``benchmarks/serve_latency.py``). Each ingress
replica holds the SDK clients (``EngineCache``) and sends the provider the request the caller asked for, rewritten to
the configured provider, model and endpoint: a request names a served model, never a URL or a key. Keys come from
the replica's environment (``api_key_env``), read when the model is first served here; more load means more ingress
replicas, which Serve scales.
"""

from __future__ import annotations

import os
from contextlib import aclosing
from typing import AsyncIterator

from ..clients.endpoints import build_endpoint
from ..engines import EngineCache
from ..hosts.core import HostCore
from ..models.errors import ModelLoadError
from ..models.model_string import ResolvedModel, resolve_model
from ..models.modality import Item, Request, Result
from ..models.wire import Endpoint
from .config import ServedModel


class RemoteModels:
    """This replica's SDK clients and its count of remote requests in flight, shared by every remote model."""

    def __init__(self) -> None:
        self.engines = EngineCache()
        self.core = HostCore("remote models")

    def backend(self, model: ServedModel) -> RemoteModel:
        return RemoteModel(self, model)


class RemoteModel:
    """``Backend`` for one served remote model: the configured request, sent from this process."""

    def __init__(self, shared: RemoteModels, model: ServedModel) -> None:
        self._shared = shared
        self._name = model.name
        self._resolved = resolve_model(model.model)
        self._endpoint = _endpoint(self._resolved, model)

    def state(self) -> tuple[str, str | None]:
        """``failed`` with why (a missing key, say), or ``ready``."""
        if isinstance(self._endpoint, Exception):
            return "failed", str(self._endpoint)
        return "ready", None

    async def call(self, request: Request) -> Result:
        request = self._configured(request)
        return await self._shared.core.run(self._shared.engines.get(request), request)

    async def batches(self, request: Request) -> AsyncIterator[list[Item]]:
        """The stream in batches of what is ready, as a Serve handle carries it (one message per batch)."""
        request = self._configured(request)
        async with aclosing(self._shared.core.stream(self._shared.engines.get(request), request)) as batches:
            async for batch in batches:
                yield batch

    async def stream(self, request: Request) -> AsyncIterator[Item]:
        async with aclosing(self.batches(request)) as batches:
            async for batch in batches:
                for item in batch:
                    yield item

    def _configured(self, request: Request) -> Request:
        if isinstance(self._endpoint, Exception):
            raise ModelLoadError(f"Model {self._name!r} is not available: {self._endpoint}")
        return request.model_copy(update={"provider": self._resolved.provider, "model": self._resolved.model_id,
                                          "endpoint": self._endpoint})


def _endpoint(resolved: ResolvedModel, model: ServedModel) -> Endpoint | Exception:
    """The configured endpoint, with the key (and, without a configured URL, ``OPENAI_BASE_URL`` and its kin) read
    from this replica's environment; a problem is kept, not raised, so one model with a missing key does not take
    the others down."""
    options = dict(model.options)
    if model.api_key_env:
        options["api_key"] = os.environ.get(model.api_key_env) or None
    try:
        return build_endpoint(resolved, **options)
    except (ValueError, TypeError, ImportError) as error:
        return error
