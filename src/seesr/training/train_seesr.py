"""Stage 2: train the ControlNet + RCA on a frozen SD-2 with accelerate (paper §3.2-3.3, §4.1; spec §5).

One optimiser step = ``gradient_accumulation_steps`` micro-batches per process; each micro-batch runs
:func:`seesr.training.steps.seesr_training_step` (ε- or v-MSE, null-text dropout) with per-sample draws keyed by
(seed, step, sample position), then the shared loop (:mod:`seesr.training.loop`) all-reduces (DDP), clips and steps AdamW.
Outputs (``unet/`` + ``controlnet/``) use the release layout; checkpoints resume bit-exactly (see
:mod:`seesr.training.checkpoint`). Works on one GPU, many GPUs / nodes (``accelerate launch``, ``torchrun``) and CPU.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from seesr.config import config_to_dict
from seesr.training.checkpoint import (
    load_checkpoint,
    make_lr_scheduler,
    make_optimizer,
    weight_dtype_for,
    write_resolved_config,
)
from seesr.training.config import TrainSeeSRConfig
from seesr.training.data import build_loader, degrade_online
from seesr.training.loop import MicroStepResult, StepCallback, run_training_loop, start_run
from seesr.training.models import (
    SeeSRTrainModels,
    configure_trainable,
    count_parameters,
    load_frozen_sd2,
    load_soft_prompt,
    load_trainable_pair,
)
from seesr.training.steps import draw_seesr_noise, seesr_training_step

logger = logging.getLogger(__name__)


def load_models(cfg: TrainSeeSRConfig) -> SeeSRTrainModels:
    """All stage-2 models on CPU in fp32 (trainable flags not yet set)."""
    unet, controlnet = load_trainable_pair(
        sd2_dir=cfg.pretrained_model, init_from=cfg.init_from, use_rca=cfg.use_rca
    )
    vae, text_encoder, tokenizer, noise_scheduler = load_frozen_sd2(cfg.pretrained_model)
    soft_prompt = load_soft_prompt(cfg.ram) if cfg.use_rca else None
    return SeeSRTrainModels(unet, controlnet, vae, text_encoder, tokenizer, noise_scheduler, soft_prompt)


def save_release_layout(unet: Any, controlnet: Any, folder: Path) -> None:
    """``folder/unet`` + ``folder/controlnet`` via ``save_pretrained`` (safetensors, fp32 as trained)."""
    unet.save_pretrained(folder / "unet", safe_serialization=True)
    controlnet.save_pretrained(folder / "controlnet", safe_serialization=True)


def _load_release_layout(unet: torch.nn.Module, controlnet: torch.nn.Module, folder: Path) -> None:
    from safetensors.torch import load_file

    for name, model in (("unet", unet), ("controlnet", controlnet)):
        state = load_file(str(folder / name / "diffusion_pytorch_model.safetensors"))
        model.load_state_dict(state, strict=True)


def _online_tagger(cfg: TrainSeeSRConfig) -> torch.nn.Module:
    """Plain RAM (no LoRA) as ``make_tags.py`` uses on the GT (spec §5, fixtures README §14.3)."""
    from seesr.pipeline.dape_weights import load_official_dape

    model = load_official_dape(
        cfg.ram.ram_checkpoint,
        None,
        tag_list=cfg.ram.tag_list,
        thresholds=cfg.ram.thresholds,
        arch=cfg.ram.arch,
    )
    model.requires_grad_(False)
    return model.eval()


def train_seesr(
    cfg: TrainSeeSRConfig,
    *,
    resume: str | None = None,
    on_step_end: StepCallback | None = None,
) -> Path:
    """Run stage-2 training; returns the output folder (``unet/`` + ``controlnet/`` + ``config.json``).

    Args:
        cfg: the run configuration.
        resume: ``None`` (fresh; refuses an output folder that already holds checkpoints), ``"latest"`` (the newest
            ``checkpoint-*`` of ``output_dir``, or fresh when there is none) or a checkpoint folder.
        on_step_end: called on every process after each optimiser step with ``(step, logs)`` (1-based step).

    Raises:
        FileNotFoundError / ValueError: missing weights or data, inconsistent config.
    """
    run = cfg.run
    out = Path(run.output_dir)
    accelerator, ckpt = start_run(run, resume)
    device = accelerator.device

    # same fresh RCA / ControlNet init on every process (DDP would broadcast rank 0's anyway)
    torch.manual_seed(run.seed)
    models = load_models(cfg)
    trainable = configure_trainable(
        models.unet, models.controlnet, cfg.trainable_modules if cfg.use_rca else ()
    )
    n_cn = count_parameters([p for n, p in trainable if n.startswith("controlnet.")])
    n_unet = count_parameters([p for n, p in trainable if n.startswith("unet.")])
    logger.info("trainable: ControlNet %d + UNet %d parameters", n_cn, n_unet)
    weight_dtype = weight_dtype_for(accelerator)
    for m in (models.vae, models.text_encoder, models.soft_prompt):
        if m is not None:
            m.to(device, dtype=weight_dtype)
    models.unet.to(device)
    models.controlnet.to(device)
    if run.gradient_checkpointing:
        models.unet.enable_gradient_checkpointing()
        models.controlnet.enable_gradient_checkpointing()
    models.controlnet.train()
    models.unet.train()

    optimizer = make_optimizer([p for _, p in trainable], run)
    lr_scheduler = make_lr_scheduler(optimizer, run)
    unet_trains = n_unet > 0
    if unet_trains:
        controlnet, unet, optimizer = accelerator.prepare(models.controlnet, models.unet, optimizer)
    else:
        # DDP refuses a module without trainable parameters (the ControlNet-only ablation's UNet)
        controlnet, optimizer = accelerator.prepare(models.controlnet, optimizer)
        unet = models.unet

    start = 0
    if ckpt is not None:
        start = load_checkpoint(
            accelerator,
            ckpt,
            read_weights=lambda p: _load_release_layout(models.unet, models.controlnet, p),
            optimizer=optimizer,
            lr_scheduler=lr_scheduler,
        )
    resolved = config_to_dict(cfg)
    write_resolved_config(accelerator, out, resolved, run.report_to, "seesr")

    loader, degradation = build_loader(cfg.data, run, accelerator, start_step=start)
    tagger = _online_tagger(cfg).to(device) if cfg.data.tags == "online" else None
    latent_div = 2 ** (len(models.vae.config.block_out_channels) - 1)
    num_t = int(models.noise_scheduler.config.num_train_timesteps)
    params = [p for _, p in trainable]
    logger.info(
        "training steps %d..%d, global batch %d (%d x %d x %d processes)",
        start,
        run.max_train_steps,
        run.train_batch_size * run.gradient_accumulation_steps * accelerator.num_processes,
        run.train_batch_size,
        run.gradient_accumulation_steps,
        accelerator.num_processes,
    )

    def micro_step(batch: dict[str, Any], step: int, micro: int) -> MicroStepResult:
        gt = batch["gt"].to(device)
        ids = batch["sample_id"]
        if degradation is not None:
            gt, cond = degrade_online(gt, ids, run.seed, degradation)
        else:
            cond = batch["cond"].to(device)
        prompts = batch["prompt"]
        if cfg.data.tags == "none":
            prompts = [""] * len(prompts)
        elif tagger is not None:
            with torch.no_grad():
                prompts = [s + "," for s in tagger(gt.to(weight_dtype)).tag_strings]
        latent_shape = (4, gt.shape[-2] // latent_div, gt.shape[-1] // latent_div)
        draws = draw_seesr_noise(run.seed, step, ids.tolist(), latent_shape, num_t, device)
        with accelerator.autocast():
            result = seesr_training_step(
                unet=unet,
                controlnet=controlnet,
                vae=models.vae,
                text_encoder=models.text_encoder,
                tokenizer=models.tokenizer,
                noise_scheduler=models.noise_scheduler,
                soft_prompt=models.soft_prompt,
                gt=gt.to(weight_dtype) if weight_dtype != torch.float32 else gt,
                cond=cond,
                prompts=prompts,
                draws=draws,
                null_text_ratio=cfg.null_text_ratio,
            )
        return MicroStepResult(result.loss)

    def validate(step: int) -> None:
        if cfg.validation_steps and step % cfg.validation_steps == 0:
            _validate(cfg, accelerator, models, step)

    run_training_loop(
        accelerator=accelerator,
        run=run,
        batches=loader,
        start=start,
        micro_step=micro_step,
        params=params,
        optimizer=optimizer,
        lr_scheduler=lr_scheduler,
        ddp_modules=[controlnet, unet] if unet_trains else [controlnet],
        write_weights=lambda p: save_release_layout(models.unet, models.controlnet, p),
        resolved_config=resolved,
        after_step=validate,
        on_step_end=on_step_end,
    )
    if accelerator.is_main_process:
        save_release_layout(models.unet, models.controlnet, out)
        logger.info("final weights in %s (unet/ + controlnet/)", out)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return out


def _validate(cfg: TrainSeeSRConfig, accelerator: Any, models: SeeSRTrainModels, step: int) -> None:
    """Upscale the validation LR images with the current weights; PNGs go to ``validation/step-<N>/`` and, with
    TensorBoard, to the logs. Main process only; the models are put back in train mode."""
    if not accelerator.is_main_process or not cfg.validation_images:
        accelerator.wait_for_everyone()
        return
    from seesr.training.validation import run_validation

    folder = Path(cfg.run.output_dir) / "validation" / f"step-{step}"
    images = run_validation(cfg, models, folder)
    if cfg.run.report_to == "tensorboard":
        tb = accelerator.get_tracker("tensorboard", unwrap=True)
        for name, img in images.items():
            tb.add_image(f"validation/{name}", img, step, dataformats="CHW")
    models.unet.train()
    models.controlnet.train()
    accelerator.wait_for_everyone()
