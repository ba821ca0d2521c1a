"""Every error a request can end in, as the answer a client can act on: one ordered table, read top down.

400 fix the request (also when the provider refused it with 400/422); 401 send a key; 404 no such model or route;
413 a smaller body; 429 and 503 come back after Retry-After; 502/504 the provider failed; 500 the model or this
server did. The exception handlers, the body-size middleware, the error event of a stream that had started and
the request metrics all answer from ``ERRORS``, so a status is decided in one place. On Anthropic's Messages route
the same answer is written as Anthropic's error object, its type read off the status.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any, Callable

from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException     # FastAPI's, and the router's 404/405 and unparsable bodies

from ..cluster.placement import PlacementError
from ..models.errors import (ContextOverflowError, LimitExceededError, MissingAPIKeyError, ModelBusyError,
                             ModelConnectionError, ModelError, ModelLoadError, ModelLoadingError, ModelRefusalError,
                             ModelTimeoutError, ProviderError, RateLimitError)
from .openai_api import ErrorResponse, error_response

logger = logging.getLogger("aimu_ray")
RETRY_AFTER_S = 1
RELOAD_AFTER_S = 30                # a model that failed to load or lacks its key: not back in a second
LOADING_AFTER_S = 5                # a model still loading: a few seconds more
UPSTREAM_REFUSALS = (400, 422)     # a provider refused the request itself (e.g. tools for a model without them)
ANTHROPIC_ROUTE = re.compile(r"/v1/messages(/|$)")   # where errors are Anthropic's error objects
# Anthropic's error type of each status; any other 4xx is invalid_request_error, any other 5xx api_error
ANTHROPIC_TYPES = {401: "authentication_error", 403: "permission_error", 404: "not_found_error",
                   429: "rate_limit_error", 503: "overloaded_error", 504: "timeout_error"}


@dataclass(frozen=True)
class ErrorRow:
    """How one kind of error answers: its status, OpenAI error type and code, and Retry-After seconds (None: no
    header); each a value, or a function that reads it off the error. ``when`` narrows the row to some errors."""

    error: type[Exception] | tuple[type[Exception], ...]
    status: int | Callable[[Any], int]
    type: str | Callable[[Any], str]
    code: str | Callable[[Any], str | None] | None = None
    retry_after: int | Callable[[Any], int] | None = None
    when: Callable[[Any], bool] | None = None

    def matches(self, error: Exception) -> bool:
        return isinstance(error, self.error) and (self.when is None or self.when(error))


def _own_status(error) -> int:
    return error.status_code


def _not_found_or_invalid(error: HTTPException) -> str:
    return "not_found_error" if error.status_code == 404 else "invalid_request_error"


def _http_code(error: HTTPException) -> str | None:
    if error.status_code == 401:
        return "invalid_api_key"
    return "model_not_found" if error.status_code == 404 and "model" in str(error.detail) else None


ERRORS: tuple[ErrorRow, ...] = (        # the first row that matches answers: subclasses above their bases
    ErrorRow(RequestValidationError, 400, "invalid_request_error"),
    ErrorRow(HTTPException, _own_status, _not_found_or_invalid, code=_http_code),
    ErrorRow(LimitExceededError, _own_status, "invalid_request_error", code=lambda error: error.limit),
    ErrorRow(ModelBusyError, 503, "overloaded_error", code="overloaded", retry_after=RETRY_AFTER_S),
    ErrorRow(RateLimitError, 429, "rate_limit_error",
             retry_after=lambda error: max(1, round(error.retry_after or RETRY_AFTER_S))),
    ErrorRow(ContextOverflowError, 400, "invalid_request_error", code="context_length_exceeded"),
    ErrorRow(ModelRefusalError, 400, "invalid_request_error", code="content_filter"),
    ErrorRow(ModelTimeoutError, 504, "timeout_error"),
    ErrorRow((ModelLoadError, MissingAPIKeyError), 503, "model_unavailable_error", code="model_not_loaded",
             retry_after=RELOAD_AFTER_S),
    ErrorRow(ModelLoadingError, 503, "model_unavailable_error", code="model_loading", retry_after=LOADING_AFTER_S),
    ErrorRow(ModelConnectionError, 503, "model_unavailable_error", retry_after=RETRY_AFTER_S),
    ErrorRow(PlacementError, 503, "model_unavailable_error", code="insufficient_memory", retry_after=RELOAD_AFTER_S),
    ErrorRow(ProviderError, 400, "invalid_request_error", when=lambda error: error.status_code in UPSTREAM_REFUSALS),
    ErrorRow(ProviderError, 502, "upstream_error"),
    ErrorRow(ValueError, 400, "invalid_request_error"),
    ErrorRow(ModelError, 500, "model_error"),            # the model failed this request; its message is sanitised
)
HANDLED = (RequestValidationError, HTTPException, ModelError, ValueError, Exception)   # what the app's handlers take

RESPONSES = {status: {"model": ErrorResponse, "description": why} for status, why in (    # what OpenAPI documents
    (400, "invalid body or parameters, here or at the provider"), (401, "missing or wrong API key"),
    (404, "no such model or route"), (413, "the body is over limits.max_body_bytes"),
    (429, "the provider is rate limiting (Retry-After)"), (502, "the provider failed"),
    (503, "model at capacity, not loaded, or unreachable (Retry-After)"), (504, "the provider timed out"))}


UPSTREAM_FAILURES = {502, 504}   # a provider failed or timed out: worth a line in the log


@dataclass(frozen=True)
class ErrorAnswer:
    status: int
    body: dict                    # OpenAI's error object (Anthropic's, from ``anthropic``)
    headers: dict[str, str]

    def response(self) -> JSONResponse:
        return JSONResponse(self.body, status_code=self.status, headers=self.headers or None)

    def anthropic(self) -> ErrorAnswer:
        """The same answer as Anthropic's error object: its type follows the status, the message is the same."""
        kind = ANTHROPIC_TYPES.get(self.status, "api_error" if self.status >= 500 else "invalid_request_error")
        body = {"type": "error", "error": {"type": kind, "message": self.body["error"]["message"]}}
        return ErrorAnswer(self.status, body, self.headers)


