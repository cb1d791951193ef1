"""`seesr upscale --split tiles`: the ranks of a torchrun/accelerate job share every image's latent tiles.

Every rank takes every image (rank 0's plan, broadcast); rank 0 decodes each input and sends it, so the inputs
need only be readable there; each rank runs the pipeline with the job's tile reducer
(:meth:`seesr.run.distributed.World.tile_reducer`): its share of the tiles, one all-reduce per denoising step;
rank 0 alone writes the image and its sidecar. Because the ranks take part in every step together, an image that
fails inside the pipeline ends the run (:class:`LockstepError`) instead of being skipped by one rank alone.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Any


class LockstepError(ValueError):
    """An image failed inside the pipeline under ``--split tiles``; the run stops (rerunning finishes the rest)."""


def wanted(split: str, world: Any, *, faithful: bool) -> bool:
    """Whether ``--split tiles`` applies; refuses it in one line where it cannot be honoured.

    Raises:
        ValueError: ``--split tiles`` without a launcher (one process), or with ``--faithful``.
    """
    if split != "tiles":
        return False
    if not world.is_distributed:
        raise ValueError(
            "--split tiles shares each image's tiles among processes: launch it with torchrun or "
            "accelerate launch (a single process already runs every tile)"
        )
    if faithful:
        raise ValueError(
            "--split tiles cannot be --faithful: the split tiles are summed in another order, so the result is "
            "not bit-identical to the official code"
        )
    return True


def load_on_rank0(world: Any, load: Callable[[], Any], reason: Callable[[BaseException], str]) -> Any:
    """Rank 0 runs ``load()`` and sends the image; every rank gets it, or raises the same one-line ValueError."""
    loaded: tuple[Any, str | None] = (None, None)
    if world.is_main:
        try:
            loaded = (load(), None)
        except (ValueError, OSError) as err:
            loaded = (None, reason(err))
    img, error = world.broadcast(loaded)
    if error is not None:
        raise ValueError(error)
    return img


@contextlib.contextmanager
def lockstep(active: bool, rank: int, describe: Callable[[BaseException], str]) -> Iterator[None]:
    """Turn a failure inside the block into :class:`LockstepError` when ``active`` (``--split tiles``)."""
    try:
        yield
    except KeyboardInterrupt:
        raise
    except Exception as err:
        if not active:
            raise
        raise LockstepError(
            f"{describe(err)} (rank {rank}); --split tiles stops at an image that fails in the pipeline"
        ) from err


def follow(pipe: Any, rgb: Any, *, sampling: Any, tiling: Any, tags: list[str] | None, reducer: Any) -> None:
    """A rank other than 0: the same pipeline call as rank 0 (its share of the tiles), nothing written."""
    from seesr.run.job import image_tensor

    pipe(
        image_tensor(rgb),
        sampling=sampling,
        tiling=tiling,
        tags=list(tags) if tags is not None else None,
        show_progress=False,
        tile_reducer=reducer,
    )


def run_unit(
    pipe: Any,
    unit: Any,
    plan: Any,
    *,
    settings: Any,
    args: Any,
    max_pixels: int,
    world: Any,
    reducer: Any,
    reason: Callable[[BaseException, Any], str],
) -> int:
    """One output (an :class:`seesr.cli.upscale_batch.Unit`) under ``--split tiles``; returns files written.

    Rank 0 reads the input and sends it; every rank makes the same pipeline call with the tile reducer; rank 0
    writes the image and its sidecar. A bad input raises ValueError on every rank (the caller fails it alone); a
    failure inside the pipeline raises :class:`LockstepError` (the run stops).
    """
    import dataclasses

    from seesr import io
    from seesr.run.job import OutputTarget, upscale_image

    path = unit.item.path
    img = load_on_rank0(
        world,
        lambda: io.load_image(path, max_pixels=max_pixels, allow_truncated=args.allow_truncated),
        lambda err: reason(err, path),
    )
    sampling = dataclasses.replace(settings.sampling, seed=settings.sampling.seed + unit.k)
    out = unit.out
    with lockstep(True, world.rank, lambda err: f"{path}: {reason(err, path)}"):
        if not world.is_main:
            follow(pipe, img.rgb, sampling=sampling, tiling=plan.tiling, tags=settings.tags, reducer=reducer)
            return 0
        job = upscale_image(
            pipe,
            img,
            OutputTarget(
                image=out.output,
                sidecar=out.sidecar,
                format=settings.fmt,
                bit_depth=settings.bit_depth,
                prompt_text=out.output.parent / "txt" / (out.output.stem + ".txt")
                if args.save_prompts
                else None,
            ),
            sampling=sampling,
            tiling=plan.tiling,
            tags=settings.tags,
            preset=settings.preset or "default",
            input_name=str(path),
            extra={
                "sample_index": unit.k,
                "dtype_requested": settings.dtype or "auto",
                "plan": plan.as_record(),
                **world.sidecar_fields("tiles"),
            },
            tile_reducer=reducer,
        )
    logging.getLogger("seesr.cli.upscale").info(
        "%s: latent tiles per rank %s", path, job.record["settings"].get("tile_split")
    )
    return 1
