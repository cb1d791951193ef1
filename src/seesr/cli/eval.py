"""`seesr eval`: the paper's metrics (Table 2), tagging OP/OR/AP (Table 6) and reports (docs/evaluation.md).

Three modes:

* images: ``seesr eval --sr DIR [--gt DIR] [--metrics ...] [--crop-border N] [--out DIR]``
* tagging: ``seesr eval --tags PRED.json --labels LABELS.json [--out DIR]``
* combine: ``seesr eval --combine A.json B.json ... --out DIR`` (one Table 2 from several runs)
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


def register(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(
        name,
        help="image-quality metrics (PSNR/SSIM-Y, LPIPS, DISTS, FID, NIQE, MANIQA, MUSIQ, CLIPIQA) and tagging OP/OR/AP",
        description="Evaluate restored images against references (paper Table 2) or a tagger against labels "
        "(Table 6). PSNR/SSIM on the BT.601 Y channel, no border crop unless --crop-border. Learned metrics "
        "need the 'eval' extra (pyiqa) and their pretrained weights; one that cannot load is reported and "
        "skipped (exit code 1), the others still run. Protocol: docs/evaluation.md.",
    )
    p.add_argument("--sr", help="folder of restored images")
    p.add_argument("--gt", help="folder of references (same stems and sizes); omit for no-reference metrics")
    p.add_argument(
        "--metrics",
        nargs="+",
        metavar="NAME",
        help="psnr ssim lpips dists fid niqe maniqa maniqa-pipal musiq clipiqa, or 'all' (default: all the "
        "inputs allow; without --gt only the no-reference ones)",
    )
    p.add_argument(
        "--crop-border", type=int, default=0, help="pixels removed per side for PSNR/SSIM (default 0)"
    )
    p.add_argument(
        "--strip-suffix",
        action="append",
        default=[],
        metavar="SUFFIX",
        help="suffix removed from file stems before pairing, e.g. _out or _HR (repeatable)",
    )
    p.add_argument("--device", default="cpu", help="torch device for the learned metrics (default cpu)")
    p.add_argument("--out", help="folder for metrics.csv, metrics.json, report.md (and plot.png)")
    p.add_argument(
        "--dataset", default="", help="dataset name for the report, e.g. DIV2K-Val, RealSR, RealLR200"
    )
    p.add_argument("--name", default="", help="method (or tagger) name for the report column")
    p.add_argument("--plot", action="store_true", help="also write plot.png (needs matplotlib)")
    p.add_argument(
        "--tags", help="tagging mode: JSON {image: [tags] | 'a, b' | {'tags': [...], 'scores': {...}}}"
    )
    p.add_argument(
        "--labels", help="tagging mode: JSON {image: [true tags]} (prepare-testset coco writes one)"
    )
    p.add_argument(
        "--classes",
        help="tagging mode: vocabulary scored: 'coco' (the 80 COCO classes as RAM tags) or a text file, one "
        "tag per line (default: every tag in --labels)",
    )
    p.add_argument("--combine", nargs="+", metavar="JSON", help="merge metrics.json files into one Table 2")
    p.set_defaults(run=run)


def _run_images(args: argparse.Namespace) -> int:
    from seesr.run.distributed import session

    with session(args.device) as world:  # torchrun/accelerate: each rank scores its share of the images
        args.device = world.device or "cpu"
        return _score_images(args, world)


def _score_images(args: argparse.Namespace, world: Any) -> int:
    from pathlib import Path

    from seesr.io import DEFAULT_MAX_OUTPUT_PIXELS, probe_image
    from seesr.metrics.evaluate import finish_eval, load_models, score_pairs, start_eval
    from seesr.metrics.report import terminal_table, write_csv, write_json, write_markdown, write_plot

    def plan() -> tuple[Any, list[Any], list[int]]:
        result, pairs = start_eval(
            args.sr,
            args.gt,
            metrics=args.metrics,
            crop_border=args.crop_border,
            device=args.device,
            strip_suffixes=args.strip_suffix,
        )
        costs = (
            [probe_image(sr, max_pixels=DEFAULT_MAX_OUTPUT_PIXELS).pixels for _, sr, _ in pairs]
            if world.is_distributed
            else []
        )
        return result, pairs, costs

    # rank 0 pairs the files once; its plan (or its error) reaches every rank
    result, pairs, costs = world.plan_on_main(plan)
    mine = world.share_jobs(range(len(pairs)), costs)
    # each host's first rank loads (and on a first run downloads) the learned metrics before the others
    loaded = world.run_on_local_rank0_first(lambda: load_models(result, args.device))
    share = score_pairs(result, pairs, mine, device=args.device, progress=world.is_main, loaded=loaded)
    shares = world.gather_at_end(share)  # one collective, after the loop
    if not world.is_main:
        # the run's verdict is rank 0's exit code (an early non-zero exit would make torchrun stop rank 0)
        return 0
    result = finish_eval(result, pairs, shares, device=args.device)  # means and FID: rank 0, once
    if world.is_distributed:
        counts = ", ".join(f"{r}: {len(s.per_image)}" for r, s in enumerate(shares))
        print(f"seesr eval: {len(pairs)} images scored; per rank: {counts}", file=sys.stderr)
    print(terminal_table(result))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        write_csv(result, out / "metrics.csv")
        write_json(result, out / "metrics.json", dataset=args.dataset, method=args.name)
        write_markdown(result, out / "report.md", dataset=args.dataset, method=args.name)
        written = ["metrics.csv", "metrics.json", "report.md"]
        if args.plot and write_plot(result, out / "plot.png") is not None:
            written.append("plot.png")
        print(f"wrote {', '.join(written)} to {out}")
    for line in result.failures.values():
        print(f"seesr eval: not computed: {line}", file=sys.stderr)
    return 1 if result.failures else 0


def _load_json(path: str) -> dict:
    import json
    from pathlib import Path

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"JSON file not found: {p}")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{p} is not valid JSON: {err}") from err
    if not isinstance(data, dict):
        raise ValueError(f"{p} must hold a JSON object (image -> tags), got {type(data).__name__}")
    return data


def _parse_predictions(
    data: dict, source: str
) -> tuple[dict[str, list[str]], dict[str, dict[str, float]] | None]:
    preds: dict[str, list[str]] = {}
    scores: dict[str, dict[str, float]] = {}
    for key, value in data.items():
        if isinstance(value, str):  # RAM's own output: tags joined with ", " (spec §1)
            preds[key] = [t.strip() for t in value.replace(" | ", ", ").split(",") if t.strip()]
        elif isinstance(value, list):
            preds[key] = [str(t) for t in value]
        elif isinstance(value, dict) and "tags" in value:
            preds[key] = [str(t) for t in value["tags"]]
            if "scores" in value:
                scores[key] = {str(t): float(s) for t, s in value["scores"].items()}
        else:
            raise ValueError(
                f"{source}: entry {key!r} must be a list of tags, a string 'a, b' or {{'tags': [...], "
                f"'scores': {{...}}}}, got {type(value).__name__}"
            )
    if scores and len(scores) != len(preds):
        raise ValueError(
            f"{source}: scores are given for {len(scores)} of {len(preds)} images; give all or none"
        )
    return preds, (scores or None)


def _run_tagging(args: argparse.Namespace) -> int:
    from pathlib import Path

    from seesr.metrics.report import tagging_markdown
    from seesr.metrics.tagging import tagging_metrics
    from seesr.metrics.testsets import COCO_TO_RAM

    if not args.labels:
        raise ValueError("--tags needs --labels (image -> true tags)")
    preds, scores = _parse_predictions(_load_json(args.tags), args.tags)
    labels, _ = _parse_predictions(_load_json(args.labels), args.labels)
    classes = None
    if args.classes == "coco":
        classes = sorted(set(COCO_TO_RAM.values()))
    elif args.classes:
        path = Path(args.classes)
        if not path.is_file():
            raise FileNotFoundError(f"class list not found: {path} (expected a text file or 'coco')")
        classes = [c.strip() for c in path.read_text(encoding="utf-8").splitlines() if c.strip()]
    result = tagging_metrics(preds, labels, classes=classes, scores=scores)
    table = tagging_markdown({args.name or "tagger": result})
    print(table, end="")
    if args.out:
        import json

        from seesr.metrics.report import _jsonable

        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "tagging.json").write_text(
            json.dumps(_jsonable(result.as_dict()), indent=1) + "\n", encoding="utf-8"
        )
        (out / "tagging.md").write_text(table, encoding="utf-8")
        print(f"wrote tagging.json, tagging.md to {out}")
    return 0


def _run_combine(args: argparse.Namespace) -> int:
    from pathlib import Path

    from seesr.metrics.report import table2_markdown

    entries = []
    for path in args.combine:
        data = _load_json(path)
        if "aggregate" not in data:
            raise ValueError(
                f"{path} has no 'aggregate' key; expected a metrics.json written by seesr eval --out"
            )
        entries.append(data)
    table = table2_markdown(entries)
    print(table, end="")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "table2.md").write_text(table, encoding="utf-8")
        print(f"wrote table2.md to {out}")
    return 0


def run(args: argparse.Namespace) -> int:
    modes = [m for m, on in (("--sr", args.sr), ("--tags", args.tags), ("--combine", args.combine)) if on]
    if len(modes) != 1:
        raise ValueError(f"give exactly one of --sr, --tags, --combine (got {modes or 'none'})")
    if args.combine:
        return _run_combine(args)
    if args.tags:
        return _run_tagging(args)
    return _run_images(args)
