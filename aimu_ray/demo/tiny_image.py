"""A tiny random-weight Stable Diffusion pipeline, built offline, for tests that need a real one.

UNet, VAE and CLIP text encoder are a few kilobytes each with seeded random weights; the CLIP
tokenizer knows only the byte-level characters (no merges), so no vocabulary is downloaded. The
folder loads with ``DiffusionPipeline.from_pretrained`` and makes a 64x64 image in 2 steps in about
0.05 s on a CPU, exercising the real text-to-image, image-to-image and step-callback code paths.
Built in a staging folder and published atomically, like the models of :mod:`.tiny_models`.
"""

from __future__ import annotations

import os
from pathlib import Path

from .tiny_models import SEED, build_once, tiny_model_cache

SIZE = 64            # the pipeline's default image size: UNet sample_size 32 x VAE scale factor 2
TEXT_WIDTH = 32      # CLIP hidden size, which the UNet cross-attends to


def tiny_sd_dir() -> Path:
    """The tiny Stable Diffusion folder in the shared cache, built on first use."""
    return build_tiny_sd(tiny_model_cache() / "tiny-stable-diffusion")


def build_tiny_sd(out_dir: str | os.PathLike) -> Path:
    """Build the tiny Stable Diffusion pipeline into ``out_dir`` (reused once built); return the folder."""
    return build_once(Path(out_dir), lambda staging: _random_sd().save_pretrained(staging))


def _random_sd():
    """A StableDiffusionPipeline of seeded random components, sized to stay under a megabyte."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel

    torch.manual_seed(SEED)
    tokenizer = _byte_clip_tokenizer()
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, sample_size=SIZE // 2, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=TEXT_WIDTH, norm_num_groups=4, attention_head_dim=4)
    vae = AutoencoderKL(
        block_out_channels=[8, 16], in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=4,
        down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2, sample_size=SIZE)
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1)
    return StableDiffusionPipeline(
        vae=vae, text_encoder=_random_clip_text(len(tokenizer)), tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)


def _byte_clip_tokenizer():
    """A CLIP tokenizer over the byte-level alphabet (each character, and each as a word end), no merges."""
    from tokenizers import pre_tokenizers
    from transformers import CLIPTokenizer

    chars = sorted(pre_tokenizers.ByteLevel.alphabet())
    tokens = ["<|startoftext|>", "<|endoftext|>", *chars, *(c + "</w>" for c in chars)]
    return CLIPTokenizer(vocab={token: i for i, token in enumerate(tokens)}, merges=[], model_max_length=77)


def _random_clip_text(vocab_size: int):
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=TEXT_WIDTH, intermediate_size=37, num_attention_heads=4,
        num_hidden_layers=2, max_position_embeddings=77, bos_token_id=0, eos_token_id=1, pad_token_id=1,
        projection_dim=TEXT_WIDTH))
