"""Frozen run configurations of the two training stages (spec §4.4, §5; paper §4.1; DESIGN.md §2.3).

Every field has the official/paper default unless noted. ``load_train_config(TrainSeeSRConfig, path)`` reads a YAML
file (unknown keys rejected); the resolved config is written next to the run's outputs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from seesr.config import _check_choice, config_from_dict, config_to_dict, read_yaml_mapping

T = TypeVar("T")

MixedPrecision = Literal["no", "fp16", "bf16"]
TagSource = Literal["precomputed", "online", "none"]


@dataclass(frozen=True)
class TrainDataConfig:
    """Where training images come from.

    Attributes:
        paired_roots: ``make-pairs`` folders (``gt/``, ``lr/``, ``sr_bicubic/``, ``tag/``, paired by file stem).
        hq_roots: HQ-only folders; pairs are made online on the training device by the Real-ESRGAN degradation
            (spec §6.1). Exactly one of ``paired_roots`` / ``hq_roots`` must be given.
        resolution: GT crop side in pixels (official 512; LR = resolution / 4).
        tags: ``precomputed`` = ``tag/*.txt`` of a paired folder; ``online`` = a frozen plain-RAM tagger on the
            GT (what ``make_tags.py`` does offline); ``none`` = every caption is ``''`` (paper Table 7 exp. 1).
        shuffle: reshuffle the data set each epoch (official: ``shuffle=False``).
        num_workers: DataLoader workers.
        hq_min_pixels, hq_min_bytes: HQ images smaller than this are skipped (official RealESRGANDataset filter:
            384² pixels, 100 KiB); stage 2 only (stage 1 resizes every HQ image to ``resolution``² as the official
            DAPE loader).
    """

    paired_roots: tuple[str, ...] = ()
    hq_roots: tuple[str, ...] = ()
    resolution: int = 512
    tags: TagSource = "precomputed"
    shuffle: bool = True
    num_workers: int = 0
    hq_min_pixels: int = 384 * 384
    hq_min_bytes: int = 100 * 1024

    def __post_init__(self) -> None:
        if bool(self.paired_roots) == bool(self.hq_roots):
            raise ValueError(
                "data: give exactly one of paired_roots (make-pairs folders) or hq_roots (online degradation); "
                f"got paired_roots={list(self.paired_roots)}, hq_roots={list(self.hq_roots)}"
            )
        _check_choice("data.tags", self.tags, ("precomputed", "online", "none"))
        if self.hq_roots and self.tags == "precomputed":
            raise ValueError(
                "data.tags='precomputed' needs paired_roots (tag/*.txt); use 'online' or 'none' with hq_roots"
            )
        if self.resolution % 64 != 0 or self.resolution < 64:
            raise ValueError(f"data.resolution must be a positive multiple of 64, got {self.resolution}")
        if self.num_workers < 0:
            raise ValueError(f"data.num_workers must be >= 0, got {self.num_workers}")


@dataclass(frozen=True)
class RunConfig:
    """What both stages share: steps, batching, checkpoints, precision, logging.

    Attributes:
        output_dir: run folder (checkpoints ``checkpoint-<step>/``, final weights, ``config.json``, logs).
        max_train_steps: optimiser steps.
        train_batch_size: samples per device per micro-step.
        gradient_accumulation_steps: micro-steps per optimiser step. Global batch =
            ``train_batch_size * gradient_accumulation_steps * num_processes``.
        learning_rate, adam_beta1, adam_beta2, adam_epsilon, weight_decay: AdamW.
        max_grad_norm: global gradient-norm clip; ``0`` disables clipping.
        lr_scheduler: ``constant`` or ``multistep`` (``lr_milestones`` x ``lr_gamma``), both after a linear warm-up
            of ``lr_warmup_steps``.
        mixed_precision: ``no`` | ``fp16`` | ``bf16`` (forced to ``no`` on CPU).
        gradient_checkpointing: recompute activations in backward to save memory.
        seed: seeds model init, data order and every training draw.
        checkpointing_steps: save a resumable checkpoint every N optimiser steps (0 = only at the end).
        checkpoints_total_limit: keep at most this many ``checkpoint-*`` folders (0 = keep all).
        logging_steps: log loss / lr every N steps (TensorBoard when ``report_to == 'tensorboard'``).
        report_to: ``tensorboard`` or ``none``.
    """

    output_dir: str = "runs/seesr"
    max_train_steps: int = 100_000
    train_batch_size: int = 4
    gradient_accumulation_steps: int = 1
    learning_rate: float = 5e-5
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    weight_decay: float = 1e-2
    max_grad_norm: float = 1.0
    lr_scheduler: str = "constant"
    lr_warmup_steps: int = 0
    lr_milestones: tuple[int, ...] = ()
    lr_gamma: float = 0.5
    mixed_precision: MixedPrecision = "fp16"
    gradient_checkpointing: bool = False
    seed: int = 0
    checkpointing_steps: int = 10_000
    checkpoints_total_limit: int = 0
    logging_steps: int = 10
    report_to: str = "tensorboard"

    def __post_init__(self) -> None:
        for name in ("max_train_steps", "train_batch_size", "gradient_accumulation_steps"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        _check_choice("lr_scheduler", self.lr_scheduler, ("constant", "multistep"))
        _check_choice("mixed_precision", self.mixed_precision, ("no", "fp16", "bf16"))
        _check_choice("report_to", self.report_to, ("tensorboard", "none"))
        if self.lr_warmup_steps < 0 or self.checkpointing_steps < 0 or self.checkpoints_total_limit < 0:
            raise ValueError("lr_warmup_steps, checkpointing_steps and checkpoints_total_limit must be >= 0")
        if list(self.lr_milestones) != sorted(self.lr_milestones):
            raise ValueError(f"lr_milestones must be increasing, got {list(self.lr_milestones)}")
        if self.max_grad_norm < 0:
            raise ValueError(f"max_grad_norm must be >= 0 (0 = no clipping), got {self.max_grad_norm}")


@dataclass(frozen=True)
class RAMConfig:
    """The RAM / DAPE files (spec §4).

    Attributes:
        ram_checkpoint: ``ram_swin_large_14m.pth``.
        dape_checkpoint: ``DAPE.pth``; ``None`` = plain RAM (paper Table 7 exp. 2 for stage 2).
        tag_list, thresholds: ``ram_tag_list.txt`` / ``ram_tag_list_threshold.txt``.
        arch: ``None`` = real Swin-L RAM, else an ``arch.json`` (tiny test models).
    """

    ram_checkpoint: str = "preset/models/ram_swin_large_14m.pth"
    dape_checkpoint: str | None = "preset/models/DAPE.pth"
    tag_list: str = "preset/models/ram_tag_list.txt"
    thresholds: str = "preset/models/ram_tag_list_threshold.txt"
    arch: str | None = None


@dataclass(frozen=True)
class TrainSeeSRConfig:
    """Stage 2: ControlNet + RCA on a frozen SD-2 (spec §5; paper §4.1: 100k it, batch 32, lr 5e-5).

    Attributes:
        pretrained_model: SD-2-base folder (``unet/``, ``vae/``, ``text_encoder/``, ``tokenizer/``, ``scheduler/``).
        init_from: ``None`` = start from SD-2-base (fresh RCA; ControlNet copied from the UNet); else a released or
            trained SeeSR folder (``unet/`` + ``controlnet/``) to fine-tune.
        use_rca: ``False`` = no DAPE soft prompt and no RCA modules (paper Table 7 exp. 1, ControlNet only).
        ram: the frozen soft-prompt extractor (DAPE, or plain RAM with ``dape_checkpoint: null``); also the online
            tagger source (always plain RAM, as ``make_tags.py``).
        null_text_ratio: per-sample probability of the caption ``''`` (spec §5).
        trainable_modules: UNet module-name suffixes that train (official ``["image_attentions"]``).
        validation_steps: save validation images every N steps (0 = never); ``validation_images`` are LR files.
    """

    pretrained_model: str = "preset/models/stable-diffusion-2-base"
    init_from: str | None = None
    use_rca: bool = True
    ram: RAMConfig = field(default_factory=RAMConfig)
    data: TrainDataConfig = field(
        default_factory=lambda: TrainDataConfig(paired_roots=("preset/datasets/train",))
    )
    run: RunConfig = field(default_factory=RunConfig)
    null_text_ratio: float = 0.5
    trainable_modules: tuple[str, ...] = ("image_attentions",)
    validation_steps: int = 0
    validation_images: tuple[str, ...] = ()
    validation_inference_steps: int = 20

    def __post_init__(self) -> None:
        if not 0.0 <= self.null_text_ratio <= 1.0:
            raise ValueError(f"null_text_ratio must be in [0, 1], got {self.null_text_ratio}")
        if self.validation_steps < 0:
            raise ValueError(f"validation_steps must be >= 0, got {self.validation_steps}")


@dataclass(frozen=True)
class TrainDAPEConfig:
    """Stage 1: DAPE = LoRA distillation of RAM (spec §4.3, §4.4; paper §4.1: 20k it, batch 32, lr 1e-4).

    Attributes:
        ram: ``ram_checkpoint`` (teacher and student base); ``dape_checkpoint`` = optional LoRA to start from.
        data: paired folders (``gt/`` = teacher input, ``sr_bicubic/`` = student input) or HQ folders (online).
        lora_rank, lora_alpha: official 8 and 1 (scale 1/8).
        logits_weight: λ of the soft-label BCE term (paper Eq. 1: 1).
        feature_weight: weight of the embedding MSE (official 1).
        drop_path_rate, head_dropout: student regularisation in train mode (official 0.1 / 0.1).
    """

    ram: RAMConfig = field(default_factory=lambda: RAMConfig(dape_checkpoint=None))
    data: TrainDataConfig = field(
        default_factory=lambda: TrainDataConfig(
            paired_roots=("preset/datasets/training_for_dape",), tags="none"
        )
    )
    run: RunConfig = field(
        default_factory=lambda: RunConfig(
            output_dir="runs/dape",
            max_train_steps=20_000,
            train_batch_size=32,
            learning_rate=1e-4,
            weight_decay=0.0,
            max_grad_norm=0.0,
            mixed_precision="no",
            checkpointing_steps=1000,
        )
    )
    lora_rank: int = 8
    lora_alpha: float = 1.0
    feature_weight: float = 1.0
    logits_weight: float = 1.0
    drop_path_rate: float = 0.1
    head_dropout: float = 0.1

    def __post_init__(self) -> None:
        if self.lora_rank < 1:
            raise ValueError(f"lora_rank must be >= 1, got {self.lora_rank}")
        if self.feature_weight < 0 or self.logits_weight < 0:
            raise ValueError("feature_weight and logits_weight must be >= 0")
        if not (0 <= self.drop_path_rate < 1 and 0 <= self.head_dropout < 1):
            raise ValueError("drop_path_rate and head_dropout must be in [0, 1)")


def load_train_config(cls: type[T], path: str | Path) -> T:
    """Read a YAML run config into ``cls`` (``TrainSeeSRConfig`` or ``TrainDAPEConfig``).

    The ``run`` and ``ram`` sections are merged key by key over the stage's defaults, so a file that sets only
    ``run.max_train_steps`` keeps the stage's other ``run`` defaults; a ``data`` section replaces the default one
    (its ``paired_roots`` / ``hq_roots`` exclude each other). Unknown keys raise ``ValueError``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: not a mapping, an unknown key, or an invalid value.
    """
    data = read_yaml_mapping(path)
    merged = _deep_merge(config_to_dict(cls()), data, str(path))
    return config_from_dict(cls, merged, where=str(path))


def _deep_merge(base: dict[str, Any], update: Mapping[str, Any], where: str) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if key not in base:
            raise ValueError(f"{where}: unknown key {key!r}; expected some of {sorted(base)}")
        if key != "data" and isinstance(base[key], dict) and isinstance(value, Mapping):
            out[key] = _deep_merge(base[key], value, f"{where}.{key}")
        else:
            out[key] = value
    return out
