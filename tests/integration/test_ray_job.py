"""aimu_ray from a ``ray job submit`` job: a real head node (``ray start --head``), a submitted driver, the
pool found on that cluster, a loopback provider answering. No in-process Ray in this module.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from aimu_ray.demo.servers import free_port

pytest_plugins = ["tests.fakes.fixtures"]

RAY = str(Path(sys.executable).with_name("ray"))
JOB = """
import aimu_ray
c = aimu_ray.client("vllm:m@{url}/v1", system="job")
print("ANSWER", c.chat("from a job"), len(c.messages))
"""


@pytest.fixture(scope="module")
def head_node(tmp_path_factory):
    """A one-node cluster with the job server, stopped (with everything it started) at the end."""
    port, dashboard = free_port(), free_port()
    temp = tmp_path_factory.mktemp("ray")
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    head = subprocess.Popen([RAY, "start", "--head", "--block", f"--port={port}", "--num-cpus=2",
                             "--include-dashboard=true", f"--dashboard-port={dashboard}",
                             f"--temp-dir={temp}", "--disable-usage-stats"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
    address = f"http://127.0.0.1:{dashboard}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{address}/api/version", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.5)
    else:
        os.killpg(head.pid, signal.SIGKILL)
        pytest.fail("the Ray head node's job server did not come up in 90 s")
    yield address, env
    os.killpg(head.pid, signal.SIGINT)       # `ray start --block` stops what it started on Ctrl-C
    try:
        head.wait(15)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(head.pid, signal.SIGKILL)  # and anything of the group still alive

    shutil.rmtree(temp, ignore_errors=True)


def submit(address: str, env: dict, *entrypoint: str) -> subprocess.CompletedProcess:
    """``ray job submit``, retried while the head's job agent is still starting (it lags the dashboard,
    by minutes on a loaded 2-core machine)."""
    deadline = time.monotonic() + 240
    while True:
        job = subprocess.run([RAY, "job", "submit", f"--address={address}", "--", *entrypoint],
                             env=env, capture_output=True, text=True, timeout=180)
        if "No available agent" not in job.stderr + job.stdout or time.monotonic() > deadline:
            return job
        time.sleep(1)


def test_a_submitted_job_chats_through_the_clusters_pool(head_node, fake):
    job = submit(*head_node, sys.executable, "-c", JOB.format(url=fake.url))
    assert job.returncode == 0, job.stdout[-2000:] + job.stderr[-2000:]
    assert "ANSWER echo: from a job 3" in job.stdout
    assert fake.requests[-1].body["messages"][0] == {"role": "system", "content": "job"}


def test_a_submitted_batch_job_writes_one_record_per_line(head_node, fake, tmp_path):
    """The issue's command: ``ray job submit -- aimu-ray batch ...``, on the cluster's pool."""
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(f'{{"id": "p{i}", "prompt": "line {i}"}}\n' for i in range(5)))
    out = tmp_path / "out.jsonl"
    job = submit(*head_node, str(Path(sys.executable).with_name("aimu-ray")), "batch", "--model",
                 f"vllm:m@{fake.url}/v1", "--input", str(prompts), "--output", str(out), "--no-progress")
    assert job.returncode == 0, job.stdout[-2000:] + job.stderr[-2000:]
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["id"] for r in records) == [f"p{i}" for i in range(5)] and all(r["ok"] for r in records)
    assert {r["output"] for r in records} == {f"echo: line {i}" for i in range(5)}


def test_a_submitted_batch_job_on_ray_data_writes_a_parquet_folder(head_node, fake, tmp_path):
    """The dataset path from a job: Parquet in, a folder of Parquet out, rows keeping their columns."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    prompts = tmp_path / "prompts.parquet"
    pq.write_table(pa.Table.from_pylist([{"id": f"p{i}", "prompt": f"row {i}", "n": i} for i in range(5)]), prompts)
    out = tmp_path / "answers"
    job = submit(*head_node, str(Path(sys.executable).with_name("aimu-ray")), "batch", "--model",
                 f"vllm:m@{fake.url}/v1", "--input", str(prompts), "--output", str(out), "--no-progress")
    assert job.returncode == 0, job.stdout[-2000:] + job.stderr[-2000:]
    [summary] = [json.loads(line) for line in job.stdout.splitlines() if line.startswith('{"total"')]
    assert (summary["succeeded"], summary["failed"]) == (5, 0)
    rows = sorted(pq.read_table(out).to_pylist(), key=lambda r: r["id"])
    assert [(r["id"], r["n"], r["output"]) for r in rows] == [(f"p{i}", i, f"echo: row {i}") for i in range(5)]
