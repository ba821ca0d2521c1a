"""Structured output (``schema=``) as aimu defines it: a dataclass type or a pydantic v2 model becomes a JSON
Schema, sent natively where the wire enforces one, asked for in the prompt otherwise; the answer is parsed by
aimu's three strategies and validated into the schema.

Native means the provider or engine holds the answer to the schema: OpenAI-compatible ``response_format``,
Ollama ``format``, Anthropic's forced tool (aimu's rule: models flagged ``structured``), and, beyond aimu,
the in-process engines: llama.cpp and HF text generate under a grammar built from the schema, so their answer is
valid by construction. Everything else takes the prompt-and-parse path.

The same grammars force a tool call on the in-process engines, as vLLM does (``forced_tool_schema``): the answer is
generated under a schema built from the tools and read back as calls, not content.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, TypeAdapter

from .capabilities import ModelCaps

GRAMMAR_PROVIDERS = frozenset({"hf", "llamacpp"})   # in-process engines that constrain decoding to the schema
_FENCED = re.compile(r"```(?:json)?\s*([\s\S]*?)```")


class ResponseSchema(BaseModel):
    """What a request carries of a ``schema=``: its name (providers that need one) and its JSON Schema."""

    model_config = ConfigDict(frozen=True)

    name: str
    json_schema: dict[str, Any]
    # The answer is tool calls, not content (``forced_tool_schema``): "named", the arguments of one call to the
    # function ``name``; "listed", a JSON array of ``{"name", "parameters"}`` calls.
    calls: Literal["named", "listed"] | None = None


def response_schema(schema: type) -> ResponseSchema:
    """The JSON Schema of ``schema``; a TypeError for anything but a dataclass type or a pydantic model."""
    if isinstance(schema, type) and issubclass(schema, BaseModel):
        json_schema = schema.model_json_schema()
    elif isinstance(schema, type) and dataclasses.is_dataclass(schema):
        json_schema = TypeAdapter(schema).json_schema()
    else:
        raise TypeError(f"schema must be a dataclass type or Pydantic BaseModel subclass, got {type(schema).__name__}")
    return ResponseSchema(name=getattr(schema, "__name__", "Response"), json_schema=json_schema)


def enforced(provider: str, caps: ModelCaps) -> bool:
    """Whether a request to this model gets the schema natively (else the prompt asks for it)."""
    return caps.structured or provider in GRAMMAR_PROVIDERS


def forced_tool_schema(tools: list[dict], choice: Any, parallel: bool = True) -> ResponseSchema | None:
    """vLLM's forced tool call: the schema an in-process engine generates the answer under, for OpenAI's
    ``tool_choice`` over ``tools`` (OpenAI function specs); None when ``choice`` forces nothing (None, auto, none).

    A named function (``{"type": "function", "function": {"name": ...}}``): the answer is the arguments of one call to
    it, held to its ``parameters``. ``"required"``: a JSON array of at least one ``{"name", "parameters"}`` call, each
    held to its tool's schema (one of ``anyOf``); ``parallel=False`` (OpenAI's ``parallel_tool_calls``) allows exactly
    one. A choice the tools cannot answer is the caller's mistake: a ValueError.
    """
    if choice in (None, "auto", "none"):
        return None
    if not tools:
        raise ValueError("tool_choice forces a tool call, but the request advertises no tools: send tools (a served "
                         "model takes them when its model string says ';tools').")
    schemas = {tool["function"]["name"]: tool["function"].get("parameters") or _NO_PARAMETERS for tool in tools}
    if choice == "required":
        return ResponseSchema(name="tool_calls", json_schema=_listed_calls(schemas, parallel), calls="listed")
    name = (choice.get("function") or {}).get("name") if isinstance(choice, dict) else None
    if not isinstance(name, str):
        raise ValueError(f"tool_choice must be 'auto', 'none', 'required' or {{'type': 'function', 'function': "
                         f"{{'name': ...}}}}, not {choice!r}.")
    if name not in schemas:
        raise ValueError(f"tool_choice names the function {name!r}, which is not among the tools "
                         f"({', '.join(schemas)}).")
    return ResponseSchema(name=name, json_schema=schemas[name], calls="named")


_NO_PARAMETERS = {"type": "object", "properties": {}}
_DEFINITIONS = ("$defs", "definitions")            # where a schema keeps what its "#/..." references name


def _listed_calls(schemas: dict[str, dict], parallel: bool) -> dict:
    """The array of calls; each tool's definitions move to the root, where its ``#/$defs/...`` references point."""
    roots: dict[str, dict] = {}
    items = []
    for name, parameters in schemas.items():
        parameters = dict(parameters)
        for key in _DEFINITIONS:
            for label, definition in parameters.pop(key, {}).items():
                if roots.setdefault(key, {}).setdefault(label, definition) != definition:
                    raise ValueError(f"Two tools define {key} {label!r} differently, and a forced tool call holds "
                                     "them in one schema: rename one.")
        items.append({"type": "object", "properties": {"name": {"type": "string", "enum": [name]},
                                                       "parameters": parameters},
                      "required": ["name", "parameters"], "additionalProperties": False})
    return {"type": "array", "items": {"anyOf": items}, "minItems": 1, **({} if parallel else {"maxItems": 1}),
            **roots}


def json_schema_instruction(json_schema: dict) -> str:
    """aimu's prompt suffix on the parse path: a best-effort nudge, not a guarantee."""
    return ("Respond with ONLY a JSON object matching this JSON Schema. "
            "Do not include any prose, explanation, or markdown code fences.\n\n"
            f"{json.dumps(json_schema)}")


def parse_json_response(text: str, schema: type | None = None) -> Any:
    """JSON out of a model's answer: the whole text, else the first fenced block, else the first ``{`` to the last
    ``}``; validated into ``schema`` when given. A ValueError when no strategy finds JSON or it does not fit."""
    parsed = _first_json(text)
    if parsed is None:
        raise ValueError(f"Could not parse JSON from response: {text[:200]!r}")
    if schema is None:
        return parsed
    response_schema(schema)                            # the same TypeError as a request's
    return TypeAdapter(schema).validate_python(parsed)


def _first_json(text: str) -> Any:
    candidates = [text.strip()]
    if match := _FENCED.search(text):
        candidates.append(match.group(1).strip())
    start, end = text.find("{"), text.rfind("}")
    if start != -1 and end > start:
        candidates.append(text[start:end + 1])
    for candidate in candidates:
        try:
            return json.loads(candidate)
        except ValueError:
            continue
    return None


def generate_json(client: Any, prompt: str, schema: type | None = None, *, retries: int = 2,
                  generate_kwargs: dict | None = None) -> Any:
    """aimu's: ``client.generate(prompt, generate_kwargs)`` parsed by ``parse_json_response`` (into ``schema`` when
    given), asked again up to ``retries`` times when the answer holds no JSON that fits; then a ValueError chained
    to the last parse error. A sync client (``client()``); aimu has no async twin."""
    last_error: Exception | None = None
    for _ in range(retries + 1):
        text = client.generate(prompt, generate_kwargs)
        if inspect.isawaitable(text):
            getattr(text, "close", lambda: None)()
            raise TypeError("generate_json takes a sync client (aimu_ray.client()); this one's generate is async.")
        try:
            return parse_json_response(text, schema)
        except ValueError as error:
            last_error = error
    raise ValueError(f"Failed to parse JSON after {retries + 1} attempt(s)") from last_error
