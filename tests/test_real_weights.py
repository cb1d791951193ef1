"""Checks on the officially released weights (``-m real_weights``; needs SEESR_WEIGHTS from `seesr download`)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.real_weights

WEIGHTS = os.environ.get("SEESR_WEIGHTS")


@pytest.fixture(scope="module")
def release():
    if not WEIGHTS:
        pytest.skip("set SEESR_WEIGHTS to a folder made by `seesr download`")
    from seesr.pipeline.pipeline import SeeSRPipeline

    device = "cuda" if torch.cuda.is_available() else "cpu"
    return SeeSRPipeline.from_pretrained(
        Path(WEIGHTS), device=device, dtype="fp16" if device == "cuda" else None
    )


def test_release_loads_strictly_with_official_counts(release):
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(release.unet) == 1_126_760_324
    assert count(release.controlnet) == 489_031_440
    assert release.unet.num_rca_modules == 16 and release.controlnet.num_rca_modules == 7
    assert release.dape is not None and release.dape.num_classes == 4585


def test_release_upscales_a_photo(release):
    from seesr.config import SamplingConfig

    g = torch.Generator().manual_seed(0)
    lr = torch.rand(1, 3, 128, 128, generator=g)
    result = release(lr, SamplingConfig(num_inference_steps=4, seed=0), show_progress=False)
    assert tuple(result.image.shape) == (1, 3, 512, 512)
    assert bool(torch.isfinite(result.image).all())
