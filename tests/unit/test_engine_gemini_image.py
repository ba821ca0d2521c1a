"""GeminiImageEngine (google-genai, async) against the loopback fake of Gemini's native generateContent."""

from __future__ import annotations

import base64
import io
import logging
import pickle
import sys

import aiohttp
import numpy as np
import pytest
from google.genai import errors as genai_errors
from PIL import Image

from aimu_ray.engines.remote.errors import translate
from aimu_ray.engines.remote.gemini_image import GeminiImageEngine, native_base_url, resolve_gemini_image_model
from aimu_ray.models import Endpoint, ModelTimeoutError, ProviderError, RateLimitError
from aimu_ray.models.errors import ConnectionDroppedError, MissingAPIKeyError, ProviderResponseError, UpstreamError
from aimu_ray.models.media import ImageProgress, ImageRequest, ImageResult

pytest_plugins = ["tests.fakes.fixtures"]

KEY = "AIza-test-gemini-image-7c41e9"
PROMPT = "a red fox in the snow"
PATH = "/v1beta/models/gemini-2.5-flash-image:generateContent"


def image_request(url: str, *, max_retries: int = 0, timeout: float = 10.0, **fields) -> ImageRequest:
    fields.setdefault("prompt", PROMPT)
    fields.setdefault("model", "nano-banana")
    return ImageRequest(provider="gemini", **fields,
                        endpoint=Endpoint(base_url=url, api_key=KEY, max_retries=max_retries, timeout=timeout))


async def items_of(request: ImageRequest) -> list[ImageProgress | ImageResult]:
    """Every item of one stream on a fresh engine."""
    engine = GeminiImageEngine(request.endpoint)
    try:
        return [item async for item in engine.stream(request)]
    finally:
        await engine.aclose()


async def generate(request: ImageRequest) -> ImageResult:
    engine = GeminiImageEngine(request.endpoint)
    try:
        return await engine.run(request)
    finally:
        await engine.aclose()


async def failure(request: ImageRequest) -> Exception:
    with pytest.raises(Exception) as caught:
        await generate(request)
    return caught.value


def png(colour: tuple[int, int, int], size: tuple[int, int] = (4, 3), format: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format=format)
    return buffer.getvalue()


# -- answers -----------------------------------------------------------------------------------------------

async def test_a_prompt_gives_one_image_from_one_request(fake):
    result = await generate(image_request(fake.url))

    [image] = result.images
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8
    [sent] = fake.requests
    assert sent.path == PATH
    assert sent.body == {"contents": [{"parts": [{"text": PROMPT}], "role": "user"}],
                         "generationConfig": {"responseModalities": ["IMAGE"]}}
    key_sent = sent.headers.get("x-goog-api-key") == KEY        # compared, never shown
    assert key_sent


async def test_the_image_is_the_one_drawn_for_this_prompt(fake):
    fox, owl = [(await generate(image_request(fake.url, prompt=p))).images[0] for p in (PROMPT, "an owl at night")]

    assert not np.array_equal(fox, owl)
    assert np.array_equal(fox, (await generate(image_request(fake.url))).images[0])


async def test_num_images_is_one_request_per_image(fake):
    result = await generate(image_request(fake.url, num_images=3))

    assert len(result.images) == 3 and all(image.shape == (64, 64, 3) for image in result.images)
    assert [r.path for r in fake.requests] == [PATH] * 3


async def test_aspect_ratio_and_image_size_reach_the_request_and_nothing_else_does(fake):
    options = {"aspect_ratio": "16:9", "image_size": "2K", "person_generation": "ALLOW_ADULT"}
    request = image_request(fake.url, options=options, seed=7, width=512, height=512, num_inference_steps=30)

    result = await generate(request)

    assert fake.requests[0].body["generationConfig"] == {
        "responseModalities": ["IMAGE"], "imageConfig": {"aspectRatio": "16:9", "imageSize": "2K"}}
    assert result.images[0].shape == (36, 64, 3)                 # the fake draws the ratio it was asked for


