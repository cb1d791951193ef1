"""Tiled VAE encode/decode with GroupNorm statistics shared across tiles (spec §1.8, §9 item 12).

The official SeeSR inference hooks the VAE encoder and decoder with the "tiled VAE" of the multidiffusion
upscaler. This module re-expresses that behaviour over the diffusers ``Encoder`` / ``Decoder`` modules:

1. The input is split into a grid of core tiles (``split_tiles``); every tile is read with ``pad`` extra
   pixels of context on each side (32 image px for the encoder, 11 latent px for the decoder) so that the
   convolutions see (almost) the same neighbourhood as in the untiled forward.
2. The forward is flattened into a list of elementary operations (convolutions, activations, residual
   store/add, attention, down/up-samplers; ``vae_ops``). Every GroupNorm is a barrier: all tiles are advanced to it, the
   per-tile group mean/variance (biased) are averaged weighted by the tiles' pixel counts (overlaps counted,
   as the official code does), and every tile is normalised with those shared statistics (eps 1e-6, then
   the GroupNorm affine).
3. The mid-block self-attention runs per tile (official behaviour), so tiled ≠ untiled in general.
4. Each finished tile is cropped to its valid region and written into the output.

Tiles are visited alternately forwards and backwards between barriers, as in the official code; this only
fixes the order of the floating-point sums of the statistics.

Inputs whose longer side is at most ``2·pad + tile_size`` are not tiled: the plain module forward runs.

``mode="bounded"`` (``vae_bounded``) keeps the same tile layout but fixes the GroupNorm statistics first and then
runs one tile at a time end to end, so memory does not grow with the image.

Provenance: the tile-size search (``best_tile_size``) and the grid split (``split_tiles``) are close paraphrases
of the tiled VAE of the multidiffusion upscaler (pkuliyi2015/multidiffusion-upscaler-for-automatic1111, MIT
licence), which the official SeeSR inference uses; reproducing its tile boxes is what the parity fixtures check.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable
from typing import Any, NamedTuple, cast

import torch
from torch import Tensor, nn

from seesr.config import TilingConfig
from seesr.pipeline.tiling import TileBox
from seesr.pipeline.vae_ops import (
    Op,
    apply_group_norm,
    decoder_ops,
    encoder_ops,
    group_var_mean,
    new_result,
    sampling_factor,
    self_attention,
    shared_stats,
)
from seesr.pipeline.vae_spill import TileSpill

logger = logging.getLogger(__name__)

ENCODER_PAD = 32
DECODER_PAD = 11
_VAE_SCALE = 8


class VaeTile(NamedTuple):
    """One tile of the tiled VAE.

    Attributes:
        input_box: region read from the input (core box ± pad, clipped), input pixels.
        output_box: region written to the output (core box, extended to the border when within ``pad`` of it),
            output pixels (x8 for the decoder, //8 for the encoder).
    """

    input_box: TileBox
    output_box: TileBox


def encoder_needs_tiling(h: int, w: int, tile_size: int, pad: int = ENCODER_PAD) -> bool:
    """Whether an ``h x w`` image (pixels) is encoded in tiles: ``max(h, w) > 2·pad + tile_size``."""
    return max(h, w) > 2 * pad + tile_size


def decoder_needs_tiling(h: int, w: int, tile_size: int, pad: int = DECODER_PAD) -> bool:
    """Whether an ``h x w`` latent is decoded in tiles: ``max(h, w) > 2·pad + tile_size``."""
    return max(h, w) > 2 * pad + tile_size


def best_tile_size(lower: int, upper: int) -> int:
    """Round ``lower`` up to a multiple of the largest of 32, 16, 8, 4, 2 that keeps it ``<= upper``.

    Returns ``lower`` unchanged if it already is such a multiple or nothing fits.
    """
    divider = 32
    while divider >= 2:
        rem = lower % divider
        if rem == 0:
            return lower
        candidate = lower - rem + divider
        if candidate <= upper:
            return candidate
        divider //= 2
    return lower


def split_tiles(
    h: int, w: int, tile_size: int, pad: int, *, is_decoder: bool, scale: int = _VAE_SCALE
) -> list[VaeTile]:
    """Tile layout of the official tiled VAE, row-major (outer loop over y).

    Args:
        h: input height (image px for the encoder, latent px for the decoder).
        w: input width.
        tile_size: requested core tile side.
        pad: context margin around each core tile.
        is_decoder: output boxes are scaled x``scale`` (decoder) or //``scale`` (encoder).
        scale: spatial factor between image and latent (8 for every SD VAE).

    Returns:
        One ``VaeTile`` per tile.

    Raises:
        ValueError: for non-positive sizes.
    """
    if h < 1 or w < 1 or tile_size < 1 or pad < 0:
        raise ValueError(f"invalid tiled-VAE geometry: input {h}x{w}, tile_size {tile_size}, pad {pad}")
    n_y = max(math.ceil((h - 2 * pad) / tile_size), 1)
    n_x = max(math.ceil((w - 2 * pad) / tile_size), 1)
    # Shrink the tile so the tiles are about equal, then round to a GPU-friendly multiple.
    real_h = best_tile_size(math.ceil((h - 2 * pad) / n_y), tile_size)
    real_w = best_tile_size(math.ceil((w - 2 * pad) / n_x), tile_size)

    def to_out(v: int) -> int:
        return v * scale if is_decoder else v // scale

    tiles = []
    for i in range(n_y):
        for j in range(n_x):
            x0, x1 = pad + j * real_w, min(pad + (j + 1) * real_w, w)
            y0, y1 = pad + i * real_h, min(pad + (i + 1) * real_h, h)
            out = TileBox(
                to_out(y0 if y0 > pad else 0),
                to_out(y1 if y1 < h - pad else h),
                to_out(x0 if x0 > pad else 0),
                to_out(x1 if x1 < w - pad else w),
            )
            inp = TileBox(max(0, y0 - pad), min(h, y1 + pad), max(0, x0 - pad), min(w, x1 + pad))
            tiles.append(VaeTile(inp, out))
    return tiles


# --------------------------------------------------------------------------------------------------------------
# Executor


def _run_tiled(
    ops: list[Op],
    x: Tensor,
    tiles: list[VaeTile],
    out_hw: tuple[int, int],
    *,
    is_decoder: bool,
    out_dtype: torch.dtype | None,
    offload_device: torch.device | str | None,
    scale: int = _VAE_SCALE,
    stats_out: list[list[tuple[Tensor, Tensor]]] | None = None,
    spill: TileSpill | None = None,
    prepare: Callable[[Tensor], Tensor] | None = None,
    finish: Callable[[Tensor], Tensor] | None = None,
) -> Tensor:
    """The GroupNorm-synchronised tiled forward; ``spill`` keeps the tiles' activations in files between turns
    (all but the last ``spill.keep_in_memory`` tiles of each pass, which the next, reversed pass visits first).

    Each tile's valid crop is written into the output as soon as the tile finishes (the last segment), so no
    finished tile outlives its turn; ``finish`` (elementwise) maps the crop first, e.g. to uint8 codes.
    """
    device = x.device if prepare is None else prepare(x[:, :, :1, :1]).device
    used_stats: list[tuple[Tensor, Tensor]] = []
    states: list[Tensor | None] = [
        x[:, :, t.input_box.y0 : t.input_box.y1, t.input_box.x0 : t.input_box.x1] for t in tiles
    ]
    residuals: list[Tensor | None] = [None] * len(tiles)
    barriers = [i for i, op in enumerate(ops) if op.kind == "norm"] + [len(ops)]
    start = 0
    shared: tuple[nn.GroupNorm, Tensor, Tensor] | None = None
    result: Tensor | None = None
    forward = True
    for end in barriers:
        order = range(len(tiles)) if forward else reversed(range(len(tiles)))
        stats: list[tuple[Tensor, Tensor, int]] = []
        for position, t in enumerate(order):
            state = states[t]
            if state is None:  # parked in the spill files
                assert spill is not None
                h, res = spill.take(t, device)
            else:
                h = prepare(state) if prepare is not None and start == 0 else state.to(device)
                res = residuals[t]
                res = res.to(device) if res is not None else None
            if shared is not None:
                h = apply_group_norm(h, *shared)
            for op in ops[start:end]:
                if op.kind == "apply":
                    assert op.fn is not None  # "apply"/"store" ops always carry fn (built above)
                    h = op.fn(h)
                elif op.kind == "store":
                    assert op.fn is not None
                    res = op.fn(h)
                elif op.kind == "add":
                    assert res is not None  # every "add" follows its "store" in the op list
                    h = h + res
                    if op.factor != 1.0:
                        h = h / op.factor
                    res = None
                elif op.kind == "attn":
                    h = self_attention(op.module, h)
                else:  # pragma: no cover - the op list is built above
                    raise AssertionError(op.kind)
            if end == len(ops):  # finished: straight into the output
                states[t] = residuals[t] = None
                if out_hw == (0, 0):  # statistics only (the bounded mode's sampling pass)
                    continue
                piece = _valid_crop(h, tiles[t], is_decoder=is_decoder, scale=scale)
                if finish is not None:
                    piece = finish(piece if out_dtype is None else piece.to(out_dtype))
                if result is None:
                    shape = (x.shape[0], piece.shape[1], *out_hw)
                    dtype = piece.dtype if finish is not None else out_dtype or piece.dtype
                    result = new_result(shape, dtype, piece.device, finished=finish is not None)
                ob = tiles[t].output_box
                result[:, :, ob.y0 : ob.y1, ob.x0 : ob.x1] = piece
                continue
            var, mean = group_var_mean(h, ops[end].module.num_groups)
            stats.append((var, mean, h.shape[2] * h.shape[3]))
            # the order alternates, so the tiles visited last are needed first: those stay in memory
            if spill is not None and position < len(tiles) - spill.keep_in_memory:
                spill.put(t, h, res)
                states[t] = residuals[t] = None
                continue
            if offload_device is not None:
                h = h.to(offload_device)
                res = res.to(offload_device) if res is not None else None
            states[t], residuals[t] = h, res
        if end == len(ops):
            break
        var, mean = shared_stats(stats)
        shared = (ops[end].module, var, mean)
        used_stats.append((var, mean))
        start = end + 1
        forward = not forward

    if stats_out is not None:
        stats_out.append(used_stats)
    if result is None:  # statistics only: no output assembled
        return x.new_empty(0)
    return result


def _valid_crop(h: Tensor, tile: VaeTile, *, is_decoder: bool, scale: int) -> Tensor:
    """Cut the part of a finished tile that lands in its output box (the official offset arithmetic)."""
    inp, out = tile.input_box, tile.output_box

    def to_out(v: int) -> int:
        return v * scale if is_decoder else v // scale

    top, left = out.y0 - to_out(inp.y0), out.x0 - to_out(inp.x0)
    bottom, right = out.y1 - to_out(inp.y1), out.x1 - to_out(inp.x1)  # <= 0: how much to drop at the far end
    return h[:, :, top : h.shape[2] + bottom, left : h.shape[3] + right]


VAE_MODES = ("exact", "bounded")


def mode_kwargs(tiling: TilingConfig) -> dict[str, Any]:
    """The ``tiled_encode``/``tiled_decode`` keyword arguments of a ``TilingConfig`` (mode, statistics, tiles)."""
    return {
        "mode": tiling.vae_mode,
        "stats_method": tiling.vae_bounded_stats,
        "live_tiles": tiling.vae_live_tiles,
    }


def _check_mode(mode: str) -> None:
    if mode not in VAE_MODES:
        raise ValueError(f"VAE tiling mode must be one of {', '.join(VAE_MODES)}; got {mode!r}")


def _execute(
    ops: list[Op],
    x: Tensor,
    tiles: list[VaeTile],
    out_hw: tuple[int, int],
    *,
    is_decoder: bool,
    out_dtype: torch.dtype | None,
    offload_device: torch.device | str | None,
    scale: int,
    mode: str,
    stats_method: str,
    live_tiles: int,
    stats_out: list[list[tuple[Tensor, Tensor]]] | None,
    prepare: Callable[[Tensor], Tensor] | None = None,
    finish: Callable[[Tensor], Tensor] | None = None,
) -> Tensor:
    if mode == "exact" or stats_method == "spill":
        # "spill": the exact algorithm with the tiles parked in files: exact output, bounded memory
        spilling = mode != "exact"
        with TileSpill(keep_in_memory=live_tiles - 1) if spilling else contextlib.nullcontext() as spill:
            return _run_tiled(
                ops,
                x,
                tiles,
                out_hw,
                is_decoder=is_decoder,
                out_dtype=out_dtype,
                offload_device=None if spilling else offload_device,
                scale=scale,
                stats_out=stats_out,
                spill=spill,
                prepare=prepare,
                finish=finish,
            )
    from seesr.pipeline.vae_bounded import run_bounded  # vae_bounded builds on this module

    return run_bounded(
        ops,
        x,
        tiles,
        out_hw,
        is_decoder=is_decoder,
        scale=scale,
        out_dtype=out_dtype,
        stats_method=stats_method,
        live_tiles=live_tiles,
        stats_out=stats_out,
        prepare=prepare,
        finish=finish,
    )


@torch.no_grad()
def tiled_encode(
    encoder: nn.Module,
    x: Tensor,
    tile_size: int,
    pad: int = ENCODER_PAD,
    *,
    out_dtype: torch.dtype | None = None,
    offload_device: torch.device | str | None = None,
    mode: str = "exact",
    stats_method: str = "spill",
    live_tiles: int = 4,
    stats_out: list[list[tuple[Tensor, Tensor]]] | None = None,
    prepare: Callable[[Tensor], Tensor] | None = None,
) -> Tensor:
    """Encode with the official tiled-VAE algorithm (or the plain forward when the image is small).

    Args:
        encoder: a diffusers ``Encoder`` (``AutoencoderKL.encoder``).
        x: ``(B, 3, H, W)`` image in ``[-1, 1]``, H and W multiples of 8.
        tile_size: core tile side in image pixels (official 1024).
        pad: context margin in image pixels (official 32).
        out_dtype: dtype of the result; default the network's output dtype (the official hook returns float32).
        offload_device: if given, tiles are parked there between GroupNorm barriers (e.g. ``"cpu"``) to bound
            accelerator memory by about one tile (exact mode; the bounded mode needs no parking).
        mode: "exact" (GroupNorm-synchronised, all tiles alive; the official behaviour) or "bounded" (statistics
            fixed first, one tile alive at a time; ``vae_bounded``).
        stats_method: bounded mode: "spill" (the exact algorithm with the tiles' activations parked in files
            between GroupNorms: bit-identical output, one tile in memory, disk traffic; ``vae_spill``),
            "recompute" (the exact statistics by recomputation, bit-identical output, one tile alive, about L/2
            times the compute) or "sampled" (statistics from ``live_tiles`` tiles; approximate).
        live_tiles: bounded mode: most tiles alive at once ("spill": the one running plus ``live_tiles - 1``
            kept in memory between turns; "sampled": the tiles sampled for the statistics; "recompute": 1).
        stats_out: if given, the GroupNorm statistics used (one ``(var, mean)`` per GroupNorm) are appended.
        prepare: an elementwise map applied to each tile's crop of ``x`` when the tile first runs (e.g. uint8
            codes on the host to ``[-1, 1]`` on the device), so the full-size network input need not exist;
            ``x`` is then the map's input and may have any dtype/device.

    Returns:
        ``(B, 2·latent_channels, H/8, W/8)`` = the encoder output (moments before ``quant_conv``).

    Raises:
        ValueError: if ``x`` is not 4-D or the encoder has an unsupported structure.
    """
    _check_mode(mode)
    if x.ndim != 4:
        raise ValueError(f"tiled_encode expects (B, C, H, W), got shape {tuple(x.shape)}")
    h, w = x.shape[-2:]
    if not encoder_needs_tiling(h, w, tile_size, pad):
        out = encoder(prepare(x) if prepare is not None else x)
        return out if out_dtype is None else out.to(out_dtype)
    scale = sampling_factor(cast(nn.ModuleList, encoder.down_blocks), "downsamplers")
    if tile_size % scale:
        # otherwise the tiles' cores need not be multiples of it, and their latents would not line up
        raise ValueError(f"encoder tile size must be a multiple of {scale}, got {tile_size}")
    tiles = split_tiles(h, w, tile_size, pad, is_decoder=False, scale=scale)
    logger.debug(
        "tiled VAE encoder: %dx%d image in %d tiles (tile %d, pad %d)", h, w, len(tiles), tile_size, pad
    )
    return _execute(
        encoder_ops(encoder),
        x,
        tiles,
        (h // scale, w // scale),
        is_decoder=False,
        out_dtype=out_dtype,
        offload_device=offload_device,
        scale=scale,
        mode=mode,
        stats_method=stats_method,
        live_tiles=live_tiles,
        stats_out=stats_out,
        prepare=prepare,
    )


@torch.no_grad()
def tiled_decode(
    decoder: nn.Module,
    z: Tensor,
    tile_size: int,
    pad: int = DECODER_PAD,
    *,
    out_dtype: torch.dtype | None = None,
    offload_device: torch.device | str | None = None,
    mode: str = "exact",
    stats_method: str = "spill",
    live_tiles: int = 4,
    stats_out: list[list[tuple[Tensor, Tensor]]] | None = None,
    finish: Callable[[Tensor], Tensor] | None = None,
) -> Tensor:
    """Decode with the official tiled-VAE algorithm (or the plain forward when the latent is small).

    Args:
        decoder: a diffusers ``Decoder`` (``AutoencoderKL.decoder``).
        z: ``(B, latent_channels, h, w)`` latent after ``post_quant_conv`` (unscaled, i.e. already / 0.18215).
        tile_size: core tile side in latent pixels (official 224).
        pad: context margin in latent pixels (official 11).
        out_dtype: dtype of the result; default the network's output dtype (the official hook returns float32).
        offload_device: if given, tiles are parked there between GroupNorm barriers (exact mode).
        mode: "exact" (GroupNorm-synchronised, all tiles alive; the official behaviour) or "bounded" (statistics
            fixed first, one tile alive at a time; ``vae_bounded``).
        stats_method: bounded mode: "spill" (the exact algorithm with the tiles' activations parked in files
            between GroupNorms: bit-identical output, one tile in memory, disk traffic; ``vae_spill``),
            "recompute" (the exact statistics by recomputation, bit-identical output, one tile alive, about L/2
            times the compute) or "sampled" (statistics from ``live_tiles`` tiles; approximate).
        live_tiles: bounded mode: most tiles alive at once ("spill": the one running plus ``live_tiles - 1``
            kept in memory between turns; "sampled": the tiles sampled for the statistics; "recompute": 1).
        stats_out: if given, the GroupNorm statistics used (one ``(var, mean)`` per GroupNorm) are appended.
        finish: an elementwise map applied to each finished tile's crop before it is written into the result
            (e.g. to the pipeline output's uint8 codes), so the full-size decoder output need not exist in the
            network's dtype; the result then has the map's dtype (``out_dtype`` is applied before the map).

    Returns:
        ``(B, 3, 8h, 8w)`` image in about ``[-1, 1]`` (unclamped decoder output), or ``finish`` of it.

    Raises:
        ValueError: if ``z`` is not 4-D or the decoder has an unsupported structure.
    """
    _check_mode(mode)
    if z.ndim != 4:
        raise ValueError(f"tiled_decode expects (B, C, h, w), got shape {tuple(z.shape)}")
    h, w = z.shape[-2:]
    if not decoder_needs_tiling(h, w, tile_size, pad):
        out = decoder(z)
        out = out if out_dtype is None else out.to(out_dtype)
        return finish(out).contiguous(memory_format=torch.channels_last) if finish is not None else out
    scale = sampling_factor(cast(nn.ModuleList, decoder.up_blocks), "upsamplers")
    tiles = split_tiles(h, w, tile_size, pad, is_decoder=True, scale=scale)
    logger.debug(
        "tiled VAE decoder: %dx%d latent in %d tiles (tile %d, pad %d)", h, w, len(tiles), tile_size, pad
    )
    return _execute(
        decoder_ops(decoder),
        z,
        tiles,
        (h * scale, w * scale),
        is_decoder=True,
        out_dtype=out_dtype,
        offload_device=offload_device,
        scale=scale,
        mode=mode,
        stats_method=stats_method,
        live_tiles=live_tiles,
        stats_out=stats_out,
        finish=finish,
    )
