"""The llama.cpp engine: a GGUF model in this process, through llama-cpp-python's OpenAI-shaped chat API.

llama.cpp is not thread-safe, and a streamed completion is a generator that must run to its end before
the next one starts. So every call into the model runs on the engine's one worker thread, and a request
holds the engine's turn (a FIFO lock: waiting requests go in arrival order) from its first token to its
last. The event loop stays free meanwhile: chunks are pulled from the worker one at a time.
"""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor
from contextlib import aclosing
from typing import Any, AsyncIterator, Callable, Iterator, TypeVar

import llama_cpp

from ...adapters.openai import openai_messages
from ...models.errors import ContextOverflowError
from ...models.limits import fewest_tokens
from ...models.load import ModelLoad, Target
from ...models.wire import ChatDelta, ChatRequest, ChatResult, TokenCount, TokenLogprob, Usage
from ..reply import ReplyBuilder
from ..tool_formats import ForcedToolCalls

T = TypeVar("T")
_REASONING_FIELDS = ("reasoning_content", "reasoning")   # where llama.cpp's reasoning parsers put thinking
_OVERFLOW_MARK = "exceed context window"                 # llama.cpp's own refusal of a prompt too long
_LOGITS_MARK = "logits_all=False"                        # llama-cpp-python's refusal of logprobs
# llama.cpp pads the context window to a multiple of this, but llama-cpp-python sizes its token buffers by
# the unpadded request: a prompt between the two then fails with a numpy broadcast error, not an overflow.
_CTX_PADDING = 256
_OVERFLOW_ADVICE = "Shorten the conversation, advertise fewer tools, or load the model with a larger options['n_ctx']."


