"""Serve memory: resident memory of the ingress, the model replicas and Serve's HTTP proxy over many requests.

The app serves a remote model (the loopback OpenAI-compatible server, its own process, answering at once)
and the tiny HF model. Chats go over HTTP (httpx, CONCURRENCY at a time), first REQUESTS to the remote
model, then HF_REQUESTS to the HF model (max_tokens HF_TOKENS); after WARMUP untimed requests, every
SAMPLE_EVERY answers the RSS of each replica process is read with psutil. Replica processes are found
through Ray's actor table (class ``ServeReplica:<app>:<deployment>``, its pid), so other Ray clusters on
the machine are never measured. Expected: flat, i.e. growth from the first sample to the last small
against the process size and not rising sample after sample.
Run: python benchmarks/serve_memory.py [--requests N] [--hf-requests N] [--concurrency C]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks._loopback import loopback_server  # noqa: E402
from benchmarks._serve_app import offline_tiny_model, shutdown, start_app  # noqa: E402

MIB = 1024 * 1024
PROCESSES = {"ingress (and remote calls)": "ServeReplica:{app}:ingress",
             "HF model actor": "ModelActor"}       # the served HF model is a copy of the registry's, not a replica


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000, help="chats to the remote model (default 10,000)")
    parser.add_argument("--hf-requests", type=int, default=10_000, help="chats to the HF model (default 10,000)")
    parser.add_argument("--hf-tokens", type=int, default=4, help="max_tokens of each HF chat (default 4)")
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight (default 32)")
    parser.add_argument("--sample-every", type=int, default=1_000, help="answers between samples (default 1,000)")
    parser.add_argument("--warmup", type=int, default=200, help="untimed requests before the first sample")
    return parser.parse_args()






def replica_pids(app: str) -> dict[str, int]:
    """The pid of each process to watch, from this cluster's actor table (alive actors only)."""
    from ray._private.state import actors

    alive = [a for a in actors().values() if a["State"] == "ALIVE"]
    by_class = {a["ActorClassName"]: a["Pid"] for a in alive}
    pids = {label: by_class[actor_class.format(app=app)] for label, actor_class in PROCESSES.items()}
    proxy = [a["Pid"] for a in alive if a["ActorClassName"] == "ProxyActor"]
    if proxy:
        pids["Serve HTTP proxy"] = proxy[0]
    return pids


def rss(pids: dict[str, int]) -> dict[str, float]:
    import psutil

    out = {}
    for label, pid in pids.items():
        try:
            out[label] = psutil.Process(pid).memory_info().rss / MIB
        except psutil.Error:
            out[label] = float("nan")
    return out


async def load(app: str, model: str, n: int, warmup: int, concurrency: int, every: int, pids: dict[str, int],
               extra: dict) -> tuple[list[tuple[int, dict]], dict[int, int], float]:
    """Send ``warmup`` then ``n`` chats, ``concurrency`` at a time; RSS samples every ``every`` answers."""
    import httpx

    statuses: dict[int, int] = {}
    samples: list[tuple[int, dict]] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=app, limits=limits, timeout=120) as http:
        async def run(total: int, on_answer) -> None:
            sent = 0

            async def worker() -> None:
                nonlocal sent
                while sent < total:
                    sent += 1
                    body = {"model": model, "messages": [{"role": "user", "content": f"hi {sent}"}], **extra}
                    try:
                        status = (await http.post("/v1/chat/completions", json=body)).status_code
                    except httpx.HTTPError:
                        status = -1
                    statuses[status] = statuses.get(status, 0) + 1
                    on_answer()

            await asyncio.gather(*(worker() for _ in range(min(concurrency, total))))

        await run(warmup, lambda: None)
        statuses.clear()
        samples.append((0, rss(pids)))
        done = 0

        def answered() -> None:
            nonlocal done
            done += 1
            if done % every == 0 or done == n:
                samples.append((done, rss(pids)))

        start = time.perf_counter()
        await run(n, answered)
        seconds = time.perf_counter() - start
    return samples, statuses, seconds


def report(title: str, samples: list[tuple[int, dict]], statuses: dict[int, int], seconds: float, n: int,
           every: int) -> None:
    labels = list(samples[0][1])
    print(f"\n{title}: {n} chats in {seconds:.0f} s ({n / seconds:.0f}/s), statuses "
          f"{', '.join(f'{k}: {v}' for k, v in sorted(statuses.items()))}")
    print(f"{'requests':>9}" + "".join(f"{label:>18}" for label in labels) + "   (RSS, MiB)")
    for done, values in samples:
        print(f"{done:>9}" + "".join(f"{values[label]:>18.1f}" for label in labels))
    first = next(((done, values) for done, values in samples if done >= every), samples[0])
    last, middle = samples[-1], samples[len(samples) // 2]
    span = max(1, last[0] - middle[0])
    print(f"growth from {first[0]} to {last[0]} (a leak keeps its slope; warm-up and allocator growth flatten):")
    for label in labels:
        a, b = first[1][label], last[1][label]
        steps = [later[1][label] - earlier[1][label] for earlier, later in zip(samples[1:], samples[2:])]
        rising = sum(step > 0.5 for step in steps)
        print(f"  {label:<18}{b - a:>+8.1f} MiB  {100 * (b - a) / a:>+6.1f} %   "
              f"(from 0: {b - samples[0][1][label]:+.1f} MiB; {rising} of {len(steps)} steps up by > 0.5 MiB; "
              f"last half {1000 * (b - middle[1][label]) / span:+.2f} MiB per 1,000)")


def main() -> None:
    args = parse_args()
    hf_dir = offline_tiny_model()
    app_name = f"memory-bench-{secrets.token_hex(3)}"     # replica class names unique to this run
    results = []
    with tempfile.TemporaryDirectory(prefix="serve-memory-") as workdir, loopback_server(0.0) as url:
        try:
            app = start_app(url, hf_dir, workdir, app_name)
            pids = replica_pids(app_name)
            print(f"app {app_name} at {app}; pids {pids}; load average {os.getloadavg()[0]:.1f} on "
                  f"{os.cpu_count()} cores", flush=True)
            if args.requests:
                results.append((f"remote model (loopback), {args.concurrency} in flight",
                                *asyncio.run(load(app, "echo", args.requests, args.warmup, args.concurrency,
                                                  args.sample_every, pids, {"max_tokens": 16})), args.requests))
            if args.hf_requests:
                extra = {"max_tokens": args.hf_tokens, "temperature": 0}
                results.append((f"tiny HF model, max_tokens {args.hf_tokens}, {args.concurrency} in flight",
                                *asyncio.run(load(app, "tiny", args.hf_requests, args.warmup, args.concurrency,
                                                  args.sample_every, pids, extra)), args.hf_requests))
        finally:
            shutdown()
    for title, samples, statuses, seconds, n in results:
        report(title, samples, statuses, seconds, n, args.sample_every)
    print(f"\nload average at the end {os.getloadavg()[0]:.1f} (others may share this machine)")


if __name__ == "__main__":
    main()
