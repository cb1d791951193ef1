"""Peak activation memory of the tiled VAE, for planning tile sizes against a budget (issue 13).

The estimate counts the tensors alive at the widest full-resolution point of one tile (bounded mode) or of all
tiles at a GroupNorm barrier (exact mode), plus the preallocated output. In the bounded mode the tiles kept in
memory between turns are counted either as ``live_tiles - 1`` of the biggest size or, for the spilling decoder,
turn by turn in the order the executor visits them (:func:`spill_waiting`). It excludes the weights and the input
tensor the caller holds. ``benchmarks/vae_bounded.py --memory [--mem-live 1 2 4]`` compares it with measured peak
RSS.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

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
    spill_order: bool = False,
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
        spill_order: the bounded decoder uses the "spill" statistics: count the tiles that wait in memory while
            one runs from the order the executor visits them (:func:`spill_waiting`) instead of assuming
            ``live_tiles - 1`` of the biggest size. Measured on the tiny VAE at 2048² (``benchmarks/vae_bounded.py
            --memory --mem-live 1 2 4``) this is still on the safe side; the encoder keeps the simple count, whose
            measured growth per live tile is larger than the order alone explains.

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
    if mode == "bounded" and spill_order and is_dec:
        full_areas = [a * full for a in areas]
        act = max(work_ch * full_areas[t] + kept_ch * sum(full_areas[u] for u in waiting)
                  for t, waiting in spill_waiting(len(areas), live_tiles - 1))  # fmt: skip
    elif mode == "bounded":
        # the running tile's working set; the other live tiles only wait at a barrier (state + residual)
        act = (work_ch + (min(live_tiles, len(areas)) - 1) * kept_ch) * biggest
    else:
        act = kept_ch * sum(areas) * full + work_ch * biggest
    out_px = h * w * scale * scale if is_dec else (h // scale) * (w // scale)
    out_ch = 3 if is_dec else 2 * latent_channels
    return int(batch * (act * dtype_bytes + out_ch * out_px * out_dtype_bytes))


def spill_waiting(n: int, keep: int) -> list[tuple[int, list[int]]]:
    """For every turn of a pass of the spilling executor (``vae_tiling._run_tiled`` with ``TileSpill(keep)``),
    in both directions: (the running tile, the tiles waiting in memory meanwhile).

    A pass keeps its last ``keep`` tiles in memory and the next pass, visiting the tiles in reverse, runs those
    first; the others are parked in files. So a tile waits in memory only while the previous pass's kept tiles
    have not had their turn yet, or after it has had its turn among this pass's last ``keep`` — at most
    ``keep - 1`` at a time, not ``keep``.
    """
    turns: list[tuple[int, list[int]]] = []
    kept = min(keep, n)
    for forward in (True, False):
        order = list(range(n)) if forward else list(reversed(range(n)))
        for j, tile in enumerate(order):
            # kept by the previous pass (its last tiles are this pass's first) and not run yet; then the tiles
            # this pass has run and keeps (its last `keep`), not parked in files
            previous = order[j + 1 : kept]
            this_pass = order[max(0, n - keep) : j]
            turns.append((tile, previous + this_pass))
    return turns


def spill_traffic_bytes(h: int, w: int, tile_size: int, **kwargs: Any) -> int:
    """Total bytes :func:`spill_barrier_bytes` writes in one tiled call (and reads back)."""
    return sum(spill_barrier_bytes(h, w, tile_size, **kwargs))


def spill_barrier_bytes(
    h: int,
    w: int,
    tile_size: int,
    *,
    part: str,
    block_out_channels: Sequence[int] = SD2_VAE_CHANNELS,
    layers_per_block: int = 2,
    live_tiles: int = 4,
    dtype_bytes: int = 4,
    pad: int | None = None,
) -> list[int]:
    """Bytes the bounded VAE's ``"spill"`` statistics write to files at each GroupNorm of one tiled call.

    At every GroupNorm the running tile's activation and its pending residual go to a file (read back at the
    next pass), except for the ``live_tiles - 1`` tiles of each pass that stay in memory; an identity shortcut's
    residual is the activation itself and is written once (``vae_spill``). Counted from the diffusers SD VAE
    layout: encoder ``conv_in`` -> ``layers_per_block`` ResNets per down block -> mid (ResNet, attention,
    ResNet) -> ``conv_norm_out``; decoder ``conv_in`` -> mid -> ``layers_per_block + 1`` ResNets per up block ->
    ``conv_norm_out``; every tile with its padding, as ``split_tiles`` cuts it. Exact with one live tile
    (``tests/test_vae_bounded.py`` counts the files); with more, the kept tiles are counted at the mean tile area.

    Args:
        h, w: input size: image pixels for ``part="encoder"``, latent pixels for ``part="decoder"``.
        tile_size, pad: as for :func:`estimate_vae_peak_bytes`.
        part: "encoder" or "decoder".
        block_out_channels: the VAE's ``block_out_channels``.
        layers_per_block: the VAE's ``layers_per_block`` (2 in SD).
        live_tiles: tiles in memory at once (``vae_live_tiles``).
        dtype_bytes: bytes per activation element.

    Returns:
        Bytes per GroupNorm in forward order; empty when the image is not tiled (nothing waits).
    """
    if part not in ("encoder", "decoder"):
        raise ValueError(f"part must be 'encoder' or 'decoder', got {part!r}")
    is_dec = part == "decoder"
    pad = (DECODER_PAD if is_dec else ENCODER_PAD) if pad is None else pad
    levels = len(block_out_channels)
    scale = 2 ** (levels - 1)
    if not (decoder_needs_tiling if is_dec else encoder_needs_tiling)(h, w, tile_size, pad):
        return []
    tiles = split_tiles(h, w, tile_size, pad, is_decoder=is_dec, scale=scale)
    area = sum((t.input_box.y1 - t.input_box.y0) * (t.input_box.x1 - t.input_box.x0) for t in tiles)
    per_pixel = area * dtype_bytes * max(0, len(tiles) - (live_tiles - 1)) / len(tiles)

    def resnet(c_in: int, c_out: int, factor: float) -> list[float]:
        """Its two GroupNorms: x (+ shortcut(x) unless identity), then conv1(x) + the residual."""
        first = c_in if c_in == c_out else c_in + c_out
        return [first * factor, 2 * c_out * factor]

    top = block_out_channels[-1]

    def mid(factor: float) -> list[float]:  # the attention's residual is its input: written once
        return [*resnet(top, top, factor), top * factor, *resnet(top, top, factor)]

    channel_pixels: list[float] = []  # channels x pixels of that level per input pixel, per GroupNorm
    if is_dec:
        channel_pixels += mid(1.0)
        c = top
        for i, c_out in enumerate(reversed(block_out_channels)):
            for _ in range(layers_per_block + 1):
                channel_pixels += resnet(c, c_out, float(4**i))
                c = c_out
        channel_pixels.append(c * float(4 ** (levels - 1)))  # conv_norm_out
    else:
        c = block_out_channels[0]
        for i, c_out in enumerate(block_out_channels):
            for _ in range(layers_per_block):
                channel_pixels += resnet(c, c_out, 1.0 / 4**i)
                c = c_out
        channel_pixels += [*mid(1.0 / 4 ** (levels - 1)), top / 4 ** (levels - 1)]  # + conv_norm_out
    return [int(cp * per_pixel) for cp in channel_pixels]