@pytest.mark.parametrize("format, mime_type, sent_as_given", [
    ("PNG", "image/png", True), ("JPEG", "image/jpeg", True), ("BMP", "image/png", False)])
async def test_a_reference_image_goes_inline_after_the_prompt(fake, format, mime_type, sent_as_given):
    reference = png((10, 200, 30), format=format)

    await generate(image_request(fake.url, reference_image=reference))

    [content] = fake.requests[0].body["contents"]
    text, inline = content["parts"]
    blob = inline["inlineData"]
    assert content["role"] == "user" and text == {"text": PROMPT}
    assert blob.get("mimeType", blob.get("mime_type")) == mime_type     # proto JSON takes both; the SDK sends this
    sent = base64.urlsafe_b64decode(blob["data"] + "=" * (-len(blob["data"]) % 4))   # also URL-safe, unpadded
    assert (sent == reference) is sent_as_given
    assert Image.open(io.BytesIO(sent)).convert("RGB").getpixel((0, 0)) == (10, 200, 30)


async def test_stream_announces_each_request_before_sending_it_then_the_result(fake):
    request = image_request(fake.url, num_images=2)
    engine = GeminiImageEngine(request.endpoint)
    seen = []
    try:
        async for item in engine.stream(request):
            seen.append((item, len(fake.requests)))
    finally:
        await engine.aclose()

    (first, sent_before_first), (second, sent_before_second), (result, sent) = seen
    assert (first.step, first.total_steps, first.image_index, first.num_images, sent_before_first) == (0, 1, 0, 2, 0)
    assert (second.step, second.image_index, second.num_images, sent_before_second) == (0, 1, 2, 1)
    assert isinstance(result, ImageResult) and len(result.images) == 2 and sent == 2


async def test_the_openai_compatible_base_url_of_the_gemini_provider_works_too(fake):
    result = await generate(image_request(fake.url + "/v1beta/openai/"))

    assert len(result.images) == 1 and fake.requests[0].path == PATH


@pytest.mark.parametrize("url, root", [
    ("https://generativelanguage.googleapis.com/v1beta/openai/", "https://generativelanguage.googleapis.com"),
    ("http://127.0.0.1:9/", "http://127.0.0.1:9"), (None, None)])
def test_native_base_url(url, root):
    assert native_base_url(url) == root


@pytest.mark.parametrize("model_id, real_id", [
    ("nano-banana", "gemini-2.5-flash-image"),
    ("nano-banana-preview", "gemini-2.5-flash-image-preview"),
    ("gemini-3-pro-image-preview", "gemini-3-pro-image-preview")])
def test_aliases_resolve_to_real_ids(model_id, real_id):
    assert resolve_gemini_image_model(model_id) == real_id


# -- bad input: typed, before any request --------------------------------------------------------------------

@pytest.mark.parametrize("streaming", [False, True])
async def test_a_negative_prompt_is_refused_before_any_request(fake, streaming):
    request = image_request(fake.url, negative_prompt="blurry")

    with pytest.raises(ValueError, match="negative_prompt"):
        await (items_of(request) if streaming else generate(request))
    assert fake.requests == []


async def test_a_reference_that_is_no_image_is_refused_before_any_request(fake):
    with pytest.raises(ValueError, match="reference_image"):
        await generate(image_request(fake.url, reference_image=b"not an image"))
    assert fake.requests == []


def test_a_missing_sdk_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "google.genai", None)

    with pytest.raises(ImportError, match=r"'google.genai' package: pip install 'aimu_ray\[gemini\]'"):
        GeminiImageEngine(Endpoint(base_url="http://127.0.0.1:9", api_key=KEY))


def test_an_endpoint_without_a_key_is_refused():
    with pytest.raises(MissingAPIKeyError, match="GOOGLE_API_KEY"):
        GeminiImageEngine(Endpoint(base_url="http://127.0.0.1:9"))


# -- failures ------------------------------------------------------------------------------------------------

async def test_429_is_retried_after_the_servers_hint_then_succeeds(fake, fast_backoff, caplog):
    fake.fault(status=429, retry_after=0.05)

    result = await generate(image_request(fake.url, max_retries=2))

    assert len(result.images) == 1 and len(fake.requests) == 2
    assert "RateLimitError; retry 1/2 in 0.05s" in caplog.text


