"""Completions with n choices, for chat and for OpenAI's legacy ``POST /v1/completions``.

``n`` choices are n independent requests through the model's backend, run side by side (a seeded request's choice
``i`` takes ``seed + i``, so the choices differ, each deterministically); their usage is summed, and a stream
carries each choice's index on every chunk. A legacy completion's prompt is sent as the one user message of a chat,
for every model: no engine here takes raw text, so the model's chat template wraps the prompt and what comes back
is an assistant's answer to it, not a raw continuation of the text.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from contextlib import aclosing
from typing import Any, AsyncIterator, Awaitable, Callable

from pydantic import Field, field_validator, model_validator

from ..clients.requests import Answer, fold
from ..models.limits import current_limits
from ..models.wire import ChatDelta, ChatRequest, ChatResult, TokenLogprob
from .openai_api import (Body, ChatCompletionRequest, StreamOptions, chat_chunk, chat_completion, completion_id,
                         delta_out, finish_reason, logprobs_out, summed_usage, tool_calls_delta, usage_out)
from .served_models import Served

CountTokens = Callable[[str, dict | None], None]
_DONE = object()


class CompletionRequest(Body):
    """OpenAI's legacy text completion. ``echo`` puts the prompt before the text (not with ``logprobs``: the
    prompt's tokens are not scored); ``suffix`` (insertion) and ``best_of`` above 1 are refused."""

    model: str = Field(min_length=1)
    prompt: str | list[str] = Field(min_length=1)
    max_tokens: int | None = Field(16, ge=1)              # OpenAI's default for this endpoint
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int = Field(1, ge=1)                               # times the prompts: at most limits.max_choices
    stream: bool = False
    stream_options: StreamOptions | None = None
    logprobs: int | None = Field(None, ge=0, le=20)
    echo: bool = False
    suffix: str | None = None
    best_of: int | None = Field(None, ge=1)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    logit_bias: dict[str, float] | None = None
    user: str | None = None

    @field_validator("suffix")
    @classmethod
    def _no_suffix(cls, suffix: str | None) -> None:
        if suffix:
            raise ValueError("suffix (text inserted between prompt and suffix) is not supported: the prompt is sent "
                             "to a chat model as a user message")
        return None

    @field_validator("best_of")
    @classmethod
    def _no_best_of(cls, best_of: int | None) -> int | None:
        if best_of is not None and best_of > 1:
            raise ValueError("best_of is not supported: ask for n choices and pick among them")
        return best_of

    @model_validator(mode="after")
    def _echo_without_logprobs(self) -> CompletionRequest:
        if self.echo and self.logprobs is not None:
            raise ValueError("echo with logprobs is not supported: the prompt's tokens are not scored")
        return self

    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else self.prompt

    def as_chat(self, prompt: str) -> ChatCompletionRequest:
        """One prompt as the chat body it is sent as."""
        fields = self.model_dump(include={"model", "max_tokens", "temperature", "top_p", "stop", "seed", "n",
                                          "stream", "presence_penalty", "frequency_penalty", "logit_bias"},
                                 exclude_none=True)
        if self.logprobs is not None:
            fields.update(logprobs=True, top_logprobs=self.logprobs)
        return ChatCompletionRequest(messages=[{"role": "user", "content": prompt}], **fields)


# ----- running n choices -----

def chat_requests(served: Served, body: ChatCompletionRequest) -> list[ChatRequest]:
    """The body's n requests, choice ``i`` with ``seed + i``; n within ``limits.max_choices``."""
    current_limits().check_choices(body.n)
    return [body.as_request(served.model, served.warn, index) for index in range(body.n)]


def completion_requests(served: Served, body: CompletionRequest) -> list[ChatRequest]:
    """n requests per prompt, in OpenAI's order of choices (prompt by prompt, n each)."""
    prompts = body.prompts()
    current_limits().check_choices(body.n * len(prompts))
    requests = []
    for prompt in prompts:
        chat = body.as_chat(prompt)
        requests += [chat.as_request(served.model, served.warn, index) for index in range(body.n)]
    return requests


async def answers(served: Served, requests: list[ChatRequest]) -> list[tuple[ChatResult, Answer]]:
    """Every request's result side by side; the first failure cancels the others and is raised."""
    results = await _all([served.backend.call(request) for request in requests])
    return [(result, fold(result, served.model)) for result in results]


async def _all(calls: list[Awaitable[ChatResult]]) -> list[ChatResult]:
    if len(calls) == 1:
        return [await calls[0]]
    tasks = [asyncio.ensure_future(call) for call in calls]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            if task.exception() is not None:
                raise task.exception()
        return [task.result() for task in tasks]
    finally:
        for task in tasks:
            task.cancel()


async def merged(streams: list[AsyncIterator]) -> AsyncIterator[tuple[int, Any]]:
    """``(index, item)`` of every stream as items come; the first failure ends them all and is raised, and
    closing this closes every stream (a client that went away frees each choice's generation)."""
    if len(streams) == 1:
        async with aclosing(streams[0]) as items:
            async for item in items:
                yield 0, item
        return
    queue: asyncio.Queue = asyncio.Queue()

    async def pump(index: int, stream: AsyncIterator) -> None:
        try:
            async with aclosing(stream) as items:
                async for item in items:
                    await queue.put((index, item, None))
            await queue.put((index, _DONE, None))
        except Exception as error:              # handed to the consumer, which raises it
            await queue.put((index, None, error))

    tasks = [asyncio.create_task(pump(index, stream)) for index, stream in enumerate(streams)]
    try:
        running = len(tasks)
        while running:
            index, item, error = await queue.get()
            if error is not None:
                raise error
            if item is _DONE:
                running -= 1
            else:
                yield index, item
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _results(served: Served, requests: list[ChatRequest]) -> AsyncIterator[tuple[int, ChatDelta | ChatResult]]:
    async with aclosing(merged([served.backend.stream(request) for request in requests])) as items:
        async for item in items:
            yield item


