"""Seams of tiled latent diffusion and error/time of the tiled VAE (spec §1.7, §1.8).

Usage: ``python benchmarks/tiling_seams.py [--fixtures ../shared/fixtures]``

Table 1 stitches a smooth 60x84 latent with tile 24 and two context-dependent stubs:
``conv`` (5x5 zero-padded box filter + tanh: a CNN-like local receptive field) and ``tilenorm`` (per-tile
mean removal + tanh: a stress case with a global, per-tile offset). ``seam`` is the max neighbour jump inside
overlap/border zones divided by the max jump elsewhere (the untiled output gives the baseline ratio);
``max|Δ|`` is the distance to the untiled stub output. ``hard`` = last-writer stitching without blending.

Table 2 runs the fixture VAE (sd2-tiny) decoder on random latents, plain vs tiled (GroupNorm-synchronised),
and reports max|tiled - plain| and the time ratio against the plain forward of the same run.
"""

from __future__ import annotations

import argparse
import functools
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from seesr.pipeline.tiling import TileBox, gaussian_weights, tile_boxes, tiled_apply
from seesr.pipeline.vae_tiling import split_tiles, tiled_decode


def _crop(x: torch.Tensor, b: TileBox) -> torch.Tensor:
    return x[..., b.y0 : b.y1, b.x0 : b.x1]


def _seam_mask(length: int, spans: set[tuple[int, int]]) -> torch.Tensor:
    cover = [frozenset(s for s in spans if s[0] <= i < s[1]) for i in range(length)]
    return torch.tensor([cover[i] != cover[i + 1] or len(cover[i]) > 1 for i in range(length - 1)])


def seam_ratio(out: torch.Tensor, boxes: list[TileBox]) -> float:
    dx = (out[..., :, 1:] - out[..., :, :-1]).abs().amax(dim=(0, 1, 2))
    dy = (out[..., 1:, :] - out[..., :-1, :]).abs().amax(dim=(0, 1, 3))
    sx = _seam_mask(out.shape[-1], {(b.x0, b.x1) for b in boxes})
    sy = _seam_mask(out.shape[-2], {(b.y0, b.y1) for b in boxes})
    return max(dx[sx].max().item(), dy[sy].max().item()) / max(dx[~sx].max().item(), dy[~sy].max().item())


def smooth_latent(h: int = 60, w: int = 84) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    base = torch.sin(3 * xx + 1) * torch.cos(2 * yy) + 0.5 * xx * yy
    return torch.stack([base, base * 0.5 + 0.1, -base, base**2])[None]


def conv_stub(lat: torch.Tensor) -> torch.Tensor:
    kernel = torch.full((lat.shape[1], 1, 5, 5), 1 / 25, dtype=lat.dtype)
    return torch.tanh(2 * F.conv2d(lat, kernel, padding=2, groups=lat.shape[1]))


def tilenorm_stub(lat: torch.Tensor) -> torch.Tensor:
    return torch.tanh((lat - lat.mean(dim=(-2, -1), keepdim=True)) * 2)


def seam_table() -> None:
    lat = smooth_latent()
    print("Table 1: latent tiling seams (60x84 latent, tile 24)")
    print(
        f"{'stub':9s} {'mode':9s} {'overlap':>7s} {'tiles':>5s} {'seam':>7s} {'untiled':>7s} {'hard':>7s} {'max|Δ|':>9s}"
    )
    for name, stub in (("conv", conv_stub), ("tilenorm", tilenorm_stub)):
        untiled = stub(lat)
        for faithful in (True, False):
            for overlap in (4, 8, 12):
                boxes = tile_boxes(60, 84, 24, overlap, faithful=faithful)
                dtype = torch.float64 if faithful else torch.float32
                weights = functools.partial(gaussian_weights, faithful=faithful, dtype=dtype)
                out = tiled_apply(
                    lambda b, s=stub: s(_crop(lat, b)),
                    tuple(lat.shape),
                    boxes,
                    weights,
                    out_dtype=torch.float32,
                    device="cpu",
                )
                hard = torch.zeros_like(lat)
                for b in boxes:
                    hard[..., b.y0 : b.y1, b.x0 : b.x1] = stub(_crop(lat, b))
                mode = "faithful" if faithful else "default"
                print(
                    f"{name:9s} {mode:9s} {overlap:7d} {len(boxes):5d} {seam_ratio(out, boxes):7.3f} "
                    f"{seam_ratio(untiled, boxes):7.3f} {seam_ratio(hard, boxes):7.3f} "
                    f"{(out - untiled).abs().max().item():9.2e}"
                )


def vae_table(fixtures: Path) -> None:
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(fixtures / "sd2-tiny", subfolder="vae").eval()
    g = torch.Generator().manual_seed(0)
    print("\nTable 2: tiled VAE decoder (sd2-tiny, random latents), vs the plain forward")
    print(f"{'latent':>9s} {'tile':>5s} {'tiles':>5s} {'max|Δ|':>9s} {'time ratio':>10s}")
    for h, w in ((32, 32), (64, 96), (128, 128)):
        z = torch.randn(1, 4, h, w, generator=g)
        with torch.no_grad():
            t0 = time.perf_counter()
            plain = vae.decoder(z)
            t_plain = time.perf_counter() - t0
        for tile in (16, 32, 64):
            n = len(split_tiles(h, w, tile, 11, is_decoder=True)) if max(h, w) > 22 + tile else 1
            t0 = time.perf_counter()
            tiled = tiled_decode(vae.decoder, z, tile)
            t_tiled = time.perf_counter() - t0
            print(
                f"{h:4d}x{w:<4d} {tile:5d} {n:5d} {(tiled - plain).abs().max().item():9.2e} {t_tiled / t_plain:10.2f}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--fixtures", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared" / "fixtures"
    )
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    seam_table()
    vae_table(args.fixtures)


if __name__ == "__main__":
    main()
