"""``aimu-ray`` as a user runs it: every command a separate process joined by address to one local Ray.

The module starts its own one-node cluster (``ray start --head`` with 4 CPUs, a temp dir and ports of its
own) in a new session, the way ``test_two_nodes.py`` does, and stops it the same way: SIGTERM to the
``ray start`` leader, then SIGKILL to whatever is left of its session. ``ray stop`` is never used: it would
stop every Ray on the machine. Every command gets ``--address`` and a timeout; the text model is the
loopback fake OpenAI server (a thread of this process), the image model the tiny diffusers pipeline.

Order matters and is the file's: the image command loads a model actor that ``status`` then lists and
``unload`` removes; ``chat --served`` is refused while no app runs, then ``serve`` starts one, which
``chat --served`` reaches through its handles, and which Ctrl-C stops although the cluster lives on.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import httpx
import pytest
import ray
from PIL import Image

from aimu_ray.demo.servers import free_port
from tests.fixtures.ray_nodes import head_args, start_node, stop_nodes, tail

pytest_plugins = ["tests.fakes.fixtures", "tests.fixtures.image_fixtures"]

CLI = [sys.executable, "-m", "aimu_ray.cli"]
START_S = 90          # `ray start` on a loaded 2-core machine: ~15-20 s
COMMAND_S = 120       # one command, Ray connection and a cold model load included: ~3-10 s
SERVE_S = 90          # from `aimu-ray serve` to /healthz answering: ~10-15 s
ROOT = Path(__file__).resolve().parents[2]


# ----- the cluster -----

class Cluster:
    def __init__(self, address: str, node_id: str, temp: Path):
        self.address, self.node_id, self.temp = address, node_id, temp

    def env(self) -> dict[str, str]:
        env = {**os.environ, "RAY_AUTH_MODE": "disabled", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
               "PYTHONUNBUFFERED": "1"}
        env.pop("RAY_ADDRESS", None)           # --address alone must find this cluster
        return env

    def cli(self, *args: str, input: str | None = None, timeout: float = COMMAND_S) -> subprocess.CompletedProcess:
        """``aimu-ray --address A ARGS``, run to completion."""
        return subprocess.run([*CLI, "--address", self.address, *args], input=input, capture_output=True,
                              text=True, env=self.env(), cwd=ROOT, timeout=timeout)

    def status(self) -> dict:
        done = self.cli("status", "--json")
        assert done.returncode == 0, done.stderr
        return json_of(done.stdout)


@contextmanager
def running_cluster(*extra: str) -> Iterator[Cluster]:
    """A one-node ``ray start --head`` cluster of its own (4 CPUs, temp dir and ports), stopped after."""
    if ray.is_initialized():
        ray.shutdown()
    temp = Path(tempfile.mkdtemp(prefix="raycli-"))
    port = free_port()
    address = f"127.0.0.1:{port}"
    log = temp / "head.log"
    leader = start_node(head_args(port, temp, "--num-cpus=4", *extra), log)
    try:
        deadline = time.monotonic() + START_S
        while "Ray runtime started" not in tail(log):
            if leader.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"`ray start --head` did not come up in {START_S} s:\n{tail(log)}")
            time.sleep(0.2)
        ray.init(address=address, logging_level="ERROR")      # this process only learns the node's id
        node_id = ray.get_runtime_context().get_node_id()
        ray.shutdown()
        yield Cluster(address, node_id, temp)
    finally:
        if ray.is_initialized():
            ray.shutdown()
        stop_nodes([leader])
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster():
    with running_cluster() as cluster:
        yield cluster


def json_of(stdout: str) -> dict:
    """The JSON object in a command's output (Ray may print lines of its own around it)."""
    return json.loads(stdout[stdout.index("{"):stdout.rindex("}") + 1])


def fake_model(fake) -> str:
    return f"openai-compat:m@{fake.url}/v1"


def chat_requests(fake) -> list[dict]:
    return [request.body for request in fake.requests if request.path == "/v1/chat/completions"]


def user_and_assistant(messages: list[dict]) -> list[tuple[str, str]]:
    return [(m["role"], m["content"]) for m in messages if m["role"] in ("user", "assistant")]


# ----- chat -----

