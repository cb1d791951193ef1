"""`seesr download [DIR]`: fetch every weight file SeeSR needs into one folder (resumable), then convert it."""

from __future__ import annotations

import argparse
from pathlib import Path


def default_dir() -> Path:
    """Kept for callers of the old name: :func:`seesr.weights.default_weights_dir`."""
    from seesr.weights import default_weights_dir

    return default_weights_dir()


def register(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(
        name,
        help="download SD-2-base, SeeSR, DAPE and RAM weights into one folder",
        description=(
            "Download every part (SD-2-base with mirrors, SeeSR UNet/ControlNet + DAPE.pth, RAM Swin-L; RAM's "
            "tag list + thresholds from GitHub at a pinned commit; sd-turbo with --turbo) into DIR, only the "
            "files the loader reads. Finished parts are skipped, interrupted ones resume; DIR/manifest.json "
            "records repository, revision, size and SHA-256 of every file. Then the folder is converted into "
            "the fast-loading safetensors layout (see `seesr convert`)."
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
        help="fetch only these parts (sd2-base seesr ram ram-tags sd-turbo); implies --no-convert",
    )
    p.add_argument(
        "--no-convert", action="store_true", help="keep the raw files only (skip `seesr convert` afterwards)"
    )
    p.add_argument(
        "--keep-originals",
        action="store_true",
        help="after converting, keep the raw files (default: delete them; the converted folder is enough)",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from seesr import weights

    target = args.dir or weights.default_weights_dir()
    folders = weights.download_all(
        target, include_optional=args.turbo, only=args.only, notify=lambda msg: print(msg, flush=True)
    )
    for name, folder in folders.items():
        print(f"{name}: {folder}")
    if args.only is None and not args.no_convert and not weights.is_converted(target, turbo=args.turbo):
        from seesr.pipeline.convert import convert_folder

        print(f"converting {target} into the fast-loading layout", flush=True)
        report = convert_folder(target, target, keep_originals=args.keep_originals)
        print(report.summary())
    print(f"done. Use: seesr upscale INPUT -o OUTDIR --weights {target}")
    return 0
