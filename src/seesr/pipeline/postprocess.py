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

from collections.abc import Callable
from typing import cast

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
    reference: Tensor | color_fix.Stats | None,
    method: ColorFix,
    target_wh: tuple[int, int],
    *,
    quantize: bool,
    out_dtype: torch.dtype = torch.float32,
    rows: int | None = None,
    overwrite: bool = False,
) -> Tensor:
    """Decoder output -> the final image, one band of rows at a time (see the module docstring).

    Args:
        decoded: (1, 3, H, W) VAE decoder output, about [-1, 1], any float dtype and device (read per band);
            on the 8-bit chain also its uint8 :func:`pipeline_codes` (a quarter of float32's bytes).
        reference: the colour reference: the (1, 3, H, W) condition image (uint8 codes, values k/255, or float
            in [0, 1]); for AdaIN also just its statistics (:func:`reference_stats`, so that the caller can free
            the condition image before decoding); ``None`` for ``method="none"``.
        method: "adain", "wavelet" or "none".
        target_wh: final (width, height).
        quantize: the official 8-bit chain (rounded pipeline output, truncated colour fix, Pillow on uint8).
        out_dtype: ``torch.float32`` (values in [0, 1]), ``torch.uint8`` or ``torch.uint16`` (what the image
            writer would write from the float result: ``round(x * 255)`` / ``round(x * 65535)``).
        rows: output rows per band (default :func:`band_rows`).
        overwrite: the result may take ``decoded``'s memory, which is then overwritten: done when ``decoded``
            is uint8 codes laid out as one (H, W, 3) array, the result is uint8 at the same size and the fix is
            per pixel (AdaIN: a 256-entry table per channel; none). No second full-size array then exists.

    Returns:
        (1, 3, h_t, w_t) ``out_dtype`` on the CPU: a channels-last view of one (h_t, w_t, 3) array.

    Raises:
        ValueError: shapes that do not match, a missing reference, or an unsupported ``out_dtype``.
    """
    _check_reference(decoded, reference, method)
    if out_dtype not in _TOPS:
        raise ValueError(f"out_dtype must be one of {sorted(map(str, _TOPS))}, got {out_dtype}")
    h, w = decoded.shape[-2:]
    tw, th = target_wh
    step = rows or band_rows(max(w, tw))
    stats = None
    if method == "adain":
        ref_stats = (
            reference
            if isinstance(reference, tuple)
            else reference_stats(cast(Tensor, reference), quantize=quantize, target_wh=target_wh, rows=rows)
        )
        stats = (_image_stats(decoded, quantize, step), ref_stats)
    if overwrite and _fixes_in_place(decoded, method, (tw, th), quantize, out_dtype):
        if stats is not None:
            _apply_table_in_place(decoded, _adain_table(*stats), step)
        return decoded
    resampler = RowResampler((h, w), (th, tw))
    out = torch.empty((th, tw, 3), dtype=out_dtype)
    target = out.numpy()
    for y0 in range(0, th, step):
        y1 = min(th, y0 + step)
        r0, r1 = resampler.source_rows(y0, y1)
        fixed = _fixed_rows(decoded, reference, method, r0, r1, quantize=quantize, stats=stats)
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
    reference: Tensor | color_fix.Stats | None,
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
        assert isinstance(reference, Tensor)  # finish_image checked it
        ref = as_unit_float(reference[..., a:b, :].cpu())
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


def reference_stats(
    lr_up: Tensor, *, quantize: bool, target_wh: tuple[int, int], rows: int | None = None
) -> color_fix.Stats:
    """AdaIN statistics of the condition image, one band at a time: all that AdaIN needs of it, so the pipeline
    computes them before decoding and frees the condition image (3 B/px on the 8-bit chain, 12 on the float one).

    Args:
        lr_up: (1, 3, H, W) condition image: uint8 codes or float in [0, 1].
        quantize: the 8-bit chain (exact statistics of the uint8 codes) or the float one (float64 moments).
        target_wh, rows: as given to :func:`finish_image` (the float moments are merged in its bands).

    Returns:
        ``(mean, std)``, each (1, 3, 1, 1) float32.
    """
    h, w = lr_up.shape[-2:]
    step = rows or band_rows(max(w, target_wh[0]))

    def band(a: int, b: int) -> Tensor:
        ref = lr_up[..., a:b, :].cpu()
        if not quantize:
            return as_unit_float(ref)
        return ref if ref.dtype == torch.uint8 else color_fix.to_uint8(ref.float(), rounding="round")

    return _banded_stats(band, h, step, quantize)


