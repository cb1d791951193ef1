"""`seesr download [DIR]`: fetch every weight file SeeSR needs from the hub into one folder (resumable)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def default_dir() -> Path:
    return Path(os.environ.get("SEESR_WEIGHTS") or Path.home() / ".cache" / "seesr" / "weights")


def register(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(
        name,
        help="download SD-2-base, SeeSR, DAPE and RAM weights into one folder",
        description=(
            "Download every part (SD-2-base with mirrors, SeeSR UNet/ControlNet + DAPE.pth, RAM Swin-L + tag "
            "lists; sd-turbo with --turbo) into DIR. Finished parts are skipped, interrupted ones resume. "
            "Afterwards: seesr upscale --weights DIR ..."
        ),
    )
    p.add_argument(
        "dir",
        nargs="?",
        type=Path,
        default=None,
        help="target folder (default $SEESR_WEIGHTS or ~/.cache/seesr/weights)",
    )
    p.add_argument("--turbo", action="store_true", help="also fetch the sd-turbo base for --preset turbo")
    p.add_argument(
        "--only",
        nargs="+",
        metavar="PART",
        help="fetch only these parts (sd2-base seesr ram ram-tags sd-turbo)",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from seesr import weights

    target = args.dir or default_dir()
    folders = weights.download_all(
        target, include_optional=args.turbo, only=args.only, progress=lambda msg: print(msg, flush=True)
    )
    for name, folder in folders.items():
        print(f"{name}: {folder}")
    print(f"done. Use: seesr upscale --weights {target} INPUT -o OUTDIR")
    return 0
