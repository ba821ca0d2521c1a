"""thinking= validation and the chunk-boundary-safe <think> parser."""

import pytest

from aimu_ray.models import resolve_model
from aimu_ray.engines.reply import ReplyBuilder
from aimu_ray.models.thinking import ResolvedThinking, ThinkingParser, resolve_thinking


@pytest.mark.parametrize("value", ["max", 1, "HIGH", 0.5])
def test_invalid_values_raise_before_anything(value):
    with pytest.raises(ValueError, match="Invalid thinking"):
        resolve_thinking(value, resolve_model("vllm:Qwen/Qwen3-8B").caps, print)


def test_model_without_thinking_warns_on_true_and_is_silent_on_false():
    warnings = []
    caps = resolve_model("openai:gpt-4.1").caps
    assert resolve_thinking(True, caps, warnings.append) == ResolvedThinking()
    assert resolve_thinking(False, caps, warnings.append) == ResolvedThinking()
    assert len(warnings) == 1


def test_always_thinking_model_ignores_false_with_a_warning():
    warnings = []
    assert resolve_thinking(False, resolve_model("gemini:gemini-2.5-pro").caps, warnings.append) == ResolvedThinking()
    assert warnings


def test_level_without_levels_becomes_plain_on():
    warnings = []
    assert resolve_thinking("low", resolve_model("vllm:Qwen/Qwen3-8B").caps, warnings.append) == ResolvedThinking(True)
    assert warnings


def chunks_of(text, size):
    return [text[i:i + size] for i in range(0, len(text), size)]


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 100])
def test_parser_survives_tags_split_anywhere(size):
    text = "<think>plan a</think>The answer <b>is</b> 42 < 43"
    parser = ThinkingParser()
    parts = [p for piece in chunks_of(text, size) for p in parser.feed(piece)] + parser.flush()
    assert "".join(t for ph, t in parts if ph == "thinking") == "plan a"
    assert "".join(t for ph, t in parts if ph == "generating") == "The answer <b>is</b> 42 < 43"


def test_parser_streams_incrementally_not_at_the_end():
    parser = ThinkingParser()
    assert parser.feed("<think>abc") == [("thinking", "abc")]
    assert parser.feed("de</th") == [("thinking", "de")]
    assert parser.feed("ink>x") == [("generating", "x")]


def test_parser_can_start_inside_a_block_and_unclosed_means_all_thinking():
    parser = ThinkingParser(start_inside=True)
    assert parser.feed("still thinking") + parser.flush() == [("thinking", "still thinking")]


def test_split_whole_reply():
    assert split_whole("<think> hmm </think>\n\nHello") == ("hmm", "Hello")
    assert split_whole("no tags") == ("", "no tags")


def split_whole(text: str) -> tuple[str, str]:
    """A whole reply through the one accumulator every engine uses."""
    reply = ReplyBuilder(parse_think_tags=True)
    reply.add_text(text)
    result = reply.result()
    return result.thinking, result.content
