"""The caller's side of a running Serve app: requests for one served model through its deployment's handle.

The same clients (text, image, audio) send through it as through the pool or a model actor, so a Ray app or
job that calls a served model gets the same messages, streams, ``last_*`` and typed errors.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import AsyncIterator, Iterator

from ray.exceptions import RayActorError, RayTaskError
from ray.serve.exceptions import BackPressureError

from ..cluster.connection import unwrapped
from ..models.errors import ModelBusyError, ModelConnectionError

DEFAULT_APP = "aimu_ray"         # the app name `aimu-ray serve` deploys under
INGRESS = "ingress"              # every aimu_ray app's front deployment, which describes its models


class ServeBackend:
    """Requests for one served model through its deployment's handle."""

    def __init__(self, handle, name: str) -> None:
        self._handle = handle
        self._name = name

    async def call(self, request):
        with _typed(self._name):
            return await self._handle.run.remote(self._name, request)

    async def stream(self, request) -> AsyncIterator:
        """Items as the replica sends them; closing this early cancels the replica's work."""
        batches = self._handle.options(stream=True).stream.remote(self._name, request)
        try:
            with _typed(self._name):
                async for batch in batches:
                    for item in batch:
                        yield item
        finally:
            batches.cancel()


@contextmanager
def _typed(name: str) -> Iterator[None]:
    """Serve's and Ray's failures as the typed errors every backend raises (and the ingress maps to a status)."""
    try:
        yield
    except RayTaskError as failure:
        raise unwrapped(failure) from None
    except BackPressureError as failure:
        raise ModelBusyError(f"Model {name!r} is at capacity (its replicas' queues are full); retry in a "
                             "moment.") from failure
    except RayActorError as failure:      # died or unreachable under the request: it may have run, so it is not re-sent
        raise ModelConnectionError(f"The replica serving {name!r} was lost while it ran this request. Send it "
                                   "again in a moment: Serve replaces lost replicas.") from failure
