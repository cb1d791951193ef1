"""SeeSRPipeline: semantics-aware real-world x4 super-resolution (paper §3.4, spec §1, DESIGN.md §5).

One ``__call__`` runs the numbered steps of DESIGN.md §5 on one LR image:

1. size      ``prepare_image``: enlarge small inputs, x upscale, floor to a multiple of 8 (PIL bicubic)
2. DAPE      ``extract_prompt``: tags (hard prompt) + image embeddings (soft prompt) from the ORIGINAL LR
3. text      ``encode_prompt``: "<tags>, <prompt>,<added prompt>" and the negative prompt -> CLIP embeddings
4. LRE       ``prepare_latents``: VAE latent of the upscaled LR, noised to the start timestep
5. denoise   ``denoise``: ControlNet -> UNet (+RCA) with CFG, tiled when large; scheduler steps
6. decode    ``decode_latents``: VAE decode (tiled when large)
7. colour    colour fix against the upscaled LR; resize to exactly LR x upscale (in bands of rows: ``finish_image``)

``faithful=True`` reproduces the official implementation's quirks (spec §9 items 1, 2, 8, 9, 12); the default
differs only where DESIGN.md §8 says so (per-image generator, side-length tiling rule, symmetric tile weights).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from diffusers import AutoencoderKL, DiffusionPipeline
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from PIL import Image
from transformers import CLIPTextModel, CLIPTokenizer

from seesr.config import ColorFix, SamplingConfig, TilingConfig, config_to_dict
from seesr.models.controlnet import SeeSRControlNet
from seesr.models.dape import DAPE
from seesr.models.unet import SeeSRUNet
from seesr.pipeline import color_fix, schedulers, sizing, stages, vae_tiling
from seesr.pipeline import postprocess as finishing
from seesr.pipeline import tiling as latent_tiling
from seesr.pipeline.denoise import GuidedDenoiser

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int], None]


class NoiseSource(Protocol):
    """Where the pipeline's random draws come from (tests inject recorded draws through this)."""

    def randn(self, name: str, shape: tuple[int, ...]) -> torch.Tensor:
        """A float32 CPU standard-normal tensor of ``shape`` for the draw called ``name``."""
        ...


class GeneratorNoise:
    """Draws from seeded CPU generators, so the same seed gives the same noise on every device.

    ``init_noise`` and the scheduler's step noise come from ``generator``. The VAE posterior draw
    (``vae_posterior_eps``) comes from ``posterior_generator``: the official code draws it from the global RNG
    (spec §9 item 2), which the faithful mode imitates with a second generator seeded like ``set_seed(seed)``.
    """

    def __init__(
        self, generator: torch.Generator, posterior_generator: torch.Generator | None = None
    ) -> None:
        self.generator = generator
        self.posterior_generator = posterior_generator or generator

    def randn(self, name: str, shape: tuple[int, ...]) -> torch.Tensor:
        gen = self.posterior_generator if name == "vae_posterior_eps" else self.generator
        return torch.randn(shape, generator=gen, dtype=torch.float32)


@dataclass
class UpscaleResult:
    """Output of :meth:`SeeSRPipeline.__call__`.

    Attributes:
        image: (1, 3, H, W) RGB on the CPU at ``round(LR size x upscale)``: float32 in [0, 1] by default, or the
            uint8 / uint16 codes asked for with ``output_dtype`` (a channels-last view of one (H, W, 3) array).
        tags: the tags used in the prompt.
        prompt: the full positive prompt.
        settings: JSON-serialisable resolved settings (sampling, tiling, sizes, timesteps).
        trace: named intermediate tensors when requested (``return_trace=True``), else empty.
        timings: seconds per stage of the call (dape, text, vae_encode, denoise, vae_decode, color_fix_resize).
    """

    image: torch.Tensor
    tags: list[str]
    prompt: str
    settings: dict[str, Any]
    trace: dict[str, torch.Tensor] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


def assemble_prompt(tags: list[str], prompt: str, added_prompt: str) -> str:
    """The official prompt: ``f"{', '.join(tags)}, {prompt},"`` + added prompt (spec §1.3 step 3)."""
    return f"{', '.join(tags)}, {prompt}," + added_prompt


