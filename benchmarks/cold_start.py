"""Cold start: from client() to the first streamed token of SmolLM2-135M, against loading it directly.

  direct          a fresh Python process imports transformers, loads the model (538 MB of float32) and tokenizer with
                  AutoModelForCausalLM / AutoTokenizer and generates one greedy token; timed from the
                  process's launch and from just before loading (transformers and torch imported; the
                  tokenizer and Llama modules transformers imports lazily count as loading)
  aimu_ray cold   Ray already running in this process (ray.init is timed apart): aio.client("hf:<folder>"),
                  then chat(stream=True) until the first chunk: registry, placement, a new actor process,
                  its imports and the load. The first repetition also starts the registry actor.
  by name         a second client once the actor exists, this process's handles forgotten first, so it
                  finds the actor by its name as another process would
  same process    a third client in this process: the handle is already known
Each is repeated REPS times (aio.unload() between aimu_ray repetitions) and the median counts; others may
share this 2-core machine, so figures are noisy.
Run: python benchmarks/cold_start.py [reps]
"""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

REPS = int(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1].isdigit() else 3
GREEDY = {"max_tokens": 8, "do_sample": False}


def direct(folder: str) -> None:
    """Run in a fresh process: import, load, one token; prints the times since launch and since loading began."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    loading = time.time()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    text = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True,
                                         tokenize=False)
    inputs = tokenizer(text, return_tensors="pt", add_special_tokens=False)
    model.generate(**inputs, max_new_tokens=1, do_sample=False)
    print(json.dumps({"first_token": time.time(), "loading": loading}))


def run_direct(folder: Path) -> tuple[float, float]:
    launched = time.time()
    proc = subprocess.run([sys.executable, __file__, "--direct", str(folder)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, check=True)
    times = json.loads(proc.stdout.strip().splitlines()[-1])
    return times["first_token"] - launched, times["first_token"] - times["loading"]


async def first_chunk(folder: Path) -> float:
    from aimu_ray import aio

    start = time.perf_counter()
    stream = await aio.client(f"hf:{folder}").chat("hi", stream=True, generate_kwargs=GREEDY)
    await stream.__anext__()
    elapsed = time.perf_counter() - start
    async for _ in stream:
        pass
    return elapsed


async def measure(folder: Path) -> dict[str, list[float]]:
    from aimu_ray import aio
    from aimu_ray.backends import reset_backends

    times: dict[str, list[float]] = {"aimu_ray cold": [], "by name": [], "same process": []}
    for _ in range(REPS):
        times["aimu_ray cold"].append(await first_chunk(folder))
        reset_backends(pool=False)
        times["by name"].append(await first_chunk(folder))
        times["same process"].append(await first_chunk(folder))
        await aio.unload()
    return times


def main() -> None:
    import ray

    import aimu_ray
    from aimu_ray.demo.smollm2 import smollm2_hf_dir

    folder = smollm2_hf_dir()
    runs = [run_direct(folder) for _ in range(REPS)]
    times = {"direct, from launch": [r[0] for r in runs], "direct, from loading": [r[1] for r in runs]}
    start = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    times["ray.init"] = [time.perf_counter() - start]
    try:
        times.update(asyncio.run(measure(folder)))
    finally:
        aimu_ray.shutdown()
    median = {name: statistics.median(values) for name, values in times.items()}
    print(f"\nCold start of SmolLM2-135M-Instruct to its first token (s); median of {REPS}, 2 cores, no GPU")
    print(f"{'path':<22}{'median':>8}  runs")
    for name, values in times.items():
        print(f"{name:<22}{median[name]:>8.3f}  {' '.join(f'{v:.3f}' for v in values)}")
    cold = median["aimu_ray cold"]
    print(f"aimu_ray cold / direct from launch: {cold / median['direct, from launch']:.2f}x; "
          f"/ direct from loading: {cold / median['direct, from loading']:.2f}x; "
          f"an existing actor by name answers in {median['by name'] * 1e3:.0f} ms")


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--direct":
        direct(sys.argv[2])
    else:
        main()
