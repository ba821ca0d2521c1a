"""How much one request may ask for, checked where its request object is built, before anything is sent.

One request must not be able to take a model (or the ingress) for minutes or gigabytes: a 50 MB prompt was
tokenized whole before the context check, a 9999x9999 image held a pipeline for hours. ``Limits`` bounds
what a request can carry or ask for; the clients check it (so Python callers and the HTTP ingress, which
builds the same clients, share one check), and the ingress also refuses a body over ``max_body_bytes``
before reading it. The limits in force are per process: ``set_limits`` (or ``aimu_ray.init(limits=...)``)
for Python callers, the app config's ``limits:`` for a Serve app's ingress.
"""

from __future__ import annotations

import io
from typing import Any, Iterable, Mapping

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt

from .errors import LimitExceededError
from .media import AudioRequest, ImageRequest

MIB = 1024 * 1024


class Limits(BaseModel):
    """Each limit refuses a request over it with a ``LimitExceededError`` that names it (HTTP 400; the body 413)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_body_bytes: PositiveInt = Field(32 * MIB, description=(
        "32 MiB: a long conversation plus a few data-URL images (a 12 MP photo is ~5 MB as PNG, 4/3 of that in "
        "base64); FastAPI reads a body whole before parsing it, so this is also what one request can hold in "
        "the ingress"))
    max_messages: PositiveInt = Field(1024, description=(
        "a long agent session with tool calls is a few hundred messages; each one is validated and rendered "
        "through the chat template, text or not"))
    max_prompt_chars: PositiveInt = Field(4_000_000, description=(
        "about 1 M tokens at ~4 characters a token, the largest context windows offered today; text (messages, "
        "tools, settings; images aside; image and audio prompts too) is counted before any tokenizer runs, so a "
        "50 MB prompt never reaches one"))
    max_json_depth: PositiveInt = Field(64, description=(
        "tool schemas and arguments nest a few levels (a schema object is two: properties, then the property); "
        "encoding and pickling recurse once a level, and a tool nested 400 deep failed Python's recursion limit"))
    max_image_pixels: PositiveInt = Field(2048 * 2048, description=(
        "2048x2048 = 4.2 MP, four times SDXL's native 1024x1024; a denoising step grows faster than the pixels, "
        "and a step is both what a request queued behind it waits for and when a request whose caller left stops"))
    max_choices: PositiveInt = Field(8, description=(
        "choices of one chat or text completion (``n``, times the prompts of a legacy completion): each one is a "
        "whole generation, run side by side, so n is a multiplier on everything else a request may ask"))
    max_images: PositiveInt = Field(8, description=(
        "the diffusers engine's default batch (max_batch_size 8): one request fills at most one pipeline call"))
    max_audio_s: PositiveFloat = Field(120.0, description=(
        "two minutes, four times MusicGen's 30 s training clips; generation grows with the duration (MusicGen: "
        "50 codec steps a second)"))
    max_audio_clips: PositiveInt = Field(4, description="clips per request: each one is a whole generation")
    max_inference_steps: PositiveInt = Field(200, description=(
        "denoising steps of an image or audio request: SDXL and FLUX use 25-50, AudioLDM2 200 by default; each "
        "step is a full pass of the model, so pixels times steps bound how long a request queued behind holds"))

    def check_body(self, size: int) -> None:
        """A request body of ``size`` bytes (its Content-Length, or what has arrived so far)."""
        self._check("max_body_bytes", size, "The request body in bytes", status=413)

    def check_chat(self, messages: list[dict], tools: list[dict], params: Mapping[str, Any]) -> None:
        """A chat request's messages, tools and generation settings, before it is built and sent."""
        self._check("max_messages", len(messages), "The number of messages")
        depth, chars = _json_shape([*messages, *tools, *params.values()])
        self._check("max_json_depth", depth, "The JSON nesting depth of the messages, tools and settings")
        self._check("max_prompt_chars", chars, "The characters of text in the messages, tools and settings")

    def check_choices(self, count: int) -> None:
        """The choices one completion asks for (``n``, for each of its prompts)."""
        self._check("max_choices", count, "The number of choices asked for")

    def check_image(self, request: ImageRequest) -> None:
        """The images asked for; a side given alone is taken as a square (the pipelines' defaults are)."""
        self._check("max_images", request.num_images, "The number of images asked for")
        self._check("max_prompt_chars", len(request.prompt) + len(request.negative_prompt or ""),
                    "The characters of the prompts")
        width, height = request.width or request.height, request.height or request.width
        if width:
            self._check("max_image_pixels", width * height, f"The pixels of a {width}x{height} image")
        if request.reference_image is not None:
            self._check("max_image_pixels", _pixels(request.reference_image), "The pixels of the reference image")
        self._check_steps(request.num_inference_steps)

    def check_audio(self, request: AudioRequest) -> None:
        self._check("max_audio_clips", request.num_audio, "The number of clips asked for")
        self._check("max_prompt_chars", len(request.prompt), "The characters of the prompt")
        if request.duration_s is not None:
            self._check("max_audio_s", request.duration_s, "The clip duration in seconds")
        self._check_steps(request.num_inference_steps)

    def _check_steps(self, steps: int | None) -> None:
        if steps is not None:
            self._check("max_inference_steps", steps, "The denoising steps asked for")

    def _check(self, name: str, value: float, what: str, status: int = 400) -> None:
        limit = getattr(self, name)
        if value > limit:
            raise LimitExceededError(f"{what} is {value:,}, over the limit {name} ({limit:,}). Limits are set in "
                                     "the app config's `limits:` or with aimu_ray.set_limits().", name, status)


