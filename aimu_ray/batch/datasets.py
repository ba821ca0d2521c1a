"""``aimu-ray batch`` over datasets: Parquet or JSONL, one file or a folder of them, local or on any filesystem
pyarrow opens (``s3://``, ``gs://``, …), read and written by Ray Data across the cluster through the processor.

The output is a folder of data files, and, as the JSONL runner's output file is, the job's log: a rerun into it
skips the ids already written there (a file a killed job left unreadable is deleted first, and its rows run
again), so every id ends up in it once. Everything that can be checked is checked before any model loads: the
input can be read and has the request columns, ids are unique, and the output holds this batch's schema.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson
import pyarrow.parquet as pq

from ..models.load import Task
from .files import Folder
from .lines import DuplicateIdError
from .data_processor import Processor, ProcessorConfig
from .rows import result_names
from .runner import BatchSummary

logger = logging.getLogger("aimu_ray")
Format = Literal["parquet", "jsonl"]
SUFFIXES: dict[str, Format] = {".parquet": "parquet", ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl"}


def data_format(location: str, files: list[str]) -> Format | None:
    """The format a path names by its suffix, or a folder by its files'; None when neither says."""
    for name in [location.rstrip("/"), *files]:
        for suffix, kind in SUFFIXES.items():
            if name.endswith(suffix):
                return kind
    return None


def run_dataset(model: str, input_path: str, output_path: str, *, task: Task = "text",
                output_format: Format | None = None, retry_failed: bool = False, progress: bool = True,
                **settings: Any) -> BatchSummary:
    """Every row of ``input_path`` through ``model`` into the folder ``output_path`` (see the module's docstring);
    ``settings`` are the processor's (``concurrency``, ``batch_size``, ``generate_kwargs``, ``model_options``, …).
    Images and clips go to ``output_dir``, by default the output's name plus ``_files``, beside it."""
    import ray.data

    started = time.monotonic()
    source, sink = Folder(input_path), Folder(output_path)
    if str(input_path).rstrip("/") == str(output_path).rstrip("/"):
        raise ValueError("The output must not be the input.")
    in_format = _input_format(input_path, source)
    out_format = output_format or in_format
    settings.setdefault("output_dir", None if task == "text" else sink.beside("_files").uri)
    processor = Processor(ProcessorConfig(model=model, task=task, **settings))   # a bad model or option fails here
    ray.data.DataContext.get_current().enable_progress_bars = progress
    dataset = _read(source, in_format)
    names = dataset.schema().names
    expected = [*names, *result_names(task)]
    if retry_failed:
        _drop_failures(sink, out_format, expected)
    done = _written_ids(sink, out_format, expected)
    if done and "id" not in names:
        raise ValueError(f"{output_path} already holds rows, and the input has no 'id' column to tell which rows "
                         "they were: add an id column, or write to a new output.")
    if "id" in names:
        _check_unique(dataset)
    if done:
        dataset = dataset.map_batches(_not_written, fn_kwargs={"done": pa.array(sorted(done), pa.string())},
                                      batch_format="pyarrow")
    answered = processor(dataset)
    before = set(sink.files())
    if out_format == "parquet":
        answered.write_parquet(sink.uri)
    else:
        answered.write_json(sink.uri)
    new_files = [f for f in sink.files() if f not in before]
    return _summary(sink, new_files, out_format, ["ok", "usage"] if task == "text" else ["ok"], len(done), started)


def _input_format(location: str, source: Folder) -> Format:
    if not source.exists():
        raise ValueError(f"Cannot read the input {location}: no such file or folder.")
    files = source.files()
    if not files:
        raise ValueError(f"The input {location} holds no data files.")
    kind = data_format(str(location), files)
    if kind is None:
        raise ValueError(f"Cannot tell the format of {location}: name a .parquet or .jsonl file, or a folder of them.")
    return kind


def _read(source: Folder, kind: Format):
    import ray.data

    paths = source.files()
    locations = [source.location(path) for path in paths]
    if kind == "parquet":
        return ray.data.read_parquet(locations)
    return ray.data.read_json(locations, lines=True)


