"""Images and audio in the format the caller asked for, and aimu's stream-chunk dicts; caller side.

Engines hand back pixels (HxWx3 uint8) and samples (float32) as numpy arrays; this module, run in
the caller's process, turns them into aimu's formats. It needs no torch; Pillow and soundfile are
imported only when a format needs them.

Two deliberate deviations from aimu (aimu-interface.md §10.2):

- Files keep aimu's name shape ``YYYYmmdd-HHMMSS-<8 hex>.png|.wav``, but the hex digits hash a random
  nonce with the prompt and time, and files are created exclusively: several outputs of one call,
  or two calls in the same second, never overwrite each other.
- The default folder is ``$AIMU_RAY_OUTPUT_DIR/images`` (``/audio``), else ``./output/images``
  (``./output/audio``) under the current directory, instead of aimu's ``site-packages/output``.
"""

from __future__ import annotations

import base64
import hashlib
import importlib
import io
import os
import secrets
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable, NamedTuple

import numpy as np

from .media import AudioClip, AudioProgress, AudioResult, ImageProgress, ImageResult
from .messages import image_url

IMAGE_FORMATS = ("pil", "bytes", "data_url", "path")
AUDIO_FORMATS = ("numpy", "bytes", "data_url", "path")
OUTPUT_DIR_ENV = "AIMU_RAY_OUTPUT_DIR"
URL_TIMEOUT_S = 30.0


class _FileKind(NamedTuple):
    mime: str
    suffix: str
    folder: str


_PNG = _FileKind("image/png", ".png", "images")
_WAV = _FileKind("audio/wav", ".wav", "audio")


def check_format(format: str, formats: tuple[str, ...]) -> None:
    """Refuse an unknown format before anything is generated (``formats``: IMAGE_FORMATS or AUDIO_FORMATS)."""
    if format not in formats:
        raise ValueError(f"Unknown format {format!r}: use one of {', '.join(map(repr, formats))}.")


def encode_image(pixels: np.ndarray, format: str, *, output_dir: str | os.PathLike | None = None,
                 prompt: str = "") -> Any:
    """One image as a PIL image, PNG bytes, a PNG data URL, or the path (str) of a new PNG file."""
    check_format(format, IMAGE_FORMATS)
    image = _to_pil(pixels)
    if format == "pil":
        return image
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return _encode_file(buffer.getvalue(), _PNG, format, output_dir, prompt)


def encode_audio(clip: AudioClip, format: str, *, output_dir: str | os.PathLike | None = None,
                 prompt: str = "") -> Any:
    """One clip as ``(sample_rate, samples)``, WAV bytes, a WAV data URL, or the path (str) of a new WAV file."""
    check_format(format, AUDIO_FORMATS)
    if format == "numpy":
        return clip.sample_rate, clip.samples
    return _encode_file(_wav(clip), _WAV, format, output_dir, prompt)


def image_bytes(value: Any) -> bytes:
    """A reference image as encoded bytes, from any form aimu takes: PIL image, path, bytes, data URL
    or http(s) URL (fetched here, in the caller's process: a server must never fetch what a request names).
    """
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    # image_url turns every other accepted form into an http(s) or data URL (TypeError for the rest),
    # and urllib opens both kinds.
    with urllib.request.urlopen(image_url(value), timeout=URL_TIMEOUT_S) as response:
        return response.read()


# The contents of aimu's stream chunks (aimu-interface.md §5.4, §6.4), to wrap in
# StreamChunk(IMAGE_GENERATING / AUDIO_GENERATING, ...). ``encode`` is encode_image / encode_audio
# with the caller's format, folder and prompt bound.


def image_progress_chunk(item: ImageProgress) -> dict:
    chunk = {"step": item.step, "total_steps": item.total_steps,
             "image": None if item.preview is None else _to_pil(item.preview), "final": False, "result": None}
    if item.image_index is not None:            # Gemini: which of its one-image requests this is
        chunk.update(image_index=item.image_index, num_images=item.num_images)
    return chunk


def image_final_chunks(result: ImageResult, encode: Callable[[np.ndarray], Any]) -> list[dict]:
    """One final chunk per image, numbered within the request."""
    steps, count = result.total_steps, len(result.images)
    return [{"step": steps, "total_steps": steps, "image": _to_pil(pixels), "final": True, "result": encode(pixels),
             "image_index": index, "num_images": count}
            for index, pixels in enumerate(result.images)]


def audio_progress_chunk(item: AudioProgress) -> dict:
    return {"step": item.step, "total_steps": item.total_steps, "final": False, "result": None,
            "duration_s": item.duration_s}


def audio_final_chunks(result: AudioResult, encode: Callable[[AudioClip], Any]) -> list[dict]:
    """One final chunk per clip; unlike images, aimu gives them no index."""
    steps = result.total_steps
    return [{"step": steps, "total_steps": steps, "final": True, "result": encode(clip), "duration_s": clip.duration_s}
            for clip in result.clips]


def _encode_file(data: bytes, kind: _FileKind, format: str, output_dir, prompt: str) -> bytes | str:
    """The formats images and audio share: the file's bytes, a data URL of them, or a new file."""
    if format == "bytes":
        return data
    if format == "data_url":
        return f"data:{kind.mime};base64,{base64.b64encode(data).decode()}"
    folder = Path(output_dir) if output_dir is not None else _default_folder(kind)
    return str(_write_new_file(folder, kind.suffix, prompt, data))


def _default_folder(kind: _FileKind) -> Path:
    return Path(os.environ.get(OUTPUT_DIR_ENV) or Path.cwd() / "output") / kind.folder


def _write_new_file(folder: Path, suffix: str, prompt: str, data: bytes) -> Path:
    """Write ``data`` under a name no file has yet: exclusive creation, a new name on a clash."""
    folder.mkdir(parents=True, exist_ok=True)
    while True:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        digest = hashlib.sha1(f"{prompt}{stamp}{secrets.token_hex(8)}".encode()).hexdigest()[:8]
        path = folder / f"{stamp}-{digest}{suffix}"
        try:
            with path.open("xb") as file:
                file.write(data)
            return path
        except FileExistsError:
            continue


def _to_pil(pixels: np.ndarray):
    return _require("PIL.Image", "pillow").fromarray(np.asarray(pixels))


def _wav(clip: AudioClip) -> bytes:
    """WAV bytes as aimu writes them (soundfile's default subtype); soundfile wants (samples, channels)."""
    samples = clip.samples.T if clip.samples.ndim == 2 else clip.samples
    buffer = io.BytesIO()
    _require("soundfile", "soundfile").write(buffer, samples, clip.sample_rate, format="WAV")
    return buffer.getvalue()


def _require(module: str, package: str):
    """Import an optional dependency, or say which package to install for this format."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(f"This output format needs {package}: pip install {package}") from error
