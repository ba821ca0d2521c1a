"""Typed failures, shared by every host (caller, Ray worker, Serve replica).

aimu's three model errors keep their names and stay ``RuntimeError`` subclasses. The others say
what kind of failure it was so callers can react (back off on ``RateLimitError``, fix the request on a
4xx). Every error pickles with its attributes and its cause, because it crosses Ray's process
boundary; causes are sanitised summaries (``UpstreamError``), never SDK objects, since those hold the
HTTP request and with it the API key.
"""

from __future__ import annotations


class ModelError(RuntimeError):
    """Base of every failure that comes from talking to a model."""

    def __reduce__(self):
        state = dict(self.__dict__)
        if self.__cause__ is not None:
            state["__cause__"] = self.__cause__
        return (self.__class__, self.args, state)


class ModelLoadError(ModelError):
    """An in-process model could not be loaded where placement put it; the message names model, device and cause."""


class UpstreamError(ModelError):
    """What the provider or its SDK said, reduced to plain text with secrets removed."""


class ModelConnectionError(ModelError):
    """The model could not be reached: refused connection, DNS failure, lost worker."""


class ConnectionDroppedError(ModelConnectionError):
    """The connection broke under a request: reset, or a kept-alive connection the server had closed.

    Retried while nothing has reached the caller (the SDKs do the same); fails typed after that.
    """


class ModelUnloadedError(ModelConnectionError):
    """The model was unloaded (``aimu_ray.unload``) while this request ran, and its grace period ran out.

    Never re-sent by aimu_ray: a new request loads the model again, if the caller wants that.
    """


class ModelBusyError(ModelConnectionError):
    """The model's replicas are at capacity and their queue is full; retry after a moment."""


class ModelLoadingError(ModelConnectionError):
    """The model is still loading (on demand, or again after an eviction) after the wait a request is allowed;
    the load goes on, so asking again in a few seconds finds it."""


class ModelTimeoutError(ModelConnectionError):
    """The model did not answer in time, after the retries allowed."""


class RegistryUnavailableError(ModelConnectionError):
    """The model registry did not answer in time: it restarts on its own and rebuilds its ledger from the live
    model actors, so asking again in a moment is the fix. Models already loaded keep answering."""


class ProviderError(ModelError):
    """The provider answered with an error status (after retries, where retrying made sense).

    ``retry_after`` is the server's ``Retry-After`` hint in seconds, when it sent one.
    """

    def __init__(self, message: str, *, provider: str = "", status_code: int | None = None,
                 retry_after: float | None = None):
        super().__init__(message)
        self.provider = provider
        self.status_code = status_code
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:
        return self.status_code is not None and (self.status_code in (408, 409, 429) or self.status_code >= 500)


class RateLimitError(ProviderError):
    """429 (or Anthropic's 529 "overloaded") that outlasted the retries."""


class ProviderResponseError(ProviderError):
    """The provider answered something that is not its protocol (malformed JSON, broken stream)."""


class ContextOverflowError(ModelError):
    """The conversation no longer fits the model's context window."""


class ModelRefusalError(ModelError):
    """The model declined to answer (Anthropic ``stop_reason == "refusal"``)."""

    def __init__(self, message: str = "The model refused to answer.", *, category: str | None = None,
                 explanation: str | None = None):
        super().__init__(message)
        self.category = category
        self.explanation = explanation


class MissingAPIKeyError(ValueError):
    """A cloud provider was asked for without its key; raised before any network call."""


class LimitExceededError(ValueError):
    """A request is over one of the ``Limits`` (``aimu_ray.models.limits``); raised before anything is sent.

    ``limit`` is the limit's name (``max_body_bytes``, ``max_messages``, …), the ``code`` of its OpenAI error;
    ``status_code`` the HTTP status it answers with: 413 for a body too large, 400 for the rest.
    """

    def __init__(self, message: str, limit: str, status_code: int = 400):
        super().__init__(message)
        self.limit = limit
        self.status_code = status_code

    def __reduce__(self):
        return (self.__class__, (str(self), self.limit, self.status_code))


class ToolSignatureError(TypeError):
    """``@tool`` cannot describe this function to a model: a ``*args``/``**kwargs`` parameter (JSON Schema has no
    way to say "any number of these"), or one with neither a type hint nor a default (nothing says what the model
    should send). Raised when the function is decorated, so a bad tool fails at import, not mid-conversation.

    A ``TypeError``, as in aimu (``aimu.tools.ToolSignatureError``): the function's signature is what is wrong.
    """


class ToolArgumentError(ValueError):
    """The arguments a model sent for a tool call do not fit the tool: an unknown name, a required one missing, or
    a value that cannot be coerced to its hint (``coerce_tool_arguments``).

    A ``ValueError``, as in aimu (``aimu.tools.ToolArgumentError``), whose agents catch it and hand the message back
    to the model as the tool's result, so the model can correct the call. The message is the whole story.
    """


def redact(text: str, *secrets: str | None) -> str:
    """Replace every occurrence of each secret in ``text`` (provider messages may echo keys)."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return text
