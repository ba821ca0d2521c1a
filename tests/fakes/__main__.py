"""Run the fake provider server in the foreground: ``python -m tests.fakes --port P --delay S``.

Prints ``READY <url>`` on stdout once it accepts connections, so a benchmark parent can wait
for that line; Ctrl-C or SIGTERM stops it. Every request gets the echo reply after `--delay`
seconds, and no request log is kept, so memory stays flat over long runs. The open-file limit
is raised to its hard maximum because each of a thousand concurrent connections is a file.
"""

from __future__ import annotations

import argparse
import logging
import resource
import signal

from tests.fakes.server import FakeServer


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.fakes", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before each answer")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    server = FakeServer(host=args.host, port=args.port, delay_s=args.delay, record=False).start()
    signal.signal(signal.SIGTERM, lambda *_: server.stop())
    print(f"READY {server.url}", flush=True)
    try:
        server.wait()
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
