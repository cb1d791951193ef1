"""`seesr ui`: the local web app (issue 8) over the same SeeSRPipeline as `seesr upscale`.

Binds to 127.0.0.1 unless ``--host`` says otherwise; a public Gradio share link only with ``--share``. Without
weights (or with weights that fail to load) the page still opens and says what to pass.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any


def register(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(
        name,
        help="local web app: upload, edit tags, compare before/after, download",
        description="Start the SeeSR web UI (Gradio; needs the `ui` extra: pip install 'seesr[ui]').",
    )
    w = p.add_argument_group("weights (as `seesr upscale`: --weights, the official parts, or SEESR_WEIGHTS)")
    w.add_argument(
        "--weights", metavar="DIR", default=None, help="folder from `seesr download` / save_pretrained"
    )
    w.add_argument("--sd2", help="SD-2-base diffusers folder or hub id")
    w.add_argument("--seesr", help="SeeSR folder with unet/ and controlnet/")
    w.add_argument("--ram", help="RAM Swin-L checkpoint (ram_swin_large_14m.pth)")
    w.add_argument("--dape", help="DAPE.pth")
    w.add_argument("--tag-list", dest="tag_list", help="ram_tag_list.txt")
    w.add_argument("--thresholds", help="ram_tag_list_threshold.txt")
    w.add_argument(
        "--dape-arch", dest="dape_arch", default=None, help="DAPE architecture JSON (tiny test models)"
    )
    w.add_argument(
        "--turbo-unet", dest="turbo_unet", help="sd-turbo folder (official parts) for the turbo preset"
    )
    w.add_argument(
        "--no-download",
        dest="no_download",
        action="store_true",
        help="never download, nor let any library call the Hub (HF_HUB_OFFLINE=1): a missing or incomplete "
        "default folder is shown as an error in the page",
    )
    w.add_argument(
        "--no-dape", dest="no_dape", action="store_true", help="tag with plain RAM instead of DAPE"
    )
    w.add_argument(
        "--turbo",
        action="store_true",
        help="load the --weights folder's sd-turbo UNet and open on the turbo preset",
    )
    p.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cpu, cuda, cuda:1, mps")
    p.add_argument(
        "--dtype",
        default="auto",
        choices=["auto", "fp32", "fp16", "bf16"],
        help="auto: fp16 on CUDA, else fp32",
    )
    p.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)"
    )
    p.add_argument(
        "--port", type=int, default=None, help="port (default: Gradio's, 7860, or the next free one)"
    )
    p.add_argument(
        "--share", action="store_true", help="also open a public Gradio share link (off by default)"
    )
    p.add_argument(
        "--examples", type=Path, nargs="*", default=[], help="image files or folders offered as examples"
    )
    p.add_argument(
        "--output-dir", type=Path, default=None, help="where results are kept (default: a temp folder)"
    )
    p.add_argument("--max-pixels", type=int, default=None, help="input pixel cap, checked before decoding")
    p.add_argument(
        "--max-memory",
        dest="max_memory",
        default=None,
        metavar="SIZE",
        help="memory budget, e.g. 8GB (as upscale)",
    )
    p.add_argument(
        "--max-output-pixels", type=int, default=None, help="output pixel cap, checked before running"
    )
    p.set_defaults(run=run)


def _preset(args: argparse.Namespace) -> str:
    return "turbo" if args.turbo or args.turbo_unet else "default"


def load_pipeline(args: argparse.Namespace) -> Any:
    """Load the SeeSRPipeline exactly as `seesr upscale` resolves weights, device and dtype (one path)."""
    from seesr.cli.upscale import weights_choice
    from seesr.pipeline.devices import resolve_device_dtype
    from seesr.run.sources import load_pipeline as load
    from seesr.run.sources import prepare

    device, dtype = resolve_device_dtype(args.device, args.dtype)
    choice = weights_choice(args)
    prepare(choice, preset=_preset(args), allow_download=not args.no_download)
    print(f"seesr ui: loading weights on {device} ({str(dtype).removeprefix('torch.')})…", file=sys.stderr)
    return load(choice, device=device, dtype=dtype, preset=_preset(args), no_dape=args.no_dape)


def _example_files(paths: list[Path]) -> list[Path]:
    from seesr.io import IMAGE_EXTENSIONS as exts

    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out.extend(sorted(q for q in p.iterdir() if q.suffix.lower() in exts and q.is_file()))
        elif p.is_file():
            out.append(p)
        else:
            raise FileNotFoundError(f"--examples: {p} is neither a file nor a folder")
    return out


def run(args: argparse.Namespace) -> int:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio  # noqa: F401
    except ImportError as err:
        raise ImportError("seesr ui needs gradio: pip install 'seesr[ui]'") from err
    from seesr.cli.upscale import weights_choice
    from seesr.errors import WeightsError
    from seesr.run.plan import parse_size
    from seesr.run.sources import check_choice
    from seesr.ui.app import WEIGHTS_HELP, build_app, serve

    pipeline = None
    load_error = None
    # Conflicting flags stay a one-line CLI error (ValueError); missing weights are explained in the page.
    try:
        check_choice(weights_choice(args), preset=_preset(args))
    except WeightsError as err:
        load_error = f"Cannot load SeeSR: {err}."
    if load_error is None:
        try:
            pipeline = load_pipeline(args)
        except (FileNotFoundError, ValueError, OSError) as err:
            # Keep serving: the page explains what is wrong instead of a dead port.
            load_error = f"Could not load the SeeSR weights: {err}. {WEIGHTS_HELP}"
    if load_error:
        print(f"seesr ui: {load_error}", file=sys.stderr)
    app = build_app(
        pipeline,
        load_error=load_error,
        examples=_example_files(list(args.examples)),
        output_dir=args.output_dir,
        max_input_pixels=args.max_pixels,
        max_output_pixels=args.max_output_pixels,
        default_preset=_preset(args),
        dtype_requested=args.dtype,
        max_memory=parse_size(args.max_memory) if args.max_memory else None,
    )
    if args.share:
        print(
            "seesr ui: --share given: the app will also be reachable through a public link", file=sys.stderr
        )
    serve(app, host=args.host, port=args.port, share=bool(args.share))
    return 0
