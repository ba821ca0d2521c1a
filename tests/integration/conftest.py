"""Shared fixtures of the integration tests.

A module that runs on a local Ray asks for one with ``pytestmark = pytest.mark.usefixtures("local_ray")``
and says how big it is with ``RAY_INIT`` (default: 2 CPUs). Modules that start their own clusters
(``ray start`` nodes) do neither.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import aimu_ray

DEFAULT_RAY_INIT = {"num_cpus": 2}


@pytest.fixture(scope="module")
def local_ray(request: pytest.FixtureRequest) -> Iterator[None]:
    """A local Ray of the module's own, started before its first test and shut down after its last.

    The module's ``RAY_INIT`` goes to ``aimu_ray.init`` (``num_gpus`` there are logical GPUs, so tests can
    place models on GPUs a CPU-only machine does not have).
    """
    aimu_ray.init(**getattr(request.module, "RAY_INIT", DEFAULT_RAY_INIT))
    yield
    aimu_ray.shutdown()
