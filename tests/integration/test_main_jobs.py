"""The README's first commands, run as a new user runs them: the main job and the Python tour answer in words.

Each runs in its own process with its own embedded Ray, as from a clean shell.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 600


def run_example(name: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, str(ROOT / "examples" / name)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=TIMEOUT_S)


def test_the_demo_answers_in_words_and_keeps_the_logs_apart(tmp_path):
    done = run_example("serve_demo.py", tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert out.count("A: The capital of France is Paris") == 2            # transformers and llama.cpp
    assert "The capital of Germany is Berlin" in out and "The capital of Italy is Rome" in out
    for model in ("smollm2", "smollm2-gguf", "tiny-painter", "tiny-music"):
        assert f"    {model:<14} ready" in out                            # each model's load was shown
    assert "INFO" not in out and "(ServeReplica" not in out and done.stderr == ""
    log = (tmp_path / "output" / "demo.log").read_text()
    assert "Deploying new version of Deployment" in log                   # Serve's lines went to the log
    assert (tmp_path / "output" / "demo-fox.png").stat().st_size > 0
    assert (tmp_path / "output" / "demo-drums.wav").stat().st_size > 0


def test_the_python_tour_answers_in_words(tmp_path):
    done = run_example("quickstart.py", tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "answer: The capital of France is Paris." in done.stdout
    assert "The capital of Germany is Berlin." in done.stdout
    assert "answer: The capital of Italy is Rome" in done.stdout
