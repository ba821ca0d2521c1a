"""The Ray of a running ``aimu-ray serve``: recorded in a file while it runs, so the other ``aimu-ray`` commands
join it (``ray.init`` cannot find an embedded Ray started by another process)."""

from __future__ import annotations

import getpass
import logging
import os
import tempfile
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Iterator

import psutil
from pydantic import BaseModel, Field

logger = logging.getLogger("aimu_ray")


class ServedRay(BaseModel):
    """The Ray of a running ``aimu-ray serve``, as it records itself for the other ``aimu-ray`` commands."""

    address: str
    pid: int
    started: float = Field(description="the process's start time: a pid reused by another process is not it")
    app: str
    url: str

    def alive(self) -> bool:
        try:
            return psutil.Process(self.pid).create_time() == self.started
        except psutil.Error:
            return False


def served_rays_dir() -> Path:
    """Where the records are: the temp dir (``$TMPDIR``), one folder per user (its uid, or its name on Windows)."""
    return Path(tempfile.gettempdir()) / f"aimu_ray-serve-{getattr(os, 'getuid', getpass.getuser)()}"


@contextmanager
def recording_served_ray(address: str, app: str, url: str) -> Iterator[None]:
    """While the block runs, a file names this process's Ray, so other commands join it instead of starting one."""
    me = psutil.Process()
    record = ServedRay(address=address, pid=me.pid, started=me.create_time(), app=app, url=url)
    path = served_rays_dir() / f"{me.pid}.json"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(record.model_dump_json())
    except OSError as error:
        logger.warning("Other aimu-ray commands will not find this Ray (%s): give them --address %s.",
                       error, record.address)
    try:
        yield
    finally:
        with suppress(OSError):                   # never written, or removed already
            path.unlink()


def served_ray() -> ServedRay | None:
    """The most recently started ``aimu-ray serve`` still running, if any (a killed one leaves a stale file)."""
    live = []
    for path in served_rays_dir().glob("*.json"):
        try:
            record = ServedRay.model_validate_json(path.read_text())
        except (OSError, ValueError):
            continue                                     # being written, or not ours
        if record.alive():
            live.append(record)
    return max(live, key=lambda record: record.started, default=None)
