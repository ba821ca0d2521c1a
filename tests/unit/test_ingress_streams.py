"""The ingress's SSE code without Serve: a client that leaves a stream is one info line, never a traceback.

Over HTTP (``tests/http``) the same disconnect reaches the ingress as Serve's ``TaskCancelledError`` from
``receive()`` (turned into ASGI's ``http.disconnect`` by ``BodyLimit``) or as the cancellation of the response;
both are driven here directly.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from types import SimpleNamespace

import pytest
from ray.exceptions import TaskCancelledError

from aimu_ray.deployments.body_limit import BodyLimit
from aimu_ray.deployments.ingress import CLIENT_CLOSED, Ingress
from aimu_ray.deployments.metrics import Metrics


@dataclass(frozen=True)
class OneModel:
    """What the stream code reads of a served model: its name, and a backend to clock."""

    config: SimpleNamespace
    backend: object = None


async def test_a_client_that_leaves_a_stream_is_one_info_line_and_a_499(caplog):
    caplog.set_level(logging.DEBUG, logger="aimu_ray")
    ingress = Ingress.__new__(Ingress)           # no replica context: only the stream code is under test
    ingress._metrics = Metrics()

    async def events():
        yield {"n": 1}
        await asyncio.sleep(3600)                # a slow model: the client leaves meanwhile
        yield {"n": 2}

    response = await ingress._event_stream(OneModel(SimpleNamespace(name="m")), "chat", lambda served: events())
    body = response.body_iterator
    assert await anext(body) == 'data: {"n":1}\n\n'
    waiting = asyncio.ensure_future(anext(body))
    await asyncio.sleep(0.01)
    waiting.cancel()                             # what Serve does to the response when its client goes away
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert [(r.levelno, r.exc_info) for r in caplog.records] == [(logging.INFO, None)]
    assert "went away" in caplog.records[0].getMessage()
    assert f'aimu_ray_requests_total{{model="m",route="chat",status="{CLIENT_CLOSED}"}} 1.0' in \
        ingress._metrics.render().decode()


async def test_serves_cancelled_receive_reaches_the_app_as_a_disconnect():
    """Serve's receive() raises TaskCancelledError when a client has left: the app sees ASGI's http.disconnect."""
    received = []

    async def app(scope, receive, send):
        received.append(await receive())             # the body
        received.append(await receive())             # then the client leaves

    messages = iter([{"type": "http.request", "body": b"{}", "more_body": False}, TaskCancelledError()])

    async def serve_receive():
        message = next(messages)
        if isinstance(message, BaseException):
            raise message
        return message

    await BodyLimit(app)({"type": "http", "headers": []}, serve_receive, None)
    assert received == [{"type": "http.request", "body": b"{}", "more_body": False}, {"type": "http.disconnect"}]
