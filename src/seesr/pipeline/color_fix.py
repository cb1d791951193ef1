"""Colour correction of the super-resolved image against the upscaled LR (spec §1.9, §9 item 22).

SeeSR ends inference by transferring the colour statistics of the condition image (the bicubic-upscaled LR,
``lr_up``) onto the generated image, because the diffusion output drifts in colour:

* ``adain``: per-channel mean / standard deviation matching (unbiased variance + 1e-5), the official default;
* ``wavelet``: keep the high frequencies of the output and take the low-frequency residual from the reference,
  both from a 5-level à-trous wavelet decomposition (a 3x3 binomial kernel with taps ``2**level`` apart and
  replicated edges). Written here from the method (see docs/decisions.md, "Wavelet colour fix"); the detail bands
  are summed in closed form, ``image - lowpass(image)``, which matches the official outputs to 1.2e-7 in float
  and byte for byte after 8-bit conversion on the reference fixtures.

All functions are pure: tensors in ``[0, 1]`` of shape ``(B, 3, H, W)`` in, tensors out; the result is clamped
to ``[0, 1]``. ``to_uint8`` converts with either truncation (what the official colour-fix path does via
``ToPILImage``) or rounding (what the official pipeline output does).
"""

from __future__ import annotations

from fractions import Fraction
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

ColorFixMethod = Literal["adain", "wavelet", "none"]

#: added to the variance before the square root (official ``calc_mean_std``)
ADAIN_EPS = 1e-5
_ADAIN_EPS = ADAIN_EPS
_WAVELET_LEVELS = 5


def _check_pair(image: Tensor, reference: Tensor) -> None:
    if image.ndim != 4 or image.shape[1] != 3:
        raise ValueError(f"image must have shape (B, 3, H, W), got {tuple(image.shape)}")
    if reference.shape != image.shape:
        raise ValueError(
            f"reference shape {tuple(reference.shape)} must equal the image shape {tuple(image.shape)}"
        )


def _working_dtype(x: Tensor) -> torch.dtype:
    # Half-precision variance over millions of pixels loses digits; the statistics are cheap, so use >= fp32.
    return torch.promote_types(x.dtype, torch.float32)


def _channel_mean_std(x: Tensor) -> tuple[Tensor, Tensor]:
    flat = x.reshape(x.shape[0], x.shape[1], -1)
    std = (flat.var(dim=2) + _ADAIN_EPS).sqrt()
    mean = flat.mean(dim=2)
    return mean[..., None, None], std[..., None, None]


def adain_float(image: Tensor, reference: Tensor) -> Tensor:
    """AdaIN colour transfer without clamping (official ``adaptive_instance_normalization``).

    Args:
        image: ``(B, 3, H, W)`` float, the image whose colours are corrected.
        reference: ``(B, 3, H, W)`` float, the colour source (same shape).

    Returns:
        ``(B, 3, H, W)`` in the working dtype (>= float32), unclamped.
    """
    _check_pair(image, reference)
    dtype = _working_dtype(image)
    image = image.to(dtype)
    reference = reference.to(dtype)
    return adain_transfer(image, _channel_mean_std(image), _channel_mean_std(reference))


Stats = tuple[Tensor, Tensor]


def adain_transfer(image: Tensor, image_stats: Stats, reference_stats: Stats) -> Tensor:
    """``(image - mean) / std * ref_std + ref_mean`` with given statistics (unclamped; elementwise, so a band of
    rows gives the rows of the whole image).

    Args:
        image: ``(B, 3, h, w)`` float.
        image_stats, reference_stats: ``(mean, std)``, each ``(B, 3, 1, 1)`` in the dtype of ``image``.
    """
    (img_mean, img_std), (ref_mean, ref_std) = image_stats, reference_stats
    return (image - img_mean) / img_std * ref_std + ref_mean


def uint8_histogram(codes: Tensor) -> Tensor:
    """``(1, 3, h, w)`` uint8 -> ``(3, 256)`` int64 counts per channel (add the counts of bands to get an image's)."""
    return torch.stack([torch.bincount(codes[0, c].reshape(-1), minlength=256) for c in range(3)])


