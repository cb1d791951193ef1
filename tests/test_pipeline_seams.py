"""Seams of tiled latent diffusion measured on the tiny model (issue 4): jump across tile borders vs elsewhere."""

from __future__ import annotations

import torch

from seesr.config import SamplingConfig, TilingConfig
from seesr.pipeline.tiling import tile_boxes
from tests.tiny_pipeline import build_tiny_pipeline


def _jump_ratio(img: torch.Tensor, cols: set[int], rows: set[int]) -> float:
    """Mean |Δ| between neighbouring pixels across the given borders / mean |Δ| over the whole image."""
    dx = (img[..., :, 1:] - img[..., :, :-1]).abs().mean(dim=(0, 1, 2))  # per column boundary c|c+1
    dy = (img[..., 1:, :] - img[..., :-1, :]).abs().mean(dim=(0, 1, 3))
    border = [dx[c - 1] for c in cols] + [dy[r - 1] for r in rows]
    return float(torch.stack(border).mean() / torch.cat([dx, dy]).mean())


def test_tile_borders_do_not_stand_out(tiny_weights_dir):
    """Measured (tiny model, 2 steps, smooth 80x56 input, latent 28x40, tile 16, overlap 8): ratio ≈ 1.0."""
    pipe = build_tiny_pipeline(tiny_weights_dir)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 56), torch.linspace(0, 1, 80), indexing="ij")
    lr = torch.stack([xx, yy, 0.5 * (xx + yy)])[None]
    tiling = TilingConfig(latent_tile_size=16, latent_tile_overlap=8)
    sampling = SamplingConfig(num_inference_steps=2, process_size=64, color_fix="none")
    tiled = pipe(lr, sampling, tiling, return_trace=True, show_progress=False)
    assert tiled.settings["latent_tiled"]
    boxes = tile_boxes(28, 40, 16, 8, faithful=False)
    cols = {8 * b.x0 for b in boxes if b.x0 > 0} | {8 * b.x1 for b in boxes if b.x1 < 40}
    rows = {8 * b.y0 for b in boxes if b.y0 > 0} | {8 * b.y1 for b in boxes if b.y1 < 28}
    ratio = _jump_ratio(tiled.trace["pipeline_out"], cols, rows)
    untiled = pipe(lr, sampling, TilingConfig(latent_tile_size=64), return_trace=True, show_progress=False)
    base = _jump_ratio(untiled.trace["pipeline_out"], cols, rows)
    print(f"seam jump ratio tiled={ratio:.3f} untiled={base:.3f}")
    assert ratio < 1.25 and abs(ratio - base) < 0.25, (ratio, base)
