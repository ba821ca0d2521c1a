"""Failures every remote engine meets, tested once against all three wires (OpenAI, Anthropic, Ollama).

The retry loop and the error mapping are written once (``engines/base.py``, ``engines/_remote.py``,
``engines/remote/errors.py``), so the faults are too; what only one protocol has (Anthropic's 529, Ollama's
"no user query") stays in that engine's own test module.
"""

from __future__ import annotations

import logging
import pickle
import socket

import pytest

from aimu_ray.models import ChatRequest, Endpoint, ModelConnectionError, ModelTimeoutError, ProviderError
from aimu_ray.engines.remote import errors
from aimu_ray.models.errors import ConnectionDroppedError, ProviderResponseError, UpstreamError
from tests.unit.engine_kit import failure, run, text_of

pytest_plugins = ["tests.fakes.fixtures"]

KEY = "sk-test-faults-5e8a1c9b7d"
USER = [{"role": "user", "content": "What time is it?"}]
# provider -> (model, URL suffix on the fake, params the client would have sent, stream events before "one two")
WIRES = {
    "openai": ("gpt-test", "/v1", {}, 3),
    "anthropic": ("claude-test", "", {"max_tokens": 1024}, 5),
    "ollama": ("qwen3:8b", "", {"think": False}, 2),
}


@pytest.fixture(params=list(WIRES))
def wire(request, fake):
    """A request factory for one provider's wire, pointed at the fake."""
    provider = request.param
    model, suffix, params, _ = WIRES[provider]

    def make(*, max_retries: int = 0, timeout: float = 10.0, base_url: str | None = None, **fields) -> ChatRequest:
        fields.setdefault("messages", USER)
        return ChatRequest(provider=provider, model=model, params=params, **fields,
                           endpoint=Endpoint(base_url=base_url or fake.url + suffix, api_key=KEY,
                                             max_retries=max_retries, timeout=timeout))
    make.provider = provider
    return make


@pytest.mark.parametrize("status", [500, 503])
@pytest.mark.parametrize("stream", [False, True])
async def test_5xx_is_retried_then_a_provider_error(fake, fast_backoff, wire, status, stream):
    for _ in range(3):
        fake.fault(status=status)
    error = await failure(wire(max_retries=2, stream=stream))
    assert type(error) is ProviderError and error.status_code == status and len(fake.requests) == 3
    assert isinstance(error.__cause__, UpstreamError) and wire.provider in str(error)


async def test_500_then_success(fake, fast_backoff, wire):
    fake.fault(status=500)
    _, result = await run(wire(max_retries=1))
    assert result.content == "echo: What time is it?" and len(fake.requests) == 2


@pytest.mark.parametrize("stream", [False, True])
async def test_400_is_not_retried(fake, wire, stream):
    fake.fault(status=400, message="Unknown parameter: 'frobnicate'.")
    error = await failure(wire(max_retries=3, stream=stream))
    assert type(error) is ProviderError and error.status_code == 400 and len(fake.requests) == 1
    assert "frobnicate" in str(error) and "Check the request parameters" in str(error)


@pytest.mark.parametrize("stream", [False, True])
async def test_slow_answer_times_out(fake, wire, stream):
    fake.fault(delay_s=0.5)
    error = await failure(wire(timeout=0.1, stream=stream))
    assert isinstance(error, ModelTimeoutError) and wire.provider in str(error)


@pytest.mark.parametrize("stream", [False, True])
async def test_refused_connection_is_not_retried(caplog, wire, stream):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    error = await failure(wire(max_retries=3, stream=stream, base_url=f"http://127.0.0.1:{port}"))
    assert type(error) is ModelConnectionError and "retry" not in caplog.text


@pytest.mark.parametrize("stream", [False, True])
async def test_malformed_body_is_a_response_error(fake, wire, stream):
    fake.fault(malformed=True)
    error = await failure(wire(max_retries=2, stream=stream))
    assert isinstance(error, ProviderResponseError) and len(fake.requests) == 1


