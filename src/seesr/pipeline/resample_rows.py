"""Pillow's bicubic resize, one band of output rows at a time, with the bytes of a whole-image resize.

Pillow resizes in two passes: a horizontal pass over every source row it needs (rows are independent), then a
vertical pass whose coefficients depend on the whole source height. Calling ``Image.resize(box=...)`` on a band
recomputes those coefficients from the band's box, whose floating-point centres differ from the whole image's in
the last bits, so a band's bytes could differ from the whole-image resize. Here the horizontal pass stays Pillow's
own (it sees full rows, so its coefficients are the whole image's) and the vertical pass is done in numpy with the
coefficients Pillow computes for the whole height (``precompute_coeffs`` in Pillow's ``Resample.c``, mirrored in
double precision), in the same fixed-point (8-bit) or double (32-bit float) arithmetic. ``tests/test_postprocess``
checks the result against ``Image.resize`` byte for byte.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

_SUPPORT = 2.0  # bicubic
_PRECISION_BITS = 32 - 8 - 2  # Pillow's fixed point for 8-bit data


def _bicubic(x: float) -> float:
    a = -0.5
    if x < 0.0:
        x = -x
    if x < 1.0:
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1
    if x < 2.0:
        return (((x - 5) * x + 8) * x - 4) * a
    return 0.0


def _coefficients(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pillow's bicubic coefficients of a whole-axis resize ``in_size -> out_size``.

    Returns:
        ``(first, count, weights)``: the first source index and number of taps of each output index, and the
        (out_size, ksize) normalised float64 weights (zero past ``count``).
    """
    scale = float(in_size) / out_size
    filterscale = max(scale, 1.0)
    support = _SUPPORT * filterscale
    ksize = int(math.ceil(support)) * 2 + 1
    inv = 1.0 / filterscale
    first = np.zeros(out_size, dtype=np.int64)
    count = np.zeros(out_size, dtype=np.int64)
    weights = np.zeros((out_size, ksize), dtype=np.float64)
    for xx in range(out_size):
        center = 0.0 + (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), in_size) - xmin
        taps = [_bicubic((x + xmin - center + 0.5) * inv) for x in range(xmax)]
        total = 0.0
        for w in taps:
            total += w
        first[xx], count[xx] = xmin, xmax
        weights[xx, :xmax] = [w / total if total != 0.0 else w for w in taps]
    return first, count, weights


class RowResampler:
    """Bicubic resize of an (H, W, C) image to (out_h, out_w), computed one band of output rows at a time.

    Args:
        in_hw: source (height, width).
        out_hw: output (height, width).
    """

    def __init__(self, in_hw: tuple[int, int], out_hw: tuple[int, int]) -> None:
        self.in_hw, self.out_hw = in_hw, out_hw
        self.vertical = in_hw[0] != out_hw[0]
        self.horizontal = in_hw[1] != out_hw[1]
        if self.vertical:
            self.first, self.count, self.weights = _coefficients(in_hw[0], out_hw[0])
            scaled = self.weights * (1 << _PRECISION_BITS)
            self.fixed = np.where(scaled < 0, scaled - 0.5, scaled + 0.5).astype(
                np.int64
            )  # C's (int) truncates
        else:
            self.first = np.arange(out_hw[0], dtype=np.int64)
            self.count = np.ones(out_hw[0], dtype=np.int64)

    def source_rows(self, y0: int, y1: int) -> tuple[int, int]:
        """The source rows ``[r0, r1)`` that output rows ``[y0, y1)`` read."""
        return int(self.first[y0]), int((self.first[y0:y1] + self.count[y0:y1]).max())

    def band(self, rows: np.ndarray, r0: int, y0: int, y1: int) -> np.ndarray:
        """Output rows ``[y0, y1)`` from source rows ``[r0, r0 + len(rows))`` (which cover ``source_rows``).

        Args:
            rows: (n, W, 3) uint8 (the 8-bit chain) or (n, W) / (n, W, C) float32 (one Pillow "F" plane per
                channel); ``r0`` is the source index of its first row.

        Returns:
            (y1 - y0, out_w, ...) in the dtype of ``rows`` (float32 results are not clamped).
        """
        if self.horizontal:
            rows = _horizontal(rows, self.out_hw[1])
        if not self.vertical:
            return rows[y0 - r0 : y1 - r0]
        first = self.first[y0:y1] - r0
        count = self.count[y0:y1]
        ksize = self.weights.shape[1]
        if rows.dtype == np.uint8:
            acc = np.full((y1 - y0, *rows.shape[1:]), 1 << (_PRECISION_BITS - 1), dtype=np.int64)
            coeff = self.fixed[y0:y1]
        else:
            acc = np.zeros((y1 - y0, *rows.shape[1:]), dtype=np.float64)
            coeff = self.weights[y0:y1]
        extra = (1,) * (rows.ndim - 1)
        for t in range(ksize):  # taps in Pillow's order, each added to every output row of the band at once
            live = t < count
            if not live.any():
                break
            src = np.minimum(first + t, len(rows) - 1)
            k = np.where(live, coeff[:, t], 0).reshape(-1, *extra)
            acc += rows[src].astype(acc.dtype) * k
        if rows.dtype == np.uint8:
            return np.clip(acc >> _PRECISION_BITS, 0, 255).astype(np.uint8)
        return acc.astype(np.float32)


def _horizontal(rows: np.ndarray, out_w: int) -> np.ndarray:
    """Pillow's horizontal pass alone (the row count is unchanged, so Pillow skips its vertical pass)."""
    n = rows.shape[0]
    if rows.dtype == np.uint8:
        return np.asarray(Image.fromarray(rows).resize((out_w, n), Image.BICUBIC))
    planes = rows[..., None] if rows.ndim == 2 else rows
    out = [
        np.asarray(Image.fromarray(np.ascontiguousarray(planes[..., c])).resize((out_w, n), Image.BICUBIC))
        for c in range(planes.shape[-1])
    ]
    stacked = np.stack(out, axis=-1)
    return stacked[..., 0] if rows.ndim == 2 else stacked
