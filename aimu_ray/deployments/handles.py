"""The aimu client contract over a running Serve app's deployment handles.

``ServeBackend`` is a backend like the pool's or a model actor's: the same clients (text, image,
audio) send their requests through it, so a Ray app or job that calls a served model gets the same
messages, streams, ``last_*`` and typed errors as ``aimu_ray.client(...)`` — and the ingress answers
HTTP with these very clients. Requests name the served model; the deployment supplies endpoint, key
and weights.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import AsyncIterator, Iterator

from ray import serve
from ray.exceptions import RayActorError, RayTaskError
from ray.serve.exceptions import BackPressureError

from ..actors.calls import unwrapped
from ..client import AsyncTextClient
from ..media_client import AsyncAudioClient, AsyncImageClient
from ..models.errors import ModelBusyError, ModelConnectionError

DEFAULT_APP = "aimu_ray"
INGRESS = "ingress"


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


def served_client(model: str, backend: ServeBackend, task: str, *, system_message: str | None = None):
    """The aimu client for a served model's task, sending through ``backend``."""
    if task == "text":
        return AsyncTextClient.served(model, backend, system_message=system_message)
    return (AsyncImageClient if task == "image" else AsyncAudioClient).served(model, backend)


async def connect(name: str, *, app: str = DEFAULT_APP, system_message: str | None = None):
    """An async client for the model the running app serves as ``name`` (text, image or audio client).

    With the default ``app`` and no app of that name (``serve run`` calls its app ``default``), the running
    aimu_ray app that serves ``name`` answers, whatever its name.
    """
    try:
        described = await _describe(app, name)
    except KeyError:                                  # no such app (a name the app does not serve: ValueError)
        if app != DEFAULT_APP:
            raise
        app, described = await _serving(name)
    handle = serve.get_deployment_handle(described["deployment"], app_name=app)
    return served_client(described["model"], ServeBackend(handle, name), described["task"],
                         system_message=system_message)


async def _describe(app: str, name: str) -> dict:
    ingress = serve.get_deployment_handle(INGRESS, app_name=app)
    try:
        return await ingress.describe.remote(name)
    except RayTaskError as failure:
        raise unwrapped(failure) from None


async def _serving(name: str) -> tuple[str, dict]:
    """The app, among those with an aimu_ray ingress, that serves ``name``, and its ingress's description."""
    apps = [app for app, status in serve.status().applications.items() if INGRESS in status.deployments]
    for app in apps:
        try:
            return app, await _describe(app, name)
        except ValueError:
            continue
    raise KeyError(f"no running app serves {name!r} (aimu_ray apps: {', '.join(apps) or 'none'})")
