"""Shared fixtures of the HTTP tests: each module serves one app of its own over HTTP on a local Ray."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import ray
from ray import serve

import aimu_ray
from aimu_ray.deployments import AppConfig, run


@pytest.fixture(scope="module")
def serve_app() -> Iterator[Callable[[AppConfig], str]]:
    """``serve_app(config)`` starts a local Ray (4 CPUs), deploys the app and gives its base URL; Serve and Ray
    stop after the module's last test.

    Ray starts only when the app is served, so what a module sets up first (a provider key in the environment)
    reaches the replicas.
    """
    def start(config: AppConfig) -> str:
        aimu_ray.init(num_cpus=4)
        run(config, access_log=False)
        return f"http://127.0.0.1:{config.port}"

    yield start
    if ray.is_initialized():             # else the module never served its app, and serve.shutdown would start a Ray
        serve.shutdown()
        aimu_ray.shutdown()
