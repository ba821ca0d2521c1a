"""Run a batch: a fixed set of worker coroutines pulling lines, each result appended as it completes.

A fixed set of workers (not a task per line) bounds the requests in flight and keeps a million-line file
from becoming a million tasks; the input is read lazily through a small queue. Every request goes through
the aimu_ray async clients, so it runs on Ray: the shared worker pool or the model's actor.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from tqdm import tqdm

from .lines import LINE_MODELS, AudioLine, BatchLine, ImageLine, InputLine, TextLine, read_lines, unique_ids
from .output import Appender, LineError, LineRecord, drop_failures, recover

LineRequest = Callable[[BatchLine], Awaitable[dict[str, Any]]]
"""Makes one line's request; returns the fields of its successful record (``output`` and, for text, the rest)."""
RequestFactory = Callable[[], LineRequest]
"""Called once per worker before any line is taken, so a bad model string or missing key fails the job at once."""


class BatchSummary(BaseModel):
    total: int          # non-blank input lines
    done_before: int    # skipped: already recorded in the output by an earlier run
    succeeded: int
    failed: int
    elapsed_s: float


class BatchInterrupted(Exception):
    """SIGINT or SIGTERM (``ray job stop``) stopped the job; every line written is whole, a rerun resumes."""


async def run_batch(model: str, input_path, output_path, *, task: str = "text", concurrency: int = 16,
                    output_dir=None, progress: bool = True, retry_failed: bool = False,
                    client_options: dict | None = None) -> BatchSummary:
    """Run every line of the JSONL ``input_path`` through ``model`` and append one record per line to
    ``output_path`` (schemas: ``aimu_ray.batch``).

    At most ``concurrency`` requests are in flight. Rerunning with the same output resumes: lines whose id
    is recorded there are skipped, failures included, so a rerun never repeats a line; ``retry_failed=True``
    first removes the failed records and runs those lines again, so the output keeps one record per id.
    Images and audio are written under ``output_dir`` (default ``<output stem>_files`` beside the output),
    and records carry their absolute paths. ``client_options`` go to the client factory (``api_key``,
    ``base_url``, loader options; for text also ``system``, the default of each line's ``system``).
    """
    if task not in LINE_MODELS:
        raise ValueError(f"Unknown batch task {task!r}: use one of {', '.join(LINE_MODELS)}.")
    output_path = Path(output_path)
    files = Path(output_dir) if output_dir is not None else output_path.with_name(f"{output_path.stem}_files")
    factory = request_factory(task, model, dict(client_options or {}), files.resolve())
    return await process_file(Path(input_path), output_path, LINE_MODELS[task], factory, concurrency=concurrency,
                              progress=progress, retry_failed=retry_failed)


def run_batch_sync(model: str, input_path, output_path, **options) -> BatchSummary:
    """``run_batch`` for a command line. SIGINT and SIGTERM stop it cleanly with ``BatchInterrupted``."""
    from ..cluster.connection import ensure_ray
    ensure_ray()    # connect first: ray.init installs a SIGTERM handler (sys.exit) that would replace ours
    try:
        return asyncio.run(_cancelled_by_sigterm(run_batch(model, input_path, output_path, **options)))
    except (KeyboardInterrupt, asyncio.CancelledError):
        raise BatchInterrupted(f"Stopped; every record in {output_path} is complete. Run the same command "
                               "again to resume.") from None


async def process_file(input_path: Path, output_path: Path, line_model: type[BatchLine], factory: RequestFactory,
                       *, concurrency: int = 16, progress: bool = True, retry_failed: bool = False) -> BatchSummary:
    """The batch itself, given how to make one line's request (the seam the unit tests use)."""
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, got {concurrency}.")
    if input_path.resolve() == output_path.resolve():
        raise ValueError("The output file must not be the input file.")
    started = time.monotonic()
    ids = unique_ids(input_path)
    recorded = recover(output_path)
    if retry_failed:
        recorded = drop_failures(output_path, recorded)
    done_before = len(ids & recorded.keys())
    requests = [factory() for _ in range(concurrency)]
    tally = _Tally(len(ids) - done_before, progress)
    appender = Appender(output_path)
    try:
        await _run_workers(read_lines(input_path, line_model), recorded.keys(), requests, appender, tally)
    finally:
        appender.close()
        tally.close()
    return BatchSummary(total=len(ids), done_before=done_before, succeeded=tally.succeeded, failed=tally.failed,
                        elapsed_s=round(time.monotonic() - started, 3))


async def _run_workers(lines, skip, requests: list[LineRequest], appender: Appender, tally: _Tally) -> None:
    """A feeder and one worker per request function; on any error or cancellation, all of them stop."""
    queue: asyncio.Queue[InputLine | None] = asyncio.Queue(maxsize=2 * len(requests))

    async def feed() -> None:
        for item in lines:
            if item.id not in skip:
                await queue.put(item)
        for _ in requests:
            await queue.put(None)

    async def work(request: LineRequest) -> None:
        while (item := await queue.get()) is not None:
            record = await run_line(item, request)
            appender.write(record)
            tally.add(record.ok)

    tasks = [asyncio.ensure_future(feed()), *(asyncio.ensure_future(work(request)) for request in requests)]
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


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


def request_factory(task: str, model: str, options: dict, files: Path) -> RequestFactory:
    """Text: a client per worker, reset for each line, so no line sees another's conversation.
    Images and audio: one client for all (they keep no state), writing files into ``files``."""
    from .. import aio
    if task == "text":
        system = options.pop("system", None)
        return lambda: text_request(aio.client(model, **options), system)
    client = aio.image_client(model, **options) if task == "image" else aio.audio_client(model, **options)
    request = media_request(client, files)
    return lambda: request


def text_request(client, default_system: str | None) -> LineRequest:
    async def request(line: TextLine) -> dict[str, Any]:
        system = line.system if line.system is not None else default_system
        options = {"generate_kwargs": line.generate_kwargs, "thinking": line.thinking, "tools": line.tools}
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


def media_request(client, files: Path) -> LineRequest:
    async def request(line: ImageLine | AudioLine) -> dict[str, Any]:
        options = line.model_dump(exclude={"id", "prompt"}, exclude_none=True)
        paths = await client.generate(line.prompt, format="path", output_dir=files, **options)
        return {"output": paths if isinstance(paths, list) else [paths]}
    return request


class _Tally:
    """Counts this run's results and shows them on a progress bar (stderr)."""

    def __init__(self, to_do: int, enabled: bool) -> None:
        self.succeeded = self.failed = 0
        interactive = sys.stderr.isatty()
        self._bar = tqdm(total=to_do, desc="batch", unit="line", file=sys.stderr, disable=not enabled,
                         mininterval=0.1 if interactive else 30)   # a job log gets a line every 30 s, not a stream

    def add(self, ok: bool) -> None:
        if ok:
            self.succeeded += 1
        else:
            self.failed += 1
        self._bar.set_postfix(ok=self.succeeded, failed=self.failed, refresh=False)
        self._bar.update()

    def close(self) -> None:
        self._bar.close()


async def _cancelled_by_sigterm(coro):
    """SIGTERM cancels the batch like Ctrl-C does, so it stops taking lines and closes the output."""
    if threading.current_thread() is not threading.main_thread():
        return await coro
    loop, task = asyncio.get_running_loop(), asyncio.current_task()
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        return await coro
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


def _since(started: float) -> float:
    return round(time.monotonic() - started, 3)
