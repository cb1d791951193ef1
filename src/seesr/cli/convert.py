"""`seesr convert SRC DST`: a downloaded weights folder -> the fast-loading safetensors layout."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(
        name,
        help="convert a downloaded weights folder into the fast-loading safetensors layout",
        description=(
            "Load SRC (a `seesr download` folder) once with every strictness check and write DST: "
            "safetensors only, DAPE merged into RAM, only the tensors the pipeline reads (no RAM optimizer "
            "state), optional fp16. DST may equal SRC; then the raw files are removed unless --keep-originals."
        ),
    )
    p.add_argument("src", type=Path, help="weights folder from `seesr download`")
    p.add_argument("dst", type=Path, help="target folder (may be SRC)")
    p.add_argument("--dtype", choices=("fp32", "fp16", "bf16"), default="fp32", help="dtype of the SD parts")
    p.add_argument("--keep-originals", action="store_true", help="keep the raw files when DST is SRC")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from seesr.pipeline.convert import convert_folder

    report = convert_folder(args.src, args.dst, dtype=args.dtype, keep_originals=args.keep_originals)
    print(report.summary())
    return 0
