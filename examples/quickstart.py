"""The main job: aimu_ray end to end on this machine, offline.

Builds a tiny random-weight model (HF causal LM -> GGUF), serves it with a real
``python -m llama_cpp.server`` on loopback, and talks to it through aimu_ray: a sync conversation, a
stream, and a fan-out of concurrent async conversations through the Ray worker pool. The words are
noise (random weights); every layer in between is the real one. With a key set, point the same code
at a cloud model instead (``anthropic:claude-sonnet-4-6``, ``openai:gpt-4.1``).

Run: ./run.sh demo   (or: python examples/quickstart.py)
"""

from __future__ import annotations

import asyncio
import time

import aimu_ray as aimu
from aimu_ray import aio
from aimu_ray.demo.servers import llama_cpp_server
from aimu_ray.demo.tiny_models import build_tiny_gguf, build_tiny_hf_lm, tiny_model_cache

FAN_OUT = 200


async def fan_out(model: str) -> float:
    """FAN_OUT separate conversations at once, each its own client, as real async code does."""
    clients = [aio.client(model, system="You are tiny.") for _ in range(FAN_OUT)]
    start = time.perf_counter()
    await asyncio.gather(*(c.chat(f"Hello number {i}", generate_kwargs={"max_tokens": 8})
                           for i, c in enumerate(clients)))
    return time.perf_counter() - start


def main() -> None:
    cache = tiny_model_cache()
    print("==> building the tiny model (cached after the first run)")
    hf_dir = build_tiny_hf_lm(cache / "tiny-hf-lm")
    gguf = build_tiny_gguf(hf_dir, cache / "tiny.gguf")

    with llama_cpp_server(gguf) as server:
        print(f"==> llama_cpp.server ready at {server.base_url} in {server.ready_s:.1f}s")
        model = f"llamaserver:{server.model}@{server.base_url}"

        start = time.perf_counter()
        chat = aimu.client(model, system="Be brief.")
        print(f"\n--- sync chat ({model})")
        print("answer:", repr(chat.chat("What is Ray?", generate_kwargs={"max_tokens": 16})))
        print(f"first call, Ray start-up included: {time.perf_counter() - start:.2f}s")
        print("usage:", chat.last_usage, "| stop:", chat.last_stop_reason)

        print("\n--- stream")
        for chunk in chat.chat("And Serve?", stream=True, generate_kwargs={"max_tokens": 16}):
            print(f"  {chunk.phase.value:<10} {chunk.content!r}")
        print("conversation:", [m["role"] for m in chat.messages])

        print(f"\n--- {FAN_OUT} concurrent aio conversations through the worker pool")
        seconds = asyncio.run(fan_out(model))
        print(f"{FAN_OUT} chats in {seconds:.2f}s")

        print("\n--- a bad model string fails clearly")
        try:
            aimu.client("llamaserver")
        except ValueError as error:
            print("ValueError:", error)
    aimu.shutdown()


if __name__ == "__main__":
    main()
