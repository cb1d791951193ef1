"""Denoising time of ONE tiled image with 1 process vs N processes sharing its tiles (`--split tiles`, gloo, CPU).

Every process runs at the same thread count (OMP_NUM_THREADS, 1 by default), so the N processes together do the
same model work as the one process, plus one all-reduce per denoising step. The time compared is the pipeline's
own "denoise" stage (from the sidecar's ``timings``: the ControlNet/UNet calls, the all-reduces and the scheduler
steps; start-up, weights loading, DAPE and the VAE are not in it; the ranks line up just before it, and that
wait is shown apart), with the whole command's wall time beside it. Runs alternate 1, N, 1, N ...; the table gives
the median and best of each with the ratios N/1, and the median of the ratios of neighbouring runs (less
sensitive to a load that drifts on a shared machine), and how far the two PNGs differ (the split sums the tiles
in another order: float32 round-off).
Tiny official-format weights from ../shared/fixtures.

    python benchmarks/tile_parallel_upscale.py --size 96 --tile 32 --overlap 16 --steps 8 --repeat 3
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from distributed_upscale import make_inputs, weights_flags  # noqa: E402


def run_once(
    nproc: int, src: Path, out: Path, args: argparse.Namespace
) -> tuple[float, float, float, list[int]]:
    """(denoise seconds, line-up wait seconds, wall seconds, latent tiles per rank) of one command."""
    shutil.rmtree(out, ignore_errors=True)
    launch = ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"] if nproc > 1 else []
    split = ["--split", "tiles"] if nproc > 1 else []
    cmd = [
        sys.executable, *launch, "-m", "seesr", "upscale", str(src), "-o", str(out), *split,
        "--steps", str(args.steps), "--process-size", str(args.process_size),
        "--latent-tile-size", str(args.tile), "--latent-tile-overlap", str(args.overlap), *weights_flags(),
    ]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), PYTHONWARNINGS="ignore")
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{nproc} process(es) failed:\n{proc.stderr[-3000:]}")
    side = json.loads(next(out.glob("*.json")).read_text())
    split = side["settings"].get("tile_split")
    per_rank = split["tiles_per_rank"] if split else [math.prod(side["plan"]["latent_tiles"])]
    timings = side["timings"]
    return float(timings["denoise"]), float(timings.get("split_wait", 0.0)), wall, per_rank


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=96, help="input side in pixels (x4 = processed side)")
    p.add_argument("--process-size", type=int, default=64)
    p.add_argument("--tile", type=int, default=32, help="latent tile side")
    p.add_argument("--overlap", type=int, default=16, help="latent tile overlap")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--nproc", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of every process")
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()

    import numpy as np
    from PIL import Image

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in"
        make_inputs(src, 1, args.size)
        denoise: dict[int, list[float]] = {1: [], args.nproc: []}
        walls: dict[int, list[float]] = {1: [], args.nproc: []}
        waits: dict[int, list[float]] = {1: [], args.nproc: []}
        tiles: dict[int, list[int]] = {}
        for _ in range(args.repeat):
            for n in denoise:
                d, wait, w, tiles[n] = run_once(n, src, Path(tmp) / f"out{n}", args)
                denoise[n].append(d)
                waits[n].append(wait)
                walls[n].append(w)
        a, b = (np.asarray(Image.open(Path(tmp) / f"out{n}" / "img000.png")).astype(int) for n in denoise)
        diff = np.abs(a - b)
    med = {n: sorted(t)[(len(t) - 1) // 2] for n, t in denoise.items()}
    best = {n: min(t) for n, t in denoise.items()}
    wall = {n: sorted(t)[(len(t) - 1) // 2] for n, t in walls.items()}
    wait = {n: sorted(t)[(len(t) - 1) // 2] for n, t in waits.items()}
    pairs = sorted(b / a for a, b in zip(denoise[1], denoise[args.nproc]))
    side = args.size * 4
    print(
        f"1 image {args.size}x{args.size} -> {side}x{side}, latent tile {args.tile} overlap {args.overlap}, "
        f"--steps {args.steps}, OMP_NUM_THREADS={args.threads} per process, {args.repeat} runs each"
    )
    print(
        "| processes | tiles per rank | denoise, median | ratio | denoise, best | ratio | all runs (s) "
        "| line-up wait, median | wall, median |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for n in denoise:
        runs = ", ".join(f"{x:.2f}" for x in denoise[n])
        print(
            f"| {n} | {tiles[n]} | {med[n]:.2f} s | {med[n] / med[1]:.2f}x | {best[n]:.2f} s "
            f"| {best[n] / best[1]:.2f}x | {runs} | {wait[n]:.2f} s | {wall[n]:.1f} s |"
        )
    print(f"median of the {len(pairs)} neighbouring-run ratios N/1: {pairs[(len(pairs) - 1) // 2]:.2f}x")
    print(f"PNG difference: max {diff.max()} grey levels, {100 * (diff > 0).mean():.3f} % of values differ")


if __name__ == "__main__":
    main()
