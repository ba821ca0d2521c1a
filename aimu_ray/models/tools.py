"""``@tool``: attach an OpenAI function spec to a callable, by aimu's rules (aimu 0.38, ``aimu.tools.decorator``).

The rules are aimu's, so a tool advertises the same schema whichever of the two sends it:

- every parameter needs a type hint or a default; ``*args``/``**kwargs`` and a parameter with neither are refused
  with ``ToolSignatureError`` when the function is decorated;
- ``str``, ``int``, ``float``, ``bool``, ``list``, ``dict`` become their JSON type, a subscripted generic its
  origin's (``list[str]`` is ``{"type": "array"}``), ``Optional[T]`` / ``T | None`` the schema of ``T``, and
  ``Literal[...]`` an ``enum`` (with the values' type when they share one); any other hint, and a parameter with
  only a default (whatever the default), is ``{"type": "string"}``;
- a parameter annotated with aimu's ``ToolContext`` is filled in by aimu's agent and left out of the schema;
- ``required`` lists the parameters without a default, in order; defaults themselves are not advertised;
- the description is the docstring's prose before its first section header (``Args:``, ``Returns:``, …), kept as
  written, blank lines included; an ``Args:`` / ``Arguments:`` / ``Parameters:`` section gives each parameter's
  description, its continuation lines joined with a space.

Neither pydantic's JSON schema (``anyOf`` for optionals, ``items``, titles) nor ``docstring_parser`` (other section
names, wrapped lines kept) gives these rules, so the schema and the docstring grammar are written out here;
pydantic does what aimu has it do, coercing the arguments a model sends (``coerce_tool_arguments``).

The decorated function also carries aimu's dispatch attributes (``__tool_injected__``, ``__tool_param_adapters__``,
``__tool_allowed_args__``, ``__tool_required__``, ``__tool_is_async__``, ``__tool_is_streaming__``), so aimu's agents
run an ``@aimu_ray.tool`` exactly as their own. aimu_ray's clients only advertise the spec and record calls.
aimu itself is never imported here: it is a benchmark extra.
"""

from __future__ import annotations

import inspect
import re
import sys
import types
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Union, get_args, get_origin, get_type_hints

from pydantic import TypeAdapter, ValidationError

from .errors import ToolArgumentError, ToolSignatureError

__all__ = ["ToolArgumentError", "ToolSignatureError", "coerce_tool_arguments", "function_spec", "tool"]

_JSON_TYPES: dict[Any, str] = {str: "string", int: "integer", float: "number", bool: "boolean", list: "array",
                               dict: "object"}

# Google-style section headers, as aimu knows them. Only the argument sections are read; every header ends the
# description and the section before it.
_ARG_SECTIONS = ("args", "arguments", "parameters")
_SECTIONS = _ARG_SECTIONS + ("returns", "return", "raises", "yields", "yield", "examples", "example", "note",
                             "notes", "attributes")
_ARG_ENTRY = re.compile(r"([A-Za-z_]\w*)\s*(?:\([^)]*\))?\s*:\s*(.*)")      # "name: text", "name (type): text"


def tool(fn: Callable | None = None, *, name: str | None = None, description: str | None = None):
    """Decorate a function so it can be passed in ``tools=``; bare (``@tool``, as in aimu) or with a ``name`` or
    ``description`` that replaces the function's own in the spec. The function is returned unchanged, callable."""
    def decorate(func: Callable) -> Callable:
        built = _build(func, name=name, description=description)
        func.__tool_spec__ = built.spec
        func.__tool_injected__ = built.injected
        func.__tool_param_adapters__ = built.adapters
        func.__tool_allowed_args__ = built.allowed
        func.__tool_required__ = built.spec["function"]["parameters"]["required"]
        func.__tool_is_async__ = inspect.iscoroutinefunction(func) or inspect.isasyncgenfunction(func)
        func.__tool_is_streaming__ = inspect.isgeneratorfunction(func) or inspect.isasyncgenfunction(func)
        return func
    return decorate(fn) if fn is not None else decorate


def function_spec(func: Callable, *, name: str | None = None, description: str | None = None) -> dict[str, Any]:
    """The OpenAI function spec ``@tool`` would attach to ``func``, without touching ``func``."""
    return _build(func, name=name, description=description).spec


def coerce_tool_arguments(fn: Callable, arguments: dict) -> dict:
    """Check and lax-coerce the arguments a model sent for ``fn`` (``"5"`` to ``5``, ``"true"`` to ``True``), as
    aimu's agents do before they call a tool.

    Returns a new dict of the model-facing arguments, coerced to their hints (an argument whose parameter has only a
    default passes as sent). Raises ``ToolArgumentError`` with one message naming every problem: unknown
    arguments, missing required ones, values that do not coerce. A callable ``@tool`` did not build (an MCP
    wrapper) has no adapters; its arguments come back as they are, for its server to check.
    """
    adapters: dict[str, TypeAdapter] | None = getattr(fn, "__tool_param_adapters__", None)
    if adapters is None:
        return arguments
    allowed = getattr(fn, "__tool_allowed_args__", set())
    required = getattr(fn, "__tool_required__", [])

    unknown = [arg for arg in arguments if arg not in allowed]
    problems = [f"unexpected argument '{arg}'" for arg in unknown]
    problems += [f"missing required argument '{arg}'" for arg in required if arg not in arguments]
    coerced: dict = {}
    for arg, value in arguments.items():
        if arg in unknown:
            continue
        adapter = adapters.get(arg)
        if adapter is None:
            coerced[arg] = value
            continue
        try:
            coerced[arg] = adapter.validate_python(value)
        except ValidationError as exc:
            details = exc.errors()
            detail = details[0].get("msg", "is invalid") if details else "is invalid"
            problems.append(f"'{arg}' {detail.lower()}")
    if problems:
        raise ToolArgumentError(f"invalid arguments for tool '{fn.__name__}': " + "; ".join(problems))
    return coerced


