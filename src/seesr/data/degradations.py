"""Degradation primitives of the Real-ESRGAN second-order model (spec §6.1; paper §4.1).

Blur kernels (isotropic / anisotropic Gaussian, generalized Gaussian, plateau, circular sinc, pulse), Gaussian and
Poisson noise (colour or grey), JPEG, resizing and unsharp masking. Every function is a pure tensor function; every
random draw takes an explicit ``torch.Generator``. Images are ``(B, C, H, W)`` float tensors in [0, 1] (RGB) on any
device unless stated otherwise.

Formulas follow the definitions used by BasicSR's ``basicsr/data/degradations.py`` and ``basicsr/utils/diffjpeg.py``
(the code SeeSR's ``utils_data/make_paired_data.py`` runs), written independently here:

* kernels are built on a centred integer grid, normalised to sum 1, then zero-padded to 21x21;
* ``filter2d`` is a correlation with reflect (``reflect_101``) padding, like BasicSR's ``filter2D``;
* JPEG is a batched, device-agnostic re-implementation of the *DiffJPEG* model that SeeSR uses with
  ``differentiable=False`` (see :func:`jpeg_compress` for why it is not a real libjpeg encoder);
* the USM blur is the 51x51 Gaussian of ``cv2.getGaussianKernel(51, 0)`` (sigma 8) applied as two 1-D passes, which is
  exact because the 2-D kernel is the outer product of the 1-D one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "KERNEL_TYPES",
    "add_gaussian_noise",
    "add_poisson_noise",
    "bivariate_gaussian_kernel",
    "bivariate_generalized_gaussian_kernel",
    "bivariate_plateau_kernel",
    "cv2_gaussian_kernel_1d",
    "filter2d",
    "gaussian_noise",
    "jpeg_compress",
    "kernel_spread",
    "pad_kernel",
    "poisson_noise",
    "pulse_kernel",
    "rand_choice",
    "rand_uniform",
    "random_mixed_kernel",
    "random_sinc_kernel",
    "resize",
    "rgb_to_gray",
    "separable_filter2d",
    "sinc_kernel",
    "usm_sharpen",
]

KERNEL_TYPES = ("iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso")

# --------------------------------------------------------------------------------------------------------------
# random helpers: scalars are drawn from the generator (on its own device) and returned as Python numbers


def rand_uniform(generator: torch.Generator, low: float, high: float) -> float:
    """One draw of U[low, high) from ``generator``."""
    u = torch.rand((), generator=generator, device=generator.device, dtype=torch.float64).item()
    return float(low) + (float(high) - float(low)) * u


def rand_choice(generator: torch.Generator, n: int, probs: Sequence[float] | None = None) -> int:
    """Index in ``range(n)`` drawn uniformly or with (unnormalised) weights ``probs``."""
    u = rand_uniform(generator, 0.0, 1.0)
    if probs is None:
        return min(int(u * n), n - 1)
    if len(probs) != n:
        raise ValueError(f"probs has {len(probs)} entries, expected {n}")
    total = float(sum(probs))
    if total <= 0:
        raise ValueError(f"probs must have a positive sum, got {list(probs)}")
    acc = 0.0
    for i, p in enumerate(probs):
        acc += float(p) / total
        if u < acc:
            return i
    # rounding can leave u >= acc on the last bin; return the last index with non-zero weight
    return max(i for i, p in enumerate(probs) if p > 0)


# --------------------------------------------------------------------------------------------------------------
# kernels (float64 on CPU; callers cast to the image dtype/device)


def _grid(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    if size < 1 or size % 2 == 0:
        raise ValueError(f"kernel size must be a positive odd integer, got {size}")
    ax = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    yy, xx = torch.meshgrid(ax, ax, indexing="ij")  # xx varies along columns, yy along rows
    return xx, yy


def _quadratic_form(size: int, sigma_x: float, sigma_y: float, theta: float) -> torch.Tensor:
    """(x, y) Σ⁻¹ (x, y)ᵀ on the grid, Σ = R diag(σx², σy²) Rᵀ with R the rotation by ``theta``."""
    if sigma_x <= 0 or sigma_y <= 0:
        raise ValueError(f"kernel sigmas must be > 0, got ({sigma_x}, {sigma_y})")
    xx, yy = _grid(size)
    c, s = math.cos(theta), math.sin(theta)
    # rotate the coordinates into the kernel's principal axes: u = Rᵀ (x, y)
    u = c * xx + s * yy
    v = -s * xx + c * yy
    return (u / sigma_x) ** 2 + (v / sigma_y) ** 2


def bivariate_gaussian_kernel(
    size: int, sigma_x: float, sigma_y: float | None = None, theta: float = 0.0
) -> torch.Tensor:
    """Normalised (an)isotropic Gaussian ``exp(-q/2)``; isotropic when ``sigma_y`` is None. Returns (size, size)."""
    q = _quadratic_form(size, sigma_x, sigma_x if sigma_y is None else sigma_y, theta)
    k = torch.exp(-0.5 * q)
    return k / k.sum()


def bivariate_generalized_gaussian_kernel(
    size: int, sigma_x: float, sigma_y: float | None, theta: float, beta: float
) -> torch.Tensor:
    """Normalised generalized Gaussian ``exp(-q**beta / 2)`` (Real-ESRGAN eq. 2). Returns (size, size)."""
    q = _quadratic_form(size, sigma_x, sigma_x if sigma_y is None else sigma_y, theta)
    k = torch.exp(-0.5 * q.pow(beta))
    return k / k.sum()


def bivariate_plateau_kernel(
    size: int, sigma_x: float, sigma_y: float | None, theta: float, beta: float
) -> torch.Tensor:
    """Normalised plateau kernel ``1 / (1 + q**beta)`` (Real-ESRGAN eq. 3). Returns (size, size)."""
    q = _quadratic_form(size, sigma_x, sigma_x if sigma_y is None else sigma_y, theta)
    k = 1.0 / (q.pow(beta) + 1.0)
    return k / k.sum()


def sinc_kernel(size: int, cutoff: float, pad_to: int = 0) -> torch.Tensor:
    """Circularly symmetric ideal low-pass ("sinc") kernel with cut-off ``cutoff`` rad/px, normalised to sum 1.

    k(r) = ω J₁(ω r) / (2π r), with the limit ω² / (4π) at r = 0; zero-padded to ``pad_to`` when larger.
    """
    if not 0 < cutoff <= math.pi:
        raise ValueError(f"sinc cutoff must be in (0, pi], got {cutoff}")
    xx, yy = _grid(size)
    r = torch.sqrt(xx**2 + yy**2)
    safe_r = torch.where(r > 0, r, torch.ones_like(r))
    k = cutoff * torch.special.bessel_j1(cutoff * safe_r) / (2 * math.pi * safe_r)
    k = torch.where(r > 0, k, torch.full_like(k, cutoff**2 / (4 * math.pi)))
    k = k / k.sum()
    return pad_kernel(k, pad_to) if pad_to > size else k


def pulse_kernel(size: int = 21) -> torch.Tensor:
    """Identity kernel (a single 1 in the centre) of odd side ``size``."""
    _grid(size)
    k = torch.zeros(size, size, dtype=torch.float64)
    k[size // 2, size // 2] = 1.0
    return k


def pad_kernel(kernel: torch.Tensor, size: int) -> torch.Tensor:
    """Zero-pad a square odd kernel symmetrically to ``size`` x ``size``."""
    k = kernel.shape[-1]
    if size < k or (size - k) % 2:
        raise ValueError(f"cannot pad a {k}x{k} kernel to {size}x{size} (needs size >= {k}, same parity)")
    p = (size - k) // 2
    return F.pad(kernel, (p, p, p, p))


def kernel_spread(kernel: torch.Tensor) -> float:
    """sqrt(Σ k r² / 2) in pixels (0 when negative lobes dominate): the kernel's per-axis RMS radius."""
    size = kernel.shape[-1]
    xx, yy = _grid(size)
    m2 = float((kernel.double().cpu() * (xx**2 + yy**2)).sum())
    return math.sqrt(m2 / 2) if m2 > 0 else 0.0


