"""Tiny random-weight language models, built offline, for tests that need a real model.

Nothing is ever downloaded: the tokenizer is trained on a few sentences and the weights are random
(fixed seed), so the models talk nonsense but exercise the real loading, chat-template and
generation code paths of transformers and llama.cpp in well under a second per request.

Builds are deterministic and idempotent: each output carries a marker holding ``BUILD_VERSION``,
written only once the output is complete, so an interrupted build is redone and a finished one is
reused by every later test run (see :func:`tiny_model_cache`).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

# Bump when a recipe below changes, so that cached models built by the old recipe are rebuilt.
BUILD_VERSION = "1"
CACHE_ENV = "AIMU_RAY_CACHE"

SEED = 0
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
TOKENIZER_CORPUS = [
    "Hello world, this is a tiny corpus for a tiny tokenizer.",
    "The quick brown fox jumps over the lazy dog.",
    "Ray actors host models with fractional GPU resources.",
    "User: what is the capital of France? Assistant: Paris.",
    "system user assistant hello hi how are you today",
] * 20
CONTEXT_LENGTH = 512

_HF_MARKER = ".tiny-model-built"


def model_cache(name: str) -> Path:
    """Return (and create) the folder ``name`` where built models are kept between runs.

    ``$AIMU_RAY_CACHE`` wins so that CI can point it at a cached directory; otherwise
    ``~/.cache/aimu_ray/<name>``.
    """
    cache = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "aimu_ray") / name
    cache.mkdir(parents=True, exist_ok=True)
    return cache


def tiny_model_cache() -> Path:
    """The folder of the tiny random-weight models (``model_cache("tiny-models")``)."""
    return model_cache("tiny-models")


def _is_built(marker: Path) -> bool:
    """True when ``marker`` says its output was completed by the current recipe."""
    return marker.is_file() and marker.read_text() == BUILD_VERSION


def build_once(out_dir: Path, write: Callable[[Path], None]) -> Path:
    """Reuse a finished model folder, else ``write`` one into a staging folder and publish it whole.

    The staging folder is a sibling renamed into place, so concurrent builders (pytest-xdist workers,
    two test runs) never see a half-written model, and an interrupted build is simply redone.
    """
    if _is_built(out_dir / _HF_MARKER):
        return out_dir
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; a shared CI cache must stay readable
    try:
        write(staging)
        (staging / _HF_MARKER).write_text(BUILD_VERSION)
        _publish_dir(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir


# ---------------------------------------------------------------------------------------------
# Hugging Face causal LM
# ---------------------------------------------------------------------------------------------


def build_tiny_hf_lm(out_dir: str | os.PathLike) -> Path:
    """Build a tiny Llama causal LM with a ChatML tokenizer into ``out_dir``; return the folder.

    Building needs no Hub access. The folder loads with ``AutoModelForCausalLM`` /
    ``AutoTokenizer`` under ``HF_HUB_OFFLINE=1`` and is what ``transformers serve`` and
    :func:`build_tiny_gguf` consume. It is built in a sibling temporary folder and renamed into
    place, so concurrent builders (e.g. pytest-xdist workers) never see a half-written model.
    """
    def write(staging: Path) -> None:
        tokenizer = _train_chatml_tokenizer()
        tokenizer.save_pretrained(staging)
        _random_llama(tokenizer).save_pretrained(staging)

    return build_once(Path(out_dir), write)


def _train_chatml_tokenizer():
    """Train a byte-level BPE tokenizer offline and wrap it with a ChatML chat template.

    Byte-level BPE matches llama.cpp's ``gpt2`` tokenizer model, so the same vocabulary and
    merges can be written into the GGUF; the ChatML specials let both servers format chats.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(TOKENIZER_CORPUS, trainer=trainer)
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|endoftext|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
    )
    hf_tok.chat_template = CHATML_TEMPLATE
    return hf_tok


