"""Where aimu_ray runs: the Ray connection, made once on first use, and the shared pool's settings.

``ensure_ray`` is what every entry point calls; ``init`` is the explicit form for users who want to
pick the cluster, shape the worker pool or cap a provider's requests in flight before the first call.
``served_ray`` finds the embedded Ray of a running ``aimu-ray serve``, which ``ray.init`` cannot find.
"""

from __future__ import annotations

import getpass
import logging
import os
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Iterator, Mapping

import psutil
import ray
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, TypeAdapter, model_validator

from .models.limits import Limits, set_limits

logger = logging.getLogger("aimu_ray")

# An embedded Ray is quiet: no dashboard, only Ray's errors. Worker output still reaches the driver
# (log_to_driver stays on) because that is where the engines' retry warnings are printed.
QUIET_RAY = {"include_dashboard": False, "logging_level": "ERROR"}

_lock = threading.Lock()
# Ray ties the processes it starts to the life of the *thread* that started them (PR_SET_PDEATHSIG),
# so a local Ray started from a short-lived thread dies with it. Off the main thread, start it here.
_starter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="aimu_ray-starter")


class PoolConfig(BaseModel):
    """Shape of the shared pool of workers that run remote-provider requests (see ``actors.pool``)."""

    model_config = ConfigDict(frozen=True)

    min_workers: PositiveInt = Field(2, description="two: a burst finds more than one core's worth of SDK "
                                                    "work ready, and a dead worker's requests retry at once")
    max_workers: PositiveInt | None = Field(None, description="None: one per CPU of the cluster when the pool "
                                                              "is created (a worker is one process: one core)")
    max_concurrency: PositiveInt = Field(1000, description="requests one worker runs at once")
    num_cpus: float = Field(0.0, ge=0, description="requests are IO-bound: 0 never keeps a model actor "
                                                   "from being scheduled")
    scale_up_at: PositiveInt = Field(100, description="mean in-flight requests per worker above which "
                                                      "the pool grows by one worker")
    check_interval_s: float = Field(0.5, gt=0, description="how often the manager looks at the load")

    @model_validator(mode="after")
    def _ordered(self) -> PoolConfig:
        if self.max_workers is not None and self.max_workers < self.min_workers:
            raise ValueError(f"max_workers ({self.max_workers}) is below min_workers ({self.min_workers}).")
        return self


_LIMITS = TypeAdapter(dict[str, PositiveInt])


def ensure_ray(address: str | None = None, **ray_init_kwargs) -> None:
    """Use the Ray this process has (a job, an actor, a notebook that called ``ray.init``); else connect.

    ``ray.init`` then looks for ``address``, ``RAY_ADDRESS``, a cluster started with ``ray start`` on this
    machine, and failing all of those starts an embedded local Ray. Safe to call from many threads at once.
    """
    if ray.is_initialized():
        return
    with _lock:
        if ray.is_initialized():
            return
        kwargs = {**QUIET_RAY, **ray_init_kwargs}
        if threading.current_thread() is threading.main_thread():
            ray.init(address, **kwargs)
        else:
            _starter.submit(ray.init, address, **kwargs).result()


def init(address: str | None = None, *, max_in_flight: Mapping[str, int] | None = None,
         pool: PoolConfig | Mapping | None = None, limits: Limits | Mapping | None = None,
         **ray_init_kwargs) -> None:
    """Connect to Ray now, and set the pool every client on the cluster shares.

    ``max_in_flight={"anthropic": 50}`` caps the requests in flight to each named provider across the
    whole cluster (every process, every worker) to protect the account's quota; it replaces the limits
    in force, and ``{}`` lifts them. ``pool`` is a ``PoolConfig`` (or its fields as a dict). Other
    keyword arguments go to ``ray.init``. Both settings outlive this process: they belong to the cluster.
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
        from .actors.pool import configure_pool
        configure_pool(config, in_flight)


def shutdown() -> None:
    """Forget this process's pool and model handles and disconnect from Ray (an embedded local Ray stops with it)."""
    from .actors import remote_backend
    from .actors.model_backend import reset_model_backends
    remote_backend().reset()
    reset_model_backends()
    ray.shutdown()


class ServedRay(BaseModel):
    """The Ray of a running ``aimu-ray serve``, as it records itself for the other ``aimu-ray`` commands."""

    address: str
    pid: int
    started: float = Field(description="the process's start time: a pid reused by another process is not it")
    app: str
    url: str

    def alive(self) -> bool:
        try:
            return psutil.Process(self.pid).create_time() == self.started
        except psutil.Error:
            return False


def served_rays_dir() -> Path:
    """Where the records are: the temp dir (``$TMPDIR``), one folder per user (its uid, or its name on Windows)."""
    return Path(tempfile.gettempdir()) / f"aimu_ray-serve-{getattr(os, 'getuid', getpass.getuser)()}"


@contextmanager
def recording_served_ray(address: str, app: str, url: str) -> Iterator[None]:
    """While the block runs, a file names this process's Ray, so other commands join it instead of starting one."""
    me = psutil.Process()
    record = ServedRay(address=address, pid=me.pid, started=me.create_time(), app=app, url=url)
    path = served_rays_dir() / f"{me.pid}.json"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(record.model_dump_json())
    except OSError as error:
        logger.warning("Other aimu-ray commands will not find this Ray (%s): give them --address %s.",
                       error, record.address)
    try:
        yield
    finally:
        with suppress(OSError):                   # never written, or removed already
            path.unlink()


def served_ray() -> ServedRay | None:
    """The most recently started ``aimu-ray serve`` still running, if any (a killed one leaves a stale file)."""
    live = []
    for path in served_rays_dir().glob("*.json"):
        try:
            record = ServedRay.model_validate_json(path.read_text())
        except (OSError, ValueError):
            continue                                     # being written, or not ours
        if record.alive():
            live.append(record)
    return max(live, key=lambda record: record.started, default=None)


def _validated_limits(max_in_flight: Mapping[str, int]) -> dict[str, int]:
    from .models.providers import PROVIDERS
    limits = _LIMITS.validate_python(dict(max_in_flight))
    unknown = sorted(set(limits) - set(PROVIDERS))
    if unknown:
        raise ValueError(f"max_in_flight names unknown provider(s) {', '.join(unknown)}. "
                         f"Providers: {', '.join(PROVIDERS)}.")
    return limits