class LlamaCppEngine:
    """One GGUF model, loaded in ``__init__``; ``load.options`` are LlamaCppClient's constructor arguments."""

    def __init__(self, load: ModelLoad, target: Target):
        self._llm = llama_cpp.Llama(**llama_kwargs(target, **load.options))
        self._longest_token = longest_token_bytes(self._llm)
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llamacpp")
        self._turn = asyncio.Lock()

    async def run(self, request: ChatRequest) -> ChatResult | TokenCount:
        if request.count_only:
            return await self.count_tokens(request)
        async with aclosing(self._run(request, stream=False)) as items:
            async for item in items:
                pass
        return item

    def stream(self, request: ChatRequest) -> AsyncIterator[ChatDelta | ChatResult]:
        return self._run(request, stream=True)

    async def count_tokens(self, request: ChatRequest) -> TokenCount:
        """The prompt's tokens as ``create_chat_completion`` feeds them: the model's own chat handler formats and
        tokenizes the messages and tools (``PromptOnly``), and nothing is generated. It takes a turn like any request,
        as the handler's work runs on the model's thread."""
        async with self._turn:
            return TokenCount(input_tokens=await self._in_worker(_prompt_tokens, self._llm, request))

    async def aclose(self) -> None:
        async with self._turn:
            await self._in_worker(self._llm.close)
        self._worker.shutdown()

    async def _run(self, request: ChatRequest, stream: bool) -> AsyncIterator[ChatDelta | ChatResult]:
        """Deltas, then the result: a whole reply is absorbed as a stream of one part."""
        schema = request.response_schema
        reply = ReplyBuilder(request.parse_think_tags,            # a call forced by grammar is the whole answer
                             text_tool_calls=ForcedToolCalls(schema) if schema and schema.calls else None)
        logprobs: list[TokenLogprob] | None = [] if request.params.get("logprobs") else None
        parts = self._parts(request, stream)
        async with self._turn:
            try:
                while (part := await self._in_worker(next, parts, None)) is not None:
                    for delta in _absorb(reply, part, logprobs, request.params.get("top_logprobs") or 0):
                        yield delta
            finally:                                   # a caller that stops early frees the model here
                await self._in_worker(parts.close)
        for item in reply.finish():
            if isinstance(item, ChatResult):
                item.logprobs = logprobs
            yield item

    def _parts(self, request: ChatRequest, stream: bool) -> Iterator[dict]:
        """The reply's stream chunks, or the whole reply as one part. Runs on the worker thread."""
        messages = openai_messages(request.messages)
        _check_fits(self._llm, messages, self._longest_token)
        if request.params.get("temperature") == 0 or request.params.get("seed") is not None:
            # Greedy and seeded answers must repeat. A prompt prefix cached by the previous request is not evaluated
            # again, so the rest runs in another batch shape whose kernels round differently, and a near-tie between
            # two tokens can flip (SmolLM2 gave two answers to one greedy question). Other sampled requests keep it.
            self._llm.reset()
        try:
            reply = self._llm.create_chat_completion(**request.params, messages=messages,
                                                     tools=request.tools or None, stream=stream,
                                                     grammar=_grammar(request))
            yield from (reply if stream else [reply])
        except ValueError as error:                    # the exact count, template and tools included
            if _LOGITS_MARK in str(error):
                raise ValueError(f"{error}: load the model with options model_kwargs {{logits_all: true}} to answer "
                                 "logprobs (it keeps the logits of every position: n_ctx x vocabulary floats)"
                                 ) from None
            if _OVERFLOW_MARK not in str(error):
                raise
            raise ContextOverflowError(f"{error}. {_OVERFLOW_ADVICE}") from error

    def _in_worker(self, call: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        return asyncio.get_running_loop().run_in_executor(self._worker, call, *args)


class PromptOnly:
    """The model as its chat handler sees it, but stopped at the completion the handler asks for: the handler formats
    and tokenizes the prompt exactly as for an answer, and ``create_completion`` hands the prompt back unanswered."""

    def __init__(self, llm: llama_cpp.Llama):
        self._llm = llm

    def __getattr__(self, name: str) -> Any:
        return getattr(self._llm, name)

    def create_completion(self, prompt: list[int] | str, **settings: Any) -> Any:
        raise _Prompt(prompt)


class _Prompt(Exception):
    """How ``PromptOnly`` stops a handler: the prompt it would have completed."""

    def __init__(self, prompt: list[int] | str):
        super().__init__("prompt formatted")
        self.prompt = prompt


def _prompt_tokens(llm: llama_cpp.Llama, request: ChatRequest) -> int:
    """Runs on the worker thread: ``create_chat_completion``'s own path (its choice of handler, its arguments) on
    ``PromptOnly``. Handlers that write their prompt as text over several completions (functionary, chatml-function-
    calling) have no one prompt to count."""
    try:
        llama_cpp.Llama.create_chat_completion(PromptOnly(llm), **request.params,
                                               messages=openai_messages(request.messages),
                                               tools=request.tools or None)
    except _Prompt as formatted:
        if isinstance(formatted.prompt, list):
            return len(formatted.prompt)
    raise ValueError(f"The chat format of this model ({llm.chat_format or 'its chat_handler'}) does not hand llama.cpp "
                     "one tokenized prompt (it writes text over several completions), so its tokens cannot be counted "
                     "without generating; with the GGUF's own chat template (the default) they can.")


def _grammar(request: ChatRequest) -> Any:
    """``schema=`` (or a forced tool call's schema) as llama.cpp holds to it: a grammar built from the JSON Schema, so
    the answer parses. A schema its converter cannot take is the caller's mistake (a ValueError), not the engine's."""
    if request.response_schema is None:
        return None
    from llama_cpp import LlamaGrammar

    try:
        return LlamaGrammar.from_json_schema(json.dumps(request.response_schema.json_schema), verbose=False)
    except Exception as error:          # noqa: BLE001 -- the converter fails with asserts, KeyErrors, ...
        raise ValueError("The schema (schema=, response_format or a forced tool's parameters) cannot be made a "
                         f"llama.cpp grammar: {type(error).__name__}: {error}") from None


def llama_kwargs(target: Target, *, model_path: str | None = None, n_ctx: int = 4096, n_gpu_layers: int | None = None,
                 chat_format: str | None = None, chat_handler: Any = None, verbose: bool = False,
                 model_kwargs: dict | None = None) -> dict[str, Any]:
    """``llama_cpp.Llama`` arguments from the load options; all layers go to the GPU when placement chose one.

    ``n_ctx`` is rounded up to llama.cpp's padding, so that the window it reports is the one it can hold.
    """
    if not model_path:
        raise ValueError("llama.cpp models need options['model_path']: the path of the .gguf file to load.")
    if n_gpu_layers is None:
        n_gpu_layers = -1 if target.device == "cuda" else 0
    n_ctx = -(-n_ctx // _CTX_PADDING) * _CTX_PADDING
    return dict(model_path=str(model_path), n_ctx=n_ctx, n_gpu_layers=n_gpu_layers, chat_format=chat_format,
                chat_handler=chat_handler, verbose=verbose, **(model_kwargs or {}))


def longest_token_bytes(llm: llama_cpp.Llama) -> int | None:
    """The most bytes of text one token stands for (its piece, special tokens spelled out), read once at load; None
    for vocabularies that drop or normalize text (WordPiece, Unigram), whose prompts are only tokenized."""
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    if llama_cpp.llama_vocab_type(vocab) not in (llama_cpp.LLAMA_VOCAB_TYPE_SPM, llama_cpp.LLAMA_VOCAB_TYPE_BPE):
        return None
    # With no buffer llama.cpp answers minus the piece's length; lstrip 0 keeps SentencePiece's leading space.
    return max(-llama_cpp.llama_token_to_piece(vocab, token, None, 0, 0, True)
               for token in range(llama_cpp.llama_vocab_n_tokens(vocab)))


def _check_fits(llm: llama_cpp.Llama, messages: list[dict], longest_token: int | None) -> None:
    """aimu's pre-flight: the messages' text against ``n_ctx()``; first by the bound (``fewest_tokens``: the prompt
    holds every message's text, whatever the template adds), which refuses a huge one without tokenizing it.

    The count leaves out the chat template's own tokens, so it never refuses a prompt that fits; llama.cpp's
    exact check (translated in ``_parts``) catches the few that the estimate lets through.
    """
    texts, n_ctx = [_text_of(message.get("content")) for message in messages], llm.n_ctx()
    if longest_token and (fewest := fewest_tokens("".join(texts), longest_token)) > n_ctx:
        count = f"at least {fewest}"
    else:
        text = "\n".join(f"{message.get('role', '')}: {part}" for message, part in zip(messages, texts))
        if (tokens := len(llm.tokenize(text.encode(), add_bos=True, special=True))) <= n_ctx:
            return
        count = f"about {tokens}"
    raise ContextOverflowError(f"The conversation is {count} tokens but the model was loaded with n_ctx={n_ctx}. "
                               f"{_OVERFLOW_ADVICE}")


def _text_of(content: Any) -> str:
    """A message's text; image parts have no text to count."""
    if isinstance(content, list):
        return " ".join(part.get("text", "") for part in content if part.get("type") == "text")
    return content or ""


def _absorb(reply: ReplyBuilder, part: dict, logprobs: list[TokenLogprob] | None = None, top: int = 0
            ) -> list[ChatDelta]:
    """Feed one stream chunk (a ``delta``) or a whole reply (a ``message``): the same fields, chunks in fragments;
    their tokens' logprobs join ``logprobs`` when it is a list, each with its ``top`` likeliest alternatives
    (llama-cpp-python adds the chosen token to them)."""
    choice = part["choices"][0]
    for token in ((choice.get("logprobs") or {}).get("content") or []) if logprobs is not None else []:
        alternatives = sorted(token["top_logprobs"], key=lambda other: -other["logprob"])[:top]
        logprobs.append(TokenLogprob.model_validate({**token, "top_logprobs": alternatives}))
    message = choice.get("message") or choice.get("delta") or {}
    deltas = reply.add_thinking(_reasoning(message)) + reply.add_text(message.get("content"))
    for position, call in enumerate(message.get("tool_calls") or []):
        function = call.get("function") or {}
        reply.add_tool_call(call.get("index", position), id=call.get("id"), name=function.get("name"),
                            arguments=function.get("arguments"))
    reply.stop_reason = choice.get("finish_reason") or reply.stop_reason
    if part.get("usage"):                             # whole replies only: llama.cpp streams report none
        reply.usage = _usage(part["usage"])
    return deltas


def _reasoning(message: dict) -> str | None:
    return next((message[name] for name in _REASONING_FIELDS if message.get(name)), None)


def _usage(usage: dict) -> Usage:
    return Usage(input_tokens=usage.get("prompt_tokens", 0), output_tokens=usage.get("completion_tokens", 0),
                 total_tokens=usage.get("total_tokens", 0))