# ----- chat -----

async def chat_answer(served: Served, body: ChatCompletionRequest, count_tokens: CountTokens) -> dict:
    """OpenAI's chat completion of ``body``'s n choices."""
    choices = await answers(served, chat_requests(served, body))
    count_tokens(body.model, summed_usage([answer for _, answer in choices]))
    return chat_completion(completion_id(), body, choices)


async def chat_chunks(served: Served, body: ChatCompletionRequest, count_tokens: CountTokens) -> AsyncIterator[dict]:
    """OpenAI's chunks for n choices. The first item of a choice is awaited before the role chunks, so an early
    error has a status; each choice's logprobs come in one chunk after its text, then its finish."""
    id, name = completion_id(), body.model
    requests = chat_requests(served, body)
    results = [ChatResult() for _ in requests]          # each stream's last item replaces its own
    async with aclosing(_results(served, requests)) as items:
        item = await anext(items, None)
        for index in range(len(requests)):
            yield chat_chunk(id, name, {"role": "assistant", "content": ""}, index=index)
        while item is not None:
            index, part = item
            if isinstance(part, ChatDelta):
                yield chat_chunk(id, name, delta_out(part), index=index)
            else:
                results[index] = part
            item = await anext(items, None)
    folded = [fold(result, served.model) for result in results]
    for index, (result, answer) in enumerate(zip(results, folded)):
        if result.logprobs is not None:
            yield chat_chunk(id, name, {}, index=index, logprobs=logprobs_out(result.logprobs))
        if answer.tool_calls:
            yield chat_chunk(id, name, tool_calls_delta(answer.tool_calls), index=index)
        yield chat_chunk(id, name, {}, finish_reason(answer.stop_reason, answer.tool_calls, bool(body.functions)),
                         index=index)
    usage = summed_usage(folded)
    count_tokens(name, usage)
    if body.stream_options and body.stream_options.include_usage:
        yield chat_chunk(id, name, None, usage=usage_out(usage))


# ----- legacy text completions -----

async def text_answer(served: Served, body: CompletionRequest, count_tokens: CountTokens) -> dict:
    """OpenAI's ``text_completion``: a choice per prompt and n."""
    choices = await answers(served, completion_requests(served, body))
    usage = summed_usage([answer for _, answer in choices])
    count_tokens(body.model, usage)
    prompts = [prompt for prompt in body.prompts() for _ in range(body.n)]
    out = [text_choice(index, _echoed(body, prompt) + answer.content, finish_reason(answer.stop_reason, []),
                       legacy_logprobs(result.logprobs))
           for index, (prompt, (result, answer)) in enumerate(zip(prompts, choices))]
    return _text_object(text_id(), body.model, out, usage_out(usage))


async def text_chunks(served: Served, body: CompletionRequest, count_tokens: CountTokens) -> AsyncIterator[dict]:
    """OpenAI's ``text_completion`` chunks: each choice's text as it comes (with ``echo``, its prompt first),
    its logprobs in one chunk after, then its finish; thinking is not text and is left out."""
    id, name = text_id(), body.model
    requests = completion_requests(served, body)
    prompts = [prompt for prompt in body.prompts() for _ in range(body.n)]
    results = [ChatResult() for _ in requests]
    async with aclosing(_results(served, requests)) as items:
        item = await anext(items, None)
        for index, prompt in enumerate(prompts):
            if body.echo:
                yield _text_object(id, name, [text_choice(index, prompt)])
        while item is not None:
            index, part = item
            if isinstance(part, ChatResult):
                results[index] = part
            elif part.phase == "generating":
                yield _text_object(id, name, [text_choice(index, part.text)])
            item = await anext(items, None)
    folded = [fold(result, served.model) for result in results]
    for index, (result, answer) in enumerate(zip(results, folded)):
        yield _text_object(id, name, [text_choice(index, "", finish_reason(answer.stop_reason, []),
                                                  legacy_logprobs(result.logprobs))])
    usage = summed_usage(folded)
    count_tokens(name, usage)
    if body.stream_options and body.stream_options.include_usage:
        yield _text_object(id, name, [], usage_out(usage))


def text_id() -> str:
    return f"cmpl-{uuid.uuid4().hex[:24]}"


def text_choice(index: int, text: str, finish: str | None = None, logprobs: dict | None = None) -> dict:
    """One choice, or a chunk of one (``finish`` None until its last)."""
    return {"text": text, "index": index, "logprobs": logprobs, "finish_reason": finish}


def legacy_logprobs(logprobs: list[TokenLogprob] | None) -> dict | None:
    """The legacy shape: tokens, their logprobs, the top ones as a dict per position, each token's text offset."""
    if logprobs is None:
        return None
    offsets, at = [], 0
    for token in logprobs:
        offsets.append(at)
        at += len(token.token)
    return {"tokens": [token.token for token in logprobs], "token_logprobs": [token.logprob for token in logprobs],
            "top_logprobs": [{top.token: top.logprob for top in token.top_logprobs} for token in logprobs],
            "text_offset": offsets}


def _echoed(body: CompletionRequest, prompt: str) -> str:
    return prompt if body.echo else ""


def _text_object(id: str, model: str, choices: list[dict], usage: dict | None = None) -> dict:
    answer: dict[str, Any] = {"id": id, "object": "text_completion", "created": int(time.time()), "model": model,
                              "choices": choices}
    if usage is not None:
        answer["usage"] = usage
    return answer


__all__ = ["CompletionRequest", "chat_answer", "chat_chunks", "merged", "text_answer", "text_chunks"]
