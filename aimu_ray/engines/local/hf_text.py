"""Hugging Face transformers text models in this process: aimu's ``HuggingFaceClient``, served concurrently.

Three things differ from aimu, on purpose:

- Streaming is incremental in time. Generation runs on a worker thread that hands each step's
  tokens to the event loop; aimu calls ``generate`` before reading its streamer, so every chunk
  came after the whole answer.
- Concurrent requests share forward passes (``_batching``: dynamic batching over plain
  ``generate``; the module says why transformers' continuous batching was not used).
- Usage (input, output and total tokens) is reported, and the stop reason also for streams.

Everything else follows aimu: ``model_kwargs=None`` loads with ``dtype="auto"`` (plus the placed
``device_map`` on a GPU) and an explicit dict replaces those defaults; the chat template gets the
tools and ``enable_thinking`` (defaulting to whether the model thinks); ``<think>`` blocks are split,
also when the prompt itself opened one; tool calls written as text are parsed (``_tool_formats``), and a
call forced by ``tool_choice`` is generated under a grammar of the tools' schemas;
a prompt longer than the model's context raises ``ContextOverflowError`` before any work (one that a bound from
the vocabulary shows too long, before it is even tokenized: ``longest_token_bytes``).
"""

from __future__ import annotations

import asyncio
import copy
import gc
import json
import logging
import re
from contextlib import aclosing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Hashable

import jinja2
import torch
from transformers import (AutoModelForCausalLM, AutoModelForImageTextToText, AutoProcessor, AutoTokenizer,
                          GenerationConfig)
from transformers.utils import cached_file

from ...adapters.hf import hf_messages
from ...models.errors import ContextOverflowError
from ...models.limits import fewest_tokens
from ...models.load import ModelLoad, Target
from ...models.thinking import THINK_OPEN
from ...models.wire import ChatDelta, ChatRequest, ChatResult, TokenCount, TokenLogprob, TopLogprob, Usage
from .batching import BatchStats, DynamicBatcher, Row, generate_rows
from .grammar import SchemaGrammars
from ..reply import ReplyBuilder
from ..tool_formats import ForcedToolCalls, ToolCallStream

logger = logging.getLogger("aimu_ray")

DEFAULT_MAX_BATCH_SIZE = 16
DEFAULT_BATCH_WAIT_S = 0.01          # Ray Serve's @serve.batch default: 16 requests of a burst in one batch
# GenerationConfig keys that would change what one row of a batch is: several answers, stop strings the
# per-row bookkeeping cannot see, a dict instead of token ids, draft tokens. Allowed only at their defaults.
_FIXED_SETTINGS = {"num_return_sequences": 1, "stop_strings": None, "return_dict_in_generate": False,
                   "prompt_lookup_num_tokens": None}
_PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json")
# Knobs that only shape sampling: greedy decoding ignores them, and transformers warns about each one left set.
_SAMPLING_ONLY = ("temperature", "top_p", "top_k", "min_p", "typical_p", "epsilon_cutoff", "eta_cutoff")
# Tokenizer parts a prompt-length bound survives: normalizers that shrink text at most 4x, pre-tokenizers that keep it.
_UNICODE_NORMALIZERS = frozenset({"NFC", "NFD", "NFKC", "NFKD", "Lowercase"})
_KEEPING_PRE_TOKENIZERS = frozenset({"ByteLevel", "Metaspace", "Digits", "Split", "Punctuation", "UnicodeScripts"})


