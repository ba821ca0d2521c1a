"""``tool_choice`` "required" or a named function on the in-process engines, forced by grammar as vLLM does: the
schema built from the tools and the choice, its grammars, the answer read back as calls, the request core and the
HTTP bodies that carry it, and the real SmolLM2 through llama.cpp and transformers answering with calls."""

from __future__ import annotations

import pytest

from aimu_ray import aio
from aimu_ray.backends.hosted import HostedBackend
from aimu_ray.clients.requests import chat_request, served_model
from aimu_ray.deployments.openai_api import ChatCompletionRequest
from aimu_ray.engines.reply import ReplyBuilder
from aimu_ray.engines.tool_formats import ForcedToolCalls, forced_tool_calls
from aimu_ray.models import ChatResult
from aimu_ray.models.stream import StreamingContentType
from aimu_ray.models.structured import ResponseSchema, forced_tool_schema
from aimu_ray.models.wire import Endpoint

pytest_plugins = ["tests.fixtures.pytest_fixtures"]

WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city.",
                                            "parameters": {"type": "object", "properties": {
                                                "city": {"type": "string", "maxLength": 20},
                                                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
                                                "required": ["city", "unit"]}}}
CLOCK = {"type": "function", "function": {"name": "get_time", "description": "Current time in a time zone.",
                                          "parameters": {"type": "object", "properties": {
                                              "zone": {"type": "string", "maxLength": 20}}, "required": ["zone"]}}}
TOOLS = [WEATHER, CLOCK]
NAMED = {"type": "function", "function": {"name": "get_time"}}
SMOL = served_model("llamacpp:smollm2;tools")
USER = [{"role": "user", "content": "What's the weather in Paris?"}]


def params_of(tool: dict) -> dict:
    return tool["function"]["parameters"]


# ----- the schema -----

def test_a_named_function_is_held_to_its_parameters():
    schema = forced_tool_schema(TOOLS, NAMED)
    assert schema == ResponseSchema(name="get_time", json_schema=params_of(CLOCK), calls="named")


@pytest.mark.parametrize("parallel, most", [(True, None), (False, 1)])
def test_required_is_an_array_of_calls_one_of_each_tools_shape(parallel, most):
    schema = forced_tool_schema(TOOLS, "required", parallel)
    assert schema.calls == "listed" and schema.json_schema["minItems"] == 1
    assert schema.json_schema.get("maxItems") == most
    assert schema.json_schema["items"]["anyOf"] == [
        {"type": "object", "properties": {"name": {"type": "string", "enum": [tool["function"]["name"]]},
                                          "parameters": params_of(tool)},
         "required": ["name", "parameters"], "additionalProperties": False} for tool in TOOLS]


def test_a_tool_without_parameters_takes_an_empty_object():
    bare = {"type": "function", "function": {"name": "now"}}
    assert forced_tool_schema([bare], {"type": "function", "function": {"name": "now"}}).json_schema == {
        "type": "object", "properties": {}}


def test_definitions_move_to_the_root_where_their_references_point():
    city = {"type": "string", "enum": ["Paris", "Oslo"]}
    tool = {"type": "function", "function": {"name": "visit", "parameters": {
        "type": "object", "properties": {"city": {"$ref": "#/$defs/City"}}, "$defs": {"City": city}}}}
    schema = forced_tool_schema([tool, WEATHER], "required").json_schema
    assert schema["$defs"] == {"City": city}
    assert "$defs" not in schema["items"]["anyOf"][0]["properties"]["parameters"]
    assert "$defs" in params_of(tool)                                   # the caller's spec is not changed
    other = {"type": "function", "function": {"name": "fly", "parameters": {
        "type": "object", "properties": {}, "$defs": {"City": {"type": "string"}}}}}
    with pytest.raises(ValueError, match="define \\$defs 'City' differently"):
        forced_tool_schema([tool, other], "required")


@pytest.mark.parametrize("choice", [None, "auto", "none"])
def test_auto_and_none_force_nothing(choice):
    assert forced_tool_schema(TOOLS, choice) is None


@pytest.mark.parametrize("tools, choice, said", [
    (TOOLS, {"type": "function", "function": {"name": "get_news"}}, "'get_news', which is not among the tools "
                                                                     "\\(get_weather, get_time\\)"),
    ([], "required", "advertises no tools"),
    (TOOLS, {"type": "any"}, "tool_choice must be"),
    (TOOLS, "always", "tool_choice must be"),
])
def test_a_choice_the_tools_cannot_answer_is_a_value_error(tools, choice, said):
    with pytest.raises(ValueError, match=said):
        forced_tool_schema(tools, choice)