def _image_stats(decoded: Tensor, quantize: bool, step: int) -> color_fix.Stats:
    """AdaIN statistics of the pipeline output, one band at a time."""

    def band(a: int, b: int) -> Tensor:
        sr, codes = _sr_rows(decoded, a, b, quantize)
        return sr if codes is None else codes

    return _banded_stats(band, decoded.shape[-2], step, quantize)


def _banded_stats(band: Callable[[int, int], Tensor], h: int, step: int, quantize: bool) -> color_fix.Stats:
    """AdaIN ``(mean, std)`` of an image read as bands of rows ``band(a, b)``: uint8 codes on the 8-bit chain
    (exact histogram statistics), float in [0, 1] otherwise (float64 moments merged band by band)."""
    if quantize:
        hist = torch.zeros(3, 256, dtype=torch.int64)
        for a in range(0, h, step):
            hist += color_fix.uint8_histogram(band(a, min(h, a + step)))
        return color_fix.uint8_stats(hist)
    moments = _Moments()
    for a in range(0, h, step):
        moments.add(band(a, min(h, a + step)))
    return moments.stats()


def _check_reference(decoded: Tensor, reference: Tensor | color_fix.Stats | None, method: ColorFix) -> None:
    if decoded.ndim != 4 or decoded.shape[:2] != (1, 3):
        raise ValueError(f"decoded must be (1, 3, H, W), got {tuple(decoded.shape)}")
    if isinstance(reference, Tensor):
        if reference.shape != decoded.shape:
            raise ValueError(
                f"decoded {tuple(decoded.shape)} and lr_up {tuple(reference.shape)} must both be (1, 3, H, W)"
            )
    elif reference is None and method != "none":
        raise ValueError(
            f"the {method!r} colour fix needs the condition image (or, for AdaIN, its statistics)"
        )
    elif reference is not None and method != "adain":
        raise ValueError(f"the {method!r} colour fix needs the condition image itself, not statistics")


def _fixes_in_place(
    decoded: Tensor, method: ColorFix, target_wh: tuple[int, int], quantize: bool, out_dtype: torch.dtype
) -> bool:
    """Whether the result can be written over ``decoded`` (see ``finish_image(overwrite=)``)."""
    return (
        quantize
        and method in ("adain", "none")
        and decoded.dtype == torch.uint8
        and out_dtype == torch.uint8
        and decoded.device.type == "cpu"
        and (decoded.shape[-1], decoded.shape[-2]) == tuple(target_wh)
        and decoded[0].permute(1, 2, 0).is_contiguous()
    )


def _adain_table(image_stats: color_fix.Stats, ref_stats: color_fix.Stats) -> np.ndarray:
    """(3, 256) uint8: the colour-fixed code of every pipeline-output code, per channel — the band path's float
    operations (code / 255, AdaIN, clamp, truncate) on all 256 codes, hence the same bytes."""
    codes = torch.arange(256, dtype=torch.uint8).expand(1, 3, 1, 256)
    fixed = color_fix.adain_transfer(codes.float() / 255, image_stats, ref_stats).clamp(0, 1)
    return color_fix.to_uint8(fixed, rounding="truncate")[0, :, 0].numpy()


def _apply_table_in_place(codes: Tensor, table: np.ndarray, step: int) -> None:
    """``codes[c] = table[c][codes[c]]`` over a (1, 3, H, W) channels-last uint8 array, a band of rows at a time."""
    pixels = codes[0].permute(1, 2, 0).numpy()  # (H, W, 3) view of the same memory
    for a in range(0, pixels.shape[0], step):
        band = pixels[a : a + step]
        for c in range(3):
            band[..., c] = table[c][band[..., c]]


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
