"""Placement packing: 100 model loads, one after another, on a simulated 4 nodes × 8 GPUs × 80 GB cluster.

Some GPUs hold memory for processes outside Ray (seeded). Each load goes through ``place`` with the
bytes promised by earlier loads passed as ``reserved``. Compared against:
  FFD          first-fit decreasing over the same models, sorted by size, into bins of each GPU's free
               memory: an offline bound a one-at-a-time policy cannot beat by much (single-GPU items only)
  one-per-GPU  every model takes a whole GPU, as Ray's integer ``num_gpus=1`` would do
Over-commit (bytes promised on a GPU beyond its free memory) must be 0. No Ray; runs in well under a second.
Run: python benchmarks/placement.py [seed]
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aimu_ray.cluster import GPU, GPUProcess, Inventory, ModelNeed, Node, PlacementError, place, reserve  # noqa: E402

GB = 10**9
SEED = int(sys.argv[1]) if len(sys.argv) > 1 else 7
CONTEXT_TOKENS = 8192

# name: (parameters in billions, layers, KV heads, head dim): bf16 weights plus a KV cache for 8k tokens
TEXT = {"1B": (1.2, 16, 8, 64), "3B": (3.2, 28, 8, 128), "7B": (7.2, 32, 8, 128), "8B": (8.0, 32, 8, 128),
        "13B": (13.0, 40, 40, 128), "32B": (32.8, 64, 8, 128), "70B": (70.6, 80, 8, 128)}
# name: (kind, weights GB, largest component GB); runtime is aimu's 15 % margin
OTHER = {"sd-1.5": ("image", 2.5, 1.7), "sdxl": ("image", 7.0, 5.1), "flux-schnell": ("image", 24.0, 23.8),
         "flux-dev": ("image", 33.0, 23.8), "musicgen-small": ("audio", 1.2, 0.9),
         "musicgen-medium": ("audio", 6.0, 4.5), "musicgen-large": ("audio", 13.0, 9.8)}


def text_need(name: str) -> ModelNeed:
    params, layers, kv_heads, head_dim = TEXT[name]
    kv_cache = 2 * layers * kv_heads * head_dim * 2 * CONTEXT_TOKENS  # keys and values, bf16
    return ModelNeed(model=f"llm-{name}", kind="text", weights_bytes=int(params * 2 * GB), runtime_bytes=kv_cache)


def other_need(name: str) -> ModelNeed:
    kind, weights, largest = OTHER[name]
    return ModelNeed(model=name, kind=kind, weights_bytes=int(weights * GB), runtime_bytes=int(weights * 0.15 * GB),
                     largest_part_bytes=int(largest * GB))


def cluster(rng: random.Random) -> Inventory:
    """4 × 8 × 80 GB; a quarter of the GPUs hold 2–30 GB for a foreign process."""
    nodes = []
    for n in range(4):
        gpus = []
        for i in range(8):
            held = rng.randint(2, 30) * GB if rng.random() < 0.25 else 0
            processes = [GPUProcess(pid=1000 + 8 * n + i, used_bytes=held, name="foreign")] if held else []
            gpus.append(GPU(index=i, total_bytes=80 * GB, free_bytes=80 * GB - held, used_bytes=held,
                            processes=processes))
        nodes.append(Node(node_id=f"node{n}", gpus=gpus, ram_total_bytes=1024 * GB, ram_free_bytes=900 * GB))
    return Inventory(nodes=nodes)


def workload(rng: random.Random, n: int = 100) -> list[ModelNeed]:
    """Mostly small and mid-size text models, some large ones, images and music in between."""
    names = [("text", k) for k in TEXT] + [("other", k) for k in OTHER]
    weights = [6, 8, 10, 8, 5, 3, 2] + [5, 5, 3, 3, 4, 4, 3]
    return [text_need(k) if kind == "text" else other_need(k) for kind, k in rng.choices(names, weights, k=n)]


def run_policy(inv: Inventory, needs: list[ModelNeed]) -> dict:
    reserved: dict = {}
    placed, packed, failed = 0, 0, 0
    start = time.perf_counter()
    for need in needs:
        try:
            p = place(need, inv, reserved=reserved)
        except PlacementError:
            failed += 1
            continue
        reserved = reserve(reserved, p)
        placed += 1
        packed += need.total_bytes if p.offload is None else sum(p.gpu_bytes.values())
    elapsed = time.perf_counter() - start
    gpus = {(n.node_id, g.index): g.free_bytes for n in inv.nodes for g in n.gpus}
    over = sum(reserved.get(key, 0) > free for key, free in gpus.items())
    used = sum(reserved.get(key, 0) > 0 for key in gpus)
    return dict(placed=placed, packed=packed, used=used, over=over, failed=failed, seconds=elapsed)


def first_fit_decreasing(inv: Inventory, needs: list[ModelNeed]) -> dict:
    bins = [g.free_bytes for n in inv.nodes for g in n.gpus]
    left, placed, packed = list(bins), 0, 0
    for size in sorted((need.total_bytes for need in needs), reverse=True):
        slot = next((i for i, free in enumerate(left) if free >= size), None)
        if slot is not None:
            left[slot] -= size
            placed, packed = placed + 1, packed + size
    return dict(placed=placed, packed=packed, used=sum(a != b for a, b in zip(left, bins)), over=0)


def one_per_gpu(inv: Inventory, needs: list[ModelNeed]) -> dict:
    free = sorted(g.free_bytes for n in inv.nodes for g in n.gpus)
    placed, packed = 0, 0
    for need in needs:  # arrival order; each takes the smallest whole GPU that holds it
        slot = next((i for i, f in enumerate(free) if f >= need.total_bytes), None)
        if slot is not None:
            free.pop(slot)
            placed, packed = placed + 1, packed + need.total_bytes
    return dict(placed=placed, packed=packed, used=placed, over=0)


def main() -> None:
    rng = random.Random(SEED)
    inv = cluster(rng)
    needs = workload(rng)
    free = sum(g.free_bytes for n in inv.nodes for g in n.gpus)
    demand = sum(n.total_bytes for n in needs)
    print(f"cluster: 4 nodes × 8 GPUs × 80 GB, {free / GB:.0f} GB free after foreign processes; "
          f"{len(needs)} loads asking {demand / GB:.0f} GB (seed {SEED})")
    rows = {"place()": run_policy(inv, needs), "FFD bound": first_fit_decreasing(inv, needs),
            "one-per-GPU": one_per_gpu(inv, needs)}
    ours = rows["place()"]
    print(f"{'':12} {'placed':>7} {'VRAM packed':>12} {'GPUs used':>10} {'over-commit':>12} {'placed vs ours':>15}")
    for name, r in rows.items():
        print(f"{name:12} {r['placed']:>7} {r['packed'] / free:>11.1%} {r['used']:>10} {r['over']:>12} "
              f"{r['placed'] / ours['placed']:>14.2f}x")
    print(f"place() vs FFD: {ours['placed'] / rows['FFD bound']['placed']:.2f}x models, "
          f"{ours['packed'] / rows['FFD bound']['packed']:.2f}x bytes; vs one-per-GPU: "
          f"{ours['placed'] / rows['one-per-GPU']['placed']:.2f}x models")
    print(f"place(): {ours['failed']} loads refused, {ours['seconds'] * 1000:.0f} ms for {len(needs)} decisions, "
          f"over-commit {ours['over']}")


if __name__ == "__main__":
    main()
