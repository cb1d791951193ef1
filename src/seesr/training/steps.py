"""The pure per-step computations of both training stages (spec §4.4, §5; paper Eq. 1 and §3.3).

Everything random is an argument: :class:`SeeSRDraws` carries the VAE posterior noise, the timesteps, the diffusion
noise and the null-text coin flips, so one step is a deterministic function of (models, batch, draws) and can be
checked against the official code with its recorded draws (fixtures README §11, §12). The training loops build the
draws with :func:`draw_seesr_noise`, one generator per sample keyed by (seed, step, sample index), which makes
the result independent of how a global batch is split over processes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from seesr.data.datasets import derive_seed
from seesr.models.dape import imagenet_normalize

RAM_SIZE = 384


def seesr_ram_input(cond: torch.Tensor) -> torch.Tensor:
    """Stage-2 RAM input (train_seesr.py, spec §5 and §9 item 7): bicubic resize of ``sr_bicubic`` to 384².

    Args:
        cond: ``(B, 3, H, W)`` float in [0, 1], the bicubic-upsampled LR (ControlNet condition), pixel space.

    Returns:
        ``(B, 3, 384, 384)`` float32, ``F.interpolate(bicubic, align_corners=False).clamp(0, 1)`` then ImageNet-
        normalised.
    """
    x = F.interpolate(cond.float(), size=(RAM_SIZE, RAM_SIZE), mode="bicubic", align_corners=False)
    return imagenet_normalize(x.clamp(0.0, 1.0))


def dape_ram_input(img: torch.Tensor) -> torch.Tensor:
    """Stage-1 RAM input (basicsr DAPEDataset, spec §4.4): bilinear 512² then bilinear 384², no antialias.

    Args:
        img: ``(B, 3, H, W)`` float in [0, 1] (GT for the teacher, ``sr_bicubic`` for the student).

    Returns:
        ``(B, 3, 384, 384)`` float32, ImageNet-normalised.
    """
    x = F.interpolate(img.float(), size=(512, 512), mode="bilinear", align_corners=False, antialias=False)
    x = F.interpolate(x, size=(RAM_SIZE, RAM_SIZE), mode="bilinear", align_corners=False, antialias=False)
    return imagenet_normalize(x)


# ------------------------------------------------------------------------------------------------- stage 2
@dataclass
class SeeSRDraws:
    """The random draws of one stage-2 step for a batch of B samples.

    Attributes:
        vae_posterior_eps: ``(B, 4, H/8, W/8)`` N(0, 1): latents = mean + std * eps.
        timesteps: ``(B,)`` int64 in [0, num_train_timesteps).
        noise: ``(B, 4, H/8, W/8)`` N(0, 1) diffusion noise.
        null_text: ``(B,)`` float in [0, 1): a caption becomes ``''`` where ``null_text < null_text_ratio``.
    """

    vae_posterior_eps: torch.Tensor
    timesteps: torch.Tensor
    noise: torch.Tensor
    null_text: torch.Tensor


def draw_seesr_noise(
    seed: int,
    step: int,
    sample_ids: Sequence[int],
    latent_shape: tuple[int, int, int],
    num_train_timesteps: int,
    device: torch.device | str = "cpu",
) -> SeeSRDraws:
    """Per-sample draws from a CPU generator seeded by ``(seed, step, sample id)``.

    Keying the generator by sample makes the draws of a sample the same whichever process and micro-batch it lands
    in (so 1 process at batch B and N processes at B/N compute the same update) and needs no state to resume.

    Args:
        seed: run seed.
        step: optimiser step (0-based).
        sample_ids: data-set index of each sample of the local batch.
        latent_shape: ``(4, H/8, W/8)``.
        num_train_timesteps: size of the diffusion schedule.
        device: where the returned tensors live.
    """
    eps, ts, noise, coins = [], [], [], []
    for sid in sample_ids:
        g = torch.Generator().manual_seed(derive_seed(seed, step, int(sid)))
        eps.append(torch.randn(latent_shape, generator=g))
        ts.append(torch.randint(0, num_train_timesteps, (1,), generator=g))
        noise.append(torch.randn(latent_shape, generator=g))
        coins.append(torch.rand((1,), generator=g))
    return SeeSRDraws(
        vae_posterior_eps=torch.stack(eps).to(device),
        timesteps=torch.cat(ts).to(device),
        noise=torch.stack(noise).to(device),
        null_text=torch.cat(coins).to(device),
    )


def captions_with_null_text(prompts: Sequence[str], null_text: torch.Tensor, ratio: float) -> list[str]:
    """Per-sample prompt dropout (spec §5): ``''`` where ``null_text < ratio`` (the official
    ``random.random() < null_text_ratio``), else the tag prompt. The negative prompt is never used in training."""
    if len(prompts) != len(null_text):
        raise ValueError(f"{len(prompts)} prompts but {len(null_text)} null-text draws")
    return ["" if float(u) < ratio else p for p, u in zip(prompts, null_text.tolist())]


def encode_prompts(tokenizer: Any, text_encoder: Any, captions: Sequence[str]) -> torch.Tensor:
    """CLIP ``last_hidden_state`` ``(B, 77, D)`` of padded/truncated captions (no attention mask, spec §5)."""
    ids = tokenizer(
        list(captions),
        max_length=tokenizer.model_max_length,
        padding="max_length",
        truncation=True,
        return_tensors="pt",
    ).input_ids
    device = next(text_encoder.parameters()).device
    return text_encoder(ids.to(device))[0]


@dataclass
class SeeSRStepOutput:
    """What one stage-2 step computed (tensors keep their graph where they carry one)."""

    loss: torch.Tensor
    model_pred: torch.Tensor
    target: torch.Tensor
    latents: torch.Tensor
    noisy_latents: torch.Tensor
    encoder_hidden_states: torch.Tensor
    image_embeds: torch.Tensor | None
    captions: list[str]


def seesr_training_step(
    *,
    unet: Any,
    controlnet: Any,
    vae: Any,
    text_encoder: Any,
    tokenizer: Any,
    noise_scheduler: Any,
    soft_prompt: Any | None,
    gt: torch.Tensor,
    cond: torch.Tensor,
    prompts: Sequence[str],
    draws: SeeSRDraws,
    null_text_ratio: float = 0.5,
    image_embeds: torch.Tensor | None = None,
) -> SeeSRStepOutput:
    """Loss of one stage-2 step (train_seesr.py L974-1033, spec §5); the caller runs backward.

    ``latents = (mean + std * eps) * scaling_factor`` of the VAE posterior of ``2 * gt - 1``; ``x_t`` =
    ``add_noise(latents, noise, t)``; text = CLIP of the (possibly dropped) captions; ControlNet(x_t, t, text,
    cond, soft prompt) -> residuals -> UNet(x_t, t, text, residuals, soft prompt); loss = MSE to ``noise`` (or to
    the velocity when the scheduler predicts ``v_prediction``), mean, computed in fp32. The frozen parts run under
    ``no_grad``.

    Args:
        unet, controlnet: the trainable models (possibly DDP-wrapped).
        vae, text_encoder, tokenizer, noise_scheduler: the frozen SD-2 parts.
        soft_prompt: frozen DAPE (or plain RAM) with ``image_embeds(x384)``; ``None`` for models without RCA.
        gt: ``(B, 3, H, W)`` in [0, 1], the (USM-sharpened) GT, pixel space.
        cond: ``(B, 3, H, W)`` in [0, 1], ``sr_bicubic`` (ControlNet condition and RAM input).
        prompts: B tag prompts (``"tag1, tag2,"``) before dropout.
        draws: the step's random draws.
        null_text_ratio: caption dropout probability.
        image_embeds: precomputed ``(B, 145, 512)`` soft prompt; default: ``soft_prompt`` on
            :func:`seesr_ram_input` ``(cond)``.

    Returns:
        :class:`SeeSRStepOutput`.
    """
    if gt.shape != cond.shape or gt.ndim != 4 or gt.shape[1] != 3:
        raise ValueError(
            f"gt and cond must both be (B, 3, H, W); got {tuple(gt.shape)} and {tuple(cond.shape)}"
        )
    captions = captions_with_null_text(prompts, draws.null_text, null_text_ratio)
    vae_dtype = next(vae.parameters()).dtype
    with torch.no_grad():
        posterior = vae.encode((gt * 2.0 - 1.0).to(vae_dtype)).latent_dist
        latents = (posterior.mean + posterior.std * draws.vae_posterior_eps.to(posterior.mean)) * float(
            vae.config.scaling_factor
        )
        noise = draws.noise.to(latents)
        timesteps = draws.timesteps.to(latents.device).long()
        noisy_latents = noise_scheduler.add_noise(latents, noise, timesteps)
        encoder_hidden_states = encode_prompts(tokenizer, text_encoder, captions)
        if image_embeds is None and soft_prompt is not None:
            image_embeds = soft_prompt.image_embeds(seesr_ram_input(cond))
    train_dtype = _param_dtype(controlnet)
    noisy_in = noisy_latents.to(train_dtype)
    text_in = encoder_hidden_states.to(train_dtype)
    rca_kwargs = {} if image_embeds is None else {"image_encoder_hidden_states": image_embeds.to(train_dtype)}
    down, mid = controlnet(
        noisy_in,
        timesteps,
        text_in,
        cond.to(train_dtype),
        conditioning_scale=1.0,
        return_dict=False,
        **rca_kwargs,
    )
    model_pred = unet(
        noisy_in,
        timesteps,
        text_in,
        down_block_additional_residuals=list(down),
        mid_block_additional_residual=mid,
        return_dict=False,
        **rca_kwargs,
    )[0]
    prediction_type = noise_scheduler.config.prediction_type
    if prediction_type == "epsilon":
        target = noise
    elif prediction_type == "v_prediction":
        target = noise_scheduler.get_velocity(latents, noise, timesteps)
    else:
        raise ValueError(
            f"scheduler prediction_type {prediction_type!r} is not supported; expected epsilon or v_prediction"
        )
    loss = F.mse_loss(model_pred.float(), target.float(), reduction="mean")
    return SeeSRStepOutput(
        loss=loss,
        model_pred=model_pred,
        target=target,
        latents=latents,
        noisy_latents=noisy_latents,
        encoder_hidden_states=encoder_hidden_states,
        image_embeds=image_embeds,
        captions=captions,
    )


def _param_dtype(module: torch.nn.Module) -> torch.dtype:
    return next(module.parameters()).dtype


# ------------------------------------------------------------------------------------------------- stage 1
@dataclass
class DAPEStepOutput:
    """One stage-1 step: the three loss terms and both models' outputs."""

    loss: torch.Tensor
    l_fea: torch.Tensor
    l_logits: torch.Tensor
    student_embeds: torch.Tensor
    student_logits: torch.Tensor
    teacher_embeds: torch.Tensor
    teacher_logits: torch.Tensor


