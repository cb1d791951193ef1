"""Tiny SeeSR weights built in code, written in the official release layout (a bare clone has no fixtures).

:func:`write_tiny_weights` writes the weight part of the parity-fixture layout (``sd2-tiny/``, ``seesr-tiny/``,
``ram-tiny/``, ``sd2turbo-tiny/``) plus stand-in inputs (``reference/lr/*.png``, ``degradation/gt/*.png``,
``reference/train/``), so every helper that takes a fixtures folder (``tests.tiny_pipeline.official_parts``,
``build_tiny_pipeline``, ``load_lr``) works on it unchanged. Everything comes from the project's own classes (SeeSRUNet/SeeSRControlNet with RCA, DAPE) and stock
diffusers/transformers ones, seeded; the architectures are those of the fixtures (README §2–4) except a short tag
list and a small CLIP BPE vocabulary. Nothing here is a reference output: tests that compare against the official
code's outputs need the real fixtures.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

SEED = 0

SD2_SCHEDULER = {
    "_class_name": "PNDMScheduler",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
}
"""SD-2-base ``scheduler/scheduler_config.json`` (the pipeline reads it with ``DDPMScheduler``)."""

UNET_CONFIG = {
    "sample_size": 32,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "block_out_channels": [16, 16, 32],
    "layers_per_block": 2,
    "attention_head_dim": [1, 2, 4],
    "cross_attention_dim": 16,
    "use_linear_projection": True,
    "norm_num_groups": 16,
    "use_image_cross_attention": True,
}
"""The fixtures' seesr-tiny UNet: SD-2 structure, 3 levels, RCA on (11 RCA modules)."""

VAE_CONFIG = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "block_out_channels": [32, 32, 32, 32],
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "latent_channels": 4,
    "sample_size": 512,
    "scaling_factor": 0.18215,
}
"""x8 VAE with 2 ResNets per level and 32 groups, which the tiled-VAE code requires (fixtures README §2)."""

TEXT_HIDDEN = 16

TAGS = [
    "cup", "coffee", "table", "saucer", "spoon", "drink", "mug", "wood", "white", "brown",
    "person", "astronaut", "flag", "space", "suit", "helmet", "camera", "man", "grass", "sky",
    "building", "tree", "water", "cat",
]  # fmt: skip
"""Tag list of the tiny DAPE (the real RAM has 4585)."""

ALWAYS, NEVER = 0.0, 1.0
TAG_THRESHOLDS = [ALWAYS] * 2 + [0.5] * 14 + [NEVER] * 8
"""``sigmoid(logit) > threshold`` fires a tag: the first two always fire (so a run always has tags), the middle
ones depend on the image, the last ones never fire."""

PROMPT_WORDS = ["clean", "high", "resolution", "photo", "photograph", "quality", "detailed", "blurry"]

# name -> (width, height) of the stand-in LR inputs / HQ images (sizes of the fixture files of the same name)
LR_IMAGES = {"coffee_48x64": (64, 48), "coffee_96x128": (128, 96), "astronaut_56x80": (80, 56)}
GT_IMAGES = {"astronaut": (512, 512), "camera": (512, 512)}


