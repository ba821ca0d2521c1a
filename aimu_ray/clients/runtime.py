"""``aimu_ray.init`` and ``shutdown``: pick the cluster, shape the shared pool, cap providers' requests in flight.

Every entry point connects on first use (``cluster.connection.ensure_ray``); ``init`` is the explicit form for
users who want to choose before the first call.
"""

from __future__ import annotations

import logging
from typing import Mapping

import ray
from pydantic import PositiveInt, TypeAdapter

from ..cluster.connection import ensure_ray
from ..hosts.pool_manager import PoolConfig
from ..models.limits import Limits, set_limits

logger = logging.getLogger("aimu_ray")

_LIMITS = TypeAdapter(dict[str, PositiveInt])


def init(address: str | None = None, *, max_in_flight: Mapping[str, int] | None = None,
         pool: PoolConfig | Mapping | None = None, limits: Limits | Mapping | None = None,
         **ray_init_kwargs) -> None:
    """Connect to Ray now, and set the pool every client on the cluster shares.

    ``max_in_flight={"anthropic": 50}`` caps the requests in flight to each named provider across the
    whole cluster (every process, every worker) to protect the account's quota; it replaces the limits
    in force, and ``{}`` lifts them. ``pool`` is a ``PoolConfig`` (or its fields as a dict). Both settings
    outlive this process: they belong to the cluster. Other keyword arguments go to ``ray.init``, but
    ``fast_serve``: a Ray started here serves on Serve's fast path (``cluster.connection.fast_serve_env``) unless
    it is False.
    ``limits`` (a ``Limits`` or its fields) bounds what this process's requests may carry (``set_limits``).
    """
    if ray.is_initialized() and (address or ray_init_kwargs):
        logger.warning("Ray is already initialised in this process; address and ray.init arguments are ignored.")
    in_flight = None if max_in_flight is None else _validated_limits(max_in_flight)
    config = None if pool is None else PoolConfig.model_validate(pool)
    if limits is not None:
        set_limits(limits)
    ensure_ray(address, **ray_init_kwargs)
    if in_flight is not None or config is not None:
        from ..hosts.pool_manager import configure_pool
        configure_pool(config, in_flight)


def shutdown() -> None:
    """Forget this process's pool and model handles and disconnect from Ray (an embedded local Ray stops with it)."""
    from ..backends import reset_backends
    reset_backends()
    ray.shutdown()


def _validated_limits(max_in_flight: Mapping[str, int]) -> dict[str, int]:
    from ..models.providers import PROVIDERS
    limits = _LIMITS.validate_python(dict(max_in_flight))
    unknown = sorted(set(limits) - set(PROVIDERS))
    if unknown:
        raise ValueError(f"max_in_flight names unknown provider(s) {', '.join(unknown)}. "
                         f"Providers: {', '.join(PROVIDERS)}.")
    return limits
