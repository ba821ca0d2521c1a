"""How this process talks to Ray: connect once on first use, await a ref, unwrap a task's error.

``ensure_ray`` is what every entry point calls. Every named aimu_ray actor (the pool's, the model
registry, model actors) lives in ``NAMESPACE``.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import ray
from ray.actor import ActorHandle
from ray.exceptions import RayTaskError

from ..models.errors import MissingAPIKeyError, ModelError

NAMESPACE = "aimu_ray"
# An embedded Ray is quiet: no dashboard, only Ray's errors. Worker output still reaches the driver
# (log_to_driver stays on) because that is where the engines' retry warnings are printed.
QUIET_RAY = {"include_dashboard": False, "logging_level": "ERROR"}

_lock = threading.Lock()
# Ray ties the processes it starts to the life of the *thread* that started them (PR_SET_PDEATHSIG),
# so a local Ray started from a short-lived thread dies with it. Off the main thread, start it here.
_starter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="aimu_ray-starter")


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


def result_of(ref: ray.ObjectRef):
    """Await a ref through its concurrent future: ~0.15 ms less per call here than ``await ref``."""
    return asyncio.wrap_future(ref.future())


def unwrapped(error: RayTaskError) -> BaseException:
    """The exception the actor raised, instead of Ray's wrapper around it.

    Typed model errors arrive as the actor raised them, with their own ``__cause__``. Anything else
    is a bug, so it keeps Ray's wrapper (and the remote traceback) as its context.
    """
    cause = error.cause
    cause.__suppress_context__ = isinstance(cause, (ModelError, MissingAPIKeyError))
    return cause


def named_actor(name: str) -> ActorHandle | None:
    """The live aimu_ray actor called ``name`` (a model actor, a pool worker), or None when there is none."""
    try:
        return ray.get_actor(name, namespace=NAMESPACE)
    except ValueError:
        return None