def _draw_beta(generator: torch.Generator, beta_range: Sequence[float]) -> float:
    # Real-ESRGAN's rule: half of the draws below 1, half above 1 (so [1, 2] gives beta = 1 half of the time)
    if rand_uniform(generator, 0.0, 1.0) < 0.5:
        return rand_uniform(generator, beta_range[0], 1.0)
    return rand_uniform(generator, 1.0, beta_range[1])


def random_mixed_kernel(
    generator: torch.Generator,
    size: int,
    kernel_list: Sequence[str] = KERNEL_TYPES,
    kernel_prob: Sequence[float] = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03),
    sigma_range: Sequence[float] = (0.2, 3.0),
    rotation_range: Sequence[float] = (-math.pi, math.pi),
    betag_range: Sequence[float] = (0.5, 4.0),
    betap_range: Sequence[float] = (1.0, 2.0),
) -> tuple[torch.Tensor, dict]:
    """Draw one blur kernel of side ``size`` from the Real-ESRGAN mixture.

    Returns:
        (kernel (size, size) float64 summing to 1, record dict with ``type``, ``sigma_x``, ``sigma_y``, ``theta``,
        ``beta`` where applicable).
    """
    kind = kernel_list[rand_choice(generator, len(kernel_list), kernel_prob)]
    if kind not in KERNEL_TYPES:
        raise ValueError(f"unknown kernel type {kind!r}; expected one of {KERNEL_TYPES}")
    sx = rand_uniform(generator, *sigma_range)
    rec: dict = {"type": kind, "sigma_x": sx}
    if kind.endswith("iso") and not kind.endswith("aniso"):
        sy, theta = sx, 0.0
    else:
        sy = rand_uniform(generator, *sigma_range)
        theta = rand_uniform(generator, *rotation_range)
    rec.update(sigma_y=sy, theta=theta)
    if kind in ("iso", "aniso"):
        k = bivariate_gaussian_kernel(size, sx, sy, theta)
    elif kind.startswith("generalized"):
        beta = _draw_beta(generator, betag_range)
        rec["beta"] = beta
        k = bivariate_generalized_gaussian_kernel(size, sx, sy, theta, beta)
    else:
        beta = _draw_beta(generator, betap_range)
        rec["beta"] = beta
        k = bivariate_plateau_kernel(size, sx, sy, theta, beta)
    return k, rec


