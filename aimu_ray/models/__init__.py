"""Provider-independent types and rules: model strings, wire models, stream chunks, errors, kwargs."""

from .errors import (ConnectionDroppedError, ContextOverflowError, LimitExceededError, MissingAPIKeyError, ModelConnectionError,
                     ModelError, ModelLoadError, ModelBusyError, ModelRefusalError, ModelTimeoutError, ProviderError,
                     ProviderResponseError, RateLimitError, ToolArgumentError, ToolSignatureError, UpstreamError)
from .discovery import (HAS_ANTHROPIC, HAS_GEMINI_IMAGE, HAS_HF, HAS_HF_AUDIO, HAS_HF_IMAGE, HAS_LLAMACPP, HAS_OLLAMA,
                        HAS_OPENAI_COMPAT, available_audio_models, available_image_models, available_text_models,
                        resolve_model_string)
from .limits import Limits
from .messages import INERT_MESSAGE_KEYS, encode_tool_call_arguments, extract_tool_calls, strip_inert_keys
from .model_string import ModelRef, ResolvedModel, parse_model_string, resolve_model
from .stream import StreamChunk, StreamingContentType
from .structured import generate_json, parse_json_response
from .tools import coerce_tool_arguments, tool
from .wire import ChatDelta, ChatRequest, ChatResult, Endpoint, ToolCall, Usage

__all__ = [
    "ChatDelta", "ChatRequest", "ChatResult", "ConnectionDroppedError", "ContextOverflowError", "Endpoint", "LimitExceededError",
    "Limits", "MissingAPIKeyError",
    "ModelBusyError", "ModelConnectionError", "ModelError", "ModelLoadError", "ModelRef", "ModelRefusalError", "ModelTimeoutError", "ProviderError",
    "ProviderResponseError", "RateLimitError", "ResolvedModel", "StreamChunk", "StreamingContentType", "ToolArgumentError",
    "ToolCall", "ToolSignatureError", "UpstreamError", "Usage", "coerce_tool_arguments", "parse_model_string",
    "resolve_model", "tool",
    # aimu.models' helpers (aimu_ray.models.discovery, .structured, .messages)
    "HAS_ANTHROPIC", "HAS_GEMINI_IMAGE", "HAS_HF", "HAS_HF_AUDIO", "HAS_HF_IMAGE", "HAS_LLAMACPP", "HAS_OLLAMA",
    "HAS_OPENAI_COMPAT", "INERT_MESSAGE_KEYS", "available_audio_models", "available_image_models",
    "available_text_models", "encode_tool_call_arguments", "extract_tool_calls", "generate_json",
    "parse_json_response", "resolve_model_string", "strip_inert_keys",
]
