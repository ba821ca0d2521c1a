"""Provider-independent types and rules: model strings, wire models, stream chunks, errors, kwargs."""

from .errors import (ConnectionDroppedError, ContextOverflowError, LimitExceededError, MissingAPIKeyError, ModelConnectionError,
                     ModelError, ModelLoadError, ModelBusyError, ModelRefusalError, ModelTimeoutError, ProviderError,
                     ProviderResponseError, RateLimitError, ToolArgumentError, ToolSignatureError, UpstreamError)
from .limits import Limits
from .model_string import ModelRef, ResolvedModel, parse_model_string, resolve_model
from .stream import StreamChunk, StreamingContentType
from .tools import coerce_tool_arguments, tool
from .wire import ChatDelta, ChatRequest, ChatResult, Endpoint, ToolCall, Usage

__all__ = [
    "ChatDelta", "ChatRequest", "ChatResult", "ConnectionDroppedError", "ContextOverflowError", "Endpoint", "LimitExceededError",
    "Limits", "MissingAPIKeyError",
    "ModelBusyError", "ModelConnectionError", "ModelError", "ModelLoadError", "ModelRef", "ModelRefusalError", "ModelTimeoutError", "ProviderError",
    "ProviderResponseError", "RateLimitError", "ResolvedModel", "StreamChunk", "StreamingContentType", "ToolArgumentError",
    "ToolCall", "ToolSignatureError", "UpstreamError", "Usage", "coerce_tool_arguments", "parse_model_string",
    "resolve_model", "tool",
]
