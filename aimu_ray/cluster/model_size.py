"""The memory a ``ModelLoad`` will need, from its weight files, read where the caller is.

Local folders and GGUF files are sized directly; a hub id is sized from the local Hugging Face cache
when it is there. Nothing is downloaded: a model that cannot be sized gets a need of zero with the
reason in words, placement then gives it the smallest share, and the actor's measured VRAM after
loading corrects the next placement of the same model.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..models.load import ModelLoad
from .need import ModelNeed
from .sizing import size_diffusers_folder, size_gguf, size_hf_folder

logger = logging.getLogger("aimu_ray")
_DTYPES = {"bfloat16", "float16", "float32"}


def need_for(load: ModelLoad) -> ModelNeed:
    """Measured need of ``load``, or an explained zero when its files are not at hand."""
    try:
        return _measured(load)
    except (OSError, ValueError) as error:
        reason = f"size unknown ({error}); placed with the smallest share until the loaded actor reports its use"
        logger.warning("%s: %s", load.label(), reason)
        return ModelNeed(model=load.label(), kind=_kind(load), weights_bytes=0, explanation=reason)


def _measured(load: ModelLoad) -> ModelNeed:
    if load.provider == "llamacpp":
        path = load.options.get("model_path")
        if not path:
            raise ValueError("llamacpp models need model_path=")
        return size_gguf(path, context_tokens=load.options.get("n_ctx", 4096))
    folder = _local_folder(load.model_id)
    dtype = _dtype(load.options.get("model_kwargs") or {})
    if (folder / "model_index.json").is_file():
        need = size_diffusers_folder(folder, dtype=dtype)
    else:
        need = size_hf_folder(folder, dtype=dtype, context_tokens=load.options.get("context_tokens"))
    return need.model_copy(update={"model": load.label(), "kind": _kind(load)})


def _kind(load: ModelLoad) -> str:
    return "gguf" if load.provider == "llamacpp" else load.task


def _local_folder(model_id: str) -> Path:
    """A folder path as given, else the hub id's snapshot in the local cache (never a download)."""
    path = Path(model_id).expanduser()
    if path.is_dir():
        return path
    if model_id.startswith(("/", ".", "~")):
        raise FileNotFoundError(f"no folder {model_id}")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(model_id, local_files_only=True))
    except LocalEntryNotFoundError:
        raise FileNotFoundError(f"{model_id} is not in the local Hugging Face cache") from None


def _dtype(model_kwargs: dict) -> str | None:
    """The dtype named in model_kwargs (``dtype`` or ``torch_dtype``, a string or a torch dtype), if any."""
    value = model_kwargs.get("dtype", model_kwargs.get("torch_dtype"))
    name = str(value).removeprefix("torch.") if value is not None else None
    return name if name in _DTYPES else None
