"""The ``seesr`` command line.

Each sub-command lives in its own module under ``seesr.cli`` and exposes ``register(subparsers)`` and
``run(args) -> int``. Modules import torch (and the rest of the library) only inside ``run`` so that
``seesr --help`` answers instantly. User mistakes become one line on stderr and a non-zero exit code.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from seesr import __version__

if TYPE_CHECKING:  # pragma: no cover
    from seesr.io import PillowSettings

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


#: loggers of third-party packages whose import-time warnings concern features seesr does not use
_FOREIGN_IMPORT_WARNINGS = ("bitsandbytes", "kernels")


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
    # bitsandbytes (pulled in by pyiqa, imported by diffusers' quantizer registry) tries to fetch a 4-bit CPU
    # kernel from the Hub at import and warns twice when it cannot; seesr never runs 4-bit layers
    for noisy in _FOREIGN_IMPORT_WARNINGS:
        logging.getLogger(noisy).setLevel(logging.ERROR)
    previous = _configure_pillow(args)
    hub_was_offline = _hub_offline_for(args)
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
    finally:
        # The console script exits right after; this only matters to callers that run main() in-process
        # (tests), so one command's switches do not leak into the next.
        from seesr.io import configure_pillow

        configure_pillow(max_pixels=previous.max_pixels, allow_truncated=previous.allow_truncated)
        if hub_was_offline is not None:
            _set_hub_offline(hub_was_offline)


def _hub_offline_for(args: argparse.Namespace) -> str | None:
    """With ``--no-download``, switch the Hugging Face Hub client offline for the command; returns what
    ``HF_HUB_OFFLINE`` was (``""`` when unset), or None when nothing was changed.

    seesr's own loaders never download then, but third-party imports may still call the Hub: bitsandbytes
    (pulled in by pyiqa) asks it for a CPU kernel when diffusers imports it, with no timeout on its second try.
    """
    if not getattr(args, "no_download", False):
        return None
    previous = os.environ.get("HF_HUB_OFFLINE", "")
    _set_hub_offline("1")
    return previous


def _set_hub_offline(value: str) -> None:
    if value:
        os.environ["HF_HUB_OFFLINE"] = value
    else:
        os.environ.pop("HF_HUB_OFFLINE", None)
    constants: Any = sys.modules.get("huggingface_hub.constants")
    if constants is not None:  # read once at import: an in-process caller (tests) imported it already
        constants.HF_HUB_OFFLINE = value.upper() in {"1", "ON", "YES", "TRUE"}


def _configure_pillow(args: argparse.Namespace) -> PillowSettings:
    """Set Pillow's process-wide limits once, from the command's flags, before any image is read.

    Pillow's decompression-bomb limit is a backstop: every read checks seesr's own cap from the header, and
    commands read outputs too (``eval``), so the limit is the larger of ``--max-pixels`` and the output cap.
    Truncated files are accepted only with ``--allow-truncated`` (``seesr upscale``); ``seesr ui`` has no such
    flag, so the UI never accepts them.
    """
    from seesr.io import DEFAULT_MAX_OUTPUT_PIXELS, DEFAULT_MAX_PIXELS, configure_pillow

    cap = getattr(args, "max_pixels", None) or DEFAULT_MAX_PIXELS
    return configure_pillow(
        max_pixels=max(int(cap), DEFAULT_MAX_OUTPUT_PIXELS),
        allow_truncated=bool(getattr(args, "allow_truncated", False)),
    )


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
