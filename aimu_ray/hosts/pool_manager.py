"""The pool manager: one named, detached actor per cluster that starts and watches the workers and the limiter.

Every process finds it by name (``get_manager``), so all clients on the cluster share one pool. It is
never on a request's path: callers cache the worker handles it hands out and refresh them now and then.

Scaling rule, checked every ``check_interval_s``: each worker is asked how many requests it is running;
if the total divided by the number of workers (those still starting count, with none) is above
``scale_up_at``, one worker is added, up to ``max_workers``. One step per check, and counting a worker
from the moment it is asked for, keep a burst from starting many processes at once. The cap defaults to
the cluster's CPU count: a worker is one Python process, so beyond one worker per core the SDK work
gains nothing. The pool does not shrink: an idle worker costs memory but no CPU.

Failures: a worker that does not answer because it died is replaced, and the limiter takes back the
permits it held. Callers that see a worker die report it with ``workers(lost=...)``, which replaces
it at once rather than at the next check. The manager is only the control plane: the workers and the
limiter are detached actors of their own, and the limits live in Ray's GCS (``limiter.save_limits``),
so a manager that dies takes no request or quota with it; Ray restarts it, and it adopts the workers
by name and reads the limits back.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Sequence

import ray
from ray.actor import ActorHandle
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, model_validator
from ray.exceptions import RayActorError

from ..cluster.connection import NAMESPACE
from .limiter import LIMITER_NAME, MAX_CONCURRENCY, Limiter, save_limits, saved_limits
from .pool_worker import WORKER_PREFIX, PoolWorker, named_workers

logger = logging.getLogger("aimu_ray")

MANAGER_NAME = "pool"


class PoolConfig(BaseModel):
    """Shape of the shared pool of workers that run remote-provider requests (see ``PoolManager``)."""

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


@ray.remote
class PoolManager:
    def __init__(self, config: PoolConfig) -> None:
        self._config = self._resolved(config)
        self._limits = saved_limits()
        self._limiter = _limiter_actor() if self._limits else None
        self._workers = named_workers()              # after a restart: those the manager started before
        for worker in self._workers.values():        # which may have missed a configure that the restart cut short
            worker.set_limits.remote(self._limits, self._limiter)
        self._fill()
        self._watcher = asyncio.get_running_loop().create_task(self._watch())

    async def workers(self, lost: Sequence[str] = ()) -> dict[str, ActorHandle]:
        """The current workers by key, after replacing those the caller found dead."""
        for key in lost:
            self._replace(key)
        return dict(self._workers)

    async def configure(self, config: PoolConfig | None, limits: dict[str, int] | None) -> None:
        """New pool shape and/or provider limits; workers learn the limits before this returns.

        A new shape applies to workers started from now on; the pool grows to ``min_workers`` at once.
        """
        if config is not None:
            self._config = self._resolved(config)
            self._fill()
        if limits is None:
            return
        save_limits(limits)
        self._limits = limits
        if limits and self._limiter is None:
            self._limiter = _limiter_actor()
        if self._limiter is not None:
            await self._limiter.set_limits.remote(limits)
        # A worker that died meanwhile is ignored here: its replacement starts with the new limits.
        await asyncio.gather(*(worker.set_limits.remote(limits, self._limiter)
                               for worker in self._workers.values()), return_exceptions=True)

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self._config.check_interval_s)
            try:
                await self._check()
            except Exception:                        # one bad check must not stop the watch for good
                logger.exception("Pool check failed")

    async def _check(self) -> None:
        """Replace dead workers, then grow by one if the load per worker (starting ones included) is high."""
        keys = list(self._workers)
        futures = [asyncio.wrap_future(self._workers[key].in_flight.remote().future()) for key in keys]
        await asyncio.wait(futures, timeout=4 * self._config.check_interval_s)
        loads = []
        for key, future in zip(keys, futures):
            if not future.done():
                future.cancel()                      # starting up, or too busy to say: no vote
            elif isinstance(future.exception(), RayActorError):
                self._replace(key)
            elif future.exception() is None:
                loads.append(future.result())
        if sum(loads) / len(self._workers) > self._config.scale_up_at \
                and len(self._workers) < self._config.max_workers:
            self._spawn()

    @staticmethod
    def _resolved(config: PoolConfig) -> PoolConfig:
        """``max_workers=None`` made concrete: the cluster's CPU count, and never below ``min_workers``."""
        if config.max_workers is not None:
            return config
        cpus = int(ray.cluster_resources().get("CPU", 1))
        return config.model_copy(update={"max_workers": max(cpus, config.min_workers)})

    def _fill(self) -> None:
        while len(self._workers) < self._config.min_workers:
            self._spawn()

    def _spawn(self) -> None:
        key = uuid.uuid4().hex[:12]
        self._workers[key] = PoolWorker.options(
            name=WORKER_PREFIX + key, namespace=NAMESPACE, lifetime="detached",
            max_concurrency=self._config.max_concurrency, num_cpus=self._config.num_cpus,
            scheduling_strategy="SPREAD").remote(key, self._limits, self._limiter)

    def _replace(self, key: str) -> None:
        """Swap a dead worker for a new one, once: callers and the watch may both report the same death."""
        worker = self._workers.pop(key, None)
        if worker is None:
            return
        ray.kill(worker)                             # a worker reported lost may only be unreachable
        if self._limiter is not None:
            self._limiter.release_holder.remote(key)
        self._spawn()


def _limiter_actor() -> ActorHandle:
    """The cluster's limiter; detached and restarted by Ray, so it outlives the manager and its own crashes."""
    return Limiter.options(name=LIMITER_NAME, namespace=NAMESPACE, get_if_exists=True, lifetime="detached",
                           num_cpus=0, max_concurrency=MAX_CONCURRENCY, max_restarts=-1,
                           max_task_retries=-1).remote()


def get_manager(config: PoolConfig | None = None) -> ActorHandle:
    """The cluster's pool manager, created by whoever asks first (``config`` applies only then)."""
    return PoolManager.options(name=MANAGER_NAME, namespace=NAMESPACE, get_if_exists=True, lifetime="detached",
                               num_cpus=0, max_restarts=-1, max_task_retries=-1).remote(config or PoolConfig())


def configure_pool(config: PoolConfig | None, limits: dict[str, int] | None) -> None:
    """Apply ``aimu_ray.init(pool=..., max_in_flight=...)`` to the cluster's pool (blocks until applied)."""
    ray.get(get_manager(config).configure.remote(config, limits))
