"""Ray actors: the shared pool of workers for remote providers (manager, workers, limiter) and its caller side.

``remote_backend()`` is what clients send remote-provider requests through.
"""

from .pool import RemoteBackend, remote_backend

__all__ = ["RemoteBackend", "remote_backend"]
