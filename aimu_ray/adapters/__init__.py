"""One adapter per wire protocol: how a request's parameters, thinking and messages are spelled on that wire.

Pure functions and tables, no SDKs: the client prepares parameters here before anything is sent, and each engine
imports its protocol's message converters. A new OpenAI-compatible server is a row in ``models.providers``; a new
protocol is a module here plus its row in ``ADAPTERS``.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Mapping

from ..models.capabilities import ModelCaps
from ..models.providers import ProviderSpec
from ..models.thinking import ResolvedThinking
from .anthropic import AnthropicAdapter
from .base import Adapter, PreparedParams
from .hf import HFAdapter
from .llamacpp import LlamaCppAdapter
from .ollama import OllamaAdapter
from .openai import OpenAIAdapter

ADAPTERS: Mapping[str, Adapter] = MappingProxyType({adapter.protocol: adapter for adapter in (
    OpenAIAdapter(), AnthropicAdapter(), OllamaAdapter(), HFAdapter(), LlamaCppAdapter(),
)})


def prepare_params(spec: ProviderSpec, model_id: str, caps: ModelCaps, thinking: ResolvedThinking,
                   client_kwargs: dict | None, call_kwargs: dict | None) -> PreparedParams:
    """The request's wire parameters and the caller's keys the provider cannot take, by the provider's protocol."""
    return ADAPTERS[spec.protocol].prepare(spec, caps, thinking, client_kwargs, call_kwargs)
