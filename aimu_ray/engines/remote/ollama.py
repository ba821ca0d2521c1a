"""The native Ollama engine (``/api/chat``): ``think``, ``keep_alive`` and ``options`` arrive in the params,
images travel as bare base64 beside the message text, tool-call arguments stay objects, and ``logprobs`` /
``top_logprobs`` come back per token (each stream part carries its own tokens')."""

from __future__ import annotations

from contextlib import aclosing
from typing import Any, AsyncIterator

from ...adapters.ollama import ollama_messages
from ...models.structured import ResponseSchema
from ...models.wire import ChatDelta, ChatRequest, ChatResult, Endpoint, TokenLogprob, TopLogprob, Usage
from .base import RemoteEngine, import_sdk, secret
from ..reply import ReplyBuilder


# The pool the openai and anthropic SDKs default to; httpx's own (100 connections) makes a large fan-out
# queue for connections: 1,000 concurrent requests to a 0.2 s fake took 30 s instead of 4.5 s.
POOL_LIMITS = {"max_connections": 1000, "max_keepalive_connections": 100}


class OllamaEngine(RemoteEngine):
    protocol = "ollama"

    def __init__(self, endpoint: Endpoint):
        ollama = import_sdk(self.protocol)
        import httpx                           # the ollama SDK's transport, installed with it

        key = secret(endpoint)                 # Ollama's cloud takes a bearer key; a local server needs none
        headers = {"authorization": f"Bearer {key}"} if key else None
        # host None lets the SDK use OLLAMA_HOST, else 127.0.0.1:11434
        self._client = ollama.AsyncClient(host=endpoint.base_url, timeout=endpoint.timeout, headers=headers,
                                          limits=httpx.Limits(**POOL_LIMITS))

    def _conversation(self, messages: list[dict]) -> dict[str, Any]:
        return {"messages": ollama_messages(messages)}

    def _hold_to(self, schema: ResponseSchema, kwargs: dict[str, Any]) -> None:
        kwargs["format"] = schema.json_schema

    async def _complete(self, kwargs: dict[str, Any], request: ChatRequest) -> ChatResult:
        response = await self._client.chat(**{**kwargs, "stream": False})
        reply = ReplyBuilder(request.parse_think_tags)
        _absorb(reply, response)
        result = reply.result()
        result.logprobs = _logprobs(response) if kwargs.get("logprobs") else None
        return result

    async def _stream_once(self, kwargs: dict[str, Any], request: ChatRequest) -> AsyncIterator[ChatDelta | ChatResult]:
        reply = ReplyBuilder(request.parse_think_tags)
        logprobs: list[TokenLogprob] | None = [] if kwargs.get("logprobs") else None
        async with aclosing(await self._client.chat(**{**kwargs, "stream": True})) as parts:
            async for part in parts:
                for delta in _absorb(reply, part):
                    yield delta
                if logprobs is not None:
                    logprobs += _logprobs(part)
        for item in reply.finish():
            if isinstance(item, ChatResult):
                item.logprobs = logprobs
            yield item


def _absorb(reply: ReplyBuilder, part: Any) -> list[ChatDelta]:
    """One stream part or a whole response. Tool calls may ride on any part, even one with no content."""
    message = part.message
    deltas = reply.add_thinking(message.thinking) + reply.add_text(message.content)
    for call in message.tool_calls or []:
        reply.add_tool_call(name=call.function.name, arguments=dict(call.function.arguments))
    if part.done:
        reply.stop_reason = part.done_reason
        reply.usage = _usage(part)
    return deltas


def _logprobs(part: Any) -> list[TokenLogprob]:
    """The tokens of a whole response, or of one stream part, with their log-probabilities and the alternatives
    asked for. Ollama sends each token's bytes too, but the SDK's types drop them."""
    return [TokenLogprob(token=token.token, logprob=token.logprob,
                         top_logprobs=[TopLogprob(token=other.token, logprob=other.logprob)
                                       for other in token.top_logprobs or []])
            for token in part.logprobs or []]


def _usage(part: Any) -> Usage | None:
    if part.prompt_eval_count is None and part.eval_count is None:
        return None
    prompt, generated = part.prompt_eval_count or 0, part.eval_count or 0
    return Usage(input_tokens=prompt, output_tokens=generated, total_tokens=prompt + generated)
