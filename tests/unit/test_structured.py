"""``schema=`` as aimu defines it: the schema's JSON Schema, the parse strategies, and each wire's native form
against the loopback fakes (OpenAI ``response_format``, Ollama ``format``, Anthropic's forced tool), the
prompt-and-parse path, streams ending in aimu's DONE chunk."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

import pytest
from pydantic import BaseModel, ValidationError

from aimu_ray import aio
from aimu_ray.backends.hosted import HostedBackend
from aimu_ray.models.stream import StreamingContentType
from aimu_ray.models.structured import parse_json_response, response_schema
from tests.unit.engine_kit import Direct

pytest_plugins = ["tests.fakes.fixtures", "tests.fixtures.pytest_fixtures"]


class City(BaseModel):
    name: str
    population: int


@dataclass
class Point:
    x: int
    y: int = 0


OSLO = {"name": "Oslo", "population": 700000}


def test_schemas_are_pydantic_models_or_dataclasses():
    assert response_schema(City).json_schema["required"] == ["name", "population"]
    point = response_schema(Point)
    assert point.name == "Point" and point.json_schema["required"] == ["x"]
    with pytest.raises(TypeError, match="dataclass type or Pydantic BaseModel"):
        response_schema(dict)


def test_the_three_parse_strategies_and_validation():
    assert parse_json_response('{"x": 1}') == {"x": 1}
    assert parse_json_response('Here:\n```json\n{"x": 2}\n```\nbye', Point) == Point(x=2)
    assert parse_json_response('The answer is {"name": "Oslo", "population": "700000"}.', City) == City(**OSLO)
    with pytest.raises(ValueError, match="Could not parse JSON"):
        parse_json_response("no json here", City)
    with pytest.raises(ValidationError):
        parse_json_response('{"name": "Oslo"}', City)


@pytest.mark.parametrize("stream", [False, True])
async def test_openai_compatible_models_get_response_format(fake, stream):
    fake.reply(json.dumps(OSLO))
    client = aio.client(f"vllm:m@{fake.url}/v1;structured", backend=Direct())
    if stream:
        chunks = [chunk async for chunk in await client.chat("Biggest city in Norway?", schema=City, stream=True)]
        assert chunks[-1].phase == StreamingContentType.DONE and chunks[-1].content == {"result": City(**OSLO)}
        assert "".join(c.content for c in chunks[:-1]) == json.dumps(OSLO)
    else:
        assert await client.chat("Biggest city in Norway?", schema=City) == City(**OSLO)
    assert client.last_structured == City(**OSLO)
    sent = fake.requests[-1].body
    assert sent["response_format"] == {"type": "json_schema", "json_schema": {
        "name": "City", "schema": City.model_json_schema(), "strict": False}}
    assert sent["messages"][-1]["content"] == "Biggest city in Norway?"        # native: no prompt suffix
    assert client.messages[-1] == {"role": "assistant", "content": json.dumps(OSLO)} | {
        k: v for k, v in client.messages[-1].items() if k not in ("role", "content")}


async def test_ollama_models_get_format(fake):
    fake.reply(json.dumps({"x": 3}))
    client = aio.client("ollama:qwen3:8b", host=fake.url, backend=Direct())
    assert await client.generate("A point?", schema=Point) == Point(x=3)
    assert fake.requests[-1].body["format"] == response_schema(Point).json_schema


@pytest.mark.parametrize("stream", [False, True])
async def test_anthropic_answers_through_a_forced_tool(fake, stream):
    fake.reply("", tool_calls=[("City", OSLO)])
    client = aio.client("anthropic:claude-sonnet-4-6", base_url=fake.url, api_key="sk-ant-test", backend=Direct())
    if stream:
        chunks = [chunk async for chunk in await client.chat("Biggest?", schema=City, stream=True)]
        assert chunks[-1].content == {"result": City(**OSLO)}
    else:
        assert await client.chat("Biggest?", schema=City) == City(**OSLO)
    sent = fake.requests[-1].body
    assert sent["tool_choice"] == {"type": "tool", "name": "City"}
    assert [t["name"] for t in sent["tools"]] == ["City"] and sent["tools"][0]["input_schema"]["title"] == "City"
    assert client.last_tool_calls == [] and json.loads(client.messages[-1]["content"]) == OSLO


async def test_anthropic_refuses_a_schema_beside_tools():
    client = aio.client("anthropic:claude-sonnet-4-6", api_key="sk-ant-test", backend=Direct())
    tool = {"type": "function", "function": {"name": "f", "description": "d", "parameters": {"type": "object"}}}
    with pytest.raises(ValueError, match="forced tool"):
        await client.chat("x", schema=City, tools=[tool])


async def test_models_without_native_output_are_asked_in_the_prompt(fake):
    fake.reply('Sure! ```json\n{"x": 5, "y": 6}\n```')
    client = aio.client(f"vllm:m@{fake.url}/v1", backend=Direct())
    assert await client.chat("A point?", schema=Point) == Point(x=5, y=6)
    sent = fake.requests[-1].body
    assert "response_format" not in sent
    assert sent["messages"][-1]["content"].startswith("A point?\n\nRespond with ONLY a JSON object")
    assert json.dumps(response_schema(Point).json_schema) in client.messages[-2]["content"]    # as aimu keeps it
    with pytest.raises(ValueError, match="give a user message"):
        await client.chat(None, schema=Point)


@pytest.fixture(scope="module")
def smollm2_llama(smollm2_gguf_path):
    from aimu_ray.engines.local.llamacpp import LlamaCppEngine
    from aimu_ray.models.load import ModelLoad, Target

    load = ModelLoad(provider="llamacpp", task="text", model_id="smollm2",
                     options={"model_path": str(smollm2_gguf_path), "n_ctx": 1024})
    return LlamaCppEngine(load, Target())


@pytest.mark.parametrize("stream", [False, True])
async def test_llamacpp_generates_under_the_schema_as_a_grammar(smollm2_llama, smollm2_gguf_path, stream):
    """The real SmolLM2, asked without any JSON instruction: the grammar alone makes the answer a City."""
    client = aio.client("llamacpp:smollm2", model_path=str(smollm2_gguf_path), n_ctx=1024,
                        backend=HostedBackend(smollm2_llama))
    kwargs = {"generate_kwargs": {"max_tokens": 48, "temperature": 0}, "schema": City}
    if stream:
        chunks = [c async for c in await client.generate("Tell me about Paris.", stream=True, **kwargs)]
        city = chunks[-1].content["result"]
    else:
        city = await client.generate("Tell me about Paris.", **kwargs)
    assert isinstance(city, City) and client.last_structured == city
    assert "Respond with ONLY" not in client.last_request["messages"][-1]["content"]    # native: no prompt suffix


@pytest.fixture(scope="module")
async def smollm2_hf(smollm2_hf_folder):
    from aimu_ray.engines.local.hf_text import HFTextEngine
    from aimu_ray.models.load import ModelLoad, Target

    engine = HFTextEngine(ModelLoad(provider="hf", task="text", model_id=str(smollm2_hf_folder)), Target())
    yield engine
    await engine.aclose()


@pytest.mark.asyncio(loop_scope="module")
async def test_hf_generates_under_the_schema_as_a_grammar_beside_free_rows(smollm2_hf, smollm2_hf_folder):
    """The real SmolLM2 through transformers: three schema rows batched together, a free row beside them, a
    sampled one too; every schema answer is a City without any JSON instruction in the prompt."""
    def client():
        return aio.client(f"hf:{smollm2_hf_folder}", backend=HostedBackend(smollm2_hf))

    greedy, sampled = {"max_tokens": 128, "do_sample": False}, {"max_tokens": 128, "do_sample": True, "temperature": 0.7}
    prompts = ["Tell me about Paris.", "Tell me about Oslo.", "Tell me about Lima."]
    clients = [client() for _ in range(5)]
    answers = await asyncio.gather(*(c.generate(p, generate_kwargs=greedy, schema=City)
                                     for c, p in zip(clients, prompts)),
                                   clients[3].generate("Say hi.", generate_kwargs=greedy),
                                   clients[4].generate("Tell me about Rome.", generate_kwargs=sampled, schema=City))
    assert all(isinstance(city, City) for city in answers[:3] + answers[4:])
    assert isinstance(answers[3], str)
    streamed = [c async for c in await client().chat("Tell me about Quito.", generate_kwargs=greedy, schema=Point,
                                                      stream=True)]
    assert isinstance(streamed[-1].content["result"], Point)


def test_an_hf_grammar_keeps_the_schemas_order_of_properties(smollm2_hf_folder):
    """xgrammar holds the answer to the property order it is given: the schema's own, not a sorted copy."""
    import xgrammar
    from transformers import AutoTokenizer

    from aimu_ray.engines.local.grammar import SchemaGrammars

    tokenizer = AutoTokenizer.from_pretrained(smollm2_hf_folder)
    grammar = SchemaGrammars(tokenizer, len(tokenizer)).compiled(City.model_json_schema())
    assert xgrammar.GrammarMatcher(grammar).accept_string('{"name": "Oslo", "population": 7}')
    assert not xgrammar.GrammarMatcher(grammar).accept_string('{"population"')
