"""Serve latency: what HTTP adds over a deployment-handle call and over an in-process call, and SSE rates.

One loopback OpenAI-compatible server answers at once (its own process). Against it, one small chat
("hi", max_tokens 16), sequential, in alternating blocks of BLOCK calls so drift hits every path alike:
  SDK direct         openai.OpenAI (reused) straight at the loopback server: the in-process floor
  aimu in-process    the served client over the remote deployment's own class, built in this process (no Ray)
  bare Serve handle  a handle call to a plain deployment making the same SDK call: Serve's floor for the handle
  Serve handle       aimu_ray.deployments.connect("echo").chat: driver -> remote deployment -> loopback
  bare Serve HTTP    openai.OpenAI -> Serve proxy -> plain FastAPI ingress -> that plain deployment: Serve's floor
                     for HTTP with the same two hops
  HTTP aimu_ray      openai.OpenAI (reused) -> Serve proxy -> ingress -> remote deployment -> loopback
  HTTP LiteLLM       openai.OpenAI (reused) -> `litellm --config` proxy (subprocess) -> the same loopback server
Target: HTTP at most 3 ms above the handle at p50. The access log is off in all servers. RAY_SERVE_* variables
set when this runs reach the replicas (e.g. RAY_SERVE_THROUGHPUT_OPTIMIZED=1 RAY_SERVE_ENABLE_DIRECT_INGRESS=0).

SSE: a long answer (the loopback server echoes a LONG_WORDS-word prompt, one chunk per word, all sent at
once) and the tiny HF model (max_tokens HF_TOKENS, greedy) streamed through the handle and over HTTP;
content chunks per second and completion tokens per second (the loopback server's usage estimates four
characters a token), first-chunk latency p50.

The LiteLLM proxy needs litellm's proxy dependencies. litellm[proxy] 1.110.2 cannot be installed (its
`litellm-proxy==1.110.2` requirement is not on PyPI); the proxy starts with these added beside the venv:
  pip install --no-deps --target DIR orjson backoff redis apscheduler tzlocal semver expression fastapi-sso oauthlib
and `--litellm-pythonpath DIR` (or $LITELLM_PROXY_PYTHONPATH). Without them the LiteLLM rows say why.
Run: python benchmarks/serve_latency.py [--requests N] [--streams S] [--hf-tokens T] [--no-litellm]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
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
    parser.add_argument("--requests", type=int, default=400, help="timed chats per path (default 400)")
    parser.add_argument("--warmup", type=int, default=50, help="untimed chats per path first (default 50)")
    parser.add_argument("--streams", type=int, default=20, help="timed streams per SSE path (default 20)")
    parser.add_argument("--hf-tokens", type=int, default=256, help="max_tokens of the HF streams (default 256)")
    parser.add_argument("--no-litellm", action="store_true", help="skip the LiteLLM proxy")
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
    """Serve's floor for the same two paths: a FastAPI ingress and a deployment making the same SDK call, no aimu.

    Route prefix /bare on the same Serve proxy; the deployment is reachable by handle as ``bare-model``."""
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
        def __init__(self, model) -> None:
            self.model = model

        @api.post("/v1/chat/completions")
        async def chat(self, body: dict) -> dict:        # a builtin annotation: it resolves in the replica too
            return await self.model.run.remote(dict(body, model="m"))

    serve.run(BareIngress.bind(BareModel.bind()), name="bare", route_prefix="/bare",
              logging_config={"enable_access_log": False})


class InProcessBackend:
    """The remote deployment's class, instantiated here: the same code a replica runs, without Ray or Serve."""

    def __init__(self, url: str) -> None:
        from aimu_ray.deployments import ServedModel
        from aimu_ray.deployments.remote_server import RemoteServer

        self.model = ServedModel(name="echo", model=f"openai-compat:m@{url}/v1", options={"max_retries": 0})
        self.server = RemoteServer.func_or_class([self.model])

    async def call(self, request):
        return await self.server.run("echo", request)

    async def stream(self, request):
        async for batch in self.server.stream("echo", request):
            for item in batch:
                yield item


# ----- measurements -----

