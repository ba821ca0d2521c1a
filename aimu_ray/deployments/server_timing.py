"""W3C ``Server-Timing`` on every answer: how long this app took, and how much of that was the model's engine.

``app`` runs from the request's arrival at the ingress's ASGI app to its response headers: all of a whole answer's
work here, or a stream's time to its first event. ``engine`` (whole answers) is the engine's share as the model's
host timed it (``metrics.EngineClock``), so ``app`` less ``engine`` is the serving layer's. What came before ``app``
(the client, Ray Serve's proxy and its hop to this replica) is the client's total less ``app``. Browsers show the
header in their network panel, ``curl -v`` prints it; ``/metrics`` keeps the same split as histograms.
"""

from __future__ import annotations

import time
from contextvars import ContextVar

HEADER = b"server-timing"


class _Timing:
    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.engine_s: float | None = None

    def header(self) -> bytes:
        parts = [f"app;dur={(time.perf_counter() - self.started) * 1000:.2f}"]
        if self.engine_s is not None:
            parts.append(f"engine;dur={self.engine_s * 1000:.2f}")
        return ", ".join(parts).encode()


_CURRENT: ContextVar[_Timing | None] = ContextVar("aimu_ray_server_timing", default=None)


class ServerTiming:
    """The outermost ASGI middleware: it starts the request's clock and writes the header as the answer starts."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        timing = _Timing()
        token = _CURRENT.set(timing)

        async def timed(message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), (HEADER, timing.header())]}
            await send(message)

        try:
            await self.app(scope, receive, timed)
        finally:
            _CURRENT.reset(token)


def record_engine_time(seconds: float | None) -> None:
    """The engine's share of the request being answered (a no-op outside a request, or before it is known)."""
    timing = _CURRENT.get()
    if timing is not None and seconds is not None:
        timing.engine_s = seconds
