"""Every modality's request, answer and stream item as one type each: what engines, hosts and backends take
whatever a model makes (text, images or audio)."""

from __future__ import annotations

from .media import AudioProgress, AudioRequest, AudioResult, ImageProgress, ImageRequest, ImageResult
from .wire import ChatDelta, ChatRequest, ChatResult, TokenCount

Request = ChatRequest | ImageRequest | AudioRequest
Result = ChatResult | ImageResult | AudioResult | TokenCount    # a count (``count_only``) is never streamed
Item = ChatDelta | ImageProgress | AudioProgress | ChatResult | ImageResult | AudioResult   # progress, then the result
