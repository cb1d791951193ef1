"""`seesr train-dape --config FILE [--resume [latest|DIR]]`: stage-1 DAPE LoRA distillation (spec §4.4).

Multi-GPU / multi-node / multi-CPU with ``accelerate launch -m seesr train-dape ...`` or ``torchrun``; see
docs/training.md.
"""

from __future__ import annotations

import argparse

from seesr.cli.train import _override_run, _quiet_other_ranks


def register(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(
        name,
        help="train DAPE (stage 1): LoRA distillation of RAM on degraded images",
        description="Stage-1 DAPE training with accelerate; writes DAPE.pth (official layout) and dape/.",
    )
    p.add_argument("--config", required=True, help="YAML run config (see configs/train_dape_*.yaml)")
    p.add_argument(
        "--resume",
        nargs="?",
        const="latest",
        default=None,
        metavar="CHECKPOINT",
        help="resume from the newest checkpoint in output_dir (no value) or from the given checkpoint folder",
    )
    p.add_argument("--output-dir", default=None, help="override run.output_dir of the config")
    p.add_argument("--max-train-steps", type=int, default=None, help="override run.max_train_steps")
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