def uint8_stats(histogram: Tensor) -> Stats:
    """AdaIN statistics of an 8-bit image (values ``k / 255``) from its :func:`uint8_histogram`, exactly.

    The mean and the unbiased variance are computed in exact rational arithmetic and rounded once to float32,
    so they do not depend on how the image was split into bands. (Torch's float32 ``mean`` sums in a cascade and
    is one ulp off the exact value for about a third of the channels; its ``var`` accumulates in double and
    matches.) The std is then ``sqrt(var + 1e-5)`` in float32 as :func:`adain_float` computes it.

    Returns:
        ``(mean, std)``, each ``(1, 3, 1, 1)`` float32.
    """
    values = [Fraction(float(v)) for v in torch.arange(256, dtype=torch.float32) / 255]
    means, variances = [], []
    for row in histogram.tolist():
        n = sum(row)
        total = sum(c * v for c, v in zip(row, values) if c)
        squares = sum(c * v * v for c, v in zip(row, values) if c)
        means.append(_nearest_float32(total / n))
        variances.append(_nearest_float32((squares - total * total / n) / (n - 1)))
    var = torch.tensor(variances, dtype=torch.float32).reshape(1, 3, 1, 1)
    return torch.tensor(means, dtype=torch.float32).reshape(1, 3, 1, 1), (var + _ADAIN_EPS).sqrt()


def _nearest_float32(q: Fraction) -> float:
    """``q`` rounded to the nearest float32 (ties to even), without double rounding through float64."""
    guess = np.float32(float(q))
    candidates = [np.nextafter(guess, np.float32(-np.inf)), guess, np.nextafter(guess, np.float32(np.inf))]
    best = min(candidates, key=lambda c: (abs(Fraction(float(c)) - q), int(np.array(c).view(np.uint32)) & 1))
    return float(best)


def _binomial_smooth(x: Tensor, step: int, top: bool = True, bottom: bool = True) -> Tensor:
    """One à-trous smoothing pass: the 3x3 binomial kernel (outer product of ``[1, 2, 1] / 4``) with its taps
    ``step`` pixels apart, per channel, edges extended by replication.

    Args:
        x: ``(B, C, H, W)`` float.
        step: tap spacing (the dilation), ``2**level`` for decomposition level ``level``.
        top, bottom: whether the first / last row of ``x`` is an edge of the image (replicated); when not, the
            rows of ``x`` there are context and the result is ``step`` rows shorter on that side.

    Returns:
        ``(B, C, H', W)``, same dtype (``H' = H`` when both are edges).
    """
    taps = torch.tensor([0.25, 0.5, 0.25], dtype=x.dtype, device=x.device)
    weight = torch.outer(taps, taps).expand(x.shape[1], 1, 3, 3)
    pad = (step, step, step if top else 0, step if bottom else 0)
    return F.conv2d(F.pad(x, pad, mode="replicate"), weight, groups=x.shape[1], dilation=step)


def wavelet_lowpass(x: Tensor, levels: int = _WAVELET_LEVELS) -> Tensor:
    """The coarse residual of an à-trous (undecimated, "with holes") wavelet decomposition of ``x``.

    Level ``i`` smooths the previous level with taps ``2**i`` apart, so after ``levels`` passes only structure
    wider than about ``2**levels`` pixels is left. The detail bands of the decomposition are the differences
    between consecutive levels; they add up to ``x - wavelet_lowpass(x)``.

    Args:
        x: ``(B, C, H, W)`` float.
        levels: number of smoothing passes (5 in SeeSR).

    Returns:
        ``(B, C, H, W)``, same dtype.
    """
    for level in range(levels):
        x = _binomial_smooth(x, 2**level)
    return x


#: rows of context a band of :func:`wavelet_lowpass` needs on each side: the sum of the tap spacings (1+2+...+16)
WAVELET_HALO = sum(2**level for level in range(_WAVELET_LEVELS))


