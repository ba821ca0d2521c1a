"""Latency the model actor adds over calling the engine in this process: SmolLM2-135M, one greedy token.

One request ("hi", max_new_tokens=1, greedy) so that the model's own work is small, three ways:
  engine in-process   HFTextEngine.run in this process, no Ray
  through the actor   backend_for(load).call(request): the path aimu_ray's clients take to the model actor
  bare Ray actor      an empty async actor method taking the same request: Ray's own round-trip floor here
Sequential calls after a warm-up, in alternating blocks of BLOCK calls so drift (others may share this
2-core machine; figures are noisy) hits every path alike. This process's torch is pinned to one thread,
as Ray runs the actor's. Target: the actor path's p50 at most 1 ms above the in-process engine's.
Run: python benchmarks/actor_latency.py [N]
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._loopback import percentile

N = int(sys.argv[1]) if len(sys.argv) > 1 else 200
BLOCK = 50
WARM_UP = 30


async def measure(folder: Path) -> dict[str, list[float]]:
    import ray

    from aimu_ray.backends import backend_for
    from aimu_ray.engines.local.hf_text import HFTextEngine
    from aimu_ray.models.load import Target, load_for
    from aimu_ray.models.wire import ChatRequest

    load = load_for("hf", "text", str(folder), {})
    request = ChatRequest(provider="hf", model=str(folder), messages=[{"role": "user", "content": "hi"}],
                          params={"max_new_tokens": 1, "do_sample": False})
    engine = HFTextEngine(load, Target())
    backend = backend_for(load)

    @ray.remote(num_cpus=0)
    class Bare:
        async def call(self, request):
            return None

    bare = Bare.remote()
    paths = {"engine in-process": lambda: engine.run(request), "through the actor": lambda: backend.call(request),
             "bare Ray actor": lambda: bare.call.remote(request)}
    for call in paths.values():              # loads the actor, warms code paths
        for _ in range(WARM_UP):
            await call()
    times: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(max(1, N // BLOCK)):
        for name, call in paths.items():
            for _ in range(BLOCK):
                start = time.perf_counter()
                await call()
                times[name].append((time.perf_counter() - start) * 1e3)
    await engine.aclose()
    return times


def main() -> None:
    import ray
    import torch

    import aimu_ray
    from aimu_ray.demo.smollm2 import smollm2_hf_dir

    torch.set_num_threads(1)
    folder = smollm2_hf_dir()
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    try:
        times = asyncio.run(measure(folder))
    finally:
        aimu_ray.shutdown()
    p50 = {name: percentile(values, 0.5) for name, values in times.items()}
    print(f"\nLatency of one request to SmolLM2-135M-Instruct, 1 greedy token, {N} sequential calls each (ms)")
    print(f"{'path':<20}{'p50':>8}{'p90':>8}{'added p50':>11}")
    for name, values in times.items():
        print(f"{name:<20}{p50[name]:>8.2f}{percentile(values, 0.9):>8.2f}"
              f"{p50[name] - p50['engine in-process']:>11.2f}")
    added = p50["through the actor"] - p50["engine in-process"]
    print(f"target: the actor path adds <= 1.00 ms at p50 -> {added:.2f} ms; a bare Ray round trip alone "
          f"takes {p50['bare Ray actor']:.2f} ms")


if __name__ == "__main__":
    main()