async def test_a_rate_limit_that_outlasts_the_retries_is_typed(fake, fast_backoff):
    for _ in range(2):
        fake.fault(status=429, retry_after=0.01)

    error = await failure(image_request(fake.url, max_retries=1))

    assert type(error) is RateLimitError and error.status_code == 429 and error.retry_after == 0.01
    assert "quota" in str(error) and len(fake.requests) == 2


def test_the_retry_delay_in_googles_error_body_is_honoured():
    """Gemini's 429 names its wait in a google.rpc.RetryInfo detail, often with no Retry-After header."""
    detail = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "12.5s"}
    sdk_error = genai_errors.ClientError(429, {"error": {"code": 429, "message": "Quota exceeded.",
                                                         "status": "RESOURCE_EXHAUSTED", "details": [detail]}})

    error = translate(sdk_error, image_request("http://127.0.0.1:9"))

    assert isinstance(error, RateLimitError) and error.retry_after == 12.5


async def test_500_is_retried_then_succeeds(fake, fast_backoff):
    fake.fault(status=500)

    result = await generate(image_request(fake.url, max_retries=1))

    assert len(result.images) == 1 and len(fake.requests) == 2


async def test_400_is_a_provider_error_and_not_retried(fake):
    fake.fault(status=400, message='Invalid JSON payload received. Unknown name "frobnicate".')

    error = await failure(image_request(fake.url, max_retries=3))

    assert type(error) is ProviderError and error.status_code == 400 and len(fake.requests) == 1
    assert "frobnicate" in str(error) and "Check the request parameters" in str(error)


async def test_a_slow_answer_times_out(fake):
    fake.fault(delay_s=0.5)

    error = await failure(image_request(fake.url, timeout=0.1))

    assert isinstance(error, ModelTimeoutError) and "gemini" in str(error)


async def test_a_malformed_body_is_a_response_error_and_not_retried(fake):
    fake.fault(malformed=True)

    error = await failure(image_request(fake.url, max_retries=2))

    assert isinstance(error, ProviderResponseError) and len(fake.requests) == 1


def test_a_connection_the_server_closed_is_a_dropped_connection():
    """aiohttp, google-genai's transport, reports a closed kept-alive connection this way; it is retried."""
    error = translate(aiohttp.ServerDisconnectedError(), image_request("http://127.0.0.1:9"))

    assert isinstance(error, ConnectionDroppedError)


@pytest.mark.parametrize("reply, reason", [
    ({"refusal": "The prompt asks for a real person."},
     "prompt_feedback.block_reason=PROHIBITED_CONTENT (The prompt asks for a real person.)"),
    ({"content": "I can't draw that.", "finish": "IMAGE_SAFETY"}, "finish_reason=IMAGE_SAFETY"),
])
async def test_no_image_is_a_response_error_that_says_why(fake, reply, reason):
    fake.reply(**reply)

    error = await failure(image_request(fake.url, max_retries=2))

    assert type(error) is ProviderResponseError and reason in str(error) and len(fake.requests) == 1


@pytest.mark.parametrize("status", [400, 401, 429, 500, None])
async def test_the_key_never_leaks_even_when_the_server_echoes_it(fake, caplog, fast_backoff, status):
    caplog.set_level(logging.DEBUG)
    echo = f"API key not valid: {KEY}"
    for _ in range(2):
        if status is None:
            fake.reply(refusal=echo)
        else:
            fake.fault(status=status, message=echo, retry_after=0.01)

    error = await failure(image_request(fake.url, max_retries=1))

    assert isinstance(error, ProviderError) and "***" in str(error)
    assert error.__context__ is None
    texts = (str(error), repr(error), str(error.__cause__), repr(error.__cause__), caplog.text)
    leaked = [KEY in text for text in texts] + [KEY.encode() in pickle.dumps(error)]
    assert not any(leaked)                         # booleans only: a failure must not print the key
    assert error.__cause__ is None or isinstance(error.__cause__, UpstreamError)
