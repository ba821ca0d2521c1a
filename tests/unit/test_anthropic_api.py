"""Anthropic's Messages API bodies, their conversion to the request every route builds, and the answer as Anthropic's
Message and stream events, read back by the anthropic SDK's own types (no Ray, no server)."""

from __future__ import annotations

import json

import anthropic
import pytest
from anthropic.lib.streaming._messages import accumulate_event
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.exceptions import HTTPException

from aimu_ray.clients.requests import Answer, served_model
from aimu_ray.deployments.anthropic_api import AnthropicEvents, BlockStream, MessagesRequest, message_out
from aimu_ray.deployments.errors import answer_for, error_handler
from aimu_ray.models.errors import ModelBusyError
from aimu_ray.models.wire import ChatDelta

COMPAT = served_model("openai-compat:m@http://127.0.0.1:9/v1;tools,thinking")   # a served remote model
CLAUDE = served_model("anthropic:claude-sonnet-4-5")
HF_TEXT = served_model("hf:/models/tiny")                                     # in-process, no tools or images
PNG = "iVBORw0KGgo="
WEATHER = {"name": "weather", "description": "Weather in a city.",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}


def body(**fields) -> MessagesRequest:
    return MessagesRequest.model_validate({"model": "m", "max_tokens": 64,
                                           "messages": [{"role": "user", "content": "hi"}], **fields})


def refused(**fields) -> str:
    with pytest.raises(ValidationError) as caught:
        body(**fields)
    return str(caught.value)


# ----- conversion -----

