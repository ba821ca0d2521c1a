"""aimu_ray against real OpenAI-compatible servers: ``python -m llama_cpp.server`` (provider ``llamaserver``)
and ``transformers serve`` (provider ``hf-openai``), both serving the same tiny random-weight model.

The text is noise, so the tests check the protocol and state (text, stop reason, usage, stream pieces,
determinism under greedy decoding), never the words. One local Ray for the module.
"""

from __future__ import annotations

import asyncio

import pytest

import aimu_ray
from aimu_ray import aio
from aimu_ray.demo.servers import OpenAIServer

pytest_plugins = ["tests.fixtures.pytest_fixtures"]
pytestmark = pytest.mark.usefixtures("local_ray")

GREEDY = {"max_tokens": 8, "temperature": 0}
PROVIDER = {"llama_server": "llamaserver", "transformers_server": "hf-openai"}


@pytest.fixture(params=list(PROVIDER))
def model(request: pytest.FixtureRequest) -> str:
    """A model string for each real server; both start at most once per session."""
    server: OpenAIServer = request.getfixturevalue(request.param)
    return f"{PROVIDER[request.param]}:{server.model}@{server.base_url}"


def test_chat_answers_and_records_the_turn(model):
    c = aimu_ray.client(model, system="You are tiny.")
    text = c.chat("Hello, how are you?", generate_kwargs=GREEDY)
    assert isinstance(text, str) and text
    assert [m["role"] for m in c.messages] == ["system", "user", "assistant"]
    assert c.last_stop_reason in {"stop", "length"}
    assert c.last_usage["output_tokens"] > 0


def test_stream_pieces_add_up_to_the_recorded_answer(model):
    c = aimu_ray.client(model)
    chunks = list(c.chat("Hello, how are you?", stream=True, generate_kwargs=GREEDY))
    assert chunks and all(str(ch.phase) == "generating" for ch in chunks)
    assert "".join(ch.content for ch in chunks) == c.messages[-1]["content"]


def test_greedy_answers_are_the_same_through_any_worker(model):
    first = aimu_ray.client(model).generate("Hello world", generate_kwargs=GREEDY)
    assert aimu_ray.client(model).generate("Hello world", generate_kwargs=GREEDY) == first


async def test_concurrent_aio_conversations(model):
    clients = [aio.client(model) for _ in range(8)]
    answers = await asyncio.gather(*(c.chat(f"Hello {i}", generate_kwargs=GREEDY) for i, c in enumerate(clients)))
    assert all(isinstance(a, str) for a in answers)
    assert all(len(c.messages) == 2 for c in clients)
