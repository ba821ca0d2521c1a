"""Tiny random-weight audio models, built offline: MusicGen, AudioLDM2 and Stable Audio.

They make noise, not music, but they load and run through the very classes the real checkpoints use
(``MusicgenForConditionalGeneration``, ``AudioLDM2Pipeline``, ``StableAudioPipeline``), each in well under
a second. Tokenizers are built from vocabularies written here, never fetched. The component sizes follow
diffusers' own fast tests (``get_dummy_components``), shrunk further where it costs nothing.

Each builder writes into a staging folder and publishes it with one rename, as ``tiny_models`` does, so
a finished model is reused by every later run and an interrupted build is redone. The builds share
``tiny_models.BUILD_VERSION``: bump it when a recipe here changes.
"""

from __future__ import annotations

import os
from pathlib import Path

from .tiny_models import SEED, build_once

MUSIC_WORDS = "hello world music calm piano drums upbeat jazz lofi rock rain bird a the with and".split()
MUSICGEN_CODEBOOK = 64          # codebook size, so also the decoder's vocabulary; pad/bos use the id just past it


def build_tiny_musicgen(out_dir: str | os.PathLike) -> Path:
    """MusicGen (T5 encoder, EnCodec at 24 kHz and 75 frames/s, 4-codebook decoder) with its processor."""
    return build_once(Path(out_dir), _write_musicgen)


def build_tiny_audioldm2(out_dir: str | os.PathLike) -> Path:
    """AudioLDM2 (CLAP + T5 + GPT-2 conditioning, mel UNet and VAE, HiFi-GAN vocoder at 16 kHz)."""
    return build_once(Path(out_dir), _write_audioldm2)


def build_tiny_stable_audio(out_dir: str | os.PathLike) -> Path:
    """Stable Audio (T5 conditioning, DiT, stereo Oobleck VAE at 256 Hz: at most 0.5 s per clip)."""
    return build_once(Path(out_dir), _write_stable_audio)


def _t5_tokenizer(model_max_length: int):
    """A unigram T5 tokenizer over a few music words plus single letters, so that any prompt tokenizes."""
    from transformers import T5Tokenizer

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    pieces += [("▁" + word, -1.0) for word in MUSIC_WORDS] + [(c, -5.0) for c in "abcdefghijklmnopqrstuvwxyz"]
    return T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=model_max_length)


def _roberta_tokenizer():
    """CLAP's RoBERTa tokenizer as byte-level BPE with no merges: every byte is a token."""
    from tokenizers import pre_tokenizers
    from transformers import RobertaTokenizer

    vocab = {token: i for i, token in enumerate(["<s>", "<pad>", "</s>", "<unk>", "<mask>"])}
    for char in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab.setdefault(char, len(vocab))
    return RobertaTokenizer(vocab=vocab, merges=[], model_max_length=77)


def _t5_encoder(vocab_size: int):
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(T5Config(vocab_size=vocab_size, d_model=32, d_ff=37, d_kv=8, num_heads=2, num_layers=2))


def _write_musicgen(folder: Path) -> None:
    """The recipe's model, sampling like the real checkpoints do (``do_sample``, guidance 3), so seeds matter."""
    import torch
    from transformers import (EncodecConfig, EncodecFeatureExtractor, MusicgenConfig, MusicgenDecoderConfig,
                              MusicgenForConditionalGeneration, MusicgenProcessor, T5Config)

    tokenizer = _t5_tokenizer(model_max_length=64)
    config = MusicgenConfig(
        text_encoder=T5Config(vocab_size=len(tokenizer), d_model=32, d_ff=37, d_kv=8, num_layers=2, num_heads=4,
                              decoder_start_token_id=0, pad_token_id=0, eos_token_id=1),
        audio_encoder=EncodecConfig(hidden_size=32, num_filters=8, codebook_size=MUSICGEN_CODEBOOK, num_lstm_layers=1,
                                    sampling_rate=24000, upsampling_ratios=[8, 5, 4, 2]),
        decoder=MusicgenDecoderConfig(vocab_size=MUSICGEN_CODEBOOK, hidden_size=32, ffn_dim=64, num_hidden_layers=2,
                                      num_attention_heads=4, num_codebooks=4, max_position_embeddings=256,
                                      pad_token_id=MUSICGEN_CODEBOOK, bos_token_id=MUSICGEN_CODEBOOK),
    )
    torch.manual_seed(SEED)
    model = MusicgenForConditionalGeneration(config)
    for quantizer in model.audio_encoder.quantizer.layers:   # EnCodec starts with zero codebooks: every code alike
        quantizer.codebook.embed.normal_()
    model.generation_config.update(decoder_start_token_id=MUSICGEN_CODEBOOK, pad_token_id=MUSICGEN_CODEBOOK,
                                   do_sample=True, guidance_scale=3.0)
    model.save_pretrained(folder)
    feature_extractor = EncodecFeatureExtractor(feature_size=1, sampling_rate=24000)
    MusicgenProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer).save_pretrained(folder)


