"""Serve latency with Serve's fast path off and on: what HTTP adds over the SDK and over a handle, at 1, 8 and 64
concurrent clients, and SSE rates.

The parent runs each side in a child process of its own (a Ray started with ``fast_serve`` False, then True:
``cluster.connection.fast_serve_env``) and prints them side by side. One loopback OpenAI-compatible server answers
at once (its own process). Against it, one small chat ("hi", max_tokens 16); at one client the paths alternate in
blocks of BLOCK calls so drift hits every path alike; at more, each path runs its level on its own:
  SDK direct         openai.AsyncOpenAI straight at the loopback server: the floor
  aimu in-process    what an ingress replica runs for a remote model (deployments.remote_models), built here
  bare Serve handle  a handle call to a plain deployment making the same SDK call: Serve's floor for a handle
  Serve handle       a handle call to aimu_ray's ingress (``connect("echo")`` sends there), which calls the server
  bare Serve HTTP    HTTP -> Serve's front (proxy, or HAProxy on the fast path) -> a plain FastAPI ingress making
                     the same SDK call: Serve's floor for aimu_ray's one hop
  HTTP aimu_ray      HTTP -> Serve's front -> aimu_ray's ingress -> loopback server
  HTTP LiteLLM       HTTP -> `litellm --config` proxy (subprocess) -> the same loopback server
Targets: HTTP p50 at most 5 ms over the SDK at one client; SSE chunks/s at least 0.9x the handle's; first chunk over
HTTP at most 5 ms after the handle's. The access log is off in all servers.

SSE: a long answer (the loopback server echoes a LONG_WORDS-word prompt, one chunk per word, all sent at
once) and the tiny HF model (max_tokens HF_TOKENS, greedy) streamed through the handle and over HTTP;
content chunks per second and completion tokens per second (the loopback server's usage estimates four
characters a token), first-chunk latency p50.

The LiteLLM proxy needs litellm's proxy dependencies. litellm[proxy] 1.110.2 cannot be installed (its
`litellm-proxy==1.110.2` requirement is not on PyPI); the proxy starts with these added beside the venv:
  pip install --no-deps --target DIR orjson backoff redis apscheduler tzlocal semver expression fastapi-sso oauthlib
and `--litellm-pythonpath DIR` (or $LITELLM_PROXY_PYTHONPATH). Without them the LiteLLM rows say why.
Run: python benchmarks/serve_latency.py [--requests N] [--clients 1 8 64] [--streams S] [--hf-tokens T]
     [--no-litellm] [--litellm-pythonpath DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks._loopback import loopback_server, percentile  # noqa: E402
from benchmarks._serve_app import free_port, offline_tiny_model, shutdown, start_app  # noqa: E402

BLOCK = 50
USER = [{"role": "user", "content": "hi"}]
SMALL = {"max_tokens": 16}
LONG_WORDS = 500
LITELLM_START_S = 120


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400,
                        help="timed chats per path and level (default 400; at least 10 per client)")
    parser.add_argument("--warmup", type=int, default=50, help="untimed chats per path first (default 50)")
    parser.add_argument("--streams", type=int, default=20, help="timed streams per SSE path (default 20)")
    parser.add_argument("--hf-tokens", type=int, default=256, help="max_tokens of the HF streams (default 256)")
    parser.add_argument("--no-litellm", action="store_true", help="skip the LiteLLM proxy")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 64],
                        help="concurrent clients per level (default 1 8 64)")
    parser.add_argument("--side", choices=SIDES, help=argparse.SUPPRESS)     # one side, in a child process
    parser.add_argument("--litellm-pythonpath", default=os.environ.get("LITELLM_PROXY_PYTHONPATH", ""),
                        help="a folder with litellm's proxy dependencies (see the docstring)")
    return parser.parse_args()




# ----- the LiteLLM proxy -----

@contextlib.contextmanager
def litellm_proxy(url: str, workdir: Path, pythonpath: str):
    """Start a LiteLLM proxy serving the loopback server as ``echo``; yield a ``PendingProxy`` (or a reason why
    not, as a str). It starts while Ray and Serve do; ``PendingProxy.wait()`` waits for it to answer."""
    exe = Path(sys.executable).parent / "litellm"
    if not exe.exists():
        yield f"{exe} not found (pip install litellm)"
        return
    port, key = free_port(), "sk-" + secrets.token_hex(32)
    config, log_config, log = workdir / "litellm.yaml", workdir / "litellm-logging.json", workdir / "litellm.log"
    config.write_text(json.dumps({"model_list": [{"model_name": "echo", "litellm_params": {
        "model": "openai/m", "api_base": f"{url}/v1", "api_key": "bench"}}]}))      # JSON is YAML
    log_config.write_text(json.dumps({"version": 1, "disable_existing_loggers": False,      # no access log
                                      "loggers": {"uvicorn.access": {"level": "WARNING"}}}))
    env = {**os.environ, "LITELLM_MASTER_KEY": key, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR"}
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [pythonpath, env.get("PYTHONPATH")]))
    with open(log, "w") as out:
        proc = subprocess.Popen([str(exe), "--config", str(config), "--host", "127.0.0.1", "--port", str(port),
                                 "--log_config", str(log_config)], stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env, start_new_session=True)
    try:
        yield PendingProxy(proc, f"http://127.0.0.1:{port}", key, log)
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class PendingProxy:
    def __init__(self, proc: subprocess.Popen, base: str, key: str, log: Path) -> None:
        self.proc, self.base, self.key, self.log, self.started = proc, base, key, log, time.perf_counter()

    def wait(self) -> tuple[str | None, str]:
        """(the proxy's /v1 URL, a note), or (None, why it is not there)."""
        import httpx

        while time.perf_counter() - self.started < LITELLM_START_S:
            if self.proc.poll() is not None:
                tail = [line for line in self.log.read_text(errors="replace").splitlines() if line.strip()][-3:]
                return None, f"proxy exited with {self.proc.returncode}: {' | '.join(tail)[-400:]}"
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.base}/health/liveliness", timeout=1).status_code == 200:
                    return f"{self.base}/v1", f"up in {time.perf_counter() - self.started:.0f} s"
            time.sleep(0.5)
        return None, f"proxy did not answer in {LITELLM_START_S} s"


