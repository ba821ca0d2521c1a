"""Latency aimu_ray adds over a direct SDK call, against a loopback OpenAI-compatible server that answers at once.

All paths run in this process, in alternating blocks of BLOCK calls so drift hits them alike (call-by-call
interleaving would leave the pool's worker idle between its calls, and an idle worker is ~1 ms slower to
wake here, which no steady caller sees). Target: aimu_ray's p50 at most 1.5 ms above the direct call.
Run: python benchmarks/remote_latency.py [N]
"""

from __future__ import annotations

import asyncio
import sys
import time

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent.parent))

from benchmarks._loopback import loopback_server, percentile  # noqa: E402

N = int(sys.argv[1]) if len(sys.argv) > 1 else 400
MESSAGES = [{"role": "user", "content": "hi"}]
BLOCK = 50


def bare_actor(url: str):
    """The least any Ray-actor design pays: one async actor making the same SDK call, nothing else."""
    import ray

    @ray.remote(num_cpus=0)
    class BareSDKActor:
        def __init__(self):
            import openai

            self.client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="bench", max_retries=0)

        async def call(self):
            await self.client.chat.completions.create(model="bench", messages=MESSAGES, max_tokens=16)

    return BareSDKActor.options(max_concurrency=1000).remote()


async def measure(url: str) -> dict[str, list[float]]:
    import openai

    import aimu_ray
    from aimu_ray import aio

    aimu_ray.init()
    direct = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="bench", max_retries=0)
    client = aio.client(f"openai-compat:bench@{url}/v1")
    actor = bare_actor(url)

    async def call_direct():
        await direct.chat.completions.create(model="bench", messages=MESSAGES, max_tokens=16)

    async def call_direct_stream():
        stream = await direct.chat.completions.create(model="bench", messages=MESSAGES, max_tokens=16, stream=True,
                                                      stream_options={"include_usage": True})
        async for _ in stream:
            pass

    async def call_bare_actor():
        await actor.call.remote()

    async def call_aimu_ray():
        await client.generate("hi", generate_kwargs={"max_tokens": 16})

    async def call_stream():
        async for _ in await client.generate("hi", stream=True, generate_kwargs={"max_tokens": 16}):
            pass

    paths = {"direct SDK": call_direct, "bare Ray actor + SDK": call_bare_actor, "aimu_ray aio": call_aimu_ray,
             "direct SDK stream": call_direct_stream, "aimu_ray aio stream": call_stream}
    for fn in paths.values():           # warm up connections, the pool and code paths
        for _ in range(30):
            await fn()
    times: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(max(1, N // BLOCK)):
        for name, fn in paths.items():
            for _ in range(BLOCK):
                start = time.perf_counter()
                await fn()
                times[name].append((time.perf_counter() - start) * 1e3)
    return times


def measure_sync(url: str) -> list[float]:
    import aimu_ray

    client = aimu_ray.client(f"openai-compat:bench@{url}/v1")
    for _ in range(30):
        client.generate("hi", generate_kwargs={"max_tokens": 16})
    out = []
    for _ in range(N):
        start = time.perf_counter()
        client.generate("hi", generate_kwargs={"max_tokens": 16})
        out.append((time.perf_counter() - start) * 1e3)
    return out


def main() -> None:
    with loopback_server(delay_s=0.0) as url:
        times = asyncio.run(measure(url))
        times["aimu_ray sync"] = measure_sync(url)
    baseline = {name: "direct SDK stream" if "stream" in name else "direct SDK" for name in times}
    print(f"\nLatency over {N} calls each, loopback server answering at once (ms); streams against a direct stream")
    print(f"{'path':<22}{'p50':>8}{'p90':>8}{'p99':>8}{'added p50':>11}{'ratio':>8}")
    for name, values in times.items():
        p50, base = percentile(values, 0.5), percentile(times[baseline[name]], 0.5)
        print(f"{name:<22}{p50:>8.2f}{percentile(values, 0.9):>8.2f}{percentile(values, 0.99):>8.2f}"
              f"{p50 - base:>11.2f}{p50 / base:>8.2f}")
    p50 = {name: percentile(values, 0.5) for name, values in times.items()}
    print(f"target: aimu_ray aio added p50 <= 1.50 ms -> {p50['aimu_ray aio'] - p50['direct SDK']:.2f} ms; "
          f"of which a bare Ray actor hop costs {p50['bare Ray actor + SDK'] - p50['direct SDK']:.2f} ms and "
          f"aimu_ray's own work {p50['aimu_ray aio'] - p50['bare Ray actor + SDK']:.2f} ms")


if __name__ == "__main__":
    main()