def _random_llama(tokenizer):
    """Return a ~125k-parameter Llama with seeded random weights sized for ``tokenizer``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=CONTEXT_LENGTH,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(SEED)
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def _publish_dir(staging: Path, out_dir: Path) -> None:
    """Move a finished build into place, replacing a stale one; a concurrent winner is kept."""
    if out_dir.exists() and not _is_built(out_dir / _HF_MARKER):
        shutil.rmtree(out_dir)
    try:
        staging.rename(out_dir)
    except OSError:
        if not _is_built(out_dir / _HF_MARKER):
            raise


# ---------------------------------------------------------------------------------------------
# GGUF for llama.cpp
# ---------------------------------------------------------------------------------------------


def build_tiny_gguf(hf_dir: str | os.PathLike, out_path: str | os.PathLike) -> Path:
    """Convert the tiny HF model in ``hf_dir`` into an F32 GGUF at ``out_path``; return the path.

    Written directly with the ``gguf`` package (no llama.cpp checkout or convert script needed),
    carrying the same vocabulary, merges and chat template as the HF folder. The file is written
    to a temporary name and renamed, then a ``<out_path>.built`` marker records completion.
    """
    out_path = Path(out_path)
    marker = out_path.with_name(out_path.name + ".built")
    if out_path.is_file() and _is_built(marker):
        return out_path
    import gguf

    hf_dir = Path(hf_dir)
    config = json.loads((hf_dir / "config.json").read_text())
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out_path.name}-", dir=out_path.parent)
    os.close(fd)
    os.chmod(tmp_name, 0o644)  # mkstemp makes it private; a shared CI cache must stay readable
    try:
        writer = gguf.GGUFWriter(tmp_name, "llama")
        _add_model_metadata(writer, config)
        _add_tokenizer_metadata(writer, hf_dir, config)
        _add_tensors(writer, hf_dir, config)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp_name, out_path)
    finally:
        Path(tmp_name).unlink(missing_ok=True)
    marker.write_text(BUILD_VERSION)
    return out_path


def _add_model_metadata(writer, config: dict) -> None:
    """Write the llama hyper-parameters llama.cpp needs to rebuild the graph."""
    import gguf

    writer.add_name("tiny-llama-random")
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(config["num_attention_heads"])
    writer.add_head_count_kv(config["num_key_value_heads"])
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    writer.add_rope_dimension_count(config["head_dim"])
    writer.add_rope_freq_base(config["rope_parameters"]["rope_theta"])
    writer.add_vocab_size(config["vocab_size"])
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)


def _add_tokenizer_metadata(writer, hf_dir: Path, config: dict) -> None:
    """Write the byte-level BPE vocabulary as llama.cpp's ``gpt2`` tokenizer, plus the template.

    Special tokens are typed CONTROL so llama.cpp parses ``<|im_start|>`` in prompts as one token
    and does not print them. transformers 5 saves the chat template as ``chat_template.jinja``.
    """
    import gguf

    tokenizer = json.loads((hf_dir / "tokenizer.json").read_text())
    special = {t["content"] for t in tokenizer["added_tokens"] if t["special"]}
    tokens = sorted(tokenizer["model"]["vocab"], key=tokenizer["model"]["vocab"].__getitem__)
    if len(tokens) != config["vocab_size"]:
        raise ValueError(f"{hf_dir}: {len(tokens)} tokens but vocab_size {config['vocab_size']}")
    types = [gguf.TokenType.CONTROL if t in special else gguf.TokenType.NORMAL for t in tokens]
    merges = [" ".join(pair) for pair in tokenizer["model"]["merges"]]

    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(config["bos_token_id"])
    writer.add_eos_token_id(config["eos_token_id"])
    writer.add_pad_token_id(config["pad_token_id"])
    writer.add_add_bos_token(False)
    writer.add_chat_template((hf_dir / "chat_template.jinja").read_text())


# llama.cpp per-block tensor name -> HF per-layer module name.
_BLOCK_TENSORS = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}


def _add_tensors(writer, hf_dir: Path, config: dict) -> None:
    """Copy the safetensors weights under llama.cpp's tensor names, as F32."""
    from safetensors.numpy import load_file

    weights = load_file(hf_dir / "model.safetensors")
    rotary_heads = {
        "attn_q": config["num_attention_heads"],
        "attn_k": config["num_key_value_heads"],
    }
    writer.add_tensor("token_embd.weight", _f32(weights["model.embed_tokens.weight"]))
    writer.add_tensor("output_norm.weight", _f32(weights["model.norm.weight"]))
    writer.add_tensor("output.weight", _f32(weights["lm_head.weight"]))
    for i in range(config["num_hidden_layers"]):
        for gguf_name, hf_name in _BLOCK_TENSORS.items():
            weight = weights[f"model.layers.{i}.{hf_name}.weight"]
            if gguf_name in rotary_heads:
                weight = _permute_rotary(weight, rotary_heads[gguf_name])
            writer.add_tensor(f"blk.{i}.{gguf_name}.weight", _f32(weight))


def _permute_rotary(weight: np.ndarray, n_head: int) -> np.ndarray:
    """Reorder Q/K rows from HF's rotate-half rotary layout to llama.cpp's interleaved one.

    Same transform as llama.cpp's ``convert_hf_to_gguf.py``; without it the GGUF still loads
    but attention differs from the HF model.
    """
    rows = weight.shape[0]
    return (
        weight.reshape(n_head, 2, rows // n_head // 2, *weight.shape[1:])
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )


def _f32(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array, dtype=np.float32)
