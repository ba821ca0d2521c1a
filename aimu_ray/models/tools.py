"""``@tool``: attach an OpenAI function spec to a callable, built from its type hints and docstring.

The JSON schema comes from pydantic (a model made from the signature), descriptions from the
Google-style docstring (``docstring_parser``); nothing is hand-rolled. Clients advertise the spec and
record calls; they never run the function (aimu's agents do that).
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

import docstring_parser
from pydantic import Field, create_model


def tool(fn: Callable | None = None, *, name: str | None = None, description: str | None = None):
    """Decorate a function so it can be passed in ``tools=``; usable bare or with arguments."""
    def decorate(func: Callable) -> Callable:
        func.__tool_spec__ = function_spec(func, name=name, description=description)
        return func
    return decorate(fn) if fn is not None else decorate


def function_spec(func: Callable, *, name: str | None = None, description: str | None = None) -> dict[str, Any]:
    doc = docstring_parser.parse(inspect.getdoc(func) or "")
    arg_docs = {p.arg_name: p.description for p in doc.params}
    fields = {}
    for param in inspect.signature(func).parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        annotation = Any if param.annotation is inspect.Parameter.empty else param.annotation
        default = ... if param.default is inspect.Parameter.empty else param.default
        fields[param.name] = (annotation, Field(default, description=arg_docs.get(param.name)))
    schema = create_model(f"{func.__name__}_args", **fields).model_json_schema()
    schema.pop("title", None)
    for prop in schema.get("properties", {}).values():
        prop.pop("title", None)
    parameters = {"type": "object", "properties": schema.get("properties", {}), "required": schema.get("required", [])}
    if "$defs" in schema:
        parameters["$defs"] = schema["$defs"]
    summary = " ".join(part for part in (doc.short_description, doc.long_description) if part)
    return {"type": "function", "function": {"name": name or func.__name__,
                                             "description": description or summary,
                                             "parameters": parameters}}
