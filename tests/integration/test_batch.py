"""Batch jobs on a local Ray: text lines through the shared pool to the loopback OpenAI-compatible fake,
images through the tiny diffusers model's actor, and jobs stopped by SIGTERM and SIGKILL that resume.

One Ray for the module. The stopped jobs are separate driver processes joined to that Ray, as
``ray job submit`` drivers join a cluster.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import ray
from PIL import Image

from aimu_ray import aio
from aimu_ray.batch import run_batch, run_batch_sync

pytest_plugins = ["tests.fakes.fixtures", "tests.fixtures.image_fixtures"]
pytestmark = pytest.mark.usefixtures("local_ray")

SECRET = "sk-batch-secret-0123456789abcdef"
GUARD_S = 90        # only so that a broken job fails the test instead of hanging the run
DRIVER = """
import sys
from aimu_ray.batch import BatchInterrupted, run_batch_sync
try:
    run_batch_sync(sys.argv[1], sys.argv[2], sys.argv[3], concurrency=2, progress=False)
except BatchInterrupted as stopped:
    print(stopped, file=sys.stderr)
    sys.exit(130)
"""


def write_jsonl(path: Path, *lines) -> Path:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


async def test_a_text_batch_records_one_line_per_input_line(fake, tmp_path):
    source = write_jsonl(tmp_path / "prompts.jsonl",
                         *({"id": f"p{i}", "prompt": f"question {i}"} for i in range(4)),
                         {"id": "conv", "system": "Be brief.",
                          "messages": [{"role": "user", "content": "one"}, {"role": "assistant", "content": "1"},
                                       {"role": "user", "content": "two"}]},
                         "{not json",
                         {"id": "both", "prompt": "x", "messages": [{"role": "user", "content": "y"}]})
    out = tmp_path / "out.jsonl"
    summary = await run_batch(f"openai-compat:m@{fake.url}/v1", source, out, concurrency=4, progress=False)
    assert (summary.total, summary.done_before, summary.succeeded, summary.failed) == (7, 0, 5, 2)
    by_id = {r["id"]: r for r in records(out)}
    assert len(by_id) == 7 and by_id["p2"]["output"] == "echo: question 2" and by_id["p2"]["line"] == 3
    assert by_id["p2"]["usage"]["total_tokens"] > 0 and by_id["p2"]["stop_reason"] == "stop"
    assert by_id["conv"]["output"] == "echo: two"
    [sent] = [r.body["messages"] for r in fake.requests if r.body["messages"][-1]["content"] == "two"]
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "user"]
    assert by_id["6"]["error"]["type"] == "InvalidLine" and by_id["6"]["line"] == 6
    assert "exactly one of 'prompt' and 'messages'" in by_id["both"]["error"]["message"]


async def test_a_provider_error_is_a_failed_line_that_never_shows_the_key(fake, tmp_path):
    fake.fault(status=400, message="the prompt was refused upstream")
    source = write_jsonl(tmp_path / "in.jsonl", {"prompt": "first"}, {"prompt": "second"})
    out = tmp_path / "out.jsonl"
    summary = await run_batch(f"openai-compat:m@{fake.url}/v1", source, out, concurrency=1, progress=False,
                              client_options={"api_key": SECRET})
    assert (summary.succeeded, summary.failed) == (1, 1)
    first, second = records(out)
    assert first["ok"] is False and first["error"]["type"] == "ProviderError"
    assert "refused upstream" in first["error"]["message"] and second["output"] == "echo: second"
    assert SECRET not in out.read_text() and fake.requests[0].headers["authorization"] == f"Bearer {SECRET}"


def start_driver(model: str, source: Path, out: Path) -> subprocess.Popen:
    env = {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address}
    return subprocess.Popen([sys.executable, "-c", DRIVER, model, str(source), str(out)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_for_records(out: Path, count: int, driver: subprocess.Popen) -> None:
    deadline = time.monotonic() + GUARD_S
    while not (out.exists() and out.read_bytes().count(b"\n") >= count):
        if driver.poll() is not None or time.monotonic() > deadline:
            driver.kill()
            pytest.fail(f"the batch driver wrote fewer than {count} records: {driver.stderr.read()[-2000:]}")
        time.sleep(0.05)


def test_a_stopped_then_killed_job_resumes_without_losing_or_repeating_a_line(fake, tmp_path):
    fake.delay_s = 0.3
    model = f"openai-compat:m@{fake.url}/v1"
    source = write_jsonl(tmp_path / "in.jsonl", *({"id": f"q{i}", "prompt": str(i)} for i in range(16)))
    out = tmp_path / "out.jsonl"

    stopped = start_driver(model, source, out)          # `ray job stop` sends SIGTERM
    wait_for_records(out, 2, stopped)
    stopped.send_signal(signal.SIGTERM)
    assert stopped.wait(GUARD_S) == 130 and "Run the same command again" in stopped.stderr.read()
    assert out.read_bytes().endswith(b"\n")

    killed = start_driver(model, source, out)
    wait_for_records(out, len(records(out)) + 2, killed)
    killed.kill()
    killed.wait(GUARD_S)
    killed.stderr.close()
    with out.open("ab") as file:
        file.write(b'{"id": "q15", "line": 16, "ok": tr')    # as if the kill had landed inside a write
    done = out.read_bytes().count(b"\n")

    fake.delay_s = 0
    summary = run_batch_sync(model, source, out, concurrency=4, progress=False)
    assert summary.done_before == done and summary.succeeded == 16 - done and summary.failed == 0
    ids = [r["id"] for r in records(out)]
    assert len(ids) == 16 and set(ids) == {f"q{i}" for i in range(16)}
    assert all(r["output"] == f"echo: {r['id'][1:]}" for r in records(out))


async def test_an_image_batch_writes_png_files_beside_the_output(tiny_sd_dir, tmp_path):
    source = write_jsonl(tmp_path / "images.jsonl", {"id": "fox", "prompt": "a fox", "num_inference_steps": 2, "seed": 1},
                         {"id": "owls", "prompt": "owls", "num_images": 2, "num_inference_steps": 2, "seed": 2})
    out = tmp_path / "images.out.jsonl"
    try:
        summary = await run_batch(f"hf:{tiny_sd_dir}", source, out, task="image", progress=False)
    finally:
        await aio.unload()
    assert summary.succeeded == 2
    paths = {r["id"]: [Path(p) for p in r["output"]] for r in records(out)}
    assert len(paths["fox"]) == 1 and len(paths["owls"]) == 2 and len(set(paths["owls"])) == 2
    for path in paths["fox"] + paths["owls"]:
        assert path.is_absolute() and path.parent == tmp_path / "images.out_files"
        assert Image.open(path).format == "PNG"
