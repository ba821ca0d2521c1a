"""Real OpenAI-compatible servers (llama.cpp, transformers) run as subprocesses for the demo and the tests.

Each server gets a free loopback port and is considered up once ``GET /v1/models`` answers 200:
both servers load their model before they start listening, so that also means "model loaded".
Server output goes to a temporary file rather than a pipe, because nobody drains a pipe while
the tests run and a full pipe would block the server; the file is quoted in startup errors.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx

# Nothing may be downloaded, and ``transformers serve`` otherwise asks PyPI for a newer version.
OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_UPDATE_CHECK": "1",
}
STARTUP_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 15.0


class ServerStartupError(RuntimeError):
    """A server process exited or stayed unreachable while starting up."""


class OpenAIServer:
    """A server subprocess speaking the OpenAI HTTP API; a context manager that starts/stops it.

    ``base_url`` (ending in ``/v1``) and ``model`` are what an OpenAI client needs.
    """

    def __init__(self, argv: Sequence[str], *, port: int, model: str, name: str) -> None:
        self.argv = list(argv)
        self.port = port
        self.model = model
        self.name = name
        self.base_url = f"http://127.0.0.1:{port}/v1"
        self.ready_s: float | None = None
        self._process: subprocess.Popen | None = None
        self._log = tempfile.TemporaryFile(mode="w+b", prefix=f"{name}-")

    def __enter__(self) -> OpenAIServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self, timeout_s: float = STARTUP_TIMEOUT_S) -> None:
        """Launch the process and block until it serves ``/v1/models``; stop it on failure."""
        started = time.perf_counter()
        self._process = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **OFFLINE_ENV},
        )
        try:
            self._wait_until_ready(started + timeout_s)
        except BaseException:
            self.stop()
            raise
        self.ready_s = time.perf_counter() - started

    def stop(self) -> None:
        """Ask the server to shut down like Ctrl-C would (SIGINT); kill it if it lingers."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._log.close()

    def output(self) -> str:
        """Everything the server printed so far (stdout and stderr interleaved)."""
        self._log.flush()
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def _wait_until_ready(self, deadline: float) -> None:
        with httpx.Client(timeout=1.0) as client:
            while True:
                if self._process.poll() is not None:
                    raise self._startup_error(f"exited with code {self._process.returncode}")
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(f"{self.base_url}/models").status_code == 200:
                        return
                if time.perf_counter() > deadline:
                    raise self._startup_error("did not answer GET /v1/models in time")
                time.sleep(0.1)

    def _startup_error(self, reason: str) -> ServerStartupError:
        return ServerStartupError(
            f"{self.name} {reason}.\ncommand: {' '.join(self.argv)}\n"
            f"--- server output ---\n{self.output()}"
        )


def free_port() -> int:
    """Return a loopback TCP port that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def llama_cpp_command(gguf_path: str | os.PathLike, port: int, alias: str = "tiny") -> list[str]:
    """``python -m llama_cpp.server`` serving ``gguf_path`` under the model name ``alias``."""
    return [
        sys.executable, "-m", "llama_cpp.server",
        "--model", str(gguf_path),
        "--model_alias", alias,
        "--host", "127.0.0.1",
        "--port", str(port),
        "--n_ctx", "512",
        "--chat_format", "chatml",
    ]


def transformers_command(hf_dir: str | os.PathLike, port: int) -> list[str]:
    """``transformers serve`` pinned to the model in ``hf_dir``, on CPU.

    Passing the folder as the positional FORCE_MODEL preloads it before the server listens, and
    makes the server refuse requests naming any other model. Run through ``sys.executable`` so
    the venv's transformers is used whatever ``PATH`` says.
    """
    return [
        sys.executable, "-m", "transformers.cli.transformers", "serve", str(hf_dir),
        "--host", "127.0.0.1",
        "--port", str(port),
        "--device", "cpu",
    ]


@contextlib.contextmanager
def llama_cpp_server(gguf_path: str | os.PathLike, alias: str = "tiny") -> Iterator[OpenAIServer]:
    """Run llama.cpp's OpenAI server on a GGUF; ``.model`` is ``alias``."""
    port = free_port()
    command = llama_cpp_command(gguf_path, port, alias)
    with OpenAIServer(command, port=port, model=alias, name="llama_cpp.server") as server:
        yield server


@contextlib.contextmanager
def transformers_server(hf_dir: str | os.PathLike) -> Iterator[OpenAIServer]:
    """Run ``transformers serve`` on a local model folder; ``.model`` is the folder path.

    The server only accepts the exact string it was started with as the model name, so the
    path is passed and returned verbatim (no resolving or normalising).
    """
    port = free_port()
    model = str(Path(hf_dir))
    command = transformers_command(model, port)
    with OpenAIServer(command, port=port, model=model, name="transformers serve") as server:
        yield server
