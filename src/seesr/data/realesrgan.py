"""Real-ESRGAN second-order degradation as SeeSR makes its training pairs (spec §6.1–6.3; paper §4.1).

``RealESRGANDegradation(DegradationConfig())(gt, generator)`` turns HQ crops into (LR, USM-sharpened GT) pairs:

1. GT ← USM sharpening (51x51 Gaussian, weight 0.5, threshold 10) when ``use_usm``; the LR is made from it.
2. Stage 1: blur with kernel 1 → random resize (up/down/keep, area/bilinear/bicubic) → Gaussian or Poisson noise
   (colour or grey) → JPEG.
3. Stage 2: blur with kernel 2 (with probability ``second_blur_prob``) → random resize relative to the LR size →
   noise → final step in random order: [resize to H/4 x W/4 + sinc filter] then JPEG, or JPEG then [resize + sinc].
4. Clamp to [0, 1] (no rounding).

Differences from the official code (documented choices):

* **Per-sample random choices.** ``utils_data/make_paired_data.py`` draws the resize type/scale/mode, noise type,
  second-blur coin and final order once per *batch*; here every sample draws its own, so the per-draw marginal
  distributions are the official ones while samples of a batch are independent. Kernels are per sample as in the
  official dataset. The kernel draws happen here instead of in the dataset.
* **JPEG is not a real encoder**: it is the DiffJPEG model the official pairs were made with (``differentiable=False``:
  hard rounding), re-implemented batched with a float per-sample quality; it runs on any device without a host
  round-trip and keeps the official degradation distribution (libjpeg differs: integer quality, clamped tables,
  fancy chroma upsampling, uint8 output). See ``seesr.data.degradations.jpeg_compress``.
* **Batching**: USM runs on the whole batch; because every sample has its own resize scales (hence its own
  intermediate sizes), the rest runs per sample. Exact fast paths: separable passes for the 51x51 USM blur and
  for rank-1 blur kernels, FFT filtering for large kernels, one GEMM for all 8x8 DCT blocks.
* Random numbers come from a ``torch.Generator`` (or one generator per sample), never from global RNGs.

The default ``DegradationConfig()`` is SeeSR's make_paired_data parameter set; ``DegradationConfig.preset("realesrgan")``
is the standard Real-ESRGAN set of the unused online path ``dataloaders/params_realesrgan.yml`` (spec §6.3, USM off as
there).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from seesr.data import degradations as D

logger = logging.getLogger(__name__)

__all__ = ["DegradationConfig", "RealESRGANDegradation", "load_degradation_config"]

_MODES = ("area", "bilinear", "bicubic")
_UPDOWN = ("up", "down", "keep")


@dataclass(frozen=True)
class DegradationConfig:
    """All parameters of the second-order degradation (defaults: SeeSR ``make_paired_data.py``, spec §6.1).

    Attributes:
        scale: down-scaling factor between GT and LR (H, W must be divisible by it).
        use_usm: sharpen the GT with USM first (the saved GT and the LR source are the sharpened image).
        usm_radius, usm_weight, usm_threshold: USM parameters (radius 50 is bumped to a 51-tap kernel, sigma 8).
        kernel_sizes: odd kernel sides drawn uniformly (7..21).
        kernel_list, kernel_prob: kernel types of the first blur and their weights.
        sinc_prob: probability that the first kernel is a sinc instead (cut-off U[pi/3, pi] below size 13, else
            U[pi/5, pi]).
        blur_sigma, betag_range, betap_range: sigma range (both axes), generalized and plateau beta ranges.
        kernel_list2, kernel_prob2, sinc_prob2, blur_sigma2, betag_range2, betap_range2: the same for kernel 2.
        final_sinc_prob: probability of the final sinc filter (cut-off U[pi/3, pi]); identity otherwise.
        resize_prob: weights of up/down/keep in stage 1; resize_range: (down minimum, up maximum) scale.
        gaussian_noise_prob: Gaussian (else Poisson) noise probability; noise_range: Gaussian sigma, 0-255 scale;
        poisson_scale_range: Poisson scale; gray_noise_prob: probability of grey noise; jpeg_range: JPEG quality.
        second_blur_prob, resize_prob2, resize_range2, gaussian_noise_prob2, noise_range2, poisson_scale_range2,
        gray_noise_prob2, jpeg_range2: stage 2 (jpeg_range2 is the final JPEG's range).
        final_order_prob: probability of [resize + sinc] before the final JPEG (0.5 officially).
    """

    scale: int = 4
    use_usm: bool = True
    usm_radius: int = 50
    usm_weight: float = 0.5
    usm_threshold: float = 10.0
    kernel_sizes: tuple[int, ...] = (7, 9, 11, 13, 15, 17, 19, 21)
    kernel_list: tuple[str, ...] = D.KERNEL_TYPES
    kernel_prob: tuple[float, ...] = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)
    sinc_prob: float = 0.1
    blur_sigma: tuple[float, float] = (0.2, 3.0)
    betag_range: tuple[float, float] = (0.5, 4.0)
    betap_range: tuple[float, float] = (1.0, 2.0)
    kernel_list2: tuple[str, ...] = D.KERNEL_TYPES
    kernel_prob2: tuple[float, ...] = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)
    sinc_prob2: float = 0.1
    blur_sigma2: tuple[float, float] = (0.2, 1.5)
    betag_range2: tuple[float, float] = (0.5, 4.0)
    betap_range2: tuple[float, float] = (1.0, 2.0)
    final_sinc_prob: float = 0.8
    resize_prob: tuple[float, float, float] = (0.2, 0.7, 0.1)
    resize_range: tuple[float, float] = (0.15, 1.5)
    gaussian_noise_prob: float = 0.5
    noise_range: tuple[float, float] = (1.0, 30.0)
    poisson_scale_range: tuple[float, float] = (0.05, 3.0)
    gray_noise_prob: float = 0.4
    jpeg_range: tuple[float, float] = (30.0, 95.0)
    second_blur_prob: float = 0.8
    resize_prob2: tuple[float, float, float] = (0.3, 0.4, 0.3)
    resize_range2: tuple[float, float] = (0.3, 1.2)
    gaussian_noise_prob2: float = 0.5
    noise_range2: tuple[float, float] = (1.0, 25.0)
    poisson_scale_range2: tuple[float, float] = (0.05, 2.5)
    gray_noise_prob2: float = 0.4
    jpeg_range2: tuple[float, float] = (30.0, 95.0)
    final_order_prob: float = 0.5

    def __post_init__(self) -> None:
        # YAML gives lists; store tuples so the config stays hashable and immutable
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, list):
                object.__setattr__(self, f.name, tuple(v))
        if not isinstance(self.scale, int) or self.scale < 1:
            raise ValueError(f"scale must be a positive integer, got {self.scale!r}")
        for name in (
            "sinc_prob",
            "sinc_prob2",
            "final_sinc_prob",
            "gaussian_noise_prob",
            "gray_noise_prob",
            "second_blur_prob",
            "gaussian_noise_prob2",
            "gray_noise_prob2",
            "final_order_prob",
        ):
            p = getattr(self, name)
            if not 0.0 <= float(p) <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {p!r}")
        if not self.kernel_sizes or any(int(k) != k or k < 1 or k % 2 == 0 for k in self.kernel_sizes):
            raise ValueError(f"kernel_sizes must be odd positive integers, got {self.kernel_sizes!r}")
        for lst, prob, tag in (
            (self.kernel_list, self.kernel_prob, ""),
            (self.kernel_list2, self.kernel_prob2, "2"),
        ):
            bad = [k for k in lst if k not in D.KERNEL_TYPES]
            if bad:
                raise ValueError(
                    f"kernel_list{tag} has unknown types {bad}; expected some of {D.KERNEL_TYPES}"
                )
            if len(prob) != len(lst) or any(p < 0 for p in prob) or sum(prob) <= 0:
                raise ValueError(
                    f"kernel_prob{tag} must give one non-negative weight per kernel_list{tag} entry "
                    f"({len(lst)}), got {prob!r}"
                )
        for name in ("resize_prob", "resize_prob2"):
            p = getattr(self, name)
            if len(p) != 3 or any(x < 0 for x in p) or sum(p) <= 0:
                raise ValueError(f"{name} must be 3 non-negative weights (up, down, keep), got {p!r}")
        for name in (
            "blur_sigma",
            "betag_range",
            "betap_range",
            "blur_sigma2",
            "betag_range2",
            "betap_range2",
            "resize_range",
            "noise_range",
            "poisson_scale_range",
            "jpeg_range",
            "resize_range2",
            "noise_range2",
            "poisson_scale_range2",
            "jpeg_range2",
        ):
            r = getattr(self, name)
            if len(r) != 2 or not float(r[0]) <= float(r[1]):
                raise ValueError(f"{name} must be a (low, high) pair with low <= high, got {r!r}")
        for name in ("blur_sigma", "blur_sigma2"):
            if getattr(self, name)[0] <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("resize_range", "resize_range2"):
            lo, hi = getattr(self, name)
            if not (0 < lo <= 1 <= hi):
                raise ValueError(f"{name} must satisfy 0 < low <= 1 <= high, got {(lo, hi)!r}")
        for name in ("jpeg_range", "jpeg_range2"):
            lo, hi = getattr(self, name)
            if not (lo > 0 and hi <= 100):
                raise ValueError(f"{name} must lie in (0, 100], got {(lo, hi)!r}")

    @classmethod
    def preset(cls, name: str) -> DegradationConfig:
        """Named parameter set: ``"seesr"`` (make_paired_data, the default) or ``"realesrgan"`` (spec §6.3)."""
        if name not in PRESETS:
            raise ValueError(f"unknown degradation preset {name!r}; expected one of {sorted(PRESETS)}")
        return PRESETS[name]


PRESETS: dict[str, DegradationConfig] = {
    "seesr": DegradationConfig(),
    # dataloaders/params_realesrgan.yml (standard Real-ESRGAN ranges; its USM call is commented out)
    "realesrgan": DegradationConfig(
        use_usm=False,
        resize_range=(0.3, 1.5),
        noise_range=(1.0, 15.0),
        poisson_scale_range=(0.05, 2.0),
        jpeg_range=(60.0, 95.0),
        second_blur_prob=0.5,
        resize_range2=(0.6, 1.2),
        noise_range2=(1.0, 12.0),
        poisson_scale_range2=(0.05, 1.0),
        jpeg_range2=(60.0, 100.0),
    ),
}


def load_degradation_config(path: str | Path | None = None, preset: str = "seesr") -> DegradationConfig:
    """The ``preset`` with the keys of the YAML file at ``path`` (if any) overriding it; unknown keys raise.

    Example YAML (any subset of the ``DegradationConfig`` fields)::

        noise_range: [1, 15]
        jpeg_range2: [60, 100]
        use_usm: false
    """
    from seesr.config import config_from_dict, read_yaml_mapping

    base = DegradationConfig.preset(preset)
    if path is None:
        return base
    data = read_yaml_mapping(path, "degradation config")
    merged = {f.name: getattr(base, f.name) for f in dataclasses.fields(base)}
    unknown = sorted(set(data) - set(merged))
    if unknown:
        raise ValueError(
            f"{path}: unknown key(s) {unknown} for DegradationConfig; expected some of {sorted(merged)}"
        )
    merged.update(data)
    return config_from_dict(DegradationConfig, merged, where=str(path))


# ----------------------------------------------------------------------------------------------------------------


@dataclass
class _Draw:
    """Everything drawn for one sample before the noise: kernels plus a JSON-friendly record."""

    kernel1: torch.Tensor
    kernel2: torch.Tensor
    sinc: torch.Tensor
    rec: dict[str, Any]


class RealESRGANDegradation(torch.nn.Module):
    """Batched, device-agnostic second-order degradation (spec §6.1).

    Args:
        config: the parameter set (default SeeSR's).

    Call ``deg(gt, generator)`` with ``gt`` (B, 3, H, W) float in [0, 1] (H, W divisible by ``config.scale``) on
    any device; ``generator`` is one ``torch.Generator`` or a sequence of B (one per sample: the result of sample i
    then depends only on its own generator, which makes offline pair generation batch-size independent). Noise is
    drawn on the generator's device; use a generator on the data's device for speed on GPU.
    """

    def __init__(self, config: DegradationConfig | None = None) -> None:
        super().__init__()
        self.config = config or DegradationConfig()

    # ---- parameter draws -------------------------------------------------------------------------------------

    def _kernel(self, g: torch.Generator, second: bool, rec: dict, key: str) -> torch.Tensor:
        c = self.config
        sizes = c.kernel_sizes
        size = int(sizes[D.rand_choice(g, len(sizes))])
        sinc_p = c.sinc_prob2 if second else c.sinc_prob
        rec[f"{key}_size"] = size
        if D.rand_uniform(g, 0, 1) < sinc_p:
            # the official cut-off range widens for large kernels (they can represent lower cut-offs)
            low = math.pi / 3 if size < 13 else math.pi / 5
            k, omega = D.random_sinc_kernel(g, size, (low, math.pi))
            rec[f"{key}_type"] = "sinc"
            rec[f"{key}_omega"] = omega
        else:
            k, info = D.random_mixed_kernel(
                g,
                size,
                c.kernel_list2 if second else c.kernel_list,
                c.kernel_prob2 if second else c.kernel_prob,
                c.blur_sigma2 if second else c.blur_sigma,
                (-math.pi, math.pi),
                c.betag_range2 if second else c.betag_range,
                c.betap_range2 if second else c.betap_range,
            )
            rec[f"{key}_type"] = info.pop("type")
            rec.update({f"{key}_{n}": v for n, v in info.items()})
        rec[f"{key}_spread"] = D.kernel_spread(k)
        return k

    def _resize_draw(
        self, g: torch.Generator, probs: Sequence[float], rng: Sequence[float]
    ) -> tuple[str, float, str]:
        kind = _UPDOWN[D.rand_choice(g, 3, probs)]
        if kind == "up":
            scale = D.rand_uniform(g, 1.0, rng[1])
        elif kind == "down":
            scale = D.rand_uniform(g, rng[0], 1.0)
        else:
            scale = 1.0
        mode = _MODES[D.rand_choice(g, 3)]
        return kind, scale, mode

    def _noise_draw(
        self, g: torch.Generator, p_gauss: float, sig: Sequence[float], pois: Sequence[float], p_gray: float
    ) -> tuple[str, float, bool]:
        if D.rand_uniform(g, 0, 1) < p_gauss:
            kind, level = "gaussian", D.rand_uniform(g, *sig)
        else:
            kind, level = "poisson", D.rand_uniform(g, *pois)
        gray = D.rand_uniform(g, 0, 1) < p_gray
        return kind, level, gray

    def sample_params(self, generator: torch.Generator) -> _Draw:
        """Draw the kernels and every random choice of one sample (no noise yet)."""
        c, g = self.config, generator
        rec: dict[str, Any] = {}
        k1 = self._kernel(g, False, rec, "k1")
        k2 = self._kernel(g, True, rec, "k2")
        if D.rand_uniform(g, 0, 1) < c.final_sinc_prob:
            size = int(c.kernel_sizes[D.rand_choice(g, len(c.kernel_sizes))])
            sinc, omega = D.random_sinc_kernel(g, size, (math.pi / 3, math.pi))
            rec.update(final_sinc=True, final_sinc_size=size, final_sinc_omega=omega)
        else:
            sinc = D.pulse_kernel(1)
            rec["final_sinc"] = False
        rec["resize1"], rec["scale1"], rec["mode1"] = self._resize_draw(g, c.resize_prob, c.resize_range)
        n, lvl, gray = self._noise_draw(
            g, c.gaussian_noise_prob, c.noise_range, c.poisson_scale_range, c.gray_noise_prob
        )
        rec["noise1"], rec["noise1_level"], rec["noise1_gray"] = n, lvl, gray
        rec["jpeg1_q"] = D.rand_uniform(g, *c.jpeg_range)
        rec["blur2"] = D.rand_uniform(g, 0, 1) < c.second_blur_prob
        rec["resize2"], rec["scale2"], rec["mode2"] = self._resize_draw(g, c.resize_prob2, c.resize_range2)
        n, lvl, gray = self._noise_draw(
            g, c.gaussian_noise_prob2, c.noise_range2, c.poisson_scale_range2, c.gray_noise_prob2
        )
        rec["noise2"], rec["noise2_level"], rec["noise2_gray"] = n, lvl, gray
        first = D.rand_uniform(g, 0, 1) < c.final_order_prob
        rec["final_order"] = "resize_sinc_then_jpeg" if first else "jpeg_then_resize_sinc"
        rec["mode3"] = _MODES[D.rand_choice(g, 3)]
        rec["jpeg2_q"] = D.rand_uniform(g, *c.jpeg_range2)
        return _Draw(k1, k2, sinc, rec)

    # ---- pipeline --------------------------------------------------------------------------------------------

    @staticmethod
    def _noise(x: torch.Tensor, rec: dict, stage: int, g: torch.Generator) -> torch.Tensor:
        kind, level, gray = rec[f"noise{stage}"], rec[f"noise{stage}_level"], rec[f"noise{stage}_gray"]
        if kind == "gaussian":
            return D.add_gaussian_noise(x, level, gray, g, clip=True)
        return D.add_poisson_noise(x, level, gray, g, clip=True)

    def _degrade_one(self, x: torch.Tensor, draw: _Draw, g: torch.Generator, h: int, w: int) -> torch.Tensor:
        """Stages 1–2 and the final step for one (1, 3, H, W) sharpened GT."""
        sf, rec = self.config.scale, draw.rec
        # stage 1
        out = D.filter2d(x, draw.kernel1)
        out = D.resize(out, scale=rec["scale1"], mode=rec["mode1"])
        rec["size1"] = int(out.shape[-2])
        out = self._noise(out, rec, 1, g)
        out = D.jpeg_compress(out.clamp(0, 1), rec["jpeg1_q"])
        # stage 2
        if rec["blur2"]:
            out = D.filter2d(out, draw.kernel2)
        size2 = (int(h / sf * rec["scale2"]), int(w / sf * rec["scale2"]))
        out = D.resize(out, size=size2, mode=rec["mode2"])
        rec["size2"] = size2[0]
        out = self._noise(out, rec, 2, g)
        # final: [resize back + sinc] and JPEG in random order
        lr_size = (h // sf, w // sf)
        if rec["final_order"] == "resize_sinc_then_jpeg":
            out = D.filter2d(D.resize(out, size=lr_size, mode=rec["mode3"]), draw.sinc)
            rec["jpeg2_in"] = lr_size[0]
            out = D.jpeg_compress(out.clamp(0, 1), rec["jpeg2_q"])
        else:
            rec["jpeg2_in"] = int(out.shape[-2])
            out = D.jpeg_compress(out.clamp(0, 1), rec["jpeg2_q"])
            out = D.filter2d(D.resize(out, size=lr_size, mode=rec["mode3"]), draw.sinc)
        return out.clamp(0, 1)

    def forward(
        self,
        gt: torch.Tensor,
        generator: torch.Generator | Sequence[torch.Generator],
        return_params: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor] | tuple[torch.Tensor, torch.Tensor, list[dict[str, Any]]]:
        """Degrade a batch of GT crops.

        Args:
            gt: (B, 3, H, W) float RGB in [0, 1]; H and W divisible by ``config.scale``.
            generator: one generator for the batch or one per sample.
            return_params: also return one record per sample of every drawn parameter (kernel types, sizes,
                sigmas/betas/cut-offs, ``*_spread``, resize types/scales/modes and sizes, noise kinds/levels/grey,
                JPEG qualities, second-blur coin, final order).

        Returns:
            ``(lr, gt_usm)`` or ``(lr, gt_usm, params)``: lr (B, 3, H/scale, W/scale) float in [0, 1]; gt_usm the
            sharpened GT (B, 3, H, W) in [0, 1] (``gt`` itself when ``use_usm`` is False), both in ``gt.dtype``.
        """
        c = self.config
        if gt.ndim != 4 or gt.shape[1] != 3:
            raise ValueError(f"gt must be (B, 3, H, W), got shape {tuple(gt.shape)}")
        b, _, h, w = gt.shape
        if h % c.scale or w % c.scale:
            raise ValueError(f"GT size {h}x{w} must be divisible by the scale {c.scale}")
        if min(h, w) < 8 * c.scale:
            raise ValueError(f"GT size {h}x{w} too small; need at least {8 * c.scale} px per side")
        if isinstance(generator, torch.Generator):
            gens = [generator] * b
        else:
            gens = list(generator)
            if len(gens) != b:
                raise ValueError(f"got {len(gens)} generators for a batch of {b}")
        draws = [self.sample_params(g) for g in gens]
        work = gt if gt.dtype in (torch.float32, torch.float64) else gt.float()
        if c.use_usm:
            work = D.usm_sharpen(work, radius=c.usm_radius, weight=c.usm_weight, threshold=c.usm_threshold)
        lr = torch.cat([self._degrade_one(work[i : i + 1], draws[i], gens[i], h, w) for i in range(b)])
        lr, gt_out = lr.to(gt.dtype), (work.to(gt.dtype) if c.use_usm else gt)
        if return_params:
            return lr, gt_out, [d.rec for d in draws]
        return lr, gt_out
