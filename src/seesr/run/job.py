"""Run one image and write image + sidecar: the step every front-end shares (CLI, web UI, API).

:func:`upscale_image` takes a decoded :class:`seesr.io.LoadedImage`, calls the pipeline once, checks the result,
writes the image (alpha re-attached, grey kept, ICC carried, atomically) and then its sidecar JSON, and hands
back the float result so a caller can show it. The output files are the same bytes whoever calls it.
:func:`upscale_images` does the same for several images of one size in one pipeline call (``--batch-size``).
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
    (outcome,) = upscale_images(
        pipe,
        [image],
        [target],
        samplings=[sampling],
        tiling=tiling,
        tags=tags,
        preset=preset,
        input_names=[input_name],
        callback=callback,
        extras=[extra or {}],
        tile_reducer=tile_reducer,
    )
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome


def upscale_images(
    pipe: Any,
    images: Sequence[Any],
    targets: Sequence[OutputTarget],
    *,
    samplings: Sequence[SamplingConfig],
    tiling: TilingConfig,
    tags: Sequence[str] | None = None,
    preset: str | None = None,
    input_names: Sequence[str | None] | None = None,
    callback: Callable[[int, int], None] | None = None,
    extras: Sequence[Mapping[str, Any]] | None = None,
    tile_reducer: Any = None,
) -> list[JobResult | Exception]:
    """Super-resolve decoded images of one size in one pipeline call and write each with its sidecar.

    Image ``k`` is drawn with the generators of ``samplings[k].seed``, exactly as it would be alone (its result
    equals the lone run up to float round-off: batching changes the order of CPU kernels). One image calls the
    pipeline exactly as :func:`upscale_image` always did. Each sidecar records ``batch`` (size, index, inputs);
    its ``timings`` and ``memory`` are those of the whole call.

    Args:
        images, targets, samplings: one per image; the samplings may differ only in ``seed``.
        input_names, extras: one per image (see :func:`upscale_image`); the rest as there, shared.
        tile_reducer: see :func:`upscale_image`.

    Returns:
        Per image its :class:`JobResult`, or the exception that stopped writing it (the others are written).

    Raises:
        ValueError: mismatched lengths, or samplings that differ in more than the seed; whatever the pipeline
            raises (then nothing is written).
    """
    from seesr import io
    from seesr.run.costs import measure_peaks

    n = len(images)
    names = list(input_names) if input_names is not None else [None] * n
    extra_list = list(extras) if extras is not None else [{}] * n
    if not n or not len(targets) == len(samplings) == len(names) == len(extra_list) == n:
        raise ValueError(
            f"upscale_images needs one target, sampling, name and extra per image ({n} images), got "
            f"{len(targets)}, {len(samplings)}, {len(names)}, {len(extra_list)}"
        )
    first = samplings[0]
    for s in samplings[1:]:
        if dataclasses.replace(s, seed=first.seed) != first:
            raise ValueError(
                "images of one batch must share their sampling settings (only the seed may differ)"
            )
    tag_list = list(tags) if tags is not None else None
    outcomes: list[JobResult | Exception] = []
    with measure_peaks(getattr(pipe, "device", None)) as peaks:
        start = time.perf_counter()
        more: dict[str, Any] = {} if tile_reducer is None else {"tile_reducer": tile_reducer}
        lrs = [image_tensor(im.rgb) for im in images]
        more.update(_output_kwargs(pipe, lrs, images, targets, first))
        if n == 1:
            common = dict(
                sampling=first, tiling=tiling, tags=tag_list, callback=callback, show_progress=False
            )
            results = [pipe(lrs[0], **common, **more)]
        else:
            from seesr.pipeline.pipeline import seeded_noise

            results = pipe(
                lrs,
                sampling=first,
                tiling=tiling,
                tags=tag_list,
                callback=callback,
                noise=[seeded_noise(s) for s in samplings],
                show_progress=False,
                **more,
            )
        del lrs
        seconds = time.perf_counter() - start
        written: list[tuple[np.ndarray, float] | Exception] = []
        for result, image, target in zip(results, images, targets):
            written_at = time.perf_counter()
            try:
                sr = _write_image(io, result, image, target)
            except Exception as err:  # one bad result must not cost the others theirs
                written.append(err)
                continue
            written.append((sr, time.perf_counter() - written_at))
    batch_inputs = [str(nm if nm is not None else im.source) for nm, im in zip(names, images)]
    for k, (result, image, target, done) in enumerate(zip(results, images, targets, written)):
        if isinstance(done, Exception):
            outcomes.append(done)
            continue
        sr, write_seconds = done
        batch: dict[str, Any] = {"size": n, "index": k}
        if n > 1:
            batch["inputs"] = batch_inputs
        try:
            outcomes.append(
                _finish(
                    pipe,
                    result,
                    image,
                    target,
                    sr,
                    samplings[k],
                    tiling,
                    tag_list,
                    preset,
                    batch_inputs[k],
                    seconds,
                    write_seconds,
                    peaks.as_record(),
                    batch,
                    extra_list[k],
                )
            )
        except Exception as err:
            outcomes.append(err)
    return outcomes


def _finish(
    pipe: Any,
    result: Any,
    image: Any,
    target: OutputTarget,
    sr: np.ndarray,
    sampling: SamplingConfig,
    tiling: TilingConfig,
    tags: list[str] | None,
    preset: str | None,
    input_name: str,
    seconds: float,
    write_seconds: float,
    memory: dict[str, Any],
    batch: dict[str, Any],
    extra: Mapping[str, Any],
) -> JobResult:
    """Write the sidecar (and prompt file) of one written image; returns its :class:`JobResult`."""
    h, w = sr.shape[:2]
    timings = dict(getattr(result, "timings", None) or {})
    timings.update(write=round(write_seconds, 3), pipeline_s=round(seconds, 3))
    record: dict[str, Any] = {
        "seesr_sidecar": SIDECAR_VERSION,
        "input": input_name,
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
        "batch": batch,
        "kernels": _kernels(pipe),
        "timings": timings,
        "memory": memory,
        "versions": versions(),
    }
    for key, value in extra.items():
        if key in record:
            raise ValueError(f"sidecar field {key!r} is written by upscale_image; pass another name")
        record[key] = value
    write_json(target.sidecar, record)
    if target.prompt_text is not None:
        target.prompt_text.parent.mkdir(parents=True, exist_ok=True)
        write_text(target.prompt_text, result.prompt)
    return JobResult(sr=sr, tags=list(result.tags), prompt=result.prompt, record=record, seconds=seconds)


def _output_kwargs(
    pipe: Any,
    lrs: Sequence[Any],
    images: Sequence[Any],
    targets: Sequence[OutputTarget],
    sampling: SamplingConfig,
) -> dict[str, Any]:
    """``output_dtype`` for a pipeline that takes it: the codes the writer writes, so that the full-size result is
    held once, in those bytes. Grey output from the float (16-bit) chain needs the float values (the luma is taken
    before quantising), so that case stays float32; so does a batch whose images would want different codes."""
    import inspect

    import torch

    try:
        takes = "output_dtype" in inspect.signature(pipe).parameters
    except (TypeError, ValueError):
        takes = False
    if not takes:
        return {}
    from seesr.pipeline.sizing import is_8bit

    wanted = {
        torch.float32
        if image.is_grey and not (sampling.faithful or is_8bit(lr))
        else (torch.uint8 if target.bit_depth == 8 else torch.uint16)
        for lr, image, target in zip(lrs, images, targets)
    }
    return {"output_dtype": wanted.pop() if len(wanted) == 1 else torch.float32}


def _kernels(pipe: Any) -> dict[str, Any] | None:
    """``--compile`` / ``--channels-last`` as the models show them (None for a pipeline without a UNet)."""
    if not hasattr(pipe, "unet") or not hasattr(pipe, "controlnet"):
        return None
    from seesr.pipeline.compile import describe_kernels

    return describe_kernels(pipe)


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
