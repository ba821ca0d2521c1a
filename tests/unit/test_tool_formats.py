"""Tool calls written as text, and <think> splitting, as the HF engine sees them: pure functions on strings.

The tiny test model writes noise, so the formats are exercised here, in whole and cut into pieces:
a stream must give the same answer however its text is chunked.
"""

from __future__ import annotations

import pytest

from aimu_ray.engines.reply import ReplyBuilder
from aimu_ray.engines.tool_formats import ToolCallStream, parse_tool_calls
from aimu_ray.models import ChatDelta, ToolCall

WEATHER = ToolCall(name="get_weather", arguments={"city": "Paris"})


@pytest.mark.parametrize("text, prose, calls", [
    ('<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>', "", [WEATHER]),
    ('Let me look.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\nDone.',
     "Let me look.\n\nDone.", [WEATHER]),
    ("<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n</function>\n</tool_call>",
     "", [WEATHER]),
    ("<tool_call><function=add><parameter=a>1</parameter><parameter=b>2</parameter></function></tool_call>",
     "", [ToolCall(name="add", arguments={"a": "1", "b": "2"})]),           # Qwen-style values stay strings
    ('<tool_call>{"name": "a", "arguments": {}}</tool_call><tool_call>{"name": "b"}</tool_call>', "",
     [ToolCall(name="a"), ToolCall(name="b")]),
    ('Checking. [TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}}]', "Checking. ", [WEATHER]),
    ('[TOOL_CALLS]{"name": "get_weather", "arguments": "{\\"city\\": \\"Paris\\"}"}', "", [WEATHER]),
    ('{"name": "get_weather", "parameters": {"city": "Paris"}}', "", [WEATHER]),      # Llama 3.1: parameters
    ('[{"name": "get_weather", "arguments": {"city": "Paris"}}, {"name": "now"}]', "",
     [WEATHER, ToolCall(name="now")]),
])
def test_each_format_parses(text: str, prose: str, calls: list[ToolCall]):
    assert parse_tool_calls(text) == (prose, calls)


@pytest.mark.parametrize("text", [
    "Plain prose, no tools.",
    "<tool_call>{not json}</tool_call>",
    '<tool_call>{"name": "get_weather"',                                 # cut off by max_new_tokens
    "[TOOL_CALLS] oops",
    '{"title": "not a call"}',
    "[1, 2, 3]",
])
def test_text_without_well_formed_markup_is_not_a_call(text: str):
    assert parse_tool_calls(text) is None


def stream_through(pieces: list[str]) -> tuple[list[str], str, list[ToolCall]]:
    """What a ToolCallStream shows piece by piece, the whole shown text, and the calls."""
    stream = ToolCallStream()
    shown = [stream.feed(piece) for piece in pieces]
    rest, calls = stream.close()
    shown.append(rest)
    return [s for s in shown if s], "".join(shown), calls


def chunkings(text: str) -> list[list[str]]:
    """The text whole, one character at a time, and in pieces of 3 and 7 (tags cut at every place)."""
    return [[text], list(text)] + [[text[i:i + n] for i in range(0, len(text), n)] for n in (3, 7)]


@pytest.mark.parametrize("text, content, calls", [
    ("\n\n<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n</function>\n</tool_call>",
     "", [WEATHER]),
    ('Let me look. <tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call> Done.',
     "Let me look.  Done.", [WEATHER]),
    ('  {"name": "get_weather", "arguments": {"city": "Paris"}}', "", [WEATHER]),
    ('Sure. [TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}}]', "Sure. ", [WEATHER]),
    ("No tools < here [ or { there.", "No tools < here [ or { there.", []),
    ("<tool_call>{broken</tool_call> and more", "<tool_call>{broken</tool_call> and more", []),
    ('{"name" is a word}', '{"name" is a word}', []),
])
def test_stream_gives_the_same_answer_however_the_text_is_cut(text: str, content: str, calls: list[ToolCall]):
    for pieces in chunkings(text):
        _, shown, found = stream_through(pieces)
        assert (shown, found) == (content, calls), pieces


def test_prose_flows_before_markup_and_the_markup_is_held_back():
    pieces = ["Let me ", "check the ", "weather.\n<tool", '_call>{"name": "now"}', "</tool_call>"]
    shown, _, calls = stream_through(pieces)
    assert shown == ["Let me ", "check the ", "weather.\n"]
    assert calls == [ToolCall(name="now")]


def test_a_reply_that_is_only_a_tool_call_shows_nothing():
    shown, _, calls = stream_through(["\n", '{"na', 'me": "now", "arguments": {}}'])
    assert shown == [] and calls == [ToolCall(name="now")]


def test_plain_text_is_not_delayed_past_a_possible_marker():
    stream = ToolCallStream()
    assert stream.feed("Hello") == "Hello"
    assert stream.feed(" [TOOL") == " "                  # "[TOOL" may still become "[TOOL_CALLS]"
    assert stream.feed("S are great]") == "[TOOLS are great]"


def run_reply(pieces: list[str], *, think: bool = True, start_inside: bool = False, tools: bool = True):
    reply = ReplyBuilder(think, start_inside=start_inside, text_tool_calls=ToolCallStream() if tools else None)
    deltas = [delta for piece in pieces for delta in reply.add_text(piece)]
    *tail, result = reply.finish()
    return deltas + tail, result


def test_thinking_then_a_tool_call_through_the_reply_builder():
    text = ('<think>The user wants weather.</think>\n\n<tool_call>{"name": "get_weather", '
            '"arguments": {"city": "Paris"}}</tool_call>')
    for pieces in chunkings(text):
        deltas, result = run_reply(pieces)
        assert (result.thinking, result.content, result.tool_calls) == ("The user wants weather.", "", [WEATHER])
        assert "".join(d.text for d in deltas if d.phase == "thinking") == "The user wants weather."
        assert not [d for d in deltas if d.phase == "generating"]


def test_a_prompt_that_opened_think_starts_inside_the_block():
    for pieces in chunkings("planning</think>The answer."):
        deltas, result = run_reply(pieces, start_inside=True, tools=False)
        assert (result.thinking, result.content) == ("planning", "The answer.")
        assert all(isinstance(d, ChatDelta) for d in deltas)


def test_an_unclosed_think_block_is_all_thinking():
    _, result = run_reply(["still thinking when max_new_tokens ran out"], start_inside=True, tools=False)
    assert (result.thinking, result.content) == ("still thinking when max_new_tokens ran out", "")


def test_without_tools_markup_is_plain_text():
    text = '<tool_call>{"name": "now"}</tool_call>'
    deltas, result = run_reply([text], think=False, tools=False)
    assert result.content == text and result.tool_calls == []
    assert "".join(d.text for d in deltas) == text


def test_streamed_deltas_join_to_the_content_with_prose_around_calls():
    text = 'Sure.<tool_call>{"name": "now"}</tool_call> Anything else?'
    for pieces in chunkings(text):
        deltas, result = run_reply(pieces, think=False)
        assert "".join(d.text for d in deltas) == result.content == "Sure. Anything else?"
        assert result.tool_calls == [ToolCall(name="now")]
