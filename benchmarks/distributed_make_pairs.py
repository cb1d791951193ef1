"""Wall time of `seesr make-pairs` with 1 process vs N processes (torchrun, gloo, CPU degradation).

The GT images are the degradation fixtures (../shared/fixtures/degradation/gt, eight photos), made into
``images x epochs`` pairs of 512² GT / 128² LR. Every process runs at the same thread count (OMP_NUM_THREADS, 1 by
default, what torchrun sets), so the N-process run does the same arithmetic and writes the same bytes (checked).
Times are whole commands (start-up included); runs alternate 1, N, 1, N ... and the table gives the best and the
median of each with their ratios N/1, and the CPU seconds of all processes together.

    python benchmarks/distributed_make_pairs.py --epochs 4 --repeat 2
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


def run_once(nproc: int, gt: Path, out: Path, args: argparse.Namespace) -> tuple[float, float]:
    """(wall seconds, CPU seconds of every process of the run)."""
    shutil.rmtree(out, ignore_errors=True)
    seesr_args = [
        "make-pairs", "--gt", str(gt), "--out", str(out),
        "--epochs", str(args.epochs), "--device", args.device, "--no-progress",
    ]  # fmt: skip
    return launch(nproc, seesr_args, args.threads)


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=2, help="passes over the 8 GT images")
    p.add_argument("--nproc", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of every process")
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeat", type=int, default=2)
    args = p.parse_args()

    gt = FIXTURES / "degradation" / "gt"
    n_img = len(list(gt.glob("*.png")))
    with tempfile.TemporaryDirectory() as tmp:
        times, cpus = alternate(
            lambda n: run_once(n, gt, Path(tmp) / f"out{n}", args), args.nproc, args.repeat
        )
        same = tree(Path(tmp) / "out1") == tree(Path(tmp) / f"out{args.nproc}")
    print(
        f"{n_img} images x {args.epochs} epochs = {n_img * args.epochs} pairs, --device {args.device}, "
        f"OMP_NUM_THREADS={args.threads}, {args.repeat} runs each, {os.cpu_count()} CPUs"
    )
    print_table(times, cpus)
    print(f"outputs byte-identical: {same}")


if __name__ == "__main__":
    main()
