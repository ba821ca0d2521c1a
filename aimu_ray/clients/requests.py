"""The stateless request core: a request built from messages and options, an answer folded into aimu's terms.

The Python clients keep a conversation's state and call these; the HTTP ingress calls the same functions for each
request, with no client object. So both get one kwargs mapping, one thinking rule, one limits check and one record
of tool calls.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable

from ..models.capabilities import passthrough_caps
from ..adapters import prepare_params
from ..models.limits import current_limits
from ..models.media import AudioRequest, ImageRequest
from ..models.messages import assistant_message, recorded_calls, strip_inert_keys, tool_specs
from ..models.model_string import ResolvedModel, resolve_model
from ..models.structured import (GRAMMAR_PROVIDERS, ResponseSchema, enforced, forced_tool_schema,
                                 json_schema_instruction, response_schema)
from ..models.thinking import resolve_thinking
from ..models.wire import ChatRequest, ChatResult, Endpoint

OLLAMA_KEEP_ALIVE_S = 60          # how long Ollama keeps a model loaded after a request, unless the caller says


def served_model(model: str) -> ResolvedModel:
    """A model as a server serves it (over HTTP, through ``connect``): a remote one takes tools, images and thinking
    as asked, and its upstream judges them; an in-process one keeps its capabilities, so aimu's checks apply."""
    resolved = resolve_model(model)
    if resolved.spec.in_process:
        return resolved
    return replace(resolved, caps=passthrough_caps(resolved.caps))


def advertised_tools(model: ResolvedModel, tools: list, use_tools: bool) -> list[dict]:
    """The tool specs a request carries; validated even when not advertised: a bad tool is a bug either way."""
    specs = tool_specs(tools)
    return specs if (use_tools and model.caps.tools) else []


def chat_request(model: ResolvedModel, endpoint: Endpoint, messages: list[dict], *, warn: Callable[[str], None],
                 default_generate_kwargs: dict | None = None, generate_kwargs: dict | None = None, thinking=None,
                 tools: list[dict] | None = None, stream: bool = False,
                 keep_alive: float | None = None, response_schema: ResponseSchema | None = None) -> ChatRequest:
    """One chat request in the provider's terms, checked against the limits; nothing is sent.

    ``warn`` is told what the model cannot honour (a dropped kwarg, thinking it does not do); ``keep_alive`` is
    Ollama's, in seconds (its default otherwise). A ``tool_choice`` in the kwargs that forces a call becomes an
    in-process model's response schema (``forced_tool_call``)."""
    tools = tools or []
    resolved = resolve_thinking(thinking, model.caps, warn)
    prepared = prepare_params(model.spec, model.model_id, model.caps, resolved, default_generate_kwargs,
                              generate_kwargs)
    for key in prepared.dropped:
        warn(f"generate_kwargs[{key!r}] is not supported by provider '{model.provider}' and was dropped.")
    if model.provider == "ollama":
        prepared.params["keep_alive"] = OLLAMA_KEEP_ALIVE_S if keep_alive is None else keep_alive
    if (forced := forced_tool_call(model, prepared.params, tools)) is not None:
        if response_schema is not None:
            raise ValueError("An in-process model forces a tool call (tool_choice) and holds an answer to a response "
                             "schema (schema=, response_format) by the same means, a grammar: send one of the two.")
        response_schema = forced
    messages = strip_inert_keys(messages)
    measured = {**prepared.params, "schema": response_schema.json_schema} if response_schema else prepared.params
    current_limits().check_chat(messages, tools, measured)
    return ChatRequest(provider=model.provider, model=model.model_id, endpoint=endpoint, messages=messages,
                       tools=tools, params=prepared.params, parse_think_tags=model.caps.thinking, stream=stream,
                       response_schema=response_schema)


def forced_tool_call(model: ResolvedModel, params: dict, tools: list[dict]) -> ResponseSchema | None:
    """An in-process engine forces a tool call by grammar: OpenAI's ``tool_choice`` and ``parallel_tool_calls`` leave
    its parameters (which ``generate`` would refuse) and become the schema of its answer. Other providers get both
    as they are."""
    if model.provider not in GRAMMAR_PROVIDERS:
        return None
    choice, parallel = params.pop("tool_choice", None), params.pop("parallel_tool_calls", True)
    return forced_tool_schema(tools, choice, parallel is not False)


@dataclass(frozen=True)
class StructuredAsk:
    """How a ``schema=`` goes out: natively with the request (``native``), or as ``suffix`` to the user turn."""

    native: ResponseSchema | None
    suffix: str


def structured_ask(model: ResolvedModel, schema: type | None, tools: list[dict]) -> StructuredAsk | None:
    """aimu's rules: native where the model or engine holds to a schema, prompt-and-parse elsewhere; Anthropic
    holds to it with a forced tool, so a schema there cannot go with tools of the caller's."""
    if schema is None:
        return None
    asked = response_schema(schema)
    if not enforced(model.provider, model.caps):
        return StructuredAsk(None, "\n\n" + json_schema_instruction(asked.json_schema))
    if model.provider == "anthropic" and tools:
        raise ValueError("schema= on Anthropic is answered through a forced tool, which cannot go with action tools. "
                         "Drop tools (or use_tools=False), or use a provider whose response_format goes beside "
                         "tools.")
    return StructuredAsk(asked, "")


@dataclass(frozen=True)
class Answer:
    """A ``ChatResult`` in aimu's terms: what a client's ``last_*`` hold, and the assistant turn it appends."""

    content: str
    thinking: str
    usage: dict | None
    stop_reason: str | None
    message: dict                 # the assistant turn: prose, tool calls with aimu's ids, thinking as an inert key
    tool_calls: list[dict]        # ``last_tool_calls``: name, arguments (a dict), id


def fold(result: ChatResult, model: ResolvedModel) -> Answer:
    """The answer to a request to ``model``; tool calls get aimu's ids (Anthropic's keep their own)."""
    message = assistant_message(result.content, result.thinking, result.tool_calls,
                                keep_ids=model.provider == "anthropic")
    return Answer(content=result.content, thinking=result.thinking,
                  usage=result.usage.as_dict() if result.usage else None, stop_reason=result.stop_reason,
                  message=message, tool_calls=recorded_calls(message))


def image_request(**fields: Any) -> ImageRequest:
    """An image request, checked against the limits before it is sent."""
    request = ImageRequest(**fields)
    current_limits().check_image(request)
    return request


def audio_request(**fields: Any) -> AudioRequest:
    """An audio request, checked against the limits before it is sent."""
    request = AudioRequest(**fields)
    current_limits().check_audio(request)
    return request
