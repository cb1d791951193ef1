"""Schedulers and the LR-embedding start (paper §3.4 "LR embedding", spec §1.5 step 6, §1.6, §9 item 1).

SeeSR noises the VAE latent of the LR image to a start timestep instead of starting from pure noise. Official:
DDPM, the latent noised to t = 999 while the leading-spaced schedule starts at 981 (50 steps). Any diffusers
scheduler can be used here; the LR latent is noised in the variance-preserving form and converted to the
scheduler's own parameterisation (sigma space for Euler-type schedulers).
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    UniPCMultistepScheduler,
)
from diffusers.schedulers.scheduling_utils import SchedulerMixin

SCHEDULERS: dict[str, type[SchedulerMixin]] = {
    "ddpm": DDPMScheduler,
    "ddim": DDIMScheduler,
    "dpmsolver++": DPMSolverMultistepScheduler,
    "unipc": UniPCMultistepScheduler,
    "euler": EulerDiscreteScheduler,
}


def build_scheduler(
    base_config: dict[str, Any], name: str, timestep_spacing: str | None = None
) -> SchedulerMixin:
    """A fresh scheduler of kind ``name`` from an SD-2 ``scheduler_config.json`` (any ``_class_name``).

    Raises:
        ValueError: unknown scheduler name.
    """
    cls = SCHEDULERS.get(name)
    if cls is None:
        raise ValueError(f"unknown scheduler {name!r}; expected one of {', '.join(SCHEDULERS)}")
    overrides: dict[str, Any] = {}
    if timestep_spacing is not None:
        if timestep_spacing not in ("leading", "trailing", "linspace"):
            raise ValueError(
                f"timestep_spacing must be leading, trailing or linspace, got {timestep_spacing!r}"
            )
        overrides["timestep_spacing"] = timestep_spacing
    if name == "dpmsolver++":
        overrides["algorithm_type"] = "dpmsolver++"
    return cls.from_config(dict(base_config), **overrides)


def alphas_cumprod(scheduler: SchedulerMixin) -> torch.Tensor:
    """ᾱ_t for t = 0..T-1 (float32, CPU) of ``scheduler``'s beta schedule."""
    ac = getattr(scheduler, "alphas_cumprod", None)
    if ac is None:
        raise ValueError(f"{type(scheduler).__name__} has no alphas_cumprod; cannot place the LR latent")
    return ac.detach().to("cpu", torch.float32)


def uses_sigma_space(scheduler: SchedulerMixin) -> bool:
    """Euler-type schedulers keep x = x0 + σ·ε (``init_noise_sigma`` > 1)."""
    return isinstance(scheduler, EulerDiscreteScheduler)


def resolve_start_timestep(scheduler: SchedulerMixin, start_timestep: int | str) -> int:
    """The timestep the LR latent is noised to: an integer, or "first" = the first sampled timestep."""
    if start_timestep == "first":
        return int(scheduler.timesteps[0])
    return int(start_timestep)


def noise_lr_latent(
    scheduler: SchedulerMixin, z_lr: torch.Tensor, noise: torch.Tensor, start_timestep: int
) -> torch.Tensor:
    """LR embedding: place the LR latent at ``start_timestep``.

    Args:
        z_lr: (B, 4, h, w) scaled LR latent.
        noise: (B, 4, h, w) standard normal draw.

    Returns:
        Initial latents in the scheduler's space: √ᾱ·z + √(1−ᾱ)·ε (DDPM/DDIM/DPM/UniPC, computed in ``z_lr``'s
        dtype as diffusers' ``add_noise`` does), or z + σ·ε with σ = √((1−ᾱ)/ᾱ) for Euler-type schedulers.
    """
    if isinstance(scheduler, DDPMScheduler | DDIMScheduler):
        t = torch.tensor([start_timestep], dtype=torch.long, device=z_lr.device)
        return scheduler.add_noise(z_lr, noise, t)
    ac = alphas_cumprod(scheduler)[start_timestep].to(torch.float64)
    if uses_sigma_space(scheduler):
        sigma = float(((1 - ac) / ac).sqrt())
        return z_lr + sigma * noise
    return float(ac.sqrt()) * z_lr + float((1 - ac).sqrt()) * noise


def ddpm_step_kwargs(scheduler: SchedulerMixin, generator: torch.Generator | None) -> dict[str, Any]:
    """Extra ``step`` kwargs: the generator where the scheduler draws noise."""
    if isinstance(
        scheduler, DDPMScheduler | DDIMScheduler | EulerDiscreteScheduler | DPMSolverMultistepScheduler
    ):
        return {"generator": generator}
    return {}