# ----- the Serve app -----

def start_bare_app(url: str) -> None:
    """Serve's floor for aimu_ray's one hop: a plain FastAPI ingress making the same SDK call itself (route prefix
    /bare, deployment ``bare-ingress``), and a plain deployment doing the same for handles (``bare-model``)."""
    from fastapi import FastAPI
    from ray import serve

    @serve.deployment(name="bare-model", ray_actor_options={"num_cpus": 0}, max_ongoing_requests=1000)
    class BareModel:
        def __init__(self) -> None:
            import openai

            self.client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="bench", max_retries=0)

        async def run(self, body: dict) -> dict:
            reply = await self.client.chat.completions.create(**body)
            return reply.model_dump()

    api = FastAPI()

    @serve.deployment(name="bare-ingress", ray_actor_options={"num_cpus": 0}, max_ongoing_requests=1000)
    @serve.ingress(api)
    class BareIngress:
        def __init__(self) -> None:
            import openai

            self.client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="bench", max_retries=0)

        @api.post("/v1/chat/completions")
        async def chat(self, body: dict) -> dict:        # a builtin annotation: it resolves in the replica too
            reply = await self.client.chat.completions.create(**dict(body, model="m"))
            return reply.model_dump()

    serve.run(BareIngress.bind(), name="bare", route_prefix="/bare", logging_config={"enable_access_log": False})
    serve.run(BareModel.bind(), name="bare-model", route_prefix=None, logging_config={"enable_access_log": False})


