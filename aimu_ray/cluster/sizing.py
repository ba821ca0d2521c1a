"""Measure what a model needs in memory from its weight files, without loading the weights.

Placement must decide before anything is loaded, so sizes come from metadata only: safetensors
headers (tensor dtypes and shapes), the GGUF tensor table, and config.json for the KV cache.
Nothing here imports torch, so the driver and the placement tests stay light.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from pathlib import Path

from aimu_ray.cluster.need import ModelKind, ModelNeed

# A text model's default context when the caller names none: max_position_embeddings capped here,
# because modern configs advertise 128k+ tokens that would dwarf the weights in KV cache.
DEFAULT_CONTEXT_CAP = 32768
# aimu's diffusers margin (_MEMORY_MARGIN = 1.15): 15 % on top of params + buffers.
DIFFUSERS_MARGIN_PERCENT = 15
# llama.cpp keeps its KV cache in f16 unless told otherwise.
GGUF_KV_BYTES = 2

# Bits per element of each safetensors dtype (sub-byte float formats included).
# fmt: off
_SAFETENSORS_BITS = {
    "BOOL": 8, "U8": 8, "I8": 8, "F8_E4M3": 8, "F8_E5M2": 8, "F8_E8M0": 8,
    "I16": 16, "U16": 16, "F16": 16, "BF16": 16,
    "I32": 32, "U32": 32, "F32": 32,
    "I64": 64, "U64": 64, "F64": 64,
    "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
}
# fmt: on
# Stored dtypes that a load-time dtype converts; 8-bit and smaller floats are quantized storage
# that transformers keeps as is, like integer tensors.
_CONVERTIBLE = {"F16": "float16", "BF16": "bfloat16", "F32": "float32", "F64": "float64"}
_FLOAT_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4, "float64": 8}
LOAD_DTYPES = ("bfloat16", "float16", "float32")
_SHORT = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32", "float64": "fp64"}

# Raw config.json spellings of the same hyper-parameter across model families.
_CONFIG_ALIASES = {
    "layers": ("num_hidden_layers", "n_layer", "num_layers"),
    "heads": ("num_attention_heads", "n_head"),
    "hidden": ("hidden_size", "n_embd", "d_model"),
    "positions": ("max_position_embeddings", "n_positions"),
}


# ---------------------------------------------------------------------------------------------
# Public entry points
# ---------------------------------------------------------------------------------------------


def size_model(path: str | os.PathLike, **kw) -> ModelNeed:
    """Size whatever ``path`` holds: a .gguf file, a diffusers folder or a transformers folder."""
    path = _existing(path)
    if path.is_file():
        if path.suffix.lower() == ".gguf":
            return size_gguf(path, **kw)
        raise ValueError(
            f"{path}: expected a .gguf file or a model folder, got a {path.suffix or 'plain'} file"
        )
    if (path / "model_index.json").is_file():
        return size_diffusers_folder(path, **kw)
    if (path / "config.json").is_file():
        return size_hf_folder(path, **kw)
    raise ValueError(
        f"{path}: expected a .gguf file, a diffusers folder (model_index.json) "
        "or a transformers folder (config.json)"
    )


def size_hf_folder(
    path: str | os.PathLike,
    *,
    dtype: str | None = None,
    context_tokens: int | None = None,
    batch: int = 1,
) -> ModelNeed:
    """Size a transformers folder: weights at the load dtype plus the KV cache for the context.

    ``dtype=None`` keeps each tensor's stored dtype (transformers 5 loads "auto"); a named dtype
    converts the 16/32/64-bit float tensors only. The context is ``context_tokens`` or else
    ``min(max_position_embeddings, DEFAULT_CONTEXT_CAP)``. MusicGen folders come back as kind
    "audio", with the KV cache of their decoder.
    """
    path = _existing(path)
    config = _read_json(path / "config.json")
    files = _weight_files(path)
    weights, stored = _weights_bytes(files, dtype)
    load_dtype = dtype or stored
    kv_bytes, tokens = _kv_cache(config, context_tokens, batch, _FLOAT_BYTES[load_dtype])
    words = f"{_human(weights)} of {_SHORT[load_dtype]} weights in {_count(len(files), 'shard')}"
    words += _kv_words(kv_bytes, tokens, "config.json")
    kind: ModelKind = "audio" if str(config.get("model_type", "")).startswith("musicgen") else "text"
    return ModelNeed(
        model=str(path),
        kind=kind,
        weights_bytes=weights,
        runtime_bytes=kv_bytes,
        largest_part_bytes=weights,
        dtype=load_dtype,
        explanation=words,
    )


def size_gguf(path: str | os.PathLike, *, context_tokens: int | None = None) -> ModelNeed:
    """Size a GGUF file from its tensor table, plus an f16 KV cache as llama.cpp allocates it.

    The context is ``context_tokens`` or else ``min(<arch>.context_length, DEFAULT_CONTEXT_CAP)``.
    Only the file named is read, so a split GGUF counts its first part alone.
    """
    from gguf import GGUFReader

    path = _existing(path)
    reader = GGUFReader(path)
    by_type: Counter[str] = Counter()
    for tensor in reader.tensors:
        by_type[tensor.tensor_type.name.lower()] += int(tensor.n_bytes)
    if not by_type:
        raise ValueError(f"{path}: the GGUF file holds no tensors")
    weights = sum(by_type.values())
    stored = by_type.most_common(1)[0][0]
    kv_bytes, tokens = _gguf_kv_cache(_gguf_fields(reader), context_tokens)
    words = f"{_human(weights)} of {stored} GGUF weights in {_count(len(reader.tensors), 'tensor')}"
    words += _kv_words(kv_bytes, tokens, "the GGUF metadata")
    return ModelNeed(
        model=str(path),
        kind="gguf",
        weights_bytes=weights,
        runtime_bytes=kv_bytes,
        largest_part_bytes=weights,
        dtype=stored,
        explanation=words,
    )


def size_diffusers_folder(path: str | os.PathLike, *, dtype: str | None = None) -> ModelNeed:
    """Size a diffusers pipeline folder component by component, with aimu's 15 % margin on top.

    A component is a model_index.json entry whose subfolder holds a config.json (schedulers and
    tokenizers have none). The largest component bounds what model CPU offload keeps on the GPU.
    """
    path = _existing(path)
    index = _read_json(path / "model_index.json")
    sizes: dict[str, int] = {}
    stored: Counter[str] = Counter()
    for name in sorted(index):
        folder = path / name
        if name.startswith("_") or not (folder / "config.json").is_file():
            continue
        sizes[name], component_dtype = _weights_bytes(_weight_files(folder), dtype)
        stored[component_dtype] += sizes[name]
    if not sizes:
        raise FileNotFoundError(f"{path}: model_index.json names no component folder with a config.json")
    weights = sum(sizes.values())
    largest = max(sizes, key=sizes.__getitem__)
    margin = math.ceil(weights * DIFFUSERS_MARGIN_PERCENT / 100)
    load_dtype = dtype or stored.most_common(1)[0][0]
    words = (
        f"{_human(weights)} of {_SHORT[load_dtype]} weights in "
        f"{_count(len(sizes), 'component')} (largest {largest} {_human(sizes[largest])}) "
        f"+ {_human(margin)} margin ({DIFFUSERS_MARGIN_PERCENT} %)"
    )
    return ModelNeed(
        model=str(path),
        kind="image",
        weights_bytes=weights,
        runtime_bytes=margin,
        largest_part_bytes=sizes[largest],
        dtype=load_dtype,
        explanation=words,
    )


# ---------------------------------------------------------------------------------------------
# Safetensors
# ---------------------------------------------------------------------------------------------


def _weight_files(folder: Path) -> list[Path]:
    """The safetensors files one model loads: an index's shards, else the single weight file.

    Several unindexed files are usually dtype variants (model.fp16.safetensors next to
    model.safetensors), so summing them would double count; the unsuffixed name wins.
    """
    indexes = sorted(folder.glob("*.safetensors.index.json"), key=lambda p: len(p.name))
    if indexes:
        return _indexed_shards(indexes[0])
    files = sorted(folder.glob("*.safetensors"))
    plain = [f for f in files if f.name in ("model.safetensors", "diffusion_pytorch_model.safetensors")]
    if len(files) == 1 or plain:
        return plain or files
    if files:
        names = ", ".join(f.name for f in files)
        raise ValueError(
            f"{folder}: several safetensors files and no index ({names}); "
            "keep one variant or add a *.safetensors.index.json"
        )
    others = sorted(p.name for p in folder.glob("*.bin")) + sorted(p.name for p in folder.glob("*.pt"))
    hint = (
        f" (found {', '.join(others)}; sizing reads safetensors headers only, convert them)" if others else ""
    )
    raise FileNotFoundError(f"{folder}: no *.safetensors weights{hint}")


def _indexed_shards(index_path: Path) -> list[Path]:
    """The distinct shard files a ``*.safetensors.index.json`` weight map points at."""
    weight_map = _read_json(index_path).get("weight_map") or {}
    shards = [index_path.parent / name for name in sorted(set(weight_map.values()))]
    missing = [s.name for s in shards if not s.is_file()]
    if not shards or missing:
        raise FileNotFoundError(f"{index_path}: shards missing: {', '.join(missing) or 'empty weight_map'}")
    return shards


def _weights_bytes(files: list[Path], dtype: str | None) -> tuple[int, str]:
    """Bytes of every tensor at ``dtype`` (None: stored dtype) and the dominant stored float dtype."""
    target_bits = _check_dtype(dtype)
    total = 0
    floats: Counter[str] = Counter()
    for shape, stored in _tensor_headers(files):
        bits = _SAFETENSORS_BITS.get(stored)
        if bits is None:
            raise ValueError(f"unknown safetensors dtype {stored!r} in {files[0].parent}")
        numel = math.prod(shape)
        if stored in _CONVERTIBLE:
            floats[_CONVERTIBLE[stored]] += numel * bits
            bits = target_bits or bits
        total += math.ceil(numel * bits / 8)
    return total, (floats.most_common(1)[0][0] if floats else "float32")


def _tensor_headers(files: list[Path]):
    """Yield (shape, safetensors dtype) per tensor, reading headers only (no tensor data)."""
    from safetensors import safe_open

    for file in files:
        with safe_open(file, framework="numpy") as handle:
            for key in handle.keys():  # noqa: SIM118 (safe_open handles are not iterable)
                tensor = handle.get_slice(key)
                yield tensor.get_shape(), tensor.get_dtype()


def _check_dtype(dtype: str | None) -> int | None:
    """Bits per float element at the requested load dtype; None keeps the stored one."""
    if dtype is None:
        return None
    if dtype not in LOAD_DTYPES:
        raise ValueError(f"dtype {dtype!r} not supported: expected None or one of {', '.join(LOAD_DTYPES)}")
    return _FLOAT_BYTES[dtype] * 8


# ---------------------------------------------------------------------------------------------
# KV cache
# ---------------------------------------------------------------------------------------------


def _kv_cache(config: dict, context_tokens: int | None, batch: int, element_bytes: int) -> tuple[int, int]:
    """(bytes, tokens) of K and V for every layer; (0, 0) when the config lacks the counts."""
    config = _text_config(config)
    layers, heads, hidden = (_config_value(config, k) for k in ("layers", "heads", "hidden"))
    if not (layers and heads):
        return 0, 0
    head_dim = config.get("head_dim") or (hidden // heads if hidden else 0)
    tokens = context_tokens or _default_context(_config_value(config, "positions"))
    kv_heads = config.get("num_key_value_heads") or heads
    return 2 * layers * kv_heads * head_dim * tokens * batch * element_bytes, tokens


def _text_config(config: dict) -> dict:
    """The sub-config that holds the attention stack: multimodal text_config, MusicGen decoder."""
    for key in ("text_config", "decoder"):
        if not _config_value(config, "layers") and isinstance(config.get(key), dict):
            return config[key]
    return config


def _config_value(config: dict, name: str) -> int | None:
    return next((config[k] for k in _CONFIG_ALIASES[name] if config.get(k)), None)


def _gguf_fields(reader) -> dict:
    """The ``<architecture>.*`` metadata with the prefix stripped, as plain Python values."""
    fields = {name: field.contents() for name, field in reader.fields.items()}
    prefix = f"{fields.get('general.architecture', 'llama')}."
    return {name.removeprefix(prefix): value for name, value in fields.items() if name.startswith(prefix)}


def _gguf_kv_cache(meta: dict, context_tokens: int | None) -> tuple[int, int]:
    """(bytes, tokens) of llama.cpp's f16 KV cache; (0, 0) when the metadata lacks the counts."""
    layers, heads = meta.get("block_count"), meta.get("attention.head_count")
    if not (layers and heads):
        return 0, 0
    kv_heads = meta.get("attention.head_count_kv") or heads
    kv_heads_total = sum(kv_heads) if isinstance(kv_heads, list) else layers * kv_heads  # per-layer list
    key_dim = meta.get("attention.key_length") or meta.get("embedding_length", 0) // heads
    value_dim = meta.get("attention.value_length") or key_dim
    tokens = context_tokens or _default_context(meta.get("context_length"))
    return kv_heads_total * (key_dim + value_dim) * tokens * GGUF_KV_BYTES, tokens


def _default_context(advertised: int | None) -> int:
    return min(advertised or DEFAULT_CONTEXT_CAP, DEFAULT_CONTEXT_CAP)


def _kv_words(kv_bytes: int, tokens: int, source: str) -> str:
    if not tokens:
        return f" (no KV cache estimate: {source} lacks layer/head counts)"
    return f" + {_human(kv_bytes)} KV cache for {tokens} tokens"


# ---------------------------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------------------------


def _existing(path: str | os.PathLike) -> Path:
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder to size")
    return path


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: missing") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None


def _human(n: int) -> str:
    """Decimal units, one decimal: what a person compares with a GPU's memory."""
    for unit, scale in (("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"
