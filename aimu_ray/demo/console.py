"""The main job's console: its own lines on the terminal, everything else in a log file.

Ray, Serve, transformers and the processes Ray starts write to file descriptors 1 and 2 from many
places (handlers made at import time, forwarded worker output, C libraries), so the descriptors
themselves are pointed at the log while a copy of the terminal is kept for what the job says.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, TextIO


class Console:
    """Writes to the terminal that ``logs_to`` kept aside; ``log`` is where everything else went."""

    def __init__(self, terminal: TextIO, log: Path) -> None:
        self._terminal = terminal
        self.log = log

    def say(self, text: str = "", end: str = "\n") -> None:
        self._terminal.write(text + end)
        self._terminal.flush()


@contextmanager
def logs_to(log: Path) -> Iterator[Console]:
    """Inside: fds 1 and 2 (and so ``print``, logging, Ray's forwarded worker output) go to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    terminal = os.fdopen(os.dup(1), "w")
    with open(log, "a", buffering=1) as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield Console(terminal, log)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            for fd, copy in zip((1, 2), saved):
                os.dup2(copy, fd)
                os.close(copy)
            terminal.close()