def soft_label_bce(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy of ``sigmoid(student)`` against the soft targets ``sigmoid(teacher)``.

    Equal to the official ``-(p_t log p_s + (1 - p_t) log(1 - p_s))`` (spec §4.4, §9 item 18) but computed from
    logits with ``binary_cross_entropy_with_logits``, which stays finite for saturated students.
    """
    target = torch.sigmoid(teacher_logits.float())
    return F.binary_cross_entropy_with_logits(student_logits.float(), target, reduction="mean")


def dape_training_step(
    *,
    student: Any,
    teacher: Any,
    hr_input: torch.Tensor,
    lr_input: torch.Tensor,
    feature_weight: float = 1.0,
    logits_weight: float = 1.0,
) -> DAPEStepOutput:
    """Loss of one DAPE step (basicsr dape_model.py ``optimize_parameters``; paper Eq. 1); the caller runs backward.

    Args:
        student: RAM + trainable LoRA: a ``DAPE`` (``embeds_and_logits`` is used) or a module whose forward
            returns ``(embeds, logits)`` (the DDP-wrapped training student).
        teacher: frozen plain RAM.
        hr_input: ``(B, 3, 384, 384)`` ImageNet-normalised HR (teacher input).
        lr_input: ``(B, 3, 384, 384)`` ImageNet-normalised LR (student input).
        feature_weight: weight of ``MSE(student_embeds, teacher_embeds)``.
        logits_weight: λ of :func:`soft_label_bce`.
    """
    with torch.no_grad():
        t_emb, t_logits = teacher.embeds_and_logits(hr_input)
    s_emb, s_logits = _embeds_and_logits(student, lr_input)
    l_fea = F.mse_loss(s_emb.float(), t_emb.float(), reduction="mean")
    l_logits = soft_label_bce(s_logits, t_logits)
    loss = feature_weight * l_fea + logits_weight * l_logits
    return DAPEStepOutput(
        loss=loss,
        l_fea=l_fea,
        l_logits=l_logits,
        student_embeds=s_emb,
        student_logits=s_logits,
        teacher_embeds=t_emb,
        teacher_logits=t_logits,
    )


def _embeds_and_logits(model: Any, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # A DDP wrapper only syncs gradients for calls to its own forward; DAPE.forward tags images, so the training
    # wrapper (seesr.training.train_dape.StudentForward) exposes embeds_and_logits as forward.
    if hasattr(model, "embeds_and_logits"):
        return model.embeds_and_logits(x)
    return model(x)
