"""`seesr make-pairs`: argument parsing for :func:`seesr.data.make_pairs.make_pairs` (spec §6.1–6.2).

The library function writes ``OUT/gt``, ``OUT/lr``, ``OUT/sr_bicubic`` (and ``OUT/tag`` with a tagger)
deterministically per seed and resumably; this module turns flags into its arguments and wires the optional RAM
tagger (``--tagger-ram``), which ``data`` cannot import itself.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(
        name,
        help="make LR/HR training pairs with the Real-ESRGAN degradation",
        description="Degrade HQ images into gt/ lr/ sr_bicubic/ (and tag/) training pairs, deterministically per seed "
        "and resumably (finished indices are skipped).",
    )
    p.add_argument("--gt", nargs="+", required=True, type=Path, metavar="DIR", help="folder(s) of HQ images")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--seed", type=int, default=0, help="seed of every random draw (default 0)")
    p.add_argument("--epochs", type=int, default=1, help="passes over the GT images (default 1)")
    p.add_argument(
        "--mode",
        choices=("seesr", "dape"),
        default="seesr",
        help="seesr: drop images < 384² px or < 100 KiB, hflip, random 512² crop; dape: LANCZOS resize to 512²",
    )
    p.add_argument(
        "--device", default="auto", help="torch device for the degradation (default: cuda if available)"
    )
    p.add_argument("--batch-size", type=int, default=8, help="pairs degraded per call (default 8)")
    p.add_argument(
        "--preset", choices=("seesr", "realesrgan"), default="seesr", help="degradation parameter set"
    )
    p.add_argument("--config", type=Path, help="YAML overriding DegradationConfig fields of the preset")
    p.add_argument("--limit", type=int, help="stop after this many pairs in total (for a quick look)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    t = p.add_argument_group("tags (official: plain RAM on the stored GT)")
    t.add_argument("--tagger-ram", type=Path, help="RAM checkpoint (ram_swin_large_14m.pth); enables tag/")
    t.add_argument("--tagger-dape", type=Path, help="optional DAPE LoRA for the tagger (official: none)")
    t.add_argument("--tag-list", type=Path, help="ram_tag_list.txt")
    t.add_argument("--thresholds", type=Path, help="ram_tag_list_threshold.txt")
    t.add_argument("--tagger-arch", type=Path, help="architecture JSON of a reduced RAM (tests)")
    p.set_defaults(run=run)


def _ram_tagger(args: argparse.Namespace, device: Any) -> Callable[[Any], list[str]]:
    import torch

    from seesr.pipeline.dape_weights import load_official_dape

    if args.tag_list is None or args.thresholds is None:
        raise ValueError("--tagger-ram needs --tag-list TXT and --thresholds TXT")
    model = load_official_dape(
        args.tagger_ram,
        args.tagger_dape,
        tag_list=args.tag_list,
        thresholds=args.thresholds,
        arch=args.tagger_arch,
    ).to(device)
    model.eval()

    def tagger(gt: torch.Tensor) -> list[str]:
        # make_tags.py: ToTensor -> tensor Resize(384) (no antialias at the time) -> normalise, plain RAM
        return model(gt.to(device), antialias=False).tag_strings

    return tagger


def run(args: argparse.Namespace) -> int:
    from seesr.run.distributed import session

    with session(args.device) as world:  # torchrun/accelerate: each rank makes its share of the pairs
        return _run(args, world)


def _run(args: argparse.Namespace, world: Any) -> int:
    from seesr.data.make_pairs import plan_pairs, write_pairs
    from seesr.data.realesrgan import load_degradation_config
    from seesr.pipeline.devices import resolve_device

    device = resolve_device(world.device)  # the one resolver (cuda > mps > cpu for "auto"); per rank
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    for d in args.gt:
        if not Path(d).is_dir():
            raise FileNotFoundError(f"--gt folder not found: {d}")
    config = load_degradation_config(args.config, preset=args.preset)
    if args.tagger_ram is None and any(
        v is not None for v in (args.tag_list, args.thresholds, args.tagger_dape)
    ):
        raise ValueError("--tag-list/--thresholds/--tagger-dape need --tagger-ram")
    tagger = _ram_tagger(args, device) if args.tagger_ram is not None else None
    # rank 0 lists the images and the missing pairs once; its plan (or its error) reaches every rank
    plan = world.plan_on_main(
        lambda: plan_pairs(
            args.gt,
            args.out,
            seed=args.seed,
            epochs=args.epochs,
            mode=args.mode,
            config=config,
            tags=tagger is not None,
            limit=args.limit,
        )
    )
    world.check_shared_folder(args.out)
    # pair n's draws depend on (seed, n) only, so a rank makes exactly the files one process would
    mine = world.share_jobs(plan.todo, plan.costs, unit="pairs")
    done = write_pairs(
        plan,
        mine,
        device=str(device),
        batch_size=args.batch_size,
        tagger=tagger,
        progress=not args.no_progress and world.is_main,
    )
    per_rank = world.gather_at_end((done["made"], done["failed"]))  # one collective, after the loop
    made, failed = sum(m for m, _ in per_rank), sum(f for _, f in per_rank)
    summary = (
        f"make-pairs: {made} pair(s) written, {plan.skipped} already present, {failed} failed, in {args.out}"
    )
    if world.is_distributed:
        summary += "; per rank: " + ", ".join(
            f"{r}: {m} written, {f} failed" for r, (m, f) in enumerate(per_rank)
        )
    if not world.is_main:
        # the run's verdict is rank 0's exit code (an early non-zero exit would make torchrun stop rank 0)
        return 0
    print(summary)
    return 1 if failed else 0
