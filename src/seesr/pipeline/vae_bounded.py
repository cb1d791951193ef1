"""Bounded-memory tiled VAE: GroupNorm statistics fixed first, then one tile end to end at a time (issue 13).

The exact tiled VAE (``vae_tiling``) keeps every tile's activations alive between GroupNorm barriers, so its
memory grows with the image. Here the shared GroupNorm statistics (one per-(image, group) biased variance and
mean per GroupNorm, in forward order) are fixed *before* the output pass, and then every tile runs alone through
the whole encoder/decoder and its valid crop is written straight into the preallocated output. Two ways to get
the statistics without disk (the bounded mode's default, ``"spill"``, instead parks the exact mode's tiles in
files between GroupNorms: ``vae_spill``):

- ``"recompute"``: the exact ones, by recomputation — for GroupNorm ``k`` every tile is re-run from its
  input up to that GroupNorm with the statistics ``< k`` fixed, one tile alive at a time. Output and statistics
  are bit-identical to the exact mode; the cost is the sum over GroupNorms of the compute up to each (measured
  about 5x the exact mode for the SD VAE layouts, see docs/decisions.md).
- ``"sampled"``: the exact algorithm run on at most ``live_tiles`` tiles spread over the grid
  (``sample_tiles``); cost ``1 + live_tiles / n_tiles`` passes, but the statistics are only an estimate
  (exact when the grid has at most ``live_tiles`` tiles).

A downscaled-image pass with streamed refinement was tried first and rejected: its statistics were 20-60 % off
(docs/decisions.md, "Bounded-memory tiled VAE"). ``LIVE_TILES`` counts the tiles whose activations exist.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor

from seesr.pipeline.vae_ops import (
    Op,
    apply_group_norm,
    group_var_mean,
    new_result,
    self_attention,
    shared_stats,
)
from seesr.pipeline.vae_tiling import VaeTile, _run_tiled, _valid_crop

logger = logging.getLogger(__name__)

#: per-GroupNorm (variance, mean), each ``(B, groups)`` float32, in forward order
GroupStats = list[tuple[Tensor, Tensor]]


@dataclass
class LiveTileCounter:
    """How many tiles' activations exist at once in the bounded executor (``current``) and the most so far."""

    current: int = 0
    peak: int = 0
    tiles_run: int = 0

    def reset(self) -> None:
        self.current = self.peak = self.tiles_run = 0

    @contextmanager
    def tile(self) -> Iterator[None]:
        self.current += 1
        self.tiles_run += 1
        self.peak = max(self.peak, self.current)
        try:
            yield
        finally:
            self.current -= 1


#: process-wide counter the tests and benchmarks read (the executor only ever increments it around one tile)
LIVE_TILES = LiveTileCounter()


def _run_one(ops: list[Op], h: Tensor, stats: GroupStats, stop_at: int | None = None) -> Tensor:
    """Run the flat op list on one tile ``(B, C, h, w)`` end to end (or up to a GroupNorm).

    The ``k``-th GroupNorm normalises with the fixed ``stats[k]`` instead of the tile's own statistics. With
    ``stop_at`` the activation entering GroupNorm number ``stop_at`` is returned instead.
    """
    res: Tensor | None = None
    k = 0
    for op in ops:
        if op.kind == "norm":
            if k == stop_at:
                return h
            var, mean = stats[k]
            h = apply_group_norm(h, op.module, var, mean)
            k += 1
        elif op.kind == "apply":
            assert op.fn is not None  # "apply"/"store" ops always carry fn
            h = op.fn(h)
        elif op.kind == "store":
            assert op.fn is not None
            res = op.fn(h)
        elif op.kind == "add":
            assert res is not None  # every "add" follows its "store"
            h = h + res
            if op.factor != 1.0:
                h = h / op.factor
            res = None
        elif op.kind == "attn":
            h = self_attention(op.module, h)
        else:  # pragma: no cover - the op list is built by vae_tiling
            raise AssertionError(op.kind)
    return h


def _crop(x: Tensor, tile: VaeTile, prepare: Callable[[Tensor], Tensor] | None = None) -> Tensor:
    b = tile.input_box
    crop = x[:, :, b.y0 : b.y1, b.x0 : b.x1]
    return prepare(crop) if prepare is not None else crop


