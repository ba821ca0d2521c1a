"""Model sizing from weight-file metadata: exact byte counts on tiny hand-built weights."""

from __future__ import annotations

import json
import math
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from aimu_ray.cluster.sizing import (
    DEFAULT_CONTEXT_CAP,
    size_diffusers_folder,
    size_gguf,
    size_hf_folder,
    size_model,
)
from aimu_ray.demo.tiny_models import build_tiny_gguf, build_tiny_hf_lm, tiny_model_cache

# 3 layers, 2 KV heads of head_dim 64 / 8 = 8.
CONFIG = {
    "model_type": "llama",
    "num_hidden_layers": 3,
    "num_attention_heads": 8,
    "num_key_value_heads": 2,
    "hidden_size": 64,
    "max_position_embeddings": 1024,
}
# 12 f32 + 10 f16 + 7 int8 elements.
TENSORS = {
    "w32": np.zeros((3, 4), np.float32),
    "w16": np.zeros(10, np.float16),
    "q8": np.zeros(7, np.int8),
}
STORED_BYTES = 12 * 4 + 10 * 2 + 7


def hf_folder(root: Path, config: dict = CONFIG, tensors: dict = TENSORS) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text(json.dumps(config))
    save_file(tensors, str(root / "model.safetensors"))
    return root


def kv_bytes(layers=3, kv_heads=2, head_dim=8, tokens=1024, batch=1, element=4) -> int:
    return 2 * layers * kv_heads * head_dim * tokens * batch * element


# ---------------------------------------------------------------------------------------------
# transformers folders
# ---------------------------------------------------------------------------------------------


def test_stored_dtypes_are_kept_and_counted_exactly(tmp_path):
    need = size_hf_folder(hf_folder(tmp_path))
    assert need.kind == "text"
    assert need.weights_bytes == STORED_BYTES
    assert need.largest_part_bytes == STORED_BYTES
    assert need.dtype == "float32"  # the dominant stored float dtype
    assert need.runtime_bytes == kv_bytes(element=4)
    assert need.explanation.startswith("75 B of fp32 weights in 1 shard + ")
    assert "KV cache for 1024 tokens" in need.explanation


@pytest.mark.parametrize(
    ("dtype", "weights", "element"),
    [
        ("bfloat16", 12 * 2 + 10 * 2 + 7, 2),
        ("float16", 12 * 2 + 10 * 2 + 7, 2),
        ("float32", 12 * 4 + 10 * 4 + 7, 4),
    ],
)
def test_load_dtype_converts_floats_only(tmp_path, dtype, weights, element):
    need = size_hf_folder(hf_folder(tmp_path), dtype=dtype)
    assert need.weights_bytes == weights  # the int8 tensor keeps its 7 bytes
    assert need.runtime_bytes == kv_bytes(element=element)
    assert need.dtype == dtype


def test_bfloat16_storage_is_read_from_the_header(tmp_path):
    # numpy has no bfloat16: write an F16 file, then retag its header (same element size).
    path = hf_folder(tmp_path, tensors={"w": np.zeros((5, 2), np.float16)}) / "model.safetensors"
    raw = path.read_bytes()
    end = 8 + struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:end])
    header["w"]["dtype"] = "BF16"
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + raw[end:])
    need = size_hf_folder(tmp_path)
    assert (need.weights_bytes, need.dtype) == (20, "bfloat16")
    assert need.runtime_bytes == kv_bytes(element=2)


def test_kv_cache_arithmetic(tmp_path):
    config = {**CONFIG, "head_dim": 16, "max_position_embeddings": 1_000_000}
    folder = hf_folder(tmp_path, config=config)
    assert size_hf_folder(folder).runtime_bytes == kv_bytes(head_dim=16, tokens=DEFAULT_CONTEXT_CAP)
    need = size_hf_folder(folder, dtype="bfloat16", context_tokens=100, batch=3)
    assert need.runtime_bytes == kv_bytes(head_dim=16, tokens=100, batch=3, element=2)


def test_kv_heads_default_to_attention_heads(tmp_path):
    config = {k: v for k, v in CONFIG.items() if k != "num_key_value_heads"}
    assert size_hf_folder(hf_folder(tmp_path, config=config)).runtime_bytes == kv_bytes(kv_heads=8)


def test_config_without_counts_sizes_weights_only(tmp_path):
    need = size_hf_folder(hf_folder(tmp_path, config={"model_type": "mystery"}))
    assert (need.weights_bytes, need.runtime_bytes) == (STORED_BYTES, 0)
    assert "no KV cache estimate" in need.explanation


