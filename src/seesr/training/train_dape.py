"""Stage 1: DAPE = LoRA distillation of RAM on degraded inputs (paper §3.1, Eq. 1, §4.1; spec §4.3, §4.4).

Teacher = frozen plain RAM on the HR image; student = the same RAM with rank-8 LoRA (Swin qkv q/v rows and the
tagging-head query/key) on the LR image (``sr_bicubic``). Loss = ``feature_weight * MSE(embeds)`` +
``logits_weight * BCE(sigmoid(student), sigmoid(teacher))`` (:func:`seesr.training.steps.dape_training_step`).
Inputs are the official DAPE recipe (bilinear 512² then 384², ImageNet normalisation). Outputs: ``DAPE.pth`` in the
official key layout (``seesr.load_official_dape`` and SeeSR's ``--ram_ft_path`` load it), ``lora.safetensors`` (ours) and
``dape/`` (:func:`seesr.pipeline.dape_weights.save_dape`, LoRA merged).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from seesr.config import config_to_dict
from seesr.data.datasets import derive_seed
from seesr.training.checkpoint import (
    load_checkpoint,
    make_lr_scheduler,
    make_optimizer,
    weight_dtype_for,
    write_resolved_config,
)
from seesr.training.config import TrainDAPEConfig
from seesr.training.data import build_loader, degrade_online
from seesr.training.loop import MicroStepResult, StepCallback, run_training_loop, start_run
from seesr.training.steps import dape_ram_input, dape_training_step

logger = logging.getLogger(__name__)

LORA_FILE = "lora.safetensors"
OFFICIAL_FILE = "DAPE.pth"


class StudentForward(nn.Module):
    """Exposes ``DAPE.embeds_and_logits`` as ``forward`` so DDP sees (and all-reduces) the student's LoRA grads."""

    def __init__(self, dape: Any) -> None:
        super().__init__()
        self.dape = dape

    def forward(self, x384: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(image_embeds (B,145,512), logits (B,num_classes))`` of a normalised ``(B,3,384,384)`` input."""
        return self.dape.embeds_and_logits(x384)


def build_dape_models(cfg: TrainDAPEConfig) -> tuple[Any, Any]:
    """``(student, teacher)``: RAM + trainable unmerged LoRA (from ``ram.dape_checkpoint`` when given, else fresh:
    ``lora_A`` kaiming from a generator seeded by ``run.seed``, ``lora_B`` = 0) and the frozen plain RAM."""
    from seesr.training.dape_models import build_student, build_teacher

    ram = cfg.ram
    kw: dict[str, Any] = dict(tag_list=ram.tag_list, thresholds=ram.thresholds, arch=ram.arch)
    teacher = build_teacher(ram.ram_checkpoint, **kw)
    student = build_student(
        ram.ram_checkpoint,
        ram.dape_checkpoint,
        r=cfg.lora_rank,
        alpha=cfg.lora_alpha,
        generator=torch.Generator().manual_seed(cfg.run.seed),
        drop_path_rate=cfg.drop_path_rate,
        head_dropout=cfg.head_dropout,
        **kw,
    )
    return student, teacher


def save_dape_weights(student: Any, folder: Path, template: str | None, *, merged: bool = False) -> None:
    """``DAPE.pth`` (official layout; tag_encoder/text_decoder entries from ``template`` or zeros) and
    ``lora.safetensors``; with ``merged`` also ``dape/`` (our inference format)."""
    from safetensors.torch import save_file

    from seesr.models.lora import lora_state_dict
    from seesr.pipeline.dape_lora import save_official_lora
    from seesr.pipeline.dape_weights import save_dape

    folder.mkdir(parents=True, exist_ok=True)
    save_official_lora(folder / OFFICIAL_FILE, student, template)
    save_file(
        {k: v.detach().float().cpu().contiguous() for k, v in lora_state_dict(student).items()},
        str(folder / LORA_FILE),
        metadata={"format": "pt", "seesr": "dape-lora"},
    )
    if merged:
        save_dape(student, folder / "dape")


def _load_lora(student: Any, folder: Path) -> None:
    from safetensors.torch import load_file

    from seesr.models.lora import lora_state_dict

    state = load_file(str(folder / LORA_FILE))
    own = lora_state_dict(student)
    if set(state) != set(own):
        raise ValueError(f"{folder / LORA_FILE} does not hold this student's LoRA tensors")
    with torch.no_grad():
        for k, v in state.items():
            own[k].copy_(v)


def train_dape(
    cfg: TrainDAPEConfig,
    *,
    resume: str | None = None,
    on_step_end: StepCallback | None = None,
) -> Path:
    """Run stage-1 training; returns the output folder (``DAPE.pth``, ``lora.safetensors``, ``dape/``).

    Args:
        cfg: the run configuration.
        resume: ``None``, ``"latest"`` or a checkpoint folder (as :func:`seesr.training.train_seesr.train_seesr`).
        on_step_end: called on every process after each optimiser step with ``(step, logs)`` (1-based).
    """
    run = cfg.run
    out = Path(run.output_dir)
    accelerator, ckpt = start_run(run, resume)
    device = accelerator.device
    torch.manual_seed(run.seed)
    student, teacher = build_dape_models(cfg)
    weight_dtype = weight_dtype_for(accelerator)
    teacher.to(device, dtype=weight_dtype)
    student.to(device)
    params = [p for p in student.parameters() if p.requires_grad]
    logger.info("trainable LoRA: %d tensors, %d parameters", len(params), sum(p.numel() for p in params))
    optimizer = make_optimizer(params, run)
    lr_scheduler = make_lr_scheduler(optimizer, run)
    wrapper, optimizer = accelerator.prepare(StudentForward(student), optimizer)
    start = 0
    if ckpt is not None:
        start = load_checkpoint(
            accelerator,
            ckpt,
            read_weights=lambda p: _load_lora(student, p),
            optimizer=optimizer,
            lr_scheduler=lr_scheduler,
        )
    resolved = config_to_dict(cfg)
    write_resolved_config(accelerator, out, resolved, run.report_to, "dape")

    loader, degradation = build_loader(cfg.data, run, accelerator, start_step=start, stage="dape")
    template = cfg.ram.dape_checkpoint

    def write(folder: Path) -> None:
        save_dape_weights(student, folder, template)

    def micro_step(batch: dict[str, Any], step: int, micro: int) -> MicroStepResult:
        gt = batch["gt"].to(device)
        if degradation is not None:
            gt, cond = degrade_online(gt, batch["sample_id"], run.seed, degradation)
        else:
            cond = batch["cond"].to(device)
        # drop-path / dropout draws: keyed by (seed, step, micro, process) so a resumed run repeats them
        student.set_generator(
            torch.Generator(device=device).manual_seed(
                derive_seed(run.seed, step, micro, accelerator.process_index)
            )
        )
        with accelerator.autocast():
            result = dape_training_step(
                student=wrapper,
                teacher=teacher,
                hr_input=dape_ram_input(gt).to(weight_dtype),
                lr_input=dape_ram_input(cond),
                feature_weight=cfg.feature_weight,
                logits_weight=cfg.logits_weight,
            )
        return MicroStepResult(result.loss, {"l_fea": result.l_fea, "l_logits": result.l_logits})

    student.train()
    run_training_loop(
        accelerator=accelerator,
        run=run,
        batches=loader,
        start=start,
        micro_step=micro_step,
        params=params,
        optimizer=optimizer,
        lr_scheduler=lr_scheduler,
        ddp_modules=[wrapper],
        write_weights=write,
        resolved_config=resolved,
        on_step_end=on_step_end,
    )
    if accelerator.is_main_process:
        save_dape_weights(student, out, template, merged=True)
        logger.info("trained DAPE in %s (%s, %s, dape/)", out, OFFICIAL_FILE, LORA_FILE)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return out
