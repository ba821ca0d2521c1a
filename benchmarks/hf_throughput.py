"""HF throughput: 16 concurrent chats on the tiny random-weight Llama, 64 greedy tokens each, 2 cores, no GPU.

Three contenders get the same 16 prompts and the same settings (aimu's HF defaults, greedy, and
min_new_tokens = max_new_tokens = 64, so that every answer is 64 tokens long on every side):
  aimu 0.38   AsyncHuggingFaceClient over a sync HuggingFaceClient (pip install aimu==0.38.0): each call is
              a thread running its own model.generate on the shared weights
  engine      aimu_ray's HFTextEngine in this process, no Ray: what dynamic batching alone gives
  aimu_ray    aio.client("hf:<folder>"): the same engine in a Ray model actor (what the actor hop costs)
Each side is warmed up with one call; then ROUNDS rounds alternate the contenders (drift hits them alike;
others may share this machine, so figures are noisy) and the median wall time counts. Tokens per second
are the tokens the answers hold over the wall time. Ray runs the model actor (num_cpus=0) with torch on one
thread, so this process is pinned to one too and every side computes on one thread (on this tiny model
aimu is faster on one thread than on two). Target: aimu_ray at least 4x aimu's tokens per second.
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
PROMPTS = [f"Question {i}: tell me something about the quick brown fox." for i in range(16)]
GREEDY = {"max_tokens": TOKENS, "min_new_tokens": TOKENS, "do_sample": False}


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
    from aimu_ray.engines.hf_text import HFTextEngine
    from aimu_ray.models.load import Target, load_for
    from aimu_ray.models.wire import ChatRequest

    engine = HFTextEngine(load_for("hf", "text", str(folder), {}), Target())

    async def run(prompts: list[str]) -> int:
        requests = [ChatRequest(provider="hf", model=str(folder), messages=[{"role": "user", "content": p}],
                                params=params) for p in prompts]
        results = await asyncio.gather(*(engine.chat(r) for r in requests))
        return sum(r.usage.output_tokens for r in results)

    return engine, run


async def actor_stats(folder: Path) -> dict:
    from aimu_ray import aio
    from aimu_ray.actors.model_backend import model_backend

    actor = await model_backend(aio.client(f"hf:{folder}")._load).actor()
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


def main() -> None:
    import ray
    import torch

    import aimu_ray
    from aimu_ray.demo.tiny_models import build_tiny_hf_lm, tiny_model_cache

    torch.set_num_threads(1)
    folder = build_tiny_hf_lm(tiny_model_cache() / "tiny-llama-hf")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    try:
        runs, batches = asyncio.run(measure(folder))
    finally:
        aimu_ray.shutdown()
    rate = {name: statistics.median(tokens / wall for wall, tokens in r) for name, r in runs.items()}
    print(f"\n{len(PROMPTS)} concurrent chats x {TOKENS} tokens on the tiny Llama, greedy; "
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


if __name__ == "__main__":
    main()
