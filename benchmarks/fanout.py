"""Fan-out: 1,000 concurrent chats, each through its own client, against a loopback server answering in 200 ms.

The server runs in its own process. Each contender runs in a fresh process of its own, one after the other:
  floor      the openai SDK called directly through one shared AsyncOpenAI (no per-conversation client)
  aimu_ray   1,000 aimu_ray.aio clients through the Ray worker pool (Ray start-up and warm-up not timed)
  aimu 0.38  1,000 aimu.aio clients (pip install aimu==0.38.0)
  litellm    litellm.acompletion, 1,000 calls
Target: aimu_ray within 1.25x of the floor and faster than aimu and LiteLLM.
Run: python benchmarks/fanout.py [N]
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks._loopback import loopback_server  # noqa: E402

N = int(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1].isdigit() else 1000
MESSAGES = [{"role": "user", "content": "hi"}]


async def floor(url: str, n: int) -> float:
    import openai

    client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="bench", max_retries=0, timeout=120)
    start = time.perf_counter()
    await asyncio.gather(*(client.chat.completions.create(model="bench", messages=MESSAGES, max_tokens=16)
                           for _ in range(n)))
    return time.perf_counter() - start


async def aimu_ray_run(url: str, n: int) -> float:
    import aimu_ray
    from aimu_ray import aio

    aimu_ray.init()
    model = f"openai-compat:bench@{url}/v1"
    await asyncio.gather(*(aio.client(model).chat("warm up") for _ in range(50)))
    start = time.perf_counter()
    clients = [aio.client(model) for _ in range(n)]
    await asyncio.gather(*(c.chat("hi", generate_kwargs={"max_tokens": 16}) for c in clients))
    return time.perf_counter() - start


async def aimu_run(url: str, n: int) -> float:
    from aimu import aio

    model = f"openai-compat:bench@{url}/v1"
    start = time.perf_counter()
    clients = [aio.client(model) for _ in range(n)]
    await asyncio.gather(*(c.chat("hi", generate_kwargs={"max_tokens": 16}) for c in clients))
    return time.perf_counter() - start


async def litellm_run(url: str, n: int) -> float:
    import litellm

    litellm.suppress_debug_info = True
    start = time.perf_counter()
    await asyncio.gather(*(litellm.acompletion(model="openai/bench", api_base=f"{url}/v1", api_key="bench",
                                               messages=MESSAGES, max_tokens=16) for _ in range(n)))
    return time.perf_counter() - start


CONTENDERS = {"floor": floor, "aimu_ray": aimu_ray_run, "aimu 0.38": aimu_run, "litellm": litellm_run}


def run_contender(name: str, url: str) -> float | str:
    proc = subprocess.run([sys.executable, __file__, "--contender", name, url, str(N)], cwd=ROOT,
                          capture_output=True, text=True, timeout=900)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode or not lines:
        return f"failed: {(proc.stderr or proc.stdout).strip().splitlines()[-1:]}"
    return json.loads(lines[-1])["seconds"]


def main() -> None:
    with loopback_server(delay_s=0.2) as url:
        results = {name: run_contender(name, url) for name in CONTENDERS}
    base = results["floor"]
    print(f"\nFan-out: {N} concurrent chats, loopback server answering in 200 ms, 2 cores")
    print(f"{'contender':<12}{'wall s':>9}{'x floor':>9}")
    for name, value in results.items():
        if isinstance(value, str):
            print(f"{name:<12}{value}")
            continue
        ratio = value / base if isinstance(base, float) else float("nan")
        print(f"{name:<12}{value:>9.2f}{ratio:>9.2f}")
    ours = results["aimu_ray"]
    if isinstance(ours, float):
        peers = {k: v for k, v in results.items() if k in ("aimu 0.38", "litellm") and isinstance(v, float)}
        print("aimu_ray vs peers: " + ", ".join(f"{v / ours:.2f}x faster than {k}" for k, v in peers.items()))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--contender":
        name, url, n = sys.argv[2], sys.argv[3], int(sys.argv[4])
        seconds = asyncio.run(CONTENDERS[name](url, n))
        print(json.dumps({"contender": name, "seconds": seconds}))
    else:
        main()