# ---------------------------------------------------------------------------------------------- helpers
def _perturb(model: torch.nn.Module, generator: torch.Generator, std: float = 0.02) -> None:
    """Add N(0, std) to every parameter (as the fixtures do: zero convs and norm affines become non-trivial)."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * std)


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP byte-level BPE alphabet: printable bytes map to themselves, the rest to code points >= 256."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in keep}
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + len(table) - len(keep))
    return table


def _word_merges(words: list[str]) -> list[tuple[str, str]]:
    """Left-to-right merges that spell each word as one token (last symbol carries ``</w>``)."""
    merges: list[tuple[str, str]] = []
    for word in words:
        symbols = [*word[:-1], word[-1] + "</w>"]
        left = symbols[0]
        for right in symbols[1:]:
            if (left, right) not in merges:
                merges.append((left, right))
            left += right
    return merges


def write_tokenizer(folder: Path, words: list[str]) -> int:
    """A CLIP BPE tokenizer (SD-2 convention: pad "!" = id 0, 77 tokens) with a small vocabulary.

    Vocabulary order as CLIP's: 256 byte symbols, the same with ``</w>``, one entry per merge, then
    ``<|startoftext|>`` and ``<|endoftext|>``. Returns the vocabulary size.
    """
    folder.mkdir(parents=True, exist_ok=True)
    alphabet = list(bytes_to_unicode().values())
    merges = _word_merges(words)
    tokens = alphabet + [c + "</w>" for c in alphabet] + ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {t: i for i, t in enumerate(dict.fromkeys(tokens))}
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    lines = ["#version: 0.2", *(f"{a} {b}" for a, b in merges)]
    (folder / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    special = {
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": "!",
    }
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=1), encoding="utf-8")
    config = {**special, "model_max_length": 77, "do_lower_case": True, "tokenizer_class": "CLIPTokenizer"}
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=1), encoding="utf-8")
    return len(vocab)


# ---------------------------------------------------------------------------------------------- parts
def write_sd2(folder: Path, generator: torch.Generator) -> None:
    """SD-2-base-layout folder: ``tokenizer/``, ``text_encoder/``, ``vae/``, ``scheduler/``, ``model_index.json``."""
    from diffusers import AutoencoderKL
    from transformers import CLIPTextConfig, CLIPTextModel

    vocab_size = write_tokenizer(folder / "tokenizer", TAGS + PROMPT_WORDS)
    text_config = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=TEXT_HIDDEN,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=77,
        projection_dim=TEXT_HIDDEN,
        hidden_act="gelu",
        bos_token_id=vocab_size - 2,
        eos_token_id=vocab_size - 1,
        pad_token_id=0,
    )
    text_encoder = CLIPTextModel(text_config)
    _perturb(text_encoder, generator)
    text_encoder.save_pretrained(folder / "text_encoder")
    vae = AutoencoderKL(**VAE_CONFIG)
    _perturb(vae, generator)
    vae.save_pretrained(folder / "vae")
    (folder / "scheduler").mkdir(parents=True, exist_ok=True)
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(SD2_SCHEDULER, indent=1))
    index = {
        "_class_name": "StableDiffusionPipeline",
        "scheduler": ["diffusers", "PNDMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    (folder / "model_index.json").write_text(json.dumps(index, indent=1))


def write_seesr(folder: Path, generator: torch.Generator) -> None:
    """Release layout ``unet/`` + ``controlnet/`` (RCA on), ControlNet derived from the UNet as in training."""
    from seesr.models.controlnet import SeeSRControlNet
    from seesr.models.unet import SeeSRUNet

    unet = SeeSRUNet(**UNET_CONFIG)
    _perturb(unet, generator)
    controlnet = SeeSRControlNet.from_unet(unet)
    _perturb(controlnet, generator)  # zero convs non-zero, so the ControlNet residuals matter
    unet.save_pretrained(folder / "unet")
    controlnet.save_pretrained(folder / "controlnet")


def write_turbo(folder: Path, generator: torch.Generator) -> None:
    """An sd-turbo-layout folder: a stock UNet (no RCA, same config) + the trailing-spacing Euler scheduler."""
    from diffusers import UNet2DConditionModel

    config = {k: v for k, v in UNET_CONFIG.items() if k != "use_image_cross_attention"}
    unet = UNet2DConditionModel(**config)
    _perturb(unet, generator)
    unet.save_pretrained(folder / "unet")
    sched = {**SD2_SCHEDULER, "_class_name": "EulerDiscreteScheduler", "timestep_spacing": "trailing"}
    (folder / "scheduler").mkdir(parents=True, exist_ok=True)
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(sched, indent=1))


def dape_config():
    """The fixtures' reduced RAM Swin (ram-tiny/arch.json) with the short :data:`TAGS` list."""
    from seesr.models.dape import DAPEConfig

    return DAPEConfig(
        embed_dim=8,
        depths=(2, 2, 2, 2),
        num_heads=(1, 2, 4, 8),
        window_size=12,
        num_classes=len(TAGS),
        head_hidden=64,
        head_layers=2,
        head_heads=4,
        head_intermediate=128,
        med_hidden=64,
        med_layers=2,
        med_decoder_encoder_width=64,
    )


