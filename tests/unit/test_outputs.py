"""Caller-side encoding of image and audio outputs: every format round-trips, files never collide."""

from __future__ import annotations

import base64
import functools
import http.server
import io
import re
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from aimu_ray.models.media import AudioClip, AudioProgress, AudioResult, ImageProgress, ImageResult
from aimu_ray.models.outputs import (OUTPUT_DIR_ENV, audio_final_chunks, audio_progress_chunk, encode_audio,
                                     encode_image, image_bytes, image_final_chunks, image_progress_chunk)

NAME = re.compile(r"\d{8}-\d{6}-[0-9a-f]{8}\.(png|wav)")
PIXELS = np.random.default_rng(0).integers(0, 256, (8, 12, 3), dtype=np.uint8)
MONO = AudioClip(sample_rate=16_000, samples=np.sin(np.linspace(0, 100, 1600)).astype(np.float32) * 0.5)
STEREO = AudioClip(sample_rate=24_000, samples=np.stack([MONO.samples, -MONO.samples]))


def decoded_image(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def decoded_wav(data: bytes) -> tuple[np.ndarray, int]:
    samples, rate = sf.read(io.BytesIO(data), dtype="float32")
    return samples, rate


def from_data_url(url: str, mime: str) -> bytes:
    prefix = f"data:{mime};base64,"
    assert url.startswith(prefix)
    return base64.b64decode(url[len(prefix):])


# Images


def test_image_formats_round_trip(tmp_path):
    image = encode_image(PIXELS, "pil")
    assert isinstance(image, Image.Image) and np.array_equal(np.asarray(image), PIXELS)

    png = encode_image(PIXELS, "bytes")
    assert png.startswith(b"\x89PNG") and np.array_equal(decoded_image(png), PIXELS)

    url = encode_image(PIXELS, "data_url")
    assert np.array_equal(decoded_image(from_data_url(url, "image/png")), PIXELS)

    path = encode_image(PIXELS, "path", output_dir=tmp_path / "new", prompt="noise")
    assert isinstance(path, str) and NAME.fullmatch(Path(path).name) and Path(path).parent == tmp_path / "new"
    assert np.array_equal(decoded_image(Path(path).read_bytes()), PIXELS)


def test_outputs_in_the_same_second_get_their_own_files(tmp_path):
    paths = [encode_image(PIXELS, "path", output_dir=tmp_path, prompt="same") for _ in range(5)]
    paths += [encode_audio(MONO, "path", output_dir=tmp_path, prompt="same") for _ in range(5)]
    assert len(set(paths)) == 10 and all(Path(p).is_file() for p in paths)


def test_default_folder_is_under_the_working_directory_or_the_env_var(tmp_path, monkeypatch):
    monkeypatch.delenv(OUTPUT_DIR_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    assert Path(encode_image(PIXELS, "path")).parent == tmp_path / "output" / "images"
    assert Path(encode_audio(MONO, "path")).parent == tmp_path / "output" / "audio"
    monkeypatch.setenv(OUTPUT_DIR_ENV, str(tmp_path / "elsewhere"))
    assert Path(encode_image(PIXELS, "path")).parent == tmp_path / "elsewhere" / "images"


def test_unknown_format_lists_the_formats():
    with pytest.raises(ValueError, match="'pil', 'bytes', 'data_url', 'path'"):
        encode_image(PIXELS, "jpeg")
    with pytest.raises(ValueError, match="'numpy', 'bytes', 'data_url', 'path'"):
        encode_audio(MONO, "mp3")


# Audio


@pytest.mark.parametrize("clip", [MONO, STEREO], ids=["mono", "stereo"])
def test_audio_formats_round_trip(clip, tmp_path):
    rate, samples = encode_audio(clip, "numpy")
    assert rate == clip.sample_rate and samples is clip.samples
    expected = clip.samples.T                              # soundfile reads (samples, channels)
    tolerance = 1 / 2 ** 15                                # WAV's default subtype is 16-bit PCM, as in aimu

    samples, rate = decoded_wav(encode_audio(clip, "bytes"))
    assert rate == clip.sample_rate and samples.shape == expected.shape
    assert np.allclose(samples, expected, atol=tolerance)

    url = encode_audio(clip, "data_url")
    assert np.allclose(decoded_wav(from_data_url(url, "audio/wav"))[0], expected, atol=tolerance)

    path = encode_audio(clip, "path", output_dir=tmp_path, prompt="tone")
    assert NAME.fullmatch(Path(path).name)
    assert np.allclose(decoded_wav(Path(path).read_bytes())[0], expected, atol=tolerance)


# Reference images


@pytest.fixture
def served_png(tmp_path):
    """The PNG of PIXELS at an http URL of a loopback server."""
    (tmp_path / "ref.png").write_bytes(encode_image(PIXELS, "bytes"))
    handler = functools.partial(_QuietHandler, directory=str(tmp_path))
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        yield f"http://127.0.0.1:{server.server_address[1]}/ref.png"
        server.shutdown()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_reference_image_forms_become_encoded_bytes(tmp_path, served_png):
    png = encode_image(PIXELS, "bytes")
    path = tmp_path / "ref.png"
    data_url = encode_image(PIXELS, "data_url")
    forms = [Image.fromarray(PIXELS), str(path), path, png, bytearray(png), data_url, served_png]
    for form in forms:
        assert np.array_equal(decoded_image(image_bytes(form)), PIXELS), type(form)


def test_reference_image_of_another_type_is_a_type_error():
    with pytest.raises(TypeError, match="Unsupported image type ndarray"):
        image_bytes(PIXELS)


# Stream chunks


def test_image_chunks_have_aimus_keys():
    assert image_progress_chunk(ImageProgress(step=1, total_steps=2)) == {
        "step": 1, "total_steps": 2, "image": None, "final": False, "result": None}
    preview = image_progress_chunk(ImageProgress(step=2, total_steps=2, preview=PIXELS))["image"]
    assert isinstance(preview, Image.Image)

    finals = image_final_chunks(ImageResult(images=[PIXELS, PIXELS[::-1]], total_steps=2),
                                lambda pixels: encode_image(pixels, "bytes"))
    assert [{k: v for k, v in chunk.items() if k not in ("image", "result")} for chunk in finals] == [
        {"step": 2, "total_steps": 2, "final": True, "image_index": i, "num_images": 2} for i in range(2)]
    assert list(finals[0]) == ["step", "total_steps", "image", "final", "result", "image_index", "num_images"]
    assert np.array_equal(decoded_image(finals[1]["result"]), PIXELS[::-1])
    assert np.array_equal(np.asarray(finals[1]["image"]), PIXELS[::-1])


def test_gemini_progress_chunks_say_which_image():
    chunk = image_progress_chunk(ImageProgress(step=0, total_steps=1, image_index=1, num_images=3))
    assert (chunk["image_index"], chunk["num_images"]) == (1, 3)


def test_audio_chunks_have_aimus_keys():
    assert audio_progress_chunk(AudioProgress(step=3, total_steps=10, duration_s=0.1)) == {
        "step": 3, "total_steps": 10, "final": False, "result": None, "duration_s": 0.1}
    finals = audio_final_chunks(AudioResult(clips=[MONO, STEREO], total_steps=10),
                                lambda clip: encode_audio(clip, "numpy"))
    assert [chunk["duration_s"] for chunk in finals] == [0.1, 1600 / 24_000]
    assert [list(chunk) for chunk in finals] == [["step", "total_steps", "final", "result", "duration_s"]] * 2
    assert finals[1]["result"][1] is STEREO.samples and finals[1]["step"] == finals[1]["total_steps"] == 10
