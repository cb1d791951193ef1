"""What the web UI of ``seesr ui`` does, without Gradio (issue 8; improves on the demo of spec §7.1, §9 item 10).

The official demo ignores its tile sliders, never seeds its generator, hides the tags and returns a black image
on any error. Here every run goes through the same :class:`~seesr.pipeline.pipeline.SeeSRPipeline` as the CLI:
uploads are decoded by :mod:`seesr.io` (pixel cap before decoding, truncated files refused), DAPE's tags can be
edited before a run, the seed and tile size are honoured, progress is reported per step, a run can be cancelled
between steps, and the result is written as a PNG plus a sidecar JSON. Failures raise; the page turns them into
one line (see :mod:`seesr.ui.app`). :class:`UIController` holds a lock so that model work runs one job at a time,
even when Gradio has already dropped a cancelled event whose worker thread is still finishing its step.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import logging
import os
import re
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from seesr.config import PRESETS, SamplingConfig, TilingConfig, config_to_dict

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
    """One decoded upload, kept in the page's session state.

    Attributes:
        name: file name shown to the user and used for the download names.
        rgb: (H,W,3) float32 in [0,1], sRGB, EXIF-oriented (from :func:`seesr.io.load_image`).
        loaded: the full :class:`seesr.io.LoadedImage` (alpha, grey flag, ...) for saving.
        auto_tags: DAPE's tags for this image (empty until extracted).
    """

    name: str
    rgb: np.ndarray
    loaded: Any
    auto_tags: list[str] = dataclasses.field(default_factory=list)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels."""
        return int(self.rgb.shape[1]), int(self.rgb.shape[0])


@dataclasses.dataclass
class RunOutput:
    """What one run hands back to the page."""

    before: np.ndarray  # (H,W,3) uint8: the input resized to the output size (bicubic), for the slider
    after: np.ndarray  # (H,W,3) uint8: the super-resolved image
    image_path: Path
    sidecar_path: Path
    prompt: str
    tags: list[str]
    seconds: float


def to_uint8(rgb: np.ndarray) -> np.ndarray:
    """(H,W,3) float in [0,1] -> uint8 with rounding (the pipeline's output convention, spec §9 item 22)."""
    return np.clip(np.rint(np.asarray(rgb, dtype=np.float32) * 255.0), 0, 255).astype(np.uint8)


