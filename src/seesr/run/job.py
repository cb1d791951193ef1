"""Run one image and write image + sidecar: the step every front-end shares (CLI, web UI, API).

:func:`upscale_image` takes a decoded :class:`seesr.io.LoadedImage`, calls the pipeline once, checks the result,
writes the image (alpha re-attached, grey kept, ICC carried, atomically) and then its sidecar JSON, and hands
back the float result so a caller can show it. The output files are the same bytes whoever calls it.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from seesr.config import SamplingConfig, TilingConfig, config_to_dict
from seesr.run.sidecar import SIDECAR_VERSION, versions, write_json, write_text


@dataclasses.dataclass(frozen=True)
class OutputTarget:
    """Where one result goes.

    Attributes:
        image: the image file; its folder is created when missing.
        sidecar: the JSON beside it.
        format: "png", "jpeg", "webp" or "tiff" (as :func:`seesr.io.resolve_format` returns).
        bit_depth: 8 or 16.
        prompt_text: optional file receiving the positive prompt (``--save-prompts``).
    """

    image: Path
    sidecar: Path
    format: str = "png"
    bit_depth: int = 8
    prompt_text: Path | None = None


@dataclasses.dataclass
class JobResult:
    """What :func:`upscale_image` hands back.

    Attributes:
        sr: (H, W, 3) the super-resolved RGB as the pipeline returned it: uint8 / uint16 codes of the written bit
            depth from a :class:`SeeSRPipeline` (float32 in [0, 1] for grey output of a 16-bit input, or from a
            pipeline without ``output_dtype``).
        tags: the tags used in the prompt. prompt: the full positive prompt.
        record: the sidecar record as written. seconds: wall time of the pipeline call.
    """

    sr: np.ndarray
    tags: list[str]
    prompt: str
    record: dict[str, Any]
    seconds: float


def image_tensor(rgb: np.ndarray) -> Any:
    """(H, W, 3) float32 [0, 1] -> (1, 3, H, W) float32 torch tensor sharing memory where possible."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(rgb, dtype=np.float32)).permute(2, 0, 1).unsqueeze(0)


def upscale_image(
    pipe: Any,
    image: Any,
    target: OutputTarget,
    *,
    sampling: SamplingConfig,
    tiling: TilingConfig,
    tags: Sequence[str] | None = None,
    preset: str | None = None,
    input_name: str | None = None,
    callback: Callable[[int, int], None] | None = None,
    extra: Mapping[str, Any] | None = None,
    tile_reducer: Any = None,
) -> JobResult:
    """Super-resolve one decoded image and write it with its sidecar.

    Args:
        pipe: a :class:`~seesr.pipeline.pipeline.SeeSRPipeline` (or anything with its ``__call__``).
        image: :class:`seesr.io.LoadedImage` (rgb (H,W,3) float32 in [0,1], alpha, grey flag, ICC).
        target: where the image and the sidecar go, and in which format.
        tags: tags replacing DAPE's, or ``None`` to let the pipeline tag the image.
        preset: the preset name, recorded in the sidecar.
        input_name: the input as the user named it (default ``image.source``).
        callback: ``callback(step, total)`` after each denoising step; raise to cancel.
        extra: fields of the sidecar that only the caller knows (e.g. ``sample_index``, ``dtype_requested``,
            ``plan``); they must not replace the fields written here.
        tile_reducer: passed on to the pipeline when given (its latent tiles shared with other processes, which
            make the same call without writing; see ``SeeSRPipeline.__call__``).

    Raises:
        ValueError: non-finite output; whatever the pipeline or the writer raises.
    """
    from seesr import io
    from seesr.run.costs import measure_peaks

    with measure_peaks(getattr(pipe, "device", None)) as peaks:
        start = time.perf_counter()
        more = {} if tile_reducer is None else {"tile_reducer": tile_reducer}
        lr = image_tensor(image.rgb)
        result = pipe(
            lr,
            sampling=sampling,
            tiling=tiling,
            tags=list(tags) if tags is not None else None,
            callback=callback,
            show_progress=False,
            **more,
            **_output_kwargs(pipe, lr, image, target, sampling),
        )
        del lr
        seconds = time.perf_counter() - start
        written_at = time.perf_counter()
        sr = _write_image(io, result, image, target)
        write_seconds = time.perf_counter() - written_at
    h, w = sr.shape[:2]
    timings = dict(getattr(result, "timings", None) or {})
    timings.update(write=round(write_seconds, 3), pipeline_s=round(seconds, 3))
    record: dict[str, Any] = {
        "seesr_sidecar": SIDECAR_VERSION,
        "input": str(input_name if input_name is not None else image.source),
        "output": str(target.image),
        "input_size": list(image.size),
        "output_size": [w, h],
        "input_bit_depth": image.bit_depth,
        "bit_depth": target.bit_depth,
        "format": target.format,
        "grey": bool(image.is_grey),
        "alpha": image.alpha is not None,
        "icc_profile_carried": image.icc_profile is not None,
        "input_warnings": list(image.warnings),
        "preset": preset,
        "seed": sampling.seed,
        "tags": list(result.tags),
        "tags_override": tags is not None,
        "prompt": result.prompt,
        "sampling": config_to_dict(sampling),
        "tiling": config_to_dict(tiling),
        "settings": result.settings,
        "weights_manifest": getattr(pipe, "weights_manifest", None),
        "device": str(getattr(pipe, "device", "")),
        "dtype": str(getattr(pipe, "dtype", "")),
        "timings": timings,
        "memory": peaks.as_record(),
        "versions": versions(),
    }
    for key, value in (extra or {}).items():
        if key in record:
            raise ValueError(f"sidecar field {key!r} is written by upscale_image; pass another name")
        record[key] = value
    write_json(target.sidecar, record)
    if target.prompt_text is not None:
        target.prompt_text.parent.mkdir(parents=True, exist_ok=True)
        write_text(target.prompt_text, result.prompt)
    return JobResult(sr=sr, tags=list(result.tags), prompt=result.prompt, record=record, seconds=seconds)