class HFTextEngine:
    """One transformers model, loaded in ``__init__``; ``run`` and ``stream`` may be called concurrently."""

    def __init__(self, load: ModelLoad, target: Target):
        self._label = load.label()
        self._processor = AutoProcessor.from_pretrained(load.model_id) if has_image_processor(load.model_id) else None
        self._tokenizer = self._processor.tokenizer if self._processor else AutoTokenizer.from_pretrained(load.model_id)
        model_class = AutoModelForImageTextToText if self._processor else AutoModelForCausalLM
        kwargs = model_kwargs(load.options.get("model_kwargs"), target)
        logger.info("Loading %s with %s (%s)", self._label, model_class.__name__, kwargs)
        self._model = model_class.from_pretrained(load.model_id, **kwargs).eval()
        self._defaults = _generation_defaults(self._model.generation_config, self._tokenizer)
        self._context = _context_limit(self._model.config, load.options.get("context_tokens"))
        self._longest_token = longest_token_bytes(self._tokenizer)
        self._pieces = TokenPieces(self._tokenizer)
        self._grammars = SchemaGrammars(self._tokenizer, self._model.get_output_embeddings().weight.shape[0])
        self._batcher = DynamicBatcher(self._generate, load.options.get("max_batch_size") or DEFAULT_MAX_BATCH_SIZE,
                                       name=f"generate {self._label}",
                                       wait_s=load.options.get("batch_wait_timeout_s", DEFAULT_BATCH_WAIT_S))

    @property
    def stats(self) -> BatchStats:
        """How many ``generate`` calls served how many rows: batching made visible to tests and benchmarks."""
        return self._batcher.stats

    async def run(self, request: ChatRequest) -> ChatResult | TokenCount:
        """The stream, drained: one path, so ``run`` and ``stream`` cannot disagree (a count: ``count_tokens``)."""
        if request.count_only:
            return await self.count_tokens(request)
        async with aclosing(self.stream(request)) as items:
            async for item in items:
                result = item
        return result

    async def stream(self, request: ChatRequest) -> AsyncIterator[ChatDelta | ChatResult]:
        """Deltas as the model makes tokens, then the ``ChatResult``; closing early frees the row's batch slot."""
        prompt = await asyncio.to_thread(self._prepare, request)
        row = Row(prompt.input_ids, prompt.max_new_tokens, prompt.settings, prompt.key, prompt.extra, prompt.grammar,
                  seed=prompt.asks.seed, top_logprobs=prompt.asks.top_logprobs)
        reply = ReplyBuilder(request.parse_think_tags, start_inside=prompt.opens_thinking and prompt.grammar is None,
                             text_tool_calls=_text_tool_calls(request))
        text, stops = IncrementalDecoder(self._tokenizer), StopStrings(prompt.asks.stop)
        received = 0                                   # tokens read: those past a stop string are not the answer's
        self._batcher.submit(row)
        try:
            async for ids in row.tokens():
                received += len(ids)
                for delta in reply.add_text(stops.push(text.push(ids))):
                    yield delta
                if stops.hit:                          # the row ends at its next step
                    break
        finally:
            row.cancel()
        reply.usage = Usage(input_tokens=len(row.input_ids), output_tokens=row.generated,
                            total_tokens=len(row.input_ids) + row.generated)
        reply.stop_reason = "stop" if stops.hit else row.stop_reason
        tail = "" if stops.hit else stops.push(text.flush(), final=True)
        for item in [*reply.add_text(tail), *reply.finish()]:
            if isinstance(item, ChatResult) and prompt.asks.top_logprobs is not None:
                item.logprobs = self._pieces.logprobs(row.scores[:received])
            yield item

    async def count_tokens(self, request: ChatRequest) -> TokenCount:
        """The prompt's tokens as ``stream`` feeds them (template, tools and thinking kwargs applied), counted off
        the batcher: nothing is generated, and no context check refuses a long one."""
        return TokenCount(input_tokens=await asyncio.to_thread(self._prompt_tokens, request))

    async def aclose(self) -> None:
        """Stop the generation thread (a running batch ends at its next step) and free the weights."""
        await asyncio.to_thread(self._batcher.close)
        self._model = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _generate(self, rows: list[Row]) -> None:
        generate_rows(self._model, rows)

    def _prepare(self, request: ChatRequest) -> _Prompt:
        """Settings, rendered prompt and token ids; bad input fails here, before the request queues."""
        params = dict(request.params)
        asks = RequestAsks.take(params)
        settings, template_kwargs = generation_settings(self._defaults, params)
        text, images = self._prompt(request, template_kwargs)
        fewest = fewest_tokens(text, self._longest_token) if self._longest_token else 0
        if self._context and fewest > self._context:     # known without tokenizing: a huge prompt costs nothing
            raise self._overflow(f"at least {fewest}")
        input_ids, extra = self._encode(text, images)
        if self._context and len(input_ids) > self._context:
            raise self._overflow(str(len(input_ids)))
        grammar, schema_key = self._grammar(request, settings)
        if asks.top_logprobs is not None and (settings.num_beams or 1) > 1:
            raise ValueError("logprobs come from the steps of one answer: num_beams must be 1.")
        alone = extra or asks.seed is not None               # see Row: its own batch
        return _Prompt(input_ids=input_ids, extra=extra, opens_thinking=text.rstrip().endswith(THINK_OPEN),
                       settings=settings, max_new_tokens=self._budget(settings, len(input_ids)),
                       key=object() if alone else (batch_key(settings), schema_key), grammar=grammar, asks=asks)

    def _prompt(self, request: ChatRequest, template_kwargs: dict[str, Any]) -> tuple[str, list]:
        """The rendered prompt and the images it holds: the chat template with the tools and thinking kwargs."""
        messages, images = hf_messages(request.messages, vision=self._processor is not None)
        text = self._render(messages, request.tools, {"enable_thinking": request.parse_think_tags, **template_kwargs})
        return text, images

    def _prompt_tokens(self, request: ChatRequest) -> int:
        params = dict(request.params)
        RequestAsks.take(params)               # seed, stop, logprobs: no prompt's; the rest is checked as _prepare does
        _, template_kwargs = generation_settings(self._defaults, params)
        text, images = self._prompt(request, template_kwargs)
        return len(self._encode(text, images)[0])

    def _grammar(self, request: ChatRequest, settings: GenerationConfig) -> tuple[Any, str | None]:
        """The compiled grammar of the request's schema (and the key rows sharing it batch by), or none."""
        if request.response_schema is None:
            return None, None
        if (settings.num_beams or 1) > 1:
            raise ValueError("A response schema or a forced tool call generates one answer token by token under its "
                             "grammar: num_beams must be 1.")
        schema = request.response_schema.json_schema
        return self._grammars.compiled(schema), json.dumps(schema, sort_keys=True)

    def _overflow(self, tokens: str) -> ContextOverflowError:
        return ContextOverflowError(f"The prompt is {tokens} tokens but {self._label} takes at most {self._context}: "
                                    "shorten the conversation or start a new one.")

    def _budget(self, settings: GenerationConfig, prompt_tokens: int) -> int:
        """``max_new_tokens`` within what the context leaves: past it a model only produces noise, and a
        huge request (``max_tokens: 100000`` over HTTP) would hold its batch row for minutes."""
        left = max(1, self._context - prompt_tokens) if self._context else None
        if settings.max_new_tokens:
            return min(settings.max_new_tokens, left) if left else settings.max_new_tokens
        if left:
            return left
        raise ValueError(f"Give max_new_tokens: {self._label} does not say how long its context is.")

    def _render(self, messages: list[dict], tools: list[dict], template_kwargs: dict[str, Any]) -> str:
        """The prompt as text. Tools go in as ``tools`` and, for SmolLM3-style templates, ``xml_tools``.

        Kwargs the template never names are left out: a processor would take them for its own
        arguments (and warn on every request).
        """
        renderer = self._processor or self._tokenizer
        template = str(renderer.chat_template or "")
        kwargs = {"xml_tools": tools or None, **template_kwargs}
        try:
            return renderer.apply_chat_template(messages, tools=tools or None, add_generation_prompt=True,
                                                tokenize=False, **{k: v for k, v in kwargs.items() if k in template})
        except jinja2.TemplateError as error:
            raise ValueError(f"The chat template of {self._label} rejected the conversation: {error}") from error

    def _encode(self, text: str, images: list) -> tuple[list[int], dict[str, Any]]:
        """Token ids of the rendered prompt (which already holds its special tokens), and any image tensors."""
        if self._processor is None:
            return self._tokenizer(text, add_special_tokens=False)["input_ids"], {}
        encoded = self._processor(text=text, images=images or None, add_special_tokens=False, return_tensors="pt")
        input_ids = encoded.pop("input_ids")[0].tolist()
        encoded.pop("attention_mask", None)
        return input_ids, dict(encoded)