class InProcessBackend:
    """What an ingress replica runs for a remote model, built here: the same code, without Ray or Serve."""

    def __init__(self, url: str) -> None:
        from aimu_ray.deployments import ServedModel
        from aimu_ray.deployments.remote_models import RemoteModels

        self.model = ServedModel(name="echo", model=f"openai-compat:m@{url}/v1", options={"max_retries": 0})
        self.remote = RemoteModels().backend(self.model)

    async def call(self, request):
        return await self.remote.call(request)

    def stream(self, request):
        return self.remote.stream(request)


# ----- measurements -----

async def latency_at(fn, clients: int, requests: int) -> dict:
    """``requests`` calls of ``fn`` from ``clients`` concurrent loops: per-call ms and requests/s of those answered,
    and how many failed (a failure is a figure too: it is printed, and the run goes on)."""
    times: list[float] = []
    failed: list[str] = []
    left = requests

    async def loop() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            start = time.perf_counter()
            try:
                await fn()
            except Exception as error:        # noqa: BLE001 -- counted and shown, not hidden
                failed.append(f"{type(error).__name__}: {str(error)[:160]}")
                continue
            times.append((time.perf_counter() - start) * 1e3)

    start = time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(clients)))
    if failed:
        print(f"{len(failed)} of {requests} calls failed at {clients} clients, first: {failed[0]}", file=sys.stderr)
    nan = float("nan")
    return {"p50": percentile(times, 0.5) if times else nan, "p90": percentile(times, 0.9) if times else nan,
            "failed": len(failed),
            "rps": len(times) / (time.perf_counter() - start)}


async def chat_latency(paths: dict, levels: list[int], requests: int, warmup: int) -> dict:
    """{clients: {path: figures}}; at one client the paths alternate in blocks, so drift hits each alike."""
    for fn in paths.values():
        await latency_at(fn, 1, warmup)
    table: dict = {}
    for clients in levels:
        if clients == 1:
            runs: dict[str, list] = {name: [] for name in paths}
            block = max(1, min(BLOCK, requests))
            for _ in range(max(1, requests // block)):
                for name, fn in paths.items():
                    runs[name].append(await latency_at(fn, 1, block))
            table[clients] = {name: _merged(parts) for name, parts in runs.items()}
        else:
            table[clients] = {name: await latency_at(fn, clients, max(requests, clients * 10))
                              for name, fn in paths.items()}
    return table


async def hop_profile(http, requests: int) -> dict:
    """Where one HTTP chat's time goes (p50 of each part, ms), from the client's total and the app's Server-Timing:
    the front (the client's HTTP, Serve's proxy or HAProxy, the hop to the replica and back) is the total less the
    app's time; the app's own work is its time less the engine's; the engine is the provider call from the replica."""
    parts: dict[str, list[float]] = {"total": [], "front": [], "app": [], "engine": []}
    for _ in range(requests):
        start = time.perf_counter()
        raw = await http.chat.completions.with_raw_response.create(model="echo", messages=USER, **SMALL)
        raw.parse()
        total = (time.perf_counter() - start) * 1e3
        timing = dict(item.strip().split(";dur=") for item in raw.headers["server-timing"].split(","))
        app, engine = float(timing["app"]), float(timing["engine"])
        for name, value in (("total", total), ("front", total - app), ("app", app - engine), ("engine", engine)):
            parts[name].append(value)
    return {name: statistics.median(values) for name, values in parts.items()}


def _merged(parts: list[dict]) -> dict:
    return {"p50": statistics.median(p["p50"] for p in parts), "p90": statistics.median(p["p90"] for p in parts),
            "rps": statistics.mean(p["rps"] for p in parts), "failed": sum(p["failed"] for p in parts)}


def sdk_stream(sdk, model: str, prompt: str, **kwargs):
    """A streaming path over an OpenAI SDK client: (content chunks, completion tokens or None, first chunk s)."""
    async def run():
        start, first, chunks, tokens = time.perf_counter(), None, 0, None
        stream = await sdk.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}],
                                                   stream=True, stream_options={"include_usage": True}, **kwargs)
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                chunks += 1
                first = first or time.perf_counter() - start
            if chunk.usage:
                tokens = chunk.usage.completion_tokens
        return chunks, tokens, first
    return run


