"""The OpenAI chat-completions engine: OpenAI, Gemini's OpenAI-compatible endpoint and every local server
that speaks the protocol (LM Studio, Ollama's /v1, transformers serve, vLLM, llama.cpp, SGLang, oMLX)."""

from __future__ import annotations

from typing import Any, AsyncIterator

from ...adapters.openai import openai_messages
from ...models.structured import ResponseSchema
from ...models.wire import ChatDelta, ChatRequest, ChatResult, Endpoint, TokenLogprob, Usage
from .errors import json_answer, malformed_reply
from .base import RemoteEngine, import_sdk, sdk_client_options
from ..reply import ReplyBuilder

NO_KEY = "not-needed"          # local servers ignore the key, but the SDK insists on one
_REASONING_FIELDS = ("reasoning_content", "reasoning")   # server-side reasoning parsers (vLLM, llama.cpp, ...)


class OpenAICompatEngine(RemoteEngine):
    protocol = "openai"

    def __init__(self, endpoint: Endpoint):
        openai = import_sdk(self.protocol)
        self._client = openai.AsyncOpenAI(**sdk_client_options(endpoint, default_key=NO_KEY))

    def _conversation(self, messages: list[dict]) -> dict[str, Any]:
        return {"messages": openai_messages(messages)}

    def _hold_to(self, schema: ResponseSchema, kwargs: dict[str, Any]) -> None:
        kwargs["response_format"] = {"type": "json_schema", "json_schema": {
            "name": schema.name, "schema": schema.json_schema, "strict": False}}

    async def _complete(self, kwargs: dict[str, Any], request: ChatRequest) -> ChatResult:
        response = json_answer(await self._client.chat.completions.create(**kwargs), request)
        if not response.choices:
            raise malformed_reply(request, "the answer has no choices")
        reply = ReplyBuilder(request.parse_think_tags)
        choice = response.choices[0]
        _absorb(reply, choice.message)
        reply.stop_reason = choice.finish_reason
        reply.usage = _usage(response.usage)
        result = reply.result()
        result.logprobs = _logprobs(choice, None) if kwargs.get("logprobs") else None
        return result

    async def _stream_once(self, kwargs: dict[str, Any], request: ChatRequest) -> AsyncIterator[ChatDelta | ChatResult]:
        stream_options = {**(kwargs.get("stream_options") or {}), "include_usage": True}
        reply = ReplyBuilder(request.parse_think_tags)
        logprobs: list[TokenLogprob] | None = None
        async with await self._client.chat.completions.create(
                **{**kwargs, "stream": True, "stream_options": stream_options}) as chunks:
            async for chunk in chunks:
                if chunk.usage:                       # the terminal chunk, with empty choices
                    reply.usage = _usage(chunk.usage)
                for choice in chunk.choices[:1]:
                    for delta in _absorb(reply, choice.delta):
                        yield delta
                    reply.stop_reason = choice.finish_reason or reply.stop_reason
                    logprobs = _logprobs(choice, logprobs)
        for item in reply.finish():
            if isinstance(item, ChatResult):
                item.logprobs = logprobs
            yield item


def _absorb(reply: ReplyBuilder, message: Any) -> list[ChatDelta]:
    """Feed a whole ``message`` or a stream ``delta``: they carry the same fields, deltas in fragments."""
    deltas = reply.add_thinking(_reasoning(message)) + reply.add_text(message.content)
    for position, call in enumerate(message.tool_calls or []):
        function = getattr(call, "function", None)      # absent on custom tools and some servers' deltas
        reply.add_tool_call(getattr(call, "index", position), id=call.id,
                            name=function and function.name, arguments=function and function.arguments)
    return deltas


def _logprobs(choice: Any, so_far: list[TokenLogprob] | None) -> list[TokenLogprob] | None:
    """The upstream's token logprobs of a choice (or a chunk's, after ``so_far``); None where it sent none."""
    content = getattr(getattr(choice, "logprobs", None), "content", None)
    if content is None:
        return so_far
    return [*(so_far or []), *(TokenLogprob.model_validate(token.model_dump()) for token in content)]


def _reasoning(message: Any) -> str | None:
    """Reasoning text sent beside the content; not in the OpenAI schema, so it sits among the extra fields."""
    extra = getattr(message, "model_extra", None) or {}
    return next((extra[name] for name in _REASONING_FIELDS if extra.get(name)), None)


def _usage(usage: Any) -> Usage | None:
    if usage is None:
        return None
    return Usage(input_tokens=usage.prompt_tokens or 0, output_tokens=usage.completion_tokens or 0,
                 total_tokens=usage.total_tokens or 0)