def test_chat_prints_the_reply_on_stdout(cluster, fake):
    done = cluster.cli("chat", fake_model(fake), "hello there")
    assert done.returncode == 0, done.stderr
    assert "echo: hello there" in done.stdout.splitlines()
    [request] = chat_requests(fake)
    assert request["stream"] is True
    assert user_and_assistant(request["messages"]) == [("user", "hello there")]


def test_chat_without_a_prompt_holds_a_conversation_one_stdin_line_per_turn(cluster, fake):
    done = cluster.cli("chat", fake_model(fake), "--system", "Be brief.", input="one\n\ntwo\n")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines.index("echo: one") < lines.index("echo: two")
    first, second = chat_requests(fake)                       # the blank line was no turn
    assert user_and_assistant(first["messages"]) == [("user", "one")]
    assert user_and_assistant(second["messages"]) == [("user", "one"), ("assistant", "echo: one"), ("user", "two")]
    assert second["messages"][0] == {"role": "system", "content": "Be brief."}


def test_chat_with_a_bad_model_string_exits_2_in_one_line(cluster):
    done = cluster.cli("chat", "nosuchprovider:m", "hi")
    assert done.returncode == 2
    assert done.stdout == ""
    assert "Traceback" not in done.stderr
    assert any(line.startswith("aimu-ray chat: ") and "nosuchprovider" in line for line in done.stderr.splitlines())


# ----- batch -----

def test_batch_writes_one_record_per_line_and_a_rerun_does_nothing_new(cluster, fake, tmp_path):
    source, output = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_text('{"id": "a", "prompt": "x"}\n{"id": "b", "prompt": "y"}\n\n{"prompt": "z"}\n')
    argv = ("batch", "--model", fake_model(fake), "--input", str(source), "--output", str(output), "--no-progress")

    def summary(done: subprocess.CompletedProcess) -> dict:
        [line] = [line for line in done.stdout.splitlines() if line.startswith('{"total"')]
        return json.loads(line)

    first = cluster.cli(*argv)
    assert first.returncode == 0, first.stderr
    assert summary(first) | {"elapsed_s": 0, "rows_per_s": 0} == {
        "total": 3, "done_before": 0, "succeeded": 3, "failed": 0, "output_tokens": 3, "replicas": None,
        "elapsed_s": 0, "rows_per_s": 0}
    records = [json.loads(line) for line in output.read_text().splitlines()]
    assert sorted((r["id"], r["line"], r["ok"], r["output"]) for r in records) == [
        ("4", 4, True, "echo: z"), ("a", 1, True, "echo: x"), ("b", 2, True, "echo: y")]   # id: the line number
    assert len(chat_requests(fake)) == 3

    again = cluster.cli(*argv)
    assert again.returncode == 0, again.stderr
    assert summary(again)["done_before"] == summary(again)["total"] == 3
    assert summary(again)["succeeded"] == summary(again)["failed"] == 0
    assert len(output.read_text().splitlines()) == 3
    assert len(chat_requests(fake)) == 3                      # no request was made again


# ----- image, status, unload (in this order) -----

@pytest.fixture(scope="module")
def generated(cluster, tiny_sd_dir, tmp_path_factory):
    """One image through the CLI: its model actor stays loaded on the cluster (idle keep-alive)."""
    folder = tmp_path_factory.mktemp("images")
    model = f"hf:{tiny_sd_dir}"
    done = cluster.cli("image", model, "a fox", "--steps", "2", "--size", "64x64", "--seed", "1",
                       "--output-dir", str(folder))
    return model, folder, done


def test_image_prints_the_path_of_a_png_it_wrote(generated):
    _, folder, done = generated
    assert done.returncode == 0, done.stderr
    path = Path(done.stdout.splitlines()[-1])
    assert path.parent == folder and path.suffix == ".png" and path.is_file()
    with Image.open(path) as image:
        assert (image.format, image.size) == ("PNG", (64, 64))


def test_status_json_lists_the_node_and_the_image_model(cluster, generated):
    model, _, _ = generated
    status = cluster.status()
    assert [node["node_id"] for node in status["nodes"]] == [cluster.node_id]   # this cluster, not another Ray
    assert status["nodes"][0]["gpus"] == []
    [row] = status["models"]
    assert (row["model"], row["task"], row["state"], row["node_id"]) == (model, "image", "ready", cluster.node_id)
    assert row["device"] == "cpu" and row["reason"]


