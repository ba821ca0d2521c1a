"""Where and how a caller's requests reach a remote provider: URL, key, timeout and retries, checked before any call.

A missing key or URL fails here, in the caller, with the variable or argument that would fix it.
"""

from __future__ import annotations

import os
from typing import Any

from ..models.errors import MissingAPIKeyError
from ..models.model_string import ResolvedModel
from ..models.wire import Endpoint

GEMINI_BASE_URL = "https://generativelanguage.googleapis.com"


def build_endpoint(model: ResolvedModel, *, base_url: str | None = None, host: str | None = None,
                   api_key: str | None = None, timeout: float | None = None,
                   max_retries: int | None = None) -> Endpoint:
    """Where and how to reach the provider; a missing key or URL fails here, before any network call.

    The URL is the first of: ``base_url=``/``host=``, the model string's ``@url``, the variable the provider's
    own SDK reads (``OPENAI_BASE_URL``, ``ANTHROPIC_BASE_URL``, ``OLLAMA_HOST``) in this process, the default."""
    spec = model.spec
    url = (base_url or host or model.base_url or (spec.base_url_env and os.environ.get(spec.base_url_env))
           or spec.default_base_url)
    if url is None:
        raise ValueError(f"Provider '{spec.key}' needs a URL: '{spec.key}:{model.model_id}@http://host:port/v1' "
                         "or base_url=.")
    if spec.key == "ollama" and url.rstrip("/").endswith("/v1"):
        raise ValueError(f"Ollama host {url!r} ends in /v1, which is its OpenAI-compatible API: use "
                         f"'ollama-openai:{model.model_id}' for that, or drop the /v1.")
    if spec.is_cloud:
        api_key = api_key or os.environ.get(spec.api_key_env, "")
        if not api_key:
            raise MissingAPIKeyError(f"Provider '{spec.key}' needs an API key: set {spec.api_key_env} "
                                     "or pass api_key=.")
    options: dict[str, Any] = {"base_url": url, "api_key": api_key or "not-needed"}
    if timeout is not None:
        options["timeout"] = timeout
    if max_retries is not None:
        options["max_retries"] = max_retries
    return Endpoint(**options)


def gemini_image_endpoint(model_kwargs: dict | None = None, base_url: str | None = None, api_key: str | None = None,
                     timeout: float | None = None, max_retries: int | None = None, **unknown: Any) -> Endpoint:
    """aimu takes the key from ``model_kwargs["api_key"]`` or ``GOOGLE_API_KEY``; missing fails here, not later."""
    if unknown:
        raise TypeError(f"gemini image models take no argument {', '.join(map(repr, sorted(unknown)))}.")
    model_kwargs = dict(model_kwargs or {})
    key = api_key or model_kwargs.pop("api_key", None) or os.environ.get("GOOGLE_API_KEY")
    if not key:
        raise MissingAPIKeyError("Gemini image models need an API key: set GOOGLE_API_KEY or pass "
                                 "model_kwargs={'api_key': ...}.")
    options: dict[str, Any] = {"base_url": base_url or GEMINI_BASE_URL, "api_key": key}
    if timeout is not None:
        options["timeout"] = timeout
    if max_retries is not None:
        options["max_retries"] = max_retries
    return Endpoint(**options)
