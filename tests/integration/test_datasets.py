"""Batch over datasets on Ray Data, on a local Ray: the processor and ``run_dataset`` with the real SmolLM2
(llama.cpp and transformers), the tiny image model, and the loopback OpenAI-compatible fake for remote rows.

One Ray for the module. The processor's workers are Ray Data actors, each hosting its own engine.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path

import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray
from PIL import Image

import aimu_ray.batch as batch
from aimu_ray.batch.datasets import run_dataset
from aimu_ray.batch.lines import DuplicateIdError

pytest_plugins = ["tests.fakes.fixtures", "tests.fixtures.audio_fixtures", "tests.fixtures.image_fixtures",
                  "tests.fixtures.pytest_fixtures"]
pytestmark = pytest.mark.usefixtures("local_ray")
RAY_INIT = {"num_cpus": 4}
SHORT = {"max_tokens": 4}
GUARD_S = 120


def write_parquet(path: Path, rows: list[dict]) -> Path:
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def read_rows(folder: Path) -> list[dict]:
    """Every row of an output folder (Parquet or JSONL files), by id."""
    files = sorted(p for p in folder.iterdir() if not p.name.startswith((".", "_")))
    if files and files[0].suffix == ".parquet":
        return sorted(pq.read_table(folder).to_pylist(), key=lambda r: r["id"])
    return sorted((json.loads(line) for f in files for line in f.read_text().splitlines()), key=lambda r: r["id"])


def row_workers() -> list[dict]:
    """Every Ray Data worker of a processor this Ray has run, alive or not (the GCS's actor table)."""
    return [a for a in ray._private.state.actors().values() if "RowWorker" in a["ActorClassName"]]


def prompts(count: int, **extra) -> list[dict]:
    return [{"id": f"r{i:02d}", "prompt": f"Name a colour, number {i}.", "topic": i, **extra} for i in range(count)]


def test_parquet_rows_through_transformers_on_two_workers_keep_their_columns(smollm2_hf_folder, tmp_path):
    before = len(row_workers())
    source = write_parquet(tmp_path / "in.parquet", prompts(8))
    summary = run_dataset(f"hf:{smollm2_hf_folder}", str(source), str(tmp_path / "out"), concurrency=2,
                          batch_size=2, generate_kwargs=SHORT, progress=False)
    assert (summary.total, summary.succeeded, summary.failed) == (8, 8, 0)
    assert summary.output_tokens > 0 and summary.rows_per_s > 0
    rows = read_rows(tmp_path / "out")
    assert [r["id"] for r in rows] == [f"r{i:02d}" for i in range(8)]
    assert all(r["ok"] and r["output"] and r["topic"] == int(r["id"][1:]) for r in rows)
    assert all(r["usage"]["output_tokens"] <= 4 and r["stop_reason"] in ("length", "stop") for r in rows)
    assert len(row_workers()) - before == 2                 # a pool of two, each loading its own engine


def test_jsonl_rows_through_llamacpp_with_remote_style_columns_and_failed_rows(smollm2_gguf_path, tmp_path):
    rows = [*prompts(3),
            {"id": "conv", "messages": json.dumps([{"role": "user", "content": "Say hi."}]), "topic": 9},
            {"id": "bad-kwargs", "prompt": "x", "generate_kwargs": '"not an object"', "topic": 10},
            {"id": "bad-json", "prompt": "x", "generate_kwargs": "{oops", "topic": 11}]
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    summary = run_dataset("llamacpp:smollm2", str(source), str(tmp_path / "out"), generate_kwargs=SHORT,
                          model_options={"model_path": str(smollm2_gguf_path)}, progress=False)
    assert (summary.succeeded, summary.failed) == (4, 2)
    by_id = {r["id"]: r for r in read_rows(tmp_path / "out")}
    assert len(by_id) == 6 and by_id["conv"]["ok"] and by_id["conv"]["output"]
    assert by_id["bad-kwargs"]["error"]["type"] == "InvalidLine"
    assert "generate_kwargs" in by_id["bad-kwargs"]["error"]["message"]
    assert "not JSON" in by_id["bad-json"]["error"]["message"] and by_id["bad-json"]["output"] is None


def test_image_rows_write_pngs_beside_the_output(tiny_sd_dir, tmp_path):
    source = write_parquet(tmp_path / "in.parquet", [{"id": "fox", "prompt": "a fox", "num_images": None,
                                                      "num_inference_steps": 2},
                                                     {"id": "owls", "prompt": "owls", "num_images": 2,
                                                      "num_inference_steps": 2}])
    summary = run_dataset(f"hf:{tiny_sd_dir}", str(source), str(tmp_path / "out"), task="image", progress=False)
    assert summary.succeeded == 2
    by_id = {r["id"]: [Path(p) for p in r["output"]] for r in read_rows(tmp_path / "out")}
    assert [p.name for p in by_id["fox"]] == ["fox-0.png"] and [p.name for p in by_id["owls"]] == ["owls-0.png",
                                                                                                   "owls-1.png"]
    for path in by_id["fox"] + by_id["owls"]:
        assert path.parent == tmp_path / "out_files" and Image.open(path).format == "PNG"


def test_audio_rows_through_uris_write_wavs_and_a_jsonl_folder(tiny_musicgen_dir, tmp_path):
    """Locations as URIs (``file://`` here, ``s3://`` on a cluster) go through pyarrow's filesystems."""
    source = write_parquet(tmp_path / "in.parquet", [{"id": "drums", "prompt": "drums", "duration_s": 0.1}])
    summary = run_dataset(f"hf:{tiny_musicgen_dir}", f"file://{source}", f"file://{tmp_path}/out", task="audio",
                          output_format="jsonl", progress=False)
    assert summary.succeeded == 1
    [row] = read_rows(tmp_path / "out")
    assert row["output"] == [f"file://{tmp_path}/out_files/drums-0.wav"]
    assert (tmp_path / "out_files" / "drums-0.wav").read_bytes()[:4] == b"RIFF"


def test_the_jsonl_runner_answers_with_the_real_model(smollm2_gguf_path, tmp_path):
    source = write_jsonl(tmp_path / "in.jsonl", [{"id": r["id"], "prompt": r["prompt"]} for r in prompts(3)])
    summary = asyncio.run(batch.run_batch("llamacpp:smollm2", source, tmp_path / "out.jsonl", progress=False,
                                          generate_kwargs=SHORT,
                                          client_options={"model_path": str(smollm2_gguf_path)}))
    assert (summary.succeeded, summary.failed) == (3, 0) and 0 < summary.output_tokens <= 12
    records = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in records) == ["r00", "r01", "r02"] and all(r["output"] for r in records)


