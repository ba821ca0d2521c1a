"""Start the loopback provider server (tests/fakes) as its own process, for benchmarks."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def loopback_server(delay_s: float):
    """Yield the base URL of a fake OpenAI/Anthropic/Ollama server answering after ``delay_s``."""
    proc = subprocess.Popen([sys.executable, "-m", "tests.fakes", "--port", "0", "--delay", str(delay_s)],
                            cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline().strip()
        if not line.startswith("READY "):
            raise RuntimeError(f"loopback server did not start: {line!r}")
        yield line.split(" ", 1)[1]
    finally:
        proc.terminate()
        proc.wait(10)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