def answer_for(error: Exception) -> ErrorAnswer:
    """The answer for an error a request ended in; one no row knows is a 500 that says nothing, and is logged."""
    row = next((row for row in ERRORS if row.matches(error)), None)
    if row is None:
        logger.exception("internal error", exc_info=error)
        return ErrorAnswer(500, error_response("Internal server error.", "server_error"), {})
    message, param = _said(error)
    headers = dict(error.headers or {}) if isinstance(error, HTTPException) else {}
    retry_after = _read(row.retry_after, error)
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    body = error_response(message, _read(row.type, error), code=_read(row.code, error), param=param)
    return ErrorAnswer(_read(row.status, error), body, headers)


async def error_handler(request, error: Exception) -> JSONResponse:
    """The app's exception handler for every type in ``HANDLED``; Anthropic's route answers in Anthropic's shape."""
    answer = answer_for(error)
    if answer.status in UPSTREAM_FAILURES:       # the operator's view of a provider's failure (keys redacted already)
        logger.warning("%s %s: %d, %s", request.method, request.url.path, answer.status,
                       answer.body["error"]["message"])
    return (answer.anthropic() if ANTHROPIC_ROUTE.search(request.url.path) else answer).response()


def _read(rule: Any, error: Exception) -> Any:
    return rule(error) if callable(rule) else rule


def _said(error: Exception) -> tuple[str, str | None]:
    """The error's message and the body parameter it is about (only a body that failed validation names one)."""
    if isinstance(error, RequestValidationError):
        problems = error.errors()
        message = "; ".join(f"{_location(problem) or 'body'}: {problem.get('msg')}" for problem in problems[:5])
        return message or "Invalid request body.", (_location(problems[0]) if problems else "") or None
    if isinstance(error, HTTPException):
        return str(error.detail), None
    return str(error), None


def _location(problem: dict) -> str:
    """Where in the body a validation problem is (``loc`` starts with ``body``)."""
    return ".".join(str(part) for part in problem.get("loc", ())[1:])
