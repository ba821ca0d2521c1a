"""Tool calls written as text by Hugging Face models, in the four formats aimu recognises.

| format      | looks like                                          | prose kept        | used by              |
|-------------|-----------------------------------------------------|-------------------|----------------------|
| XML         | ``<tool_call>{"name": …}</tool_call>``, or Qwen's   | outside the tags  | Qwen 3+, GPT-OSS,    |
|             | ``<function=NAME><parameter=K>V</parameter>`` body  |                   | DeepSeek-R1, SmolLM3 |
| BRACKETED   | ``[TOOL_CALLS]`` followed by JSON                   | before the marker | Magistral            |
| JSON_OBJECT | the whole reply is ``{"name": …}``                  | none              | Llama 3.1 / 3.2      |
| JSON_ARRAY  | the whole reply is ``[{"name": …}, …]``             | none              | Mistral 7B, Nemo     |

The engine does not know a model's family, so every format is tried; markup that does not parse is
ordinary text and reaches the caller unchanged. ``ToolCallStream`` does the same for a reply that
arrives piece by piece: prose flows through until markup starts, the rest waits for the end.

A call forced by grammar (``models.structured.forced_tool_schema``) has a format of its own, known in advance:
``ForcedToolCalls`` reads the whole answer as the call(s).
"""

from __future__ import annotations

import json
import re
from typing import Any

from ..models.messages import new_tool_call_id, parse_arguments
from ..models.structured import ResponseSchema
from ..models.thinking import _partial_suffix
from ..models.wire import ToolCall

XML_OPEN, BRACKETED = "<tool_call>", "[TOOL_CALLS]"
MARKERS = (XML_OPEN, BRACKETED)               # may start anywhere in a reply
JSON_OPENERS = ('{"name"', '[{"name"')         # only a whole reply, compared without whitespace

_XML_BLOCK = re.compile(r"<tool_call>(.*?)</tool_call>", re.S)
_QWEN_FUNCTION = re.compile(r"<function=([^>\s]+)>(.*?)(?:</function>|$)", re.S)
_QWEN_PARAMETER = re.compile(r"<parameter=([^>\s]+)>(.*?)</parameter>", re.S)


def parse_tool_calls(text: str) -> tuple[str, list[ToolCall]] | None:
    """The prose (unstripped) and the calls in ``text``; None when it holds no well-formed tool markup."""
    if XML_OPEN in text:
        return _parse_xml(text)
    if BRACKETED in text:
        prose, _, body = text.partition(BRACKETED)
        calls = _json_calls(body)
        return None if calls is None else (prose, calls)
    calls = _json_calls(text)
    return None if calls is None else ("", calls)


class ToolCallStream:
    """Answer text in, text safe to show out; tool markup is held back and parsed by ``close``.

    Leading whitespace waits for the first visible text, so a reply that is only a tool call shows
    nothing; a marker cut across pieces (``"<tool_"`` + ``"call>"``) is held until it is decided.
    """

    def __init__(self) -> None:
        self._pending = ""
        self._held: str | None = None          # markup (and what follows it), once it has started
        self._shown = False

    def feed(self, text: str) -> str:
        if self._held is not None:
            self._held += text
            return ""
        self._pending += text
        if not self._shown:
            opening = _json_opening(self._pending)
            if opening is None:
                return ""
            if opening:
                self._held, self._pending = self._pending, ""
                return ""
        return self._release()

    def close(self) -> tuple[str, list[ToolCall]]:
        """The text still to show and the calls found; markup that does not parse is shown as it came."""
        if self._held is None:
            text, self._pending = self._pending, ""
            return text, []
        held, self._held = self._held, None
        parsed = parse_tool_calls(held)
        if parsed is None:
            return held, []
        prose, calls = parsed
        return (prose.rstrip() if self._shown else prose.strip()), calls

    def _release(self) -> str:
        """Show everything before a marker (or before what may be a marker's start); hold the rest."""
        start = _first_marker(self._pending)
        cut = len(self._pending) - _marker_tail(self._pending) if start is None else start
        out = self._pending[:cut]
        if not self._shown and not out.strip():
            out, cut = "", 0
        if start is None:
            self._pending = self._pending[cut:]
        else:
            self._held, self._pending = self._pending[cut:], ""
        self._shown = self._shown or bool(out)
        return out


class ForcedToolCalls:
    """The answer to a request whose tool call was forced by grammar: all of it is the call(s), so nothing is shown
    while it arrives and ``close`` reads it by the schema's form. An answer cut short (its token budget) does not
    parse and is shown as the text it is, with no call, as markup that does not parse is."""

    def __init__(self, schema: ResponseSchema) -> None:
        self._schema = schema
        self._text = ""

    def feed(self, text: str) -> str:
        self._text += text
        return ""

    def close(self) -> tuple[str, list[ToolCall]]:
        calls = forced_tool_calls(self._schema, self._text)
        return ("", calls) if calls else (self._text, [])


def forced_tool_calls(schema: ResponseSchema, text: str) -> list[ToolCall] | None:
    """The calls of an answer made under ``schema`` (a ``calls`` schema), each with a new id; None if it does not
    parse (cut short)."""
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if schema.calls == "named":
        calls = [ToolCall(name=schema.name, arguments=value)] if isinstance(value, dict) else None
    else:
        calls = _json_calls(text) if isinstance(value, list) else None
    return calls and [call.model_copy(update={"id": new_tool_call_id()}) for call in calls]


def _parse_xml(text: str) -> tuple[str, list[ToolCall]] | None:
    bodies = _XML_BLOCK.findall(text)
    if len(bodies) != text.count(XML_OPEN):   # a block left open: the reply was cut off
        return None
    calls = [_xml_call(body.strip()) for body in bodies]
    if None in calls:
        return None
    return _XML_BLOCK.sub("", text), calls


def _xml_call(body: str) -> ToolCall | None:
    function = _QWEN_FUNCTION.fullmatch(body)
    if function is None:
        calls = _json_calls(body)
        return calls[0] if calls and len(calls) == 1 else None
    name, parameters = function.groups()
    arguments = {key: value.strip("\n") for key, value in _QWEN_PARAMETER.findall(parameters)}
    return ToolCall(name=name, arguments=arguments)


def _json_calls(text: str) -> list[ToolCall] | None:
    """One call object or a list of them; ``parameters`` is read as ``arguments``."""
    try:
        value = json.loads(text)
    except ValueError:
        return None
    items = value if isinstance(value, list) else [value]
    calls = [_json_call(item) for item in items]
    return None if not calls or None in calls else calls


def _json_call(item: Any) -> ToolCall | None:
    if not isinstance(item, dict) or not isinstance(item.get("name"), str):
        return None
    arguments = item.get("arguments", item.get("parameters"))
    return ToolCall(name=item["name"], arguments=parse_arguments(arguments))


def _json_opening(text: str) -> bool | None:
    """Does the reply open as a JSON tool call? None while too little has arrived to say."""
    compact = "".join(text.split())
    if compact.startswith(JSON_OPENERS):
        return True
    if any(opener.startswith(compact) for opener in JSON_OPENERS):
        return None
    return False


def _first_marker(text: str) -> int | None:
    found = [i for i in (text.find(marker) for marker in MARKERS) if i >= 0]
    return min(found) if found else None


def _marker_tail(text: str) -> int:
    """Length of the end of ``text`` that could still grow into a marker."""
    return max(_partial_suffix(text, marker) for marker in MARKERS)
