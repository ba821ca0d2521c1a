"""``audio=`` input as aimu takes it: bytes, data URLs, paths and URLs (fetched here) become OpenAI ``input_audio``
blocks; a model without audio input refuses them in aimu's words, and Ollama's wire refuses them too."""

from __future__ import annotations

import base64
import http.server
import threading

import pytest

from aimu_ray import aio
from aimu_ray.models.messages import audio_block, user_message
from tests.unit.engine_kit import Direct

pytest_plugins = ["tests.fakes.fixtures"]

WAV = b"RIFF\x24\x00\x00\x00WAVEfmt "


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture
def served_clip(tmp_path):
    """A loopback HTTP server holding one MP3 file (the bytes do not matter: they travel as they are)."""
    (tmp_path / "clip.mp3").write_bytes(b"ID3mp3")
    handler = lambda *a: http.server.SimpleHTTPRequestHandler(*a, directory=str(tmp_path))  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/clip.mp3?x=1"
    server.shutdown()


def test_every_kind_of_clip_becomes_an_input_audio_block(tmp_path, served_clip):
    (tmp_path / "a.flac").write_bytes(b"fLaC")
    assert audio_block(WAV) == {"type": "input_audio", "input_audio": {"data": b64(WAV), "format": "wav"}}
    assert audio_block(f"data:audio/mp3;base64,{b64(b'mp3')}")["input_audio"] == {"data": b64(b"mp3"), "format": "mp3"}
    assert audio_block(f"data:audio/x-weird;base64,{b64(b'?')}")["input_audio"]["format"] == "wav"
    assert audio_block(tmp_path / "a.flac")["input_audio"] == {"data": b64(b"fLaC"), "format": "flac"}
    assert audio_block(str(tmp_path / "a.flac"))["input_audio"]["format"] == "flac"
    assert audio_block(served_clip)["input_audio"] == {"data": b64(b"ID3mp3"), "format": "mp3"}
    with pytest.raises(ValueError, match="not a file"):
        audio_block(str(tmp_path / "missing.wav"))
    with pytest.raises(TypeError, match="Unsupported audio input type: int"):
        audio_block(3)
    with pytest.raises(ValueError, match="mutually exclusive"):
        user_message("x", images=[WAV], audio=[WAV])


async def test_an_audio_model_sends_input_audio_blocks(fake):
    client = aio.client(f"vllm:m@{fake.url}/v1;audio", backend=Direct())
    await client.chat("What is said?", audio=[WAV])
    content = fake.requests[-1].body["messages"][-1]["content"]
    assert content == [{"type": "text", "text": "What is said?"},
                       {"type": "input_audio", "input_audio": {"data": b64(WAV), "format": "wav"}}]
    assert client.messages[-2]["content"][1]["type"] == "input_audio"        # kept in the history, as aimu keeps it


async def test_a_model_without_audio_input_refuses_it_in_aimus_words():
    client = aio.client("vllm:m@http://127.0.0.1:9/v1", backend=Direct())
    with pytest.raises(ValueError, match="Model m does not support audio input. Use a model with supports_audio=True"):
        await client.generate("x", audio=[WAV])
    assert client.messages == []
    ollama = aio.client("ollama:qwen3:8b;audio", backend=Direct())
    with pytest.raises(ValueError, match="Ollama models take no audio input"):
        await ollama.chat("x", audio=[WAV])
