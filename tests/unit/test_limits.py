"""Request limits: each one refused where the request is built, before anything is sent, naming the limit.

The clients here send through a backend that fails the test if it is ever reached, so a refusal is shown to
happen before any request leaves the caller's process. No Ray, no model.
"""

from __future__ import annotations

import io
import pickle
import random
from contextlib import contextmanager

import pytest
from PIL import Image
from tokenizers import AddedToken, normalizers, pre_tokenizers
from transformers import AutoTokenizer

import aimu_ray
from aimu_ray.clients import runtime
from aimu_ray.clients.text import ServedTextClient
from aimu_ray.deployments import AppConfig
from aimu_ray.engines.local.hf_text import longest_token_bytes
from aimu_ray.clients.media import ServedAudioClient, ServedImageClient
from aimu_ray.models.errors import LimitExceededError
from aimu_ray.models.limits import Limits, current_limits, fewest_tokens, set_limits

pytest_plugins = ["tests.fixtures.pytest_fixtures"]

REMOTE = "openai-compat:m@http://127.0.0.1:9/v1;tools,vision"
SMALL = Limits(max_body_bytes=1000, max_messages=3, max_prompt_chars=100, max_json_depth=8, max_image_pixels=64 * 64,
               max_images=2, max_audio_s=5, max_audio_clips=2, max_inference_steps=10)


class Unreachable:
    """A backend that must never be called: the limits refuse before sending."""

    async def call(self, request):
        raise AssertionError(f"a request over a limit was sent: {request!r}")

    async def stream(self, request):
        raise AssertionError(f"a request over a limit was streamed: {request!r}")
        yield


@pytest.fixture(autouse=True)
def small_limits():
    set_limits(SMALL)
    yield
    set_limits(None)


@contextmanager
def refused(limit: str, status: int = 400):
    """The refusal of ``limit``: its name in the error and its message, and the status it answers with over HTTP."""
    with pytest.raises(LimitExceededError, match=limit) as caught:
        yield caught
    assert (caught.value.limit, caught.value.status_code) == (limit, status)


def nested(depth: int) -> dict:
    value: dict = {"type": "string"}
    for _ in range(depth):
        value = {"type": "object", "properties": {"x": value}}
    return value


def tool(parameters: dict) -> dict:
    return {"type": "function", "function": {"name": "deep", "parameters": parameters}}


def png(width: int, height: int) -> bytes:
    """Noise, so that the file (and its data URL) is as large as a photo of that size."""
    buffer = io.BytesIO()
    Image.effect_noise((width, height), 64).save(buffer, format="PNG")
    return buffer.getvalue()


# ----- the limits themselves -----

def test_defaults_and_every_field_says_why():
    limits = Limits()
    assert (limits.max_body_bytes, limits.max_messages, limits.max_prompt_chars, limits.max_json_depth) == (
        32 * 1024 * 1024, 1024, 4_000_000, 64)
    assert (limits.max_image_pixels, limits.max_images, limits.max_audio_s, limits.max_audio_clips,
            limits.max_inference_steps) == (2048 * 2048, 8, 120.0, 4, 200)
    assert all(field.description for field in Limits.model_fields.values())


def test_the_app_config_takes_limits_and_refuses_unknown_ones():
    config = AppConfig(models=[{"name": "m", "model": REMOTE}], limits={"max_images": 2})
    assert config.limits.max_images == 2 and config.limits.max_messages == Limits().max_messages
    with pytest.raises(ValueError, match="max_pictures"):
        AppConfig(models=[{"name": "m", "model": REMOTE}], limits={"max_pictures": 2})
    with pytest.raises(ValueError, match="max_images"):
        AppConfig(models=[{"name": "m", "model": REMOTE}], limits={"max_images": 0})


def test_set_limits_and_init_replace_the_limits_of_this_process(monkeypatch):
    assert aimu_ray.set_limits({"max_messages": 5}) == current_limits() == Limits(max_messages=5)
    monkeypatch.setattr(runtime, "ensure_ray", lambda *args, **kwargs: None)      # init without starting Ray
    aimu_ray.init(limits={"max_images": 3})
    assert current_limits() == Limits(max_images=3)
    assert aimu_ray.aio.set_limits(None) == Limits()


def test_the_error_pickles_with_its_limit_and_status():
    error = pickle.loads(pickle.dumps(LimitExceededError("too big", "max_body_bytes", 413)))
    assert (str(error), error.limit, error.status_code) == ("too big", "max_body_bytes", 413)
    assert isinstance(error, ValueError)


def test_a_body_over_the_limit_is_413():
    SMALL.check_body(1000)
    with refused("max_body_bytes", 413):
        SMALL.check_body(1001)


# ----- text: refused before sending, and the conversation keeps nothing of it -----

async def test_messages_over_the_limit_are_refused_and_not_added():
    client = ServedTextClient(REMOTE, Unreachable())
    client.messages = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                       {"role": "user", "content": "c"}]
    with refused("max_messages"):
        await client.chat("d")
    assert len(client.messages) == 3 and client.last_request is None