class SeeSRPipeline(DiffusionPipeline):
    """SeeSR x4 super-resolution over VAE, CLIP text encoder, scheduler, SeeSRUNet, SeeSRControlNet and DAPE.

    Build it with :meth:`from_official` (the released files, unchanged) or :meth:`from_pretrained` (a folder
    written by :meth:`save_pretrained` or ``seesr download``). ``pipe.to(device)`` moves every model; dtypes are
    chosen at load time (DAPE stays fp32 by default, as the official script runs it).
    """

    #: the largest processed size a call accepts (a runaway enlargement is refused whatever it is); the run layer
    #: (CLI, UI) sets it to ``sizing.NO_PIXEL_CAP`` on the pipelines it loads: its memory plan decides instead
    max_processed_pixels: int = sizing.DEFAULT_MAX_PROCESSED_PIXELS

    # No ``model_cpu_offload_seq``: diffusers' hook-based offload cannot place the DAPE or the tiled VAE's
    # tiles; the tiled VAE and latent tiling bound memory instead.

    def __init__(
        self,
        vae: AutoencoderKL,
        text_encoder: CLIPTextModel,
        tokenizer: CLIPTokenizer,
        scheduler: SchedulerMixin,
        unet: SeeSRUNet,
        controlnet: SeeSRControlNet,
        dape: DAPE | None,
    ) -> None:
        super().__init__()
        self.register_modules(
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            scheduler=scheduler,
            unet=unet,
            controlnet=controlnet,
            dape=dape,
        )

    # ------------------------------------------------------------------ loading (see seesr.pipeline.loading)
    @classmethod
    def from_official(cls, *args: Any, **kwargs: Any) -> SeeSRPipeline:
        """Assemble from the officially released parts; see :func:`seesr.pipeline.loading.load_official`."""
        from seesr.pipeline.loading import load_official

        return load_official(cls, *args, **kwargs)

    @classmethod
    def from_pretrained(cls, directory: str | Path, **kwargs: Any) -> SeeSRPipeline:  # type: ignore[override]
        """Load a folder from :meth:`save_pretrained` or ``seesr download``; see ``loading.load_folder``."""
        from seesr.pipeline.loading import load_folder

        return load_folder(cls, directory, **kwargs)

    def save_pretrained(  # type: ignore[override]
        self, directory: str | Path, *, safe_serialization: bool = True, **kwargs: Any
    ) -> None:
        """Write one self-contained folder (every component in its own sub-folder, DAPE merged).

        Always safetensors; diffusers' other options (``variant``, ``max_shard_size``, ``push_to_hub``, ...) are
        not supported and raise instead of being ignored.
        """
        if not safe_serialization:
            raise ValueError(
                "save_pretrained writes safetensors only; safe_serialization=False is not supported"
            )
        if kwargs:
            raise ValueError(
                f"save_pretrained: unsupported argument(s) {sorted(kwargs)}; only the folder is taken"
            )
        from seesr.pipeline.loading import save_folder

        save_folder(self, directory)

    def enable_model_cpu_offload(self, *args: Any, **kwargs: Any) -> None:
        """Not supported: raises ``NotImplementedError`` (use latent tiling and the tiled VAE to bound memory)."""
        raise NotImplementedError(
            "SeeSRPipeline does not support model CPU offload; bound memory with TilingConfig (latent tiles, tiled VAE)"
        )

    def enable_sequential_cpu_offload(self, *args: Any, **kwargs: Any) -> None:
        """Not supported: raises ``NotImplementedError`` (see :meth:`enable_model_cpu_offload`)."""
        raise NotImplementedError(
            "SeeSRPipeline does not support sequential CPU offload; bound memory with TilingConfig instead"
        )

    # ------------------------------------------------------------------ step 2: DAPE
    @torch.no_grad()
    def extract_prompt(self, lr: torch.Tensor, *, antialias: bool = False) -> tuple[list[str], torch.Tensor]:
        """DAPE on the original LR.

        Args:
            lr: (1, 3, h, w) float in [0, 1], the original LR (before any resizing, spec §1.4).
            antialias: antialias the 384-px resize (official: False).

        Returns:
            ``(tags, image_embeds)``: tag names in tag-list order and the (1, 145, 512) soft prompt.
        """
        if self.dape is None:
            raise ValueError("this pipeline has no DAPE: pass tags= and image_embeds=, or prompt_mode='none'")
        out = self.dape(lr.to(self.dape.device, self.dape.dtype), antialias=antialias)
        return out.tags[0], out.image_embeds

    def extract_tags(self, image: torch.Tensor | Image.Image) -> list[str]:
        """DAPE tags of an LR image ((1, 3, h, w) float in [0, 1], or a PIL image)."""
        return self.extract_prompt(_as_tensor(image))[0]

    # ------------------------------------------------------------------ step 3: text
    @torch.no_grad()
    def encode_prompt(
        self, prompt: str, negative_prompt: str, do_cfg: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """CLIP-encode the prompt (and the negative prompt for CFG), padded to 77 tokens, no attention mask.

        Returns:
            ``(prompt_embeds, prompt_input_ids)``: (2, 77, D) = [negative, positive] with CFG, else (1, 77, D);
            and the (1, 77) token ids of the positive prompt.
        """
        ids = self._tokenize(prompt)
        embeds = self.text_encoder(ids.to(self.text_encoder.device))[0]
        if do_cfg:
            neg = self.text_encoder(self._tokenize(negative_prompt).to(self.text_encoder.device))[0]
            embeds = torch.cat([neg, embeds])
        return embeds, ids

    def _tokenize(self, text: str) -> torch.Tensor:
        return self.tokenizer(
            text,
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids

    # ------------------------------------------------------------------ step 4: LRE
    @torch.no_grad()
    def encode_lr(
        self, lr_up: torch.Tensor, noise: NoiseSource, *, batch: int, tiling_cfg: TilingConfig
    ) -> torch.Tensor:
        """Scaled LR latent ``z_lr`` = posterior sample of VAE(2·lr_up − 1) x scaling factor.

        Args:
            lr_up: (1, 3, H, W) condition image: float in [0, 1] or its uint8 codes (``sizing.as_unit_float``).
            batch: rows of the posterior draw (official: the CFG-doubled batch, row 0 used).

        Returns:
            (1, 4, H/8, W/8) scaled latents in the VAE dtype.
        """
        vae = self.vae

        def to_network(crop: torch.Tensor) -> torch.Tensor:  # per tile: the full-size input never exists
            return sizing.as_unit_float(crop).mul(2).sub_(1).to(vae.device, vae.dtype)

        h = vae_tiling.tiled_encode(
            vae.encoder,
            lr_up,
            tiling_cfg.vae_encoder_tile_size,
            out_dtype=vae.dtype,
            offload_device=_offload(vae),
            prepare=to_network,
            **vae_tiling.mode_kwargs(tiling_cfg),
        )
        if vae.quant_conv is not None:
            h = vae.quant_conv(h)
        posterior = DiagonalGaussianDistribution(h)
        eps = noise.randn("vae_posterior_eps", (batch, *posterior.mean.shape[1:]))[:1]
        z = posterior.mean + posterior.std * eps.to(posterior.mean.device, posterior.mean.dtype)
        return z * vae.config.scaling_factor

    # ------------------------------------------------------------------ step 5: denoise
    def _predict_noise(
        self,
        latents: torch.Tensor,
        t: torch.Tensor,
        denoiser: GuidedDenoiser,
        scheduler: SchedulerMixin,
        trace: dict[str, torch.Tensor] | None,
        step: int,
    ) -> torch.Tensor:
        """One guided noise prediction: (B, 4, h, w) -> (B, 4, h, w) (a seam for tests)."""
        return denoiser(latents, t, scheduler, trace, step)

    # ------------------------------------------------------------------ the whole thing
    @torch.no_grad()
    def __call__(
        self,
        image: torch.Tensor | Image.Image | Sequence[torch.Tensor | Image.Image],
        sampling: SamplingConfig | None = None,
        tiling: TilingConfig | None = None,
        *,
        tags: list[str] | None = None,
        image_embeds: torch.Tensor | None = None,
        callback: ProgressCallback | None = None,
        noise: NoiseSource | Sequence[NoiseSource] | None = None,
        return_trace: bool = False,
        show_progress: bool = True,
        tile_reducer: latent_tiling.TileReducer | None = None,
        output_dtype: torch.dtype = torch.float32,
    ) -> Any:
        """Super-resolve one LR image, or a batch of LR images of one size in one denoising loop.

        Args:
            image: the LR image: (1, 3, h, w) or (3, h, w) float in [0, 1] RGB, or a PIL image; or a batch: a
                list of such images (all the same size) or a (B, 3, h, w) tensor.
            sampling: sampling settings (default :class:`SamplingConfig`).
            tiling: tiling settings (default :class:`TilingConfig`).
            tags: use these tags instead of DAPE's (the soft prompt still comes from DAPE); for every image.
            image_embeds: (B, 145, 512) soft prompts (one row per image) to use instead of DAPE's.
            callback: called as ``callback(step, total)`` after each denoising step; raise to cancel.
            noise: source of random draws, one per image (default: a fresh generator seeded by
                ``sampling.seed`` per image, so an image's result does not depend on its batch). A custom source
                must have a ``.generator`` (``torch.Generator``) when the scheduler draws step noise.
            return_trace: keep named intermediate tensors in ``result.trace`` (for tests and debugging).
            show_progress: show a tqdm bar over the denoising steps.
            tile_reducer: the processes sharing this call's latent tiles (every one of them makes the same
                call): each runs its share of the tiles and one all-reduce per step sums the weighted outputs;
                the result equals the unsplit one up to float32 summation round-off (so not with
                ``faithful``). Everything else (DAPE, text, VAE encode and decode) runs on every process.
            output_dtype: dtype of ``result.image``: ``torch.float32`` (values in [0, 1]), or ``torch.uint8`` /
                ``torch.uint16``, the codes an image writer makes of the float result (``round(x * 255)`` /
                ``round(x * 65535)``), so that a large result is held once, in the bytes it is written in.

        Returns:
            For one image an :class:`UpscaleResult` with the (1, 3, H, W) image (``output_dtype``) at
            ``round(LR x upscale)``; for a batch a list of them, in input order. Each image of a batch equals
            the same image run alone up to float round-off.

        Raises:
            ValueError: for an image of the wrong shape or range, images of different sizes in one batch,
                inconsistent settings, or a noise source without a generator.
        """
        images, single = _as_batch(image)
        count = len(images)
        sampling = sampling or SamplingConfig()
        tiling_cfg = tiling or TilingConfig()
        trace: dict[str, torch.Tensor] | None = {} if return_trace else None
        device = self.unet.device
        noises = _noise_sources(noise, count, sampling)
        split = None
        if tile_reducer is not None:
            if sampling.faithful:
                raise ValueError(
                    "tile_reducer cannot be combined with faithful=True: split tiles are summed in another order, "
                    "so the result is not bit-identical to the official code"
                )
            split = latent_tiling.TileSplit(tile_reducer)
        if image_embeds is not None and image_embeds.shape[0] != count:
            raise ValueError(
                f"image_embeds must have one row per image ({count}), got {tuple(image_embeds.shape)}"
            )

        # 1. size
        plan = sizing.plan_sizes(
            (images[0].shape[-1], images[0].shape[-2]),
            sampling.upscale,
            sampling.process_size,
            max_pixels=self.max_processed_pixels,
        )
        for other in images[1:]:
            if other.shape != images[0].shape:
                raise ValueError(
                    f"images of one batch must have one size, got {tuple(images[0].shape)} and {tuple(other.shape)}"
                )
        quantize = [sampling.faithful or sizing.is_8bit(lr) for lr in images]
        # held once for the whole call, on the CPU: uint8 codes on the 8-bit chain (converted per tile / band)
        conds = [sizing.prepare_condition(lr, plan, quantize=q) for lr, q in zip(images, quantize)]
        if len({c.dtype for c in conds}) > 1:
            conds = [sizing.as_unit_float(c) for c in conds]
        lr_up = torch.cat(conds)
        del conds

        clock = stages.StageClock(device)
        # 2. DAPE (per image: tags differ)
        use_soft = sampling.prompt_mode in ("full", "soft_only")
        use_hard = sampling.prompt_mode in ("full", "hard_only")
        all_tags: list[list[str]] = []
        soft_rows: list[torch.Tensor] = []
        for k, lr in enumerate(images):
            dape_tags: list[str] = []
            embeds_k = None if image_embeds is None else image_embeds[k : k + 1]
            if embeds_k is None and (use_soft or (use_hard and tags is None)):
                with clock.stage("dape"):
                    dape_tags, embeds_k = self.extract_prompt(lr)
            all_tags.append((list(tags) if tags is not None else dape_tags) if use_hard else [])
            if use_soft and embeds_k is not None:
                soft_rows.append(embeds_k)
        soft = torch.cat(soft_rows) if use_soft and soft_rows else None

        # 3. text: rows [negatives..., positives...] so that the CFG halves are chunk(2)
        do_cfg = sampling.guidance_scale > 1.0
        prompts = [assemble_prompt(t, sampling.prompt, sampling.added_prompt) for t in all_tags]
        with clock.stage("text"):
            encoded = [self.encode_prompt(p, sampling.negative_prompt, do_cfg) for p in prompts]
        halves = [torch.cat([e[0][r : r + 1] for e in encoded]) for r in range(2 if do_cfg else 1)]
        prompt_embeds = torch.cat(halves)

        # 4. scheduler + LRE
        scheduler = schedulers.build_scheduler(
            self.scheduler.config, sampling.scheduler, sampling.timestep_spacing
        )
        scheduler.set_timesteps(sampling.num_inference_steps, device=device)
        timesteps = scheduler.timesteps
        h, w = plan.latent_hw
        init_noise = torch.cat([n.randn("init_noise", (1, 4, h, w)) for n in noises]).to(device)
        start_t = schedulers.resolve_start_timestep(scheduler, sampling.start_timestep)
        if sampling.start_point == "lr":
            rows = 2 if (do_cfg and sampling.faithful) else 1
            with clock.stage("vae_encode"):
                z_lr = torch.cat(
                    [
                        self.encode_lr(lr_up[k : k + 1], noises[k], batch=rows, tiling_cfg=tiling_cfg)
                        for k in range(count)
                    ]
                )
            latents = schedulers.noise_lr_latent(scheduler, z_lr.to(init_noise.dtype), init_noise, start_t)
        else:
            z_lr = None
            latents = init_noise * scheduler.init_noise_sigma
        latents = latents.to(self.unet.dtype)
        if trace is not None:
            ids = torch.cat([e[1] for e in encoded])
            trace.update(lr_up=sizing.as_unit_float(lr_up), prompt_input_ids=ids)
            trace.update(prompt_embeds=prompt_embeds.float().cpu())
            trace.update(init_noise=init_noise.cpu(), x_T=latents.float().cpu(), timesteps=timesteps.cpu())
            if z_lr is not None:
                trace["z_lr"] = z_lr.float().cpu()
            if soft is not None:
                trace["image_embeds"] = soft.float().cpu()

        # 5. denoise
        step_kwargs = schedulers.ddpm_step_kwargs(scheduler, None)
        if step_kwargs:
            gens = [_step_generator(n) for n in noises]
            step_kwargs["generator"] = gens[0] if single else gens
        denoiser = GuidedDenoiser(
            self.unet,
            self.controlnet,
            lr_up,
            prompt_embeds,
            soft,
            sampling,
            tiling_cfg,
            (h, w),
            split=split,
            cache_cond=len(timesteps)
            > 1,  # one step reads each embedding once: a cache would only hold memory
        )
        total = len(timesteps)
        if split is not None:
            with clock.stage("split_wait"):
                split.line_up(device)
        for i, t in enumerate(self.progress_bar(timesteps) if show_progress else timesteps):
            with clock.stage("denoise"):
                eps = self._predict_noise(latents, t, denoiser, scheduler, trace, i)
                latents_in = latents
                latents = scheduler.step(eps, t, latents, **step_kwargs, return_dict=False)[0]
            if trace is not None:
                trace[f"step{i}/t"] = t.cpu()
                trace[f"step{i}/latents_in"] = latents_in.float().cpu()
                trace[f"step{i}/eps"] = eps.float().cpu()
                trace[f"step{i}/latents_out"] = latents.float().cpu()
            if callback is not None:
                callback(i + 1, total)
        del denoiser  # frees the per-tile caches before decoding

        # 6. decode, 7. colour fix + final size (per image: bounded memory)
        settings = {
            "sampling": config_to_dict(sampling),
            "tiling": config_to_dict(tiling_cfg),
            "sizes": {
                k: list(getattr(plan, k)) for k in ("lr", "enlarged", "upscaled", "processed", "target")
            },
            "timesteps": [int(x) for x in timesteps.tolist()],
            "start_timestep": start_t if sampling.start_point == "lr" else None,
            "latent_tiled": latent_tiling.needs_tiling(
                h, w, tiling_cfg.latent_tile_size, faithful=sampling.faithful
            ),
            "dtype": str(self.unet.dtype).removeprefix("torch."),
            "device": str(device),
        }
        if split is not None:
            settings["tile_split"] = {
                "world_size": split.reducer.world_size,
                "tiles_per_rank": split.tiles_per_rank,
            }
        # AdaIN needs only the condition image's statistics and "none" nothing of it: take those and free it
        # before decoding (3 B/px on the 8-bit chain, 12 on the float one). The trace keeps it.
        references: list[torch.Tensor | color_fix.Stats | None] = [lr_up[k : k + 1] for k in range(count)]
        if trace is None and sampling.color_fix in ("adain", "none"):
            with clock.stage("color_fix_resize"):
                references = [
                    finishing.reference_stats(lr_up[k : k + 1], quantize=quantize[k], target_wh=plan.target)
                    if sampling.color_fix == "adain"
                    else None
                    for k in range(count)
                ]
            del lr_up
        results = []
        for k in range(count):
            with clock.stage("vae_decode"):
                # on the 8-bit chain the decoder writes the output's uint8 codes tile by tile (a quarter of the
                # bytes of a full-size float array); the trace needs the float output
                decoded = self.decode_latents(
                    latents[k : k + 1], tiling_cfg, codes=quantize[k] and trace is None
                )
            with clock.stage("color_fix_resize"):
                out = finishing.finish_image(
                    decoded,
                    references[k],
                    sampling.color_fix,
                    plan.target,
                    quantize=quantize[k],
                    out_dtype=output_dtype,
                    overwrite=trace is None,  # the result may take the decoder output's memory
                )
            item_trace = trace
            if trace is not None:
                sr = postprocess(decoded, lr_up[k : k + 1], "none", plan.processed, quantize=quantize[k])[0]
                item_trace = dict(trace) if count > 1 else trace
                item_trace.update(decoded=decoded.float().cpu(), pipeline_out=sr)
            del decoded
            results.append(
                UpscaleResult(
                    image=out,
                    tags=all_tags[k],
                    prompt=prompts[k],
                    settings=dict(settings),
                    trace=item_trace or {},
                )
            )
        for r in results:  # seconds of the whole call (a batch shares its stages)
            r.timings = clock.rounded()
        return results[0] if single else results

    @torch.no_grad()
    def decode_latents(
        self, latents: torch.Tensor, tiling_cfg: TilingConfig, *, codes: bool = False
    ) -> torch.Tensor:
        """(1, 4, h, w) scaled latents -> (1, 3, 8h, 8w) decoder output in about [-1, 1] (tiled when large);
        with ``codes`` its uint8 ``pipeline_codes`` on the CPU instead, converted tile by tile."""
        vae = self.vae
        z = (latents / vae.config.scaling_factor).to(vae.dtype)
        if vae.post_quant_conv is not None:
            z = vae.post_quant_conv(z)
        return vae_tiling.tiled_decode(
            vae.decoder,
            z,
            tiling_cfg.vae_decoder_tile_size,
            out_dtype=vae.dtype,
            offload_device=_offload(vae),
            finish=finishing.pipeline_codes if codes else None,
            **vae_tiling.mode_kwargs(tiling_cfg),
        )


def postprocess(
    decoded: torch.Tensor,
    lr_up: torch.Tensor,
    color_fix_method: ColorFix,
    target_wh: tuple[int, int],
    *,
    quantize: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decoder output -> final image, whole arrays at once (spec §1.5 step 8, §1.3 steps 6-7, §1.9).

    The pipeline itself runs the banded :func:`seesr.pipeline.postprocess.finish_image` (same bytes on the 8-bit
    chain, within 1e-6 on the float chain); this whole-array form is its reference and the tests' official chain.

    Args:
        decoded: (1, 3, H, W) VAE decoder output, about [-1, 1].
        lr_up: (1, 3, H, W) condition image: float in [0, 1], or its uint8 codes (the colour reference).
        color_fix_method: "adain", "wavelet" or "none".
        target_wh: final (width, height).
        quantize: reproduce the official uint8 chain (pipeline output rounded, colour fix truncated, PIL
            bicubic on uint8); otherwise everything stays float. On this chain AdaIN's statistics are the exact
            ones of the uint8 codes (``color_fix.uint8_stats``), as in the banded path.

    Returns:
        ``(sr, image)``: the (1, 3, H, W) pipeline output and the (1, 3, h_t, w_t) final image, both float32 in
        [0, 1] on the CPU.
    """
    sr = (decoded.float().cpu() / 2 + 0.5).clamp(0, 1)
    reference = sizing.as_unit_float(lr_up.cpu())
    if quantize:
        codes = color_fix.to_uint8(sr, rounding="round")
        sr = codes.float() / 255
    if quantize and color_fix_method == "adain":
        ref_codes = color_fix.to_uint8(reference, rounding="round")
        stats = [color_fix.uint8_stats(color_fix.uint8_histogram(c)) for c in (codes, ref_codes)]
        fixed = color_fix.adain_transfer(sr, *stats).clamp(0, 1)
    else:
        fixed = color_fix.apply_color_fix(sr, reference, color_fix_method)
    if quantize and color_fix_method != "none":
        fixed = color_fix.to_uint8(fixed, rounding="truncate").float() / 255
    return sr, sizing.bicubic_resize(fixed, target_wh, quantize=quantize)


def _offload(model: torch.nn.Module) -> str | None:
    # Tiles wait on the CPU between GroupNorm barriers, so accelerator memory stays at about one tile.
    return "cpu" if model.device.type != "cpu" else None


def _noise_sources(
    noise: NoiseSource | Sequence[NoiseSource] | None, count: int, sampling: SamplingConfig
) -> list[NoiseSource]:
    """One noise source per image (a fresh seeded one each when none is given)."""
    if noise is None:
        return [seeded_noise(sampling) for _ in range(count)]
    sources = list(noise) if isinstance(noise, (list, tuple)) else [noise]
    if len(sources) != count:
        raise ValueError(f"noise must give one source per image ({count}), got {len(sources)}")
    return sources  # type: ignore[return-value]


def _step_generator(noise: NoiseSource) -> torch.Generator:
    """The generator of a noise source, for the scheduler's step noise (never torch's global RNG)."""
    generator = getattr(noise, "generator", None)
    if not isinstance(generator, torch.Generator):
        raise ValueError(
            f"noise source {type(noise).__name__} has no .generator (a torch.Generator); the scheduler's step noise "
            "needs one, so that results never depend on torch's global RNG"
        )
    return generator


def seeded_noise(sampling: SamplingConfig) -> GeneratorNoise:
    """The noise source an image gets by default: generators seeded with ``sampling.seed`` (pass one per image
    as ``noise=`` to batch images with different seeds, each drawing exactly what it draws alone)."""
    generator = torch.Generator("cpu").manual_seed(sampling.seed)
    posterior = torch.Generator("cpu").manual_seed(sampling.seed) if sampling.faithful else None
    return GeneratorNoise(generator, posterior)


def _as_batch(
    image: torch.Tensor | Image.Image | Sequence[torch.Tensor | Image.Image],
) -> tuple[list[torch.Tensor], bool]:
    """Images as a list of (1, 3, h, w) CPU float tensors, and whether one image (not a batch) was given."""
    if isinstance(image, (list, tuple)):
        if not image:
            raise ValueError("image: got an empty list")
        return [_as_tensor(x) for x in image], False
    if isinstance(image, torch.Tensor) and image.ndim == 4 and image.shape[0] > 1:
        return [_as_tensor(x) for x in image], False
    return [_as_tensor(image)], True


def _as_tensor(image: torch.Tensor | Image.Image) -> torch.Tensor:
    """PIL or tensor -> (1, 3, h, w) float32 in [0, 1] on the CPU."""
    if isinstance(image, Image.Image):
        arr = np.asarray(image.convert("RGB"), dtype=np.float32) / 255
        return torch.from_numpy(arr).permute(2, 0, 1)[None]
    if not isinstance(image, torch.Tensor):
        raise ValueError(f"image must be a torch.Tensor or PIL.Image, got {type(image).__name__}")
    x = image[None] if image.ndim == 3 else image
    if x.ndim != 4 or x.shape[0] != 1 or x.shape[1] != 3:
        raise ValueError(f"image must have shape (1, 3, h, w) or (3, h, w), got {tuple(image.shape)}")
    x = x.detach().to("cpu", torch.float32)
    if not torch.isfinite(x).all() or x.min() < 0 or x.max() > 1:
        raise ValueError(
            f"image values must be finite and in [0, 1], got range [{float(x.min()):.4g}, {float(x.max()):.4g}]"
        )
    return x
