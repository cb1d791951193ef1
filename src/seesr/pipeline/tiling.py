"""Tiled latent diffusion: tile grid, Gaussian blending weights and weighted stitching (spec §1.7, §9 items 8, 9).

Large latents are denoised tile by tile; each tile's model output is multiplied by a Gaussian weight map and
the overlapping contributions are normalised by the summed weights, ``out = Σ tile_out·W / Σ W``.

Two flavours share one code path:

* ``faithful=True`` reproduces the official SeeSR loop bit for bit: tiling iff the latent *area* exceeds
  ``tile²``; square tiles of side ``min(tile, h, w)``; Gaussian centres ``(T-1)/2`` along x but ``T/2`` along y,
  variance 0.01·T², float64 weights whose products are accumulated into float32 buffers.
* the default tiles as soon as either side exceeds the tile (a long thin latent is never run in one piece, so
  the memory one model call needs is bounded by ``tile²`` latent pixels), allows non-square edge tiles
  ``min(tile, h) x min(tile, w)`` and uses symmetric Gaussian centres ``(T-1)/2`` on both axes.

The grid rule is the same in both: along an axis of length ``L`` with tile ``T`` and overlap ``O``, the tile
count is the smallest ``n`` with ``(n-1)·(T-O) + T >= L``; tile ``k`` starts at ``k·(T-O)`` and the last one is
snapped to ``L - T`` (so overlaps never shrink below ``O``). Tiles are listed with the outer loop over x.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple, Protocol

import torch
from torch import Tensor

_GAUSS_VAR = 0.01


class TileBox(NamedTuple):
    """Half-open tile rectangle in latent pixels: rows ``y0:y1``, columns ``x0:x1``."""

    y0: int
    y1: int
    x0: int
    x1: int

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    @property
    def width(self) -> int:
        return self.x1 - self.x0


def _check_tile_args(h: int, w: int, tile: int, overlap: int | None = None) -> None:
    if h < 1 or w < 1:
        raise ValueError(f"latent size must be positive, got {h}x{w}")
    if tile < 1:
        raise ValueError(f"tile size must be >= 1, got {tile}")
    if overlap is not None and not 0 <= overlap < tile:
        raise ValueError(f"tile overlap must be in [0, tile={tile}), got {overlap}")


def needs_tiling(h: int, w: int, tile: int, *, faithful: bool) -> bool:
    """Whether a latent of ``h x w`` is denoised in tiles.

    Args:
        h: latent height.
        w: latent width.
        tile: latent tile side.
        faithful: official area rule ``h*w > tile²`` (spec §9 item 9); otherwise any side ``> tile``.
    """
    _check_tile_args(h, w, tile)
    if faithful:
        return h * w > tile * tile
    return h > tile or w > tile


def _axis_origins(length: int, tile: int, overlap: int) -> list[int]:
    """Tile starts along one axis; ``tile <= length`` is assumed."""
    stride = tile - overlap
    count = 1
    while (count - 1) * stride + tile < length:
        count += 1
    origins = [k * stride for k in range(count)]
    origins[-1] = length - tile
    return origins


def tile_boxes(h: int, w: int, tile: int, overlap: int, *, faithful: bool) -> list[TileBox]:
    """Tile rectangles covering an ``h x w`` latent, in the official order (outer loop over x, inner over y).

    Args:
        h: latent height.
        w: latent width.
        tile: requested latent tile side.
        overlap: minimum overlap of neighbouring tiles (latent pixels), ``0 <= overlap < tile``.
        faithful: square tiles of side ``min(tile, h, w)`` (official); otherwise ``min(tile, h) x min(tile, w)``.

    Returns:
        The boxes (a single full-size box when the latent fits one tile). The caller decides with
        ``needs_tiling`` whether to tile at all; this function only lays out the grid.

    Raises:
        ValueError: for non-positive sizes or an overlap outside ``[0, tile)``.
    """
    _check_tile_args(h, w, tile, overlap)
    if faithful:
        tile_h = tile_w = min(tile, h, w)
    else:
        tile_h, tile_w = min(tile, h), min(tile, w)
    # A tile shrunk to the image side may be smaller than the overlap: keep the stride positive.
    ys = _axis_origins(h, tile_h, min(overlap, tile_h - 1))
    xs = _axis_origins(w, tile_w, min(overlap, tile_w - 1))
    return [TileBox(y, y + tile_h, x, x + tile_w) for x in xs for y in ys]


def _gauss_1d(size: int, midpoint: float) -> list[float]:
    # Python floats (IEEE double, libm exp) in the official operation order, so the faithful map is bit-equal.
    norm = math.sqrt(2 * math.pi * _GAUSS_VAR)
    return [
        math.exp(-(i - midpoint) * (i - midpoint) / (size * size) / (2 * _GAUSS_VAR)) / norm
        for i in range(size)
    ]


def gaussian_weights(
    tile_h: int,
    tile_w: int,
    *,
    faithful: bool,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """Gaussian blending weight map of one tile.

    ``w(i) = exp(-(i - c)² / T² / (2·0.01)) / sqrt(2π·0.01)`` per axis, the map is the outer product (y, x).

    Args:
        tile_h: tile height ``T_y``.
        tile_w: tile width ``T_x``.
        faithful: official centres ``c_x = (T_x-1)/2`` and ``c_y = T_y/2`` (computed in float64);
            otherwise symmetric centres ``(T-1)/2`` on both axes.
        dtype: dtype of the returned map (use float64 to keep the official precision).
        device: device of the returned map.

    Returns:
        ``(tile_h, tile_w)`` weights, all > 0.
    """
    if tile_h < 1 or tile_w < 1:
        raise ValueError(f"tile size must be positive, got {tile_h}x{tile_w}")
    x_probs = _gauss_1d(tile_w, (tile_w - 1) / 2)
    y_probs = _gauss_1d(tile_h, tile_h / 2 if faithful else (tile_h - 1) / 2)
    wy = torch.tensor(y_probs, dtype=torch.float64)
    wx = torch.tensor(x_probs, dtype=torch.float64)
    return torch.outer(wy, wx).to(device=device, dtype=dtype)


def group_boxes(boxes: list[TileBox], tile_batch: int) -> list[list[TileBox]]:
    """Consecutive runs of at most ``tile_batch`` boxes of equal size (one model call each), order kept."""
    if tile_batch < 1:
        raise ValueError(f"tile_batch must be >= 1, got {tile_batch}")
    groups: list[list[TileBox]] = []
    for box in boxes:
        last = groups[-1] if groups else None
        if last and len(last) < tile_batch and (last[0].height, last[0].width) == (box.height, box.width):
            last.append(box)
        else:
            groups.append([box])
    return groups


def tiled_apply(
    fn: Callable[[TileBox], Tensor],
    out_shape: tuple[int, ...],
    boxes: list[TileBox],
    weights_fn: Callable[[int, int], Tensor],
    *,
    out_dtype: torch.dtype,
    device: torch.device | str | None,
) -> Tensor:
    """Stitch per-tile model outputs with weighted averaging: ``Σ fn(box)·W / Σ W``.

    Args:
        fn: returns the model output for the latent crop ``[..., y0:y1, x0:x1]`` (the caller crops the latents
            and the x8 condition image); shape ``out_shape[:-2] + (box.height, box.width)``.
        out_shape: shape of the stitched result, last two dims = latent ``(h, w)``.
        boxes: tile rectangles (from ``tile_boxes``); together they must cover every latent pixel.
        weights_fn: ``(tile_h, tile_w) -> (tile_h, tile_w)`` weight map (e.g. ``gaussian_weights`` partially
            applied). Products ``out·W`` are formed in the promoted dtype of the two (float64 for the faithful
            float64 maps, like the official code) and accumulated in float32 (float64 if ``out_dtype`` is).
        out_dtype: dtype of the returned tensor.
        device: device of the accumulation buffers.

    Returns:
        Stitched tensor of ``out_shape`` and ``out_dtype``.

    Raises:
        ValueError: if a tile output has the wrong shape or some pixel is covered by no tile.
    """
    return tiled_apply_batched(
        lambda group: [fn(box) for box in group],
        out_shape,
        boxes,
        weights_fn,
        tile_batch=1,
        out_dtype=out_dtype,
        device=device,
    )


def tiled_apply_batched(
    fn: Callable[[list[TileBox]], list[Tensor]],
    out_shape: tuple[int, ...],
    boxes: list[TileBox],
    weights_fn: Callable[[int, int], Tensor],
    *,
    tile_batch: int,
    out_dtype: torch.dtype,
    device: torch.device | str | None,
    split: TileSplit | None = None,
) -> Tensor:
    """:func:`tiled_apply` with ``fn`` called on groups of up to ``tile_batch`` equal-size boxes.

    ``fn(group)`` returns one output per box of the group, in order. Contributions are accumulated in the order
    of ``boxes`` whatever the grouping, so only the model's own batch round-off differs from ``tile_batch=1``.
    With ``split``, this process runs only its share of ``boxes`` and the weighted sums of all processes are
    added up by one collective before the division (equal to the unsplit result up to summation round-off).
    """
    if not boxes:
        raise ValueError("tiled_apply needs at least one tile box, got none")
    acc_dtype = torch.float64 if out_dtype == torch.float64 else torch.float32
    if torch.device(device or "cpu").type == "mps":
        acc_dtype = torch.float32
    acc = torch.zeros(out_shape, dtype=acc_dtype, device=device)
    wsum = torch.zeros(out_shape[-2:], dtype=acc_dtype, device=device)
    cache: dict[tuple[int, int], Tensor] = {}
    expected_lead = tuple(out_shape[:-2])
    mine = boxes if split is None else split.mine(boxes)
    for group in group_boxes(mine, tile_batch):
        outs = fn(group)
        if len(outs) != len(group):
            raise ValueError(f"tile function returned {len(outs)} outputs for {len(group)} boxes")
        for box, out in zip(group, outs):
            want = expected_lead + (box.height, box.width)
            if tuple(out.shape) != want:
                raise ValueError(f"tile {box} returned shape {tuple(out.shape)}, expected {want}")
            key = (box.height, box.width)
            if key not in cache:
                weight = weights_fn(*key)
                if weight.dtype == torch.float64 and out.device.type == "mps":
                    # MPS has no float64: the faithful float64 products degrade to float32 there (~1e-7 relative).
                    weight = weight.float()
                cache[key] = weight.to(device=out.device)
            weight = cache[key]
            # In-place add of a (possibly float64) product into the float32 buffer: same rounding as the official
            # ``noise_pred[...] += tile_out * tile_weights``.
            acc[..., box.y0 : box.y1, box.x0 : box.x1] += out * weight
            wsum[box.y0 : box.y1, box.x0 : box.x1] += weight
    if split is not None:
        split.reduce(acc, wsum, boxes, mine)
    if not bool((wsum > 0).all()):
        raise ValueError(f"tile boxes {boxes} do not cover the whole {out_shape[-2]}x{out_shape[-1]} latent")
    # The official code divides by a full-shape contributors tensor; broadcasting the 2-D sum is the same value.
    return (acc / wsum).to(out_dtype)


class TileReducer(Protocol):
    """The processes that share one image's tiles (e.g. a torch.distributed group); see :class:`TileSplit`."""

    @property
    def rank(self) -> int:
        """This process's index in ``[0, world_size)``."""
        ...

    @property
    def world_size(self) -> int:
        """Processes sharing the tiles."""
        ...

    def all_reduce_sum(self, tensor: Tensor) -> None:
        """Replace ``tensor`` in place by its element-wise sum over all processes (a collective: all call it)."""
        ...


