"""How this process talks to Ray: connect once on first use, await a ref, unwrap a task's error.

``ensure_ray`` is what every entry point calls. Every named aimu_ray actor (the pool's, the model
registry, model actors) lives in ``NAMESPACE``. A Ray it starts may serve on Serve's fast path (``fast_serve_env``).
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
from concurrent.futures import ThreadPoolExecutor

import ray
from ray.actor import ActorHandle
from ray.exceptions import RayTaskError

from ..models.errors import MissingAPIKeyError, ModelError
from .haproxy import command_path

NAMESPACE = "aimu_ray"
# An embedded Ray is quiet: no dashboard, only Ray's errors. Worker output still reaches the driver
# (log_to_driver stays on) because that is where the engines' retry warnings are printed.
QUIET_RAY = {"include_dashboard": False, "logging_level": "ERROR"}

_lock = threading.Lock()
# Ray ties the processes it starts to the life of the *thread* that started them (PR_SET_PDEATHSIG),
# so a local Ray started from a short-lived thread dies with it. Off the main thread, start it here.
_starter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="aimu_ray-starter")


def ensure_ray(address: str | None = None, *, fast_serve: bool = True, **ray_init_kwargs) -> None:
    """Use the Ray this process has (a job, an actor, a notebook that called ``ray.init``); else connect.

    ``ray.init`` then looks for ``address``, ``RAY_ADDRESS``, a cluster started with ``ray start`` on this
    machine, and failing all of those starts an embedded local Ray, whose Serve takes the fast path unless
    ``fast_serve`` is False (a running cluster keeps the settings its nodes started with). Safe to call from many
    threads at once.
    """
    if ray.is_initialized():
        return
    with _lock:
        if ray.is_initialized():
            return
        _set_serve_env(fast_serve_env() if fast_serve else {})
        kwargs = {**QUIET_RAY, **ray_init_kwargs}
        if threading.current_thread() is threading.main_thread():
            ray.init(address, **kwargs)
        else:
            _starter.submit(ray.init, address, **kwargs).result()


# ----- Serve's fast path -----

GRPC_MESSAGE_BYTES = 512 << 20   # the largest handle request or answer on the fast path
PROXY_READY_S = 60               # how long HAProxy's manager may take to start
DRAINING_S = 2                   # how long a stopping ingress replica keeps answering
# HAProxy's stats and metrics, and Serve's proxy kept behind it as a fallback (8500 and 9500 unless set)
_HAPROXY_PORTS = ("RAY_SERVE_HAPROXY_STATS_PORT", "RAY_SERVE_HAPROXY_METRICS_PORT",
                  "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT", "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT")
_ours: set[str] = set()       # the variables this process set, so a later start can change or drop them


def fast_serve_env() -> dict[str, str]:
    """Ray's own switches for its fastest serving path, for the processes of a Ray started here.

    ``RAY_SERVE_THROUGHPUT_OPTIMIZED``: direct ingress (each ingress replica answers HTTP itself), gRPC between
    deployments, user code on the replica's own event loop. ``RAY_SERVE_ENABLE_HA_PROXY``: HAProxy in front of
    those replicas in place of Serve's proxy (which would take each request through two more Ray calls), run as
    ``aimu-ray-haproxy`` so that a client's disconnect reaches the request (``cluster.haproxy``); without that
    command (aimu_ray not installed) HAProxy stays off. Beside them: Serve's and the replicas' log lines go to stderr
    (the console of ``aimu-ray serve``) as they come, not held in Serve's files until 1,000 are buffered; a handle
    call may carry up to ``GRPC_MESSAGE_BYTES`` (gRPC's 4 MiB refuses a few images or a long clip); an ingress
    replica being stopped keeps answering ``DRAINING_S``, not 30 s; HAProxy's manager gets ``PROXY_READY_S`` to come
    up (Serve allows 5 s, short on a busy machine); its stats and metrics, and the Serve proxy it keeps as a
    fallback, get ports of this start's own, so two local Rays on one machine do not meet. A variable already set in
    this process's environment wins: Ray's names turn a part on or off (``RAY_SERVE_ENABLE_HA_PROXY=0`` keeps
    Serve's proxy).
    """
    env = {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1", "RAY_SERVE_LOG_TO_STDERR": "1",
           "RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE": "1",
           "RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH": str(GRPC_MESSAGE_BYTES),
           "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": str(DRAINING_S)}
    if haproxy := command_path():
        env.update(RAY_SERVE_ENABLE_HA_PROXY="1", RAY_SERVE_HAPROXY_BINARY_PATH=haproxy,
                   RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S=str(PROXY_READY_S),
                   **{name: str(_free_port()) for name in _HAPROXY_PORTS})
    return env


def _set_serve_env(env: dict[str, str]) -> None:
    """Put ``env`` in this process's environment (which the Ray it starts inherits), leaving alone what the user
    set; what an earlier start here set and ``env`` lacks is dropped."""
    for name in _ours - set(env):
        os.environ.pop(name, None)
    _ours.intersection_update(env)
    for name, value in env.items():
        if name not in os.environ or name in _ours:
            os.environ[name] = value
            _ours.add(name)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


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
