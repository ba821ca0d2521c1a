"""The flows README.md and the examples document, run as their commands are written: one process each.

The embedded-Ray flow comes first and needs no cluster: ``aimu-ray serve`` with no ``--address`` and no
``RAY_ADDRESS``, then ``status``, ``chat`` and ``unload`` beside it, which must find its Ray. ``TMPDIR`` is a
folder of the test's own, so the server's record (and its embedded Ray's session) are seen by nobody else.

The other flows run on one ``ray start --head`` cluster with its dashboard (``serve deploy`` talks to it).
A user's ``ray start`` is found by every command through the file it writes in /tmp/ray; this suite may not
write that file (other Rays on this machine read it), so the commands get ``RAY_ADDRESS`` instead, the
other way Ray finds a cluster. Order is the file's: each flow but the last leaves Serve stopped for the next.
"""

from __future__ import annotations

import ast
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest
import yaml

from aimu_ray.demo.servers import free_port
from tests.fixtures.ray_nodes import tail
from tests.integration.test_cli import (CLI, COMMAND_S, ROOT, SERVE_S, fake_model, get, json_of, running_cluster,
                                        started, wait_until_healthy)

pytest_plugins = ["tests.fakes.fixtures", "tests.fixtures.pytest_fixtures"]

SERVE = str(Path(sys.executable).with_name("serve"))
TEXT = "Ray is a framework for scaling AI and Python apps."


def run(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, env=env, cwd=ROOT, timeout=COMMAND_S)


def served_config(path: Path, port: int, models: list[dict]) -> Path:
    path.write_text(yaml.safe_dump({"name": "aimu_ray", "host": "127.0.0.1", "port": port,
                                    "output_dir": str(path.parent / "served"), "models": models}))
    return path


# ----- beside `aimu-ray serve` on its embedded Ray: no address anywhere -----