def test_remote_rows_go_through_the_pool_and_429s_are_waited_out(fake, tmp_path):
    for _ in range(3):
        fake.fault(status=429, retry_after=0.2)
    source = write_parquet(tmp_path / "in.parquet", prompts(6))
    out = batch.processor(f"openai-compat:m@{fake.url}/v1", concurrency=2, batch_size=3)(
        ray.data.read_parquet(str(source)))
    rows = sorted(out.take_all(), key=lambda r: r["id"])
    assert [r["output"] for r in rows] == [f"echo: Name a colour, number {i}." for i in range(6)]
    assert all(r["ok"] and r["error"] is None for r in rows)
    assert len(fake.requests) == 6 + 3                      # each 429 answered, waited out, and sent again


def test_a_rerun_skips_written_ids_and_redoes_a_torn_file(fake, tmp_path):
    model = f"openai-compat:m@{fake.url}/v1"
    source = write_parquet(tmp_path / "in.parquet", prompts(4))
    out = tmp_path / "out"
    assert run_dataset(model, str(source), str(out), progress=False).succeeded == 4
    (out / "torn.parquet").write_bytes(b"PAR1 cut short")      # as a killed write leaves one
    write_parquet(source, prompts(6))                          # two rows more
    fake.reset()
    summary = run_dataset(model, str(source), str(out), progress=False)
    assert (summary.done_before, summary.succeeded, summary.total) == (4, 2, 6)
    assert sorted(r.body["messages"][-1]["content"][-3:-1] for r in fake.requests) == [" 4", " 5"]
    assert [r["id"] for r in read_rows(out)] == [f"r{i:02d}" for i in range(6)]


