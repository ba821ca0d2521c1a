"""Ollama's token log-probabilities: asked at the top level of ``/api/chat`` (not among the model options, where the
adapter files other keys), and carried into ``ChatResult.logprobs`` from a whole answer and from a stream."""

from __future__ import annotations

import pytest

from aimu_ray.clients.requests import chat_request
from aimu_ray.models import ChatRequest, Endpoint
from aimu_ray.models.model_string import resolve_model
from aimu_ray.models.wire import TokenLogprob, TopLogprob
from tests.unit.engine_kit import run

pytest_plugins = ["tests.fakes.fixtures"]

ANSWER = "It is noon in Paris."


def asked(base_url: str, stream: bool, **generate_kwargs) -> ChatRequest:
    """The request a client builds: the Ollama adapter maps the kwargs, as for any call."""
    return chat_request(resolve_model("ollama:qwen3:8b"), Endpoint(base_url=base_url, max_retries=0),
                        [{"role": "user", "content": "What time is it?"}], warn=lambda said: None, thinking=False,
                        generate_kwargs={"temperature": 0.1, **generate_kwargs}, stream=stream)


@pytest.mark.parametrize("stream", [False, True])
async def test_logprobs_and_their_alternatives_come_back_per_token(fake, stream):
    fake.reply(ANSWER)

    _, result = await run(asked(fake.url, stream, logprobs=True, top_logprobs=2))

    sent = fake.requests[-1].body
    assert (sent["logprobs"], sent["top_logprobs"]) == (True, 2)
    assert "logprobs" not in sent["options"] and sent["options"]["temperature"] == 0.1
    assert result.content == ANSWER and "".join(token.token for token in result.logprobs) == ANSWER
    assert result.logprobs[1] == TokenLogprob(token=" is", logprob=-0.25, top_logprobs=[
        TopLogprob(token=" is", logprob=-0.25), TopLogprob(token="is~1", logprob=-1.25)])


@pytest.mark.parametrize("stream", [False, True])
async def test_logprobs_without_alternatives(fake, stream):
    fake.reply(ANSWER)

    _, result = await run(asked(fake.url, stream, logprobs=True))

    assert [token.logprob for token in result.logprobs] == [-(index + 1) / 8 for index in range(5)]
    assert all(token.top_logprobs == [] for token in result.logprobs)


@pytest.mark.parametrize("stream", [False, True])
async def test_no_logprobs_unless_asked(fake, stream):
    fake.reply(ANSWER)

    _, result = await run(asked(fake.url, stream))

    assert result.logprobs is None and "logprobs" not in fake.requests[-1].body


async def test_logprobs_are_arguments_of_the_call_not_model_options_and_the_request_is_left_as_it_is(fake):
    request = asked(fake.url, False, logprobs=True)
    before = request.model_dump()

    await run(request)

    assert request.model_dump() == before and request.params["logprobs"] is True
    assert "logprobs" not in request.params.get("options", {})
