"""What identifies one loaded in-process model, and where placement put it.

``ModelLoad`` is the key of a ModelActor: two clients anywhere on the cluster that ask for the same
model with the same load options get the same actor, because its name is derived from this object.
``Target`` is the part of a placement decision an engine needs to load its weights.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..cluster.placement import PlacementOptions

Task = Literal["text", "image", "audio"]
DEFAULT_KEEP_ALIVE_S = 600.0


class ModelLoad(BaseModel):
    """A model and the options it is loaded with (``options`` are the engine's constructor kwargs).

    ``keep_alive_s`` is not part of the identity: it says when an idle actor gives its GPU share back.
    """

    model_config = ConfigDict(frozen=True)

    provider: Literal["hf", "llamacpp"]
    task: Task
    model_id: str
    options: dict[str, Any] = Field(default_factory=dict)
    placement: PlacementOptions = Field(default_factory=PlacementOptions)
    keep_alive_s: float | None = Field(default=DEFAULT_KEEP_ALIVE_S, gt=0)

    def key(self) -> str:
        """A stable digest of the identity: provider, task, model, load options and placement pins."""
        identity = {"provider": self.provider, "task": self.task, "model_id": self.model_id,
                    "options": self.options, "placement": self.placement.model_dump(exclude_defaults=True)}
        text = json.dumps(identity, sort_keys=True, default=_describe)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def actor_name(self) -> str:
        """The actor's cluster-wide name: readable in ``ray list actors``, unique by the digest."""
        readable = re.sub(r"[^A-Za-z0-9._-]+", "_", self.model_id.strip("/"))[-48:]
        return f"model:{self.provider}:{self.task}:{readable}:{self.key()}"

    def label(self) -> str:
        return f"{self.provider}:{self.model_id}"


class Target(BaseModel):
    """Where an engine puts its weights, as decided by placement (or pinned by the user)."""

    model_config = ConfigDict(frozen=True)

    device: Literal["cuda", "cpu"] = "cpu"
    device_map: str | dict[str, Any] | None = None
    offload: Literal["model", "sequential"] | None = None


def _describe(value: Any) -> str:
    """Options that are objects (a llama.cpp chat handler) enter the key by type and public settings."""
    settings = {k: v for k, v in sorted(vars(value).items()) if not k.startswith("_")} if hasattr(value, "__dict__") else {}
    return f"{type(value).__module__}.{type(value).__qualname__}{sorted((k, repr(v)) for k, v in settings.items())}"
