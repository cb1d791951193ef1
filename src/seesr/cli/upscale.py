"""`seesr upscale INPUT... -o OUTDIR`: batch super-resolution (argument parsing and batch policy only).

Flow: resolve the run settings (:mod:`seesr.run.settings`: defaults < ``--from-json`` sidecar < ``--preset`` <
explicit flags), list the inputs, plan every output (collisions and input==output refused), check every input's
header (:mod:`seesr.run.guard`) — all before the weights are loaded — then run the pipeline image by image
(:func:`seesr.run.job.upscale_image`). A bad file prints ``path: reason`` and the run carries on; the exit code
is 1 when anything failed. Each output gets a sidecar JSON with everything needed to re-run it (``--from-json``).

Weights (:mod:`seesr.run.sources`): ``--weights DIR``, else the official parts (``--sd2 --seesr --ram --dape``),
else ``SEESR_WEIGHTS``, else the default folder of ``seesr download``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from seesr.cli import upscale_tiles
from seesr.cli.upscale_batch import _emit
from seesr.cli.upscale_flags import SAMPLING_FLAGS, TILING_FLAGS, add_arguments
from seesr.run.sources import NO_WEIGHTS, OFFICIAL_PARTS  # noqa: F401 - NO_WEIGHTS re-exported for tests

logger = logging.getLogger(__name__)


# flag dest -> SamplingConfig field
def register(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(
        name,
        help="super-resolve images (x4 by default)",
        description="Super-resolve image files, folders (recursive) or globs into OUTDIR. Writes NAME.png "
        "(or --format) plus NAME.json with the settings. Existing outputs are skipped unless --overwrite.",
    )
    add_arguments(p)
    p.set_defaults(run=run)


# ----------------------------------------------------------------------------------------------------------
# settings


# ----------------------------------------------------------------------------------------------------------
# weights and pipeline


@dataclasses.dataclass
class _Run:
    """The resolved settings of one ``seesr upscale`` call."""

    inputs: list[str]
    sampling: Any
    tiling: Any
    sample_times: int
    fmt: str
    bit_depth: int
    tags: list[str] | None
    preset: str | None
    dtype: str | None


def _resolve(args: argparse.Namespace) -> _Run:
    from seesr import io
    from seesr.run.settings import parse_tags, resolve_configs
    from seesr.run.sidecar import read_sidecar

    side: dict[str, Any] = read_sidecar(args.from_json) if args.from_json else {}
    sampling_cfg, tiling_cfg = resolve_configs(
        preset=args.preset,
        sidecar=side,
        sampling={field: getattr(args, flag) for flag, field in SAMPLING_FLAGS.items()},
        tiling={flag: getattr(args, flag) for flag in TILING_FLAGS},
        tile_px=args.tile_size,
        faithful=args.faithful,
        where=args.from_json or "flags",
    )
    sample_times = args.sample_times if args.sample_times is not None else 1
    if sample_times < 1:
        raise ValueError(f"--sample-times must be >= 1, got {sample_times}")
    fmt = io.resolve_format("", args.format or side.get("format") or "png")
    bit_depth = args.bit_depth or int(side.get("bit_depth") or 8)
    io.check_output_options(fmt, has_alpha=False, bit_depth=bit_depth)
    tags: list[str] | None = None
    if args.tags is not None:
        tags = parse_tags(args.tags)
    elif side.get("tags_override"):
        tags = list(side.get("tags") or [])
    inputs = list(args.inputs) or ([side["input"]] if side.get("input") else [])
    if not inputs:
        raise ValueError("no INPUT given: pass image files, folders or globs")
    if args.batch_size is not None and args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    if (args.batch_size or 1) > 1 and getattr(args, "split", "images") == "tiles":
        raise ValueError(
            "--split tiles runs one image at a time on all the ranks together: drop --batch-size"
        )
    for flag in ("compile", "channels_last"):
        if getattr(args, flag, False) and sampling_cfg.faithful:
            raise ValueError(
                f"--{flag.replace('_', '-')} changes float round-off and --faithful is bit-for-bit: drop one of them"
            )
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


def weights_choice(args: argparse.Namespace) -> Any:
    """The :class:`seesr.run.sources.WeightsChoice` of ``args`` (shared with ``seesr ui``)."""
    from seesr.run.sources import choose_weights

    return choose_weights(
        weights=args.weights, parts={k: getattr(args, k, None) for k in OFFICIAL_PARTS}, env=os.environ
    )


@dataclasses.dataclass
class _Planner:
    """Everything a plan needs, prepared once per run (nothing is loaded)."""

    kwargs: dict[str, Any]
    pinned: frozenset[str]
    note: str
    throughput_file: Path
    throughput_key: str
    dtype_chosen: bool = False  # --dtype (or the sidecar) named a precision; "auto" did not

    def precision_hint(self, seconds: float) -> str | None:
        """:func:`seesr.run.plan.precision_hint` for this run's device and precision."""
        from seesr.run.plan import precision_hint

        return precision_hint(
            seconds,
            device_type=self.kwargs["device_type"],
            dtype_bytes=self.kwargs["dtype_bytes"],
            dtype_chosen=self.dtype_chosen,
        )

    def plan(self, size: tuple[int, int], settings: _Run, *, high_bit_depth: bool = False) -> Any:
        from seesr.run.plan import choose_plan

        return choose_plan(
            size,
            settings.sampling,
            settings.tiling,
            pinned=self.pinned,
            high_bit_depth=high_bit_depth,
            **self.kwargs,
        )

    def fit_batch(self, plan: Any, n: int, sampling: Any) -> tuple[int, Any]:
        """The most images (<= ``n``) of ``plan``'s size and tiling that fit the budget in one call, and the plan of
        that call (``plan`` itself for one image: batching never changes an image's tiling)."""
        from seesr.run.plan import plan_image

        for m in range(n, 1, -1):
            batch_plan = plan_image(plan.input_size, sampling, plan.tiling, images=m, **self.kwargs)
            if batch_plan.fits:
                return m, batch_plan
        return 1, plan


