"""Eviction over a simulated day: 20,000 requests to 30 models on 1 node × 4 GPUs × 80 GB, three policies, one trace.

Models, built as ``ModelNeed``s (GB = 10**9 bytes): text from 1.2 B to 70.6 B parameters at bf16 (2 bytes per
parameter), 8-bit (1.06) and 4-bit (0.56, GGUF or AWQ), each with a KV cache of 10-20 % of its weights; SD 1.5,
SDXL and FLUX.1-dev (33 GB with its T5) as images and MusicGen medium and large (fp16) as audio, with aimu's 15 %
margin. Each model's true use is its estimate × a seeded factor in 0.85-1.25: the "measured use".
Requests: popularity Zipf (s = 1.1) over the models in a seeded order, exponential inter-arrival over 24 h; each
holds its model busy for an exponential time (mean 8 s text, 12 s image, 20 s audio); requests to a model that is
loaded or loading share it. A load takes 1 s per 2 GB of estimate, and the requests that arrive meanwhile wait.
Policies, on the same trace:
  memory  ``place_evicting``: candidates are the loaded models (frees = max(promise, true use), idle time since
          their last request ended, requests in flight); a model is placed by its estimate, or by its true use
          once a load of it held it whole or ran out of memory (the registry feeds the measured peak back as
          ``measured_bytes``; after an OOM, that assumes the actor reports the peak it reached plus the allocation
          that failed). "memory, no OOM feedback" learns only from loads that succeed.
  count   the count rule alone, after Ollama's default limit of 3 loaded models per GPU (Ollama itself also
          checks that a model fits; this row does not): a model goes to the GPU(s) with the most free *estimated*
          memory (a model larger than one GPU spans the fewest that hold it, counted on each) and, when such a GPU
          already holds 3, its least recently used idle model is evicted; memory is never checked
  none    ``place`` with no eviction: a load that does not fit is refused
The ledger counts each loaded model at max(promise, true use): what the registry's promises plus NVML's free memory
amount to. An OOM event is a load after which the true use on one of its GPUs passes 80 GB (any policy): that load
fails, the model is dropped and its request fails (the models it evicted stay evicted); only "memory" learns from
it. Offload tiers size an image model by its components, which ``measured_bytes`` does not change, so nothing is
learned from an offloaded load. A request fails at once when its load is refused, hits OOM, or (count) finds 3
busy models on its GPU: nothing queues for memory.
Left out: keep-alive expiry (a model stays until evicted), several copies of one model, the time an unload takes,
memory fragmentation, compute contention between models sharing a GPU, and RAM limits (512 GB free).
No Ray. Run: python benchmarks/eviction.py [requests] [seed]
"""

from __future__ import annotations

import math
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aimu_ray.cluster import (  # noqa: E402
    GPU, Evictable, Inventory, ModelNeed, Node, Placement, PlacementError, PlacementOptions, place_evicting,
)
from aimu_ray.cluster.eviction import frees_of  # noqa: E402
from aimu_ray.cluster.placement import MEMORY_MARGIN, SEQUENTIAL_FLOOR_BYTES, ReservedKey  # noqa: E402

GB = 10**9
REQUESTS = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
SEED = int(sys.argv[2]) if len(sys.argv) > 2 else 7
DAY_S = 24 * 3600
GPUS, GPU_BYTES = 4, 80 * GB
NODE = "node0"
ZIPF_S = 1.1
BUSY_MEAN_S = {"text": 8.0, "gguf": 8.0, "image": 12.0, "audio": 20.0}
LOAD_BYTES_PER_S = 2 * GB
COUNT_PER_GPU = 3

