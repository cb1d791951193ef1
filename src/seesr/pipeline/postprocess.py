"""Decoder output -> final image in bands of rows (DESIGN.md §5 step 7; issue 13: the whole path bounded).

:func:`finish_image` computes what ``pipeline.postprocess`` computes — pipeline output, colour fix against the
condition image, Pillow bicubic to the final size — but one band of output rows at a time, writing each band into
the one full-size array that must exist, the result, allocated once in the output dtype. Besides the decoder
output and that array, only O(band) float32 memory is alive:

* AdaIN needs only global statistics: a first pass over the bands collects them (exact uint8 histograms on the
  8-bit chain, float64 moments on the float chain), the second pass applies them per band;
* the wavelet fix needs :data:`~seesr.pipeline.color_fix.WAVELET_HALO` (31) rows of context on each side;
* the resize needs the source rows that Pillow's vertical taps read (:class:`RowResampler`), so each band colour-
  fixes exactly those rows.

On the 8-bit chain the result equals ``postprocess`` byte for byte; on the float chain within 1e-6 (AdaIN's mean
is summed in float64 instead of torch's float32 cascade). ``tests/test_postprocess.py`` checks both.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from seesr.config import ColorFix
from seesr.pipeline import color_fix
from seesr.pipeline.resample_rows import RowResampler
from seesr.pipeline.sizing import as_unit_float

#: pixels per band: rows = BAND_PIXELS // width. A float32 RGB temporary of a band is 12 MiB; the wavelet's
#: dilated convolutions unfold 9 taps x 3 channels (27 floats per pixel of a band plus its 62 halo rows).
BAND_PIXELS = 1 << 20
#: output dtypes :func:`finish_image` can fill, and the top code of the integer ones
_TOPS = {torch.float32: 1, torch.uint8: 255, torch.uint16: 65535}


def band_rows(width: int) -> int:
    """Output rows per band for an image ``width`` pixels wide (at least 8)."""
    return max(8, BAND_PIXELS // max(1, width))


def quantise(values: np.ndarray, dtype: torch.dtype) -> np.ndarray:
    """Float values in [0, 1] -> the output dtype, as the image writer quantises (``round(clip(x) * top)``).

    ``torch.float32`` keeps the values (clipped); ``uint8`` / ``uint16`` round to 255 / 65535 levels.
    """
    top = _TOPS[dtype]
    clipped = np.clip(values, 0.0, 1.0)
    if top == 1:
        return clipped.astype(np.float32, copy=False)
    return np.round(clipped * top).astype(np.uint8 if top == 255 else np.uint16)


def finish_image(
    decoded: Tensor,
    lr_up: Tensor,
    method: ColorFix,
    target_wh: tuple[int, int],
    *,
    quantize: bool,
    out_dtype: torch.dtype = torch.float32,
    rows: int | None = None,
) -> Tensor:
    """Decoder output -> the final image, one band of rows at a time (see the module docstring).

    Args:
        decoded: (1, 3, H, W) VAE decoder output, about [-1, 1], any float dtype and device (read per band);
            on the 8-bit chain also its uint8 :func:`pipeline_codes` (a quarter of float32's bytes).
        lr_up: (1, 3, H, W) condition image: uint8 codes (values k/255) or float in [0, 1].
        method: "adain", "wavelet" or "none".
        target_wh: final (width, height).
        quantize: the official 8-bit chain (rounded pipeline output, truncated colour fix, Pillow on uint8).
        out_dtype: ``torch.float32`` (values in [0, 1]), ``torch.uint8`` or ``torch.uint16`` (what the image
            writer would write from the float result: ``round(x * 255)`` / ``round(x * 65535)``).
        rows: output rows per band (default :func:`band_rows`).

    Returns:
        (1, 3, h_t, w_t) ``out_dtype`` on the CPU: a channels-last view of one (h_t, w_t, 3) array.

    Raises:
        ValueError: shapes that do not match, or an unsupported ``out_dtype``.
    """
    if decoded.ndim != 4 or decoded.shape[:2] != (1, 3) or lr_up.shape != decoded.shape:
        raise ValueError(
            f"decoded {tuple(decoded.shape)} and lr_up {tuple(lr_up.shape)} must both be (1, 3, H, W)"
        )
    if out_dtype not in _TOPS:
        raise ValueError(f"out_dtype must be one of {sorted(map(str, _TOPS))}, got {out_dtype}")
    h, w = decoded.shape[-2:]
    tw, th = target_wh
    resampler = RowResampler((h, w), (th, tw))
    step = rows or band_rows(max(w, tw))
    stats = _adain_stats(decoded, lr_up, quantize, step) if method == "adain" else None
    out = torch.empty((th, tw, 3), dtype=out_dtype)
    target = out.numpy()
    for y0 in range(0, th, step):
        y1 = min(th, y0 + step)
        r0, r1 = resampler.source_rows(y0, y1)
        fixed = _fixed_rows(decoded, lr_up, method, r0, r1, quantize=quantize, stats=stats)
        band = resampler.band(fixed, r0, y0, y1)
        if band.dtype == np.uint8 and out_dtype == torch.uint8:
            target[y0:y1] = band
        else:
            target[y0:y1] = quantise(
                band.astype(np.float32) / 255 if band.dtype == np.uint8 else band, out_dtype
            )
    return out.permute(2, 0, 1)[None]


def pipeline_codes(decoded: Tensor) -> Tensor:
    """Decoder output (about [-1, 1], any float dtype/device) -> the official pipeline output's uint8 codes on
    the CPU: ``round((x / 2 + 0.5).clamp(0, 1) * 255)``. Elementwise, so a tile's codes equal the whole image's
    codes at those pixels (the tiled decoder writes them tile by tile: ``tiled_decode(finish=)``)."""
    return color_fix.to_uint8((decoded.float().cpu() / 2 + 0.5).clamp(0, 1), rounding="round")


def _sr_rows(decoded: Tensor, a: int, b: int, quantize: bool) -> tuple[Tensor, Tensor | None]:
    """Pipeline output of rows [a, b): (1, 3, b-a, W) float32 in [0, 1], and its uint8 codes on the 8-bit chain.

    ``decoded`` is the decoder output, or already its :func:`pipeline_codes` (uint8; 8-bit chain only)."""
    if decoded.dtype == torch.uint8:
        if not quantize:
            raise ValueError("uint8 decoder codes can only be finished on the 8-bit chain (quantize=True)")
        codes = decoded[..., a:b, :].cpu()
        return codes.float() / 255, codes
    if quantize:
        codes = pipeline_codes(decoded[..., a:b, :])
        return codes.float() / 255, codes
    return (decoded[..., a:b, :].float().cpu() / 2 + 0.5).clamp(0, 1), None


def _fixed_rows(
    decoded: Tensor,
    lr_up: Tensor,
    method: ColorFix,
    r0: int,
    r1: int,
    *,
    quantize: bool,
    stats: tuple[color_fix.Stats, color_fix.Stats] | None,
) -> np.ndarray:
    """Colour-fixed rows [r0, r1) as (n, W, 3): uint8 codes on the 8-bit chain, else float32 in [0, 1]."""
    h = decoded.shape[-2]
    halo = color_fix.WAVELET_HALO if method == "wavelet" else 0
    a, b = max(0, r0 - halo), min(h, r1 + halo)
    sr, codes = _sr_rows(decoded, a, b, quantize)
    if method == "adain":
        assert stats is not None
        fixed = color_fix.adain_transfer(sr, *stats).clamp(0, 1)
    elif method == "wavelet":
        edges = {"top": a == 0, "bottom": b == h}
        first = a if a == 0 else a + halo  # the first row the low-pass bands keep
        low_img = color_fix.wavelet_lowpass_band(sr, **edges)[..., r0 - first : r1 - first, :]
        ref = as_unit_float(lr_up[..., a:b, :].cpu())
        low_ref = color_fix.wavelet_lowpass_band(ref, **edges)[..., r0 - first : r1 - first, :]
        fixed = ((sr[..., r0 - a : r1 - a, :] - low_img) + low_ref).clamp(0, 1)
    elif method == "none":
        fixed = sr
    else:
        raise ValueError(f"color fix method must be one of 'adain', 'wavelet', 'none'; got {method!r}")
    if quantize:
        fixed_codes = codes if method == "none" else color_fix.to_uint8(fixed, rounding="truncate")
        assert fixed_codes is not None
        return np.ascontiguousarray(fixed_codes[0].permute(1, 2, 0).numpy())
    return np.ascontiguousarray(fixed[0].permute(1, 2, 0).numpy())


def _adain_stats(
    decoded: Tensor, lr_up: Tensor, quantize: bool, step: int
) -> tuple[color_fix.Stats, color_fix.Stats]:
    """AdaIN statistics of the pipeline output and of the condition image, one band at a time."""
    h = decoded.shape[-2]
    if quantize:
        hist_sr = torch.zeros(3, 256, dtype=torch.int64)
        hist_ref = torch.zeros(3, 256, dtype=torch.int64)
        for a in range(0, h, step):
            _, codes = _sr_rows(decoded, a, min(h, a + step), True)
            assert codes is not None
            hist_sr += color_fix.uint8_histogram(codes)
            ref = lr_up[..., a : a + step, :].cpu()
            if ref.dtype != torch.uint8:
                ref = color_fix.to_uint8(ref.float(), rounding="round")
            hist_ref += color_fix.uint8_histogram(ref)
        return color_fix.uint8_stats(hist_sr), color_fix.uint8_stats(hist_ref)
    moments_sr, moments_ref = _Moments(), _Moments()
    for a in range(0, h, step):
        moments_sr.add(_sr_rows(decoded, a, min(h, a + step), False)[0])
        moments_ref.add(as_unit_float(lr_up[..., a : a + step, :].cpu()))
    return moments_sr.stats(), moments_ref.stats()


class _Moments:
    """Per-channel count, mean and sum of squared deviations in float64, merged band by band (Chan et al.)."""

    def __init__(self) -> None:
        self.n = 0
        self.mean = torch.zeros(3, dtype=torch.float64)
        self.m2 = torch.zeros(3, dtype=torch.float64)

    def add(self, band: Tensor) -> None:
        x = band[0].reshape(3, -1).double()
        n = x.shape[1]
        mean = x.mean(dim=1)
        m2 = ((x - mean[:, None]) ** 2).sum(dim=1)
        total = self.n + n
        delta = mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + m2 + delta**2 * (self.n * n / total)
        self.n = total

    def stats(self) -> color_fix.Stats:
        """``(mean, std)`` float32 (1, 3, 1, 1), std = sqrt(unbiased var + 1e-5) as AdaIN computes it."""
        var = (self.m2 / (self.n - 1)).float().reshape(1, 3, 1, 1)
        return self.mean.float().reshape(1, 3, 1, 1), (var + color_fix.ADAIN_EPS).sqrt()