class TileSplit:
    """Each process of ``reducer`` denoises a contiguous share of the tiles; one all-reduce per step adds up.

    The packed tensor of one step is ``[Σ out·W (this rank), Σ W (this rank), runs per tile, tiles per rank]``
    in the accumulation dtype (float32), so values, weights and the bookkeeping travel in one collective. After
    it every process holds the same sums, hence the same noise prediction and the same scheduler step.
    ``tiles_per_rank`` is what the processes actually ran in the last step (checked: every tile exactly once).
    """

    def __init__(self, reducer: TileReducer) -> None:
        if not 0 <= reducer.rank < reducer.world_size:
            raise ValueError(f"tile split: rank {reducer.rank} is not in [0, {reducer.world_size})")
        self.reducer = reducer
        self.tiles_per_rank: list[int] = []

    @property
    def rank(self) -> int:
        return self.reducer.rank

    def mine(self, boxes: list[TileBox]) -> list[TileBox]:
        """This rank's contiguous share of ``boxes`` (sizes differ by at most one tile; order kept)."""
        lo, hi = share_bounds(len(boxes), self.reducer.rank, self.reducer.world_size)
        return boxes[lo:hi]

    def line_up(self, device: torch.device | str | None = None) -> None:
        """Wait until every process is here (a one-float all-reduce on ``device``), so that the denoising stage's
        clock does not charge one rank's wait for a slower rank's earlier stages."""
        self.reducer.all_reduce_sum(torch.zeros(1, device=device))

    def reduce(self, acc: Tensor, wsum: Tensor, boxes: list[TileBox], mine: list[TileBox]) -> None:
        """Sum ``acc`` and ``wsum`` (in place) over the processes; ``mine`` are the boxes this rank ran."""
        ran = torch.zeros(len(boxes), dtype=acc.dtype, device=acc.device)
        lo, _ = share_bounds(len(boxes), self.reducer.rank, self.reducer.world_size)
        ran[lo : lo + len(mine)] = 1
        self._all_reduce([acc, wsum], ran, len(mine))

    def reduce_whole(self, out: Tensor, ran: bool) -> Tensor:
        """An untiled output computed by one rank only (zeros elsewhere), summed: exact, as ``x + 0 == x``."""
        buf = out.to(torch.float64 if out.dtype == torch.float64 else torch.float32)
        flag = torch.tensor([1.0 if ran else 0.0], dtype=buf.dtype, device=buf.device)
        self._all_reduce([buf], flag, int(ran))
        return buf.to(out.dtype)

    def _all_reduce(self, parts: list[Tensor], ran: Tensor, count: int) -> None:
        world = self.reducer.world_size
        counts = torch.zeros(world, dtype=ran.dtype, device=ran.device)
        counts[self.reducer.rank] = count
        packed = torch.cat([p.reshape(-1).to(ran.dtype) for p in parts] + [ran, counts])
        self.reducer.all_reduce_sum(packed)
        offset = 0
        for p in parts:
            p.copy_(packed[offset : offset + p.numel()].view_as(p))
            offset += p.numel()
        runs = packed[offset : offset + ran.numel()]
        if not bool((runs == 1).all()):
            raise ValueError(
                f"tile split: each tile must run on exactly one rank, got run counts {runs.tolist()}"
            )
        self.tiles_per_rank = [int(c) for c in packed[offset + ran.numel() :].tolist()]


def share_bounds(count: int, rank: int, world_size: int) -> tuple[int, int]:
    """``[lo, hi)`` of rank ``rank``'s contiguous share of ``count`` items (shares differ by at most one)."""
    return rank * count // world_size, (rank + 1) * count // world_size
