"""The sync surface: a thin driver over the async client, so no provider or state logic is written twice.

Coroutines run on one background event loop per process. That keeps Ray's async object refs and the
worker pool's caches on a single loop, and lets sync code run inside notebooks whose own loop is busy.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any, AsyncIterator, Iterator

from .client import AsyncTextClient

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


class TextClient:
    """aimu's sync ``ModelClient`` shape: the same attributes, answers instead of awaitables."""

    def __init__(self, model: str, **kwargs):
        object.__setattr__(self, "_async", AsyncTextClient(model, **kwargs))

    def chat(self, user_message: str | None = None, generate_kwargs: dict | None = None, use_tools: bool = True,
             stream: bool = False, images: list | None = None, include=None, tools: list | None = None,
             thinking=None):
        result = run(self._async.chat(user_message, generate_kwargs, use_tools, stream, images, include, tools,
                                      thinking))
        return iterate(result) if stream else result

    def generate(self, prompt: str, generate_kwargs: dict | None = None, stream: bool = False,
                 images: list | None = None, include=None, thinking=None):
        result = run(self._async.generate(prompt, generate_kwargs, stream, images, include, thinking))
        return iterate(result) if stream else result

    @property
    def aio(self) -> AsyncTextClient:
        """The async client behind this one; it shares this client's state."""
        return self._async

    def __getattr__(self, name: str):
        return getattr(self._async, name)

    def __setattr__(self, name: str, value) -> None:
        setattr(self._async, name, value)

    def __deepcopy__(self, memo):
        return self

    def __repr__(self) -> str:
        return repr(self._async).replace("AsyncTextClient", "TextClient", 1)