async def test_dropped_stream_fails_typed_after_the_text_so_far_without_retry(fake, wire):
    fake.reply("one two three four five")
    fake.fault(drop_after=WIRES[wire.provider][3])
    request = wire(max_retries=2, stream=True)
    received = []
    with pytest.raises(ConnectionDroppedError):
        async for item in run_stream(request):
            received.append(item)
    assert text_of(received, "generating") == "one two" and len(fake.requests) == 1


async def test_a_connection_dropped_before_any_answer_is_retried(fake, fast_backoff, wire):
    """What a worker meets when a provider closed a kept-alive connection: the next attempt succeeds."""
    fake.fault(drop_after=0)
    _, result = await run(wire(max_retries=1, stream=True))
    assert result.content == "echo: What time is it?" and len(fake.requests) == 2


@pytest.mark.parametrize("status", [401, 429, 500, 400])
async def test_the_key_never_leaks_even_when_the_server_echoes_it(fake, caplog, fast_backoff, wire, status):
    caplog.set_level(logging.DEBUG)
    for _ in range(2):
        fake.fault(status=status, message=f"Incorrect API key provided: {KEY}", retry_after=0.01)
    error = await failure(wire(max_retries=1))
    assert isinstance(error, ProviderError) and "***" in str(error)
    assert error.__context__ is None and isinstance(error.__cause__, UpstreamError)
    for text in (str(error), str(error.__cause__), caplog.text):
        assert KEY not in text
    assert KEY.encode() not in pickle.dumps(error)


@pytest.mark.parametrize("stream", [False, True])
async def test_a_key_that_ends_a_long_error_is_redacted_before_the_message_is_cut(fake, caplog, wire, stream):
    """The provider's message is cut to a summary; cut first, the key's head would survive its redaction."""
    caplog.set_level(logging.DEBUG)
    fake.fault(status=500, message="x" * (errors._SUMMARY_LIMIT - len(KEY) + 1) + KEY)
    error = await failure(wire(stream=stream))
    assert isinstance(error, ProviderError) and "***" in str(error)
    for text in (str(error), str(error.__cause__), caplog.text, repr(pickle.dumps(error))):
        assert not _pieces_of(KEY) & _pieces_of(text)


def test_a_key_that_ends_a_long_transport_error_is_redacted_before_the_summary_is_cut():
    import httpx

    request = ChatRequest(provider="openai", model="gpt-test", messages=USER,
                          endpoint=Endpoint(base_url="http://127.0.0.1:9/v1", api_key=KEY))
    error = errors.translate(httpx.ConnectError("y" * (errors._SUMMARY_LIMIT - 3) + KEY), request)
    assert isinstance(error, ModelConnectionError)
    for text in (str(error), str(error.__cause__)):
        assert "***" in text and not _pieces_of(KEY) & _pieces_of(text)


@pytest.mark.parametrize("provider", ["openai", "anthropic", "ollama"])
async def test_a_stream_sent_for_a_whole_answer_is_a_response_error(fake, provider):
    """A server that ignores ``stream: false``: the SDKs hand back its text, an answer that breaks the protocol."""
    model, suffix, params, _ = WIRES[provider]
    fake.fault(stream_anyway=True)
    error = await failure(ChatRequest(provider=provider, model=model, params=params, messages=USER,
                                      endpoint=Endpoint(base_url=fake.url + suffix, api_key=KEY, max_retries=2)))
    assert isinstance(error, ProviderResponseError) and len(fake.requests) == 1
    assert provider in str(error)


def _pieces_of(text: str, size: int = 8) -> set[str]:
    """Every run of ``size`` characters: a key's piece that survived is one of its runs."""
    return {text[i:i + size] for i in range(len(text) - size + 1)}


async def run_stream(request: ChatRequest):
    """The items of one stream on a fresh engine, as they come (``run`` collects them all)."""
    from aimu_ray.engines import engine_class, protocol_of

    engine = engine_class(protocol_of(request.provider), "text")(request.endpoint)
    try:
        async for item in engine.stream(request):
            yield item
    finally:
        await engine.aclose()
