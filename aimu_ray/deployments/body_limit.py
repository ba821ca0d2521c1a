"""The ingress's ASGI middleware: a body over ``limits.max_body_bytes`` is a 413 before FastAPI reads or parses it.

Every ``receive`` of a request passes here, so this is also where Serve's way of saying that a client left (its
``receive()`` raises ``TaskCancelledError``, a race in its proxy) becomes ASGI's: an ``http.disconnect`` message.
Raised, it escaped a stream's disconnect listener as an error, which Starlette re-raises after any handler.
"""

from __future__ import annotations

from ray.exceptions import TaskCancelledError

from ..models.errors import LimitExceededError
from ..models.limits import current_limits
from .errors import answer_for


class BodyLimit:
    """The body's size is known from its Content-Length or counted as it streams in (chunked); a body within the
    limit is handed on whole."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limits = current_limits()
        try:
            limits.check_body(int(dict(scope["headers"]).get(b"content-length", 0)))
            body = await _read_body(receive, limits)
        except LimitExceededError as error:
            return await answer_for(error).response()(scope, receive, send)
        if body is None:                                 # the client left before its body was in
            return
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await _received(receive)          # after the body: the disconnect, when it comes
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


async def _read_body(receive, limits) -> bytes | None:
    chunks, size, more = [], 0, True
    while more:
        message = await _received(receive)
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        size += len(chunks[-1])
        limits.check_body(size)
        more = message.get("more_body", False)
    return b"".join(chunks)


async def _received(receive) -> dict:
    try:
        return await receive()
    except TaskCancelledError:
        return {"type": "http.disconnect"}