def write_ram(folder: Path, generator: torch.Generator) -> None:
    """``ram_tiny.pth`` (``{'model': state_dict}``), ``DAPE_tiny.pth`` (official LoRA layout), ``arch.json``,
    tag list and thresholds."""
    from seesr.models.dape import DAPE
    from seesr.pipeline.dape_lora import save_official_lora

    folder.mkdir(parents=True, exist_ok=True)
    config = dape_config()
    model = DAPE(config, TAGS, TAG_THRESHOLDS)
    model.visual_encoder.init_buffers()
    _perturb(model, generator)
    with torch.no_grad():
        model.label_embed.normal_(
            generator=generator
        )  # zero-initialised in the code; real RAM holds CLIP text
    torch.save({"model": model.state_dict()}, folder / "ram_tiny.pth")
    model.enable_lora(generator=generator)
    with torch.no_grad():
        for layer in model.lora_layers().values():
            layer.lora_B.normal_(generator=generator)  # non-zero: the DAPE file changes the model
    save_official_lora(folder / "DAPE_tiny.pth", model)
    (folder / "arch.json").write_text(json.dumps(config.to_dict(), indent=1))
    (folder / "ram_tag_list.txt").write_text("\n".join(TAGS), encoding="utf-8")
    (folder / "ram_tag_list_threshold.txt").write_text("\n".join(str(t) for t in TAG_THRESHOLDS))


def smooth_image(width: int, height: int, seed: int) -> Image.Image:
    """A smooth, photo-like RGB test image: bicubic-enlarged random colour field plus a gradient."""
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize(
        (width, height), Image.Resampling.BICUBIC
    )
    ramp = np.linspace(0, 60, width, dtype=np.float32)[None, :, None]
    arr = np.clip(np.asarray(coarse, dtype=np.float32) * 0.8 + ramp, 0, 255)
    return Image.fromarray(arr.astype(np.uint8))


def write_images(root: Path) -> None:
    """Stand-ins for ``reference/lr/<name>.png``, ``degradation/gt/<name>.png`` (same names and sizes) and the
    paired training folder ``reference/train/{gt,lr,sr_bicubic,tag}`` (64 px GT, x4 bicubic LR, tag captions)."""
    for folder, images in ((root / "reference" / "lr", LR_IMAGES), (root / "degradation" / "gt", GT_IMAGES)):
        folder.mkdir(parents=True, exist_ok=True)
        for i, (name, (w, h)) in enumerate(sorted(images.items())):
            smooth_image(w, h, seed=SEED + i).save(folder / f"{name}.png")
    train = root / "reference" / "train"
    for sub in ("gt", "lr", "sr_bicubic", "tag"):
        (train / sub).mkdir(parents=True, exist_ok=True)
    for i, stem in enumerate(("0000001", "0000002")):
        gt = smooth_image(64, 64, seed=SEED + 100 + i)
        lr = gt.resize((16, 16), Image.Resampling.BICUBIC)
        gt.save(train / "gt" / f"{stem}.png")
        lr.save(train / "lr" / f"{stem}.png")
        lr.resize((64, 64), Image.Resampling.BICUBIC).save(train / "sr_bicubic" / f"{stem}.png")
        (train / "tag" / f"{stem}.txt").write_text(", ".join(TAGS[i : i + 3]) + ",", encoding="utf-8")


def write_tiny_weights(root: Path, seed: int = SEED) -> Path:
    """Write the tiny weights + stand-in images under ``root`` (the fixtures' layout, see the module docstring).

    Takes a few seconds on 2 CPU cores; deterministic for a given ``seed``. Returns ``root``.
    """
    generator = torch.Generator().manual_seed(seed)
    state = torch.get_rng_state()
    torch.manual_seed(seed)  # the default initialisations draw from the global RNG
    try:
        write_sd2(root / "sd2-tiny", generator)
        write_seesr(root / "seesr-tiny", generator)
        write_ram(root / "ram-tiny", generator)
        write_turbo(root / "sd2turbo-tiny", generator)
    finally:
        torch.set_rng_state(state)
    write_images(root)
    return root