# name: (parameters in billions, bytes per parameter, kind)
TEXT = {
    "llama-3.2-1b": (1.24, 2, "text"), "qwen2.5-1.5b": (1.54, 2, "text"), "gemma-2-2b": (2.61, 2, "text"),
    "llama-3.2-3b": (3.21, 2, "text"), "phi-3.5-mini": (3.82, 2, "text"), "mistral-7b": (7.25, 2, "text"),
    "qwen2.5-7b": (7.62, 2, "text"), "llama-3.1-8b": (8.03, 2, "text"), "qwen3-8b": (8.19, 2, "text"),
    "gemma-2-9b": (9.24, 2, "text"), "mistral-nemo-12b": (12.2, 2, "text"), "phi-4": (14.7, 2, "text"),
    "qwen2.5-14b": (14.8, 2, "text"), "mistral-small-24b": (23.6, 2, "text"), "gemma-2-27b": (27.2, 2, "text"),
    "qwen2.5-32b": (32.8, 2, "text"), "llama-3.3-70b": (70.6, 2, "text"),
    "llama-3.1-8b-int8": (8.03, 1.06, "text"), "qwen2.5-32b-int8": (32.8, 1.06, "text"),
    "llama-3.3-70b-int8": (70.6, 1.06, "text"),
    "llama-3.1-8b-q4": (8.03, 0.56, "gguf"), "qwen2.5-32b-awq": (32.8, 0.56, "text"),
    "mixtral-8x7b-q4": (46.7, 0.56, "gguf"), "llama-3.3-70b-awq": (70.6, 0.56, "text"),
    "qwen2.5-72b-q4": (72.7, 0.56, "gguf"),
}
# name: (kind, weights GB, largest component GB)
OTHER = {"sd-1.5": ("image", 2.5, 1.7), "sdxl": ("image", 7.0, 5.1), "flux.1-dev": ("image", 33.0, 23.8),
         "musicgen-medium": ("audio", 3.0, 2.2), "musicgen-large": ("audio", 6.6, 4.9)}


@dataclass(frozen=True)
class Model:
    need: ModelNeed
    factor: float                     # true use / estimate

    @property
    def name(self) -> str:
        return self.need.model


@dataclass
class Copy:
    """A loaded (or loading) model: what it holds per slot and when its requests end."""

    model: Model
    holds: dict[ReservedKey, int]     # max(promise, true use): what the ledger counts and what eviction frees
    true: dict[ReservedKey, int]      # what it really holds on each GPU
    ready: float
    ends: list[float] = field(default_factory=list)
    last_end: float = 0.0

    def in_flight(self, now: float) -> int:
        self.ends = [e for e in self.ends if e > now]
        return len(self.ends)


@dataclass
class Stats:
    loads: int = 0
    evictions: int = 0
    waits: list[float] = field(default_factory=list)
    refused: int = 0
    busy: int = 0
    oom: int = 0
    decisions: list[float] = field(default_factory=list)
    big_served: int = 0               # requests served by the models larger than one GPU

    @property
    def failed(self) -> int:
        return self.refused + self.busy + self.oom


Live = dict[str, Copy]
Policy = Callable[[Model, float, Live, Stats], bool]  # loads the model into live (True) or counts why not


def models(rng: random.Random) -> list[Model]:
    needs = []
    for name, (params, per_param, kind) in TEXT.items():
        weights = int(params * per_param * GB)
        needs.append(ModelNeed(model=name, kind=kind, weights_bytes=weights,
                               runtime_bytes=int(weights * rng.uniform(0.10, 0.20)),
                               dtype={2: "bfloat16", 1.06: "int8"}.get(per_param, "4-bit")))
    for name, (kind, weights, largest) in OTHER.items():
        needs.append(ModelNeed(model=name, kind=kind, weights_bytes=int(weights * GB),
                               runtime_bytes=int(weights * (MEMORY_MARGIN - 1) * GB),
                               largest_part_bytes=int(largest * GB), dtype="float16"))
    return [Model(need, rng.uniform(0.85, 1.25)) for need in needs]


def trace(rng: random.Random, pool: list[Model]) -> list[tuple[float, Model, float]]:
    """(arrival s, model, busy s) per request; popularity Zipf over a seeded order of the models."""
    ranked = rng.sample(pool, len(pool))
    weights = [1 / rank**ZIPF_S for rank in range(1, len(ranked) + 1)]
    now, requests = 0.0, []
    for model in rng.choices(ranked, weights, k=REQUESTS):
        now += rng.expovariate(REQUESTS / DAY_S)
        requests.append((now, model, rng.expovariate(1 / BUSY_MEAN_S[model.need.kind])))
    return requests


