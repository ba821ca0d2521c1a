"""Dataset rows as batch lines, records as typed columns, output folders and formats: no Ray needed."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from aimu_ray.batch import ProcessorConfig
from aimu_ray.batch.datasets import data_format
from aimu_ray.batch.files import Folder, file_stem
from aimu_ray.batch.lines import TextLine
from aimu_ray.batch.output import LineError, LineRecord
from aimu_ray.batch.rows import check_columns, line_of, result_names, with_results


def test_a_row_keeps_only_request_fields_and_arrow_nulls_are_dropped():
    row = {"id": 7, "prompt": None, "topic": "x", "system": None,
           "messages": [{"role": "user", "content": "hi", "name": None}],
           "generate_kwargs": {"max_tokens": 5, "temperature": None}}
    line = line_of(row, 1, "text")
    assert line.id == "7" and isinstance(line.parsed, TextLine)
    assert line.parsed.messages == [{"role": "user", "content": "hi"}]
    assert line.parsed.generate_kwargs == {"max_tokens": 5} and line.parsed.system is None


def test_json_text_cells_are_parsed_and_bad_ones_make_a_failed_row():
    line = line_of({"messages": json.dumps([{"role": "user", "content": "hi"}]), "tools": "[]"}, 3, "text")
    assert line.parsed.messages == [{"role": "user", "content": "hi"}] and line.id.startswith("row-")
    assert "not JSON" in line_of({"prompt": "x", "generate_kwargs": "{oops"}, 1, "text").problem
    wrong = line_of({"id": "a", "prompt": "x", "generate_kwargs": "[1]"}, 1, "text")
    assert wrong.parsed is None and "generate_kwargs" in wrong.problem
    assert "prompt" in line_of({"id": "b", "prompt": None}, 1, "image").problem


def test_rows_without_ids_never_share_a_file_name():
    assert line_of({"prompt": "a"}, 1, "image").id != line_of({"prompt": "a"}, 1, "image").id


def test_results_are_appended_in_fixed_types_whatever_the_batch_holds():
    batch = pa.table({"id": ["a", "b"], "prompt": ["x", "y"]})
    records = [LineRecord(id="a", line=1, ok=True, output="hi", usage={"input_tokens": 2, "output_tokens": 1,
                                                                        "total_tokens": 3},
                          tool_calls=[{"name": "f", "arguments": {"x": 1}}], elapsed_s=0.5),
               LineRecord(id="b", line=2, ok=False, error=LineError(type="RateLimitError", message="slow down"))]
    table = with_results(batch, records, "text")
    assert table.column_names == ["id", "prompt", *result_names("text")]
    assert table.schema.field("usage").type == pa.struct([(n, pa.int64()) for n in (
        "input_tokens", "output_tokens", "total_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")])
    first, second = table.to_pylist()
    assert first["usage"]["output_tokens"] == 1 and json.loads(first["tool_calls"]) == [{"name": "f",
                                                                                          "arguments": {"x": 1}}]
    assert second["error"] == {"type": "RateLimitError", "message": "slow down"} and second["usage"] is None
    all_ok = with_results(batch.slice(0, 1), records[:1], "text")          # no error in the batch: same type
    assert all_ok.schema == table.slice(0, 1).schema
    media = with_results(batch.slice(0, 1), [LineRecord(id="a", line=1, ok=True, output=["/f/a-0.png"])], "image")
    assert media.schema.field("output").type == pa.list_(pa.string())


def test_columns_are_checked_before_anything_runs():
    check_columns(["id", "messages"], "text")
    with pytest.raises(ValueError, match="no 'prompt' or 'messages' column"):
        check_columns(["id", "question"], "text")
    with pytest.raises(ValueError, match="no 'prompt' column"):
        check_columns(["messages"], "image")
    with pytest.raises(ValueError, match="already has column\\(s\\) ok, output"):
        check_columns(["prompt", "ok", "output"], "text")


def test_formats_come_from_the_name_or_the_folders_files():
    assert data_format("s3://b/in.parquet", []) == "parquet" and data_format("in.jsonl", []) == "jsonl"
    assert data_format("in/", ["/in/part-0.json"]) == "jsonl" and data_format("in", ["/in/x.csv"]) is None


def test_a_folder_writes_lists_and_names_files_as_the_user_would(tmp_path):
    folder = Folder(tmp_path / "out")
    assert not folder.exists() and folder.files() == []
    path = folder.write("a-0.png", b"png")
    assert path == str(tmp_path / "out" / "a-0.png") and (tmp_path / "out" / "a-0.png").read_bytes() == b"png"
    folder.write("_SUCCESS", b"")
    assert folder.files() == [path] and folder.beside("_files").uri == str(tmp_path / "out_files")
    assert Folder(path).files() == [path]
    assert file_stem("q1") == "q1" and file_stem("a/b") != file_stem("a_b")


def test_a_pool_whose_minimum_passes_its_maximum_is_refused():
    with pytest.raises(ValueError, match="minimum is above its maximum"):
        ProcessorConfig(model="openai:gpt-4.1", concurrency=(3, 1))
