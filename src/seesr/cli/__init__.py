"""The ``seesr`` command line.

Each sub-command lives in its own module under ``seesr.cli`` and exposes ``register(subparsers)`` and
``run(args) -> int``. Modules import torch (and the rest of the library) only inside ``run`` so that
``seesr --help`` answers instantly. User mistakes become one line on stderr and a non-zero exit code.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from seesr import __version__

# sub-command name -> module under seesr.cli
COMMANDS: dict[str, str] = {
    "upscale": "upscale",
    "tag": "tag",
    "download": "download",
    "convert": "convert",
    "make-pairs": "make_pairs",
    "train-dape": "train_dape",
    "train": "train",
    "eval": "eval",
    "prepare-testset": "prepare_testset",
    "ui": "ui",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="seesr",
        description="SeeSR: semantics-aware real-world x4 image super-resolution.",
    )
    parser.add_argument("--version", action="version", version=f"seesr {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in COMMANDS.items():
        mod = importlib.import_module(f"seesr.cli.{module}")
        mod.register(sub, name)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``seesr`` console script. Returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        print("seesr: interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, NotADirectoryError, PermissionError, ImportError) as err:
        if args.verbose:
            raise
        print(f"seesr {args.command}: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
