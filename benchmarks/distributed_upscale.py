"""Wall time of `seesr upscale` on a folder with 1 process vs N processes (torchrun, gloo, CPU).

Every process runs at the same thread count (OMP_NUM_THREADS, 1 by default, which is what torchrun sets), so
the N-process run does the same arithmetic as the 1-process one and writes the same bytes. The times are whole
commands (start-up and weights loading included), as a user sees them; runs alternate 1, N, 1, N ... and the
table gives the best (least disturbed) and the median of each with their ratios N/1, and the CPU seconds of all
processes together (the work done, which splitting should not grow much). Tiny official-format weights from
../shared/fixtures.

    python benchmarks/distributed_upscale.py --images 8 --size 32 --process-size 128 --steps 4 --repeat 2
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

from _alternating import alternate, launch, print_table

HERE = Path(__file__).resolve().parent
FIXTURES = Path(os.environ.get("SEESR_FIXTURES", HERE.parent.parent / "shared" / "fixtures"))


def weights_flags() -> list[str]:
    ram = FIXTURES / "ram-tiny"
    parts = {
        "sd2": FIXTURES / "sd2-tiny",
        "seesr": FIXTURES / "seesr-tiny",
        "ram": ram / "ram_tiny.pth",
        "dape": ram / "DAPE_tiny.pth",
        "tag-list": ram / "ram_tag_list.txt",
        "thresholds": ram / "ram_tag_list_threshold.txt",
        "dape-arch": ram / "arch.json",
    }
    return [f"--{k}={v}" for k, v in parts.items()]


def make_inputs(folder: Path, count: int, size: int) -> None:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for i in range(count):
        arr = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(arr).save(folder / f"img{i:03d}.png")


def run_once(nproc: int, src: Path, out: Path, args: argparse.Namespace) -> tuple[float, float]:
    """(wall seconds, CPU seconds of every process of the run)."""
    shutil.rmtree(out, ignore_errors=True)
    seesr_args = [
        "upscale", str(src), "-o", str(out),
        "--steps", str(args.steps), "--process-size", str(args.process_size), *weights_flags(),
    ]  # fmt: skip
    return launch(nproc, seesr_args, args.threads)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=8)
    p.add_argument("--size", type=int, default=32, help="input side in pixels")
    p.add_argument("--process-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--nproc", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of every process")
    p.add_argument("--repeat", type=int, default=2)
    args = p.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in"
        make_inputs(src, args.images, args.size)
        times, cpus = alternate(
            lambda n: run_once(n, src, Path(tmp) / f"out{n}", args), args.nproc, args.repeat
        )
        same = all(
            (Path(tmp) / "out1" / f.name).read_bytes() == f.read_bytes()
            for f in (Path(tmp) / f"out{args.nproc}").glob("*.png")
        )
    print(
        f"{args.images} images {args.size}x{args.size}, --process-size {args.process_size}, --steps "
        f"{args.steps}, OMP_NUM_THREADS={args.threads}, {args.repeat} runs each"
    )
    print_table(times, cpus)
    print(f"outputs byte-identical: {same}")


if __name__ == "__main__":
    main()