def cluster() -> Inventory:
    gpus = [GPU(index=i, total_bytes=GPU_BYTES, free_bytes=GPU_BYTES) for i in range(GPUS)]
    return Inventory(nodes=[Node(node_id=NODE, gpus=gpus, ram_total_bytes=1024 * GB, ram_free_bytes=512 * GB)])


def simulate(requests: list[tuple[float, Model, float]], policy: Policy) -> Stats:
    live: Live = {}
    stats = Stats()
    for now, model, busy_s in requests:
        copy = live.get(model.name)
        if copy is None:
            if not policy(model, now, live, stats):
                continue
            copy = live[model.name]
        start = max(now, copy.ready)
        if start > now:
            stats.waits.append(start - now)
        copy.ends.append(start + busy_s)
        copy.last_end = max(copy.last_end, start + busy_s)
        stats.big_served += model.need.total_bytes > GPU_BYTES
    return stats


def load_time(model: Model) -> float:
    return model.need.total_bytes / LOAD_BYTES_PER_S


def overflows(live: Live, true: dict[ReservedKey, int]) -> bool:
    """Would the true use on any GPU the new copy touches pass the GPU's memory?"""
    return any(nbytes + sum(c.true.get(key, 0) for c in live.values()) > GPU_BYTES for key, nbytes in true.items())


# --------------------------------------------------------------------------------------------- policies


def true_use(model: Model, placement: Placement) -> dict[ReservedKey, int]:
    """What the model really holds on each GPU of its placement (offload keeps part of it in RAM)."""
    need = model.need
    on_gpus = {None: need.total_bytes, "model": math.ceil(need.largest_part_bytes * MEMORY_MARGIN),
               "sequential": max(need.runtime_bytes, SEQUENTIAL_FLOOR_BYTES)}[placement.offload] * model.factor
    promised = sum(placement.gpu_bytes.values())
    return {(placement.node_id, i): int(on_gpus * n / promised) for i, n in placement.gpu_bytes.items()}


def by_memory(inventory: Inventory, evict: bool, oom_feedback: bool = True) -> Policy:
    """``place_evicting`` (or, without ``evict``, ``place`` alone) over the live copies, learning true use."""
    measured: dict[str, int] = {}

    def admit(model: Model, now: float, live: Live, stats: Stats) -> bool:
        reserved: dict[ReservedKey, int] = {}
        for copy in live.values():
            for key, nbytes in copy.holds.items():
                reserved[key] = reserved.get(key, 0) + nbytes
        candidates = [Evictable(ident=name, label=name, frees=c.holds, idle_s=now - c.last_end,
                                in_flight=c.in_flight(now)) for name, c in live.items()] if evict else []
        options = PlacementOptions(measured_bytes=measured.get(model.name))
        started = time.perf_counter()
        try:
            plan = place_evicting(model.need, inventory, options, reserved, candidates)
        except PlacementError:
            stats.refused += 1
            return False
        finally:
            stats.decisions.append(time.perf_counter() - started)
        for victim in plan.victims:
            del live[victim.ident]
        stats.evictions += len(plan.victims)
        true = true_use(model, plan.placement)
        oom = overflows(live, true)
        if plan.placement.offload is None and (oom_feedback or not oom):
            measured[model.name] = int(model.need.total_bytes * model.factor)
        if oom:
            stats.oom += 1
            return False
        live[model.name] = Copy(model, frees_of(plan.placement.reservations(), true), true, now + load_time(model))
        stats.loads += 1
        return True

    return admit


