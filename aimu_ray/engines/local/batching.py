"""Dynamic batching for ``model.generate``: concurrent requests on one model share forward passes.

One thread owns the model. Requests queue while a batch runs; when it ends, the queued requests
whose sampling settings are equal form the next batch (Ray Serve's ``@serve.batch`` and TGI's
simple batching work the same way). An idle engine waits up to ``wait_s`` for more requests before it
starts, as ``@serve.batch``'s ``batch_wait_timeout_s`` does: requests of one burst reach it a
millisecond or two apart (each a Ray call), and a batch started on the first alone keeps the others
waiting for its whole generation. Inside a batch each row keeps its own life: prompts are
left-padded, a stopping criterion ends a row at its own ``max_new_tokens`` or when its consumer
went away, and a streamer hands every step's tokens to each row's asyncio queue as they are made.

Why not transformers' continuous batching (``generate_batch``, ``init_continuous_batching``)? It was
tried on CPU with the tiny test Llama: it works and streams, but it sizes its paged KV cache from
free memory (6.4 GB resident for a 125k-parameter model, ~5 s before the first token), and its
sampling settings are fixed per manager (per request only temperature, top-k and top-p;
repetition penalty, min-p and beam search are dropped or unsupported). aimu's callers set those
per call, so plain ``generate`` over batches of equal settings is the faithful choice.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import math
import threading
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable, Hashable, Iterator

import torch
from transformers import (GenerationConfig, LogitsProcessor, LogitsProcessorList, StoppingCriteria,
                          StoppingCriteriaList)
from transformers.generation.streamers import BaseStreamer

from ...models.errors import ModelError
from .grammar import GrammarMask

logger = logging.getLogger("aimu_ray")
_END = object()


class Row:
    """One request's place in a batch. Made on the consumer's event loop; fed from the generation thread.

    ``key``: rows with equal keys may share a forward pass. ``settings``: the row's GenerationConfig.
    ``extra``: model inputs beyond the prompt ids (an image's pixel values); a row that has them must
    have a key of its own, since only the first row's extras reach ``generate``. ``grammar``: the compiled
    grammar its tokens must follow (``schema=``); rows of one key share it. ``seed``: the sampling seed of a row
    that must have a key of its own (``generate`` draws from one generator for the whole batch, so only a batch
    of one repeats). ``top_logprobs``: asked for logprobs, with this many alternatives; ``scores`` then holds,
    per generated token, ``(token, logprob, [(alternative, logprob), ...])``.
    """

    def __init__(self, input_ids: list[int], max_new_tokens: int, settings: GenerationConfig, key: Hashable,
                 extra: dict[str, Any] | None = None, grammar: Any = None, seed: int | None = None,
                 top_logprobs: int | None = None):
        self.input_ids = input_ids
        self.max_new_tokens = max_new_tokens
        self.settings = settings
        self.key = key
        self.extra = extra or {}
        self.grammar = grammar
        self.seed = seed
        self.top_logprobs = top_logprobs
        self.scores: list[tuple[int, float, list[tuple[int, float]]]] = []
        self._step_scores: Any = None           # this step's log-probabilities, until its token is known
        self.generated = 0
        self.cancelled = False                 # the consumer stopped listening
        self._ended = False
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue = asyncio.Queue()

    @property
    def stop_reason(self) -> str:
        return "length" if self.generated >= self.max_new_tokens else "stop"

    async def tokens(self) -> AsyncIterator[list[int]]:
        """The row's token ids as the model makes them; a failure of its batch is raised here."""
        while (item := await self._queue.get()) is not _END:
            if isinstance(item, ModelError):
                raise item
            if isinstance(item, BaseException):
                raise ModelError(f"Generation failed ({type(item).__name__}: {item}); the engine keeps "
                                 "serving, so the request may be retried.") from item
            yield item

    def cancel(self) -> None:
        self.cancelled = True

    # The feeding side: called from the generation thread (``fail`` also from ``DynamicBatcher.close``).

    def accept(self, token: int, is_eos: bool) -> None:
        if self._step_scores is not None:
            self.scores.append(_scored(token, self._step_scores, self.top_logprobs))
            self._step_scores = None
        self.generated += 1
        self._send([token])
        if is_eos or self.generated >= self.max_new_tokens:
            self.end()

    def end(self) -> None:
        if not self._ended:
            self._ended = True
            self._send(_END)

    def fail(self, error: BaseException) -> None:
        if not self._ended:
            self._ended = True
            self._send(error)

    @property
    def ended(self) -> bool:
        return self._ended

    def _send(self, item: Any) -> None:
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
        except RuntimeError:                   # the consumer's event loop is gone
            self.cancelled = True


@dataclass(frozen=True)
class BatchStats:
    """Counters that show batching at work: ``rows / generate_calls`` is the mean batch size.

    ``tokens`` (generated, all rows) grows when a batch ends; ``waiting`` is the queue right now.
    """

    generate_calls: int = 0
    rows: int = 0
    tokens: int = 0
    waiting: int = 0


class DynamicBatcher:
    """Runs ``generate(rows)`` on its own thread, one batch at a time, grouping waiting rows by key."""

    def __init__(self, generate: Callable[[list[Row]], None], max_batch_size: int, name: str, wait_s: float = 0.0):
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be at least 1, not {max_batch_size}.")
        if wait_s < 0:
            raise ValueError(f"batch_wait_timeout_s must not be negative, not {wait_s}.")
        self._generate = generate
        self._max = max_batch_size
        self._wait_s = wait_s
        self._waiting: deque[Row] = deque()
        self._running: list[Row] = []
        self._ready = threading.Condition()
        self._closed = False
        self._counts = {"generate_calls": 0, "rows": 0, "tokens": 0}
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    @property
    def stats(self) -> BatchStats:
        with self._ready:
            return BatchStats(**self._counts, waiting=len(self._waiting))

    def submit(self, row: Row) -> None:
        with self._ready:
            if self._closed:
                raise ModelError("The engine is closed; load the model again.")
            self._waiting.append(row)
            self._ready.notify()

    def close(self) -> None:
        """Fail every row (the running batch stops at its next step) and wait for the thread."""
        with self._ready:
            self._closed = True
            for row in self._running:
                row.cancel()
                row.fail(ModelError("The engine was closed while this request ran."))
            for row in self._waiting:
                row.fail(ModelError("The engine was closed before this request ran."))
            self._waiting.clear()
            self._ready.notify()
        self._thread.join()

    def _serve(self) -> None:
        while (batch := self._next_batch()) is not None:
            try:
                self._generate(batch)
            except Exception as error:         # fails exactly this batch; the thread serves on
                logger.exception("Generation failed for a batch of %d rows", len(batch))
                for row in batch:
                    row.fail(error)
            for row in batch:
                row.end()
            with self._ready:
                self._running = []
                self._counts["tokens"] += sum(row.generated for row in batch)

    def _next_batch(self) -> list[Row] | None:
        """The oldest waiting row and those that may share its forward passes, up to the batch size."""
        with self._ready:
            while True:
                self._ready.wait_for(lambda: self._waiting or self._closed)
                self._ready.wait_for(lambda: len(self._waiting) >= self._max or self._closed, self._wait_s)
                if self._closed:
                    return None
                live = [row for row in self._waiting if not row.cancelled]
                self._waiting.clear()
                if live:
                    break
            batch = [row for row in live if row.key == live[0].key][: self._max]
            self._waiting.extend(row for row in live if row not in batch)
            self._running = batch
            self._counts["generate_calls"] += 1
            self._counts["rows"] += len(batch)
            return batch


def generate_rows(model: Any, rows: list[Row]) -> None:
    """One ``model.generate`` call for rows of equal settings; tokens reach each row as they are made."""
    config = copy.deepcopy(rows[0].settings)
    config.max_new_tokens = max(row.max_new_tokens for row in rows)
    input_ids, attention_mask = _left_pad([row.input_ids for row in rows], config.pad_token_id, model.device)
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask,
              **{name: value.to(model.device) for name, value in rows[0].extra.items()}}
    streamer = _RowStreamer(rows, config.eos_token_id)
    if (config.num_beams or 1) > 1:                  # beam search cannot stream: the rows get their tokens at the end
        sequences = model.generate(**inputs, generation_config=config)
        for step in sequences[:, input_ids.shape[1]:].T:
            streamer.put(step)
        return
    stop = StoppingCriteriaList([_RowLimits(rows, input_ids.shape[1])])
    masks = LogitsProcessorList([GrammarMask(rows, input_ids.shape[1])] if rows[0].grammar is not None else [])
    if any(row.top_logprobs is not None for row in rows):
        masks.append(_LogProbs(rows))
    with _seeded(rows[0].seed, model.device):
        model.generate(**inputs, generation_config=config, streamer=streamer, stopping_criteria=stop,
                       logits_processor=masks)