def _high_bit_depth(mode: str) -> bool:
    """Whether a Pillow mode holds more than 8 bits per sample (16-bit PNG/TIFF, 32-bit int or float)."""
    return mode in ("I", "F") or "16" in mode or "32" in mode


def _planner(args: argparse.Namespace, settings: _Run, world: Any) -> _Planner:
    from seesr.pipeline.devices import resolve_device_dtype
    from seesr.run import throughput
    from seesr.run.costs import current_rss_bytes
    from seesr.run.footprint import SD2_FOOTPRINT, footprint_of
    from seesr.run.plan import default_budget, parse_size

    device, dtype = resolve_device_dtype(args.device, settings.dtype or "auto")
    note = ""
    try:
        footprint = footprint_of(weights_choice(args))
    except (FileNotFoundError, OSError, ValueError) as err:
        footprint, note = SD2_FOOTPRINT, f" (SD-2 sizes assumed: {err})"
    # the budget is shared by the processes of this job that use the same device (or host, on the CPU)
    budget = world.share_of_budget(parse_size(args.max_memory) if args.max_memory else default_budget(device))
    pinned = {f for f in TILING_FLAGS if getattr(args, f, None) is not None}
    if args.tile_size is not None:
        pinned.add("latent_tile_size")
    if settings.sampling.faithful:
        pinned.add(
            "vae_bounded_stats"
        )  # never "sampled": the default "spill" is bit-identical to the exact mode
    cache = throughput.cache_file()
    key = throughput.key(device, dtype, footprint.signature)
    rates = throughput.load_rates(cache, key, device.type, footprint.unet_width)
    kwargs = dict(
        footprint=footprint,
        device_type=device.type,
        dtype_bytes=2 if str(dtype) in ("torch.float16", "torch.bfloat16") else 4,
        budget=budget,
        baseline=current_rss_bytes(),
        rates=rates,
    )
    chosen = (settings.dtype or "auto") != "auto"
    return _Planner(kwargs, frozenset(pinned), note, cache, key, dtype_chosen=chosen)


def _load_pipeline(args: argparse.Namespace, run: _Run) -> Any:
    """Set up the weights on first use, then build the pipeline (the one place tests replace with a stub).

    Called by every process of a distributed job together (the download is a collective)."""
    from seesr.run.sources import load_pipeline, prepare

    choice = weights_choice(args)
    prepare(choice, preset=run.preset, allow_download=not args.no_download)
    return load_pipeline(
        choice, device=args.device, dtype=run.dtype or "auto", preset=run.preset, no_dape=args.no_dape
    )


