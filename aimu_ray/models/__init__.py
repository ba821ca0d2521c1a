"""Provider-independent types and rules: model strings, wire models, stream chunks, errors, kwargs."""

from .errors import (ConnectionDroppedError, ContextOverflowError, LimitExceededError, MissingAPIKeyError, ModelConnectionError,
                     ModelError, ModelLoadError, ModelBusyError, ModelRefusalError, ModelTimeoutError, ProviderError,
                     ProviderResponseError, RateLimitError, UpstreamError)
from .limits import Limits
from .model_string import ModelRef, ResolvedModel, parse_model_string, resolve_model
from .stream import StreamChunk, StreamingContentType
from .tools import tool
from .wire import ChatDelta, ChatRequest, ChatResult, Endpoint, ToolCall, Usage

__all__ = [
    "ChatDelta", "ChatRequest", "ChatResult", "ConnectionDroppedError", "ContextOverflowError", "Endpoint", "LimitExceededError",
    "Limits", "MissingAPIKeyError",
    "ModelBusyError", "ModelConnectionError", "ModelError", "ModelLoadError", "ModelRef", "ModelRefusalError", "ModelTimeoutError", "ProviderError",
    "ProviderResponseError", "RateLimitError", "ResolvedModel", "StreamChunk", "StreamingContentType", "ToolCall",
    "UpstreamError", "Usage", "parse_model_string", "resolve_model", "tool",
]
