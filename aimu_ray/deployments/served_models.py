"""The models one ingress replica serves: the config's, and those the admin API added or removed since (the
app's ``catalog``), each resolved once into what a request needs: its model string as served and the backend that
reaches it (the remote provider, called from this replica, or the in-process model's copies through the model
registry).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from ray.exceptions import RayActorError

from ..backends.base import Backend
from ..backends.model import model_backend
from ..clients.requests import served_model
from ..models.errors import ModelLoadingError
from ..models.load import ModelLoad
from ..models.model_string import ResolvedModel
from .catalog import REFRESH_S, catalog
from .config import AppConfig, ServedModel
from .remote_models import RemoteModels

logger = logging.getLogger("aimu_ray")


@dataclass(frozen=True)
class Served:
    """One served model as this ingress sends to it."""

    config: ServedModel
    model: ResolvedModel           # as served: a remote model passes tools, images and thinking through
    backend: Backend               # the remote provider (``RemoteModel``), or the model's copies
    load: ModelLoad | None = None  # an in-process model's: its copies' key in the registry's rows

    def warn(self, message: str) -> None:
        """What the model cannot honour of a request (a dropped kwarg, thinking it does not do), in the log."""
        logger.warning("%s: %s", self.model, message)


class ServedModels:
    def __init__(self, config: AppConfig, app: str) -> None:
        self._config, self._app = config, app
        self._remote = RemoteModels()
        self._served = {model.name: self._resolve(model) for model in config.models}
        self._version, self._synced_at = 0, 0.0
        self.load_errors: dict[str, str] = {}       # served name → why its last load failed
        self._loading: set[asyncio.Task] = set()     # loads started for no waiting caller (kept referenced)

    def get(self, name: str) -> Served | None:
        return self._served.get(name)

    def all(self) -> list[Served]:
        return list(self._served.values())

    def in_config(self, name: str) -> bool:
        return self._config.model(name) is not None

    async def load_at_start(self) -> None:
        """Load the in-process models that load at start; a failure is kept for the model's card, not raised."""
        starting = [s for s in self._served.values() if s.load is not None and s.config.load == "startup"]
        await asyncio.gather(*(self.loaded(served) for served in starting), return_exceptions=True)

    def load_soon(self, served: Served) -> None:
        """Start loading the model's copies without waiting; a failure lands in ``load_errors``."""
        task = asyncio.get_running_loop().create_task(self.loaded(served))
        self._loading.add(task)
        task.add_done_callback(self._loaded_soon)

    def _loaded_soon(self, task: asyncio.Task) -> None:
        self._loading.discard(task)
        if not task.cancelled():
            task.exception()                    # taken, so asyncio does not log it: ``load_errors`` has it already

    async def loaded(self, served: Served, wait_s: float | None = None) -> None:
        """Return once the model's copies are loaded (at once when they are); after ``wait_s``,
        ``ModelLoadingError`` while the load goes on."""
        if served.load is None or served.backend.has_copies:     # every request passes here: no task, no wait
            return
        try:
            await asyncio.wait_for(asyncio.shield(served.backend.actor()), wait_s)
        except TimeoutError:
            raise ModelLoadingError(f"Model {served.config.name!r} is loading; ask again in a few seconds.") from None
        except Exception as error:
            self.load_errors[served.config.name] = f"{type(error).__name__}: {error}"
            raise
        self.load_errors.pop(served.config.name, None)

    async def sync(self, now: bool = False) -> None:
        """Take in the admin API's changes (at most every ``REFRESH_S`` unless ``now``)."""
        if not now and time.monotonic() - self._synced_at < REFRESH_S:
            return
        self._synced_at = time.monotonic()
        try:
            changes = await catalog(self._app).changes.remote(self._version)
        except RayActorError:                   # the catalog of an earlier deploy, ended as this one started
            changes = await catalog(self._app).changes.remote(self._version)
        if changes is None:
            return
        self._version, added, removed = changes
        for name in removed - set(added):
            self._served.pop(name, None)
        for name, model in added.items():
            current = self._served.get(name)
            if current is None or current.config != model:
                self._served[name] = self._resolve(model)

    async def put(self, model: ServedModel) -> Served:
        """Serve ``model`` under its name on every ingress replica."""
        await catalog(self._app).put.remote(model)
        await self.sync(now=True)
        return self._served[model.name]

    async def remove(self, name: str) -> None:
        await catalog(self._app).remove.remote(name)
        await self.sync(now=True)

    def _resolve(self, model: ServedModel) -> Served:
        if model.in_process:
            load = model.model_load()
            return Served(model, served_model(model.model), model_backend(load), load)
        return Served(model, served_model(model.model), self._remote.backend(model))