def client_stream(client, prompt: str, **kwargs):
    """A streaming path over an aimu client (handle or in-process)."""
    async def run():
        client.messages = []
        start, first, chunks = time.perf_counter(), None, 0
        async for chunk in await client.chat(prompt, stream=True, generate_kwargs=kwargs):
            if chunk.content:
                chunks += 1
                first = first or time.perf_counter() - start
        return chunks, (client.last_usage or {}).get("output_tokens"), first
    return run


async def stream_rates(paths: dict, streams: int) -> dict[str, dict]:
    for fn in paths.values():          # warm-up
        await fn()
    totals = {name: {"seconds": 0.0, "chunks": 0, "tokens": 0, "first": [], "usage": True} for name in paths}
    for _ in range(streams):           # alternate the paths stream by stream
        for name, fn in paths.items():
            start = time.perf_counter()
            chunks, tokens, first = await fn()
            total = totals[name]
            total["seconds"] += time.perf_counter() - start
            total["chunks"] += chunks
            total["tokens"] += tokens or 0
            total["usage"] &= tokens is not None
            total["first"].append((first or 0) * 1e3)
    return {name: {"streams": len(t["first"]), "chunks": t["chunks"] // len(t["first"]),
                   "chunks_s": t["chunks"] / t["seconds"],
                   "tokens_s": t["tokens"] / t["seconds"] if t["usage"] else None,
                   "first_ms": percentile(t["first"], 0.5)} for name, t in totals.items()}


