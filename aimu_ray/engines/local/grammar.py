"""Constrained decoding for the HF text engine: a ``schema=`` answer (or a forced tool call) is generated under a
grammar built from its JSON Schema, so it parses by construction. The grammars are xgrammar's (the engine vLLM and
SGLang use): compiled once per schema against the model's tokenizer, then matched token by token, a bitmask of
allowed next tokens per row and step.
"""

from __future__ import annotations

import json
from typing import Any

import torch
from transformers import LogitsProcessor

_INSTALL = "Generating under a schema with a Hugging Face model needs xgrammar: pip install 'aimu_ray[hf]'."


class SchemaGrammars:
    """The compiled grammar of each JSON Schema for one tokenizer, compiled on first use and kept."""

    def __init__(self, tokenizer: Any, vocab_size: int) -> None:
        self._tokenizer, self._vocab_size = tokenizer, vocab_size
        self._compiler = None
        self._compiled: dict[str, Any] = {}

    def compiled(self, json_schema: dict) -> Any:
        """The schema's grammar; a schema xgrammar cannot compile is the caller's mistake (a ValueError)."""
        key = json.dumps(json_schema, sort_keys=True)
        if key not in self._compiled:
            compiler = self._grammar_compiler()
            try:                            # as written: the grammar keeps the schema's order of properties
                self._compiled[key] = compiler.compile_json_schema(json.dumps(json_schema), any_whitespace=False)
            except Exception as error:      # noqa: BLE001 -- xgrammar raises RuntimeError from C++ for bad schemas
                raise ValueError(f"The schema (schema=, response_format or a forced tool's parameters) cannot be "
                                 f"compiled to a grammar: {error}") from None
        return self._compiled[key]

    def _grammar_compiler(self) -> Any:
        if self._compiler is None:
            xgr = _xgrammar()
            info = xgr.TokenizerInfo.from_huggingface(self._tokenizer, vocab_size=self._vocab_size)
            self._compiler = xgr.GrammarCompiler(info)
        return self._compiler


class GrammarMask(LogitsProcessor):
    """Masks each row's next-token scores to what its grammar allows. A row that has ended (its budget, an end
    token, a cancel) or whose grammar is complete is left unmasked: its tokens are no longer anyone's."""

    def __init__(self, rows: list, prompt_width: int) -> None:
        xgr = _xgrammar()
        self._rows, self._width = rows, prompt_width
        self._matchers = [xgr.GrammarMatcher(row.grammar) for row in rows]
        self._mask = xgr.allocate_token_bitmask(len(rows), rows[0].grammar.tokenizer_info.vocab_size)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        xgr = _xgrammar()
        started = input_ids.shape[1] > self._width
        for index, (row, matcher) in enumerate(zip(self._rows, self._matchers)):
            live = not row.ended and not matcher.is_terminated()
            if live and started:
                live = matcher.accept_token(int(input_ids[index, -1]))
            if live and not matcher.is_terminated():
                matcher.fill_next_token_bitmask(self._mask, index)
            else:
                self._mask[index].fill_(-1)          # every bit set: nothing masked
        masked = scores.to("cpu") if scores.device.type not in ("cpu", "cuda") else scores
        xgr.apply_token_bitmask_inplace(masked, self._mask.to(masked.device))
        return masked.to(scores.device)


def _xgrammar():
    try:
        import xgrammar
    except ImportError as error:
        raise ImportError(_INSTALL) from error
    return xgrammar