def parse_tags(text: str | Sequence[str] | None) -> list[str]:
    """Normalise the tag editor's value: split on commas, strip, drop empties and repeats (order kept)."""
    if text is None:
        return []
    items = text.split(",") if isinstance(text, str) else [s for t in text for s in str(t).split(",")]
    out: list[str] = []
    for item in items:
        tag = re.sub(r"\s+", " ", item).strip()
        if tag and tag not in out:
            out.append(tag)
    return out


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

    Order of precedence as in the CLI: ``base`` (every field without a knob: process size, added prompt,
    scheduler, ...) < the preset's overrides < the knobs.
    """
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {', '.join(PRESETS)}; got {preset!r}")
    sampling_over, tiling_over = PRESETS[preset]
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
    sampling = dataclasses.replace(base or SamplingConfig(), **{**sampling_over, **knobs})
    if "latent_tile_overlap" in tiling_over:
        overlap = int(tiling_over["latent_tile_overlap"])  # e.g. faithful: the official 4
    else:
        # DESIGN.md §8: the default overlap, kept at >= 25 % (here 1/3) of a smaller tile.
        overlap = min(TilingConfig().latent_tile_overlap, max(tile_i // 3, 1))
    tiling = TilingConfig(latent_tile_size=tile_i, latent_tile_overlap=min(overlap, tile_i - 1))
    return sampling, tiling


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


def _safe_stem(name: str) -> str:
    stem = Path(name).stem or "image"
    return re.sub(r"[^\w.-]+", "_", stem)[:80] or "image"


class UIController:
    """The UI's behaviour, independent of Gradio.

    Args:
        pipeline: a loaded pipeline (anything with ``extract_tags(image)`` and ``__call__(image, sampling=,
            tiling=, tags=, callback=)`` as :class:`SeeSRPipeline`), or a zero-argument factory returning one
            (called on first use; its error is shown in the page), or ``None`` when no weights were given.
        load_error: message shown instead of running when ``pipeline`` is ``None``.
        output_dir: where result files are written (a fresh temporary folder by default).
        max_input_pixels: input pixel cap, checked before decoding.
        max_output_pixels: output pixel cap, checked before any model work.
    """

    def __init__(
        self,
        pipeline: Any | Callable[[], Any] | None,
        *,
        load_error: str | None = None,
        output_dir: str | os.PathLike[str] | None = None,
        max_input_pixels: int | None = None,
        max_output_pixels: int | None = None,
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
        self.load_error = load_error if pipeline is None else None
        if pipeline is None and not self.load_error:
            self.load_error = "No SeeSR weights were given. " + WEIGHTS_HELP
        self.output_dir = Path(output_dir) if output_dir else Path(tempfile.mkdtemp(prefix="seesr-ui-"))
        # The CLI's caps by default (seesr.io), so the UI refuses exactly what `seesr upscale` refuses.
        self.max_input_pixels = int(max_input_pixels or sio.DEFAULT_MAX_PIXELS)
        self.max_output_pixels = int(max_output_pixels or sio.DEFAULT_MAX_OUTPUT_PIXELS)
        # One model job at a time, even when Gradio has already dropped a cancelled event.
        self._model_lock = threading.Lock()
        self._cancel: dict[str, threading.Event] = {}
        self._run_counter = 0

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

    def load(self, path: str | os.PathLike[str]) -> InputImage:
        """Decode an upload with :func:`seesr.io.load_image` (pixel cap before decoding, truncated files refused).

        Raises:
            ValueError / FileNotFoundError: from :mod:`seesr.io`, with a message naming the file and the problem.
        """
        from seesr.io import load_image

        path = Path(path)
        loaded = load_image(path, max_pixels=self.max_input_pixels)
        rgb = np.asarray(loaded.rgb, dtype=np.float32)
        if rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"{path.name}: expected an (H,W,3) image from seesr.io, got shape {rgb.shape}")
        return InputImage(name=path.name, rgb=rgb, loaded=loaded)

    def extract_tags(self, image: InputImage) -> list[str]:
        """DAPE's tags for ``image`` (the same call the pipeline makes when no tags are given)."""
        tensor = _to_tensor(image.rgb)
        with self._model_lock:
            tags = list(self.pipeline().extract_tags(tensor))
        image.auto_tags = tags
        return tags

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
            ValueError: output too large or invalid settings. Cancelled: the user pressed Cancel.
        """
        w, h = image.size
        out_w, out_h = round(w * sampling.upscale), round(h * sampling.upscale)
        if out_w * out_h > self.max_output_pixels:
            raise ValueError(
                f"output would be {out_w}x{out_h} = {out_w * out_h:,} px, over the cap of "
                f"{self.max_output_pixels:,} px; lower the scale or use a smaller image"
            )
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

        tensor = _to_tensor(image.rgb)
        start = time.perf_counter()
        try:
            with self._model_lock:
                if event.is_set():
                    raise Cancelled()
                pipe = self.pipeline()
                result = pipe(
                    tensor, sampling=sampling, tiling=tiling, tags=pass_tags, callback=on_step, **_quiet(pipe)
                )
        finally:
            # A cancelled job's thread can still be finishing while the session's next job is registered.
            if self._cancel.get(session) is event:
                del self._cancel[session]
        seconds = time.perf_counter() - start

        sr = result.image
        if tuple(sr.shape[:2]) != (1, 3):
            raise ValueError(f"pipeline returned an image of shape {tuple(sr.shape)}, expected (1,3,H,W)")
        after_f = sr[0].detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()
        if not np.isfinite(after_f).all():
            raise ValueError("the pipeline produced non-finite pixels (NaN/inf); try dtype fp32")
        after = to_uint8(after_f)
        before = _resize_u8(to_uint8(image.rgb), (after.shape[1], after.shape[0]))

        self._run_counter += 1
        stem = f"{_safe_stem(image.name)}_x{sampling.upscale:g}_seed{sampling.seed}_{self._run_counter:03d}"
        folder = self.output_dir / f"run{self._run_counter:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        image_path = folder / f"{stem}.png"
        sidecar_path = folder / f"{stem}.json"
        _save_result(image, after_f, image_path)
        loaded = image.loaded
        # The same record as `seesr upscale` writes, so `seesr upscale INPUT --from-json X.json` re-runs it.
        sidecar = {
            "seesr_sidecar": 1,
            "source": "seesr ui",
            "input": image.name,
            "output": image_path.name,
            "input_size": [w, h],
            "output_size": [int(after.shape[1]), int(after.shape[0])],
            "input_bit_depth": getattr(loaded, "bit_depth", None),
            "bit_depth": 8,
            "format": "png",
            "grey": bool(getattr(loaded, "is_grey", False)),
            "alpha": getattr(loaded, "alpha", None) is not None,
            "input_warnings": list(getattr(loaded, "warnings", ()) or ()),
            "preset": preset,
            "seed": sampling.seed,
            "tags": list(result.tags),
            "tags_override": pass_tags is not None,
            "dape_tags": list(image.auto_tags),
            "prompt": result.prompt,
            "sampling": config_to_dict(sampling),
            "tiling": config_to_dict(tiling),
            "settings": result.settings,
            "seconds": round(seconds, 3),
            "versions": _versions(),
        }
        _atomic_write_text(sidecar_path, json.dumps(sidecar, indent=2, default=str) + "\n")
        return RunOutput(
            before=before,
            after=after,
            image_path=image_path,
            sidecar_path=sidecar_path,
            prompt=result.prompt,
            tags=list(result.tags),
            seconds=seconds,
        )


def _quiet(pipe: Any) -> dict[str, Any]:
    """``show_progress=False`` where the pipeline has its own console bar: the page shows the progress."""
    try:
        params = inspect.signature(pipe.__call__).parameters
    except (TypeError, ValueError):
        return {}
    return {"show_progress": False} if "show_progress" in params else {}


def _to_tensor(rgb: np.ndarray) -> Any:
    import torch

    return torch.from_numpy(np.ascontiguousarray(rgb, dtype=np.float32)).permute(2, 0, 1)[None]


def _save_result(image: InputImage, sr_rgb: np.ndarray, path: Path) -> None:
    """Write the result through :func:`seesr.io.save_image` (alpha re-attached, grey kept, atomic write)."""
    from seesr import io as sio

    loaded = image.loaded
    h, w = sr_rgb.shape[:2]
    alpha = None if loaded.alpha is None else sio.upscale_alpha(loaded.alpha, (w, h))
    sio.save_image(path, sr_rgb, alpha=alpha, grey=bool(loaded.is_grey), icc_profile=loaded.icc_profile)


def _atomic_write_text(path: Path, text: str) -> None:
    from seesr.io import atomic_write

    data = text.encode("utf-8")
    atomic_write(path, lambda f: f.write(data))


def _versions() -> dict[str, str]:
    import platform
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("seesr", "torch", "diffusers", "transformers", "numpy", "pillow", "gradio"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out