@dataclass
class _Built:
    """A tool's spec, and what aimu's agents need at dispatch: the injected ``ToolContext`` parameters, a pydantic
    adapter per annotated model-facing parameter (built once, here), and every model-facing parameter's name."""

    spec: dict[str, Any]
    injected: list[str] = field(default_factory=list)
    adapters: dict[str, TypeAdapter] = field(default_factory=dict)
    allowed: set[str] = field(default_factory=set)


def _build(func: Callable, *, name: str | None, description: str | None) -> _Built:
    try:
        hints = get_type_hints(func)
    except Exception:               # an unresolvable hint: fall back to the raw annotations, as aimu does
        hints = {}
    summary, arg_docs = _parse_docstring((inspect.getdoc(func) or "").strip())
    built = _Built(spec={})
    properties: dict[str, dict] = {}
    required: list[str] = []
    for param in inspect.signature(func).parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            stars = "*" if param.kind is param.VAR_POSITIONAL else "**"
            raise ToolSignatureError(
                f"@aimu_ray.tool: function '{func.__name__}' uses variadic parameter '{stars}{param.name}'. "
                "Declare each argument explicitly. Variadic args cannot be described as JSON Schema.")
        annotation = hints.get(param.name, param.annotation)
        if _is_tool_context(annotation):
            built.injected.append(param.name)
            continue
        has_default = param.default is not param.empty
        annotated = annotation is not param.empty and annotation is not None
        if not annotated and not has_default:
            raise ToolSignatureError(
                f"@aimu_ray.tool: parameter '{param.name}' on '{func.__name__}' has no type hint and no default. "
                "Add a type hint (e.g. `name: str`) or a default value.")
        built.allowed.add(param.name)
        prop = _schema_for(annotation) if annotated else {"type": "string"}
        if param.name in arg_docs:
            prop["description"] = arg_docs[param.name]
        properties[param.name] = prop
        if annotated:
            built.adapters[param.name] = TypeAdapter(annotation)    # the whole hint: Optional[T] still takes None
        if not has_default:
            required.append(param.name)
    built.spec = {"type": "function", "function": {
        "name": name or func.__name__,
        "description": description or summary,
        "parameters": {"type": "object", "properties": properties, "required": required}}}
    return built


def _without_none(annotation: Any) -> Any:
    """``T`` for ``Optional[T]`` / ``T | None``; any other annotation (a wider union too) as it is."""
    if get_origin(annotation) is Union or isinstance(annotation, types.UnionType):
        rest = [arg for arg in get_args(annotation) if arg is not type(None)]
        if len(rest) == 1:
            return rest[0]
    return annotation


def _schema_for(annotation: Any) -> dict[str, Any]:
    """One parameter's JSON schema: an ``enum`` for a ``Literal`` so the model sees the allowed values, else a bare
    type, ``string`` for anything the table does not name."""
    annotation = _without_none(annotation)
    if get_origin(annotation) is Literal:
        values = list(get_args(annotation))
        schema: dict[str, Any] = {"enum": values}
        value_types = {type(value) for value in values}
        if len(value_types) == 1:
            schema["type"] = _JSON_TYPES.get(value_types.pop(), "string")
        return schema
    origin = get_origin(annotation)                             # list[str] is described as its origin, list
    return {"type": _JSON_TYPES.get(annotation if origin is None else origin, "string")}


def _is_tool_context(annotation: Any) -> bool:
    """Whether the parameter is aimu's ``ToolContext`` (bare, parametrised or optional), which aimu's agent injects.

    Looked up in ``sys.modules`` rather than imported: a hint can only be aimu's class once aimu has been imported.
    """
    context = getattr(sys.modules.get("aimu.tools.context"), "ToolContext", None)
    if context is None:
        return False
    annotation = _without_none(annotation)
    return annotation is context or get_origin(annotation) is context


def _section(line: str) -> str | None:
    """The lowercased name when ``line`` is a section header: one known word and a colon (``Do this:`` is prose)."""
    label = line.strip()
    if not label.endswith(":"):
        return None
    label = label[:-1]
    return label.lower() if label and " " not in label and label.lower() in _SECTIONS else None


def _parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """``(description, {parameter: description})`` from a cleaned docstring, by aimu's grammar.

    In an argument section, a ``name: text`` line no deeper than the section's first entry starts an entry, and any
    other line continues the one above (joined with a space). Malformed sections give fewer entries; nothing raises.
    """
    lines = doc.splitlines()
    end = next((i for i, line in enumerate(lines) if _section(line) is not None), len(lines))
    description = "\n".join(lines[:end]).strip()
    arg_docs: dict[str, str] = {}
    i = end
    while i < len(lines):
        in_args = _section(lines[i]) in _ARG_SECTIONS
        i += 1
        if not in_args:
            continue
        entry_indent: int | None = None
        current: str | None = None
        while i < len(lines) and _section(lines[i]) is None:
            line, i = lines[i], i + 1
            if not line.strip():
                continue
            indent = len(line) - len(line.lstrip())
            entry_indent = indent if entry_indent is None else entry_indent
            match = _ARG_ENTRY.fullmatch(line.strip())
            if match and indent <= entry_indent:
                current = match.group(1)
                arg_docs[current] = match.group(2).strip()
            elif current is not None:
                arg_docs[current] = f"{arg_docs[current]} {line.strip()}".strip()
    return description, arg_docs
