"""The in-process llama.cpp wire: llama-cpp-python's OpenAI-shaped chat API with llama.cpp's own names. Its
messages are OpenAI's (``openai_messages``); its chat handlers take no chat-template kwargs, so the provider row
turns chat-template thinking off."""

from __future__ import annotations

from .base import kwarg_table
from .openai import OpenAIAdapter


class LlamaCppAdapter(OpenAIAdapter):
    protocol = "llamacpp"
    kwarg_support = kwarg_table(repetition_penalty="repeat_penalty", context_length=None)