def random_sinc_kernel(
    generator: torch.Generator, size: int, omega_range: Sequence[float]
) -> tuple[torch.Tensor, float]:
    """A sinc kernel with cut-off drawn from U[omega_range]. Returns (kernel (size, size) float64, omega)."""
    omega = rand_uniform(generator, *omega_range)
    return sinc_kernel(size, omega), omega


# --------------------------------------------------------------------------------------------------------------
# filtering


def _reflect_pad(x: torch.Tensor, ph: int, pw: int) -> torch.Tensor:
    """Reflect (reflect_101) padding that also works when the pad exceeds the image (repeated reflection)."""
    while ph > 0 or pw > 0:
        h, w = x.shape[-2:]
        if (ph > 0 and h == 1) or (pw > 0 and w == 1):
            # a 1-px side has nothing to reflect
            return F.pad(x, (pw, pw, ph, ph), mode="replicate")
        sh, sw = min(ph, h - 1), min(pw, w - 1)
        x = F.pad(x, (sw, sw, sh, sh), mode="reflect")
        ph, pw = ph - sh, pw - sw
    return x


def _trim(kernel: torch.Tensor) -> torch.Tensor:
    """Drop all-zero outer rings of a square (k, k) or batched (N, k, k) kernel (exact: zeros add nothing)."""
    k = kernel.shape[-1]
    nz = (kernel != 0).reshape(-1, k, k).any(0)
    if not bool(nz.any()):
        return kernel
    rows = torch.nonzero(nz.any(1)).flatten()
    cols = torch.nonzero(nz.any(0)).flatten()
    r = max(
        k // 2 - int(rows.min()), int(rows.max()) - k // 2, k // 2 - int(cols.min()), int(cols.max()) - k // 2
    )
    c = k // 2
    return kernel[..., c - r : c + r + 1, c - r : c + r + 1]


