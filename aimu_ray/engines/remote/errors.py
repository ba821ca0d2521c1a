"""SDK failures turned into ``aimu_ray.models.errors`` types, once, for the openai, anthropic, ollama and
google-genai SDKs.

The typed error never chains the SDK exception: that object holds the HTTP request, whose headers
carry the API key. Its cause is an ``UpstreamError`` with a one-line summary instead, and every text
that may quote the provider goes through ``redact`` because servers sometimes echo the key back.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import socket
import sys
import time
from typing import Any, Iterator, Mapping, TypeVar

from pydantic import ValidationError

from ...models.errors import (ConnectionDroppedError, ContextOverflowError, ModelConnectionError, ModelError,
                             ModelTimeoutError,
                             ProviderError, ProviderResponseError, RateLimitError, UpstreamError, redact)
from ...models.providers import PROVIDERS
from ...models.wire import ChatRequest

_SDKS = ("openai", "anthropic")          # Stainless-built SDKs: the same exception classes and attributes
_HTTP = ("httpx", "httpx2")              # the transports under ollama (httpx) and the two above (httpx2)
_GENAI = ("google.genai.errors",)        # google-genai: APIError with the HTTP status in ``.code``
_AIOHTTP = ("aiohttp",)                  # google-genai's async transport when aiohttp is installed
_OVERFLOW_PHRASES = ("context_length_exceeded", "maximum context length", "prompt is too long",
                     "exceeds the context length", "exceeds the available context size")
_ERROR_TYPE_STATUS = {"rate_limit_error": 429, "overloaded_error": 529, "api_error": 500}  # Anthropic in-stream errors
_SUMMARY_LIMIT = 300
T = TypeVar("T")


def translate(error: Exception, request: ChatRequest) -> Exception:
    """The typed error for ``error``; errors that did not come from the provider or its SDK come back as they are."""
    if isinstance(error, ModelError):
        return error
    kind, culprit = _transport_failure(error)
    if kind is not None:
        failure = _TRANSPORT_ERRORS[kind](request, _summary(culprit, request))
    elif isinstance(error, _loaded(_SDKS + _GENAI, "APIError") + _loaded(("ollama",), "ResponseError")):
        failure = _from_answer(error, request)
    else:
        return error
    failure.__cause__ = UpstreamError(f"{type(culprit).__qualname__}: {_summary(culprit, request)}")
    return failure


def malformed_reply(request: ChatRequest, detail: str) -> ProviderResponseError:
    """The provider answered, but not in its protocol (truncated JSON, a cut stream, a missing field)."""
    return ProviderResponseError(
        _text(request, f"{_where(request)} sent a broken or incomplete reply ({detail}). Try again; if it "
                       f"repeats, check that the address serves the {request.provider} API."),
        provider=request.provider)


def json_answer(answer: T, request: ChatRequest) -> T:
    """``answer``, unless it is a string: the openai and anthropic SDKs hand back the body of a 200 that is not JSON
    (an event stream sent to a request that asked for a whole answer, a proxy's web page) instead of failing."""
    if isinstance(answer, str):
        sent = "an event stream" if answer.lstrip().startswith(("data:", "event:")) else "a body that is not JSON"
        raise malformed_reply(request, f"{sent} where a whole JSON answer was asked for")
    return answer


def _timed_out(request: ChatRequest, detail: str) -> ModelTimeoutError:
    """The SDKs' own wording adds nothing here; it stays in the cause."""
    return ModelTimeoutError(_text(request, f"{_where(request)} did not answer within {request.endpoint.timeout:g} s. "
                                            "Try again, or raise the endpoint timeout for slow models."))


def _unreachable(request: ChatRequest, detail: str) -> ModelConnectionError:
    return ModelConnectionError(_text(request, f"Could not reach {_where(request)} ({detail}). Check that the "
                                               "server is running and that the address is right."))


def _dropped(request: ChatRequest, detail: str) -> ConnectionDroppedError:
    return ConnectionDroppedError(_text(request, f"The connection to {_where(request)} broke ({detail}). "
                                                 "Try again; if it repeats, check the network and the server."))


_TRANSPORT_ERRORS = {"timeout": _timed_out, "connect": _unreachable, "dropped": _dropped, "broken": malformed_reply}


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds the server asked us to wait: ``retry-after-ms``, else ``Retry-After`` as seconds or an HTTP date."""
    if (millis := headers.get("retry-after-ms")) is not None:
        try:
            return float(millis) / 1000
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _from_answer(error: Exception, request: ChatRequest) -> ModelError:
    """An error status (or an error event inside a stream) that the provider itself sent."""
    message = _sentence(_one_line(_provider_message(error), request))
    status = _status(error)
    where = _where(request)
    if _overflows(request, status, _provider_code(error), message):
        return ContextOverflowError(_text(request, f"The conversation no longer fits the context window of "
                                          f"{request.model} ({where}): {message} Shorten the history (e.g. "
                                          "client.reset()) or use a model with a longer context."))
    headers = getattr(getattr(error, "response", None), "headers", None) or {}
    wait = retry_after(headers)
    if wait is None:
        wait = _retry_delay(error)
    if status in (429, 529):
        hint = f"wait {wait:g} s" if wait is not None else "wait"
        return RateLimitError(_text(request, f"{where} is rate limiting or overloaded (HTTP {status}): {message} "
                                    f"{hint.capitalize()} and retry, or lower the request rate."),
                              provider=request.provider, status_code=status, retry_after=wait)
    said = f"HTTP {status}" if status else "an error inside its answer"
    return ProviderError(_text(request, f"{where} answered {said}: {message} {_advice(status, request)}"),
                         provider=request.provider, status_code=status, retry_after=wait)


def _retry_delay(error: Exception) -> float | None:
    """Google's ``google.rpc.RetryInfo`` detail (``"retryDelay": "12s"``): where the Gemini API says when to retry."""
    body = getattr(error, "details", None)
    inner = body.get("error", body) if isinstance(body, dict) else None
    details = inner.get("details") if isinstance(inner, dict) else None
    for detail in details if isinstance(details, list) else []:
        delay = detail.get("retryDelay") if isinstance(detail, dict) else None
        if isinstance(delay, str) and delay.endswith("s"):
            try:
                return float(delay[:-1])
            except ValueError:
                pass
    return None


def _advice(status: int | None, request: ChatRequest) -> str:
    """What the caller can do about a given status."""
    if status in (401, 403):
        env = PROVIDERS[request.provider].api_key_env if request.provider in PROVIDERS else None
        return f"Check the API key{f' ({env})' if env else ''} and its permissions."
    if status == 404:
        return f"Check the model id {request.model!r} and the address."
    if status is not None and status < 500:
        return "Check the request parameters."
    return "The provider failed; try again later."


def _overflows(request: ChatRequest, status: int | None, code: str | None, message: str) -> bool:
    text = message.lower()
    if "no user query found in messages" in text:    # Ollama, once fitting num_ctx dropped every user turn
        return any(m.get("role") == "user" for m in request.messages)
    return code == "context_length_exceeded" or status == 413 or any(p in text for p in _OVERFLOW_PHRASES)


def _transport_failure(error: BaseException) -> tuple[str | None, BaseException]:
    """``timeout``, ``connect``, ``dropped`` (the connection broke) or ``broken`` (the reply is not the protocol),
    with the error that says so. ``ConnectError`` is a network error too, so ``connect`` is tried first."""
    chain = list(_causes(error))
    kinds = (
        ("timeout", _loaded(_SDKS, "APITimeoutError") + _loaded(_HTTP, "TimeoutException")
         + (TimeoutError, asyncio.TimeoutError)),
        ("connect", _loaded(_HTTP, "ConnectError") + (ConnectionRefusedError, socket.gaierror)),
        ("dropped", _loaded(_HTTP, "NetworkError") + _loaded(_HTTP, "RemoteProtocolError")
         + _loaded(_AIOHTTP, "ServerDisconnectedError") + _loaded(_AIOHTTP, "ClientPayloadError")
         + (ConnectionResetError,)),
        ("broken", _loaded(_HTTP, "TransportError") + _loaded(_SDKS, "APIResponseValidationError")
         + (json.JSONDecodeError, ValidationError)),
        ("connect", _loaded(_SDKS, "APIConnectionError") + _loaded(_AIOHTTP, "ClientConnectionError")
         + (ConnectionError,)),
    )
    for kind, types in kinds:
        for exc in chain:
            if isinstance(exc, types):
                return kind, exc
    return None, error


def _causes(error: BaseException | None) -> Iterator[BaseException]:
    """The error and the errors it was explicitly raised from (SDKs wrap transport errors this way)."""
    while error is not None:
        yield error
        error = error.__cause__


def _loaded(modules: tuple[str, ...], name: str) -> tuple[type, ...]:
    """``module.name`` for each module already imported: an error can only come from a loaded SDK."""
    return tuple(getattr(sys.modules[m], name) for m in modules if m in sys.modules and hasattr(sys.modules[m], name))


def _status(error: Exception) -> int | None:
    status = error.code if isinstance(error, _loaded(_GENAI, "APIError")) else getattr(error, "status_code", None)
    if isinstance(status, int) and status >= 400:
        return status
    return _ERROR_TYPE_STATUS.get(_provider_code(error) or "")   # an error event inside a 200 stream


def _inner_body(error: Exception) -> Any:
    """The ``error`` object of the body (OpenAI passes it already unwrapped, Anthropic whole)."""
    body = getattr(error, "body", None)
    return body.get("error", body) if isinstance(body, dict) else body


def _provider_message(error: Exception) -> str:
    inner = _inner_body(error)
    if isinstance(inner, dict) and inner.get("message"):
        return str(inner["message"])
    return str(getattr(error, "error", None) or getattr(error, "message", None) or error)


def _provider_code(error: Exception) -> str | None:
    inner = _inner_body(error)
    if isinstance(inner, dict):
        return inner.get("code") or inner.get("type")
    return None


def _where(request: ChatRequest) -> str:
    url = request.endpoint.base_url
    return f"{request.provider} at {url}" if url else request.provider


def _summary(error: BaseException, request: ChatRequest) -> str:
    return _one_line(str(error) or type(error).__name__, request)


def _one_line(text: str, request: ChatRequest) -> str:
    """Redacted before it is cut: a key cut short is no longer the key, and ``redact`` would let it through."""
    line = " ".join(_text(request, text).split())
    return line if len(line) <= _SUMMARY_LIMIT else line[:_SUMMARY_LIMIT] + "…"


def _sentence(text: str) -> str:
    return text if text.endswith((".", "!", "?")) else text + "."


def _text(request: ChatRequest, text: str) -> str:
    key = request.endpoint.api_key
    return redact(text, key.get_secret_value() if key else None)