def _text_tool_calls(request: ChatRequest) -> ForcedToolCalls | ToolCallStream | None:
    """How the answer's text holds tool calls: all of it, when the call was forced by grammar; else in whichever
    format the model writes, when it was given tools."""
    schema = request.response_schema
    if schema is not None and schema.calls:
        return ForcedToolCalls(schema)
    return ToolCallStream() if request.tools else None


@dataclass
class _Prompt:
    input_ids: list[int]
    extra: dict[str, Any]
    opens_thinking: bool
    settings: GenerationConfig
    max_new_tokens: int
    key: Hashable
    grammar: Any = None
    asks: RequestAsks = field(default_factory=lambda: RequestAsks())


@dataclass
class RequestAsks:
    """What a request asks beyond a GenerationConfig: OpenAI's ``seed``, ``stop`` (text at which the answer ends,
    left out of it) and ``logprobs`` / ``top_logprobs``; ``logit_bias`` becomes transformers' ``sequence_bias``.

    A seeded request runs in a batch of its own: ``generate`` takes no per-row generator, so only a batch of one
    draws the same numbers again. Stop strings are matched on the decoded text of each row (transformers'
    ``stop_strings`` would end the whole batch's bookkeeping, not the row), so they never split a batch."""

    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    top_logprobs: int | None = None

    @classmethod
    def take(cls, params: dict[str, Any]) -> RequestAsks:
        """The asks, taken out of ``params`` (``logit_bias`` rewritten in place)."""
        stop = params.pop("stop", None) or []
        logprobs, top = params.pop("logprobs", None), params.pop("top_logprobs", None)
        bias = params.pop("logit_bias", None)
        if bias:
            params["sequence_bias"] = [[[int(token)], float(value)] for token, value in bias.items()]
        return cls(seed=params.pop("seed", None), stop=[stop] if isinstance(stop, str) else list(stop),
                   top_logprobs=(top or 0) if logprobs else None)


