"""Gemini image generation ("nano banana") through the native google-genai SDK, async.

Gemini draws one image per request, so ``num_images=N`` is N requests in a row, as in aimu; a stream
announces each request (``step=0`` of 1) before sending it and ends with the ``ImageResult``. Every
request goes through the retry loop and error translation the chat engines use; the SDK's own retries
are off so that ours, which honour the server's retry hints, are the only ones.
"""

from __future__ import annotations

import importlib
import io
from functools import partial
from types import MappingProxyType, ModuleType
from typing import Any, AsyncIterator

import numpy as np

from ...models.errors import MissingAPIKeyError, ProviderResponseError, redact
from ...models.media import ImageProgress, ImageRequest, ImageResult
from ...models.providers import PROVIDERS
from ...models.wire import Endpoint
from .errors import malformed_reply, translate
from .base import secret
from ..base import with_retries

ALIASES = MappingProxyType({
    "nano-banana": "gemini-2.5-flash-image",
    "nano-banana-preview": "gemini-2.5-flash-image-preview",
})
IMAGE_OPTIONS = ("aspect_ratio", "image_size")       # the request options that go into ImageConfig
API_VERSION = "v1beta"      # where the image models and ImageConfig live; newer SDKs default to v1
_OPENAI_PATH = "/v1beta/openai"
_INLINE_FORMATS = frozenset({"PNG", "JPEG", "WEBP"})  # reference formats Gemini takes as they are


def resolve_gemini_image_model(model_id: str) -> str:
    """The real model id behind aimu's aliases (``nano-banana`` → ``gemini-2.5-flash-image``); others unchanged."""
    return ALIASES.get(model_id, model_id)


def native_base_url(url: str | None) -> str | None:
    """The API root the SDK wants. ``gemini`` endpoints point at the OpenAI-compatible path, which chat uses."""
    if url is None:
        return None
    return url.rstrip("/").removesuffix(_OPENAI_PATH)


class GeminiImageEngine:
    """Text, and optionally a reference image, to images with one SDK client per endpoint."""

    def __init__(self, endpoint: Endpoint):
        genai = _import_sdk()
        key = secret(endpoint)
        if not key:
            raise MissingAPIKeyError(f"Gemini image models need an API key: set "
                                     f"{PROVIDERS['gemini'].api_key_env} or pass api_key=.")
        self._endpoint = endpoint
        self._client = genai.Client(api_key=key, http_options=genai.types.HttpOptions(
            base_url=native_base_url(endpoint.base_url), api_version=API_VERSION,
            timeout=round(endpoint.timeout * 1000),                   # milliseconds
            retry_options=genai.types.HttpRetryOptions(attempts=1)))  # also stops its hidden reconnect-and-retry

    async def run(self, request: ImageRequest) -> ImageResult:
        """The stream's last item: one path for both, so they cannot differ."""
        return [item async for item in self.stream(request)][-1]

    async def stream(self, request: ImageRequest) -> AsyncIterator[ImageProgress | ImageResult]:
        request = request.model_copy(update={"model": resolve_gemini_image_model(request.model),
                                             "endpoint": request.endpoint or self._endpoint})
        attempt = partial(self._attempt, _call_kwargs(request), request)   # bad input fails here, unsent
        images: list[np.ndarray] = []
        for index in range(request.num_images):
            yield ImageProgress(step=0, total_steps=1, image_index=index, num_images=request.num_images)
            images.append(await with_retries(attempt, request.endpoint.max_retries))
        yield ImageResult(images=images)

    async def aclose(self) -> None:
        await self._client.aio.aclose()
        self._client.close()

    async def _attempt(self, kwargs: dict[str, Any], request: ImageRequest) -> np.ndarray:
        """One request. The typed error is raised outside ``except``: chained, the SDK error would carry the key."""
        try:
            response = await self._client.aio.models.generate_content(**kwargs)
        except Exception as error:
            failure = translate(error, request)
        else:
            return _first_image(response, request)
        raise failure


