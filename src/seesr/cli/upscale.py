"""`seesr upscale INPUT... -o OUTDIR`: batch super-resolution (issue 4 part 3; spec §1.1 for the knobs).

Flow: resolve the run settings (defaults < ``--from-json`` sidecar < ``--preset`` < explicit flags), list the
inputs, plan every output (collisions and input==output refused), check every input's header (pixel caps,
alpha vs. format) — all before the weights are loaded — then run the pipeline image by image. A bad file
prints ``path: reason`` and the run carries on; the exit code is 1 when anything failed. Each output gets a
sidecar JSON with everything needed to re-run it (``--from-json``).

Weights: ``--weights DIR`` (``save_pretrained`` / ``seesr download`` folder), else the official parts
(``--sd2 --seesr --ram --dape ...``) when any is given, else the ``SEESR_WEIGHTS`` environment variable.
Explicit flags beat the environment so that a stale variable never silently overrides what was typed.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from seesr.config import PRESETS  # one preset table for the CLI and the UI

logger = logging.getLogger(__name__)

NO_WEIGHTS = (
    "no weights: pass --weights DIR (made by `seesr download DIR`) or set SEESR_WEIGHTS, "
    "or give the official parts --sd2 --seesr --ram --dape (and --tag-list --thresholds)"
)

# flag dest -> SamplingConfig field
_SAMPLING_FLAGS = {
    "prompt": "prompt",
    "added_prompt": "added_prompt",
    "negative_prompt": "negative_prompt",
    "guidance_scale": "guidance_scale",
    "conditioning_scale": "conditioning_scale",
    "steps": "num_inference_steps",
    "process_size": "process_size",
    "upscale": "upscale",
    "seed": "seed",
    "color_fix": "color_fix",
    "start_point": "start_point",
    "start_timestep": "start_timestep",
    "scheduler": "scheduler",
    "timestep_spacing": "timestep_spacing",
}
_TILING_FLAGS = ("latent_tile_size", "latent_tile_overlap", "vae_encoder_tile_size", "vae_decoder_tile_size")
_OFFICIAL_PARTS = ("sd2", "seesr", "ram", "dape", "tag_list", "thresholds", "dape_arch", "turbo_unet")


def _start_timestep(value: str) -> int | str:
    if value == "first":
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an integer in [0, 999] or 'first', got {value!r}"
        ) from None


def _color_fix(value: str) -> str:
    value = value.lower()
    return "none" if value == "nofix" else value  # "nofix" is the official spelling


def register(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(
        name,
        help="super-resolve images (x4 by default)",
        description="Super-resolve image files, folders (recursive) or globs into OUTDIR. Writes NAME.png "
        "(or --format) plus NAME.json with the settings. Existing outputs are skipped unless --overwrite.",
    )
    p.add_argument("inputs", nargs="*", metavar="INPUT", help="image files, folders or globs")
    p.add_argument("-o", "--output", "--output-dir", dest="output", metavar="OUTDIR", help="output folder")

    w = p.add_argument_group("weights")
    w.add_argument("--weights", metavar="DIR", help="folder from `seesr download` / save_pretrained")
    w.add_argument("--sd2", help="SD-2-base folder or hub id (official layout)")
    w.add_argument("--seesr", help="SeeSR folder with unet/ and controlnet/")
    w.add_argument("--ram", help="ram_swin_large_14m.pth")
    w.add_argument("--dape", help="DAPE.pth")
    w.add_argument("--tag-list", dest="tag_list", help="RAM tag list (ram_tag_list.txt)")
    w.add_argument("--thresholds", help="RAM per-class thresholds (ram_tag_list_threshold.txt)")
    w.add_argument("--dape-arch", dest="dape_arch", help="DAPE architecture config (optional)")
    w.add_argument("--turbo-unet", dest="turbo_unet", help="sd-turbo folder for --preset turbo")

    s = p.add_argument_group("sampling (defaults: the official test_seesr.py)")
    s.add_argument("--preset", choices=sorted(PRESETS), help="named settings; explicit flags override it")
    s.add_argument("--faithful", action="store_true", default=None, help="reproduce every official quirk")
    s.add_argument("--prompt", help="user text after the tags (default empty)")
    s.add_argument(
        "--added-prompt", dest="added_prompt", help="appended text (default 'clean, high-resolution, 8k')"
    )
    s.add_argument("--negative-prompt", dest="negative_prompt", help="CFG negative text")
    s.add_argument("--guidance-scale", dest="guidance_scale", type=float, help="CFG weight (default 5.5)")
    s.add_argument(
        "--conditioning-scale", dest="conditioning_scale", type=float, help="ControlNet scale (1.0)"
    )
    s.add_argument("--steps", "--num-inference-steps", dest="steps", type=int, help="denoising steps (50)")
    s.add_argument("--process-size", dest="process_size", type=int, help="minimum processed side (512)")
    s.add_argument("--upscale", "--scale", dest="upscale", type=float, help="output scale factor (4)")
    s.add_argument("--seed", type=int, help="seed of each image's generator (42)")
    s.add_argument(
        "--sample-times", dest="sample_times", type=int, help="samples per image (1); seeds seed+k"
    )
    s.add_argument(
        "--color-fix",
        "--align-method",
        dest="color_fix",
        type=_color_fix,
        choices=["adain", "wavelet", "none"],
    )
    s.add_argument("--start-point", dest="start_point", choices=["lr", "noise"], help="LR embedding or noise")
    s.add_argument("--start-timestep", dest="start_timestep", type=_start_timestep, help="999 or 'first'")
    s.add_argument("--scheduler", help="ddpm (default), ddim, dpmsolver++, unipc, euler")
    s.add_argument("--timestep-spacing", dest="timestep_spacing", choices=["leading", "trailing", "linspace"])
    s.add_argument("--tags", help="comma-separated tags replacing DAPE's (e.g. 'dog, grass')")
    s.add_argument(
        "--from-json", dest="from_json", metavar="SIDECAR", help="re-run with a sidecar's settings"
    )

    t = p.add_argument_group("tiling")
    t.add_argument(
        "--tile-size", dest="tile_size", type=int, help="latent diffusion tile in pixels (x8 latents)"
    )
    t.add_argument(
        "--latent-tile-size",
        "--latent-tiled-size",
        dest="latent_tile_size",
        type=int,
        help="latent tile (96)",
    )
    t.add_argument(
        "--latent-tile-overlap",
        "--latent-tiled-overlap",
        dest="latent_tile_overlap",
        type=int,
        help="latent overlap (32)",
    )
    t.add_argument(
        "--vae-encoder-tile-size",
        "--vae-encoder-tiled-size",
        dest="vae_encoder_tile_size",
        type=int,
        help="pixels (1024)",
    )
    t.add_argument(
        "--vae-decoder-tile-size",
        "--vae-decoder-tiled-size",
        dest="vae_decoder_tile_size",
        type=int,
        help="latent px (224)",
    )

    r = p.add_argument_group("runtime and files")
    r.add_argument("--device", help="auto (default), cpu, cuda, cuda:N, mps")
    r.add_argument("--dtype", choices=["auto", "fp32", "fp16", "bf16"], help="auto: fp16 on CUDA, else fp32")
    r.add_argument("--format", help="output format: png (default), jpg, webp (lossless), tif")
    r.add_argument("--bit-depth", dest="bit_depth", type=int, choices=[8, 16], help="output bits (8)")
    r.add_argument("--overwrite", action="store_true", help="replace existing outputs (never an input)")
    r.add_argument("--allow-truncated", dest="allow_truncated", action="store_true", help="accept cut files")
    r.add_argument(
        "--max-pixels", dest="max_pixels", type=int, help="input pixel cap, checked before decoding"
    )
    r.add_argument("--max-output-pixels", dest="max_output_pixels", type=int, help="output pixel cap")
    r.add_argument("--save-prompts", dest="save_prompts", action="store_true", help="also write txt/NAME.txt")
    p.set_defaults(run=run)


# ----------------------------------------------------------------------------------------------------------
# settings


@dataclasses.dataclass
class _Run:
    inputs: list[str]
    sampling: Any
    tiling: Any
    sample_times: int
    fmt: str
    bit_depth: int
    tags: list[str] | None
    preset: str | None
    dtype: str | None


def _read_sidecar(path: str) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"sidecar not found: {p}")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{p}: not a JSON sidecar ({err})") from None
    if not isinstance(data, dict) or not isinstance(data.get("sampling"), dict):
        raise ValueError(f"{p}: not a seesr sidecar (no 'sampling' settings)")
    return data


def _resolve(args: argparse.Namespace) -> _Run:
    from seesr import io
    from seesr.config import SamplingConfig, TilingConfig, config_from_dict

    sampling: dict[str, Any] = {}
    tiling: dict[str, Any] = {}
    side: dict[str, Any] = {}
    if args.from_json:
        side = _read_sidecar(args.from_json)
        sampling.update(side["sampling"])
        tiling.update(side.get("tiling") or {})
    if args.preset:
        s_over, t_over = PRESETS[args.preset]
        sampling.update(s_over)
        tiling.update(t_over)
    if args.faithful:
        sampling["faithful"] = True
        tiling.setdefault("latent_tile_overlap", 4)
    for flag, field in _SAMPLING_FLAGS.items():
        value = getattr(args, flag)
        if value is not None:
            sampling[field] = value
    if args.tile_size is not None:
        if args.tile_size < 64 or args.tile_size % 8:
            raise ValueError(f"--tile-size must be a multiple of 8 and >= 64 pixels, got {args.tile_size}")
        tiling["latent_tile_size"] = args.tile_size // 8
    for flag in _TILING_FLAGS:
        if getattr(args, flag) is not None:
            tiling[flag] = getattr(args, flag)
    size = tiling.get("latent_tile_size", TilingConfig.latent_tile_size)
    overlap = tiling.get("latent_tile_overlap", TilingConfig.latent_tile_overlap)
    if args.latent_tile_overlap is None and overlap >= size:
        tiling["latent_tile_overlap"] = size // 4  # keep the >= 25 % overlap rule for small tiles
    where = args.from_json or "flags"
    sampling_cfg = config_from_dict(SamplingConfig, sampling, where=f"{where}: sampling")
    tiling_cfg = config_from_dict(TilingConfig, tiling, where=f"{where}: tiling")

    sample_times = args.sample_times if args.sample_times is not None else 1
    if sample_times < 1:
        raise ValueError(f"--sample-times must be >= 1, got {sample_times}")
    fmt = io.resolve_format("", args.format or side.get("format") or "png")
    bit_depth = args.bit_depth or int(side.get("bit_depth") or 8)
    io.check_output_options(fmt, has_alpha=False, bit_depth=bit_depth)
    tags: list[str] | None = None
    if args.tags is not None:
        tags = [t.strip() for t in args.tags.split(",") if t.strip()]
    elif side.get("tags_override"):
        tags = list(side.get("tags") or [])
    inputs = list(args.inputs) or ([side["input"]] if side.get("input") else [])
    if not inputs:
        raise ValueError("no INPUT given: pass image files, folders or globs")
    if args.max_pixels is not None and args.max_pixels < 1:
        raise ValueError(f"--max-pixels must be >= 1, got {args.max_pixels}")
    if args.max_output_pixels is not None and args.max_output_pixels < 1:
        raise ValueError(f"--max-output-pixels must be >= 1, got {args.max_output_pixels}")
    return _Run(
        inputs=inputs,
        sampling=sampling_cfg,
        tiling=tiling_cfg,
        sample_times=sample_times,
        fmt=fmt,
        bit_depth=bit_depth,
        tags=tags,
        preset=args.preset,
        dtype=args.dtype or side.get("dtype_requested"),
    )


# ----------------------------------------------------------------------------------------------------------
# weights and pipeline


def _weights_source(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    """("pretrained", {"path"}) or ("official", {part: path}); raises `WeightsError` with `NO_WEIGHTS`."""
    from seesr.errors import WeightsError

    parts = {k: getattr(args, k) for k in _OFFICIAL_PARTS if getattr(args, k) is not None}
    if args.weights and parts:
        raise ValueError(
            f"pass either --weights or the official parts ({', '.join(sorted(parts))}), not both"
        )
    if args.weights:
        if not Path(args.weights).is_dir():
            raise WeightsError(
                f"--weights {args.weights}: folder not found (make one with `seesr download DIR`)"
            )
        return "pretrained", {"path": args.weights}
    if parts:
        missing = [f"--{k}" for k in ("sd2", "seesr") if k not in parts]
        if missing:
            raise WeightsError(f"official weights incomplete: also pass {' '.join(missing)}")
        return "official", {k: parts.get(k) for k in _OFFICIAL_PARTS}
    env = os.environ.get("SEESR_WEIGHTS")
    if env:
        if not Path(env).is_dir():
            raise WeightsError(f"SEESR_WEIGHTS={env}: folder not found (make one with `seesr download DIR`)")
        return "pretrained", {"path": env}
    raise WeightsError(NO_WEIGHTS)


def _device_dtype(device: str | None, dtype: str | None) -> tuple[Any, Any]:
    import torch

    if device in (None, "auto"):
        if torch.cuda.is_available():
            device = "cuda"
        elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            device = "mps"
        else:
            device = "cpu"
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ValueError(
            f"--device {device}: unknown device; expected auto, cpu, cuda, cuda:N or mps"
        ) from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: CUDA is not available here (torch {torch.__version__})")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError(f"--device {device}: MPS is not available here")
    table = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    if dtype in (None, "auto"):
        dt = torch.float16 if dev.type == "cuda" else torch.float32
    else:
        dt = table[dtype]
    return dev, dt


def _load_pipeline(args: argparse.Namespace, run: _Run) -> Any:
    """Build the SeeSR pipeline from the weights flags (the one place tests replace with a stub)."""
    kind, where = _weights_source(args)
    device, dtype = _device_dtype(args.device, run.dtype)
    from seesr.pipeline.pipeline import SeeSRPipeline

    if kind == "pretrained":
        extra = {"turbo": True} if run.preset == "turbo" else {}  # the folder's sd-turbo UNet
        return SeeSRPipeline.from_pretrained(where["path"], device=device, dtype=dtype, **extra)
    return SeeSRPipeline.from_official(**where, device=device, dtype=dtype)


# ----------------------------------------------------------------------------------------------------------
# the batch


def _versions() -> dict[str, str]:
    import importlib.metadata as md
    import platform

    out = {"python": platform.python_version()}
    for name in ("seesr", "torch", "diffusers", "transformers", "numpy", "pillow"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = "not installed"
    return out


def _reason(err: BaseException, path: Path) -> str:
    msg = str(err) or type(err).__name__
    prefix = f"{path}: "
    if msg.startswith(prefix):
        msg = msg[len(prefix) :]
    if type(err).__name__ == "OutOfMemoryError" or isinstance(err, MemoryError):
        msg = f"out of memory ({msg.splitlines()[0]}); try a smaller --tile-size or --dtype fp16"
    elif not isinstance(err, (ValueError, OSError)):
        msg = f"{type(err).__name__}: {msg}"
    return msg.splitlines()[0] if msg else type(err).__name__


def _prepare_out_dir(out: Path) -> None:
    import tempfile

    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"output folder {out} exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as err:
        raise PermissionError(
            f"output folder {out} cannot be created or written ({err.strerror or err})"
        ) from None


def run(args: argparse.Namespace) -> int:
    with _sigterm_as_interrupt():
        return _run(args)


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Treat SIGTERM (``kill``, ``timeout``, container stop) like Ctrl-C so temp files are cleaned up."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGTERM"):
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _run(args: argparse.Namespace) -> int:
    from seesr import io
    from seesr.cli.outputs import OutputPlan, plan_outputs

    if not args.output:
        raise ValueError("pass the output folder with -o OUTDIR")
    settings = _resolve(args)
    out_dir = Path(args.output)
    inputs = io.list_inputs(settings.inputs, exclude=[out_dir])
    _prepare_out_dir(out_dir)
    suffixes = [""] if settings.sample_times == 1 else [f"_s{k:02d}" for k in range(settings.sample_times)]
    plans = [
        plan_outputs(inputs, out_dir, fmt=settings.fmt, overwrite=args.overwrite, suffix=s) for s in suffixes
    ]
    max_pixels = args.max_pixels or io.DEFAULT_MAX_PIXELS
    max_out = args.max_output_pixels or io.DEFAULT_MAX_OUTPUT_PIXELS
    scale = settings.sampling.upscale

    failures: list[str] = []

    def fail(path: Path, reason: str) -> None:
        failures.append(str(path))
        _emit(f"{path}: {reason}")

    jobs: list[tuple[io.InputFile, list[tuple[int, OutputPlan]]]] = []
    skipped = 0
    for i, item in enumerate(inputs):
        mine = [(k, p[i]) for k, p in enumerate(plans)]
        errors = [p.error for _, p in mine if p.error]
        if errors:
            fail(item.path, errors[0])
            continue
        todo = [(k, p) for k, p in mine if not p.exists]
        if not todo:
            skipped += 1
            logger.info(
                "%s: skipped, %s exists (pass --overwrite to replace it)", item.path, mine[0][1].output
            )
            continue
        try:
            info = io.probe_image(item.path, max_pixels=max_pixels)
            if info.n_frames > 1 and info.format != "MPO":
                raise ValueError(f"multi-frame {info.format} ({info.n_frames} frames) is not supported")
            ow, oh = round(info.width * scale), round(info.height * scale)
            if ow * oh > max_out:
                raise ValueError(
                    f"output would be {ow}x{oh} = {ow * oh} pixels, over the output cap of {max_out} "
                    "(--max-output-pixels); not processed"
                )
            _check_processing_size(info.width, info.height, settings.sampling, max_out)
            io.check_output_options(settings.fmt, has_alpha=info.has_alpha, bit_depth=settings.bit_depth)
        except (ValueError, OSError) as err:
            fail(item.path, _reason(err, item.path))
            continue
        jobs.append((item, todo))

    written = 0
    if jobs:
        try:
            pipe = _load_pipeline(args, settings)
        except MemoryError as err:
            raise ValueError(f"out of memory while loading the weights ({err}); try --dtype fp16") from None
        except RuntimeError as err:
            if type(err).__name__ != "OutOfMemoryError":
                raise
            raise ValueError(f"out of memory while loading the weights: {_reason(err, Path())}") from None
        from tqdm import tqdm

        bar = tqdm(jobs, desc="upscale", unit="img", disable=None, file=sys.stderr)
        try:
            for item, todo in bar:
                bar.set_postfix_str(item.path.name, refresh=False)
                try:
                    written += _process(pipe, item, todo, settings, args, max_pixels)
                except KeyboardInterrupt:
                    raise
                except Exception as err:  # one bad image must not end the batch
                    logger.debug("failure on %s", item.path, exc_info=True)
                    fail(item.path, _reason(err, item.path))
                    _free_memory()
        except KeyboardInterrupt:
            bar.close()
            print(
                f"seesr upscale: interrupted; {written} written (complete), the image in progress was not written",
                file=sys.stderr,
            )
            raise
        bar.close()
    summary = f"seesr upscale: {written} written, {skipped} skipped (exist), {len(failures)} failed"
    print(summary)
    return 1 if failures else 0


def _check_processing_size(width: int, height: int, sampling: Any, max_out: int) -> None:
    """Refuse inputs the pipeline would have to enlarge past the output cap (e.g. 1x40000: a side under
    process_size/upscale is enlarged first, spec §1.3 step 4), before any model work."""
    from seesr.pipeline.sizing import plan_sizes

    plan = plan_sizes((width, height), sampling.upscale, sampling.process_size)
    pw, ph = plan.processed
    if pw * ph > max_out:
        raise ValueError(
            f"{width}x{height} would be processed at {pw}x{ph} = {pw * ph} pixels (sides under "
            f"process_size/upscale = {int(sampling.process_size // sampling.upscale)} px are enlarged first), "
            f"over the output cap of {max_out}; lower --process-size or pad/crop the image"
        )


def _emit(line: str) -> None:
    try:
        from tqdm import tqdm

        tqdm.write(line, file=sys.stderr)
    except ImportError:  # pragma: no cover
        print(line, file=sys.stderr)


def _utf8_writer(text: str) -> Callable[[BinaryIO], object]:
    """A ``write`` callback for ``io.atomic_write`` that writes ``text`` as UTF-8 (bound now, not at call time)."""
    data = text.encode("utf-8")
    return lambda f: f.write(data)


def _free_memory() -> None:
    import gc

    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def _accepts(fn: Any, name: str) -> bool:
    import inspect

    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def _process(
    pipe: Any,
    item: Any,
    todo: list[tuple[int, Any]],
    settings: _Run,
    args: argparse.Namespace,
    max_pixels: int,
) -> int:
    """Load one input, run every pending sample, write image + sidecar (+ prompt). Returns files written."""
    import numpy as np
    import torch
    from tqdm import tqdm

    from seesr import io
    from seesr.config import config_to_dict

    img = io.load_image(item.path, max_pixels=max_pixels, allow_truncated=args.allow_truncated)
    for note in img.warnings:
        _emit(f"{item.path}: warning: {note}")
    if img.bit_depth > settings.bit_depth:
        logger.info(
            "%s: %d-bit input written as %d-bit (--bit-depth 16 keeps more)",
            item.path,
            img.bit_depth,
            settings.bit_depth,
        )
    lr = torch.from_numpy(img.rgb).permute(2, 0, 1).unsqueeze(0).contiguous()
    extra = {"show_progress": False} if _accepts(pipe, "show_progress") else {}  # our bar replaces its own
    written = 0
    for k, plan in todo:
        sampling = dataclasses.replace(settings.sampling, seed=settings.sampling.seed + k)
        steps = tqdm(
            total=sampling.num_inference_steps, desc="  steps", leave=False, disable=None, file=sys.stderr
        )

        def callback(step: int, total: int, bar: Any = steps) -> None:
            bar.total = total
            bar.n = step
            bar.refresh()

        try:
            result = pipe(
                lr, sampling=sampling, tiling=settings.tiling, tags=settings.tags, callback=callback, **extra
            )
        finally:
            steps.close()
        sr = result.image
        if hasattr(sr, "detach"):
            sr = sr.detach().to("cpu", torch.float32)[0].permute(1, 2, 0).numpy()
        sr = np.asarray(sr, dtype=np.float32)
        h, w = sr.shape[:2]
        alpha = None if img.alpha is None else io.upscale_alpha(img.alpha, (w, h))
        plan.output.parent.mkdir(parents=True, exist_ok=True)
        io.save_image(
            plan.output,
            sr,
            alpha=alpha,
            bit_depth=settings.bit_depth,
            grey=img.is_grey,
            format=settings.fmt,
            icc_profile=img.icc_profile,
        )
        record = {
            "seesr_sidecar": 1,
            "input": str(item.path),
            "output": str(plan.output),
            "input_size": list(img.size),
            "output_size": [w, h],
            "input_bit_depth": img.bit_depth,
            "bit_depth": settings.bit_depth,
            "format": settings.fmt,
            "grey": img.is_grey,
            "alpha": img.alpha is not None,
            "icc_profile_carried": img.icc_profile is not None,
            "input_warnings": list(img.warnings),
            "preset": settings.preset,
            "seed": sampling.seed,
            "sample_index": k,
            "tags": list(result.tags),
            "tags_override": settings.tags is not None,
            "prompt": result.prompt,
            "sampling": config_to_dict(sampling),
            "tiling": config_to_dict(settings.tiling),
            "settings": result.settings,
            "device": str(getattr(pipe, "device", args.device or "auto")),
            "dtype": str(getattr(pipe, "dtype", "")),
            "dtype_requested": settings.dtype,
            "versions": _versions(),
        }
        text = json.dumps(record, indent=2, ensure_ascii=False, default=str) + "\n"
        io.atomic_write(plan.sidecar, _utf8_writer(text))
        if args.save_prompts:
            txt = plan.output.parent / "txt" / (plan.output.stem + ".txt")
            txt.parent.mkdir(parents=True, exist_ok=True)
            io.atomic_write(txt, _utf8_writer(result.prompt))
        written += 1
    return written