async def test_prompt_characters_over_the_limit_are_refused_before_any_tokenizer():
    client = ServedTextClient(REMOTE, Unreachable())
    with refused("max_prompt_chars"):
        await client.chat("x" * 101)
    with refused("max_prompt_chars"):
        await client.chat("hi", tools=[tool({"type": "object", "description": "y" * 100})])
    assert client.messages == []


async def test_images_in_a_message_count_against_the_body_not_the_prompt_characters():
    client = ServedTextClient(REMOTE, Recorder())
    await client.chat("describe", images=[png(32, 32)])
    assert len(client.messages[0]["content"][1]["image_url"]["url"]) > SMALL.max_prompt_chars


async def test_tools_nested_deeper_than_the_limit_are_refused():
    client = ServedTextClient(REMOTE, Unreachable())
    with refused("max_json_depth") as caught:
        await client.chat("hi", tools=[tool(nested(400))])
    assert "is 803," in str(caught.value)    # the depth it found: 3 levels of tool, 2 a schema object, 1 the leaf
    with refused("max_json_depth"):          # arguments of a recorded tool call are JSON too
        client.messages = [{"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": nested(10)}}]}]
        await client.chat(None)


class Recorder:
    """A backend that answers every request at once, so a request within the limits is seen to go through."""

    async def call(self, request):
        from aimu_ray.models.wire import ChatResult

        return ChatResult(content="ok")


# ----- images and audio -----

@pytest.mark.parametrize("kwargs, limit", [
    ({"num_images": 3}, "max_images"),
    ({"width": 65, "height": 64}, "max_image_pixels"),
    ({"width": 65}, "max_image_pixels"),                   # a side alone is a square
    ({"reference_image": png(80, 60)}, "max_image_pixels"),
    ({"negative_prompt": "n" * 100}, "max_prompt_chars"),
    ({"num_inference_steps": 11}, "max_inference_steps"),
], ids=["images", "pixels", "one-side", "reference-image", "negative-prompt", "steps"])
async def test_image_requests_over_a_limit_are_refused(kwargs, limit):
    with refused(limit):
        await ServedImageClient("hf:tiny", Unreachable()).generate("a fox", **kwargs)


@pytest.mark.parametrize("kwargs, limit", [
    ({"num_audio": 3}, "max_audio_clips"),
    ({"duration_s": 5.5}, "max_audio_s"),
    ({"num_inference_steps": 11}, "max_inference_steps"),
], ids=["clips", "duration", "steps"])
async def test_audio_requests_over_a_limit_are_refused(kwargs, limit):
    with refused(limit):
        await ServedAudioClient("hf:tiny", Unreachable()).generate("drums", **kwargs)


# ----- the prompt bound the engines use -----

@pytest.fixture(scope="module")
def tokenizers(tiny_hf_dir, smollm2_hf_folder):
    return [AutoTokenizer.from_pretrained(folder) for folder in (tiny_hf_dir, smollm2_hf_folder)]


def test_no_text_makes_fewer_tokens_than_the_bound(tokenizers):
    """The bound holds for the texts a tokenizer packs best: its own longest tokens repeated, runs of spaces,
    special tokens, and random mixes of its vocabulary and of multi-byte characters."""
    rng = random.Random(0)
    for tokenizer in tokenizers:
        longest = longest_token_bytes(tokenizer)
        vocab = [tokenizer.convert_tokens_to_string([piece]) for piece in tokenizer.get_vocab()]
        texts = [max(vocab, key=lambda text: len(text.encode())) * 50, " " * 5000, "<|im_start|>" * 300,
                 *("".join(rng.choices(vocab, k=400)) for _ in range(20)),
                 *("".join(rng.choices("aé€😀 \n", k=2000)) for _ in range(5))]
        for text in texts:
            assert len(tokenizer(text, add_special_tokens=False)["input_ids"]) >= fewest_tokens(text, longest)


def test_the_longest_token_is_read_from_the_vocabulary(tokenizers):
    tiny, smollm2 = tokenizers
    assert longest_token_bytes(tiny) == len("<|endoftext|>".encode())          # an added token is the longest
    assert longest_token_bytes(smollm2) == 81      # "\n" and 80 spaces: byte-level characters count one byte each


def test_tokenizers_that_drop_or_shrink_text_have_no_bound_or_a_weaker_one(tiny_hf_dir):
    def fresh():
        return AutoTokenizer.from_pretrained(tiny_hf_dir)

    dropping = fresh()
    dropping.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Whitespace(), pre_tokenizers.ByteLevel()])
    assert longest_token_bytes(dropping) is None                      # "a   b" and "a b" tokenize alike
    stripping = fresh()
    stripping.backend_tokenizer.normalizer = normalizers.Strip()
    assert longest_token_bytes(stripping) is None
    nfkc = fresh()
    nfkc.backend_tokenizer.normalizer = normalizers.NFKC()
    assert longest_token_bytes(nfkc) == 4 * longest_token_bytes(fresh())   # 𝐀 (4 bytes) becomes A
    eating = fresh()
    eating.add_tokens([AddedToken("<eat>", rstrip=True)])
    assert longest_token_bytes(eating) is None                        # "<eat>" + any run of spaces is one token