@contextmanager
def _seeded(seed: int | None, device: Any) -> Iterator[None]:
    """``generate`` draws from torch's global generator (it takes no other): a seeded batch (of one row) seeds it,
    and the state before comes back after. Only the generation thread samples, so nothing draws in between."""
    if seed is None:
        yield
        return
    devices = [device] if getattr(device, "type", "cpu") == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


class _LogProbs(LogitsProcessor):
    """Keeps each asking row's log-probabilities of this step for its token, which the streamer hands it next.

    Placed after the penalties and the grammar and before the sampling warpers (temperature, top-k, top-p): these
    are the model's distribution over next tokens as the request shaped it, not the sampler's truncated one."""

    def __init__(self, rows: list[Row]):
        self._rows = rows

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        logprobs = torch.log_softmax(scores.float(), dim=-1).cpu()
        for row, row_logprobs in zip(self._rows, logprobs):
            if row.top_logprobs is not None and not row.ended:
                row._step_scores = row_logprobs
        return scores


def _scored(token: int, logprobs: torch.Tensor, top: int) -> tuple[int, float, list[tuple[int, float]]]:
    """The token's log-probability and the ``top`` likeliest, leaving out those a mask ruled out (-inf); OpenAI
    writes -9999.0 for a log-probability too small to say, and so does this."""
    values, ids = torch.topk(logprobs, top) if top else (torch.empty(0), torch.empty(0, dtype=torch.long))
    alternatives = [(alternative, value) for alternative, value in zip(ids.tolist(), values.tolist())
                    if math.isfinite(value)]
    chosen = float(logprobs[token])
    return token, chosen if math.isfinite(chosen) else -9999.0, alternatives


