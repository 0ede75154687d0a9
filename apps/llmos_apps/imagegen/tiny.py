"""A tiny randomly initialised Stable Diffusion pipeline, for tests and benchmarks.

:func:`write_tiny_pipeline` builds a UNet, a VAE, a CLIP text encoder, a CLIP tokenizer
(whose vocab.json and merges.txt it writes itself) and an Euler scheduler from configs,
and saves them with ``save_pretrained``: the folder loads exactly like a downloaded model,
with nothing fetched from the Hub. Its images are noise; its shapes and code paths are real.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

TOKENIZER_SPECIALS = ["<|startoftext|>", "<|endoftext|>"]


def write_tokenizer_files(folder: Path) -> tuple[Path, Path]:
    """A byte-level BPE vocabulary of single letters and digits, and an empty merge list."""
    folder.mkdir(parents=True, exist_ok=True)
    symbols = list(string.ascii_lowercase + string.digits + "!,.")
    vocabulary = TOKENIZER_SPECIALS + symbols + [symbol + "</w>" for symbol in symbols]
    vocab_path, merges_path = folder / "vocab.json", folder / "merges.txt"
    vocab_path.write_text(json.dumps({token: index for index, token in enumerate(vocabulary)}))
    merges_path.write_text("#version: 0.2\n")
    return vocab_path, merges_path


def write_tiny_pipeline(folder: Path, seed: int = 0) -> Path:
    """Save a tiny random StableDiffusionPipeline into ``folder`` and return it."""
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=4,  # × the VAE's factor of 8 = a 32-pixel native size: the app clamps it up to 64
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=32,
    )
    vae = AutoencoderKL(  # four levels: latents 8× smaller than the image, as in real Stable Diffusion
        block_out_channels=(32, 32, 32, 32),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        norm_num_groups=32,
        mid_block_add_attention=False,  # full attention over the latents is the slowest part at 256×256
    )
    text_config = CLIPTextConfig(
        hidden_size=32,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=2,
        vocab_size=1000,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
        layer_norm_eps=1e-5,
    )
    vocab_path, merges_path = write_tokenizer_files(folder / "_tokenizer_source")
    tokenizer = CLIPTokenizer(str(vocab_path), str(merges_path), model_max_length=77)
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1
    )
    pipeline = StableDiffusionPipeline(
        unet=unet,
        vae=vae,
        text_encoder=CLIPTextModel(text_config),
        tokenizer=tokenizer,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipeline.save_pretrained(folder)  # type: ignore[attr-defined]  # diffusers' mixins hide it from mypy
    return folder
