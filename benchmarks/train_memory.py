"""Stage-2 training memory at SD-2 size, computed without a GPU (issue 6; configs/train_seesr_*.yaml).

Static part: parameter counts of every model built on the meta device x bytes per parameter (trainable fp32 weights
+ grads + two AdamW moments; frozen UNet fp32; VAE, text encoder and DAPE in fp16 under mixed precision).
Activations: the bytes of every tensor autograd saves for backward in one ControlNet + UNet forward at 512² (latent
64²), traced on the meta device in fp16 — with and without gradient checkpointing. N x N attention matrices are
listed apart: the meta (math) attention saves them, while CUDA's flash / memory-efficient SDPA (and xformers,
which the official scripts use) do not. With checkpointing, what the checkpointed regions keep (their inputs) and the
block recomputed during backward are not in the count; autocast would keep norm outputs in fp32 (here all fp16). Nothing here is measured on a GPU; allocator slack, the CUDA
context and cuDNN workspaces (typically 1-2 GB) come on top.

Usage: ``python benchmarks/train_memory.py``
"""

from __future__ import annotations

import torch

from seesr.models.unet import SD2_BASE_UNET_CONFIG

SD2_UNET = dict(SD2_BASE_UNET_CONFIG, use_image_cross_attention=True)
SD2_VAE = dict(
    block_out_channels=[128, 256, 512, 512],
    down_block_types=["DownEncoderBlock2D"] * 4,
    up_block_types=["UpDecoderBlock2D"] * 4,
    latent_channels=4,
    layers_per_block=2,
    sample_size=768,
)
SD2_TEXT = dict(
    hidden_size=1024,
    intermediate_size=4096,
    num_hidden_layers=23,
    num_attention_heads=16,
    vocab_size=49408,
    max_position_embeddings=77,
    hidden_act="gelu",
    projection_dim=512,
)
GB = 1e9


def _models(checkpointing: bool):
    from seesr.models.controlnet import SeeSRControlNet
    from seesr.models.unet import SeeSRUNet
    from seesr.training.models import configure_trainable

    with torch.device("meta"):
        unet = SeeSRUNet.from_config(SD2_UNET).to(torch.float16)
        controlnet = SeeSRControlNet.from_unet(unet, load_weights_from_unet=False).to(torch.float16)
    trainable = configure_trainable(unet, controlnet)
    if checkpointing:
        unet.enable_gradient_checkpointing()
        controlnet.enable_gradient_checkpointing()
    return unet.train(), controlnet.train(), trainable


def activation_bytes(checkpointing: bool, batch: int = 1) -> tuple[int, int]:
    """(all saved bytes, of which N x N attention matrices) for one forward of ``batch`` samples at 512²."""
    unet, controlnet, _ = _models(checkpointing)
    totals = [0, 0]

    def pack(t: torch.Tensor) -> torch.Tensor:
        n = t.numel() * t.element_size()
        totals[0] += n
        if t.ndim >= 2 and t.shape[-1] == t.shape[-2] and t.shape[-1] >= 256:
            totals[1] += n
        return t

    def meta(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, device="meta", dtype=torch.float16)

    x, text, embeds, cond = (
        meta(batch, 4, 64, 64),
        meta(batch, 77, 1024),
        meta(batch, 145, 512),
        meta(batch, 3, 512, 512),
    )
    t = torch.full((batch,), 500, device="meta")
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda s: s):
        down, mid = controlnet(x, t, text, cond, image_encoder_hidden_states=embeds, return_dict=False)
        unet(x, t, text, image_encoder_hidden_states=embeds, down_block_additional_residuals=list(down),
             mid_block_additional_residual=mid)  # fmt: skip
    return totals[0], totals[1]


def static_bytes() -> list[tuple[str, int, float]]:
    """(component, parameters, GB) of everything resident for the whole run."""
    from diffusers import AutoencoderKL
    from transformers import CLIPTextConfig, CLIPTextModel

    from seesr.models.dape import DAPE, DAPEConfig

    unet, controlnet, trainable = _models(False)
    n_train = sum(p.numel() for _, p in trainable)
    n_frozen_unet = sum(p.numel() for p in unet.parameters() if not p.requires_grad)
    with torch.device("meta"):
        n_vae = sum(p.numel() for p in AutoencoderKL(**SD2_VAE).parameters())
        n_text = sum(p.numel() for p in CLIPTextModel(CLIPTextConfig(**SD2_TEXT)).parameters())
        n_dape = sum(p.numel() for p in DAPE(DAPEConfig(), ["t"] * 4585, [0.5] * 4585).parameters())
    return [
        ("trainable weights+grads+AdamW (fp32, 16 B/param)", n_train, n_train * 16 / GB),
        ("frozen UNet part (fp32)", n_frozen_unet, n_frozen_unet * 4 / GB),
        ("VAE (fp16)", n_vae, n_vae * 2 / GB),
        ("text encoder (fp16)", n_text, n_text * 2 / GB),
        ("DAPE subset (fp16)", n_dape, n_dape * 2 / GB),
    ]


def main() -> None:
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()  # the fp16 casts of meta models warn about nothing useful here
    rows = static_bytes()
    static = sum(r[2] for r in rows)
    print(f"{'component':52s} {'params':>14s} {'GB':>7s}")
    for name, n, gb in rows:
        print(f"{name:52s} {n:14,d} {gb:7.2f}")
    print(f"{'static total':52s} {'':>14s} {static:7.2f}")
    print()
    print(f"{'activations per 512² sample (fp16)':40s} {'saved GB':>9s} {'N×N attn':>9s} {'w/o attn':>9s}")
    acts = {}
    for ckpt in (False, True):
        total, attn = activation_bytes(ckpt)
        acts[ckpt] = (total - attn) / GB
        label = "gradient checkpointing" if ckpt else "no checkpointing"
        print(f"{label:40s} {total / GB:9.2f} {attn / GB:9.2f} {(total - attn) / GB:9.2f}")
    print()
    print(f"{'recipe (flash/xformers attention)':52s} {'GB':>7s}")
    print(f"{'paper 8 GPUs: 2 samples/GPU, no checkpointing':52s} {static + 2 * acts[False]:7.1f}")
    print(f"{'24 GB GPU: 2 samples, gradient checkpointing':52s} {static + 2 * acts[True]:7.1f}")
    print("(+ CUDA context, allocator slack and the recomputed block during backward: ~1-2 GB)")


if __name__ == "__main__":
    main()