class StopStrings:
    """The answer's text up to the first stop string. Text that may be the start of one is held back until the next
    piece says (as vLLM does), so nothing past a stop string is ever handed out."""

    def __init__(self, stops: list[str]):
        self._stops = [stop for stop in stops if stop]
        self._held = ""
        self.hit = False

    def push(self, text: str, final: bool = False) -> str:
        if not self._stops:
            return text
        self._held += text
        found = [index for stop in self._stops if (index := self._held.find(stop)) >= 0]
        if found:
            self.hit = True
            out, self._held = self._held[:min(found)], ""
            return out
        keep = 0 if final else max((size for stop in self._stops for size in range(1, len(stop))
                                    if self._held.endswith(stop[:size])), default=0)
        out, self._held = self._held[:len(self._held) - keep], self._held[len(self._held) - keep:]
        return out


class TokenPieces:
    """Generated tokens as OpenAI's logprobs name them: each token's text and UTF-8 bytes (a byte-level token may
    hold part of a character: its text then shows the bytes escaped), special tokens (an end of turn) left out."""

    def __init__(self, tokenizer: Any):
        self._tokenizer = tokenizer
        self._special = set(tokenizer.all_special_ids)
        decoder = getattr(getattr(tokenizer, "backend_tokenizer", None), "decoder", None)
        self._byte_level = any(part["type"] == "ByteLevel" for part in _components(decoder, "decoders"))
        self._bytes = {char: byte for byte, char in _byte_alphabet().items()}

    def logprobs(self, scores: list[tuple[int, float, list[tuple[int, float]]]]) -> list[TokenLogprob]:
        return [TokenLogprob(**self._named(token), logprob=logprob,
                             top_logprobs=[TopLogprob(**self._named(other), logprob=value) for other, value in top])
                for token, logprob, top in scores if token not in self._special]

    def _named(self, token: int) -> dict[str, Any]:
        piece = self._tokenizer.convert_ids_to_tokens(token)
        if self._byte_level and all(char in self._bytes for char in piece):
            data = bytes(self._bytes[char] for char in piece)
        elif re.fullmatch(r"<0x[0-9A-Fa-f]{2}>", piece):
            data = bytes([int(piece[3:5], 16)])
        else:
            data = piece.replace("\N{LOWER ONE EIGHTH BLOCK}", " ").encode()
        return {"token": data.decode("utf-8", errors="backslashreplace"), "bytes": list(data)}