async def measure(args, url: str, app: str, litellm: tuple[str | None, str]) -> dict:
    import httpx
    import openai
    from ray import serve

    from aimu_ray.backends.serve import INGRESS, ServeBackend
    from aimu_ray.clients.requests import chat_request
    from aimu_ray.clients.served import served_client
    from aimu_ray.deployments import connect
    from aimu_ray.models.model_string import resolve_model
    from aimu_ray.models.wire import Endpoint

    pool = httpx.Limits(max_connections=256, max_keepalive_connections=256)

    def sdk(base: str, key: str = "none"):
        return openai.AsyncOpenAI(base_url=base, api_key=key, max_retries=0, timeout=120,
                                  http_client=openai.DefaultAsyncHttpxClient(limits=pool))

    direct, http, bare_http = sdk(f"{url}/v1", "bench"), sdk(f"{app}/v1"), sdk(f"{app}/bare/v1")
    backend = InProcessBackend(url)
    handle = ServeBackend(serve.get_deployment_handle(INGRESS, app_name="aimu_ray"), "echo")
    bare_handle = serve.get_deployment_handle("bare-model", app_name="bare-model")
    proxy_url, proxy_key = litellm
    proxy = sdk(proxy_url, proxy_key) if proxy_url else None
    request = chat_request(resolve_model("openai-compat:m"), Endpoint(), USER, generate_kwargs=SMALL, warn=print)

    async def sdk_direct():
        await direct.chat.completions.create(model="m", messages=USER, **SMALL)

    async def aimu_local():
        await backend.call(request)

    async def serve_handle():
        await handle.call(request)

    async def serve_bare_handle():
        await bare_handle.run.remote({"model": "m", "messages": USER, **SMALL})

    async def http_bare():
        await bare_http.chat.completions.create(model="m", messages=USER, **SMALL)

    async def http_aimu_ray():
        await http.chat.completions.create(model="echo", messages=USER, **SMALL)

    async def http_litellm():
        await proxy.chat.completions.create(model="echo", messages=USER, **SMALL)

    paths = {"SDK direct": sdk_direct, "aimu in-process": aimu_local, "bare Serve handle": serve_bare_handle,
             "Serve handle": serve_handle, "bare Serve HTTP": http_bare, "HTTP aimu_ray": http_aimu_ray}
    if proxy:
        paths["HTTP LiteLLM"] = http_litellm
    latency = await chat_latency(paths, args.clients, args.requests, args.warmup)
    hops = await hop_profile(http, args.requests)

    long_prompt = " ".join(f"w{i}" for i in range(LONG_WORDS))
    local = served_client(backend.model.model, backend, "text")
    echo = {"SDK direct": sdk_stream(direct, "m", long_prompt), "aimu in-process": client_stream(local, long_prompt),
            "Serve handle": client_stream(await connect("echo"), long_prompt),
            "HTTP aimu_ray": sdk_stream(http, "echo", long_prompt)}
    if proxy:
        echo["HTTP LiteLLM"] = sdk_stream(proxy, "echo", long_prompt)
    echo_rates = await stream_rates(echo, args.streams)

    hf_kwargs = {"max_tokens": args.hf_tokens, "temperature": 0}
    prompt = "tell me about the quick brown fox"
    hf = {"Serve handle": client_stream(await connect("tiny"), prompt, **hf_kwargs),
          "HTTP aimu_ray": sdk_stream(http, "tiny", prompt, **hf_kwargs)}
    hf_rates = await stream_rates(hf, max(1, args.streams // 2))
    for client in (direct, http, bare_http, proxy):
        if client is not None:
            await client.close()
    return {"latency": latency, "hops": hops, "echo": echo_rates, "hf": hf_rates}


def run_side(args) -> None:
    """One side (fast path on or off) in this process, its figures as JSON on the last line of stdout."""
    hf_dir = offline_tiny_model()
    with tempfile.TemporaryDirectory(prefix="serve-latency-") as workdir, loopback_server(0.0) as url:
        proxy_cm = (contextlib.nullcontext("skipped (--no-litellm)") if args.no_litellm
                    else litellm_proxy(url, Path(workdir), args.litellm_pythonpath))
        with proxy_cm as pending:
            try:
                app = start_app(url, hf_dir, workdir, fast_serve=args.side == "on")
                start_bare_app(url)
                proxy_url, note = pending.wait() if isinstance(pending, PendingProxy) else (None, pending)
                key = pending.key if proxy_url else None
                print(f"fast path {args.side}: app at {app}; LiteLLM proxy: {note}; load average "
                      f"{os.getloadavg()[0]:.1f}", file=sys.stderr, flush=True)
                results = asyncio.run(measure(args, url, app, (proxy_url, key)))
            finally:
                shutdown()
    results["litellm_note"] = note
    print(json.dumps(results))


# ----- report -----

SIDES = ("off", "on")


def report(args, sides: dict[str, dict]) -> None:
    levels = args.clients
    print(f"\nOne small chat (ms; requests/s), loopback server answering at once, {args.requests} timed per path and "
          f"level after {args.warmup} warm-up; 2 cores. Fast path off | on (separate Ray starts, one run).")
    for clients in levels:
        print(f"\n{clients} concurrent client{'s' if clients > 1 else ''}")
        print(f"{'path':<18}" + "".join(f"{f'{m} {side}':>11}" for side in SIDES for m in ("p50", "p90", "req/s")))
        names = list(sides["on"]["latency"][str(clients)])
        for name in names:
            row = "".join(f"{sides[side]['latency'][str(clients)][name][m]:>11.{0 if m == 'rps' else 2}f}"
                          for side in SIDES for m in ("p50", "p90", "rps"))
            failed = {side: sides[side]['latency'][str(clients)][name]["failed"] for side in SIDES}
            print(f"{name:<18}{row}" + (f"   failed: {failed}" if any(failed.values()) else ""))
        if "HTTP LiteLLM" not in names:
            print(f"{'HTTP LiteLLM':<18}not measured: {sides['on']['litellm_note']}")
    print()
    for side in SIDES:
        one = sides[side]["latency"]["1"]
        http, base, hnd = one["HTTP aimu_ray"]["p50"], one["SDK direct"]["p50"], one["Serve handle"]["p50"]
        bare = one["bare Serve HTTP"]["p50"]
        print(f"fast path {side:<3}: HTTP p50 - SDK p50 = {http - base:+.2f} ms (target <= 5.00: "
              f"{'met' if http - base <= 5 else 'NOT met'}); HTTP - handle {http - hnd:+.2f} ms; "
              f"aimu_ray HTTP - bare Serve HTTP {http - bare:+.2f} ms")
        if "HTTP LiteLLM" in one:
            lit = one["HTTP LiteLLM"]["p50"]
            print(f"{'':<14}LiteLLM proxy p50 {lit:.2f} ms = {lit / http:.2f}x aimu_ray's")

    print(f"\nWhere one HTTP chat's time goes, hop by hop (p50 ms of each part over {args.requests} sequential chats; "
          f"the app's Server-Timing header splits it)")
    print(f"{'part':<58}" + "".join(f"{side:>9}" for side in SIDES))
    for key, label in (("front", "client HTTP + Serve's front + hop to the replica and back"),
                       ("app", "aimu_ray's app: routing, auth, validation, request, render"),
                       ("engine", "the engine: the SDK's call from the replica to the server"),
                       ("total", "whole request, as the client timed it")):
        print(f"{label:<58}" + "".join(f"{sides[side]['hops'][key]:>9.2f}" for side in SIDES))
    print(f"{'the SDK called directly (p50, above)':<58}"
          + "".join(f"{sides[side]['latency']['1']['SDK direct']['p50']:>9.2f}" for side in SIDES))

    def rates(title: str, key: str) -> None:
        print(f"\n{title}")
        print(f"{'path':<18}" + "".join(f"{f'{m} {side}':>14}" for side in SIDES
                                        for m in ("chunks/s", "tokens/s", "first ms")))
        for name in sides["on"][key]:
            cells = []
            for side in SIDES:
                t = sides[side][key][name]
                tokens = "-" if t["tokens_s"] is None else f"{t['tokens_s']:.0f}"
                cells += [f"{t['chunks_s']:>14.0f}", f"{tokens:>14}", f"{t['first_ms']:>14.2f}"]
            print(f"{name:<18}{''.join(cells)}")
        for side in SIDES:
            http, hnd = sides[side][key]["HTTP aimu_ray"], sides[side][key]["Serve handle"]
            print(f"fast path {side:<3}: HTTP chunks/s = {http['chunks_s'] / hnd['chunks_s']:.2f}x the handle's "
                  f"(target >= 0.90); first chunk HTTP - handle {http['first_ms'] - hnd['first_ms']:+.2f} ms "
                  f"(target <= 5.00)")

    rates(f"SSE, loopback echo of {LONG_WORDS} words sent at once, {args.streams} streams a path", "echo")
    rates(f"SSE, tiny HF model (random weights), max_tokens {args.hf_tokens}, greedy, one stream at a time", "hf")


def main() -> None:
    args = parse_args()
    if args.side:
        run_side(args)
        return
    sides = {}
    for side in SIDES:
        command = [sys.executable, __file__, "--side", side, *sys.argv[1:]]
        done = subprocess.run(command, stdout=subprocess.PIPE, text=True, cwd=ROOT)
        if done.returncode != 0:
            raise SystemExit(f"the fast path {side} run failed ({done.returncode})")
        sides[side] = json.loads(done.stdout.strip().splitlines()[-1])
    report(args, sides)
    print(f"\nload average at the end {os.getloadavg()[0]:.1f} (others may share this machine)")


if __name__ == "__main__":
    main()