def test_status_table_lists_the_node_and_the_model(cluster, generated):
    model, _, _ = generated
    done = cluster.cli("status")
    assert done.returncode == 0, done.stderr
    assert cluster.node_id[:12] in done.stdout
    assert model in done.stdout


def test_unload_prints_what_it_unloaded_and_status_then_shows_no_models(cluster, generated):
    model, _, _ = generated
    done = cluster.cli("unload")
    assert done.returncode == 0, done.stderr
    assert model in done.stdout.splitlines()
    assert cluster.status()["models"] == []
    again = cluster.cli("unload", model)
    assert again.returncode == 0, again.stderr
    assert "Nothing to unload." in again.stdout.splitlines()


# ----- serve, and chat --served through its handles -----

def test_chat_served_without_a_running_app_exits_2_in_one_line(cluster):
    done = cluster.cli("chat", "fake", "hi", "--served")
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert any(line.startswith("aimu-ray chat: no Serve app 'aimu_ray'") for line in done.stderr.splitlines())


def get(url: str) -> httpx.Response | None:
    try:
        return httpx.get(url, timeout=5)
    except httpx.TransportError:
        return None


def _sigint_as_a_terminal_sends_it() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@contextmanager
def started(argv: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen]:
    """``argv`` running in a session of its own, output in ``log``; killed with its session if it outlives the block.

    Ctrl-C is what stops a server, so the child takes SIGINT as a terminal delivers it, even when this suite runs in
    the background of a shell without job control (which ignores SIGINT there, and a child inherits that)."""
    with open(log, "w") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
                                   start_new_session=True, preexec_fn=_sigint_as_a_terminal_sends_it)
    try:
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(SERVE_S)


def wait_until_healthy(base: str, server: subprocess.Popen, log: Path) -> None:
    """Until the app at ``base`` answers /healthz; the test fails if ``server`` exits or time runs out first."""
    deadline = time.monotonic() + SERVE_S
    while (health := get(f"{base}/healthz")) is None or health.status_code != 200:
        if server.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"{server.args[:4]} did not answer /healthz in {SERVE_S} s:\n{tail(log)}")
        time.sleep(0.5)


def test_serve_answers_http_and_handles_until_sigint(cluster, fake, tmp_path):
    port = free_port()
    config = tmp_path / "serve.yaml"
    config.write_text(f"name: aimu_ray\nhost: 127.0.0.1\nport: 8000\nmodels:\n"
                      f"  - name: fake\n    model: {fake_model(fake)}\n")
    log = tmp_path / "serve.log"
    base = f"http://127.0.0.1:{port}"
    with started([*CLI, "--address", cluster.address, "serve", str(config), "--port", str(port), "--no-access-log"],
                 cluster.env(), log) as server:
        wait_until_healthy(base, server, log)
        assert f"serving fake at http://127.0.0.1:{port}/v1" in log.read_text()

        reply = httpx.post(f"{base}/v1/chat/completions", timeout=30,
                           json={"model": "fake", "messages": [{"role": "user", "content": "over http"}]})
        assert reply.status_code == 200, reply.text
        assert reply.json()["choices"][0]["message"]["content"] == "echo: over http"

        done = cluster.cli("chat", "fake", "via handles", "--served")
        assert done.returncode == 0, done.stderr
        assert "echo: via handles" in done.stdout.splitlines()
        conversation = cluster.cli("chat", "fake", "--served", input="first\nsecond\n")
        assert conversation.returncode == 0, conversation.stderr
        assert ["echo: first", "echo: second"] == [line for line in conversation.stdout.splitlines()
                                                   if line.startswith("echo: ")]
        assert user_and_assistant(chat_requests(fake)[-1]["messages"]) == [
            ("user", "first"), ("assistant", "echo: first"), ("user", "second")]

        unknown = cluster.cli("chat", "nosuch", "hi", "--served")
        assert unknown.returncode == 2
        assert "aimu-ray chat: No served model named 'nosuch'. Served: fake." in unknown.stderr.splitlines()

        assert set(cluster.status()["serve"]["aimu_ray"]) == {"ingress"}     # which calls the provider itself

        server.send_signal(signal.SIGINT)
        assert server.wait(60) == 130, tail(log)
        assert get(f"{base}/healthz") is None            # Ctrl-C stopped the app, though the cluster lives on
        assert cluster.status()["serve"] == {}
