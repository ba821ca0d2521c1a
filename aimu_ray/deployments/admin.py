"""What the admin API may add at runtime, and the body it takes: bounded by the config, so that no request can
make the server read a path outside the folders it allows, fetch a URL, or run code it was not given.

A model added at runtime is an in-process model (``hf:`` or ``llamacpp:``, as ``allowed_providers`` says) whose
weights sit under one of ``allowed_folders``; hub ids (a download), ``@url`` strings, keys and loader options
beyond ``ALLOWED_OPTIONS`` are refused with 403 and the reason. Remote providers are added in the config only.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from fastapi import HTTPException
from pydantic import BaseModel, ConfigDict, Field

from ..models.model_string import parse_model_string

ALLOWED_OPTIONS = frozenset({"max_batch_size", "batch_wait_timeout_s", "context_tokens", "n_ctx", "n_gpu_layers",
                             "chat_format", "model_path", "model_kwargs"})
ALLOWED_MODEL_KWARGS = frozenset({"dtype", "torch_dtype", "gguf_file", "attn_implementation"})
BARE_FILE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class AdminPolicy(BaseModel):
    """What the admin API may add: providers, and the folders whose models it may load."""

    model_config = ConfigDict(extra="forbid")

    allowed_providers: list[Literal["hf", "llamacpp"]] = Field(default_factory=list)
    allowed_folders: list[Path] = Field(default_factory=list)

    def check(self, model) -> None:
        """403 with the reason unless ``model`` stays within this policy."""
        ref = parse_model_string(model.model)
        if ref.provider not in self.allowed_providers:
            _forbid(f"provider {ref.provider!r} may not be added at runtime; this app allows "
                    f"{', '.join(self.allowed_providers) or 'none'} (admin.allowed_providers)")
        if ref.base_url:
            _forbid("a model added at runtime names no URL")
        unknown = sorted(set(model.options) - ALLOWED_OPTIONS)
        if unknown:
            _forbid(f"options {', '.join(unknown)} may not be set at runtime; allowed: {', '.join(sorted(ALLOWED_OPTIONS))}")
        kwargs = model.options.get("model_kwargs") or {}
        if not isinstance(kwargs, dict) or set(kwargs) - ALLOWED_MODEL_KWARGS:
            _forbid(f"model_kwargs may hold only {', '.join(sorted(ALLOWED_MODEL_KWARGS))} at runtime")
        if "gguf_file" in kwargs and not BARE_FILE.fullmatch(str(kwargs["gguf_file"])):
            _forbid("gguf_file is a file name inside the model's folder")
        self._inside(ref.model_id if ref.provider == "hf" else model.options.get("model_path"), "the model")

    def _inside(self, path: Any, what: str) -> None:
        """A path that exists under one of the allowed folders, symlinks and '..' resolved first."""
        if not isinstance(path, str) or not path:
            _forbid(f"{what} must be a path under the allowed folders")
        resolved = Path(path).expanduser().resolve()
        if not any(resolved.is_relative_to(folder.expanduser().resolve()) for folder in self.allowed_folders):
            _forbid(f"{what} must sit under one of the allowed folders (admin.allowed_folders); hub ids, which "
                    f"would be downloaded, are added in the config")
        if not resolved.exists():
            raise HTTPException(400, f"{what} names nothing: no such file or folder under the allowed folders")


def served_as(name: str, body: dict[str, Any]):
    """The ``ServedModel`` a ``PUT /v1/models/{name}`` body asks for: what a served model in the config takes, the
    name from the path. Its checks (model string, task, loader options, copies) raise ValueError → 400."""
    from .config import ServedModel          # the config holds this module's policy: imported when used

    if "name" in body:
        raise ValueError("the model's name is the one in the path; the body carries no name")
    return ServedModel(name=name, **body)


def _forbid(reason: str) -> None:
    raise HTTPException(403, f"Not allowed: {reason}.")