def _import_sdk() -> ModuleType:
    """google.genai when an engine is built, not with this module; pillow too, so that decoding cannot fail late."""
    try:
        importlib.import_module("PIL.Image")
        return importlib.import_module("google.genai")
    except ImportError as error:
        raise ImportError(f"Gemini image models need the '{error.name}' package: "
                          "pip install 'aimu_ray[gemini]' pillow") from error


def _call_kwargs(request: ImageRequest) -> dict[str, Any]:
    """``generate_content`` arguments: aimu's contents and config; seed, size and steps have no Gemini field."""
    from google.genai import types

    if request.negative_prompt:
        raise ValueError("Gemini image models take no negative_prompt: say what to leave out in the prompt.")
    image_config = {key: request.options[key] for key in IMAGE_OPTIONS if request.options.get(key)}
    config = types.GenerateContentConfig(response_modalities=["IMAGE"],
                                         image_config=types.ImageConfig(**image_config) if image_config else None)
    return {"model": request.model, "contents": _contents(request), "config": config}


def _contents(request: ImageRequest) -> list:
    from google.genai import types

    if request.reference_image is None:
        return [request.prompt]
    parts = [types.Part.from_text(text=request.prompt), _reference_part(request.reference_image)]
    return [types.Content(role="user", parts=parts)]


def _reference_part(data: bytes):
    """The reference image as inline data: PNG, JPEG and WebP as given, anything else PIL reads as PNG."""
    from google.genai import types
    from PIL import Image

    try:
        image = Image.open(io.BytesIO(data))
    except (OSError, SyntaxError, ValueError):
        raise ValueError("reference_image is not an image file (PNG, JPEG, WebP, ...) that PIL can read.") from None
    if image.format in _INLINE_FORMATS:
        return types.Part.from_bytes(data=data, mime_type=Image.MIME[image.format])
    buffer = io.BytesIO()
    image.convert("RGBA").save(buffer, format="PNG")
    return types.Part.from_bytes(data=buffer.getvalue(), mime_type="image/png")


def _first_image(response: Any, request: ImageRequest) -> np.ndarray:
    """The first inline image of the answer as HxWx3 uint8 (a text part often comes before it)."""
    for part in response.parts or []:
        blob = part.inline_data
        if blob is not None and blob.data and (blob.mime_type or "").startswith("image/"):
            return _decode(blob.data, request)
    raise _no_image(response, request)


def _decode(data: bytes, request: ImageRequest) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            return np.array(image.convert("RGB"))
    except (OSError, SyntaxError, ValueError):
        raise malformed_reply(request, "its image part is not a readable image") from None


def _no_image(response: Any, request: ImageRequest) -> ProviderResponseError:
    """Gemini answered without an image: it blocked the prompt or stopped early, and says which."""
    reasons = []
    feedback = response.prompt_feedback
    if feedback is not None and feedback.block_reason is not None:
        said = f" ({feedback.block_reason_message})" if feedback.block_reason_message else ""
        reasons.append(f"prompt_feedback.block_reason={_name(feedback.block_reason)}{said}")
    for candidate in (response.candidates or [])[:1]:
        if candidate.finish_reason is not None:
            reasons.append(f"finish_reason={_name(candidate.finish_reason)}")
    text = " ".join(part.text for part in response.parts or [] if part.text)
    if text:
        reasons.append(f"the model said: {text!r}")
    why = "; ".join(reasons) or "no prompt_feedback or finish reason given"
    message = (f"{request.provider} model {request.model} returned no image ({why}). If the prompt was blocked, "
               "rephrase it; otherwise try again.")
    return ProviderResponseError(redact(message, secret(request.endpoint)), provider=request.provider)


def _name(value: Any) -> str:
    """An SDK enum's wire name; values the SDK does not know arrive as plain strings."""
    return str(getattr(value, "value", value))
