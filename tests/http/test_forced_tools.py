"""A forced tool call on an in-process model over HTTP, through the official SDKs: OpenAI's ``tool_choice`` (required,
a named function) and Anthropic's (any, tool) on the real SmolLM2 through llama.cpp, answered by grammar with tool
calls and no text, whole and streamed; what cannot be forced is a 400 naming it."""

from __future__ import annotations

import json

import anthropic
import openai
import pytest

from aimu_ray.demo.servers import free_port
from aimu_ray.deployments import AppConfig

pytest_plugins = ["tests.fixtures.pytest_fixtures"]

KEY = "sk-test-forced-tools-0123456789"
GUARD_S = 120.0
USER = [{"role": "user", "content": "What's the weather in Paris?"}]
CITY = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}}, "required": ["city"]}
ZONE = {"type": "object", "properties": {"zone": {"type": "string", "maxLength": 20}}, "required": ["zone"]}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city.",
                                            "parameters": CITY}},
         {"type": "function", "function": {"name": "get_time", "description": "Time in a zone.", "parameters": ZONE}}]
ANTHROPIC_TOOLS = [{"name": tool["function"]["name"], "description": tool["function"]["description"],
                    "input_schema": tool["function"]["parameters"]} for tool in TOOLS]
ARGUMENTS = {"get_weather": "city", "get_time": "zone"}     # each tool's one argument


@pytest.fixture(scope="module")
def app(serve_app, smollm2_gguf_path, tmp_path_factory):
    config = AppConfig(port=free_port(), output_dir=tmp_path_factory.mktemp("served"), api_keys=[KEY], models=[
        {"name": "smol", "model": "llamacpp:smollm2;tools", "options": {"model_path": str(smollm2_gguf_path),
                                                                         "n_ctx": 1024}}])
    return serve_app(config)


@pytest.fixture(scope="module")
def sdk(app) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{app}/v1", api_key=KEY, max_retries=0, timeout=GUARD_S)


@pytest.fixture(scope="module")
def claude_sdk(app) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=app, api_key=KEY, max_retries=0, timeout=GUARD_S)


def assert_call(name: str, arguments: dict, expected: str | None = None) -> None:
    """A call to one of the tools (``expected`` when given) with exactly that tool's argument, a string."""
    assert name == (expected or name) and list(arguments) == [ARGUMENTS[name]]
    assert isinstance(arguments[ARGUMENTS[name]], str)


def test_required_answers_with_tool_calls_and_no_text(sdk):
    reply = sdk.chat.completions.create(model="smol", messages=USER, tools=TOOLS, tool_choice="required",
                                        parallel_tool_calls=False, max_tokens=64, temperature=0)
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    [call] = choice.message.tool_calls
    assert call.id and call.type == "function"
    assert_call(call.function.name, json.loads(call.function.arguments))


def test_a_named_function_streams_its_call_at_the_end(sdk):
    chunks = list(sdk.chat.completions.create(model="smol", messages=USER, tools=TOOLS, max_tokens=64, temperature=0,
                                              tool_choice={"type": "function", "function": {"name": "get_time"}},
                                              stream=True))
    deltas = [chunk.choices[0].delta for chunk in chunks if chunk.choices]
    assert not "".join(delta.content or "" for delta in deltas)
    [call] = [call for delta in deltas for call in delta.tool_calls or []]
    assert_call(call.function.name, json.loads(call.function.arguments), "get_time")
    assert [chunk.choices[0].finish_reason for chunk in chunks if chunk.choices][-1] == "tool_calls"


def test_anthropic_any_answers_with_tool_use_blocks(claude_sdk):
    message = claude_sdk.messages.create(model="smol", max_tokens=64, messages=USER, tools=ANTHROPIC_TOOLS,
                                         tool_choice={"type": "any", "disable_parallel_tool_use": True},
                                         extra_body={"temperature": 0})
    assert message.stop_reason == "tool_use" and [block.type for block in message.content] == ["tool_use"]
    assert_call(message.content[0].name, message.content[0].input)


def test_anthropic_tool_streams_its_tool_use(claude_sdk):
    with claude_sdk.messages.stream(model="smol", max_tokens=64, messages=USER, tools=ANTHROPIC_TOOLS,
                                    tool_choice={"type": "tool", "name": "get_weather"},
                                    extra_body={"temperature": 0}) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use" and [block.type for block in final.content] == ["tool_use"]
    assert_call(final.content[0].name, final.content[0].input, "get_weather")


@pytest.mark.parametrize("fields, said", [
    ({"tool_choice": {"type": "function", "function": {"name": "get_news"}}}, "'get_news', which is not among"),
    ({"tool_choice": "required", "response_format": {"type": "json_object"}}, "send one of the two"),
])
def test_what_cannot_be_forced_is_a_bad_request(sdk, fields, said):
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.create(model="smol", messages=USER, tools=TOOLS, max_tokens=8, **fields)
    assert said in caught.value.body["message"]
