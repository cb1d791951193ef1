"""Peak activation memory of the tiled VAE, for planning tile sizes against a budget (issue 13).

The estimate counts the tensors alive at the widest full-resolution point of one tile (bounded mode) or of all
tiles at a GroupNorm barrier (exact mode), plus the preallocated output. It excludes the weights and the input
tensor the caller holds. ``benchmarks/vae_bounded.py --memory`` compares it with measured peak RSS.
"""

from __future__ import annotations

from collections.abc import Sequence

from seesr.pipeline.vae_tiling import (
    DECODER_PAD,
    ENCODER_PAD,
    decoder_needs_tiling,
    encoder_needs_tiling,
    split_tiles,
)

SD2_VAE_CHANNELS = (128, 256, 512, 512)


def estimate_vae_peak_bytes(
    h: int,
    w: int,
    tile_size: int,
    *,
    part: str,
    block_out_channels: Sequence[int] = SD2_VAE_CHANNELS,
    latent_channels: int = 4,
    mode: str = "bounded",
    live_tiles: int = 1,
    dtype_bytes: int = 4,
    out_dtype_bytes: int = 4,
    pad: int | None = None,
    batch: int = 1,
) -> int:
    """Predicted peak bytes of activations + output of one tiled VAE call.

    Args:
        h, w: input size: image pixels for ``part="encoder"``, latent pixels for ``part="decoder"``.
        tile_size: core tile side (image px for the encoder, latent px for the decoder).
        part: "encoder" or "decoder".
        block_out_channels: the VAE's ``block_out_channels`` (SD-2: 128, 256, 512, 512).
        latent_channels: latent channels (4).
        mode: "exact" or "bounded"; ``live_tiles`` tiles alive at once in the bounded mode (1 with the
            "recompute" statistics, ``vae_live_tiles`` with "sampled").
        dtype_bytes: bytes per activation element (4 fp32, 2 fp16/bf16).
        out_dtype_bytes: bytes per output element.
        pad: context margin (default 32 image px / 11 latent px).
        batch: images per call.

    Returns:
        Bytes.

    Raises:
        ValueError: for an unknown ``part`` or ``mode``.
    """
    if part not in ("encoder", "decoder"):
        raise ValueError(f"part must be 'encoder' or 'decoder', got {part!r}")
    if mode not in ("exact", "bounded"):
        raise ValueError(f"mode must be 'exact' or 'bounded', got {mode!r}")
    is_dec = part == "decoder"
    pad = (DECODER_PAD if is_dec else ENCODER_PAD) if pad is None else pad
    scale = 2 ** (len(block_out_channels) - 1)
    top = block_out_channels[0]
    below = block_out_channels[1] if len(block_out_channels) > 1 else top
    # channels alive at the widest full-resolution op of one tile: decoder = upsampled input of the top block (x3:
    # input, two GroupNorm temporaries) + its residual; encoder = state, residual and two GroupNorm temporaries
    work_ch = 3 * below + top if is_dec else 4 * top
    # state + residual kept per tile between barriers in the exact mode
    kept_ch = below + top if is_dec else 2 * top
    needs = decoder_needs_tiling if is_dec else encoder_needs_tiling
    if needs(h, w, tile_size, pad):
        tiles = split_tiles(h, w, tile_size, pad, is_decoder=is_dec, scale=scale)
        areas = [(t.input_box.y1 - t.input_box.y0) * (t.input_box.x1 - t.input_box.x0) for t in tiles]
    else:
        areas = [h * w]
    full = scale * scale if is_dec else 1  # full-resolution pixels per input pixel
    biggest = max(areas) * full
    if mode == "bounded":
        act = min(live_tiles, len(areas)) * work_ch * biggest
    else:
        act = kept_ch * sum(areas) * full + work_ch * biggest
    out_px = h * w * scale * scale if is_dec else (h // scale) * (w // scale)
    out_ch = 3 if is_dec else 2 * latent_channels
    return int(batch * (act * dtype_bytes + out_ch * out_px * out_dtype_bytes))