def test_sharded_folder_sums_the_indexed_shards(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(CONFIG))
    save_file({"a": np.zeros(100, np.float32)}, str(tmp_path / "model-00001-of-00002.safetensors"))
    save_file(
        {"b": np.zeros(50, np.float16), "c": np.zeros(3, np.int8)},
        str(tmp_path / "model-00002-of-00002.safetensors"),
    )
    weight_map = {
        "a": "model-00001-of-00002.safetensors",
        "b": "model-00002-of-00002.safetensors",
        "c": "model-00002-of-00002.safetensors",
    }
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    need = size_hf_folder(tmp_path)
    assert need.weights_bytes == 400 + 100 + 3
    assert "in 2 shards" in need.explanation
    assert size_hf_folder(tmp_path, dtype="bfloat16").weights_bytes == 200 + 100 + 3

    (tmp_path / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model-00002-of-00002"):
        size_hf_folder(tmp_path)


def test_dtype_variant_next_to_plain_weights_is_not_double_counted(tmp_path):
    hf_folder(tmp_path)
    save_file({"w": np.zeros(1000, np.float16)}, str(tmp_path / "model.fp16.safetensors"))
    assert size_hf_folder(tmp_path).weights_bytes == STORED_BYTES


def test_musicgen_is_audio_with_its_decoder_kv_cache(tmp_path):
    config = {"model_type": "musicgen", "decoder": {**CONFIG, "num_key_value_heads": None}}
    need = size_model(hf_folder(tmp_path, config=config))
    assert need.kind == "audio"
    assert need.runtime_bytes == kv_bytes(kv_heads=8)


# ---------------------------------------------------------------------------------------------
# GGUF
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_pair() -> tuple[Path, Path]:
    hf_dir = build_tiny_hf_lm(tiny_model_cache() / "tiny-llama-hf")
    return hf_dir, build_tiny_gguf(hf_dir, tiny_model_cache() / "tiny-llama.gguf")


def test_gguf_sums_its_tensor_table_and_matches_the_f32_safetensors(tiny_pair):
    from gguf import GGUFReader

    hf_dir, gguf_path = tiny_pair
    need = size_gguf(gguf_path)
    assert need.kind == "gguf" and need.dtype == "f32"
    assert need.weights_bytes == sum(int(t.n_bytes) for t in GGUFReader(gguf_path).tensors)
    hf_bytes = size_hf_folder(hf_dir).weights_bytes
    assert math.isclose(need.weights_bytes, hf_bytes, rel_tol=0.01)


def test_gguf_kv_cache_is_f16_for_the_context(tiny_pair):
    hf_dir, gguf_path = tiny_pair
    config = json.loads((hf_dir / "config.json").read_text())
    layers, kv_heads = config["num_hidden_layers"], config["num_key_value_heads"]
    head_dim = config["hidden_size"] // config["num_attention_heads"]
    tokens = config["max_position_embeddings"]
    assert size_gguf(gguf_path).runtime_bytes == 2 * layers * kv_heads * head_dim * tokens * 2
    assert size_model(gguf_path, context_tokens=64).runtime_bytes == 2 * layers * kv_heads * head_dim * 64 * 2


# ---------------------------------------------------------------------------------------------
# diffusers
# ---------------------------------------------------------------------------------------------


def diffusers_folder(root: Path) -> Path:
    components = {
        "unet": ("diffusion_pytorch_model.safetensors", {"w": np.zeros(1000, np.float32)}),
        "vae": ("diffusion_pytorch_model.safetensors", {"w": np.zeros(300, np.float32)}),
        "text_encoder": ("model.safetensors", {"w": np.zeros(200, np.float16), "ids": np.zeros(9, np.int8)}),
    }
    index = {
        "_class_name": "StableDiffusionPipeline",
        "scheduler": ["diffusers", "DDIMScheduler"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
    }
    for name, (file, tensors) in components.items():
        hf_folder(root / name, config={}, tensors=tensors).joinpath("model.safetensors").rename(
            root / name / file
        )
        index[name] = ["diffusers", "Model"]
    (root / "scheduler").mkdir()
    (root / "scheduler" / "scheduler_config.json").write_text("{}")
    (root / "model_index.json").write_text(json.dumps(index))
    return root


def test_diffusers_sum_largest_and_margin(tmp_path):
    need = size_diffusers_folder(diffusers_folder(tmp_path))
    weights = 4000 + 1200 + 400 + 9
    assert need.kind == "image"
    assert (need.weights_bytes, need.largest_part_bytes) == (weights, 4000)
    assert need.runtime_bytes == math.ceil(weights * 0.15)
    assert "3 components (largest unet 4.0 kB)" in need.explanation


def test_diffusers_dtype_converts_every_component(tmp_path):
    need = size_model(diffusers_folder(tmp_path), dtype="float16")
    assert (need.weights_bytes, need.largest_part_bytes, need.dtype) == (
        2000 + 600 + 400 + 9,
        2000,
        "float16",
    )


# ---------------------------------------------------------------------------------------------
# Dispatch and errors
# ---------------------------------------------------------------------------------------------


def test_dispatch_picks_the_sizer_from_the_layout(tmp_path, tiny_pair):
    assert size_model(hf_folder(tmp_path / "lm")).kind == "text"
    assert size_model(diffusers_folder(tmp_path / "sd")).kind == "image"
    assert size_model(tiny_pair[1]).kind == "gguf"


def test_missing_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        size_model(tmp_path / "nope")


def test_unknown_layouts_name_what_was_expected(tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(ValueError, match=r"expected a \.gguf file"):
        size_model(tmp_path / "notes.txt")
    with pytest.raises(ValueError, match=r"model_index\.json.*config\.json"):
        size_model(tmp_path)


def test_folder_without_safetensors_says_what_it_found(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(CONFIG))
    (tmp_path / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=r"no \*\.safetensors weights.*pytorch_model\.bin"):
        size_model(tmp_path)


def test_several_unindexed_weight_files_are_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(CONFIG))
    for name in ("a.safetensors", "b.safetensors"):
        save_file({"w": np.zeros(1, np.float32)}, str(tmp_path / name))
    with pytest.raises(ValueError, match="several safetensors files and no index"):
        size_model(tmp_path)


def test_unsupported_dtype(tmp_path):
    with pytest.raises(ValueError, match="expected None or one of bfloat16"):
        size_hf_folder(hf_folder(tmp_path), dtype="int4")


def test_importable_without_torch():
    code = "import sys, aimu_ray.cluster.sizing; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
