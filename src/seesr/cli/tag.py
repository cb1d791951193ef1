"""`seesr tag`: DAPE tags (hard prompts) of images (spec §1.4; paper §3.1).

Weights come either from a folder written by ``DAPE.save_pretrained`` (``--weights``) or from the released files
(``--ram ram_swin_large_14m.pth [--dape DAPE.pth] --tag-list ram_tag_list.txt --thresholds
ram_tag_list_threshold.txt``; ``--dape-arch`` for a non-default architecture such as the test fixtures').
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(
        name,
        help="print DAPE/RAM tags of images",
        description="Print the DAPE tags of each image (one line per image, or JSON with --json).",
    )
    p.add_argument("images", nargs="+", metavar="IMAGE", help="input images (the original LR)")
    p.add_argument("--json", action="store_true", help="print a JSON list of {image, tags, tag_string}")
    src = p.add_argument_group("weights (either --weights or --ram/--tag-list/--thresholds)")
    src.add_argument("--weights", type=Path, help="folder written by DAPE.save_pretrained")
    src.add_argument("--ram", type=Path, help="official RAM checkpoint (ram_swin_large_14m.pth)")
    src.add_argument("--dape", type=Path, help="official DAPE LoRA (DAPE.pth); omit for plain RAM")
    src.add_argument("--tag-list", type=Path, help="ram_tag_list.txt")
    src.add_argument("--thresholds", type=Path, help="ram_tag_list_threshold.txt")
    src.add_argument("--dape-arch", type=Path, help="architecture JSON for a non-default (reduced) model")
    opt = p.add_argument_group("tagging")
    opt.add_argument("--threshold", type=float, help="one global threshold instead of the per-class ones")
    opt.add_argument("--blocklist", default="", help="comma-separated tags never to emit")
    opt.add_argument("--extra-tags", default="", help="comma-separated tags appended to every result")
    opt.add_argument(
        "--antialias", action="store_true", help="antialiased resize to 384 (default: off, official)"
    )
    opt.add_argument(
        "--device", default="cpu", help="torch device, e.g. cpu, cuda, cuda:1, mps (default cpu)"
    )
    opt.add_argument("--dtype", choices=("fp32", "fp16", "bf16"), default="fp32", help="model precision")
    p.set_defaults(run=run)


def _split(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip())


def _load_rgb(path: Path):  # -> torch.Tensor (1,3,H,W) in [0,1]
    """The image as `seesr upscale` reads it (seesr.io: EXIF-oriented, 16 bits kept, ICC to sRGB)."""
    import torch

    from seesr.io import load_image

    rgb = load_image(path).rgb  # (H,W,3) float32 in [0,1]
    return torch.from_numpy(rgb).permute(2, 0, 1).unsqueeze(0).contiguous()


def _build_model(args: argparse.Namespace):
    from seesr.models.dape import DAPE

    if args.weights is not None:
        if any(v is not None for v in (args.ram, args.dape, args.tag_list, args.thresholds, args.dape_arch)):
            raise ValueError("give either --weights DIR or --ram/--dape/--tag-list/--thresholds, not both")
        return DAPE.from_pretrained(args.weights)
    if args.ram is None or args.tag_list is None or args.thresholds is None:
        raise ValueError("need --weights DIR, or --ram PTH with --tag-list TXT and --thresholds TXT")
    return DAPE.from_official(
        args.ram, args.dape, tag_list=args.tag_list, thresholds=args.thresholds, arch=args.dape_arch
    )


def run(args: argparse.Namespace) -> int:
    import torch

    from seesr.models.dape import TaggingOptions
    from seesr.pipeline.devices import resolve_device_dtype

    options = TaggingOptions(
        threshold=args.threshold, blocklist=_split(args.blocklist), extra_tags=_split(args.extra_tags)
    )
    images = [Path(p) for p in args.images]
    for p in images:  # fail before the (slow) model load
        if not p.is_file():
            raise FileNotFoundError(f"image not found: {p}")
    device, dtype = resolve_device_dtype(
        args.device, args.dtype
    )  # the resolver of `seesr upscale` and the UI
    model = _build_model(args).to(device=device, dtype=dtype)
    results = []
    with torch.inference_mode():
        for path in images:
            lr = _load_rgb(path).to(device)
            out = model(lr, antialias=args.antialias, options=options)
            results.append({"image": str(path), "tags": out.tags[0], "tag_string": out.tag_strings[0]})
            if not args.json:
                print(f"{path}: {out.tag_strings[0]}")
                sys.stdout.flush()
    if args.json:
        print(json.dumps(results, indent=1, ensure_ascii=False))
    return 0
