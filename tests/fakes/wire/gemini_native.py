"""Gemini's native ``generateContent``, as its image models (nano banana) answer it.

A request is one ``POST /v1beta/models/{model}:generateContent`` with ``contents`` (the prompt,
maybe a reference image as ``inlineData``) and ``generationConfig.imageConfig``; the key comes in
the ``x-goog-api-key`` header. The answer is one candidate whose parts are an optional text part
(the reply's content) and one base64 PNG. The PNG is a flat colour drawn from the prompt, so tests
can tell requests apart, with the shape of the requested aspect ratio (64 px on its long side).

Scripted replies map onto the image protocol: ``refusal`` blocks the prompt (no candidates, a
``promptFeedback.blockReason``); a ``finish`` other than ``stop`` ends the candidate with that
reason and no image (``content_filter`` is ``IMAGE_SAFETY``, other values go verbatim). Errors are
Google's ``{"error": {"code", "message", "status"}}``; a ``retry_after`` also rides in the body as a
``google.rpc.RetryInfo`` detail, as Google sends it. Image models answer whole, so there is no stream.
"""

from __future__ import annotations

import base64
import hashlib
import io
from typing import Any

from PIL import Image

from tests.fakes.script import CONTEXT_LENGTH_EXCEEDED, Fault, Turn, last_user_text

LONG_SIDE = 64
IMAGE_TOKENS = 1290                      # what Gemini bills for one generated image up to 1024 px
BLOCK_REASON = "PROHIBITED_CONTENT"

_FINISH = {"stop": "STOP", "length": "MAX_TOKENS", "content_filter": "IMAGE_SAFETY"}
_ERRORS = {  # status -> (google.rpc status, message) as the Gemini API sends them
    400: ("INVALID_ARGUMENT", "Request contains an invalid argument."),
    401: ("UNAUTHENTICATED", "API key not valid. Please pass a valid API key."),
    403: ("PERMISSION_DENIED", "The caller does not have permission."),
    404: ("NOT_FOUND", "Model is not found for API version v1beta, or is not supported for generateContent."),
    429: ("RESOURCE_EXHAUSTED", "You exceeded your current quota, please check your plan and billing details."),
    500: ("INTERNAL", "An internal error has occurred. Please retry or report the issue."),
    503: ("UNAVAILABLE", "The model is overloaded. Please try again later."),
}
_CONTEXT_LENGTH = "The input token count exceeds the maximum number of tokens allowed (32768)."


def wants_stream(body: dict[str, Any]) -> bool:
    return False


def complete(turn: Turn) -> dict[str, Any]:
    reply = turn.reply
    usage = _usage(turn, images=0)
    if reply.refusal is not None:
        feedback = {"blockReason": BLOCK_REASON, "blockReasonMessage": reply.refusal}
        return {"promptFeedback": feedback, "usageMetadata": usage}
    parts = [{"text": reply.content}] if reply.content else []
    finish = _FINISH.get(turn.finish, turn.finish)
    if finish == "STOP":
        parts.append({"inlineData": {"mimeType": "image/png", "data": render(turn.body)}})
        usage = _usage(turn, images=1)
    candidate = {"content": {"parts": parts, "role": "model"}, "finishReason": finish, "index": 0}
    return {"candidates": [candidate], "usageMetadata": usage, "responseId": turn.ident("resp-")}


def error(status: int, fault: Fault) -> dict[str, Any]:
    fallback = ("INTERNAL" if status >= 500 else "FAILED_PRECONDITION", f"HTTP {status}")
    rpc_status, message = _ERRORS.get(status, fallback)
    if fault.code == CONTEXT_LENGTH_EXCEEDED:
        message = _CONTEXT_LENGTH
    body: dict[str, Any] = {"code": status, "message": fault.message or message,
                            "status": fault.error_type or rpc_status}
    if fault.retry_after is not None:
        delay = f"{fault.retry_after:g}s"
        body["details"] = [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay}]
    return {"error": body}


def render(body: dict[str, Any]) -> str:
    """The base64 PNG for this request: a colour hashed from the prompt, shaped by ``imageConfig.aspectRatio``."""
    colour = tuple(hashlib.sha256(last_user_text(body).encode()).digest()[:3])
    image_config = (body.get("generationConfig") or {}).get("imageConfig") or {}
    image = Image.new("RGB", size(image_config.get("aspectRatio") or "1:1"), colour)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def size(aspect_ratio: str) -> tuple[int, int]:
    """(width, height) for ``"W:H"`` with the long side ``LONG_SIDE`` pixels."""
    width, height = (float(side) for side in aspect_ratio.split(":"))
    scale = LONG_SIDE / max(width, height)
    return round(width * scale), round(height * scale)


def _usage(turn: Turn, images: int) -> dict[str, Any]:
    output = images * IMAGE_TOKENS
    return {"promptTokenCount": turn.prompt_tokens, "candidatesTokenCount": output,
            "totalTokenCount": turn.prompt_tokens + output}
