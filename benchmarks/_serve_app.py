"""The Serve app the Serve benchmarks measure: a loopback remote model and the tiny HF model, on a local Ray."""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

from aimu_ray.demo.servers import free_port


def offline_tiny_model() -> Path:
    """Offline settings for this process and Ray's, and the tiny HF model's folder (built on first use)."""
    for name, value in (("RAY_AUTH_MODE", "disabled"), ("HF_HUB_OFFLINE", "1"), ("TRANSFORMERS_OFFLINE", "1")):
        os.environ.setdefault(name, value)
    from aimu_ray.demo.tiny_models import build_tiny_hf_lm, tiny_model_cache

    return build_tiny_hf_lm(tiny_model_cache() / "tiny-llama-hf")


def start_app(url: str, hf_dir: Path, output_dir: str, app: str = "aimu_ray", fast_serve: bool = False) -> str:
    """Start Ray (on Serve's fast path if ``fast_serve``) and the app ("echo": the loopback server,
    "tiny": the HF model); returns the HTTP base URL."""
    import aimu_ray
    from aimu_ray.deployments import AppConfig, run

    aimu_ray.init(num_cpus=4, fast_serve=fast_serve, include_dashboard=False, log_to_driver=False)
    logging.getLogger("ray.serve").setLevel(logging.WARNING)
    config = AppConfig(name=app, port=free_port(), output_dir=output_dir, models=[
        {"name": "echo", "model": f"openai-compat:m@{url}/v1", "options": {"max_retries": 0}},
        {"name": "tiny", "model": f"hf:{hf_dir}"}])
    run(config, access_log=False)
    return f"http://127.0.0.1:{config.port}"


def shutdown() -> None:
    import ray
    from ray import serve

    if ray.is_initialized():
        with contextlib.suppress(Exception):
            serve.shutdown()
        ray.shutdown()
