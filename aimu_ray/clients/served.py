"""Clients for the models a running aimu_ray Serve app serves (``aimu_ray.connect``), by the names it serves them as.

The app's ingress says what a name is. An in-process model's copies are reached directly (the model registry's, as
``aimu_ray.client`` reaches them: no hop through the ingress); a remote model through the ingress's handle
(``backends.serve.ServeBackend``), whose replica supplies endpoint and key and calls the provider. Either way a Ray
app or job gets the same messages, streams, ``last_*`` and typed errors as ``aimu_ray.client(...)``.
"""

from __future__ import annotations

from ray import serve
from ray.exceptions import RayTaskError

from ..backends.base import Backend
from ..backends.model import model_backend
from ..backends.serve import DEFAULT_APP, INGRESS, ServeBackend
from ..cluster.connection import unwrapped
from .media import ServedAudioClient, ServedImageClient
from .text import ServedTextClient


def served_client(model: str, backend: Backend, task: str, *, system_message: str | None = None):
    """The aimu client for a served model's task, sending through ``backend``."""
    if task == "text":
        return ServedTextClient(model, backend, system_message=system_message)
    return (ServedImageClient if task == "image" else ServedAudioClient)(model, backend)


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
    if described["load"] is not None:
        backend = model_backend(described["load"])
    else:
        backend = ServeBackend(serve.get_deployment_handle(described["deployment"], app_name=app), name)
    return served_client(described["model"], backend, described["task"], system_message=system_message)


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
