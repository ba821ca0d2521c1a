"""The Serve deployment of one in-process model: each replica hosts the same engine a ModelActor would.

Replicas get the GPU share (and RAM) the placement policy planned for the model when the app was built
(``app.build_app``); each one, once loaded, tells the model registry what it holds, so ``aimu-ray
status`` lists it and later placements do not promise its memory again. It says so again at every health check,
which is how a restarted registry (which cannot list Serve's replicas) learns it. A model that fails to load
does not crash its replica (Serve would retry the same failure forever): the replica stays up, says
``failed`` and answers every request with the load error.
"""

from __future__ import annotations

from contextlib import aclosing
from typing import AsyncIterator

import ray
from ray import serve

from ..hosts.core import HostCore
from ..hosts.model import HostedModel
from ..hosts.registry import REPORT_PERIOD_S, tell_registry
from ..cluster.need import ModelNeed
from ..cluster.placement import Placement
from ..models.load import ModelLoad


@serve.deployment(health_check_period_s=REPORT_PERIOD_S)
class ModelServer:
    def __init__(self, name: str, load: ModelLoad, need: ModelNeed, placement: Placement) -> None:
        self._core = HostCore(load.label())
        self._model = HostedModel(load, placement.target())
        self._replica_id = ray.get_runtime_context().get_actor_id()
        self._hosted = (self._replica_id, serve.get_replica_context().deployment, name, load, need, placement,
                        self._model.use)
        self.check_health()

    def check_health(self) -> None:
        """Serve's periodic health check: tell the registry (again) what this replica holds. A registry that knows
        it changes nothing; one that restarted puts it back in its ledger. A failed load holds nothing."""
        if self._model.error is None:
            tell_registry("hosted", *self._hosted)

    def state(self, name: str | None = None) -> dict:
        """``ready`` or ``failed`` (with the error), and the replica's measured use and engine counters."""
        error = self._model.error
        return {"state": "failed" if error else "ready", "error": f"{type(error).__name__}: {error}" if error else None,
                "use": self._model.current_use(), "in_flight": self._core.in_flight, "engine": self._model.stats()}

    async def run(self, name: str, request):
        """One whole answer; ``name`` is the served name the caller asked for (the ingress routes by it)."""
        return await self._core.run(self._model, request)

    async def stream(self, name: str, request) -> AsyncIterator[list]:
        """Batches of stream items; a caller that goes away (HTTP disconnect) cancels this and so the engine."""
        async with aclosing(self._core.stream(self._model, request)) as batches:
            async for batch in batches:
                yield batch

    def __del__(self) -> None:
        """Serve calls this when it stops the replica: the share goes back to the ledger."""
        if getattr(self, "_model", None) is not None and self._model.error is None:
            tell_registry("released", self._replica_id)