def by_count(model: Model, now: float, live: Live, stats: Stats) -> bool:
    """Ollama's rule: at most 3 models per GPU, the GPU with most free estimated memory, LRU idle evicted."""
    estimated = {i: GPU_BYTES for i in range(GPUS)}
    holders: dict[int, list[str]] = {i: [] for i in range(GPUS)}
    for name, copy in live.items():
        for _, i in copy.true:
            estimated[i] -= copy.model.need.total_bytes // len(copy.true)
            holders[i].append(name)
    span = max(1, math.ceil(model.need.total_bytes / GPU_BYTES))
    chosen = sorted(range(GPUS), key=lambda i: (-estimated[i], i))[:span]
    victims = set()
    for i in chosen:
        if len(holders[i]) >= COUNT_PER_GPU and not victims & set(holders[i]):
            idle = [n for n in holders[i] if not live[n].in_flight(now)]
            if not idle:
                stats.busy += 1
                return False
            victims.add(min(idle, key=lambda n: (live[n].last_end, n)))
    for name in victims:
        del live[name]
    stats.evictions += len(victims)
    true = {(NODE, i): int(model.need.total_bytes * model.factor / span) for i in chosen}
    if overflows(live, true):
        stats.oom += 1
        return False
    live[model.name] = Copy(model, true, true, now + load_time(model))
    stats.loads += 1
    return True


# ------------------------------------------------------------------------------------------------- report


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def main() -> None:
    rng = random.Random(SEED)
    pool = models(rng)
    requests = trace(rng, pool)
    inventory = cluster()
    big = [m.name for m in pool if m.need.total_bytes > GPU_BYTES]
    sizes = sorted(m.need.total_bytes for m in pool)
    print(f"cluster: 1 node × {GPUS} GPUs × 80 GB (GB = 10^9 bytes); {len(pool)} models of {sizes[0] / GB:.1f}-"
          f"{sizes[-1] / GB:.0f} GB estimated, {sum(sizes) / GB:.0f} GB together; {len(requests):,} requests over "
          f"24 h, Zipf s={ZIPF_S} (seed {SEED}); loads take 1 s per 2 GB")
    started = time.perf_counter()
    rows = {"memory": simulate(requests, by_memory(inventory, evict=True)),
            "memory, no OOM feedback": simulate(requests, by_memory(inventory, evict=True, oom_feedback=False)),
            "count (3/GPU)": simulate(requests, by_count),
            "no eviction": simulate(requests, by_memory(inventory, evict=False))}
    elapsed = time.perf_counter() - started
    print(f"{'':24} {'loads':>6} {'evictions':>9} {'waited':>7} {'wait p50':>8} {'p95':>6} {'max':>6} "
          f"{'served':>7} {'failed':>7} {'refused':>7} {'busy':>5} {'OOM':>5}")
    for name, s in rows.items():
        print(f"{name:24} {s.loads:>6} {s.evictions:>9} {len(s.waits):>7} {quantile(s.waits, 0.5):>7.1f}s "
              f"{quantile(s.waits, 0.95):>5.1f}s {max(s.waits, default=0):>5.1f}s {len(requests) - s.failed:>7} "
              f"{s.failed:>7} {s.refused:>7} {s.busy:>5} {s.oom:>5}")
    memory, count = rows["memory"], rows["count (3/GPU)"]
    per_served = [s.loads / (len(requests) - s.failed) for s in (memory, count)]
    print(f"loads, memory vs count: {memory.loads / count.loads:.2f}x ({per_served[0]:.2f} vs {per_served[1]:.2f} per "
          f"request served); failed requests {memory.failed} vs {count.failed}; OOM {memory.oom} vs {count.oom}")
    asked = sum(m.need.total_bytes > GPU_BYTES for _, m, _ in requests)
    print(f"larger than one GPU ({', '.join(big)}): {asked} requests; served: "
          + ", ".join(f"{name} {s.big_served}" for name, s in rows.items()))
    decisions = memory.decisions
    print(f"place_evicting: {len(decisions)} decisions, p50 {quantile(decisions, 0.5) * 1000:.2f} ms, "
          f"max {max(decisions) * 1000:.1f} ms; the four simulations took {elapsed:.1f} s")


if __name__ == "__main__":
    main()