def wavelet_lowpass_band(x: Tensor, *, top: bool, bottom: bool) -> Tensor:
    """:func:`wavelet_lowpass` of a band of rows of a taller image, equal to the whole image's rows.

    Args:
        x: ``(B, C, h, W)`` float: the band with :data:`WAVELET_HALO` rows of real context on each side that is
            not an image edge.
        top, bottom: whether ``x`` starts at the image's first row / ends at its last.

    Returns:
        ``(B, C, h - HALO·(not top) - HALO·(not bottom), W)``: the band's rows without the context.
    """
    for level in range(_WAVELET_LEVELS):
        x = _binomial_smooth(x, 2**level, top, bottom)
    return x


def wavelet_float(image: Tensor, reference: Tensor) -> Tensor:
    """Wavelet colour transfer without clamping: the detail bands of ``image`` on the coarse residual of
    ``reference``, i.e. ``(image - lowpass(image)) + lowpass(reference)`` (spec §1.9).

    Args:
        image: ``(B, 3, H, W)`` float; its high frequencies are kept.
        reference: ``(B, 3, H, W)`` float; its low-frequency residual is used.

    Returns:
        ``(B, 3, H, W)`` in the working dtype (>= float32), unclamped.
    """
    _check_pair(image, reference)
    dtype = _working_dtype(image)
    image = image.to(dtype)
    return (image - wavelet_lowpass(image)) + wavelet_lowpass(reference.to(dtype))


def adain_color_fix(image: Tensor, reference: Tensor) -> Tensor:
    """AdaIN colour fix (official default): per-channel mean/std of ``reference`` imposed on ``image``.

    Args:
        image: ``(B, 3, H, W)`` in ``[0, 1]`` (the SR output).
        reference: ``(B, 3, H, W)`` in ``[0, 1]`` (the upscaled LR / condition image).

    Returns:
        ``(B, 3, H, W)`` in ``[0, 1]``, dtype of ``image``.

    Raises:
        ValueError: if the shapes differ or are not ``(B, 3, H, W)``.
    """
    return adain_float(image, reference).clamp(0.0, 1.0).to(image.dtype)


def wavelet_color_fix(image: Tensor, reference: Tensor) -> Tensor:
    """Wavelet colour fix: high frequencies of ``image`` + low frequencies of ``reference``.

    Args:
        image: ``(B, 3, H, W)`` in ``[0, 1]``.
        reference: ``(B, 3, H, W)`` in ``[0, 1]``.

    Returns:
        ``(B, 3, H, W)`` in ``[0, 1]``, dtype of ``image``.

    Raises:
        ValueError: if the shapes differ or are not ``(B, 3, H, W)``.
    """
    return wavelet_float(image, reference).clamp(0.0, 1.0).to(image.dtype)


def apply_color_fix(image: Tensor, reference: Tensor, method: ColorFixMethod) -> Tensor:
    """Dispatch to the colour fix named ``method`` (``"none"`` returns ``image`` unchanged).

    Raises:
        ValueError: for an unknown method or mismatched shapes.
    """
    if method == "adain":
        return adain_color_fix(image, reference)
    if method == "wavelet":
        return wavelet_color_fix(image, reference)
    if method == "none":
        return image
    raise ValueError(f"color fix method must be one of 'adain', 'wavelet', 'none'; got {method!r}")


def to_uint8(x: Tensor, *, rounding: Literal["round", "truncate"]) -> Tensor:
    """Convert a ``[0, 1]`` float tensor to uint8 (same shape).

    Args:
        x: float tensor in ``[0, 1]`` (values outside are clamped first).
        rounding: ``"truncate"`` = ``floor(x*255)`` as the official colour-fix output (``ToPILImage``);
            ``"round"`` = round-half-to-even of ``x*255`` as the official pipeline output.

    Returns:
        uint8 tensor of the same shape.

    Raises:
        ValueError: for an unknown rounding mode or a non-floating input.
    """
    if not x.is_floating_point():
        raise ValueError(f"to_uint8 expects a floating tensor in [0, 1], got dtype {x.dtype}")
    scaled = x.clamp(0.0, 1.0) * 255
    if rounding == "round":
        scaled = scaled.round()
    elif rounding != "truncate":
        raise ValueError(f"rounding must be 'round' or 'truncate', got {rounding!r}")
    # Values are non-negative, so the uint8 cast truncates exactly like ``Tensor.byte()``.
    return scaled.to(torch.uint8)
