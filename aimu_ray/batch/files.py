"""A folder on any filesystem pyarrow opens (a local path, ``s3://``, ``gs://``, ``hdfs://``, …), as a batch
writes to it: the images and clips of media rows, and the data files of a dataset's output.

Paths stay what the user would open: an absolute local path, or the URI as given.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from pyarrow import fs as pafs

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class Folder:
    """One folder: ``write`` a named file into it, list its data ``files``, ``delete`` one."""

    def __init__(self, location: str | os.PathLike) -> None:
        location = str(location)
        if "://" in location:
            self.fs, self.path = pafs.FileSystem.from_uri(location)
            self._scheme = location.split("://", 1)[0]
        else:
            self.fs, self.path = pafs.LocalFileSystem(), str(Path(location).expanduser().resolve())
            self._scheme = ""
        self.path = self.path.rstrip("/")
        self.uri = self.location(self.path)
        self._made = False

    def __repr__(self) -> str:
        return f"Folder({self.uri!r})"

    def location(self, path: str) -> str:
        """``path`` (on this filesystem) as the user names it."""
        return f"{self._scheme}://{path}" if self._scheme else path

    def beside(self, suffix: str) -> Folder:
        """The sibling folder named like this one plus ``suffix`` (``out`` → ``out_files``)."""
        return Folder(self.location(self.path + suffix))

    def exists(self) -> bool:
        return self.fs.get_file_info(self.path).type != pafs.FileType.NotFound

    def is_file(self) -> bool:
        return self.fs.get_file_info(self.path).type == pafs.FileType.File

    def write(self, name: str, data: bytes) -> str:
        """Write ``data`` as ``name`` in the folder (made on first use); returns where it went."""
        if not self._made:
            self.fs.create_dir(self.path, recursive=True)
            self._made = True
        path = f"{self.path}/{name}"
        with self.fs.open_output_stream(path) as stream:
            stream.write(data)
        return self.location(path)

    def files(self) -> list[str]:
        """The data files under the folder, sorted; names starting with ``.`` or ``_`` (markers, temporaries) are not
        data. A file given as the location is its own one file."""
        info = self.fs.get_file_info(self.path)
        if info.type == pafs.FileType.File:
            return [self.path]
        if info.type == pafs.FileType.NotFound:
            return []
        found = self.fs.get_file_info(pafs.FileSelector(self.path, recursive=True))
        return sorted(f.path for f in found if f.type == pafs.FileType.File
                      and not Path(f.path).name.startswith((".", "_")))

    def delete(self, path: str) -> None:
        self.fs.delete_file(path)


def file_stem(row_id: str) -> str:
    """A file name stem for a row id: the id itself when it is a safe name, else its safe part and a short digest
    (so ``a/b`` and ``a_b`` never share a file)."""
    safe = _UNSAFE.sub("_", row_id)[:80] or "row"
    if safe == row_id:
        return safe
    return f"{safe}-{hashlib.sha256(row_id.encode()).hexdigest()[:8]}"
