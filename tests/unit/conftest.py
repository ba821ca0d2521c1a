import pytest

from aimu_ray.engines import base as engine_base


@pytest.fixture
def fast_backoff(monkeypatch):
    """Retries back off in milliseconds, so retry tests are quick (Retry-After hints still rule)."""
    monkeypatch.setattr(engine_base, "BASE_DELAY_S", 0.01)