def _output_kwargs(
    pipe: Any, lr: Any, image: Any, target: OutputTarget, sampling: SamplingConfig
) -> dict[str, Any]:
    """``output_dtype`` for a pipeline that takes it: the codes the writer writes, so that the full-size result is
    held once, in those bytes. Grey output from the float (16-bit) chain needs the float values (the luma is taken
    before quantising), so that case stays float32."""
    import inspect

    import torch

    try:
        takes = "output_dtype" in inspect.signature(pipe).parameters
    except (TypeError, ValueError):
        takes = False
    if not takes:
        return {}
    from seesr.pipeline.sizing import is_8bit

    if image.is_grey and not (sampling.faithful or is_8bit(lr)):
        return {"output_dtype": torch.float32}
    return {"output_dtype": torch.uint8 if target.bit_depth == 8 else torch.uint16}


def _write_image(io: Any, result: Any, image: Any, target: OutputTarget) -> np.ndarray:
    """Check the pipeline's (1,3,H,W) result and write it; returns the (H,W,3) array written (a view of it)."""
    sr_t = result.image
    if tuple(sr_t.shape[:2]) != (1, 3):
        raise ValueError(f"pipeline returned an image of shape {tuple(sr_t.shape)}, expected (1,3,H,W)")
    sr_t = sr_t[0].detach().to("cpu")
    if str(sr_t.dtype) not in ("torch.uint8", "torch.uint16", "torch.float32"):
        sr_t = sr_t.float()
    sr = sr_t.permute(1, 2, 0).numpy()
    h, w = sr.shape[:2]
    step = max(1, (1 << 20) // max(1, w))
    if sr.dtype.kind == "f" and not all(np.isfinite(sr[y : y + step]).all() for y in range(0, h, step)):
        raise ValueError("the pipeline produced non-finite pixels (NaN/inf); try --dtype fp32")
    alpha = None if image.alpha is None else io.upscale_alpha(image.alpha, (w, h))
    target.image.parent.mkdir(parents=True, exist_ok=True)
    io.save_image(
        target.image,
        sr,
        alpha=alpha,
        bit_depth=target.bit_depth,
        grey=image.is_grey,
        format=target.format,
        icc_profile=image.icc_profile,
    )
    return sr
