"""`seesr train-dape --config FILE [--resume [latest|DIR]]`: stage-1 DAPE LoRA distillation (spec §4.4).

Multi-GPU / multi-node / multi-CPU with ``accelerate launch -m seesr train-dape ...`` or ``torchrun``; see
docs/training.md.
"""

from __future__ import annotations

import argparse

from seesr.cli.train import _override_run, _quiet_other_ranks, add_training_arguments


def register(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(
        name,
        help="train DAPE (stage 1): LoRA distillation of RAM on degraded images",
        description="Stage-1 DAPE training with accelerate; writes DAPE.pth (official layout) and dape/.",
    )
    add_training_arguments(p, "configs/train_dape_*.yaml")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import dataclasses
    import os

    from seesr.training.config import TrainDAPEConfig, load_train_config
    from seesr.training.train_dape import train_dape

    _quiet_other_ranks(os)
    cfg = load_train_config(TrainDAPEConfig, args.config)
    cfg = _override_run(cfg, args, dataclasses)
    out = train_dape(cfg, resume=args.resume)
    if os.environ.get("RANK", "0") == "0":
        print(f"trained DAPE: {out}/DAPE.pth (official layout), {out}/dape/ (merged)")
    return 0
