"""A backend for a model hosted in this very process: a Ray Data worker that holds its own engine, or a bare engine
(a test, a benchmark).

No actor hop and no retries: the engine runs here, so there is nothing to lose on the way, and a request fails
only as the engine fails it. The host's ``HostCore`` is not in between either: the caller (a dataset's batch)
bounds its own concurrency.
"""

from __future__ import annotations

from typing import AsyncIterator

from ..engines.base import Engine
from ..hosts.model import HostedModel
from ..models.modality import Item, Request, Result


class HostedBackend:
    """``Backend`` over what runs requests in this process: a loaded ``HostedModel``, or an engine itself."""

    def __init__(self, host: HostedModel | Engine) -> None:
        self.host = host

    async def call(self, request: Request) -> Result:
        return await self.host.run(request)

    def stream(self, request: Request) -> AsyncIterator[Item]:
        return self.host.stream(request)