def sample_tiles(tiles: list[VaeTile], live_tiles: int) -> list[VaeTile]:
    """At most ``live_tiles`` tiles spread evenly over the row-major grid ``tiles`` (all of them if few enough).

    The grid is cut into ``ky x kx`` cells (``ky·kx <= live_tiles``, shaped like the grid) and the tile at the
    centre of each cell is taken.
    """
    if live_tiles < 1:
        raise ValueError(f"live_tiles must be >= 1, got {live_tiles}")
    if len(tiles) <= live_tiles:
        return list(tiles)
    nx = len({t.input_box.x0 for t in tiles})
    ny = len(tiles) // nx
    best = (1, 1)
    for ky in range(1, min(ny, live_tiles) + 1):
        kx = min(nx, live_tiles // ky)
        # prefer more samples, then cells closest to square in tile units
        score = (ky * kx, -abs(math.log((ny / ky) / (nx / kx))))
        if score > (best[0] * best[1], -abs(math.log((ny / best[0]) / (nx / best[1])))):
            best = (ky, kx)
    ky, kx = best
    rows = [int((i + 0.5) * ny / ky) for i in range(ky)]
    cols = [int((j + 0.5) * nx / kx) for j in range(kx)]
    return [tiles[r * nx + c] for r in rows for c in cols]


def sampled_stats(
    ops: list[Op],
    x: Tensor,
    tiles: list[VaeTile],
    live_tiles: int,
    *,
    is_decoder: bool,
    scale: int,
    prepare: Callable[[Tensor], Tensor] | None = None,
) -> GroupStats:
    """Shared GroupNorm statistics of the exact algorithm run on ``sample_tiles(tiles, live_tiles)`` only."""
    sample = sample_tiles(tiles, live_tiles)
    collected: list[GroupStats] = []
    LIVE_TILES.current += len(sample)
    LIVE_TILES.tiles_run += len(sample)
    LIVE_TILES.peak = max(LIVE_TILES.peak, LIVE_TILES.current)
    try:
        _run_tiled(ops, x, sample, (0, 0), is_decoder=is_decoder, out_dtype=None, offload_device=None,
                   scale=scale, stats_out=collected, prepare=prepare)  # fmt: skip
    finally:
        LIVE_TILES.current -= len(sample)
    return collected[0]


def recomputed_stats(
    ops: list[Op], x: Tensor, tiles: list[VaeTile], prepare: Callable[[Tensor], Tensor] | None = None
) -> GroupStats:
    """The exact mode's shared GroupNorm statistics, one tile alive at a time, by recomputation.

    For GroupNorm ``k`` every tile is run again from its input up to that GroupNorm with the statistics of
    GroupNorms ``< k`` already fixed; only the tiles' ``(var, mean)`` are kept. The per-tile statistics are
    combined in the exact mode's visiting order (forwards, backwards, ... between barriers) with its weighting,
    so the result is bit-identical to it. Cost: sum over GroupNorms of the compute up to it (about ``L/2``
    full passes for ``L`` GroupNorms, less where the early layers are cheap).
    """
    n_norms = sum(op.kind == "norm" for op in ops)
    stats: GroupStats = []
    for k in range(n_norms):
        order = range(len(tiles)) if k % 2 == 0 else reversed(range(len(tiles)))
        per_tile: list[tuple[Tensor, Tensor, int]] = []
        groups = [op for op in ops if op.kind == "norm"][k].module.num_groups
        for t in order:
            with LIVE_TILES.tile():
                h = _run_one(ops, _crop(x, tiles[t], prepare), stats, stop_at=k)
                var, mean = group_var_mean(h, groups)
                per_tile.append((var, mean, h.shape[2] * h.shape[3]))
                del h
        stats.append(shared_stats(per_tile))
    return stats


def run_bounded(
    ops: list[Op],
    x: Tensor,
    tiles: list[VaeTile],
    out_hw: tuple[int, int],
    *,
    is_decoder: bool,
    scale: int,
    out_dtype: torch.dtype | None,
    live_tiles: int,
    stats_method: str = "recompute",
    stats_out: list[GroupStats] | None = None,
    prepare: Callable[[Tensor], Tensor] | None = None,
    finish: Callable[[Tensor], Tensor] | None = None,
) -> Tensor:
    """Tiled forward in bounded memory: sampled statistics first, then one tile at a time into the output.

    Args:
        ops: flat op list of the encoder or decoder.
        x: ``(B, C, H, W)`` input (image or latent).
        tiles: the exact mode's tile layout (``split_tiles``), row-major.
        out_hw: output spatial size.
        is_decoder, scale: output geometry (x``scale`` for the decoder, //``scale`` for the encoder).
        out_dtype: dtype of the preallocated output (default the network's output dtype).
        live_tiles: ``"sampled"``: most tiles alive at once (the sampling pass's size).
        stats_method: ``"recompute"`` (exact statistics, one tile alive, about L/2 extra passes) or
            ``"sampled"`` (statistics of at most ``live_tiles`` synchronised tiles, one extra partial pass).
        stats_out: if given, the statistics the output pass used are appended (for measurements).
        prepare: elementwise map of every tile's input crop (see ``tiled_encode``).
        finish: elementwise map of every finished tile's crop (see ``tiled_decode``).

    Returns:
        ``(B, C_out, *out_hw)`` in ``out_dtype``, or in ``finish``'s dtype.
    """
    if stats_method == "recompute":
        stats = recomputed_stats(ops, x, tiles, prepare)
    elif stats_method == "sampled":
        stats = sampled_stats(ops, x, tiles, live_tiles, is_decoder=is_decoder, scale=scale, prepare=prepare)
    else:
        raise ValueError(f"bounded VAE statistics must be 'recompute' or 'sampled'; got {stats_method!r}")
    if stats_out is not None:
        stats_out.append(stats)
    result: Tensor | None = None
    for tile in tiles:
        with LIVE_TILES.tile():
            h = _run_one(ops, _crop(x, tile, prepare), stats)
            piece = _valid_crop(h, tile, is_decoder=is_decoder, scale=scale)
            if finish is not None:
                piece = finish(piece if out_dtype is None else piece.to(out_dtype))
            if result is None:
                shape = (x.shape[0], piece.shape[1], *out_hw)
                dtype = piece.dtype if finish is not None else out_dtype or piece.dtype
                result = new_result(shape, dtype, piece.device, finished=finish is not None)
            ob = tile.output_box
            result[:, :, ob.y0 : ob.y1, ob.x0 : ob.x1] = piece
            del h
    assert result is not None  # split_tiles returns at least one tile
    return result
