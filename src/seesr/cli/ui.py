"""`seesr ui`: the local web app (issue 8) over the same SeeSRPipeline as `seesr upscale`.

Binds to 127.0.0.1 unless ``--host`` says otherwise; a public Gradio share link only with ``--share``. Without
weights (or with weights that fail to load) the page still opens and says what to pass.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

OFFICIAL_PARTS = ("sd2", "seesr", "ram", "dape", "tag_list", "thresholds")


def register(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(
        name,
        help="local web app: upload, edit tags, compare before/after, download",
        description="Start the SeeSR web UI (Gradio; needs the `ui` extra: pip install 'seesr[ui]').",
    )
    w = p.add_argument_group("weights (either --weights, SEESR_WEIGHTS, or all official parts)")
    w.add_argument(
        "--weights", type=Path, default=None, help="folder from `seesr download` / save_pretrained"
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
    p.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cpu, cuda, cuda:1, mps")
    p.add_argument(
        "--dtype", default="auto", choices=["auto", "fp32", "fp16", "bf16"], help="auto: fp16 on GPU"
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
        "--max-output-pixels", type=int, default=None, help="output pixel cap, checked before running"
    )
    p.set_defaults(run=run)


def resolve_weights(args: argparse.Namespace) -> tuple[dict[str, str] | None, str | None]:
    """Which weights to load: (kwargs for the factory, None) or (None, message for the page)."""
    official = {k: getattr(args, k) for k in OFFICIAL_PARTS}
    given = [k for k, v in official.items() if v]
    if args.weights is not None and given:
        raise ValueError(f"pass either --weights or the official parts, not both (got --weights and {given})")
    if given:
        missing = [f"--{k.replace('_', '-')}" for k, v in official.items() if not v]
        if missing:
            return None, f"Incomplete official weights: missing {' '.join(missing)}."
        kw = {k: str(v) for k, v in official.items()}
        if args.dape_arch:
            kw["dape_arch"] = str(args.dape_arch)
        return {"kind": "official", **kw}, None
    weights = args.weights or (Path(os.environ["SEESR_WEIGHTS"]) if os.environ.get("SEESR_WEIGHTS") else None)
    if weights is None:
        return None, "No SeeSR weights were given."
    if not Path(weights).is_dir():
        return None, f"Weights folder not found: {weights}."
    return {"kind": "pretrained", "path": str(weights)}, None


def _device_dtype(device: str, dtype: str) -> tuple[str, object]:
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            device = "cuda"
        elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            device = "mps"
        else:
            device = "cpu"
    if dtype == "auto":
        dtype = "fp32" if device == "cpu" else "fp16"
    return device, {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[dtype]


def load_pipeline(spec: dict[str, str], device: str, dtype: object) -> object:
    """Load the SeeSRPipeline named by :func:`resolve_weights` (the CLI's own loaders; no second path)."""
    from seesr.pipeline.pipeline import SeeSRPipeline

    kw = dict(spec)
    kind = kw.pop("kind")
    if kind == "pretrained":
        return SeeSRPipeline.from_pretrained(kw["path"], device=device, dtype=dtype)
    return SeeSRPipeline.from_official(**kw, device=device, dtype=dtype)


def _example_files(paths: list[Path]) -> list[Path]:
    exts = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}
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
    from seesr.ui.app import WEIGHTS_HELP, build_app

    spec, problem = resolve_weights(args)
    pipeline = None
    load_error = None
    if spec is None:
        load_error = f"{problem} {WEIGHTS_HELP}"
    else:
        device, dtype = _device_dtype(args.device, args.dtype)
        print(
            f"seesr ui: loading weights on {device} ({str(dtype).removeprefix('torch.')})…", file=sys.stderr
        )
        try:
            pipeline = load_pipeline(spec, device, dtype)
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
    )
    if args.share:
        print(
            "seesr ui: --share given: the app will also be reachable through a public link", file=sys.stderr
        )
    app.launch(
        server_name=args.host,
        server_port=args.port,
        share=bool(args.share),
        ssr_mode=False,
        css=app.seesr_css,
        max_file_size="200mb",
        footer_links=[],
    )
    return 0
