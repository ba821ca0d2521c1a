"""The one stateless Serve deployment for remote providers (cloud APIs and local model servers).

Its replicas hold SDK clients (``EngineCache``) and nothing of any conversation, so any replica serves
any request and Serve can scale them freely. Endpoints and keys are the server's, set from the config
when the replica starts: a request names a served model, never a URL or a key, and the caller's
request is rewritten to the configured provider, model and endpoint before it goes out.
"""

from __future__ import annotations

import os
from contextlib import aclosing
from typing import AsyncIterator

from ray import serve

from ..clients.endpoints import build_endpoint
from ..engines import EngineCache
from ..models.errors import ModelLoadError
from ..models.media import ImageRequest
from ..models.model_string import ResolvedModel, resolve_model
from ..models.wire import ChatRequest, Endpoint
from ..hosts.core import HostCore
from .config import ServedModel


@serve.deployment
class RemoteServer:
    def __init__(self, models: list[ServedModel]) -> None:
        self._engines = EngineCache()
        self._core = HostCore("remote models")
        self._resolved = {model.name: resolve_model(model.model) for model in models}
        self._endpoints: dict[str, Endpoint | Exception] = {
            model.name: _endpoint(self._resolved[model.name], model) for model in models}

    def state(self, name: str) -> dict:
        endpoint = self._endpoints[name]
        failed = isinstance(endpoint, Exception)
        return {"state": "failed" if failed else "ready", "error": str(endpoint) if failed else None}

    async def run(self, name: str, request: ChatRequest | ImageRequest):
        request = self._configured(name, request)
        return await self._core.run(self._engines.get(request), request)

    async def stream(self, name: str, request: ChatRequest | ImageRequest) -> AsyncIterator[list]:
        request = self._configured(name, request)
        async with aclosing(self._core.stream(self._engines.get(request), request)) as batches:
            async for batch in batches:
                yield batch

    def _configured(self, name: str, request):
        endpoint = self._endpoints.get(name)
        if endpoint is None:
            raise ValueError(f"No remote model named {name!r} is served here.")
        if isinstance(endpoint, Exception):
            raise ModelLoadError(f"Model {name!r} is not available: {endpoint}")
        resolved = self._resolved[name]
        return request.model_copy(update={"provider": resolved.provider, "model": resolved.model_id,
                                          "endpoint": endpoint})


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