async def chat_latency(paths: dict, requests: int, warmup: int) -> dict[str, list[float]]:
    for fn in paths.values():
        for _ in range(warmup):
            await fn()
    times: dict[str, list[float]] = {name: [] for name in paths}
    block = max(1, min(BLOCK, requests))
    for _ in range(max(1, requests // block)):
        for name, fn in paths.items():
            for _ in range(block):
                start = time.perf_counter()
                await fn()
                times[name].append((time.perf_counter() - start) * 1e3)
    return times


def sdk_stream(sdk, model: str, prompt: str, **kwargs):
    """A streaming path over an OpenAI SDK client: (content chunks, completion tokens or None, first chunk s)."""
    async def run():
        start, first, chunks, tokens = time.perf_counter(), None, 0, None
        for chunk in sdk.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}],
                                                 stream=True, stream_options={"include_usage": True}, **kwargs):
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
    return totals


async def measure(args, url: str, app: str, litellm: tuple[str | None, str]) -> tuple[dict, dict, dict]:
    import openai
    from ray import serve

    from aimu_ray.deployments import connect
    from aimu_ray.clients.served import served_client

    direct = openai.OpenAI(base_url=f"{url}/v1", api_key="bench", max_retries=0)
    http = openai.OpenAI(base_url=f"{app}/v1", api_key="none", max_retries=0, timeout=120)
    backend = InProcessBackend(url)
    local = served_client(backend.model.model, backend, "text")
    handle = await connect("echo")
    bare_handle = serve.get_deployment_handle("bare-model", app_name="bare")
    bare_http = openai.OpenAI(base_url=f"{app}/bare/v1", api_key="none", max_retries=0, timeout=120)
    proxy_url, proxy_key = litellm
    proxy = openai.OpenAI(base_url=proxy_url, api_key=proxy_key, max_retries=0, timeout=120) if proxy_url else None

    async def sdk_direct():
        direct.chat.completions.create(model="m", messages=USER, **SMALL)

    async def aimu_local():
        local.messages = []
        await local.chat("hi", generate_kwargs=SMALL)

    async def serve_handle():
        handle.messages = []
        await handle.chat("hi", generate_kwargs=SMALL)

    async def serve_bare_handle():
        await bare_handle.run.remote({"model": "m", "messages": USER, **SMALL})

    async def http_bare():
        bare_http.chat.completions.create(model="m", messages=USER, **SMALL)

    async def http_aimu_ray():
        http.chat.completions.create(model="echo", messages=USER, **SMALL)

    async def http_litellm():
        proxy.chat.completions.create(model="echo", messages=USER, **SMALL)

    paths = {"SDK direct": sdk_direct, "aimu in-process": aimu_local, "bare Serve handle": serve_bare_handle,
             "Serve handle": serve_handle, "bare Serve HTTP": http_bare, "HTTP aimu_ray": http_aimu_ray}
    if proxy:
        paths["HTTP LiteLLM"] = http_litellm
    latency = await chat_latency(paths, args.requests, args.warmup)

    long_prompt = " ".join(f"w{i}" for i in range(LONG_WORDS))
    echo = {"SDK direct": sdk_stream(direct, "m", long_prompt), "aimu in-process": client_stream(local, long_prompt),
            "Serve handle": client_stream(handle, long_prompt), "HTTP aimu_ray": sdk_stream(http, "echo", long_prompt)}
    if proxy:
        echo["HTTP LiteLLM"] = sdk_stream(proxy, "echo", long_prompt)
    echo_rates = await stream_rates(echo, args.streams)

    tiny = await connect("tiny")
    hf_kwargs = {"max_tokens": args.hf_tokens, "temperature": 0}
    prompt = "tell me about the quick brown fox"
    hf = {"Serve handle": client_stream(tiny, prompt, **hf_kwargs),
          "HTTP aimu_ray": sdk_stream(http, "tiny", prompt, **hf_kwargs)}
    hf_rates = await stream_rates(hf, max(1, args.streams // 2))
    direct.close(), http.close(), bare_http.close()
    if proxy:
        proxy.close()
    return latency, echo_rates, hf_rates


# ----- report -----

def report(args, latency: dict, echo: dict, hf: dict, litellm_note: str) -> None:
    p = {name: (percentile(v, 0.5), percentile(v, 0.9), percentile(v, 0.99)) for name, v in latency.items()}
    base = p["SDK direct"][0]
    print(f"\nOne small chat, sequential, {len(latency['SDK direct'])} timed per path after {args.warmup} warm-up "
          f"(ms); loopback server answering at once; 2 cores")
    print(f"{'path':<18}{'p50':>8}{'p90':>8}{'p99':>8}{'- SDK p50':>11}{'x SDK':>8}")
    for name, (p50, p90, p99) in p.items():
        print(f"{name:<18}{p50:>8.2f}{p90:>8.2f}{p99:>8.2f}{p50 - base:>11.2f}{p50 / base:>8.2f}")
    if "HTTP LiteLLM" not in p:
        print(f"{'HTTP LiteLLM':<18}not measured: {litellm_note}")

    http, hnd, loc = p["HTTP aimu_ray"], p["Serve handle"], p["aimu in-process"]
    added = http[0] - hnd[0]
    print(f"\nHTTP - handle:        p50 {added:+.2f} ms, p90 {http[1] - hnd[1]:+.2f} ms   "
          f"(target p50 <= 3.00 ms: {'met' if added <= 3.0 else 'NOT met'})")
    print(f"HTTP - in-process:    p50 {http[0] - base:+.2f} ms over the SDK direct, "
          f"{http[0] - loc[0]:+.2f} ms over aimu in-process")
    print(f"handle - in-process:  p50 {hnd[0] - loc[0]:+.2f} ms (the Serve handle hop and replica)")
    bare_http, bare_hnd = p["bare Serve HTTP"], p["bare Serve handle"]
    print(f"Serve's floor:        bare HTTP - bare handle p50 {bare_http[0] - bare_hnd[0]:+.2f} ms; over that floor "
          f"aimu_ray adds {hnd[0] - bare_hnd[0]:+.2f} ms on the handle path, {http[0] - bare_http[0]:+.2f} ms on HTTP")
    if "HTTP LiteLLM" in p:
        lit = p["HTTP LiteLLM"]
        print(f"LiteLLM vs aimu_ray:  p50 {lit[0]:.2f} vs {http[0]:.2f} ms = {lit[0] / http[0]:.2f}x, "
              f"p90 {lit[1] / http[1]:.2f}x; LiteLLM adds {lit[0] - base:.2f} ms over the SDK, "
              f"aimu_ray HTTP {http[0] - base:.2f} ms")

    def rates(title: str, totals: dict) -> None:
        print(f"\n{title}")
        print(f"{'path':<18}{'streams':>8}{'chunks':>8}{'chunks/s':>10}{'tokens/s':>10}{'first p50 ms':>14}")
        for name, t in totals.items():
            n = len(t["first"])
            tokens = f"{t['tokens'] / t['seconds']:>10.0f}" if t["usage"] else f"{'-':>10}"
            print(f"{name:<18}{n:>8}{t['chunks'] // n:>8}{t['chunks'] / t['seconds']:>10.0f}{tokens}"
                  f"{percentile(t['first'], 0.5):>14.2f}")

    rates(f"SSE, loopback echo of {LONG_WORDS} words sent at once (content chunks per stream, rates over the "
          f"whole streams)", echo)
    if "HTTP LiteLLM" not in echo:
        print(f"{'HTTP LiteLLM':<18}not measured: {litellm_note}")
    if "HTTP aimu_ray" in echo and "Serve handle" in echo:
        ratio = echo["HTTP aimu_ray"]["chunks"] / echo["HTTP aimu_ray"]["seconds"] / (
            echo["Serve handle"]["chunks"] / echo["Serve handle"]["seconds"])
        print(f"HTTP stream chunks/s = {ratio:.2f}x the handle stream's")
    rates(f"SSE, tiny HF model (random weights), max_tokens {args.hf_tokens}, greedy, one stream at a time", hf)


def main() -> None:
    args = parse_args()
    hf_dir = offline_tiny_model()
    with tempfile.TemporaryDirectory(prefix="serve-latency-") as workdir, loopback_server(0.0) as url:
        proxy_cm = (contextlib.nullcontext("skipped (--no-litellm)") if args.no_litellm
                    else litellm_proxy(url, Path(workdir), args.litellm_pythonpath))
        with proxy_cm as pending:
            try:
                app = start_app(url, hf_dir, workdir)
                start_bare_app(url)
                proxy_url, note = pending.wait() if isinstance(pending, PendingProxy) else (None, pending)
                key = pending.key if proxy_url else None
                knobs = " ".join(f"{k}={v}" for k, v in sorted(os.environ.items()) if k.startswith("RAY_SERVE_"))
                print(f"app at {app}; LiteLLM proxy: {note}; load average {os.getloadavg()[0]:.1f} on "
                      f"{os.cpu_count()} cores; {knobs or 'no RAY_SERVE_* set'}", flush=True)
                results = asyncio.run(measure(args, url, app, (proxy_url, key)))
            finally:
                shutdown()
    report(args, *results, note)
    print(f"\nload average at the end {os.getloadavg()[0]:.1f} (others may share this machine)")


if __name__ == "__main__":
    main()
