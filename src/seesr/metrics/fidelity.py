"""PSNR and SSIM on the Y channel (paper §4.1 "Evaluation Metrics": calculated on the Y channel in YCbCr).

In-house implementations that reproduce pyiqa's values for ``create_metric('psnr'|'ssim',
test_y_channel=True, color_space='ycbcr')`` (PSNR to 1e-4 dB, SSIM to 1e-6), so the numbers do not depend
on pyiqa being installed. The conventions, all of which change the numbers and therefore are fixed here:

* Y (ITU-R BT.601, "studio swing"): ``Y = (16 + 65.481 R + 128.553 G + 24.966 B) / 255`` with RGB in [0,1],
  so Y is in [16/255, 235/255].
* PSNR: Y kept in float (no rounding), ``10 log10(1 / (MSE + 1e-8))``; identical images give 80 dB.
* SSIM: Y scaled to [0,255] and rounded to integers (as MATLAB's ``ssim`` on uint8), Gaussian window 11x11
  with sigma 1.5, 'valid' filtering (no padding), C1 = (0.01·255)², C2 = (0.03·255)², contrast-structure
  term clamped at 0, mean over the map, float64. No downsampling.
* No border crop unless ``crop_border > 0`` (then ``crop_border`` pixels are removed from every side).

The protocol is written out in docs/evaluation.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import torch

# BT.601 RGB -> Y weights for RGB in [0,1] and Y in [0,255] (the first column of the YCbCr matrix).
_Y_WEIGHTS = (65.481, 128.553, 24.966)
_Y_OFFSET = 16.0
PSNR_EPS = 1e-8
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5


def _check_pair(sr: torch.Tensor, gt: torch.Tensor) -> None:
    if sr.ndim != 4 or sr.shape[1] != 3:
        raise ValueError(f"expected sr of shape (B,3,H,W), got {tuple(sr.shape)}")
    if sr.shape != gt.shape:
        raise ValueError(f"sr and gt must have the same shape, got {tuple(sr.shape)} and {tuple(gt.shape)}")


def crop_borders(x: torch.Tensor, crop_border: int) -> torch.Tensor:
    """Remove ``crop_border`` pixels from each side of the last two dimensions.

    Args:
        x: (..., H, W) tensor.
        crop_border: pixels removed per side; 0 keeps the image as it is.

    Raises:
        ValueError: if ``crop_border`` is negative or leaves no pixels.
    """
    if crop_border < 0:
        raise ValueError(f"crop_border must be >= 0, got {crop_border}")
    if crop_border == 0:
        return x
    h, w = x.shape[-2:]
    if 2 * crop_border >= min(h, w):
        raise ValueError(f"crop_border={crop_border} leaves no pixels of a {h}x{w} image")
    return x[..., crop_border : h - crop_border, crop_border : w - crop_border]


def rgb_to_y(rgb: torch.Tensor) -> torch.Tensor:
    """BT.601 luma of an RGB batch.

    Args:
        rgb: (B,3,H,W) in [0,1], RGB.

    Returns:
        (B,1,H,W) Y in [16/255, 235/255], same dtype as ``rgb``.
    """
    import torch

    if rgb.ndim != 4 or rgb.shape[1] != 3:
        raise ValueError(f"expected an RGB batch of shape (B,3,H,W), got {tuple(rgb.shape)}")
    # The same matmul-then-offset order as pyiqa in the input dtype: SSIM rounds Y*255 to integers, and a
    # different float32 summation order could move a value across a .5 boundary.
    w = torch.tensor(_Y_WEIGHTS, dtype=rgb.dtype, device=rgb.device).view(3, 1)
    y = torch.matmul(rgb.permute(0, 2, 3, 1), w).permute(0, 3, 1, 2) + _Y_OFFSET
    return y / 255.0


def psnr_y(sr: torch.Tensor, gt: torch.Tensor, crop_border: int = 0) -> torch.Tensor:
    """PSNR on the Y channel, per image.

    ``PSNR = 10 log10(1 / (mean((Y_sr - Y_gt)^2) + 1e-8))`` with Y in [0,1] (not rounded).

    Args:
        sr: (B,3,H,W) in [0,1], RGB, the restored images.
        gt: (B,3,H,W) in [0,1], RGB, the references.
        crop_border: pixels removed from each side before measuring.

    Returns:
        (B,) float64 tensor of PSNR values in dB.

    Raises:
        ValueError: on mismatched or non-RGB shapes.
    """
    import torch

    _check_pair(sr, gt)
    y_sr = rgb_to_y(crop_borders(sr, crop_border))
    y_gt = rgb_to_y(crop_borders(gt, crop_border))
    mse = ((y_sr.double() - y_gt.double()) ** 2).mean(dim=(1, 2, 3))
    return 10.0 * torch.log10(1.0 / (mse + PSNR_EPS))


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> torch.Tensor:
    """Normalised 2-D Gaussian window as MATLAB's ``fspecial('gaussian', size, sigma)``.

    Returns:
        (size, size) float64 tensor summing to 1.
    """
    import numpy as np
    import torch

    r = (size - 1) / 2.0
    coords = np.arange(size, dtype=np.float64) - r
    g = np.exp(-(coords[:, None] ** 2 + coords[None, :] ** 2) / (2.0 * sigma * sigma))
    g[g < np.finfo(g.dtype).eps * g.max()] = 0.0
    g /= g.sum()
    # pyiqa stores the window in float32 before computing in float64; doing the same keeps SSIM bit-close.
    return torch.from_numpy(g).float().double()


def _valid_filter(win: torch.Tensor, size: tuple[int, int]):
    """'valid' 2-D correlation with ``win`` for (B,1,H,W) float64 inputs of spatial ``size``, via FFT.

    The same sums as ``F.conv2d(x, win)`` up to float64 round-off (~1e-10 on values of 255², far below the
    SSIM constants); a direct float64 convolution with an 11x11 window is ~50x slower on CPU.
    """
    import torch

    h, w = size
    k = win.shape[-1]
    pad = torch.zeros(h, w, dtype=win.dtype, device=win.device)
    pad[:k, :k] = win
    # correlation = convolution with the conjugate spectrum; no wrap-around inside the valid region
    kernel = torch.conj(torch.fft.rfft2(pad))

    def filt(t: torch.Tensor) -> torch.Tensor:
        out = torch.fft.irfft2(torch.fft.rfft2(t) * kernel, s=(h, w))
        return out[..., : h - k + 1, : w - k + 1]

    return filt


def ssim_y(sr: torch.Tensor, gt: torch.Tensor, crop_border: int = 0) -> torch.Tensor:
    """SSIM (Wang et al. 2004) on the rounded Y channel, per image.

    With x, y the Y channels in [0,255] rounded to integers, Gaussian-weighted local statistics
    (window 11x11, sigma 1.5, valid region only) mu_x, mu_y, sigma_x², sigma_y², sigma_xy::

        SSIM map = (2 mu_x mu_y + C1) / (mu_x² + mu_y² + C1) * max(0, (2 sigma_xy + C2) / (sigma_x² + sigma_y² + C2))
        C1 = (0.01 * 255)², C2 = (0.03 * 255)²

    and SSIM is the mean of the map.

    Args:
        sr: (B,3,H,W) in [0,1], RGB.
        gt: (B,3,H,W) in [0,1], RGB.
        crop_border: pixels removed from each side before measuring.

    Returns:
        (B,) float64 tensor of SSIM values.

    Raises:
        ValueError: on mismatched shapes or images smaller than the 11x11 window.
    """
    _check_pair(sr, gt)
    x = (rgb_to_y(crop_borders(sr, crop_border)) * 255.0).round().double()
    y = (rgb_to_y(crop_borders(gt, crop_border)) * 255.0).round().double()
    if min(x.shape[-2:]) < SSIM_WINDOW:
        raise ValueError(
            f"SSIM needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels, got {tuple(x.shape[-2:])}"
        )
    c1 = (0.01 * 255.0) ** 2
    c2 = (0.03 * 255.0) ** 2
    filt = _valid_filter(gaussian_window().to(x.device), (x.shape[-2], x.shape[-1]))

    mu_x, mu_y = filt(x), filt(y)
    var_x = filt(x * x) - mu_x**2
    var_y = filt(y * y) - mu_y**2
    cov = filt(x * y) - mu_x * mu_y
    cs = ((2 * cov + c2) / (var_x + var_y + c2)).clamp_min(0.0)
    ssim_map = (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1) * cs
    return ssim_map.mean(dim=(1, 2, 3))
