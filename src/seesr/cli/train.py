"""`seesr train --config FILE [--resume [latest|DIR]]`: stage-2 training of the ControlNet + RCA (spec §5).

Launch on several GPUs / nodes / CPU processes with ``accelerate launch -m seesr train ...`` or
``torchrun --nproc_per_node N -m seesr train ...``; see docs/training.md.
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(
        name,
        help="train the ControlNet + RCA (stage 2) on a frozen SD-2",
        description="Stage-2 SeeSR training with accelerate (single/multi GPU, multi-node, CPU).",
    )
    add_training_arguments(p, "configs/train_seesr_*.yaml")
    p.set_defaults(run=run)


def add_training_arguments(p: argparse.ArgumentParser, config_examples: str) -> None:
    """The flags both training commands take: config, resume, output folder and step overrides."""
    p.add_argument("--config", required=True, help=f"YAML run config (see {config_examples})")
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


def run(args: argparse.Namespace) -> int:
    import dataclasses
    import os

    from seesr.training.config import TrainSeeSRConfig, load_train_config
    from seesr.training.train_seesr import train_seesr

    _quiet_other_ranks(os)
    cfg = load_train_config(TrainSeeSRConfig, args.config)
    cfg = _override_run(cfg, args, dataclasses)
    out = train_seesr(cfg, resume=args.resume)
    if os.environ.get("RANK", "0") == "0":  # one line per run, not per process
        print(f"trained weights: {out}/unet + {out}/controlnet")
    return 0


def _override_run(cfg, args: argparse.Namespace, dataclasses):
    changes = {}
    if args.output_dir is not None:
        changes["output_dir"] = args.output_dir
    if args.max_train_steps is not None:
        changes["max_train_steps"] = args.max_train_steps
    if not changes:
        return cfg
    return dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, **changes))


def _quiet_other_ranks(os) -> None:
    """Under torchrun / accelerate launch only rank 0 logs progress; the others log warnings and errors."""
    import logging

    if os.environ.get("RANK", "0") != "0":
        logging.getLogger("seesr").setLevel(logging.WARNING)
