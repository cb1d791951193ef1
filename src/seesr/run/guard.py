"""Input guards, run before any model work (and again inside the library, see ``pipeline.sizing``).

A person can hand the upscaler anything: a 40000×1 strip, a 200 Mpx scan, an animated GIF, an RGBA image for a
JPEG output. Each is refused here in one line, from the file header alone, before the weights are loaded —
the same checks for the CLI, the web UI and the API.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def check_size(width: int, height: int, sampling: Any, max_output_pixels: int | None) -> None:
    """Refuse an input whose output or processed size is over ``max_output_pixels`` (``None``: no fixed cap —
    the memory plan decides — but a runaway enlargement is still refused).

    Inputs with a side under ``process_size / upscale`` are enlarged before processing (spec §1.3 step 4), so
    a thin strip (e.g. 4×8192) is processed at hundreds of megapixels although its output is small.

    Raises:
        ValueError: naming the sizes, the cap and what to change.
    """
    from seesr.pipeline.sizing import NO_PIXEL_CAP, plan_sizes

    ow, oh = round(width * sampling.upscale), round(height * sampling.upscale)
    if max_output_pixels is None:
        max_output_pixels = NO_PIXEL_CAP
    elif ow * oh > max_output_pixels:
        raise ValueError(
            f"output would be {ow}x{oh} = {ow * oh} pixels, over the output cap of {max_output_pixels} "
            "(--max-output-pixels); not processed"
        )
    plan_sizes((width, height), sampling.upscale, sampling.process_size, max_pixels=max_output_pixels)


def check_input(
    path: str | Path,
    sampling: Any,
    *,
    max_pixels: int,
    max_output_pixels: int | None,
    fmt: str = "png",
    bit_depth: int = 8,
) -> Any:
    """Probe ``path``'s header and apply every pre-run check; returns its :class:`seesr.io.ImageInfo`.

    Raises:
        ValueError / OSError: unreadable, over a cap, multi-frame, or an output format that cannot hold it.
    """
    from seesr import io

    info = io.probe_image(path, max_pixels=max_pixels)
    if info.n_frames > 1 and info.format != "MPO":
        raise ValueError(f"multi-frame {info.format} ({info.n_frames} frames) is not supported")
    check_size(info.width, info.height, sampling, max_output_pixels)
    io.check_output_options(fmt, has_alpha=info.has_alpha, bit_depth=bit_depth)
    return info
