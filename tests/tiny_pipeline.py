"""Builds the tiny SeeSR pipeline from a folder in the fixtures' layout: ../shared/fixtures (official-format random
weights) or its stand-in written in code by :func:`tests.tiny_models.write_tiny_weights` (``tiny_weights_dir``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image


def official_parts(fixtures: Path, *, turbo: bool = False) -> dict:
    ram = fixtures / "ram-tiny"
    parts = dict(
        sd2=fixtures / "sd2-tiny",
        seesr=fixtures / "seesr-tiny",
        ram=ram / "ram_tiny.pth",
        dape=ram / "DAPE_tiny.pth",
        tag_list=ram / "ram_tag_list.txt",
        thresholds=ram / "ram_tag_list_threshold.txt",
        dape_arch=ram / "arch.json",
    )
    if turbo:
        parts["turbo_unet"] = fixtures / "sd2turbo-tiny"
    return parts


def build_tiny_pipeline(fixtures: Path, *, turbo: bool = False):
    from seesr.pipeline.pipeline import SeeSRPipeline

    return SeeSRPipeline.from_official(**official_parts(fixtures, turbo=turbo), device="cpu")


def load_lr(fixtures: Path, name: str) -> torch.Tensor:
    """(1, 3, h, w) float in [0, 1] from reference/lr/<name>.png."""
    arr = np.asarray(
        Image.open(fixtures / "reference" / "lr" / f"{name}.png").convert("RGB"), dtype=np.float32
    )
    return torch.from_numpy(arr / 255).permute(2, 0, 1)[None]


class RecordedNoise:
    """Noise source replaying the official global-RNG posterior draw; the rest from a CPU generator."""

    def __init__(self, posterior_eps: torch.Tensor, seed: int = 42) -> None:
        self.posterior_eps = posterior_eps
        self.generator = torch.Generator().manual_seed(seed)

    def randn(self, name: str, shape: tuple[int, ...]) -> torch.Tensor:
        if name == "vae_posterior_eps":
            assert tuple(self.posterior_eps.shape) == tuple(shape), (self.posterior_eps.shape, shape)
            return self.posterior_eps
        return torch.randn(shape, generator=self.generator)
