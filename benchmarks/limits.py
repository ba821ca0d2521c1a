"""Limits: what one request can cost a served model, and what a request queued behind it waits.

An app on a local Ray serves the tiny HF text model and the tiny Stable Diffusion (random weights, CPU).
Prompts: one chat at a time whose one message is "x " repeated to a body of 0.5, 2, 5 and 50 MiB (max_tokens 4);
for each, the status and error code, the time to the answer, and the resident memory of the HF model actor, the ingress
and Serve's HTTP proxy before and at its peak (psutil, sampled every 20 ms while the request runs).
Images: the largest size a request may ask for (9999x9999 probed, and one pixel over the limit), then how long a
64x64 request sent just after waits behind the largest allowed request, and behind one whose caller left after a
second (the loop stops at its next step).
The app's image limit is --max-side squared (a CPU does not draw 2048x2048, the default, in a benchmark's time).

Run against code without limits (an older checkout: PYTHONPATH=<checkout> python <checkout>/benchmarks/limits.py)
it never sends the 50 MiB body nor the 9999x9999 image: either takes this machine's memory.
Run: python benchmarks/limits.py [--max-side 256] [--steps 4]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks._serve_app import offline_tiny_model, shutdown  # noqa: E402

APP = "limits_bench"
MIB = 2**20
SIZES_MIB = (0.5, 2, 5, 50)
LIMITED = importlib.util.find_spec("aimu_ray.models.limits") is not None     # False: code from before the limits


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-side", type=int, default=256, help="the app's image limit is this side squared")
    parser.add_argument("--steps", type=int, default=4, help="denoising steps of the large image request")
    return parser.parse_args()


def start(hf_dir: Path, sd_dir: Path, max_side: int) -> str:
    import logging

    import ray

    from aimu_ray.demo.servers import free_port
    from aimu_ray.deployments import AppConfig, run

    ray.init(num_cpus=4, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    logging.getLogger("ray.serve").setLevel(logging.WARNING)
    limits = {"limits": {"max_image_pixels": max_side * max_side}} if LIMITED else {}
    config = AppConfig(name=APP, port=free_port(), output_dir=tempfile.mkdtemp(), **limits, models=[
        {"name": "tiny", "model": f"hf:{hf_dir}"}, {"name": "painter", "model": f"hf:{sd_dir}", "task": "image"}])
    run(config, access_log=False)
    return f"http://127.0.0.1:{config.port}"


def pid_of(actor_class: str) -> int:
    """The process of the live actor of that class (Ray's actor table: other clusters are never measured)."""
    from ray._private.state import actors

    return next(actor["Pid"] for actor in actors().values()
                if actor["State"] == "ALIVE" and actor["ActorClassName"] == actor_class)


class PeakRSS:
    """The largest resident memory of one process while the block runs."""

    def __init__(self, pid: int):
        import psutil

        self.process, self.peak, self._done = psutil.Process(pid), 0, threading.Event()
        self.before = self.process.memory_info().rss

    def __enter__(self) -> PeakRSS:
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._done.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            self._done.wait(0.02)


def timed_post(url: str, body: dict | bytes, timeout: float = 600) -> tuple[int, str, float]:
    """(status, error code or "", seconds) of one POST."""
    import httpx

    started = time.perf_counter()
    content = body if isinstance(body, bytes) else None
    answer = httpx.post(url, json=None if content else body, content=content, timeout=timeout,
                        headers={"Content-Type": "application/json"})
    elapsed = time.perf_counter() - started
    code = (answer.json().get("error", {}).get("code") or "") if answer.status_code >= 400 else ""
    return answer.status_code, code, elapsed


def chat_body(mebibytes: float) -> bytes:
    """A chat body of about ``mebibytes`` MiB, its one message "x " repeated: the issue's request at 50."""
    head, tail = b'{"model": "tiny", "max_tokens": 4, "messages": [{"role": "user", "content": "', b'"}]}'
    return head + b"x " * (int(mebibytes * MIB) // 2) + tail


def prompts(app: str) -> None:
    processes = {"HF model actor": "ModelActor", "ingress": f"ServeReplica:{APP}:ingress",
                 "Serve proxy": "ProxyActor"}
    pids = {label: pid_of(actor_class) for label, actor_class in processes.items()}
    print(f"{'':43}resident memory, MiB: before -> peak\n{'body':>9}  {'status':>6}  {'code':<24}  {'time':>7}"
          + "".join(f"{label:>18}" for label in pids))
    for mebibytes in SIZES_MIB:
        if mebibytes > 5 and not LIMITED:
            print(f"{mebibytes:>5} MiB  not sent: code without limits takes the machine's memory with it (the "
                  "issue: the HF replica grew 506 -> 16,007 MiB at 100 % CPU, still running after the client left)")
            continue
        body = chat_body(mebibytes)
        watches = [PeakRSS(pid) for pid in pids.values()]
        with contextlib.ExitStack() as stack:
            for watch in watches:
                stack.enter_context(watch)
            status, code, elapsed = timed_post(f"{app}/v1/chat/completions", body)
        print(f"{len(body) / MIB:>5.1f} MiB  {status:>6}  {code:<24}  {elapsed:>6.2f}s" + "".join(
            f"{watch.before / MIB:>9,.0f} -> {max(watch.peak, watch.before) / MIB:>5,.0f}" for watch in watches))


def image(side: int, steps: int, seed: int = 0) -> dict:
    return {"model": "painter", "prompt": "a fox", "size": f"{side}x{side}", "num_inference_steps": steps, "seed": seed}


def behind(app: str, large: dict, leave_after_s: float | None) -> tuple[float, int]:
    """Seconds a 64x64 one-step request, sent 0.3 s after ``large``, takes; the large request's status (0: left)."""
    import httpx

    outcome = {}

    def send_large() -> None:
        try:
            outcome["status"] = httpx.post(f"{app}/v1/images/generations", json=large,
                                           timeout=leave_after_s or 600).status_code
        except httpx.TimeoutException:
            outcome["status"] = 0                                     # the caller left

    thread = threading.Thread(target=send_large)
    thread.start()
    time.sleep(0.3)
    _, _, waited = timed_post(f"{app}/v1/images/generations", image(64, 1, seed=1))
    thread.join()
    return waited, outcome["status"]


def images(app: str, max_side: int, steps: int) -> None:
    url = f"{app}/v1/images/generations"
    if LIMITED:
        for side in (9999, max_side + 1):
            status, code, elapsed = timed_post(url, image(side, 1))
            print(f"{side}x{side}: {status} {code} in {elapsed * 1000:.0f} ms")
    else:
        print("9999x9999 (the body's size pattern allows 1-9999 a side): accepted; not sent (hours, and the memory)")
    _, _, alone = timed_post(url, image(64, 1, seed=1))
    _, _, largest = timed_post(url, image(max_side, steps))
    print(f"a 64x64 1-step request alone: {alone:.2f}s; a {max_side}x{max_side} {steps}-step request alone: "
          f"{largest:.2f}s")
    waited, status = behind(app, image(max_side, steps), None)
    print(f"64x64 sent 0.3 s after the {max_side}x{max_side} request (status {status}): answered in {waited:.2f}s")
    waited, status = behind(app, image(max_side, 200), 1.0)
    print(f"64x64 sent 0.3 s after a {max_side}x{max_side} 200-step request whose caller left at 1 s: answered in "
          f"{waited:.2f}s (one step of {max_side}x{max_side} is about {(largest - alone) / steps:.2f}s)")


def main() -> None:
    args = parse_args()
    from aimu_ray.demo.tiny_image import tiny_sd_dir

    hf_dir, sd_dir = offline_tiny_model(), tiny_sd_dir()
    source = Path(importlib.util.find_spec("aimu_ray").origin).parent
    print(f"code {'with' if LIMITED else 'WITHOUT'} request limits ({source})")
    try:
        app = start(hf_dir, sd_dir, args.max_side)
        print("\n== prompts: one chat at a time to the tiny HF model (context 512 tokens)")
        prompts(app)
        print(f"\n== images: the tiny Stable Diffusion, limit {args.max_side}x{args.max_side} where there are limits")
        images(app, args.max_side, args.steps)
    finally:
        shutdown()


if __name__ == "__main__":
    main()
