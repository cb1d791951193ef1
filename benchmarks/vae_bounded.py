"""Accuracy and time of the bounded-memory tiled VAE against the exact (GroupNorm-synchronised) tiled VAE.

For each size, in one run: untiled forward, exact tiled, bounded tiled (for each ``--refine``), on a photo (the
fixture LR image ``astronaut_512x400`` resized bicubically to the size) for the encoder, and on the latent of that
photo (plain encoder posterior mean) for the decoder. Printed per part and size:

- ``exact vs untiled``: max |Δ| and PSNR of today's exact tiled output against the untiled forward — the
  deviation users already accept;
- ``bounded vs exact``: the same for the bounded mode against the exact tiled output (acceptance: not larger);
- ``GN var / mean err``: over every GroupNorm and group, max |var_b/var_e − 1| and max |mean_b − mean_e|/std_e
  of the statistics the bounded mode used against the exact mode's shared statistics (acceptance: <= 1 %);
- seconds of each and the bounded/exact time ratio.

PSNR is over outputs mapped from [-1, 1] to [0, 1] (decoder) or over the moments' range (encoder).

    python benchmarks/vae_bounded.py --vae tiny --sizes 256 384 512 --grid 3
    flock /tmp/seesr-heavy.lock python benchmarks/vae_bounded.py --vae sd2 --sizes 256 320 384
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
FIXTURES = Path(os.environ.get("SEESR_FIXTURES", HERE.parent.parent / "shared" / "fixtures"))
SD2_VAE = dict(
    block_out_channels=[128, 256, 512, 512],
    down_block_types=["DownEncoderBlock2D"] * 4,
    up_block_types=["UpDecoderBlock2D"] * 4,
    layers_per_block=2,
    latent_channels=4,
    norm_num_groups=32,
    sample_size=768,
)


def load_vae(name: str):
    from diffusers import AutoencoderKL

    if name == "tiny":
        return AutoencoderKL.from_pretrained(FIXTURES / "sd2-tiny", subfolder="vae").eval()
    torch.manual_seed(0)
    return AutoencoderKL(**SD2_VAE).eval()  # type: ignore[arg-type]


def photo(size: int) -> torch.Tensor:
    """(1, 3, size, size) in [-1, 1]: the fixture photo resized (aspect not kept: a plain square test input)."""
    import numpy as np
    from PIL import Image

    img = Image.open(FIXTURES / "reference" / "lr" / "astronaut_512x400.png").convert("RGB")
    arr = np.asarray(img.resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32) / 255
    return torch.from_numpy(arr).permute(2, 0, 1)[None] * 2 - 1


def deviation(a: torch.Tensor, b: torch.Tensor, peak: float) -> tuple[float, float]:
    """max |a − b| and PSNR (dB) of the difference against ``peak``."""
    d = (a.double() - b.double()).abs()
    mse = float((d**2).mean())
    return float(d.max()), (math.inf if mse == 0 else 10 * math.log10(peak**2 / mse))


def stats_error(bounded: list, exact: list) -> tuple[float, float]:
    """max relative variance error and max mean error in units of the exact std, over layers and groups."""
    var_err = mean_err = 0.0
    for (vb, mb), (ve, me) in zip(bounded, exact, strict=True):
        var_err = max(var_err, float(((vb.double() / ve.double()) - 1).abs().max()))
        mean_err = max(mean_err, float(((mb.double() - me.double()).abs() / ve.double().sqrt()).max()))
    return var_err, mean_err


@torch.no_grad()
def measure(vae, size: int, enc_tile: int, dec_tile: int, live: list[int], methods: list[str]) -> list[dict]:
    """Print and return one row per (part, live_tiles) at this image size."""
    from seesr.pipeline.vae_tiling import split_tiles, tiled_decode, tiled_encode

    x = photo(size)
    z = vae.post_quant_conv(vae.quant_conv(vae.encoder(x)).chunk(2, dim=1)[0])
    rows = []
    for part, inp, tile in (("encode", x, enc_tile), ("decode", z, dec_tile)):
        net, fn, pad = (
            (vae.encoder, tiled_encode, 32) if part == "encode" else (vae.decoder, tiled_decode, 11)
        )
        n_tiles = len(split_tiles(*inp.shape[-2:], tile, pad, is_decoder=part == "decode"))
        t0 = time.perf_counter()
        plain = net(inp)
        t_plain = time.perf_counter() - t0
        ex_stats: list = []
        t0 = time.perf_counter()
        exact = fn(net, inp, tile, stats_out=ex_stats)
        t_exact = time.perf_counter() - t0
        peak = 2.0 if part == "decode" else float(plain.max() - plain.min())
        d_ex = deviation(exact, plain, peak)
        runs = [(m, 1) for m in methods if m != "sampled"]
        runs += [("spill", k) for k in live if k > 1] if "spill" in methods else []  # k - 1 kept in memory
        runs += [("sampled", k) for k in live] if "sampled" in methods else []
        for method, k in runs:
            b_stats: list = []
            t0 = time.perf_counter()
            bounded = fn(net, inp, tile, mode="bounded", stats_method=method, live_tiles=k, stats_out=b_stats)
            t_b = time.perf_counter() - t0
            d_b = deviation(bounded, exact, peak)
            var_err, mean_err = stats_error(b_stats[0], ex_stats[0])
            ok = d_b[0] <= d_ex[0] and d_b[1] >= d_ex[1] and var_err <= 0.01 and mean_err <= 0.01
            rows.append(dict(part=part, size=size, tiles=n_tiles, method=method, live=k, d_ex=d_ex, d_b=d_b, var_err=var_err,
                             mean_err=mean_err, t_plain=t_plain, t_exact=t_exact, t_b=t_b, ok=ok))  # fmt: skip
            print(
                f"| {part} | {size}² | {tile} | {n_tiles} | {method} {k} | {d_ex[0]:.3g} | {d_ex[1]:.1f} | {d_b[0]:.3g} "
                f"| {d_b[1]:.1f} | {100 * var_err:.3f} | {100 * mean_err:.3f} | {t_exact:.2f} | {t_b:.2f} "
                f"| {t_b / t_exact:.2f} | {'pass' if ok else 'FAIL'} |",
                flush=True,
            )
    return rows


def memory_child(vae_name: str, part: str, size: int, tile: int, mode: str, live: int = 1) -> None:
    """In a fresh process: peak RSS growth of one tiled call over the RSS before it, and the estimate (``live``
    tiles in memory with the "spill" statistics, counted in the executor's visiting order as the plan does)."""
    import json
    import resource

    from seesr.pipeline.vae_memory import estimate_vae_peak_bytes
    from seesr.pipeline.vae_tiling import tiled_decode, tiled_encode

    vae = load_vae(vae_name)
    g = torch.Generator().manual_seed(0)
    inp = torch.randn(1, 4, size // 8, size // 8, generator=g) if part == "decoder" else photo(size)
    net, fn = (vae.decoder, tiled_decode) if part == "decoder" else (vae.encoder, tiled_encode)
    with torch.no_grad():
        fn(net, inp[..., :16, :16] if part == "decoder" else inp[..., :128, :128], tile)  # warm the allocator
    before = int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    bounded = mode != "exact"
    with torch.no_grad():
        # "sampled" with one tile has the per-tile working set of "recompute" and is cheaper to measure
        method = "sampled" if mode == "recompute" else mode
        live = live if mode == "spill" else 1
        out = fn(net, inp, tile, mode="bounded" if bounded else "exact", stats_method=method, live_tiles=live)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    est = estimate_vae_peak_bytes(*inp.shape[-2:], tile, part=part, block_out_channels=vae.config.block_out_channels,
                                  mode="bounded" if bounded else "exact", live_tiles=live,
                                  out_dtype_bytes=out.element_size(), spill_order=mode == "spill")  # fmt: skip
    print(json.dumps({"measured": peak - before, "estimate": est}))


def memory_table(args: argparse.Namespace) -> None:
    import json
    import subprocess

    print(
        "| vae | part | output side | tile | tiles | mode | live tiles | measured peak growth MB | estimate MB "
        "| est/meas |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    from seesr.pipeline.vae_tiling import split_tiles

    for size in args.sizes:
        for part in ("encoder", "decoder"):
            tile = args.mem_tile if part == "decoder" else args.mem_tile * 8
            hw = (size // 8, size // 8) if part == "decoder" else (size, size)
            pad = 11 if part == "decoder" else 32
            n = len(split_tiles(*hw, tile, pad, is_decoder=part == "decoder"))
            runs = [("exact", 1)] + [("spill", k) for k in args.mem_live] + [("recompute", 1)]
            for mode, live in runs:
                cmd = [
                    sys.executable,
                    __file__,
                    "--vae",
                    args.vae,
                    "--memory-child",
                    part,
                    str(size),
                    str(tile),
                    mode,
                    str(live),
                ]
                out = subprocess.run(cmd, capture_output=True, text=True)
                if out.returncode != 0:
                    print(f"| {args.vae} | {part} | {size} | {tile} | {n} | {mode} | {live} | failed | | |")
                    continue
                r = json.loads(out.stdout.strip().splitlines()[-1])
                m, e = r["measured"] / 2**20, r["estimate"] / 2**20
                print(f"| {args.vae} | {part} | {size} | {tile} | {n} | {mode} | {live} | {m:.0f} | {e:.0f} | {e / m:.2f} |",
                      flush=True)  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vae", choices=["tiny", "sd2"], default="tiny")
    ap.add_argument("--sizes", type=int, nargs="+", default=[512, 1024, 2048], help="image sides (px)")
    ap.add_argument("--grid", type=int, default=2, help="tiles per side (sets the tile sizes)")
    ap.add_argument("--live-tiles", type=int, nargs="+", default=[2], help="sampled-statistics sizes to try")
    ap.add_argument("--methods", nargs="+", default=["spill", "recompute", "sampled"],
                    choices=["spill", "recompute", "sampled"], help="bounded statistics methods to compare")  # fmt: skip
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--memory", action="store_true", help="measured peak RSS vs estimate_vae_peak_bytes")
    ap.add_argument("--mem-tile", type=int, default=32, help="--memory: decoder tile (latent px); encoder x8")
    ap.add_argument("--mem-live", type=int, nargs="+", default=[1], help="--memory: spill rows' live tiles")
    ap.add_argument("--memory-child", nargs=5, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_child:
        part, size, tile, mode, live = args.memory_child
        memory_child(args.vae, part, int(size), int(tile), mode, int(live))
        return
    if args.memory:
        memory_table(args)
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    sys.path.insert(0, str(HERE.parent / "src"))
    vae = load_vae(args.vae)
    print(f"vae={args.vae} torch threads={torch.get_num_threads()}")
    print(
        "| part | size | tile | tiles | bounded stats, live tiles | exact vs untiled max|Δ| | PSNR | bounded vs exact max|Δ| | PSNR "
        "| GN var err % | GN mean err % (of std) | exact s | bounded s | time ratio | criterion |"
    )
    print("|" + "---|" * 15)
    for size in args.sizes:
        measure(
            vae,
            size,
            8 * math.ceil((size - 2 * 32) / args.grid / 8),  # encoder tiles: whole latent pixels
            math.ceil((size // 8 - 2 * 11) / args.grid),
            args.live_tiles,
            args.methods,
        )


if __name__ == "__main__":
    main()
