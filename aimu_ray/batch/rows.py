"""Dataset rows as batch lines, and batch records as columns: the table form of ``lines`` and ``output``.

A row keeps every column it came with and gains the record's: ``ok``, ``output``, ``error`` and ``elapsed_s``,
and for text ``thinking``, ``usage``, ``stop_reason`` and ``tool_calls``. The types are fixed here, never
inferred from one batch's values, so every block of a dataset (and every run into one output) has one schema.
A row that does not make a valid request becomes a failed row, like an invalid line.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pyarrow as pa
from pydantic import ValidationError

from .lines import LINE_MODELS, BatchLine, InputLine, error_summary, given_id
from .output import LineRecord

_ERROR = pa.struct([("type", pa.string()), ("message", pa.string())])
_USAGE = pa.struct([(name, pa.int64()) for name in ("input_tokens", "output_tokens", "total_tokens",
                                                   "cache_creation_input_tokens", "cache_read_input_tokens")])
_TEXT = [("ok", pa.bool_()), ("output", pa.string()), ("thinking", pa.string()), ("usage", _USAGE),
         ("stop_reason", pa.string()), ("tool_calls", pa.string()), ("error", _ERROR), ("elapsed_s", pa.float64())]
_MEDIA = [("ok", pa.bool_()), ("output", pa.list_(pa.string())), ("error", _ERROR), ("elapsed_s", pa.float64())]
RESULT_FIELDS: dict[str, list[tuple[str, pa.DataType]]] = {"text": _TEXT, "image": _MEDIA, "audio": _MEDIA}
REQUIRED = {"text": ("prompt", "messages"), "image": ("prompt",), "audio": ("prompt",)}
_JSON_FIELDS = ("messages", "tools", "generate_kwargs")   # taken as JSON text too: how tables often keep them


def result_names(task: str) -> list[str]:
    return [name for name, _ in RESULT_FIELDS[task]]


def check_columns(names: list[str], task: str) -> None:
    """Refuse, before any model loads, a table that cannot make requests or would lose a column to a result."""
    required = REQUIRED[task]
    if not set(required) & set(names):
        wanted = " or ".join(repr(n) for n in required)
        raise ValueError(f"The input has no {wanted} column (its columns: {', '.join(names) or 'none'}); a {task} "
                         f"row needs one.")
    taken = [name for name in result_names(task) if name in names]
    if taken:
        raise ValueError(f"The input already has column(s) {', '.join(taken)}, which the results are written to: "
                         "rename or drop them first.")


def line_of(row: dict[str, Any], number: int, task: str) -> InputLine:
    """Row ``number`` (counted in its batch) as a batch line: its request fields validated, the rest left aside.
    A row without an id gets a random one, so its files never take another row's name."""
    model: type[BatchLine] = LINE_MODELS[task]
    row_id = given_id(row) or f"row-{uuid.uuid4().hex[:12]}"
    try:
        fields = {name: value for name in model.model_fields if name != "id"
                  if (value := _plain(name, row.get(name))) is not None}
        return InputLine(number, row_id, parsed=model.model_validate({**fields, "id": row_id}))
    except ValueError as error:     # pydantic's ValidationError, or JSON text that does not parse
        return InputLine(number, row_id, problem=_problem(error))


def with_results(batch: pa.Table, records: list[LineRecord], task: str) -> pa.Table:
    """``batch`` with the records' columns appended, in the fixed types."""
    for name, kind in RESULT_FIELDS[task]:
        values = [_column_value(name, record) for record in records]
        batch = batch.append_column(pa.field(name, kind), pa.array(values, type=kind))
    return batch


def _plain(name: str, value: Any) -> Any:
    """A cell as the request field wants it: JSON text parsed, and the keys Arrow filled with null (a struct
    column holds every key any row had) dropped from messages and generate kwargs."""
    if name in _JSON_FIELDS and isinstance(value, str):
        value = json.loads(value)
    if name == "generate_kwargs" and isinstance(value, dict):
        return {k: v for k, v in value.items() if v is not None}
    if name == "messages" and isinstance(value, list):
        return [{k: v for k, v in m.items() if v is not None} if isinstance(m, dict) else m for m in value]
    return value


def _problem(error: ValueError) -> str:
    return error_summary(error) if isinstance(error, ValidationError) else f"a cell is not JSON: {error}"


def _column_value(name: str, record: LineRecord) -> Any:
    if name == "error":
        return record.error.model_dump() if record.error else None
    value = getattr(record, name)
    if name == "tool_calls":
        return json.dumps(value) if value else None
    return value