def test_failed_rows_run_again_on_request_and_keep_one_row_per_id(fake, tmp_path):
    model = f"openai-compat:m@{fake.url}/v1"
    fake.fault(status=400, message="refused")
    source = write_parquet(tmp_path / "in.parquet", prompts(3))
    out = tmp_path / "out"
    first = run_dataset(model, str(source), str(out), batch_size=1, progress=False)
    assert (first.succeeded, first.failed) == (2, 1)
    again = run_dataset(model, str(source), str(out), retry_failed=True, progress=False)
    assert (again.done_before, again.succeeded, again.failed) == (2, 1, 0)
    rows = read_rows(out)
    assert [r["id"] for r in rows] == ["r00", "r01", "r02"] and all(r["ok"] for r in rows)


def test_bad_input_is_refused_before_any_model_loads(fake, tmp_path):
    model = f"openai-compat:m@{fake.url}/v1"
    with pytest.raises(ValueError, match="no such file or folder"):
        run_dataset(model, str(tmp_path / "missing.parquet"), str(tmp_path / "out"), progress=False)
    no_prompt = write_parquet(tmp_path / "no_prompt.parquet", [{"id": "a", "question": "?"}])
    with pytest.raises(ValueError, match="no 'prompt' or 'messages' column"):
        run_dataset(model, str(no_prompt), str(tmp_path / "out"), progress=False)
    twice = write_parquet(tmp_path / "twice.parquet", [{"id": "a", "prompt": "1"}, {"id": "a", "prompt": "2"}])
    with pytest.raises(DuplicateIdError, match="'a'"):
        run_dataset(model, str(twice), str(tmp_path / "out"), progress=False)
    other = tmp_path / "other"
    other.mkdir()
    write_parquet(other / "part.parquet", [{"id": "x", "answer": "not ours"}])
    good = write_parquet(tmp_path / "good.parquet", prompts(1))
    with pytest.raises(ValueError, match="does not hold this batch's rows"):
        run_dataset(model, str(good), str(other), progress=False)
    assert fake.requests == []


def test_a_worker_killed_mid_job_is_replaced_and_every_id_comes_out_once(smollm2_gguf_path, tmp_path):
    """Ray Data restarts the actor and runs its block again; the output holds each id exactly once."""
    source = write_parquet(tmp_path / "in.parquet", prompts(12))
    out = tmp_path / "out"
    result: dict = {}

    def job():
        result["summary"] = run_dataset("llamacpp:smollm2", str(source), str(out), batch_size=2,
                                        generate_kwargs={"max_tokens": 24},
                                        model_options={"model_path": str(smollm2_gguf_path)}, progress=False)

    runner = threading.Thread(target=job)
    runner.start()
    killed = kill_a_row_worker_once_it_answers()
    runner.join(GUARD_S * 2)
    assert killed and not runner.is_alive()
    assert result["summary"].succeeded == 12 and result["summary"].failed == 0
    assert [r["id"] for r in read_rows(out)] == [f"r{i:02d}" for i in range(12)]


def kill_a_row_worker_once_it_answers() -> bool:
    """SIGKILL the process of a processor's worker once it has loaded and is busy (its CPU time grows)."""
    deadline = time.monotonic() + GUARD_S
    while time.monotonic() < deadline:
        for process in psutil.process_iter(["cmdline"]):
            if "RowWorker" in " ".join(process.info["cmdline"] or []):
                try:
                    if process.cpu_times().user > 2.0:          # the model is loaded and generating
                        process.kill()
                        return True
                except psutil.NoSuchProcess:
                    continue
        time.sleep(0.1)
    return False
