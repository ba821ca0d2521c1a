"""The models an app's admin API added or removed at runtime, shared by every replica of its ingress.

One detached named actor per app (it outlives the driver that deployed the app). An ingress replica asks it for the
changes since the version it last saw, at most every ``REFRESH_S`` while requests come, and after every admin call
it makes itself: a model added through one replica is served by every replica within seconds. A deploy of the app
clears it (``reset_catalog``), so the config is the truth after a deploy.
"""

from __future__ import annotations

import ray
from ray.actor import ActorHandle

from ..cluster.connection import NAMESPACE, named_actor
from .config import ServedModel

REFRESH_S = 2.0


@ray.remote(num_cpus=0)
class Catalog:
    def __init__(self) -> None:
        self._added: dict[str, ServedModel] = {}
        self._removed: set[str] = set()
        self._version = 0

    def put(self, model: ServedModel) -> int:
        self._added[model.name] = model
        self._removed.discard(model.name)
        self._version += 1
        return self._version

    def remove(self, name: str) -> int:
        self._added.pop(name, None)
        self._removed.add(name)
        self._version += 1
        return self._version

    def changes(self, since: int) -> tuple[int, dict[str, ServedModel], set[str]] | None:
        """(version, models added, names removed) since version ``since``; None when nothing changed."""
        if since == self._version:
            return None
        return self._version, dict(self._added), set(self._removed)


def catalog(app: str) -> ActorHandle:
    return Catalog.options(name=_name(app), namespace=NAMESPACE, get_if_exists=True, lifetime="detached").remote()


def reset_catalog(app: str) -> None:
    """Forget what the admin API changed in an earlier deploy of ``app``."""
    if (old := named_actor(_name(app))) is not None:
        ray.kill(old, no_restart=True)


def _name(app: str) -> str:
    return f"catalog:{app}"