def test_a_tool_round_trip_becomes_aimu_messages():
    request = body(system=[{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Be kind."}], messages=[
        {"role": "user", "content": [{"type": "text", "text": "Weather?"},
                                     {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                                  "data": PNG}}]},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "Call the tool.", "signature": ""},
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Oslo"}},
            {"type": "tool_use", "id": "toolu_2", "name": "weather", "input": {"city": "Bergen"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
            {"type": "tool_result", "tool_use_id": "toolu_2", "content": [{"type": "text", "text": "no station"}],
             "is_error": True},
            {"type": "text", "text": "And tomorrow?"}]}])
    assert request.aimu_messages() == [
        {"role": "system", "content": "Be brief.\n\nBe kind."},
        {"role": "user", "content": [{"type": "text", "text": "Weather?"},
                                     {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}]},
        {"role": "assistant", "content": "Checking.", "thinking": "Call the tool.", "tool_calls": [
            {"id": "toolu_1", "type": "function", "function": {"name": "weather", "arguments": {"city": "Oslo"}}},
            {"id": "toolu_2", "type": "function", "function": {"name": "weather", "arguments": {"city": "Bergen"}}}]},
        {"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "toolu_2", "content": "Error: no station"},
        {"role": "user", "content": "And tomorrow?"}]


def test_the_request_is_the_one_every_route_builds():
    request = body(tools=[WEATHER], temperature=0.5, top_k=20, stop_sequences=["END"],
                   messages=[{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
                             {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "weather",
                                                                "input": {}}]},
                             {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1"}]}])
    asked = request.as_request(COMPAT, print)
    assert asked.provider == "openai-compat" and asked.model == "m"
    assert asked.messages == [{"role": "user", "content": "a\nb"},
                              {"role": "assistant", "tool_calls": [{"id": "t1", "type": "function",
                                                                    "function": {"name": "weather", "arguments": {}}}]},
                              {"role": "tool", "tool_call_id": "t1", "content": ""}]
    assert asked.tools == [{"type": "function", "function": {"name": "weather", "description": "Weather in a city.",
                                                             "parameters": WEATHER["input_schema"]}}]
    assert asked.params["max_tokens"] == 64 and asked.params["temperature"] == 0.5
    assert asked.params["stop"] == ["END"] and asked.params["extra_body"]["top_k"] == 20


def test_tool_choice_none_sends_no_tools_and_a_model_without_tools_refuses_them():
    assert body(tools=[WEATHER], tool_choice={"type": "none"}).as_request(HF_TEXT, print).tools == []
    with pytest.raises(ValueError, match="does not take tools"):
        body(tools=[WEATHER]).as_request(HF_TEXT, print)


def test_a_forced_tool_choice_is_an_in_process_models_grammar_and_goes_upstream_in_the_providers_terms():
    smol = served_model("llamacpp:smollm2;tools")
    named = body(tools=[WEATHER], tool_choice={"type": "tool", "name": "weather"}).as_request(smol, print)
    assert named.response_schema.calls == "named" and named.response_schema.json_schema == WEATHER["input_schema"]
    assert "tool_choice" not in named.params
    one = body(tools=[WEATHER], tool_choice={"type": "any", "disable_parallel_tool_use": True}).as_request(smol, print)
    assert one.response_schema.calls == "listed" and one.response_schema.json_schema["maxItems"] == 1
    with pytest.raises(ValueError, match="'clock', which is not among the tools"):
        body(tools=[WEATHER], tool_choice={"type": "tool", "name": "clock"}).as_request(smol, print)
    with pytest.raises(ValueError, match="it goes with tools"):
        body(tool_choice={"type": "any"}).as_request(smol, print)
    with pytest.raises(ValueError, match="send one of the two"):
        body(tools=[WEATHER], tool_choice={"type": "any"},
             output_config={"format": {"type": "json_schema", "schema": {"type": "object"}}}).as_request(smol, print)
    upstream = body(tools=[WEATHER], tool_choice={"type": "any", "disable_parallel_tool_use": True}).as_request(
        COMPAT, print)
    assert upstream.params["tool_choice"] == "required" and upstream.params["parallel_tool_calls"] is False
    assert upstream.response_schema is None
    named = body(tools=[WEATHER], tool_choice={"type": "tool", "name": "weather"}).as_request(COMPAT, print)
    assert named.params["tool_choice"] == {"type": "function", "function": {"name": "weather"}}
    claude = body(tools=[WEATHER], tool_choice={"type": "tool", "name": "weather"}).as_request(CLAUDE, print)
    assert claude.params["tool_choice"] == {"type": "tool", "name": "weather"}
    with pytest.raises(ValueError, match="which Ollama cannot"):
        body(tools=[WEATHER], tool_choice={"type": "any"}).as_request(served_model("ollama:qwen3;tools"), print)


def test_an_anthropic_model_gets_its_own_stop_sequences_and_the_exact_thinking_budget():
    asked = body(max_tokens=4000, stop_sequences=["END"], thinking={"type": "enabled", "budget_tokens": 3000})
    params = asked.as_request(CLAUDE, print).params
    assert params["stop_sequences"] == ["END"] and "stop" not in params
    assert params["thinking"] == {"type": "enabled", "budget_tokens": 3000} and params["max_tokens"] == 4000


@pytest.mark.parametrize("thinking, effort, level", [
    ({"type": "enabled", "budget_tokens": 1024}, None, "low"),
    ({"type": "enabled", "budget_tokens": 5000}, None, "medium"),
    ({"type": "enabled", "budget_tokens": 30000}, None, "high"),
    ({"type": "adaptive"}, None, True),
    ({"type": "adaptive"}, "xhigh", "high"),
    ({"type": "disabled"}, "low", False),
    ({"type": "between_tools"}, None, False),
    (None, "medium", "medium"),
    (None, None, None),
])
def test_thinking_config_becomes_aimus_thinking(thinking, effort, level):
    fields = {"max_tokens": 40000, "thinking": thinking, "output_config": {"effort": effort} if effort else None}
    assert body(**fields).thinking_level() == level


def test_thinking_reaches_a_thinking_model_in_its_wire_terms():
    asked = body(thinking={"type": "enabled", "budget_tokens": 1024}, max_tokens=2048).as_request(COMPAT, print)
    assert asked.params["extra_body"]["chat_template_kwargs"] == {"enable_thinking": True}


def test_output_config_format_is_the_response_schema():
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}}
    asked = body(output_config={"format": {"type": "json_schema", "schema": schema}}).as_request(COMPAT, print)
    assert asked.response_schema.json_schema == schema


def test_fields_that_change_nothing_are_taken():
    request = body(metadata={"user_id": "u1"}, service_tier="auto", speed="fast", cache_control={"type": "ephemeral"},
                   inference_geo="us", tools=[{**WEATHER, "cache_control": {"type": "ephemeral"}, "strict": True}],
                   tool_choice={"type": "auto", "disable_parallel_tool_use": True},
                   messages=[{"role": "user", "content": [{"type": "text", "text": "hi", "cache_control":
                                                           {"type": "ephemeral"}}]}])
    assert request.as_request(COMPAT, print).messages == [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize("fields, said", [
    ({"messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "url", "url": "http://x/a.png"}}]}]},
     "does not fetch URLs"),
    ({"messages": [{"role": "user", "content": [{"type": "document", "source": {}}]}]}, "'document' blocks"),
    ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "server tool 'web_search_20250305'"),
    ({"tool_choice": {"type": "tool"}}, "name goes with type 'tool'"),
    ({"container": "container_1"}, "container"),
    ({"thinking": {"type": "enabled"}}, "budget_tokens goes with type 'enabled'"),
    ({"thinking": {"type": "enabled", "budget_tokens": 2048}}, "greater than thinking.budget_tokens"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"logprobs": True}, "Extra inputs are not permitted"),
    ({"messages": [{"role": "user", "content": [{"type": {}}]}]}, "type\n  Input should be a valid string"),
    ({"messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}]}]}]},
     "a tool result carries text here"),
])
def test_what_cannot_be_honoured_is_refused_naming_it(fields, said):
    assert said in refused(**fields)


def test_turns_carry_only_their_roles_blocks_and_a_prefill_needs_an_anthropic_model():
    with pytest.raises(ValueError, match="a user turn cannot carry tool_use"):
        body(messages=[{"role": "user", "content": [{"type": "tool_use", "id": "t", "name": "x", "input": {}}]}]) \
            .aimu_messages()
    prefill = body(messages=[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "The answer is"}])
    with pytest.raises(ValueError, match="prefill"):
        prefill.as_request(COMPAT, print)
    assert prefill.as_request(CLAUDE, print).messages[-1] == {"role": "assistant", "content": "The answer is"}


# ----- the answer -----

def answer(content="", thinking="", tool_calls=(), stop_reason="stop", usage=None) -> Answer:
    return Answer(content=content, thinking=thinking, usage=usage or {"input_tokens": 7, "output_tokens": 3},
                  stop_reason=stop_reason, message={}, tool_calls=list(tool_calls))


def test_the_answer_is_anthropics_message():
    calls = [{"id": "abc", "name": "weather", "arguments": {"city": "Oslo"}}]
    message = anthropic.types.Message.model_validate(message_out("msg_1", "m", answer("Checking.", "Hmm.", calls)))
    assert [block.type for block in message.content] == ["thinking", "text", "tool_use"]
    assert message.content[0].thinking == "Hmm." and message.content[0].signature == ""
    assert message.content[2].input == {"city": "Oslo"} and message.content[2].id == "abc"
    assert message.stop_reason == "tool_use" and (message.usage.input_tokens, message.usage.output_tokens) == (7, 3)
    hidden = message_out("msg_1", "m", answer("x", "Hmm."), show_thinking=False)
    assert hidden["content"][0] == {"type": "thinking", "thinking": "", "signature": ""}


@pytest.mark.parametrize("engine, anthropics", [("stop", "end_turn"), ("length", "max_tokens"),
                                                ("max_tokens", "max_tokens"), ("stop_sequence", "stop_sequence"),
                                                (None, "end_turn")])
def test_stop_reasons(engine, anthropics):
    assert message_out("msg_1", "m", answer("x", stop_reason=engine))["stop_reason"] == anthropics


def test_stream_events_accumulate_to_the_same_message_in_the_sdk():
    blocks, calls = BlockStream(show_thinking=True), [{"id": "abc", "name": "weather", "arguments": {"city": "Oslo"}}]
    events = [{"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant",
                                                    "model": "m", "content": [], "stop_reason": None,
                                                    "stop_sequence": None,
                                                    "usage": {"input_tokens": 0, "output_tokens": 0}}}]
    for phase, text in [("thinking", "Hm"), ("thinking", "m."), ("generating", "Check"), ("generating", "ing.")]:
        events += blocks.delta(ChatDelta(phase=phase, text=text))
    events += [*blocks.close(), *blocks.tool_use(calls[0])]
    events += [{"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                "usage": {"input_tokens": 7, "output_tokens": 3}}, {"type": "message_stop"}]
    assert [e["index"] for e in events if e["type"] == "content_block_start"] == [0, 1, 2]
    assert sum(e["type"] == "content_block_stop" for e in events) == 3
    snapshot = None
    for event in events:
        snapshot = accumulate_event(event=event, current_snapshot=snapshot, json_bufs={})
    assert snapshot.model_dump(exclude_none=True) == anthropic.types.Message.model_validate(
        message_out("msg_1", "m", answer("Checking.", "Hmm.", calls))).model_dump(exclude_none=True)


def test_stream_events_are_named_server_sent_events():
    line = AnthropicEvents.event({"type": "message_stop"})
    assert line == 'event: message_stop\ndata: {"type":"message_stop"}\n\n'
    error = AnthropicEvents.error(answer_for(ModelBusyError("the model is busy")))
    name, data = error.strip().split("\n")
    assert name == "event: error"
    assert json.loads(data.removeprefix("data: ")) == {"type": "error", "error": {"type": "overloaded_error",
                                                                                 "message": "the model is busy"}}


# ----- errors -----

@pytest.mark.parametrize("error, status, kind", [
    (HTTPException(404, "The model 'x' does not exist."), 404, "not_found_error"),
    (HTTPException(401, "Missing or wrong API key"), 401, "authentication_error"),
    (HTTPException(403, "Admin routes need an admin key"), 403, "permission_error"),
    (ValueError("bad"), 400, "invalid_request_error"),
    (RequestValidationError([{"loc": ("body", "max_tokens"), "msg": "Field required"}]), 400,
     "invalid_request_error"),
    (ModelBusyError("busy"), 503, "overloaded_error"),
    (RuntimeError("boom"), 500, "api_error"),
])
async def test_errors_on_the_messages_route_are_anthropic_error_objects(error, status, kind):
    class Request:
        class url:
            path = "/v1/messages"

    response = await error_handler(Request, error)
    body = json.loads(response.body)
    assert response.status_code == status and body["type"] == "error" and body["error"]["type"] == kind
    assert body["error"]["message"] == answer_for(error).body["error"]["message"]
    Request.url.path = "/v1/chat/completions"
    assert json.loads((await error_handler(Request, error)).body) == answer_for(error).body
