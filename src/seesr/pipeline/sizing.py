"""Size rules of SeeSR inference (spec §1.3 step 4 and step 7) and the PIL-bicubic resizes they use.

The official script resizes PIL images with Pillow's bicubic filter on uint8 data. We keep that filter so results
match, but resize float data without quantising when the input has more than 8 bits (16-bit PNG/TIFF).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image


@dataclass(frozen=True)
class SizePlan:
    """Sizes (width, height) in pixels of each stage for one image."""

    lr: tuple[int, int]
    enlarged: tuple[int, int]
    upscaled: tuple[int, int]
    processed: tuple[int, int]
    target: tuple[int, int]

    @property
    def latent_hw(self) -> tuple[int, int]:
        return self.processed[1] // 8, self.processed[0] // 8


#: The library's own cap on the processed image (pixels); ``plan_sizes`` refuses larger work before any model
#: runs, for direct API use (``SeeSRPipeline.max_processed_pixels``). The CLI and UI plan memory instead.
DEFAULT_MAX_PROCESSED_PIXELS = 16384 * 16384
#: ``max_pixels`` meaning "no size cap" while still refusing runaway enlargement (the run layer's memory plan
#: decides what fits instead)
NO_PIXEL_CAP = 2**62
#: Enlarging a small input is the official behaviour, but a thin strip (8x1200) would be processed at ~39 Mpx for
#: a 0.15 Mpx result. Enlargement is refused once the processed image is both over ``ENLARGEMENT_FREE_PIXELS``
#: and more than ``MAX_ENLARGEMENT_RATIO`` times the output (a 32x32 input, processed at 512x512 for a 128x128
#: output, is 16x and stays allowed).
ENLARGEMENT_FREE_PIXELS = 4 * 1024 * 1024
MAX_ENLARGEMENT_RATIO = 16


def plan_sizes(
    lr_wh: tuple[int, int],
    upscale: float,
    process_size: int,
    *,
    max_pixels: int | None = DEFAULT_MAX_PROCESSED_PIXELS,
) -> SizePlan:
    """The official size chain: enlarge small inputs, x upscale, floor to a multiple of 8.

    If a side is below ``process_size // upscale`` the LR is enlarged so that its short side reaches it
    (``int()`` truncation, as official); then it is scaled by ``upscale`` and floored to a multiple of 8. The
    final output is resized to ``round(lr * upscale)`` (official: ``lr * upscale`` for the integer factor 4).

    A thin input (e.g. 4x8192) is enlarged until its short side reaches ``process_size // upscale``, so its
    processed size can be far larger than its output; ``max_pixels`` refuses that before any work is done.

    Raises:
        ValueError: the processed image would be smaller than 8 px on a side, larger than ``max_pixels``, or an
            enlargement would cost more than ``MAX_ENLARGEMENT_RATIO`` times the output (``max_pixels=None``
            turns both refusals off).
    """
    w, h = lr_wh
    if w < 1 or h < 1:
        raise ValueError(f"image size must be positive, got {w}x{h}")
    min_side = int(process_size // upscale)
    ew, eh = w, h
    if w < min_side or h < min_side:
        s = min_side / min(w, h)
        ew, eh = int(s * w), int(s * h)
    uw, uh = int(round(ew * upscale)), int(round(eh * upscale))
    target = (max(1, int(round(w * upscale))), max(1, int(round(h * upscale))))
    runaway = (
        max_pixels is not None
        and (ew, eh) != (w, h)
        and uw * uh > max(ENLARGEMENT_FREE_PIXELS, MAX_ENLARGEMENT_RATIO * target[0] * target[1])
    )
    if runaway or (max_pixels is not None and uw * uh > max_pixels):
        limit = "over the cap of " + (
            f"{max_pixels}" if not runaway else f"{MAX_ENLARGEMENT_RATIO}x its output"
        )
        raise ValueError(
            f"{w}x{h} would be processed at {uw}x{uh} = {uw * uh} pixels (sides under "
            f"process_size/upscale = {min_side} px are enlarged first), {limit}; "
            "lower process_size or pad/crop the image"
        )
    pw, ph = uw // 8 * 8, uh // 8 * 8
    if pw < 8 or ph < 8:
        raise ValueError(
            f"image of {w}x{h} px becomes {uw}x{uh} px after x{upscale}: too small to process "
            f"(need >= 8 px per side; raise process_size)"
        )
    return SizePlan(lr=(w, h), enlarged=(ew, eh), upscaled=(uw, uh), processed=(pw, ph), target=target)


def is_8bit(image: torch.Tensor) -> bool:
    """True if every value of ``image`` (in [0, 1]) is exactly k/255."""
    return bool(torch.equal(torch.round(image * 255) / 255, image.to(torch.float32)))


def as_unit_float(image: torch.Tensor) -> torch.Tensor:
    """A condition image as float32 in [0, 1]: uint8 codes ``k`` become ``k / 255`` (the exact float32 values the
    8-bit chain computes), float tensors are cast. Used per tile / band, so the whole image stays in uint8."""
    if image.dtype == torch.uint8:
        return image.to(torch.float32) / 255
    return image.to(torch.float32)


def bicubic_resize(image: torch.Tensor, size_wh: tuple[int, int], *, quantize: bool) -> torch.Tensor:
    """Pillow bicubic resize.

    Args:
        image: (1, 3, H, W) float in [0, 1], pixel space.
        size_wh: output (width, height).
        quantize: resize the uint8 image (``round(255·x)``) like the official PIL chain; otherwise resize each
            channel as a 32-bit float image (no quantisation, may overshoot [0, 1] slightly and is clamped).

    Returns:
        (1, 3, height, width) float32 in [0, 1]; on ``image``'s device.
    """
    if image.ndim != 4 or image.shape[0] != 1 or image.shape[1] != 3:
        raise ValueError(f"expected an image of shape (1, 3, H, W), got {tuple(image.shape)}")
    w, h = size_wh
    arr = image[0].detach().to("cpu", torch.float32).permute(1, 2, 0).numpy()
    if (arr.shape[1], arr.shape[0]) == (w, h):
        out = np.round(arr * 255) / 255 if quantize else arr
    elif quantize:
        u8 = np.clip(np.round(arr * 255), 0, 255).astype(np.uint8)
        out = np.asarray(Image.fromarray(u8).resize((w, h), Image.BICUBIC), dtype=np.float32) / 255
    else:
        chans = [
            Image.fromarray(np.ascontiguousarray(arr[..., c])).resize((w, h), Image.BICUBIC) for c in range(3)
        ]
        out = np.clip(np.stack([np.asarray(c, dtype=np.float32) for c in chans], axis=-1), 0, 1)
    return (
        torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32)).permute(2, 0, 1)[None].to(image.device)
    )


def prepare_image(lr: torch.Tensor, plan: SizePlan, *, quantize: bool) -> torch.Tensor:
    """LR (1, 3, h, w) in [0, 1] -> ``lr_up`` (1, 3, H, W) in [0, 1] at ``plan.processed`` (spec §1.3 step 4).

    Three successive bicubic resizes exactly as the official script (enlarge, x upscale, floor to /8).
    With ``quantize`` every value is ``k / 255`` (:func:`prepare_condition` keeps the uint8 codes).
    """
    x = lr
    if plan.enlarged != plan.lr:
        x = bicubic_resize(x, plan.enlarged, quantize=quantize)
    x = bicubic_resize(x, plan.upscaled, quantize=quantize)
    if plan.processed != plan.upscaled:
        x = bicubic_resize(x, plan.processed, quantize=quantize)
    return x


def prepare_condition(
    lr: torch.Tensor, plan: SizePlan, *, quantize: bool, banded_from: int | None = None
) -> torch.Tensor:
    """:func:`prepare_image` in the cheapest exact form, to be held for the whole call.

    On the 8-bit chain every value of ``lr_up`` is ``k / 255``: the same Pillow resizes run on the uint8 codes
    and the (1, 3, H, W) uint8 codes are returned (a quarter of the float32 bytes; :func:`as_unit_float` gives
    the float values back exactly, per tile). A resize to more than ``banded_from`` pixels (default
    :data:`BANDED_RESIZE_PIXELS`) runs in bands of rows with Pillow's bytes (:class:`RowResampler`), written
    straight into the result: Pillow's whole-image form would hold a 4-byte RGBX copy and two 3-byte arrays of
    the result at once (~10 B/px: 1.9 GiB for a 12000x8000 output). Otherwise the float32 ``prepare_image``
    result.
    """
    if not quantize:
        return prepare_image(lr, plan, quantize=False)
    limit = BANDED_RESIZE_PIXELS if banded_from is None else banded_from
    arr = lr[0].detach().to("cpu", torch.float32).permute(1, 2, 0).numpy()
    codes = np.clip(np.round(arr * 255), 0, 255).astype(np.uint8)  # (h, w, 3)
    steps: list[tuple[int, int]] = []  # the resizes that change the size, in order
    for wh in (plan.enlarged, plan.upscaled, plan.processed):
        if wh != (steps[-1] if steps else (codes.shape[1], codes.shape[0])):
            steps.append(wh)
    for i, (w, h) in enumerate(steps):
        last = i == len(steps) - 1
        if w * h <= limit:
            codes = np.asarray(Image.fromarray(codes).resize((w, h), Image.BICUBIC))
        elif last:  # straight into the (3, H, W) result
            result = torch.empty((1, 3, h, w), dtype=torch.uint8)
            _resize_codes_in_bands(codes, result[0].numpy(), channels_first=True)
            return result
        else:
            out = np.empty((h, w, 3), dtype=np.uint8)
            _resize_codes_in_bands(codes, out, channels_first=False)
            codes = out
    return torch.from_numpy(np.ascontiguousarray(codes.transpose(2, 0, 1)))[None]


#: output pixels above which :func:`prepare_condition` resizes in bands of rows (below, Pillow's whole-image resize
#: is faster and its ~10 B/px transient is at most 160 MiB)
BANDED_RESIZE_PIXELS = 16 * 1024 * 1024
#: output pixels per band of :func:`_resize_codes_in_bands` (its int64 accumulator: 24 bytes per pixel)
_RESIZE_BAND_PIXELS = 1 << 20


def _resize_codes_in_bands(source: np.ndarray, out: np.ndarray, *, channels_first: bool) -> None:
    """Pillow's bicubic resize of (H, W, 3) uint8 ``source`` into ``out`` ((3, h, w) or (h, w, 3) uint8), a band
    of output rows at a time, with the whole-image bytes."""
    from seesr.pipeline.resample_rows import RowResampler

    h, w = out.shape[1:] if channels_first else out.shape[:2]
    resampler = RowResampler(source.shape[:2], (h, w))
    rows = max(8, _RESIZE_BAND_PIXELS // w)
    for y0 in range(0, h, rows):
        y1 = min(h, y0 + rows)
        r0, r1 = resampler.source_rows(y0, y1)
        band = resampler.band(source[r0:r1], r0, y0, y1)  # (y1 - y0, w, 3)
        if channels_first:
            out[:, y0:y1] = band.transpose(2, 0, 1)
        else:
            out[y0:y1] = band
