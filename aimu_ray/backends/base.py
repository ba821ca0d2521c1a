"""What every backend promises, so a client never needs to know which one it holds."""

from __future__ import annotations

from typing import AsyncIterator, Protocol

from ..models.modality import Item, Request, Result


class Backend(Protocol):
    """Sends one request to what hosts its model (a pool worker, a model actor, a Serve replica).

    Whichever it is, a backend promises:
    - typed errors: failures come back as ``aimu_ray.models.errors`` types (or the engine's own error),
      never wrapped in Ray's or Serve's exceptions;
    - retries only of work that never ran to an answer: a request is sent again only when nothing of its
      answer reached the caller and the host lost it or refused it (the pool, a model actor; Serve never
      retries); a stream that has yielded is never sent again, since that would repeat its text;
    - cancel on close: cancelling a call, or closing a stream early, cancels the host's work.
    """

    async def call(self, request: Request) -> Result:
        """The whole answer."""

    def stream(self, request: Request) -> AsyncIterator[Item]:
        """Progress items (text deltas, image steps, audio steps) as they come, then the result."""
