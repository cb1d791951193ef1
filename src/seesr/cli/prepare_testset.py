"""`seesr prepare-testset`: build the synthetic test sets of the paper (§4.1 DIV2K-Val, §4.3 COCO-val).

    seesr prepare-testset div2k --hr DIV2K_valid_HR --out testsets/DIV2K-Val [--num 3000] [--seed 0]
    seesr prepare-testset coco --images val2017 --annotations instances_val2017.json --out testsets/COCO-val

Both degrade with the training pipeline (``seesr.data.realesrgan``, default ``DegradationConfig``), seeded.
RealSR, DRealSR and RealLR200 are published folders and need no preparation (docs/evaluation.md).
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(
        name,
        help="build DIV2K-Val (512² crops) or COCO-val (Table 6) degraded with the training pipeline",
        description="Build a synthetic test set: gt/ and lr/ PNGs, manifest.json (and labels.json for COCO).",
    )
    which = p.add_subparsers(dest="testset", metavar="SET", required=True)
    d = which.add_parser(
        "div2k", help="DIV2K-Val: seeded random crops of the DIV2K validation HR images, degraded"
    )
    d.add_argument("--hr", required=True, help="folder of DIV2K validation HR images (DIV2K_valid_HR)")
    d.add_argument("--num", type=int, default=3000, help="number of crops (default 3000, as in the paper)")
    d.add_argument("--crop", type=int, default=512, help="crop side (default 512)")
    c = which.add_parser("coco", help="COCO-val: images resized to 512², degraded, labels as RAM tags")
    c.add_argument("--images", required=True, help="COCO val2017 image folder")
    c.add_argument("--annotations", required=True, help="COCO instances_val2017.json")
    c.add_argument("--size", type=int, default=512, help="resize side (default 512)")
    c.add_argument("--limit", type=int, default=None, help="only the first N images (default: all)")
    for q in (d, c):
        q.add_argument("--out", required=True, help="output folder (gt/, lr/, manifest.json)")
        q.add_argument("--seed", type=int, default=0, help="seed of crops and degradations (default 0)")
        q.add_argument("--device", default="cpu", help="device for the degradation (default cpu)")
        q.add_argument(
            "--gt-usm",
            action="store_true",
            help="save the USM-sharpened GT the LR was made from (as SeeSR's training pairs) instead of the "
            "original image",
        )
    p.set_defaults(run=run)


def training_degradation(device: str = "cpu"):
    """The training degradation, ``degrade(gt, generator) -> (lr, gt_usm)`` (default ``DegradationConfig``)."""
    from seesr.data.realesrgan import DegradationConfig, RealESRGANDegradation

    return RealESRGANDegradation(DegradationConfig()).to(device)


def run(args: argparse.Namespace) -> int:
    from seesr.metrics import testsets

    degrade = training_degradation(args.device)
    if args.testset == "div2k":
        m = testsets.build_div2k_val(
            args.hr,
            args.out,
            degrade,
            num=args.num,
            crop=args.crop,
            seed=args.seed,
            device=args.device,
            gt_target="usm" if args.gt_usm else "crop",
        )
        print(f"DIV2K-Val: {len(m['images'])} crops written to {args.out} (gt/, lr/, manifest.json)")
    else:
        m = testsets.build_coco_val(
            args.images,
            args.annotations,
            args.out,
            degrade,
            size=args.size,
            seed=args.seed,
            limit=args.limit,
            device=args.device,
            gt_target="usm" if args.gt_usm else "crop",
        )
        print(f"COCO-val: {m['num']} images written to {args.out} (gt/, lr/, labels.json, manifest.json)")
    return 0
