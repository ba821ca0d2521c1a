"""The one wire format: what a client sends to an engine and what comes back.

These pydantic models cross Ray (pickled), and later HTTP and batch files. The client does all the
provider-independent work (state, kwargs merge, thinking resolution) and ships a ``ChatRequest`` whose
``params`` are already in the provider's vocabulary; the engine only converts messages and does I/O.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from .structured import ResponseSchema


class Endpoint(BaseModel):
    """How to reach a remote provider. The key is a SecretStr so it never prints."""

    model_config = ConfigDict(frozen=True)

    base_url: str | None = None
    api_key: SecretStr | None = None
    timeout: float = Field(default=600.0, gt=0)
    max_retries: int = Field(default=3, ge=0)

    def cache_key(self) -> tuple:
        """Identity of the SDK client this endpoint needs; the key enters only as a hash."""
        import hashlib

        secret = self.api_key.get_secret_value() if self.api_key else ""
        return (self.base_url, hashlib.sha256(secret.encode()).hexdigest(), self.timeout)


class ToolCall(BaseModel):
    id: str | None = None
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)


class Usage(BaseModel):
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    cache_creation_input_tokens: int | None = None
    cache_read_input_tokens: int | None = None

    def as_dict(self) -> dict[str, int]:
        """aimu's ``last_usage`` shape: the cache fields only when the provider reported them."""
        return self.model_dump(exclude_none=True)


class ChatRequest(BaseModel):
    """One model request. ``messages`` are OpenAI-format dicts with inert keys already stripped."""

    provider: str
    model: str
    endpoint: Endpoint = Field(default_factory=Endpoint)
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] = Field(default_factory=list)
    params: dict[str, Any] = Field(default_factory=dict)
    parse_think_tags: bool = False
    stream: bool = False
    response_schema: ResponseSchema | None = None   # schema=, sent natively (the engine holds the answer to it)
    count_only: bool = False          # count the prompt's tokens (a ``TokenCount`` from ``run``), answer nothing


class ChatDelta(BaseModel):
    """One streamed piece of text."""

    phase: Literal["thinking", "generating"]
    text: str


class TopLogprob(BaseModel):
    """One candidate token at a position, as OpenAI's ``logprobs`` name it: its text, UTF-8 bytes, log-probability."""

    token: str
    logprob: float
    bytes: list[int] | None = None


class TokenLogprob(TopLogprob):
    """A generated token with its log-probability and the most likely tokens at its position."""

    top_logprobs: list[TopLogprob] = Field(default_factory=list)


class ChatResult(BaseModel):
    """A whole answer; also the last item of every stream, carrying what only the end knows."""

    content: str = ""
    thinking: str = ""
    tool_calls: list[ToolCall] = Field(default_factory=list)
    usage: Usage | None = None
    stop_reason: str | None = None
    logprobs: list[TokenLogprob] | None = None       # asked for with ``logprobs``: one per generated token
    engine_s: float | None = None     # seconds its host's engine spent on it (``HostCore``), for serving-time metrics


class TokenCount(BaseModel):
    """The answer to a ``count_only`` request: the prompt's tokens as the model would take them in (its chat template,
    tools and system applied, by its own tokenizer) or as its provider counts them; nothing was generated.

    A flag on ``ChatRequest`` rather than a request type of its own: the count then travels every path a chat does
    unchanged (the pool's permits by provider, a served model's rewrite to its endpoint, the engine cache by task)."""

    input_tokens: int
    engine_s: float | None = None     # as ``ChatResult``'s
