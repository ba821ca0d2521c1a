"""Generated images and clips handed out as URLs: one small deployment keeps them, so that every ingress replica,
on any node, serves a URL for as long as it lives.

The files sit in the config's ``output_dir`` on the ``Files`` replica's node, under unguessable names. The ingress
puts a file through the deployment's handle and gets it back the same way, so the bytes cross Ray's object store:
fine for images and clips (kilobytes to a few MB; the app's ``limits`` bound what one request makes), not meant
for files of hundreds of MB.

The rule (``to_delete``, a pure function): a file lives ``files_ttl_s`` after it was written (its mtime), then it
goes; and the folder's files hold at most ``files_max_bytes``: over it, the oldest go first. The replica applies it
when it starts (to what an earlier run left), before each write, and every ``min(files_ttl_s, SWEEP_S)`` seconds;
a get checks the age itself, so an expired name is a 404 before any sweep. A replica started again on the same
node finds the files it had (their ages from their mtimes); one started on another node finds none unless
``output_dir`` is storage every node shares, and the URLs handed out before answer 404.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import secrets
import stat
import threading
import time
from pathlib import Path
from typing import Iterable, NamedTuple

from ray import serve
from ray.serve.handle import DeploymentHandle

from ..models.errors import LimitExceededError

logger = logging.getLogger("aimu_ray")
FILES = "files"                # the deployment's name
FILE_NAME = re.compile(r"^[A-Za-z0-9_-]{20,64}\.(png|wav)$")
MEDIA_TYPES = {"png": "image/png", "wav": "audio/wav"}
SWEEP_S = 60.0                 # the longest wait between sweeps


class Stored(NamedTuple):
    """One file of the folder, as the rule sees it."""

    name: str
    size: int
    mtime: float


def expired(mtime: float, now: float, ttl_s: float) -> bool:
    return now - mtime >= ttl_s


def to_delete(files: Iterable[Stored], now: float, ttl_s: float, max_bytes: int, room: int = 0) -> list[str]:
    """The names that go: every file ``ttl_s`` old or more; then, oldest first (by mtime, then name), files until
    the rest and ``room`` more bytes fit in ``max_bytes``."""
    files = sorted(files, key=lambda file: (file.mtime, file.name))
    kept = [file for file in files if not expired(file.mtime, now, ttl_s)]
    gone = [file.name for file in files if expired(file.mtime, now, ttl_s)]
    total = room + sum(file.size for file in kept)
    for file in kept:
        if total <= max_bytes:
            break
        gone.append(file.name)
        total -= file.size
    return gone


def by_reference(handle: DeploymentHandle | None) -> DeploymentHandle | None:
    """The files deployment's handle with the bytes through Ray's object store, not inline in a gRPC message (Serve's
    fast path sends handle calls over gRPC, bounded by ``cluster.connection.GRPC_MESSAGE_BYTES``): files are the
    largest payloads the app moves."""
    return handle.options(_by_reference=True) if handle is not None else None


def media_type(name: str) -> str:
    return MEDIA_TYPES[name.rpartition(".")[2]]


class FileStore:
    """The folder and its rule, without Ray (the deployment runs these calls in threads). Only names this store
    could have made are read or deleted: anything else in the folder is left alone."""

    def __init__(self, folder: Path, ttl_s: float, max_bytes: int) -> None:
        self.folder = folder.resolve()
        self.folder.mkdir(parents=True, exist_ok=True)
        self._ttl_s, self._max_bytes = ttl_s, max_bytes
        self._lock = threading.Lock()          # a sweep and the write it makes room for are one step

    def put(self, data: bytes, suffix: str) -> str:
        """Write ``data`` under a new unguessable name (after making room for it); returns the name."""
        if suffix not in MEDIA_TYPES:
            raise ValueError(f"files are {', '.join(MEDIA_TYPES)}, not {suffix!r}")
        if len(data) > self._max_bytes:
            raise LimitExceededError(f"A generated file of {len(data)} bytes is over the app's files_max_bytes "
                                     f"({self._max_bytes}): ask for response_format 'b64_json'.", "files_max_bytes")
        name = f"{secrets.token_urlsafe(24)}.{suffix}"
        with self._lock:
            self._sweep(room=len(data))
            (self.folder / name).write_bytes(data)
        return name

    def get(self, name: str) -> bytes | None:
        """A file's bytes; None for a name it never made, one gone, or one expired (even if no sweep took it yet)."""
        if not FILE_NAME.fullmatch(name):
            return None
        path = self.folder / name
        try:
            info = path.lstat()
            if not stat.S_ISREG(info.st_mode) or expired(info.st_mtime, time.time(), self._ttl_s):
                return None
            return path.read_bytes()
        except FileNotFoundError:               # never made, or swept meanwhile
            return None

    def sweep(self) -> list[str]:
        """Apply the rule now; returns the names deleted."""
        with self._lock:
            return self._sweep(room=0)

    def _sweep(self, room: int) -> list[str]:
        gone = to_delete(self._files(), time.time(), self._ttl_s, self._max_bytes, room)
        for name in gone:
            (self.folder / name).unlink(missing_ok=True)
        return gone

    def _files(self) -> list[Stored]:
        found = []
        with os.scandir(self.folder) as entries:
            for entry in entries:
                try:
                    if FILE_NAME.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
                        info = entry.stat(follow_symlinks=False)
                        found.append(Stored(entry.name, info.st_size, info.st_mtime))
                except FileNotFoundError:       # deleted since the listing (another app sharing the folder)
                    pass
        return found


@serve.deployment(name=FILES)
class Files:
    """The app's files, for every ingress replica: ``put`` a generated file, ``get`` it by name. One replica."""

    async def __init__(self, folder: Path, ttl_s: float, max_bytes: int) -> None:
        self._store = FileStore(folder, ttl_s, max_bytes)
        gone = await asyncio.to_thread(self._store.sweep)            # what an earlier run left
        if gone:
            logger.info("files: deleted %d expired files an earlier run left in %s", len(gone), self._store.folder)
        self._sweeper = asyncio.create_task(self._sweep_every(min(ttl_s, SWEEP_S)))

    async def put(self, data: bytes, suffix: str) -> str:
        return await asyncio.to_thread(self._store.put, data, suffix)

    async def get(self, name: str) -> bytes | None:
        return await asyncio.to_thread(self._store.get, name)

    async def _sweep_every(self, period_s: float) -> None:
        while True:
            await asyncio.sleep(period_s)
            try:
                await asyncio.to_thread(self._store.sweep)
            except OSError as error:                                  # the next sweep tries again
                logger.warning("files: sweeping %s failed: %s", self._store.folder, error)
