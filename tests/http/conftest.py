"""Shared fixtures of the HTTP tests: each module serves one app of its own over HTTP on a local Ray."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import ray
from ray import serve

import aimu_ray
from aimu_ray.deployments import AppConfig, run


@pytest.fixture(scope="module")
def serve_app() -> Iterator[Callable[..., str]]:
    """``serve_app(config, **ray_init)`` starts a local Ray (4 CPUs; ``num_gpus=`` adds logical GPUs), deploys the
    app and gives its base URL; Serve and Ray stop after the module's last test. The browser tests use it too.

    Ray starts only when the app is served, so what a module sets up first (a provider key in the environment)
    reaches the replicas.
    """
    def start(config: AppConfig, **ray_init) -> str:
        aimu_ray.init(num_cpus=4, **ray_init)
        run(config, access_log=False)
        return f"http://127.0.0.1:{config.port}"

    yield start
    if ray.is_initialized():             # else the module never served its app, and serve.shutdown would start a Ray
        serve.shutdown()
        aimu_ray.shutdown()