def _write_audioldm2(folder: Path) -> None:
    import torch
    from diffusers import (AudioLDM2Pipeline, AudioLDM2ProjectionModel, AudioLDM2UNet2DConditionModel, AutoencoderKL,
                           DDIMScheduler)
    from transformers import (ClapAudioConfig, ClapConfig, ClapFeatureExtractor, ClapModel, ClapTextConfig, GPT2Config,
                              GPT2LMHeadModel, SpeechT5HifiGan, SpeechT5HifiGanConfig)

    tokenizer, tokenizer_2 = _roberta_tokenizer(), _t5_tokenizer(model_max_length=77)
    torch.manual_seed(SEED)
    clap = ClapConfig(
        text_config=ClapTextConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=37,
                                   num_attention_heads=2, num_hidden_layers=2, bos_token_id=0, pad_token_id=1,
                                   eos_token_id=2, projection_dim=16).to_dict(),
        audio_config=ClapAudioConfig(spec_size=64, window_size=4, num_mel_bins=64, intermediate_size=37, depths=[2, 2],
                                     num_attention_heads=[2, 2], num_hidden_layers=2, hidden_size=32, projection_dim=16,
                                     patch_size=2, patch_stride=2, patch_embed_input_channels=4).to_dict(),
        projection_dim=16,
    )
    # The pipeline calls the language model's generation helpers, which GPT2Model lacks in transformers 5.
    language_model = GPT2LMHeadModel(GPT2Config(n_embd=16, n_head=2, n_layer=2, vocab_size=1000, n_ctx=99,
                                                n_positions=99, bos_token_id=0, eos_token_id=0))
    language_model.config.max_new_tokens = 8
    pipe = AudioLDM2Pipeline(
        tokenizer=tokenizer, text_encoder=ClapModel(clap), feature_extractor=ClapFeatureExtractor(hop_length=7900),
        tokenizer_2=tokenizer_2, text_encoder_2=_t5_encoder(len(tokenizer_2)), language_model=language_model,
        projection_model=AudioLDM2ProjectionModel(text_encoder_dim=16, text_encoder_1_dim=32, langauge_model_dim=16),
        unet=AudioLDM2UNet2DConditionModel(
            block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4, attention_head_dim=4, sample_size=32,
            in_channels=4, out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=([None, 16, 32], [None, 16, 32])),
        vae=AutoencoderKL(block_out_channels=[8, 16], norm_num_groups=4, in_channels=1, out_channels=1,
                          latent_channels=4, down_block_types=["DownEncoderBlock2D"] * 2,
                          up_block_types=["UpDecoderBlock2D"] * 2),
        vocoder=SpeechT5HifiGan(SpeechT5HifiGanConfig(
            model_in_dim=8, sampling_rate=16000, upsample_initial_channel=16, upsample_rates=[4, 4],
            upsample_kernel_sizes=[8, 8], resblock_kernel_sizes=[3, 7], resblock_dilation_sizes=[[1, 3, 5], [1, 3, 5]],
            normalize_before=False)),
        scheduler=DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                                set_alpha_to_one=False),
    )
    pipe.save_pretrained(folder)


def _write_stable_audio(folder: Path) -> None:
    """The scheduler is EDM DPM-Solver, the pipeline's declared one: the real checkpoint's cosine variant
    needs ``torchsde``, which the audio extra does not install."""
    import torch
    from diffusers import (AutoencoderOobleck, EDMDPMSolverMultistepScheduler, StableAudioDiTModel, StableAudioPipeline,
                           StableAudioProjectionModel)

    tokenizer = _t5_tokenizer(model_max_length=25)
    torch.manual_seed(SEED)
    pipe = StableAudioPipeline(
        tokenizer=tokenizer, text_encoder=_t5_encoder(len(tokenizer)),
        projection_model=StableAudioProjectionModel(text_encoder_dim=32, conditioning_dim=4, min_value=0, max_value=32),
        transformer=StableAudioDiTModel(sample_size=64, in_channels=3, num_layers=2, attention_head_dim=4,
                                        num_key_value_attention_heads=2, out_channels=3, cross_attention_dim=4,
                                        time_proj_dim=8, global_states_input_dim=8, cross_attention_input_dim=4),
        vae=AutoencoderOobleck(encoder_hidden_size=6, downsampling_ratios=[1, 2], decoder_channels=3,
                               decoder_input_channels=3, audio_channels=2, channel_multiples=[2, 4], sampling_rate=256),
        scheduler=EDMDPMSolverMultistepScheduler(solver_order=2, prediction_type="v_prediction", sigma_data=1.0,
                                                 sigma_schedule="exponential"),
    )
    pipe.save_pretrained(folder)