def test_both_engines_grammars_take_the_schema(smollm2_hf_folder):
    """What each engine compiles the schema to accepts a call to a named tool and refuses one to another."""
    import json

    import xgrammar
    from llama_cpp import LlamaGrammar
    from transformers import AutoTokenizer

    from aimu_ray.engines.local.grammar import SchemaGrammars

    schema = forced_tool_schema(TOOLS, "required", parallel=False).json_schema
    LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)
    tokenizer = AutoTokenizer.from_pretrained(smollm2_hf_folder)
    grammar = SchemaGrammars(tokenizer, len(tokenizer)).compiled(schema)
    assert xgrammar.GrammarMatcher(grammar).accept_string('[{"name": "get_time", "parameters": {"zone": "CET"}}]')
    assert not xgrammar.GrammarMatcher(grammar).accept_string('[{"name": "get_news"')
    assert not xgrammar.GrammarMatcher(grammar).accept_string('[{"name": "get_time", "parameters": {"zone": "CET"}},')


# ----- the answer read back -----

def test_answers_under_the_schema_are_calls_with_ids():
    named = forced_tool_calls(forced_tool_schema(TOOLS, NAMED), '{"zone": "CET"}')
    assert [(call.name, call.arguments) for call in named] == [("get_time", {"zone": "CET"})] and named[0].id
    listed = forced_tool_calls(forced_tool_schema(TOOLS, "required"),
                               '[{"name": "get_weather", "parameters": {"city": "Oslo", "unit": "celsius"}}, '
                               '{"name": "get_time", "parameters": {"zone": "CET"}}]')
    assert [(call.name, call.arguments) for call in listed] == [
        ("get_weather", {"city": "Oslo", "unit": "celsius"}), ("get_time", {"zone": "CET"})]
    assert len({call.id for call in listed}) == 2
    assert forced_tool_calls(forced_tool_schema(TOOLS, NAMED), '{"zone": "CE') is None


@pytest.mark.parametrize("pieces, content, names", [
    (['[{"name": "get_time", ', '"parameters": {"zone"', ': "CET"}}]'], "", ["get_time"]),
    (['[{"name": "get_time", ', '"parameters": {"zo'], '[{"name": "get_time", "parameters": {"zo', []),
])
def test_a_streamed_forced_answer_shows_nothing_and_ends_in_its_calls(pieces, content, names):
    """The calls come whole with the result, as every in-process tool call does; an answer cut short by its budget
    is the text it is."""
    reply = ReplyBuilder(text_tool_calls=ForcedToolCalls(forced_tool_schema(TOOLS, "required")))
    assert [delta for piece in pieces for delta in reply.add_text(piece)] == []
    *deltas, result = reply.finish()
    assert isinstance(result, ChatResult) and result.content == content == "".join(d.text for d in deltas)
    assert [call.name for call in result.tool_calls] == names


# ----- the request core and the HTTP bodies -----

def test_the_request_core_turns_an_in_process_models_choice_into_its_schema():
    request = chat_request(SMOL, Endpoint(), USER, warn=print, tools=TOOLS,
                           generate_kwargs={"tool_choice": "required", "parallel_tool_calls": False})
    assert request.response_schema == forced_tool_schema(TOOLS, "required", parallel=False)
    assert not {"tool_choice", "parallel_tool_calls"} & set(request.params)
    remote = served_model("openai-compat:m@http://127.0.0.1:9/v1;tools")
    forwarded = chat_request(remote, Endpoint(), USER, warn=print, tools=TOOLS, generate_kwargs={"tool_choice": NAMED})
    assert forwarded.params["tool_choice"] == NAMED and forwarded.response_schema is None
    with pytest.raises(ValueError, match="send one of the two"):
        chat_request(SMOL, Endpoint(), USER, warn=print, tools=TOOLS, generate_kwargs={"tool_choice": NAMED},
                     response_schema=ResponseSchema(name="r", json_schema={"type": "object"}))


def openai_body(**fields) -> ChatCompletionRequest:
    return ChatCompletionRequest(model="smol", messages=USER, tools=TOOLS, **fields)


