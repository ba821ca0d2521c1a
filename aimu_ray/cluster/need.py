"""What a model needs in memory, measured before it is loaded: the contract between sizing and placement."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

ModelKind = Literal["text", "gguf", "image", "audio"]


class ModelNeed(BaseModel):
    """Bytes a model will hold once loaded, at the dtype it will load in.

    ``weights_bytes`` is the sum over every tensor; ``runtime_bytes`` the headroom on top (KV cache for
    the context a text model must hold, or aimu's 15 % margin for diffusers); ``largest_part_bytes`` the
    biggest single component (a diffusers UNet, a text encoder), which bounds what model CPU offload
    keeps on the GPU at once.
    """

    model_config = ConfigDict(frozen=True)

    model: str
    kind: ModelKind
    weights_bytes: int = Field(ge=0)
    runtime_bytes: int = Field(default=0, ge=0)
    largest_part_bytes: int = Field(default=0, ge=0)
    dtype: str = "bfloat16"
    explanation: str = ""

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.runtime_bytes