def _byte_alphabet() -> dict[int, str]:
    """GPT-2's byte-level alphabet: each byte as the printable character a byte-level vocabulary spells it with."""
    printable = {*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)}
    extra = iter(range(256, 512))
    return {byte: chr(byte if byte in printable else next(extra)) for byte in range(256)}


def model_kwargs(explicit: dict[str, Any] | None, target: Target) -> dict[str, Any]:
    """aimu's rule: ``None`` means the defaults, an explicit dict replaces them. The placed device is not an
    aimu default but this actor's GPU share, so it is added unless the caller named a device map."""
    kwargs = {"dtype": "auto"} if explicit is None else dict(explicit)
    if target.device == "cuda":
        kwargs.setdefault("device_map", target.device_map or "cuda")
    return kwargs


def longest_token_bytes(tokenizer: Any) -> int | None:
    """The most bytes of prompt text one token can stand for, read from the vocabulary once at load; None where no
    such figure bounds the count (``fewest_tokens``), and prompts are only tokenized.

    A byte-level vocabulary spells each byte as one character; other pieces are counted in UTF-8, which overcounts
    SentencePiece's ▁ and <0x..> pieces (safe: a larger figure is a weaker bound). A Unicode normalizer may shrink
    text up to 4x before it is split (NFKC: 𝐀 → A), so each one multiplies the figure. Tokenizers that can drop or
    swallow text have no bound: whitespace splitting, stripping, fused unknowns, added tokens that eat spaces.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    added = tokenizer.added_tokens_decoder.values()
    if backend is None or any(token.lstrip or token.rstrip for token in added):
        return None
    model = backend.model
    if type(model).__name__ != "BPE" or (model.fuse_unk and not model.byte_fallback):
        return None
    shrink = 1
    for part in _components(backend.normalizer, "normalizers"):
        if part["type"] in _UNICODE_NORMALIZERS:
            shrink *= 4
        elif not (part["type"] == "Prepend" or part["type"] == "Replace" and _grows(part)):
            return None
    pre_tokenizers = _components(backend.pre_tokenizer, "pretokenizers")
    if any(part["type"] not in _KEEPING_PRE_TOKENIZERS or part.get("behavior") == "Removed" for part in pre_tokenizers):
        return None
    byte_level = any(part["type"] == "ByteLevel" for part in pre_tokenizers)
    sizes = [len(piece) if byte_level else len(piece.encode()) for piece in backend.get_vocab(with_added_tokens=False)]
    return shrink * max(sizes + [len(token.content.encode()) for token in added])


def _components(component: Any, key: str) -> list[dict]:
    """A normalizer's or pre-tokenizer's parts as JSON dicts, a Sequence flattened."""
    if component is None:
        return []
    parts, flat = [json.loads(component.__getstate__())], []
    while parts:
        part = parts.pop()
        if part["type"] == "Sequence":
            parts.extend(part.get(key) or [])
        else:
            flat.append(part)
    return flat


def _grows(replace: dict) -> bool:
    """A Replace of a fixed string by one at least as long (SentencePiece's space → ▁) never shrinks text."""
    pattern = replace["pattern"].get("String")
    return pattern is not None and len(replace["content"].encode()) >= len(pattern.encode())


def has_image_processor(model_id: str) -> bool:
    """Models that ship an image processor load through AutoProcessor and take images in messages."""
    for name in _PROCESSOR_FILES:
        path = cached_file(model_id, name, _raise_exceptions_for_missing_entries=False,
                           _raise_exceptions_for_connection_errors=False)
        if path and {"image_processor", "image_processor_type"} & json.loads(Path(path).read_text()).keys():
            return True
    return False


def generation_settings(defaults: GenerationConfig, params: dict[str, Any]) -> tuple[GenerationConfig, dict]:
    """The request's GenerationConfig and chat-template kwargs; keys ``generate`` does not know are a ValueError."""
    params = dict(params)
    template_kwargs = dict(params.pop("chat_template_kwargs", None) or {})
    if "reasoning_effort" in params:
        template_kwargs["reasoning_effort"] = params.pop("reasoning_effort")
    if params.get("temperature") == 0:                   # OpenAI's (and vLLM's) way to ask for greedy decoding
        del params["temperature"]
        params["do_sample"] = False
    if "repeat_penalty" in params:                       # aimu accepts llama.cpp's spelling for HF too
        params.setdefault("repetition_penalty", params.pop("repeat_penalty"))
    unknown = sorted(set(params) - set(defaults.to_dict()))
    if unknown:
        raise ValueError(f"Unknown generation parameter(s) for a Hugging Face model: {', '.join(unknown)}. Use "
                         "GenerationConfig names (max_new_tokens, temperature, top_p, top_k, min_p, "
                         "repetition_penalty, do_sample, num_beams, ...) or chat_template_kwargs.")
    fixed = sorted(k for k, default in _FIXED_SETTINGS.items() if params.get(k, default) != default)
    if fixed:
        raise ValueError(f"Generation parameter(s) {', '.join(fixed)} are not supported by the in-process HF "
                         "engine: it returns one streamed answer per request.")
    settings = copy.deepcopy(defaults)
    if not params.get("do_sample", settings.do_sample):      # greedy: cleared in the same update, which validates
        params.update(dict.fromkeys(_SAMPLING_ONLY))         # (sampling-only values beside do_sample=False warn)
    settings.update(**params)
    return settings, template_kwargs


def batch_key(settings: GenerationConfig) -> Hashable:
    """Requests with equal keys may share ``generate`` calls: same sampling, any prompt and length.

    Beam search returns all rows at once, so there the length is part of the key too.
    """
    values = settings.to_diff_dict()
    if (settings.num_beams or 1) == 1:
        values.pop("max_new_tokens", None)
    return json.dumps(values, sort_keys=True, default=repr)


class IncrementalDecoder:
    """The text of a growing list of token ids, piece by piece.

    A character may span several tokens (byte-level BPE splits accents and emoji), and re-decoding
    everything at every step costs O(n²). So, as TGI does, only the ids since the last settled point
    are decoded, and a trailing U+FFFD (a character still incomplete) waits for the next token.
    """

    def __init__(self, tokenizer: Any):
        self._tokenizer = tokenizer
        self._ids: list[int] = []
        self._prefix = 0                      # ids before this are settled and never decoded again
        self._read = 0                        # ids before this have been emitted

    def push(self, ids: list[int]) -> str:
        self._ids.extend(ids)
        return self._advance(final=False)

    def flush(self) -> str:
        return self._advance(final=True)

    def _advance(self, final: bool) -> str:
        shown = self._decode(self._ids[self._prefix:self._read])
        text = self._decode(self._ids[self._prefix:])
        if len(text) <= len(shown) or (text.endswith("\ufffd") and not final):
            return ""
        self._prefix, self._read = self._read, len(self._ids)
        return text[len(shown):]

    def _decode(self, ids: list[int]) -> str:
        return self._tokenizer.decode(ids, skip_special_tokens=True)


def _generation_defaults(config: GenerationConfig, tokenizer: Any) -> GenerationConfig:
    """The model's own generation config, with a pad token so that prompts can be batched."""
    defaults = copy.deepcopy(config)
    if defaults.pad_token_id is None:
        eos = defaults.eos_token_id
        defaults.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else \
            (eos[0] if isinstance(eos, list) else eos)
    return defaults


def _context_limit(config: Any, context_tokens: int | None) -> int | None:
    """The longest prompt the model takes: its position table, or less where placement sized for less."""
    limit = getattr(config.get_text_config(), "max_position_embeddings", None)
    return min(filter(None, (limit, context_tokens)), default=None)
