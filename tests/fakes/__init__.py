"""Loopback fakes of the OpenAI, Anthropic and Ollama HTTP APIs for offline tests and benchmarks.

One `FakeServer` speaks all three wire protocols on 127.0.0.1, faithfully enough that the
official SDKs parse it (JSON, SSE and NDJSON streams, reasoning/thinking, tool calls, errors)::

    with FakeServer() as server:
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0)
        server.reply("Hi!", reasoning="The user greets me.", tool_calls=[("get_time", {"tz": "UTC"})])
        server.fault(status=429, retry_after=0.05)         # the next request fails first
        server.fault(drop_after=3)                          # the one after is cut mid-stream
        ...
        assert server.requests[-1].body["max_completion_tokens"] == 64

Scripting (``script.py``): `reply()` queues a `Reply`, `fault()` a `Fault`; both queues are
FIFO and shared by all protocols; a request with nothing queued gets ``"echo: <last user
text>"``. `requests` is the log of `RecordedRequest` (method, path, headers, body); `reset()`
clears everything. Routes and base URLs: ``server.py``; wire details: ``wire/``. Pytest
fixtures `fake_server` (session) and `fake` (reset per test): ``fixtures.py``. Benchmarks run
it as a process: ``python -m tests.fakes --port 0 --delay 0.2`` prints ``READY <url>``.
"""

from tests.fakes.script import CONTEXT_LENGTH_EXCEEDED, Fault, RecordedRequest, Reply
from tests.fakes.server import FakeServer

__all__ = ["CONTEXT_LENGTH_EXCEEDED", "FakeServer", "Fault", "RecordedRequest", "Reply"]
