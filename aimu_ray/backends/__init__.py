"""What sends a request to a host: one ``Backend`` protocol (``base``) and its four implementations.

``pool`` sends remote-provider requests to the shared pool of workers, ``model`` to an in-process model's own
actor, ``serve`` to a Serve deployment's handle, ``hosted`` to an engine loaded in the caller's own process (a
dataset worker's); ``calls`` is the one actor call the first two share,
and ``models.retry`` the one retry loop. Ray is imported only when a backend is first asked for, so importing
``aimu_ray`` stays cheap.
"""

from __future__ import annotations

from ..models.load import ModelLoad
from .base import Backend

__all__ = ["Backend", "backend_for", "reset_backends"]


def backend_for(load: ModelLoad | None) -> Backend:
    """The pool for remote providers (``load`` is None); the model's own actor for in-process ones."""
    if load is None:
        from .pool import pool_backend
        return pool_backend()
    from .model import model_backend
    return model_backend(load)


def reset_backends(*, pool: bool = True) -> None:
    """Forget this process's model actor handles and, with ``pool``, the pool's manager and workers: after
    ``ray.shutdown`` all point at nothing; after an unload only the model actors' handles do."""
    from .model import reset_model_backends
    reset_model_backends()
    if pool:
        from .pool import pool_backend
        pool_backend().reset()