@pytest.fixture
def own_tmpdir():
    """A short temp dir (Ray's socket paths live under it and must stay under 108 bytes)."""
    folder = Path(tempfile.mkdtemp(prefix="aimu-flow-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_commands_beside_aimu_ray_serve_join_its_embedded_ray(tiny_gguf_path, own_tmpdir, tmp_path):
    env = {**os.environ, "TMPDIR": str(own_tmpdir), "RAY_AUTH_MODE": "disabled", "HF_HUB_OFFLINE": "1",
           "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    port = free_port()
    config = served_config(tmp_path / "tiny.yaml", port, [
        {"name": "tiny", "model": "llamacpp:tiny", "options": {"model_path": str(tiny_gguf_path), "n_ctx": 256}}])
    log = tmp_path / "serve.log"
    with started([*CLI, "serve", str(config), "--no-access-log"], env, log) as server:
        wait_until_healthy(f"http://127.0.0.1:{port}", server, log)

        status = run([*CLI, "status", "--json"], env)
        assert status.returncode == 0, status.stderr
        [joined] = [line for line in status.stderr.splitlines() if "joining the Ray of `aimu-ray serve`" in line]
        assert f"pid {server.pid}, app 'aimu_ray' at http://127.0.0.1:{port}/v1" in joined
        report = json_of(status.stdout)
        assert set(report["serve"]["aimu_ray"]) == {"ingress"}          # the model's copy is the registry's
        [copy] = report["models"]
        assert (copy["model"], copy["replica"], copy["state"]) == ("llamacpp:tiny", 0, "ready")
        assert report["evictions"] == []

        served = run([*CLI, "chat", "tiny", "--served", "hello", "--max-tokens", "4"], env)
        assert served.returncode == 0, served.stderr
        direct = run([*CLI, "chat", "llamacpp:tiny", "--option", f"model_path={tiny_gguf_path}", "hi",
                      "--max-tokens", "4"], env)
        assert direct.returncode == 0, direct.stderr
        unloaded = run([*CLI, "unload"], env)
        assert unloaded.returncode == 0, unloaded.stderr
        assert unloaded.stdout.splitlines() == ["llamacpp:tiny"] * 2   # the served model's copy and `chat`'s
        again = run([*CLI, "chat", "tiny", "--served", "hello again", "--max-tokens", "4"], env)
        assert again.returncode == 0, again.stderr                       # the served model loads again

        server.send_signal(signal.SIGINT)
        assert server.wait(60) == 130, tail(log)
    assert not list(own_tmpdir.glob("aimu_ray-serve-*/*.json"))      # the record went with the server


# ----- on a `ray start` cluster -----

@pytest.fixture(scope="module")
def cluster():
    dashboard = free_port()
    with running_cluster("--include-dashboard=true", f"--dashboard-port={dashboard}") as cluster:
        cluster.dashboard = f"http://127.0.0.1:{dashboard}"
        yield cluster


@pytest.fixture
def env(cluster) -> dict[str, str]:
    return {**cluster.env(), "RAY_ADDRESS": cluster.address}


def documented_command(path: Path, start: str) -> list[str]:
    """The one command line in the module's docstring that begins with ``start``, as argv."""
    [line] = [line for line in map(str.strip, ast.get_docstring(ast.parse(path.read_text())).splitlines())
              if line.startswith(start)]
    return shlex.split(line, comments=True)


def test_handle_app_beside_aimu_ray_serve_as_its_docstring_says(cluster, env, fake, tmp_path):
    """``aimu-ray serve``, then the example's ``serve run`` line (its own name and route prefix), word for word."""
    port = free_port()
    config = served_config(tmp_path / "serve.yaml", port, [{"name": "qwen3-8b", "model": fake_model(fake)}])
    log = tmp_path / "serve.log"
    base = f"http://127.0.0.1:{port}"
    with started([*CLI, "serve", str(config), "--no-access-log"], env, log) as server:
        wait_until_healthy(base, server, log)

        second = run([SERVE, *documented_command(ROOT / "examples" / "handle_app.py", "serve run")[1:]], env)
        assert second.returncode == 0, second.stderr[-3000:]
        reply = httpx.post(f"{base}/summarize", content=TEXT, timeout=30)
        assert reply.status_code == 200, reply.text
        assert reply.json() == {"summary": f"echo: {TEXT}"}
        assert get(f"{base}/healthz").status_code == 200                  # the aimu_ray app lives on

        chat = run([*CLI, "chat", "qwen3-8b", "--served", "hello"], env)  # an option between MODEL and PROMPT
        assert chat.returncode == 0, chat.stderr
        assert "echo: hello" in chat.stdout.splitlines()

        server.send_signal(signal.SIGINT)
        assert server.wait(60) == 130, tail(log)


def test_serve_run_of_build_app_listens_where_the_config_says_and_connect_finds_the_app(env, fake, tmp_path):
    """``serve run`` calls the app ``default``: ``aimu_ray.connect(name)`` finds it all the same."""
    port = free_port()
    config = served_config(tmp_path / "serve.yaml", port, [{"name": "fake", "model": fake_model(fake)}])
    log = tmp_path / "serve-run.log"
    with started([SERVE, "run", "aimu_ray.deployments:build_app", f"config={config}"], env, log) as server:
        wait_until_healthy(f"http://127.0.0.1:{port}", server, log)
        connect = run([sys.executable, "-c", "import aimu_ray; print(aimu_ray.connect('fake').chat('hi'))"], env)
        assert connect.returncode == 0, connect.stderr[-3000:]
        assert connect.stdout.splitlines()[-1] == "echo: hi"
        server.send_signal(signal.SIGINT)
        server.wait(60)


def deployed_app(cluster, env) -> dict:
    """The app's entry in `serve status` (what `serve deploy` says to run next), once it is no longer deploying."""
    deadline = time.monotonic() + SERVE_S
    while True:
        done = run([SERVE, "status", "-a", cluster.dashboard], env)
        app = (yaml.safe_load(done.stdout) or {}).get("applications", {}).get("aimu_ray", {})
        if app.get("status") not in (None, "NOT_STARTED", "DEPLOYING") or time.monotonic() > deadline:
            return app
        time.sleep(1)


def test_serve_deploy_of_the_example_builds_the_app_on_the_cluster(cluster, env, fake, tmp_path):
    """The example's Serve config, its models swapped for the fake one and its port for a free one."""
    deploy = yaml.safe_load((ROOT / "examples" / "serve_deploy.yaml").read_text())
    port = free_port()
    deploy["http_options"] = {"host": "127.0.0.1", "port": port}
    [app] = deploy["applications"]
    app["args"].update(host="127.0.0.1", port=port, output_dir=str(tmp_path / "served"),
                       models=[{"name": "fake", "model": fake_model(fake)}])
    path = tmp_path / "serve_deploy.yaml"
    path.write_text(yaml.safe_dump(deploy))

    done = subprocess.run([SERVE, "deploy", str(path), "-a", cluster.dashboard], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=COMMAND_S)          # from anywhere: nothing is read here
    assert done.returncode == 0, done.stderr[-3000:]
    app = deployed_app(cluster, env)
    assert app["status"] == "RUNNING", app
    reply = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", timeout=30,
                       json={"model": "fake", "messages": [{"role": "user", "content": "deployed"}]})
    assert reply.status_code == 200, reply.text
    assert reply.json()["choices"][0]["message"]["content"] == "echo: deployed"
