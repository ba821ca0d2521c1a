"""The sync surface: a thin driver over the async client, so no provider or state logic is written twice.

Coroutines run on one background event loop per process. That keeps Ray's async object refs and the
worker pool's caches on a single loop, and lets sync code run inside notebooks whose own loop is busy.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any, AsyncIterator, Iterator

from .text import AsyncTextClient
from .media import AsyncAudioClient, AsyncImageClient

_loop: asyncio.AbstractEventLoop | None = None
_loop_lock = threading.Lock()


def _background_loop() -> asyncio.AbstractEventLoop:
    global _loop
    with _loop_lock:
        if _loop is None:
            _loop = asyncio.new_event_loop()
            threading.Thread(target=_loop.run_forever, name="aimu_ray-loop", daemon=True).start()
        return _loop


def run(coro) -> Any:
    """Run a coroutine on the background loop and wait for it; Ctrl-C cancels it there too."""
    loop = _background_loop()
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        coro.close()
        raise RuntimeError("The sync aimu_ray API was called from its own event loop; use aimu_ray.aio here.")
    future = asyncio.run_coroutine_threadsafe(coro, loop)
    try:
        return future.result()
    except BaseException:
        future.cancel()
        raise


def iterate(agen: AsyncIterator) -> Iterator:
    """Drive an async iterator from sync code; an abandoned loop closes the async side too."""
    try:
        while True:
            try:
                yield run(agen.__anext__())
            except StopAsyncIteration:
                return
    finally:
        aclose = getattr(agen, "aclose", None)
        if aclose is not None:
            run(aclose())


def _answer(coro, stream: bool):
    """Run an async client's call; a stream comes back as a sync iterator."""
    result = run(coro)
    return iterate(result) if stream else result


class _SyncClient:
    """aimu's sync client shape over an async client: the same attributes (shared state), answers not awaitables."""

    _async_class: type

    def __init__(self, model: str, **kwargs):
        object.__setattr__(self, "_async", self._async_class(model, **kwargs))

    @classmethod
    def over(cls, async_client) -> _SyncClient:
        """The sync twin of an async client made elsewhere (``aio.connect``)."""
        client = cls.__new__(cls)
        object.__setattr__(client, "_async", async_client)
        return client

    @property
    def aio(self):
        """The async client behind this one; it shares this client's state."""
        return self._async

    def __getattr__(self, name: str):
        return getattr(self._async, name)

    def __setattr__(self, name: str, value) -> None:
        setattr(self._async, name, value)

    def __deepcopy__(self, memo):
        return self

    def __repr__(self) -> str:
        """The async client's, under this class's name (a served client reads ``TextClient(...)`` too)."""
        return f"{type(self).__name__}({repr(self._async).partition('(')[2]}"


class TextClient(_SyncClient):
    """aimu's sync ``ModelClient``."""

    _async_class = AsyncTextClient

    def chat(self, user_message: str | None = None, generate_kwargs: dict | None = None, use_tools: bool = True,
             stream: bool = False, images: list | None = None, include=None, tools: list | None = None,
             thinking=None, schema=None, audio: list | None = None):
        return _answer(self._async.chat(user_message, generate_kwargs, use_tools, stream, images, include, tools,
                                        thinking, schema, audio), stream)

    def generate(self, prompt: str, generate_kwargs: dict | None = None, stream: bool = False,
                 images: list | None = None, include=None, thinking=None, schema=None, audio: list | None = None):
        return _answer(self._async.generate(prompt, generate_kwargs, stream, images, include, thinking, schema,
                                            audio), stream)


class ImageClient(_SyncClient):
    """aimu's sync ``ImageClient``: ``generate`` returns one image, a list, or an iterator of chunks."""

    _async_class = AsyncImageClient

    def generate(self, prompt: str, *, stream: bool = False, **kwargs):
        return _answer(self._async.generate(prompt, stream=stream, **kwargs), stream)


class AudioClient(_SyncClient):
    """aimu's sync ``AudioClient``: ``generate`` returns one clip, a list, or an iterator of chunks."""

    _async_class = AsyncAudioClient

    def generate(self, prompt: str, *, stream: bool = False, **kwargs):
        return _answer(self._async.generate(prompt, stream=stream, **kwargs), stream)


def sync_twin(async_client) -> _SyncClient:
    """TextClient, ImageClient or AudioClient over ``async_client``, by its class."""
    twin = next(cls for cls in (TextClient, ImageClient, AudioClient) if isinstance(async_client, cls._async_class))
    return twin.over(async_client)
