"""Guided noise prediction of one denoising step, with per-image work done once (DESIGN.md §5 step 5).

:class:`GuidedDenoiser` is built once per ``__call__`` and called once per step. What does not change between
steps is prepared in ``__init__`` or on first use and kept:

* the CFG rows of the text embeddings and of the soft prompt (cast to the model dtype once);
* the tile grid and the Gaussian weight maps;
* the ControlNet conditioning embedding of each tile's condition crop (the LR condition is the same at every
  step), kept per tile; :func:`cond_cache_bytes` tells a memory planner what that costs.

Several tiles of the same size can run in one ControlNet/UNet call (``tile_batch``); the result equals the
one-tile loop up to float round-off, because tiles are accumulated in the same order.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from seesr.config import SamplingConfig, TilingConfig
from seesr.pipeline import tiling as latent_tiling
from seesr.pipeline.sizing import as_unit_float
from seesr.pipeline.tiling import TileBox, TileSplit


def cond_cache_bytes(
    controlnet: Any, tile_h: int, tile_w: int, *, images: int = 1, dtype: torch.dtype | None = None
) -> int:
    """Bytes the cached conditioning embedding of one latent tile takes.

    Args:
        controlnet: the ControlNet (its ``config.block_out_channels[0]`` is the embedding width).
        tile_h: latent tile height.
        tile_w: latent tile width.
        images: images denoised together (batch).
        dtype: cache dtype (default: the ControlNet's).

    Returns:
        ``images x C0 x tile_h x tile_w x itemsize`` (one row per image: the CFG rows share it).
    """
    channels = int(controlnet.config.block_out_channels[0])
    itemsize = torch.empty((), dtype=dtype or controlnet.dtype).element_size()
    return images * channels * tile_h * tile_w * itemsize


class GuidedDenoiser:
    """``eps = denoiser(latents, t, scheduler)``: ControlNet -> UNet (+RCA) with CFG, tiled when large.

    Args:
        unet: the SeeSR UNet.
        controlnet: the SeeSR ControlNet.
        cond: (B, 3, 8h, 8w) condition images in [0, 1], or their uint8 codes (``sizing.as_unit_float``).
        prompt_embeds: (2B, 77, D) = [negatives..., positives...] under CFG, else (B, 77, D).
        image_embeds: (B, 145, 512) soft prompts, or None when RCA is bypassed.
        sampling: sampling settings (guidance, conditioning scale, faithful).
        tiling_cfg: tiling settings (tile size, overlap, ``tile_batch``).
        latent_hw: latent ``(h, w)``.
        split: share the tiles with other processes (one all-reduce per step); None runs them all here.
        cache_cond: keep each tile's condition embedding for the next steps (False: recompute it per step,
            e.g. for a one-step run, where the cache would only cost memory).
    """

    def __init__(
        self,
        unet: Any,
        controlnet: Any,
        cond: torch.Tensor,
        prompt_embeds: torch.Tensor,
        image_embeds: torch.Tensor | None,
        sampling: SamplingConfig,
        tiling_cfg: TilingConfig,
        latent_hw: tuple[int, int],
        *,
        split: TileSplit | None = None,
        cache_cond: bool = True,
    ) -> None:
        self.unet, self.controlnet, self.sampling = unet, controlnet, sampling
        self.do_cfg = sampling.guidance_scale > 1.0
        self.rows = 2 if self.do_cfg else 1
        dtype = unet.dtype
        self.text = prompt_embeds.to(unet.device, dtype)
        self.embeds = (
            None if image_embeds is None else torch.cat([image_embeds] * self.rows).to(unet.device, dtype)
        )
        # uint8 codes stay as they are (on the CPU) and become float per tile crop: one small copy of the image
        self.cond = cond if cond.dtype == torch.uint8 else cond.to(controlnet.device, controlnet.dtype)
        self.images = cond.shape[0]
        h, w = latent_hw
        tile, overlap = tiling_cfg.latent_tile_size, tiling_cfg.latent_tile_overlap
        self.tile_batch = tiling_cfg.tile_batch
        self.boxes: list[TileBox] | None = None
        if latent_tiling.needs_tiling(h, w, tile, faithful=sampling.faithful):
            self.boxes = latent_tiling.tile_boxes(h, w, tile, overlap, faithful=sampling.faithful)
        self._cond_cache: dict[TileBox | None, torch.Tensor] = {}
        self.cache_cond = cache_cond
        self.split = split

    def cache_bytes(self) -> int:
        """Bytes held by the per-tile condition-embedding cache now."""
        return sum(t.numel() * t.element_size() for t in self._cond_cache.values())

    def _cond_embedding(self, box: TileBox | None) -> torch.Tensor:
        """(B, C0, th, tw) conditioning embedding of one tile, computed on first use (kept if ``cache_cond``)."""
        cached = self._cond_cache.get(box)
        if cached is not None:
            return cached
        c = self.cond if box is None else self.cond[..., 8 * box.y0 : 8 * box.y1, 8 * box.x0 : 8 * box.x1]
        c = as_unit_float(c).to(self.controlnet.device, self.controlnet.dtype)
        # the CFG rows see the same condition: embed each image once and repeat the result per step
        emb = self.controlnet.embed_condition(c)
        if self.cache_cond:
            self._cond_cache[box] = emb
        return emb

    def _run(self, x: torch.Tensor, t: torch.Tensor, boxes: list[TileBox | None]) -> torch.Tensor:
        """One ControlNet + UNet call on ``len(boxes)`` tiles stacked along the batch (each rows·B deep)."""
        n = len(boxes)
        emb = torch.cat([self._cond_embedding(b).repeat(self.rows, 1, 1, 1) for b in boxes])
        text = self.text.repeat(n, 1, 1) if n > 1 else self.text
        embeds = self.embeds
        if embeds is not None and n > 1:
            embeds = embeds.repeat(n, 1, 1)
        bypass = embeds is None
        down, mid = self.controlnet(
            x,
            t,
            text,
            x,  # not read: the embedding is precomputed
            conditioning_scale=self.sampling.conditioning_scale,
            image_encoder_hidden_states=embeds,
            bypass_rca=bypass,
            cond_embedding=emb,
            return_dict=False,
        )
        return self.unet(
            x,
            t,
            text,
            down_block_additional_residuals=down,
            mid_block_additional_residual=mid,
            image_encoder_hidden_states=embeds,
            bypass_rca=bypass,
            return_dict=False,
        )[0]

    def __call__(
        self,
        latents: torch.Tensor,
        t: torch.Tensor,
        scheduler: SchedulerMixin,
        trace: dict[str, torch.Tensor] | None = None,
        step: int = 0,
    ) -> torch.Tensor:
        """(B, 4, h, w) latents at timestep ``t`` -> (B, 4, h, w) guided model output.

        The output is float32 when tiled in faithful mode (as the official code), else the UNet dtype.
        """
        unet_dtype = self.unet.dtype
        model_in = scheduler.scale_model_input(torch.cat([latents] * self.rows), t).to(unet_dtype)
        rows_b = model_in.shape[0]
        tile_index = 0

        def record(outs: list[torch.Tensor], boxes: list[TileBox | None]) -> None:
            nonlocal tile_index
            if trace is None:
                return
            for out, box in zip(outs, boxes):
                key = f"step{step}/unet_out" if box is None else f"step{step}/tile{tile_index}/unet_out"
                trace[key] = out.detach().float().cpu()
                tile_index += 1

        def many(boxes: list[TileBox]) -> list[torch.Tensor]:
            x = torch.cat([model_in[..., b.y0 : b.y1, b.x0 : b.x1] for b in boxes])
            outs = list(self._run(x, t, list(boxes)).split(rows_b))
            record(outs, list(boxes))
            return outs

        if self.boxes is not None:
            faithful = self.sampling.faithful
            # official float64 weight maps; MPS has no float64
            weight_dtype = torch.float64 if faithful and latents.device.type != "mps" else torch.float32
            out = latent_tiling.tiled_apply_batched(
                many,
                (rows_b, latents.shape[1], *latents.shape[-2:]),
                self.boxes,
                functools.partial(latent_tiling.gaussian_weights, faithful=faithful, dtype=weight_dtype),
                tile_batch=self.tile_batch,
                out_dtype=torch.float32 if faithful else unet_dtype,
                device=latents.device,
                split=self.split,
            )
        elif self.split is not None:  # one tile: rank 0 runs it, the others add zeros (exact)
            ran = self.split.rank == 0
            out = self._run(model_in, t, [None]) if ran else torch.zeros_like(model_in)
            out = self.split.reduce_whole(out, ran)
        else:
            out = self._run(model_in, t, [None])
            record([out], [None])
        if self.do_cfg:
            uncond, text_out = out.chunk(2)
            out = uncond + self.sampling.guidance_scale * (text_out - uncond)
        return out