def _separable_factors(kernel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(u, v) with outer(u, v) == kernel (to float rounding) for a (1, k, k) rank-1 kernel, else None."""
    k2 = kernel[0].detach().to("cpu", torch.float64)
    flat = int(k2.abs().argmax())
    i, j = divmod(flat, k2.shape[-1])
    u, v = k2[:, j], k2[i, :] / k2[i, j]
    tol = (1e-6 if kernel.dtype != torch.float64 else 1e-12) * float(k2.abs().max())
    if float((torch.outer(u, v) - k2).abs().max()) > tol:
        return None
    return u.to(kernel.device, kernel.dtype), v.to(kernel.device, kernel.dtype)


def filter2d(img: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Correlate each image with its kernel after reflect padding (output size = input size).

    Args:
        img: (B, C, H, W) float.
        kernel: (k, k) shared or (B, k, k) per-sample; k odd.

    Returns:
        (B, C, H, W), same dtype/device as ``img``.

    Zero outer rings of the kernels are trimmed first (exact). Kernels of 9+ taps (and any kernel on very large
    images) go through an FFT (same result up to float rounding, much cheaper than a k²-tap direct convolution),
    small ones through a grouped convolution.
    """
    if img.ndim != 4:
        raise ValueError(f"img must be (B, C, H, W), got shape {tuple(img.shape)}")
    b, c, h, w = img.shape
    kernel = kernel.to(device=img.device, dtype=img.dtype)
    if kernel.ndim == 2:
        kernel = kernel.unsqueeze(0)
    if kernel.ndim != 3 or kernel.shape[-1] != kernel.shape[-2] or kernel.shape[-1] % 2 == 0:
        raise ValueError(f"kernel must be (k, k) or (B, k, k) with odd k, got shape {tuple(kernel.shape)}")
    if kernel.shape[0] not in (1, b):
        raise ValueError(f"kernel batch {kernel.shape[0]} does not match image batch {b}")
    kernel = _trim(kernel)
    k = kernel.shape[-1]
    if k == 1:
        return img * kernel.view(-1, 1, 1, 1)
    factors = _separable_factors(kernel) if kernel.shape[0] == 1 and max(h, w) <= 1024 else None
    if factors is not None:
        # rank-1 kernel (isotropic Gaussian, axis-aligned anisotropic Gaussian, pulse): exact 1-D passes
        return separable_filter2d(img, factors[0], factors[1])
    padded = _reflect_pad(img, k // 2, k // 2)
    # measured crossover on CPU: the FFT wins from 9 taps on, and for any kernel on very large images
    if k >= 9 or (k >= 5 and h * w >= 640 * 640):
        return _fft_correlate(padded, kernel, h, w)
    kb = kernel.expand(b, k, k)
    weight = kb.unsqueeze(1).repeat_interleave(c, dim=0)  # (B*C, 1, k, k)
    out = F.conv2d(padded.reshape(1, b * c, *padded.shape[-2:]), weight, groups=b * c)
    return out.view(b, c, h, w)


def _fft_size(n: int) -> int:
    """Smallest 5-smooth integer >= n (FFTs of such lengths are several times faster than of e.g. 532 = 4·7·19)."""
    m = n
    while True:
        r = m
        for p in (2, 3, 5):
            while r % p == 0:
                r //= p
        if r == 1:
            return m
        m += 1


def _kernel_rfft2(kernel: torch.Tensor, sh: int, sw: int) -> torch.Tensor:
    """rfft2 of (N, k, k) kernels zero-padded to (sh, sw), as two small DFT matrix products (k ≪ sh, sw)."""
    k = kernel.shape[-1]
    dt = torch.complex128 if kernel.dtype == torch.float64 else torch.complex64
    a = torch.arange(k, device=kernel.device, dtype=kernel.dtype)
    fu = torch.arange(sh, device=kernel.device, dtype=kernel.dtype)
    fv = torch.arange(sw // 2 + 1, device=kernel.device, dtype=kernel.dtype)
    eh = torch.polar(
        torch.ones(sh, k, device=kernel.device, dtype=kernel.dtype), -2 * math.pi * fu[:, None] * a / sh
    )
    ew = torch.polar(
        torch.ones(k, sw // 2 + 1, device=kernel.device, dtype=kernel.dtype),
        -2 * math.pi * a[:, None] * fv / sw,
    )
    return eh.to(dt) @ kernel.to(dt) @ ew.to(dt)


def _fft_correlate(padded: torch.Tensor, kernel: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Valid correlation of ``padded`` (B, C, h+k-1, w+k-1) with (1|B, k, k) kernels via a real FFT."""
    k = kernel.shape[-1]
    hp, wp = padded.shape[-2:]
    sh, sw = _fft_size(hp), _fft_size(wp)
    work = padded if padded.dtype in (torch.float32, torch.float64) else padded.float()
    # correlation = convolution with the flipped kernel; with an FFT size >= the padded size the circular
    # wrap-around only reaches the first k-1 rows/columns, which the valid output discards
    spec = torch.fft.rfft2(work, s=(sh, sw))
    kspec = _kernel_rfft2(kernel.flip(-1, -2).to(work.dtype), sh, sw).unsqueeze(1)
    out = torch.fft.irfft2(spec * kspec, s=(sh, sw))[..., k - 1 : k - 1 + h, k - 1 : k - 1 + w]
    return out.to(padded.dtype).contiguous()


def _reflect_band_matrix(n: int, kernel_1d: torch.Tensor) -> torch.Tensor:
    """(n, n) matrix A with (A v)[i] = Σ_j k[j] v[reflect(i + j − k//2)]: a 1-D correlation with reflect padding."""
    k = kernel_1d.numel()
    idx = (
        torch.arange(n, device=kernel_1d.device)[:, None]
        + torch.arange(k, device=kernel_1d.device)[None, :]
        - k // 2
    )
    idx = idx.abs()
    idx = torch.where(idx > n - 1, 2 * (n - 1) - idx, idx)
    mat = torch.zeros(n, n, dtype=kernel_1d.dtype, device=kernel_1d.device)
    return mat.scatter_add_(1, idx, kernel_1d.expand(n, k).contiguous())


def separable_filter2d(
    img: torch.Tensor, kernel_v: torch.Tensor, kernel_h: torch.Tensor | None = None
) -> torch.Tensor:
    """Correlate with the separable kernel outer(kernel_v, kernel_h), reflect padding (output size = input size).

    Equal to ``filter2d(img, torch.outer(kernel_v, kernel_h))`` up to float rounding, at 2k instead of k² taps. For
    sides up to 1024 px the two 1-D passes are products with reflect-banded matrices, A_v · X · A_hᵀ (a dense GEMM
    beats a k-tap depthwise convolution by 3–5x on CPU); larger images use two 1-D convolutions.

    Args:
        img: (B, C, H, W) float.
        kernel_v: (k,) vertical (row-direction) taps, k odd.
        kernel_h: (k,) horizontal taps; default ``kernel_v``.
    """
    kh_in = kernel_v if kernel_h is None else kernel_h
    k = kernel_v.numel()
    if k % 2 == 0 or kh_in.numel() != k:
        raise ValueError(f"separable kernels must have the same odd length, got {k} and {kh_in.numel()}")
    b, c, h, w = img.shape
    kv = kernel_v.to(device=img.device, dtype=img.dtype).flatten()
    kh = kh_in.to(device=img.device, dtype=img.dtype).flatten()
    if k // 2 < min(h, w) and max(h, w) <= 1024:
        a_v = _reflect_band_matrix(h, kv)
        a_h = a_v if (w == h and kernel_h is None) else _reflect_band_matrix(w, kh)
        return a_v @ img @ a_h.T
    x = _reflect_pad(img, k // 2, k // 2).reshape(b * c, 1, h + k - 1, w + k - 1)
    x = F.conv2d(x, kv.view(1, 1, k, 1))
    x = F.conv2d(x, kh.view(1, 1, 1, k))
    return x.view(b, c, h, w)


def cv2_gaussian_kernel_1d(size: int, sigma: float = 0.0) -> torch.Tensor:
    """1-D Gaussian of OpenCV's ``getGaussianKernel(size, sigma)`` for size > 7 (float64, sums to 1).

    sigma <= 0 means 0.3·((size − 1)/2 − 1) + 0.8 (8.0 for size 51).
    """
    if size % 2 == 0 or size < 1:
        raise ValueError(f"Gaussian kernel size must be odd and positive, got {size}")
    if sigma <= 0:
        sigma = 0.3 * ((size - 1) * 0.5 - 1) + 0.8
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def usm_sharpen(
    img: torch.Tensor, radius: int = 50, sigma: float = 0.0, weight: float = 0.5, threshold: float = 10.0
) -> torch.Tensor:
    """Unsharp masking as Real-ESRGAN's ``USMSharp`` (spec §6.1 step 1).

    blur = G * img with the (radius, bumped to odd) Gaussian; residual = img − blur; mask = |residual|·255 > threshold;
    soft = G * mask; out = soft·clip(img + weight·residual, 0, 1) + (1 − soft)·img. Both blurs are separable passes.

    Args:
        img: (B, C, H, W) float in [0, 1]; H, W > radius // 2 for the reflect padding.

    Returns:
        (B, C, H, W) sharpened image in [0, 1].
    """
    size = radius + 1 if radius % 2 == 0 else radius
    g = cv2_gaussian_kernel_1d(size, sigma)
    blur = separable_filter2d(img, g)
    residual = img - blur
    mask = (residual.abs() * 255 > threshold).to(img.dtype)
    soft = separable_filter2d(mask, g)
    sharp = (img + weight * residual).clamp(0, 1)
    return soft * sharp + (1 - soft) * img


# --------------------------------------------------------------------------------------------------------------
# resize


def resize(
    img: torch.Tensor,
    *,
    size: tuple[int, int] | None = None,
    scale: float | None = None,
    mode: str = "bicubic",
) -> torch.Tensor:
    """``F.interpolate`` as Real-ESRGAN calls it (no antialias, align_corners False; ``scale`` keeps the given
    factor for the sampling grid, the output side is floor(side·scale)).

    Args:
        img: (B, C, H, W) float.
        size: output (h, w); exclusive with ``scale``.
        scale: scale factor; exclusive with ``size``.
        mode: "area", "bilinear", "bicubic" or "nearest".
    """
    if mode not in ("area", "bilinear", "bicubic", "nearest"):
        raise ValueError(f"resize mode must be area, bilinear, bicubic or nearest; got {mode!r}")
    if (size is None) == (scale is None):
        raise ValueError("give exactly one of size= or scale=")
    if size is not None:
        if min(size) < 1:
            raise ValueError(f"resize target must be >= 1 px, got {size}")
        if tuple(size) == tuple(img.shape[-2:]) and mode != "area":
            # bilinear/bicubic at identity size reproduce the input; skip the work
            return img
        return F.interpolate(img, size=tuple(size), mode=mode)
    assert scale is not None
    if scale == 1.0:
        return img
    if min(int(img.shape[-2] * scale), int(img.shape[-1] * scale)) < 1:
        raise ValueError(f"scale {scale} shrinks a {tuple(img.shape[-2:])} image below 1 px")
    return F.interpolate(img, scale_factor=scale, mode=mode)


# --------------------------------------------------------------------------------------------------------------
# noise


def rgb_to_gray(img: torch.Tensor) -> torch.Tensor:
    """ITU-R 601 luma 0.2989 R + 0.587 G + 0.114 B (torchvision's weights). (B, 3, H, W) -> (B, 1, H, W)."""
    r, g, b = img.unbind(1)
    return (0.2989 * r + 0.587 * g + 0.114 * b).unsqueeze(1).to(img.dtype)


def _randn_like(img: torch.Tensor, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    out = torch.randn(shape, generator=generator, device=generator.device, dtype=img.dtype)
    return out.to(img.device)


def gaussian_noise(
    img: torch.Tensor, sigma: float | torch.Tensor, gray: bool | torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """Zero-mean Gaussian noise with std ``sigma``/255 (sigma on the 0–255 scale), per sample.

    Args:
        img: (B, C, H, W) float (only its shape/dtype/device are used).
        sigma: scalar or (B,) std on the 0–255 scale.
        gray: bool or (B,) bool; grey samples get one noise plane shared by all channels.
        generator: source of the noise.

    Returns:
        (B, C, H, W) noise.
    """
    b, c, h, w = img.shape
    sig = torch.as_tensor(sigma, dtype=img.dtype, device=img.device).reshape(-1, 1, 1, 1) / 255.0
    grey = torch.as_tensor(gray, dtype=torch.bool).reshape(-1).expand(b)
    noise = torch.empty_like(img)
    for i in range(b):  # per sample so that grey samples only draw one plane
        shape = (1 if bool(grey[i]) else c, h, w)
        noise[i] = _randn_like(img, shape, generator).expand(c, h, w)
    return noise * sig


def add_gaussian_noise(
    img: torch.Tensor,
    sigma: float | torch.Tensor,
    gray: bool | torch.Tensor,
    generator: torch.Generator,
    clip: bool = True,
) -> torch.Tensor:
    """img + :func:`gaussian_noise`, clamped to [0, 1] when ``clip``."""
    out = img + gaussian_noise(img, sigma, gray, generator)
    return out.clamp(0, 1) if clip else out


def _levels(x_q: torch.Tensor) -> float:
    """2^ceil(log2(number of distinct 8-bit levels in x_q)), x_q on the 1/255 grid."""
    codes = (x_q * 255.0).round().to(torch.int64).flatten()
    n = int((torch.bincount(codes, minlength=256) > 0).sum())
    return float(2 ** math.ceil(math.log2(max(n, 1))))


def _poisson_plane(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    # quantise to 8 bit to count the levels; the photon count per level is the next power of two of that count
    x_q = (x * 255.0).round().clamp(0, 255) / 255.0
    vals = _levels(x_q)
    rate = (x_q * vals).to(generator.device)
    out = torch.poisson(rate, generator=generator).to(x.device) / vals
    return out - x_q


def poisson_noise(
    img: torch.Tensor, scale: float | torch.Tensor, gray: bool | torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """Poisson (shot) noise as Real-ESRGAN draws it, per sample.

    The image is quantised to 8 bit, n = 2^ceil(log2(#distinct levels)), noise = (Poisson(n·x_q)/n − x_q)·scale,
    so Var = x_q·scale²/n. Grey samples use the noise of the luma plane for all channels.

    Args:
        img: (B, C, H, W) float in [0, 1].
        scale: scalar or (B,) noise scale.
        gray: bool or (B,) bool.
        generator: source of the noise.

    Returns:
        (B, C, H, W) noise.
    """
    b, c, h, w = img.shape
    sc = torch.as_tensor(scale, dtype=img.dtype, device=img.device).reshape(-1, 1, 1, 1)
    grey = torch.as_tensor(gray, dtype=torch.bool).reshape(-1).expand(b)
    noise = torch.empty_like(img)
    for i in range(b):
        if bool(grey[i]):
            noise[i] = _poisson_plane(rgb_to_gray(img[i : i + 1])[0], generator).expand(c, h, w)
        else:
            noise[i] = _poisson_plane(img[i], generator)
    return noise * sc


def add_poisson_noise(
    img: torch.Tensor,
    scale: float | torch.Tensor,
    gray: bool | torch.Tensor,
    generator: torch.Generator,
    clip: bool = True,
) -> torch.Tensor:
    """img + :func:`poisson_noise`, clamped to [0, 1] when ``clip``."""
    out = img + poisson_noise(img, scale, gray, generator)
    return out.clamp(0, 1) if clip else out


# --------------------------------------------------------------------------------------------------------------
# JPEG (DiffJPEG model, non-differentiable rounding)

# Standard JPEG quantisation tables (ITU T.81 Annex K). DiffJPEG applies them transposed to its (row, column)
# frequency layout; we keep that orientation because it is what produced the official training pairs.
_Y_TABLE = (
    (16, 11, 10, 16, 24, 40, 51, 61),
    (12, 12, 14, 19, 26, 58, 60, 55),
    (14, 13, 16, 24, 40, 57, 69, 56),
    (14, 17, 22, 29, 51, 87, 80, 62),
    (18, 22, 37, 56, 68, 109, 103, 77),
    (24, 35, 55, 64, 81, 104, 113, 92),
    (49, 64, 78, 87, 103, 121, 120, 101),
    (72, 92, 95, 98, 112, 100, 103, 99),
)
_C_TOP = ((17, 18, 24, 47), (18, 21, 26, 66), (24, 26, 56, 99), (47, 66, 99, 99))


_RGB2YCC = ((0.299, 0.587, 0.114), (-0.168736, -0.331264, 0.5), (0.5, -0.418688, -0.081312))
_YCC2RGB = ((1.0, 0.0, 1.402), (1.0, -0.344136, -0.714136), (1.0, 1.772, 0.0))


def _jpeg_tables(device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    y = torch.tensor(_Y_TABLE, dtype=dtype, device=device).T
    cq = torch.full((8, 8), 99.0, dtype=dtype, device=device)
    cq[:4, :4] = torch.tensor(_C_TOP, dtype=dtype, device=device).T
    return y, cq


def _dct_matrix(device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Orthonormal 8-point DCT-II matrix M (coefficients = M · block · Mᵀ)."""
    n = torch.arange(8, dtype=torch.float64)
    m = torch.cos((2 * n[None, :] + 1) * n[:, None] * math.pi / 16) * 0.5
    m[0] /= math.sqrt(2)
    return m.to(device=device, dtype=dtype)


def quality_to_factor(quality: torch.Tensor) -> torch.Tensor:
    """IJG quality → table multiplier: 50/q for q < 50 else 2 − q/50 (continuous, no clamping of the tables)."""
    return torch.where(quality < 50, 50.0 / quality, 2.0 - quality / 50.0)


def _block_transform(plane: torch.Tensor, mat: torch.Tensor) -> torch.Tensor:
    """Apply the 64x64 matrix ``mat`` to every row-major flattened 8x8 block of (N, H, W) (H, W multiples of 8)."""
    n, h, w = plane.shape
    blocks = plane.reshape(n, h // 8, 8, w // 8, 8).transpose(2, 3).reshape(-1, 64)
    return (blocks @ mat.T).view(n, h // 8, w // 8, 64)


def _unblock(coef: torch.Tensor) -> torch.Tensor:
    n, hb, wb, _ = coef.shape
    return coef.view(n, hb, wb, 8, 8).transpose(2, 3).reshape(n, hb * 8, wb * 8)


def jpeg_compress(img: torch.Tensor, quality: float | torch.Tensor) -> torch.Tensor:
    """JPEG compress + decompress with the DiffJPEG model (the one SeeSR's pairs were made with).

    Pipeline: pad bottom/right with zeros to a multiple of 16; RGB → YCbCr (JFIF, 0–255); 2x2 average chroma
    subsampling; 8x8 orthonormal DCT of (x − 128); quantise with the standard tables × factor(quality) and round;
    dequantise, inverse DCT, nearest chroma upsampling, YCbCr → RGB, clamp to [0, 255], crop.

    Why not a real encoder (libjpeg via PIL/torchvision): the official pairs come from DiffJPEG, whose output differs
    from libjpeg (continuous unclamped table scaling, float quality, nearest instead of "fancy" chroma upsampling,
    float instead of uint8 output). Re-implementing the same model keeps the degradation distribution of the
    official data, takes a per-sample float quality, runs batched on any device without a host round-trip and is
    deterministic. Rounding is a hard ``torch.round`` (DiffJPEG with ``differentiable=False``), so it carries no
    useful gradient.

    Args:
        img: (B, 3, H, W) float RGB in [0, 1] (clamp before calling).
        quality: scalar or (B,) JPEG quality in (0, 100].

    Returns:
        (B, 3, H, W) float in [0, 1].
    """
    if img.ndim != 4 or img.shape[1] != 3:
        raise ValueError(f"jpeg_compress expects (B, 3, H, W), got {tuple(img.shape)}")
    b, _, h, w = img.shape
    dt = torch.float32 if img.dtype not in (torch.float32, torch.float64) else img.dtype
    dev = img.device
    q = torch.as_tensor(quality, dtype=dt, device=dev).reshape(-1).expand(b)
    if bool((q <= 0).any()) or bool((q > 100).any()):
        raise ValueError(f"JPEG quality must be in (0, 100], got {q.tolist()}")
    factor = quality_to_factor(q)
    ph, pw = (-h) % 16, (-w) % 16
    x = F.pad(img.to(dt), (0, pw, 0, ph))
    # RGB [0, 1] -> level-shifted YCbCr (Y − 128, Cb − 128, Cr − 128 on the 0–255 scale) as one 3x3 product; the
    # JFIF chroma offset of +128 and the DCT level shift of −128 cancel
    fwd = torch.tensor(_RGB2YCC, dtype=dt, device=dev) * 255.0
    ycc = torch.einsum("ij,bjhw->bihw", fwd, x)
    ycc[:, 0] -= 128.0
    cbcr = F.avg_pool2d(ycc[:, 1:], 2)  # (B, 2, H/2, W/2) 2x2 chroma subsampling
    m = _dct_matrix(dev, dt)
    kron = torch.kron(m, m)  # vec(M X Mᵀ) = (M ⊗ M) vec(X) for row-major blocks: one GEMM for all blocks
    y_tab, c_tab = _jpeg_tables(dev, dt)
    lossless = bool((factor <= 0).any())

    def codec(plane: torch.Tensor, table: torch.Tensor, fac: torch.Tensor) -> torch.Tensor:
        coef = _block_transform(plane, kron)
        step = (table.reshape(64) * fac.view(-1, 1)).view(-1, 1, 1, 64)
        if lossless:
            # quality 100 gives a zero step: keep those coefficients instead of dividing by zero
            coef = torch.where(step > 0, torch.round(coef / step.clamp_min(1e-12)) * step, coef)
        else:
            coef = torch.round(coef / step) * step
        return _unblock(coef @ kron)

    y = codec(ycc[:, 0], y_tab, factor)
    cbcr = codec(cbcr.reshape(b * 2, *cbcr.shape[-2:]), c_tab, factor.repeat_interleave(2)).view(cbcr.shape)
    ycc = torch.cat([y.unsqueeze(1), F.interpolate(cbcr, scale_factor=2, mode="nearest")], 1)
    inv = torch.tensor(_YCC2RGB, dtype=dt, device=dev)
    rgb = (
        torch.einsum("ij,bjhw->bihw", inv, ycc) + 128.0
    )  # every row has a unit Y weight: undo the level shift
    out = (rgb.clamp_(0, 255) / 255.0)[..., :h, :w]
    return out.to(img.dtype)
