"""What the web UI of ``seesr ui`` does, without Gradio (issue 8; improves on the demo of spec §7.1, §9 item 10).

The official demo ignores its tile sliders, never seeds its generator, hides the tags and returns a black image
on any error. Here every run goes through the same :class:`~seesr.pipeline.pipeline.SeeSRPipeline` as the CLI:
uploads are decoded by :mod:`seesr.io` (pixel cap before decoding, truncated files refused), DAPE's tags can be
edited before a run, the seed and tile size are honoured, progress is reported per step, a run can be cancelled
between steps, and the result is written as a PNG plus a sidecar JSON. Failures raise; the page turns them into
one line (see :mod:`seesr.ui.app`). :class:`UIController` holds a lock so that model work runs one job at a time,
even when Gradio has already dropped a cancelled event whose worker thread is still finishing its step.

Everything a run shares with ``seesr upscale`` comes from :mod:`seesr.run`: settings resolution (tile size in
image pixels, one overlap rule), the input guard (a thin strip that would be enlarged to gigapixels is refused
before any model work), and "run one image, write image + sidecar" — so a UI result is the CLI's, byte for byte.
A session keeps only the upload's path, a bounded preview and the tags; the pixels are decoded again for a run,
so an idle session holds a few megabytes whatever the photo's size. Result folders beyond ``keep_runs`` are
deleted, and a temporary results folder is removed when the controller goes away.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import shutil
import tempfile
import threading
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from seesr.config import PRESETS, SamplingConfig, TilingConfig
from seesr.run.settings import parse_tags, resolve_configs

logger = logging.getLogger(__name__)

WEIGHTS_HELP = (
    "Start the UI with `seesr ui --weights DIR` (a folder written by `seesr download` or "
    "`SeeSRPipeline.save_pretrained`), set `SEESR_WEIGHTS`, or pass the official parts: "
    "`--sd2 --seesr --ram --dape --tag-list --thresholds`."
)


class Cancelled(Exception):
    """Raised from the pipeline's step callback when the user pressed Cancel."""


@dataclasses.dataclass
class InputImage:
    """One upload, kept in the page's session state (bounded: no full-size pixels are kept).

    Attributes:
        name: file name shown to the user and used for the download names.
        path: where the upload lies (decoded again by :mod:`seesr.io` for each run).
        size: (width, height) of the upright image in pixels.
        preview: (h, w, 3) uint8 thumbnail, long side <= 1024.
        warnings: decoder notes worth showing.
        auto_tags: DAPE's tags for this image (empty until extracted).
    """

    name: str
    path: Path
    size: tuple[int, int]
    preview: np.ndarray
    warnings: tuple[str, ...] = ()
    auto_tags: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class RunOutput:
    """What one run hands back to the page."""

    before: np.ndarray  # (h,w,3) uint8: the input resized (bicubic) to the slider's size
    after: np.ndarray  # (h,w,3) uint8: the super-resolved image at the slider's size (long side <= max_side)
    image_path: Path
    sidecar_path: Path
    prompt: str
    tags: list[str]
    seconds: float