def _left_pad(prompts: list[list[int]], pad_id: int, device: Any) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(ids) for ids in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, prompt in enumerate(prompts):
        ids[i, width - len(prompt):] = torch.tensor(prompt, dtype=torch.long)
        mask[i, width - len(prompt):] = 1
    return ids.to(device), mask.to(device)


class _RowStreamer(BaseStreamer):
    """Routes each step's tokens (one per row) to the rows still running; ignores the prompt."""

    def __init__(self, rows: list[Row], eos_token_id: int | list[int] | None):
        self._rows = rows
        self._eos = set([eos_token_id] if isinstance(eos_token_id, int) else eos_token_id or [])

    def put(self, value: torch.Tensor) -> None:
        if value.dim() > 1:                    # generate first puts the whole prompt batch
            return
        for row, token in zip(self._rows, value.tolist()):
            if row.ended:
                continue
            if row.cancelled:
                row.end()
            else:
                row.accept(token, token in self._eos)

    def end(self) -> None:
        for row in self._rows:
            row.end()


class _RowLimits(StoppingCriteria):
    """Ends each row at its own budget, or as soon as its consumer has gone (a per-row verdict)."""

    def __init__(self, rows: list[Row], prompt_width: int):
        self._rows = rows
        self._width = prompt_width
        self._limits = torch.tensor([row.max_new_tokens for row in rows])

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        generated = input_ids.shape[1] - self._width
        cancelled = torch.tensor([row.cancelled for row in self._rows])
        return ((generated >= self._limits) | cancelled).to(input_ids.device)
