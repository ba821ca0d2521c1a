"""One row's request, the same for the JSONL runner and a dataset's workers: a validated line in, the fields of
its record out (``output`` and, for text, thinking, usage, stop reason and tool calls).

The client is what differs: the runner's go through the cluster (the shared pool, the model's copies), a
dataset worker's through the engine it hosts itself.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from .files import Folder, file_stem
from .lines import AudioLine, BatchLine, ImageLine, InputLine, TextLine
from .output import LineError, LineRecord

LineRequest = Callable[[BatchLine], Awaitable[dict[str, Any]]]
"""Makes one line's request; returns the fields of its successful record."""
_SUFFIX = {"image": "png", "audio": "wav"}


def task_client(task: str, model: str, backend=None, **options):
    """The aimu client of ``model`` for ``task`` (validating its string and options); nothing loads until it is
    asked. ``backend`` replaces the one it would get (a dataset worker's own engine)."""
    from .. import aio

    factory = {"text": aio.client, "image": aio.image_client, "audio": aio.audio_client}[task]
    return factory(model, backend=backend, **options)


def text_request(client, default_system: str | None, default_generate_kwargs: dict | None = None) -> LineRequest:
    """Each line on ``client``, reset first, so no line sees another's conversation. A line's own ``system`` and
    ``generate_kwargs`` win over the defaults (the kwargs key by key)."""
    async def request(line: TextLine) -> dict[str, Any]:
        system = line.system if line.system is not None else default_system
        generate_kwargs = {**(default_generate_kwargs or {}), **(line.generate_kwargs or {})} or None
        options = {"generate_kwargs": generate_kwargs, "thinking": line.thinking, "tools": line.tools}
        if line.messages is None:
            client.reset(system)
            content = await client.chat(line.prompt, **options)
        else:
            client.reset(None)
            client.messages = line.messages
            if system is not None:
                client.system_message = system     # rewrites the conversation's system turn, or inserts one
            content = await client.chat(None, **options)
        return {"output": content, "thinking": client.last_thinking, "usage": client.last_usage,
                "stop_reason": client.last_stop_reason, "tool_calls": client.last_tool_calls}
    return request


def media_request(client, task: str, files: Folder) -> LineRequest:
    """Each line's images or clips written into ``files`` as ``<id>-<n>.png`` / ``.wav``: a rerun of a line
    overwrites its own files instead of leaving strays."""
    async def request(line: ImageLine | AudioLine) -> dict[str, Any]:
        options = line.model_dump(exclude={"id", "prompt"}, exclude_none=True)
        made = await client.generate(line.prompt, format="bytes", **options)
        stem = file_stem(line.id)
        paths = [files.write(f"{stem}-{n}.{_SUFFIX[task]}", data)
                 for n, data in enumerate(made if isinstance(made, list) else [made])]
        return {"output": paths}
    return request


async def run_line(item: InputLine, request: LineRequest) -> LineRecord:
    """One line's record: the answer, or the error (an invalid line's, or the request's, typed)."""
    if item.parsed is None:
        return LineRecord(id=item.id, line=item.number, ok=False,
                          error=LineError(type="InvalidLine", message=item.problem or ""))
    started = time.monotonic()
    try:
        fields = await request(item.parsed)
    except Exception as error:  # noqa: BLE001 -- any failure of one line is its record, never the job's end
        return LineRecord(id=item.id, line=item.number, ok=False, elapsed_s=_since(started),
                          error=LineError(type=type(error).__name__, message=str(error) or type(error).__name__))
    return LineRecord(id=item.id, line=item.number, ok=True, elapsed_s=_since(started), **fields)


def _since(started: float) -> float:
    return round(time.monotonic() - started, 3)
