"""The main job: the Serve app on an embedded local Ray, called with the openai SDK, offline.

Builds tiny random-weight models on first run (an HF causal LM, a Stable Diffusion pipeline, a MusicGen;
cached after), deploys ``examples/demo.yaml`` (one deployment per model, placed by measured memory, and
the OpenAI-compatible ingress), then calls it the way any OpenAI client would: list the models, chat,
stream, generate an image and a clip; and once more from Python through the deployment handles. The
words, pixels and samples are noise; every layer in between is the real one. ``examples/serve.yaml``
is the same app with real models.

Run: ./run.sh demo   (or: python examples/serve_demo.py)
"""

from __future__ import annotations

import base64
import os
import time
from pathlib import Path

import httpx
import openai
from ray import serve

import aimu_ray
from aimu_ray.demo.servers import free_port
from aimu_ray.demo.tiny_audio import build_tiny_musicgen
from aimu_ray.demo.tiny_image import tiny_sd_dir
from aimu_ray.demo.tiny_models import build_tiny_hf_lm, tiny_model_cache
from aimu_ray.deployments import AppConfig, run

CONFIG = Path(__file__).with_name("demo.yaml")
OUTPUT = Path("output")


def build_models() -> Path:
    cache = tiny_model_cache()
    build_tiny_hf_lm(cache / "tiny-llama-hf")
    tiny_sd_dir()
    build_tiny_musicgen(cache / "tiny-musicgen")
    return cache



def call_over_http(base_url: str) -> None:
    api = openai.OpenAI(base_url=f"{base_url}/v1", api_key="not-needed")
    for card in api.models.list():
        extra = card.model_extra
        print(f"    {card.id:<14} {extra['modality']:<6} {extra['state']:<8} {extra['placement'][0]['reason'][:90]}")

    print("==> chat (openai SDK)")
    reply = api.chat.completions.create(model="tiny-chat", messages=[{"role": "user", "content": "Hello!"}],
                                        max_tokens=16)
    print(f"    {reply.choices[0].message.content!r}  ({reply.usage.completion_tokens} tokens, "
          f"finish: {reply.choices[0].finish_reason})")

    print("==> stream (server-sent events)")
    started, pieces = time.perf_counter(), 0
    for chunk in api.chat.completions.create(model="tiny-chat", messages=[{"role": "user", "content": "Go on."}],
                                             max_tokens=64, stream=True):
        pieces += bool(chunk.choices and chunk.choices[0].delta.content)
    print(f"    {pieces} chunks in {time.perf_counter() - started:.2f} s")

    print("==> image (POST /v1/images/generations)")
    image = api.images.generate(model="tiny-painter", prompt="a watercolor fox", size="64x64",
                                extra_body={"num_inference_steps": 4, "seed": 1})
    png = OUTPUT / "demo-fox.png"
    png.write_bytes(base64.b64decode(image.data[0].b64_json))
    print(f"    {png} ({png.stat().st_size} bytes)")

    print("==> audio (POST /v1/audio/generations, WAV)")
    answer = httpx.post(f"{base_url}/v1/audio/generations", timeout=120,
                        json={"model": "tiny-music", "prompt": "lo-fi drums", "duration_s": 0.5, "seed": 1})
    answer.raise_for_status()
    wav = OUTPUT / "demo-drums.wav"
    wav.write_bytes(answer.content)
    print(f"    {wav} ({wav.stat().st_size} bytes)")


def call_over_handles() -> None:
    print("==> the same app from Python, through its deployment handles (any Ray app or job can)")
    chat = aimu_ray.connect("tiny-chat", system="Be brief.")
    print(f"    {chat.chat('Hi there', generate_kwargs={'max_tokens': 8})!r}; messages: {len(chat.messages)}")


def main() -> None:
    print("==> building the tiny models (cached after the first run)")
    os.environ["AIMU_RAY_DEMO_MODELS"] = str(build_models())
    os.environ.setdefault("AIMU_RAY_DEMO_PORT", str(free_port()))
    config = AppConfig.from_yaml(CONFIG)
    OUTPUT.mkdir(exist_ok=True)
    print("==> starting Ray and the Serve app (first start ~20 s: each model loads in its own replica)")
    started = time.perf_counter()
    aimu_ray.init()
    run(config, access_log=False)
    base_url = f"http://{config.host}:{config.port}"
    print(f"    up in {time.perf_counter() - started:.1f} s at {base_url}/v1")
    try:
        call_over_http(base_url)
        call_over_handles()
        print("==> where the models run (aimu-ray status shows the same)")
        print(aimu_ray.placements())
    finally:
        serve.shutdown()
        aimu_ray.shutdown()


if __name__ == "__main__":
    main()