def to_uint8(rgb: np.ndarray) -> np.ndarray:
    """(H,W,3) float in [0,1] -> uint8 with rounding (the pipeline's output convention, spec §9 item 22); uint8
    codes pass through and uint16 codes are rounded to 8 bits."""
    rgb = np.asarray(rgb)
    if rgb.dtype == np.uint8:
        return rgb
    if rgb.dtype == np.uint16:
        return ((rgb.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    return np.clip(np.rint(np.asarray(rgb, dtype=np.float32) * 255.0), 0, 255).astype(np.uint8)


def make_configs(
    *,
    preset: str,
    steps: int | float,
    guidance: float,
    seed: int | float,
    scale: float,
    color_fix: str,
    tile_size: int | float,
    prompt: str,
    negative_prompt: str,
    base: SamplingConfig | None = None,
) -> tuple[SamplingConfig, TilingConfig]:
    """Turn the page's knobs into the run configs; invalid values raise ``ValueError`` naming them.

    ``tile_size`` is in image pixels, as ``seesr upscale --tile-size``. Precedence as in the CLI
    (:func:`seesr.run.settings.resolve_configs`): ``base`` (fields without a knob) < the preset < the knobs.
    """
    try:
        steps_i, seed_i, tile_i = int(steps), int(seed), int(tile_size)
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"steps, seed and tile size must be integers; got {steps!r}, {seed!r}, {tile_size!r}"
        ) from err
    if seed_i < 0 or seed_i > 2**63 - 1:
        raise ValueError(f"seed must be in [0, 2^63-1]; got {seed_i}")
    knobs: dict[str, Any] = {
        "num_inference_steps": steps_i,
        "guidance_scale": float(guidance),
        "upscale": float(scale),
        "color_fix": color_fix,
        "prompt": prompt or "",
        "negative_prompt": negative_prompt or "",
        "seed": seed_i,
    }
    return resolve_configs(preset=preset, sampling=knobs, tile_px=tile_i, base=base, where="page")


def preset_knobs(preset: str, defaults: SamplingConfig) -> tuple[int, float]:
    """(steps, guidance) the page shows after choosing ``preset``: its overrides, else ``defaults``."""
    over = PRESETS.get(preset, ({}, {}))[0]
    return (
        int(over.get("num_inference_steps", defaults.num_inference_steps)),
        float(over.get("guidance_scale", defaults.guidance_scale)),
    )


def preview_u8(rgb: np.ndarray, max_side: int = 1024) -> np.ndarray:
    """(H,W,3) float [0,1] -> uint8 thumbnail whose long side is at most ``max_side`` (page preview only)."""
    img = to_uint8(rgb)
    h, w = img.shape[:2]
    if max(h, w) <= max_side:
        return img
    s = max_side / max(h, w)
    return _resize_u8(img, (max(1, round(w * s)), max(1, round(h * s))))


def _resize_u8(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bicubic resize of an (H,W,3) uint8 image to ``size`` = (width, height), for the 'before' view only."""
    from PIL import Image

    if (img.shape[1], img.shape[0]) == size:
        return img
    return np.asarray(Image.fromarray(img).resize(size, Image.BICUBIC))


def _remove_tree(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)


def _safe_stem(name: str) -> str:
    stem = Path(name).stem or "image"
    return re.sub(r"[^\w.-]+", "_", stem)[:80] or "image"


class UIController:
    """The UI's behaviour, independent of Gradio.

    Args:
        pipeline: a loaded pipeline (anything with ``extract_tags(image)`` and ``__call__(image, sampling=,
            tiling=, tags=, callback=, show_progress=)`` as :class:`SeeSRPipeline`), or a zero-argument factory
            returning one (called on first use; its error is shown in the page), or ``None`` without weights.
        load_error: message shown instead of running when ``pipeline`` is ``None``.
        output_dir: where result files are written (a temporary folder, removed with the controller, by default).
        max_input_pixels: input pixel cap, checked before decoding.
        max_output_pixels: output (and processing) pixel cap, checked before any model work (default none:
            the memory plan refuses what cannot fit the budget).
        keep_runs: result folders kept; older ones are deleted (the downloads of a page are the newest runs).
        dtype_requested: the ``--dtype`` the weights were loaded with, recorded in the sidecar as the CLI does.
        max_side: long side of the arrays handed to the before/after slider (the full result is the download).
        max_memory: memory budget in bytes (default: the CLI's, a share of the device's total memory).
    """

    def __init__(
        self,
        pipeline: Any | Callable[[], Any] | None,
        *,
        load_error: str | None = None,
        output_dir: str | os.PathLike[str] | None = None,
        max_input_pixels: int | None = None,
        max_output_pixels: int | None = None,
        keep_runs: int = 20,
        dtype_requested: str = "auto",
        max_side: int = 2048,
        max_memory: int | None = None,
    ) -> None:
        from seesr import io as sio

        if pipeline is not None and hasattr(pipeline, "extract_tags"):
            self._pipeline, self._factory = pipeline, None
        elif callable(pipeline):
            self._pipeline, self._factory = None, pipeline
        elif pipeline is None:
            self._pipeline, self._factory = None, None
        else:
            raise ValueError(
                f"pipeline must be a SeeSRPipeline, a factory returning one, or None; got {pipeline!r}"
            )
        if keep_runs < 1:
            raise ValueError(f"keep_runs must be >= 1, got {keep_runs}")
        self.load_error = load_error if pipeline is None else None
        if pipeline is None and not self.load_error:
            self.load_error = "No SeeSR weights were given. " + WEIGHTS_HELP
        if output_dir:
            self.output_dir = Path(output_dir)
        else:
            self.output_dir = Path(tempfile.mkdtemp(prefix="seesr-ui-"))
            weakref.finalize(self, _remove_tree, str(self.output_dir))
        # The CLI's caps by default, so the UI refuses exactly what `seesr upscale` refuses: the input cap of
        # seesr.io (checked before decoding) and no fixed output cap — the memory plan refuses what cannot fit.
        self.max_input_pixels = int(max_input_pixels or sio.DEFAULT_MAX_PIXELS)
        self.max_output_pixels = int(max_output_pixels) if max_output_pixels else None
        self.keep_runs = keep_runs
        self.dtype_requested = dtype_requested
        self.max_side = max_side
        self.max_memory = max_memory
        # One model job at a time, even when Gradio has already dropped a cancelled event.
        self._model_lock = threading.Lock()
        self._cancel: dict[str, threading.Event] = {}
        self._run_counter = 0
        self._runs: list[Path] = []

    # -- weights ---------------------------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """False when the page can only show why the weights are missing."""
        return self.load_error is None

    def pipeline(self) -> Any:
        """The loaded pipeline; the factory is called once, on first use. Raises ``RuntimeError`` with the
        weights message when there is none."""
        if self._pipeline is None:
            if self._factory is None or self.load_error is not None:
                raise RuntimeError(self.load_error or WEIGHTS_HELP)
            try:
                self._pipeline = self._factory()
            except (FileNotFoundError, ValueError, OSError, ImportError) as err:
                self.load_error = f"Could not load the SeeSR weights: {err}. {WEIGHTS_HELP}"
                raise RuntimeError(self.load_error) from err
        return self._pipeline

    # -- input -----------------------------------------------------------------------------------------------

    def _decode(self, path: Path) -> Any:
        from seesr.io import load_image

        return load_image(path, max_pixels=self.max_input_pixels)

    def load(self, path: str | os.PathLike[str]) -> InputImage:
        """Decode an upload with :func:`seesr.io.load_image` (pixel cap before decoding, truncated files refused)
        and keep only what the page needs (path, size, preview, warnings).

        Raises:
            ValueError / FileNotFoundError: from :mod:`seesr.io`, with a message naming the file and the problem.
        """
        path = Path(path)
        loaded = self._decode(path)
        rgb = loaded.rgb
        if rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"{path.name}: expected an (H,W,3) image from seesr.io, got shape {rgb.shape}")
        return InputImage(
            name=path.name,
            path=path,
            size=loaded.size,
            preview=preview_u8(rgb),
            warnings=tuple(loaded.warnings),
        )

    def extract_tags(self, image: InputImage) -> list[str]:
        """DAPE's tags for ``image`` (the same call the pipeline makes when no tags are given)."""
        from seesr.run.job import image_tensor

        tensor = image_tensor(self._decode(image.path).rgb)
        with self._model_lock:
            tags = list(self.pipeline().extract_tags(tensor))
        image.auto_tags = tags
        return tags

    # -- plan ------------------------------------------------------------------------------------------------

    def plan(self, image: InputImage, sampling: SamplingConfig, tiling: TilingConfig) -> Any:
        """The run's :class:`seesr.run.plan.Plan` (as ``seesr upscale --plan`` makes it), or ``None`` for a
        stand-in pipeline without SD modules.

        Raises:
            ValueError: even the smallest settings exceed the memory budget.
        """
        from seesr.run.costs import current_rss_bytes
        from seesr.run.footprint import footprint_of_pipeline
        from seesr.run.plan import RUNTIME_OVERHEAD, choose_plan, default_budget

        pipe = self.pipeline()
        try:
            footprint = footprint_of_pipeline(pipe)
            device = pipe.device
            dtype_bytes = int(pipe.unet.dtype.itemsize)
        except AttributeError:
            return None
        weights = footprint.weights_bytes(dtype_bytes)
        # the weights are loaded already: the baseline is what the process held before them
        baseline = max(0, current_rss_bytes() - RUNTIME_OVERHEAD - (weights if device.type == "cpu" else 0))
        return choose_plan(
            image.size,
            sampling,
            tiling,
            footprint=footprint,
            device_type=device.type,
            dtype_bytes=dtype_bytes,
            budget=self.max_memory or default_budget(device),
            baseline=baseline,
        )

    def precision_hint(self, plan: Any) -> str | None:
        """:func:`seesr.run.plan.precision_hint` for ``plan`` with the loaded pipeline's device and precision."""
        from seesr.run.plan import precision_hint

        pipe = self.pipeline()
        return precision_hint(
            plan.seconds,
            device_type=pipe.device.type,
            dtype_bytes=int(pipe.unet.dtype.itemsize),
            dtype_chosen=self.dtype_requested != "auto",
        )

    # -- run -------------------------------------------------------------------------------------------------

    def cancel(self, session: str = "") -> bool:
        """Ask the running job of ``session`` to stop at its next step. Returns whether one was running."""
        event = self._cancel.get(session)
        if event is None:
            return False
        event.set()
        return True

    def run(
        self,
        image: InputImage,
        *,
        tags: Sequence[str] | str | None,
        sampling: SamplingConfig,
        tiling: TilingConfig,
        preset: str = "default",
        progress: Callable[[int, int], None] | None = None,
        session: str = "",
    ) -> RunOutput:
        """Upscale ``image`` with the page's tags and configs; write the PNG and its sidecar JSON.

        Args:
            tags: the edited tags; the DAPE tags unchanged (or ``None``) let the pipeline tag the image itself.
            progress: called with (step, total) after each denoising step.
            session: key under which :meth:`cancel` finds this job.

        Raises:
            ValueError: output or processing size too large, or invalid settings. Cancelled: the user pressed
            Cancel.
        """
        from seesr.run.guard import check_size
        from seesr.run.job import OutputTarget, upscale_image

        w, h = image.size
        check_size(w, h, sampling, self.max_output_pixels)  # before any model work, as the CLI
        edited = parse_tags(tags) if tags is not None else None
        # Unedited tags go through the pipeline's own DAPE path, so the UI run equals a CLI run without --tags.
        pass_tags = None if edited is None or edited == image.auto_tags else edited

        event = threading.Event()
        self._cancel[session] = event

        def on_step(step: int, total: int) -> None:
            if event.is_set():
                raise Cancelled()
            if progress is not None:
                progress(step, total)

        try:
            with self._model_lock:
                if event.is_set():
                    raise Cancelled()
                pipe = self.pipeline()
                plan = self.plan(image, sampling, tiling)
                if plan is not None:
                    tiling = plan.tiling
                loaded = self._decode(image.path)
                folder, stem = self._next_run_folder(image, sampling)
                job = upscale_image(
                    pipe,
                    loaded,
                    OutputTarget(image=folder / f"{stem}.png", sidecar=folder / f"{stem}.json"),
                    sampling=sampling,
                    tiling=tiling,
                    tags=pass_tags,
                    preset=preset,
                    input_name=image.name,
                    callback=on_step,
                    extra={
                        "sample_index": 0,
                        "dtype_requested": self.dtype_requested,
                        **({"plan": plan.as_record()} if plan is not None else {}),
                    },
                )
        finally:
            # A cancelled job's thread can still be finishing while the session's next job is registered.
            if self._cancel.get(session) is event:
                del self._cancel[session]
        after = preview_u8(job.sr, self.max_side)
        before = _resize_u8(preview_u8(loaded.rgb, self.max_side), (after.shape[1], after.shape[0]))
        del loaded, job.sr
        self._forget_old_runs()
        return RunOutput(
            before=before,
            after=after,
            image_path=folder / f"{stem}.png",
            sidecar_path=folder / f"{stem}.json",
            prompt=job.prompt,
            tags=job.tags,
            seconds=job.seconds,
        )

    def _next_run_folder(self, image: InputImage, sampling: SamplingConfig) -> tuple[Path, str]:
        self._run_counter += 1
        stem = f"{_safe_stem(image.name)}_x{sampling.upscale:g}_seed{sampling.seed}_{self._run_counter:03d}"
        folder = self.output_dir / f"run{self._run_counter:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        self._runs.append(folder)
        return folder, stem

    def _forget_old_runs(self) -> None:
        while len(self._runs) > self.keep_runs:
            _remove_tree(str(self._runs.pop(0)))