def _fast_kernels(pipe: Any, args: argparse.Namespace) -> None:
    """Apply ``--channels-last`` and ``--compile`` to the loaded pipeline (the sidecar's ``kernels`` reads them
    back from the models)."""
    if args.channels_last:
        from seesr.pipeline.compile import set_channels_last

        set_channels_last(pipe, True)
    if args.compile:
        import shutil

        from seesr.pipeline.compile import compile_models

        device = str(getattr(pipe, "device", "cpu"))
        compilers = [os.environ.get("CXX", ""), "c++", "g++", "clang++"]
        if device.startswith("cpu") and not any(c and shutil.which(c) for c in compilers):
            raise ValueError(
                "--compile on the CPU needs a C++ compiler (g++ or clang++, or $CXX) on PATH; none found"
            )

        compiled = compile_models(pipe, regional=True)
        logger.info("torch.compile: %d blocks (compiled on their first call)", compiled)


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
    from seesr.run.distributed import session

    with _sigterm_as_interrupt(), session(args.device) as world:  # torchrun/accelerate: one rank's share
        args.device = world.device
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
    from seesr.run.distributed import current, processed_pixels
    from seesr.run.guard import check_input

    world = current()
    if not args.output:
        raise ValueError("pass the output folder with -o OUTDIR")
    settings = _resolve(args)
    tiles = upscale_tiles.wanted(getattr(args, "split", "images"), world, faithful=settings.sampling.faithful)
    out_dir = Path(args.output)
    inputs = io.list_inputs(settings.inputs, exclude=[out_dir]) if world.is_main else []  # rank 0 plans
    if not tiles:
        _prepare_out_dir(out_dir)
        world.check_shared_folder(out_dir)
    elif world.is_main:  # --split tiles: rank 0 alone reads the inputs and writes, so nothing need be shared
        _prepare_out_dir(out_dir)
    suffixes = [""] if settings.sample_times == 1 else [f"_s{k:02d}" for k in range(settings.sample_times)]
    plans = [
        plan_outputs(inputs, out_dir, fmt=settings.fmt, overwrite=args.overwrite, suffix=s) for s in suffixes
    ]
    max_pixels = args.max_pixels or io.DEFAULT_MAX_PIXELS
    max_out = args.max_output_pixels  # default: no fixed cap, the memory plan refuses what cannot fit

    failures: list[str] = []

    def fail(path: Path, reason: str) -> None:
        failures.append(str(path))
        _emit(f"{path}: {reason}")

    if args.plan and world.is_distributed:
        raise ValueError("--plan runs in one process: drop torchrun/accelerate launch for it")
    planner = _planner(args, settings, world)
    jobs: list[tuple[io.InputFile, list[tuple[int, OutputPlan]], Any]] = []
    costs: list[int] = []  # processed pixels, to balance the ranks
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
            info = check_input(
                item.path,
                settings.sampling,
                max_pixels=max_pixels,
                max_output_pixels=max_out,
                fmt=settings.fmt,
                bit_depth=settings.bit_depth,
            )
            plan = planner.plan(info.upright_size, settings, high_bit_depth=_high_bit_depth(info.mode))
        except (ValueError, OSError) as err:
            fail(item.path, _reason(err, item.path))
            continue
        jobs.append((item, todo, plan))
        costs.append(processed_pixels(info.width, info.height, settings.sampling) * len(todo))

    hint = planner.precision_hint(sum(plan.seconds * len(todo) for _, todo, plan in jobs))
    if hint and world.is_main:
        logger.info(hint)
    if args.plan:
        for item, _, plan in jobs:
            print(f"{item.path}: {plan.describe()}{planner.note}")
        print(f"seesr upscale --plan: {len(jobs)} to run, {skipped} skipped (exist), {len(failures)} refused")
        return 1 if failures else 0
    any_jobs = world.broadcast(bool(jobs))  # rank 0 holds the whole list; every rank loads when any works
    # every rank: its share of rank 0's plan, or with --split tiles all of it (the ranks share each image)
    jobs = world.broadcast(jobs) if tiles else world.share_jobs(jobs, costs)

    written = 0
    if any_jobs:
        try:
            pipe = _load_pipeline(args, settings)
        except MemoryError as err:
            raise ValueError(f"out of memory while loading the weights ({err}); try --dtype fp16") from None
        except RuntimeError as err:
            if type(err).__name__ != "OutOfMemoryError":
                raise
            raise ValueError(f"out of memory while loading the weights: {_reason(err, Path())}") from None
        from tqdm import tqdm

        from seesr.cli.upscale_batch import BatchRunner, make_batches

        _fast_kernels(pipe, args)
        batches = make_batches(
            jobs, args.batch_size or 1, lambda plan, n: planner.fit_batch(plan, n, settings.sampling)
        )
        runner = BatchRunner(pipe, settings, args, max_pixels, planner, fail, _reason)
        bar = tqdm(
            total=sum(len(units) for units, _ in batches),
            desc="upscale",
            unit="img",
            disable=None if world.is_main else True,
            file=sys.stderr,
        )
        try:
            reducer = world.tile_reducer() if tiles else None
            for units, plan in batches:
                bar.set_postfix_str(units[0].item.path.name, refresh=False)
                if reducer is None:
                    written += runner.run(units, plan)
                else:  # --split tiles: one output per call, every rank in it
                    try:
                        written += upscale_tiles.run_unit(pipe, units[0], plan, settings=settings, args=args,
                                                          max_pixels=max_pixels, world=world, reducer=reducer,
                                                          reason=_reason)  # fmt: skip
                    except upscale_tiles.LockstepError:
                        raise
                    except ValueError as err:  # an input that cannot be read: refused on every rank
                        fail(units[0].item.path, str(err))
                bar.update(len(units))
        except KeyboardInterrupt:
            bar.close()
            print(
                f"seesr upscale: interrupted; {written} written (complete), the image in progress was not written",
                file=sys.stderr,
            )
            raise
        bar.close()
    per_rank = world.gather_at_end((written, len(failures)))  # one collective, after the loop
    written, n_failed = sum(w for w, _ in per_rank), sum(f for _, f in per_rank)
    if tiles:  # rank 0 wrote everything; a refused input was refused on every rank
        written, n_failed = per_rank[0]
    summary = f"seesr upscale: {written} written, {skipped} skipped (exist), {n_failed} failed"
    if tiles:
        summary += f"; every image's tiles split over {world.world_size} ranks"
    elif world.is_distributed:
        summary += "; per rank: " + ", ".join(
            f"{r}: {w} written, {f} failed" for r, (w, f) in enumerate(per_rank)
        )
    if world.is_main:
        print(summary)
    return 1 if n_failed else 0
