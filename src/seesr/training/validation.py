"""Periodic validation images during stage-2 training (issue 6): the current weights run through the one inference
pipeline (:class:`seesr.pipeline.pipeline.SeeSRPipeline`, DESIGN.md §2.1) on a few LR images."""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger(__name__)


def run_validation(cfg: Any, models: Any, folder: Path) -> dict[str, torch.Tensor]:
    """Upscale ``cfg.validation_images`` with ``validation_inference_steps`` DDPM steps (seed 42 each, process size =
    the training resolution) and save PNGs.

    Args:
        cfg: :class:`~seesr.training.config.TrainSeeSRConfig`.
        models: :class:`~seesr.training.models.SeeSRTrainModels` (unwrapped, on the training device).
        folder: output folder (created).

    Returns:
        ``{file stem: (3, H, W) float in [0, 1]}`` for logging.
    """
    from seesr.config import SamplingConfig
    from seesr.io import save_image
    from seesr.pipeline.pipeline import SeeSRPipeline
    from seesr.training.data import read_rgb

    if models.soft_prompt is None:
        raise ValueError("validation images need the DAPE soft prompt (use_rca: true)")
    scheduler = copy.deepcopy(models.noise_scheduler)
    pipe = SeeSRPipeline(
        vae=models.vae,
        text_encoder=models.text_encoder,
        tokenizer=models.tokenizer,
        scheduler=scheduler,
        unet=models.unet,
        controlnet=models.controlnet,
        dape=models.soft_prompt,
    )
    models.unet.eval()
    models.controlnet.eval()
    folder.mkdir(parents=True, exist_ok=True)
    # process at the training resolution (= the official 512 for the paper's recipes)
    sampling = SamplingConfig(
        num_inference_steps=cfg.validation_inference_steps, process_size=cfg.data.resolution, seed=42
    )
    images: dict[str, torch.Tensor] = {}
    for path in map(Path, cfg.validation_images):
        lr = read_rgb(path)[None]
        result = pipe(lr, sampling, show_progress=False)
        img = result.image[0].float().clamp(0, 1)
        save_image(folder / f"{path.stem}.png", img.permute(1, 2, 0).numpy())
        images[path.stem] = img
    logger.info("validation images written to %s", folder)
    return images