@pytest.mark.parametrize("fields, expected", [
    ({"tool_choice": NAMED}, forced_tool_schema(TOOLS, NAMED)),
    ({"tool_choice": "required"}, forced_tool_schema(TOOLS, "required")),
    ({"tool_choice": "required", "parallel_tool_calls": False}, forced_tool_schema(TOOLS, "required", False)),
    ({"tool_choice": "auto", "parallel_tool_calls": False}, None),
])
def test_an_openai_body_forces_an_in_process_call(fields, expected):
    request = openai_body(**fields).as_request(SMOL, print)
    assert request.response_schema == expected and not {"tool_choice", "parallel_tool_calls"} & set(request.params)


def test_an_openai_body_that_cannot_be_forced_is_a_value_error():
    with pytest.raises(ValueError, match="'get_news', which is not among the tools"):
        openai_body(tool_choice={"type": "function", "function": {"name": "get_news"}}).as_request(SMOL, print)
    with pytest.raises(ValueError, match="send one of the two"):
        openai_body(tool_choice="required", response_format={"type": "json_object"}).as_request(SMOL, print)
    with pytest.raises(ValueError, match="advertises no tools"):          # a model not marked ';tools' gets none
        openai_body(tool_choice="required").as_request(served_model("llamacpp:smollm2"), print)


# ----- the real SmolLM2 -----

def assert_well_formed(calls: list[dict], name: str | None = None) -> None:
    """Each call names one of the tools (``name`` when given) and its arguments hold to that tool's schema."""
    specs = {tool["function"]["name"]: params_of(tool) for tool in TOOLS}
    assert calls and all(call["id"] for call in calls)
    for call in calls:
        assert call["name"] == (name or call["name"]) and call["name"] in specs
        schema, arguments = specs[call["name"]], call["arguments"]
        assert set(arguments) == set(schema["required"]) == set(schema["properties"])
        for key, value in arguments.items():
            assert isinstance(value, str) and len(value) <= schema["properties"][key].get("maxLength", 99)
            assert value in schema["properties"][key].get("enum", [value])


@pytest.fixture(scope="module")
async def llama_engine(smollm2_gguf_path):
    from aimu_ray.engines.local.llamacpp import LlamaCppEngine
    from aimu_ray.models.load import ModelLoad, Target

    engine = LlamaCppEngine(ModelLoad(provider="llamacpp", task="text", model_id="smollm2",
                                      options={"model_path": str(smollm2_gguf_path), "n_ctx": 1024}), Target())
    yield engine
    await engine.aclose()


@pytest.fixture(scope="module")
async def hf_engine(smollm2_hf_folder):
    from aimu_ray.engines.local.hf_text import HFTextEngine
    from aimu_ray.models.load import ModelLoad, Target

    engine = HFTextEngine(ModelLoad(provider="hf", task="text", model_id=str(smollm2_hf_folder)), Target())
    yield engine
    await engine.aclose()


@pytest.fixture(params=["llamacpp", "hf"])
def smollm2_client(request, smollm2_gguf_path, smollm2_hf_folder):
    """A client of SmolLM2 marked as taking tools, on the llama.cpp or the transformers engine."""
    if request.param == "llamacpp":
        return aio.client("llamacpp:smollm2;tools", model_path=str(smollm2_gguf_path),
                          backend=HostedBackend(request.getfixturevalue("llama_engine")))
    return aio.client(f"hf:{smollm2_hf_folder};tools", backend=HostedBackend(request.getfixturevalue("hf_engine")))


async def forced_calls(client, choice, stream: bool, **kwargs) -> list[dict]:
    """The calls recorded for one forced request, streamed or not; the answer has no text."""
    generate_kwargs = {"max_tokens": 64, "temperature": 0, "tool_choice": choice, **kwargs}
    if stream:
        chunks = [chunk async for chunk in await client.chat(USER[0]["content"], generate_kwargs=generate_kwargs,
                                                             tools=TOOLS, stream=True)]
        assert not [chunk for chunk in chunks if chunk.phase == StreamingContentType.GENERATING]
    else:
        assert await client.chat(USER[0]["content"], generate_kwargs=generate_kwargs, tools=TOOLS) == ""
    assert "content" not in client.messages[-1] and client.last_stop_reason != "length"
    return client.last_tool_calls


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("stream", [False, True])
async def test_the_real_model_calls_the_named_function(smollm2_client, stream):
    calls = await forced_calls(smollm2_client, NAMED, stream)
    assert len(calls) == 1
    assert_well_formed(calls, "get_time")


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("stream", [False, True])
async def test_the_real_model_makes_exactly_one_required_call(smollm2_client, stream):
    calls = await forced_calls(smollm2_client, "required", stream, parallel_tool_calls=False)
    assert len(calls) == 1
    assert_well_formed(calls)