_limits = Limits()


def set_limits(limits: Limits | Mapping[str, Any] | None = None) -> Limits:
    """Make ``limits`` the ones this process's clients check (fields left out take their defaults; None: all
    defaults), and return them. Other processes keep theirs: a Serve app's ingress takes its config's."""
    global _limits
    _limits = limits if isinstance(limits, Limits) else Limits.model_validate(dict(limits or {}))
    return _limits


def current_limits() -> Limits:
    return _limits


def fewest_tokens(text: str, longest_token_bytes: int) -> int:
    """At least this many tokens, whatever the tokenizer does: no token of a vocabulary whose longest stands for
    ``longest_token_bytes`` bytes of text covers more. Past the context, a prompt is refused without tokenizing it."""
    return -(-len(text.encode()) // longest_token_bytes)


def _json_shape(roots: Iterable[Any]) -> tuple[int, int]:
    """(deepest nesting, characters of keys and strings) of JSON-like values, each root at depth 1.

    Walked with a stack, not recursion, so that a value nested thousands deep is measured, not a RecursionError.
    Strings under an ``image_url`` key are left out of the characters: an image's size is the body's business.
    """
    deepest = chars = 0
    stack = [(root, 1, True) for root in roots]
    while stack:
        value, depth, counted = stack.pop()
        if isinstance(value, str):
            chars += len(value) if counted else 0
        elif isinstance(value, dict):
            deepest = max(deepest, depth)
            chars += sum(len(key) for key in value if isinstance(key, str)) if counted else 0
            stack.extend((child, depth + 1, counted and key != "image_url") for key, child in value.items())
        elif isinstance(value, (list, tuple)):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1, counted) for child in value)
    return deepest, chars


def _pixels(image: bytes) -> int:
    """Width x height from the image file's header (nothing is decoded); for a file PIL calls a decompression bomb,
    the least it can be; 0 for what is not an image, which the engine refuses with its own error."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(image)) as opened:
            width, height = opened.size
    except Image.DecompressionBombError:
        return 2 * Image.MAX_IMAGE_PIXELS + 1
    except (OSError, ValueError):
        return 0
    return width * height
