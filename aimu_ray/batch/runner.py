"""Run a batch: a fixed set of worker coroutines pulling lines, each result appended as it completes.

A fixed set of workers (not a task per line) bounds the requests in flight and keeps a million-line file
from becoming a million tasks; the input is read lazily through a small queue. Every request goes through
the aimu_ray async clients, so it runs on Ray: the shared worker pool or the model's actor.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel
from tqdm import tqdm

from .. import aio
from ..clients.loaded_models import copies_that_fit
from ..models.load import ModelLoad
from .files import Folder
from .lines import LINE_MODELS, BatchLine, InputLine, read_lines, unique_ids
from .output import Appender, LineRecord, drop_failures, recover
from .requests import LineRequest, media_request, run_line, task_client, text_request

logger = logging.getLogger("aimu_ray")
RequestFactory = Callable[[], LineRequest]
"""Called once per worker before any line is taken, so a bad model string or missing key fails the job at once."""


class BatchSummary(BaseModel):
    """What a run did, printed at its end (both batch paths)."""

    total: int          # input lines (rows): this run's and those an earlier run recorded
    done_before: int    # skipped: already recorded in the output by an earlier run
    succeeded: int
    failed: int
    output_tokens: int = 0   # the tokens this run's text answers hold
    replicas: int | None = None   # the copies an in-process model ran as, when the run chose them
    elapsed_s: float
    rows_per_s: float = 0.0  # this run's lines (rows) per second


class BatchInterrupted(Exception):
    """SIGINT or SIGTERM (``ray job stop``) stopped the job; every line written is whole, a rerun resumes."""


async def run_batch(model: str, input_path, output_path, *, task: str = "text", concurrency: int = 16,
                    output_dir=None, progress: bool = True, retry_failed: bool = False,
                    client_options: dict | None = None, generate_kwargs: dict | None = None) -> BatchSummary:
    """Run every line of the JSONL ``input_path`` through ``model`` and append one record per line to
    ``output_path`` (schemas: ``aimu_ray.batch``).

    At most ``concurrency`` requests are in flight. Rerunning with the same output resumes: lines whose id
    is recorded there are skipped, failures included, so a rerun never repeats a line; ``retry_failed=True``
    first removes the failed records and runs those lines again, so the output keeps one record per id.
    Images and audio are written under ``output_dir`` (default ``<output stem>_files`` beside the output),
    and records carry their absolute paths. ``client_options`` go to the client factory (``api_key``,
    ``base_url``, loader options; for text also ``system``, the default of each line's ``system``).
    ``generate_kwargs`` are every text line's (a line's own win key by key).
    """
    if task not in LINE_MODELS:
        raise ValueError(f"Unknown batch task {task!r}: use one of {', '.join(LINE_MODELS)}.")
    output_path = Path(output_path)
    files = Folder(output_dir if output_dir is not None else output_path.with_name(f"{output_path.stem}_files"))
    options = dict(client_options or {})
    started_copies = await auto_replicas(task, model, options)
    factory = request_factory(task, model, options, files, generate_kwargs)
    try:
        summary = await process_file(Path(input_path), output_path, LINE_MODELS[task], factory,
                                     concurrency=concurrency, progress=progress, retry_failed=retry_failed)
        return summary.model_copy(update={"replicas": options.get("replicas")})
    finally:
        if started_copies is not None:          # the GPUs it took go back at once, not after the keep-alive
            await aio.unload(started_copies.key())


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
    elapsed = time.monotonic() - started
    return BatchSummary(total=len(ids), done_before=done_before, succeeded=tally.succeeded, failed=tally.failed,
                        output_tokens=tally.tokens, elapsed_s=round(elapsed, 3),
                        rows_per_s=round((tally.succeeded + tally.failed) / elapsed, 2) if elapsed else 0.0)


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
            tally.add(record)

    tasks = [asyncio.ensure_future(feed()), *(asyncio.ensure_future(work(request)) for request in requests)]
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def request_factory(task: str, model: str, options: dict, files: Folder,
                    generate_kwargs: dict | None = None) -> RequestFactory:
    """Text: a client per worker, reset for each line, so no line sees another's conversation.
    Images and audio: one client for all (they keep no state), writing files into ``files``."""
    if task == "text":
        system = options.pop("system", None)
        return lambda: text_request(task_client(task, model, **options), system, generate_kwargs)
    request = media_request(task_client(task, model, **options), task, files)
    return lambda: request


async def auto_replicas(task: str, model: str, options: dict) -> ModelLoad | None:
    """``replicas="auto"`` in ``options`` becomes as many copies as fit in free GPU memory now (at least one).
    Returns the model's load when none of its copies ran before, so the batch releases them at its end."""
    if options.get("replicas") != "auto":
        return None
    probe = {key: value for key, value in options.items() if key not in ("replicas", "system")}
    load = task_client(task, model, **probe).model_load
    if load is None:
        raise ValueError(f"replicas='auto' is for in-process models (hf:, llamacpp:); {model} runs at its provider.")
    ran_before = any(row.key == load.key() for row in await aio.placements())
    options["replicas"] = await copies_that_fit(load)
    logger.info("%s: %d copies fit in free GPU memory now", load.label(), options["replicas"])
    return None if ran_before else load


class _Tally:
    """Counts this run's results and shows them on a progress bar (stderr)."""

    def __init__(self, to_do: int, enabled: bool) -> None:
        self.succeeded = self.failed = self.tokens = 0
        interactive = sys.stderr.isatty()
        self._bar = tqdm(total=to_do, desc="batch", unit="line", file=sys.stderr, disable=not enabled,
                         mininterval=0.1 if interactive else 30)   # a job log gets a line every 30 s, not a stream

    def add(self, record: LineRecord) -> None:
        if record.ok:
            self.succeeded += 1
        else:
            self.failed += 1
        self.tokens += (record.usage or {}).get("output_tokens", 0)
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