def _table(folder: Folder, path: str, kind: Format, columns: list[str] | None = None) -> pa.Table:
    if kind == "parquet":
        return pq.read_table(path, columns=columns, filesystem=folder.fs)
    with folder.fs.open_input_stream(path) as stream:
        table = pajson.read_json(stream)
    return table.select(columns) if columns else table


def _written_ids(sink: Folder, kind: Format, expected: list[str]) -> set[str]:
    """Ids in the output's files, after deleting any a killed job left unreadable; refuses files of another
    schema (another batch's output, or not an output at all)."""
    done: set[str] = set()
    for path in sink.files():
        try:
            names, ids = _names_and_ids(sink, path, kind)
        except (pa.ArrowInvalid, OSError, ValueError) as error:
            logger.warning("%s cannot be read (%s): left by an interrupted run; deleting it, its rows run again.",
                           sink.location(path), error)
            sink.delete(path)
            continue
        if set(names) != set(expected):
            raise ValueError(f"{sink.location(path)} does not hold this batch's rows: its columns are "
                             f"{', '.join(names)}, this batch writes {', '.join(expected)}. Write to a new output.")
        if ids is not None:
            done.update(pc.cast(ids, pa.string()).to_pylist())
    return done


def _names_and_ids(folder: Folder, path: str, kind: Format) -> tuple[list[str], pa.ChunkedArray | None]:
    """A written file's columns and its ids: a Parquet file's footer and id column only, not its answers."""
    if kind == "parquet":
        names = pq.read_schema(path, filesystem=folder.fs).names
        return names, _table(folder, path, kind, ["id"])["id"] if "id" in names else None
    table = _table(folder, path, kind)
    return table.column_names, table["id"] if "id" in table.column_names else None


def _drop_failures(sink: Folder, kind: Format, expected: list[str]) -> None:
    """Rewrite each output file without its failed rows, so they run again and each id keeps one row. A kill
    mid-rewrite leaves that file unreadable; the next run deletes it, and its rows run again too."""
    for path in sink.files():
        try:
            table = _table(sink, path, kind)
        except (pa.ArrowInvalid, OSError, ValueError):
            continue                                 # _written_ids deals with it
        if set(table.column_names) != set(expected) or pc.all(table["ok"]).as_py():
            continue
        kept = table.filter(table["ok"])
        if kind == "parquet":
            pq.write_table(kept, path, filesystem=sink.fs)
        else:
            with sink.fs.open_output_stream(path) as stream:
                stream.write("".join(json.dumps(row) + "\n" for row in kept.to_pylist()).encode())


def _check_unique(dataset) -> None:
    seen: set[str] = set()
    for batch in dataset.select_columns(["id"]).iter_batches(batch_format="pyarrow", batch_size=65536):
        for row_id in pc.cast(batch["id"], pa.string()).to_pylist():
            if row_id in seen:
                raise DuplicateIdError(f"id {row_id!r} is on more than one row; ids must be unique because a rerun "
                                       "resumes by id.")
            seen.add(row_id)


def _not_written(batch: pa.Table, done: pa.Array) -> pa.Table:
    return batch.filter(pc.invert(pc.is_in(pc.cast(batch["id"], pa.string()), value_set=done)))


def _summary(sink: Folder, new_files: list[str], kind: Format, columns: list[str], done_before: int,
             started: float) -> BatchSummary:
    """This run's rows, read back from the files it wrote: how many, how many failed, the tokens they made."""
    tables = [_table(sink, path, kind, columns) for path in new_files]
    rows = sum(t.num_rows for t in tables)
    succeeded = sum(pc.sum(t["ok"].cast(pa.int64())).as_py() or 0 for t in tables)
    tokens = sum(_output_tokens(t) for t in tables)
    elapsed = time.monotonic() - started
    return BatchSummary(total=done_before + rows, done_before=done_before, succeeded=succeeded,
                        failed=rows - succeeded, output_tokens=tokens, elapsed_s=round(elapsed, 3),
                        rows_per_s=round(rows / elapsed, 2) if elapsed else 0.0)


def _output_tokens(table: pa.Table) -> int:
    if "usage" not in table.column_names:
        return 0
    usage = table["usage"].combine_chunks()
    if not pa.types.is_struct(usage.type) or usage.type.get_field_index("output_tokens") < 0:
        return 0
    return pc.sum(pc.struct_field(usage, "output_tokens")).as_py() or 0
