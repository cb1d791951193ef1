"""1 vs N processes, alternated: run each count in turn ``repeat`` times, then print best / median with ratios."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Sequence


def launch(nproc: int, seesr_args: Sequence[str], threads: int) -> tuple[float, float]:
    """Run ``python -m seesr <seesr_args>`` in ``nproc`` processes (torchrun when > 1) with ``threads`` torch
    threads each; (wall s, CPU s of every process). Exits with the tail of stderr when the run fails."""
    dist = ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"] if nproc > 1 else []
    cmd = [sys.executable, *dist, "-m", "seesr", *seesr_args]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONWARNINGS="ignore")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{nproc} process(es) failed:\n{proc.stderr[-3000:]}")
    return seconds, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def alternate(
    run: Callable[[int], tuple[float, float]], nproc: int, repeat: int
) -> tuple[dict[int, list[float]], dict[int, list[float]]]:
    """``run(n)`` -> (wall s, CPU s of all processes), for n = 1, nproc, 1, nproc, ...; returns (walls, cpus)."""
    walls: dict[int, list[float]] = {1: [], nproc: []}
    cpus: dict[int, list[float]] = {1: [], nproc: []}
    for _ in range(repeat):
        for n in walls:
            wall, cpu = run(n)
            walls[n].append(wall)
            cpus[n].append(cpu)
    return walls, cpus


def print_table(walls: dict[int, list[float]], cpus: dict[int, list[float]]) -> None:
    """The Markdown table: best and median wall with their ratios to one process, every run, median CPU s."""

    def median(t: list[float]) -> float:
        return sorted(t)[(len(t) - 1) // 2]

    best = {n: min(t) for n, t in walls.items()}
    med = {n: median(t) for n, t in walls.items()}
    print("| processes | wall, best | ratio | wall, median | ratio | all runs (s) | CPU s (median) |")
    print("|---|---|---|---|---|---|---|")
    for n, t in walls.items():
        runs = ", ".join(f"{x:.1f}" for x in t)
        print(
            f"| {n} | {best[n]:.1f} s | {best[n] / best[1]:.2f}x | {med[n]:.1f} s | {med[n] / med[1]:.2f}x "
            f"| {runs} | {median(cpus[n]):.1f} |"
        )
