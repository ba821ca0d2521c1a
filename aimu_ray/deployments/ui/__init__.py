"""The dashboard at ``/ui``: plain HTML, CSS and JavaScript shipped in the package (no build step), served by the
ingress. The page holds no data: it reads ``/v1/models``, ``/v1/cluster`` and ``/metrics`` with the user's key."""

from __future__ import annotations

import re
from pathlib import Path

from fastapi import HTTPException
from fastapi.responses import FileResponse

FOLDER = Path(__file__).parent
ASSET = re.compile(r"^[a-z]+\.(html|js|css)$")
MEDIA_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
               ".css": "text/css; charset=utf-8"}
HEADERS = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff",
           # the page's own files only; generated images and clips arrive as data: URLs or from /v1/files
           "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; media-src 'self' data:; "
                                      "object-src 'none'; base-uri 'none'; frame-ancestors 'none'"}


def asset(name: str) -> FileResponse:
    """One of the dashboard's files by its bare name; any other name (a path, another suffix) is a 404."""
    path = FOLDER / name
    if not ASSET.fullmatch(name) or not path.is_file():
        raise HTTPException(404, "No such file.")
    return FileResponse(path, media_type=MEDIA_TYPES[path.suffix], headers=HEADERS)
