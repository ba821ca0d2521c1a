"""The real-server fixtures answer the official ``openai`` SDK like a hosted provider would.

Both servers run the same tiny random-weight model, so the text is gibberish: the tests check
the protocol (content present, one finish_reason, streaming deltas) and never the words.
Greedy decoding (temperature 0) keeps the output, and so the tests, deterministic.
"""

from __future__ import annotations

import openai
import pytest

from aimu_ray.demo.servers import OpenAIServer

pytest_plugins = ["tests.fixtures.pytest_fixtures"]

MESSAGES = [
    {"role": "system", "content": "You are tiny."},
    {"role": "user", "content": "Hello, how are you?"},
]
MAX_TOKENS = 8
FINISH_REASONS = {"stop", "length"}


@pytest.fixture(params=["llama_server", "transformers_server"])
def server(request: pytest.FixtureRequest) -> OpenAIServer:
    """Each test runs once per real server; both are started at most once per session."""
    return request.getfixturevalue(request.param)


@pytest.fixture
def client(server: OpenAIServer) -> openai.OpenAI:
    # No retries: a failing server should fail the test at once, not after back-offs.
    return openai.OpenAI(base_url=server.base_url, api_key="none", max_retries=0, timeout=60)


def test_models_endpoint_lists_the_served_model(
    server: OpenAIServer, client: openai.OpenAI
) -> None:
    assert server.model in [model.id for model in client.models.list()]


def test_chat_completion_returns_text_and_finish_reason(
    server: OpenAIServer, client: openai.OpenAI
) -> None:
    response = client.chat.completions.create(
        model=server.model, messages=MESSAGES, max_tokens=MAX_TOKENS, temperature=0
    )

    choice = response.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content
    assert choice.finish_reason in FINISH_REASONS


def test_streaming_chat_completion_yields_deltas_then_finish_reason(
    server: OpenAIServer, client: openai.OpenAI
) -> None:
    stream = client.chat.completions.create(
        model=server.model, messages=MESSAGES, max_tokens=MAX_TOKENS, temperature=0, stream=True
    )
    choices = [chunk.choices[0] for chunk in stream if chunk.choices]

    text = "".join(choice.delta.content or "" for choice in choices)
    finish_reasons = [choice.finish_reason for choice in choices if choice.finish_reason]
    assert text
    assert len(finish_reasons) == 1
    assert finish_reasons[0] in FINISH_REASONS
    assert choices[-1].finish_reason == finish_reasons[0]
