"""The DAPE-training models (stage 1; spec §4.4): the frozen RAM teacher and the LoRA student.

The student is RAM with *unmerged* trainable LoRA on the DAPE targets (Swin ``qkv`` q/v rows, tagging-head
``query``/``key``); the trained tensors are written in the official layout by
:func:`seesr.pipeline.dape_lora.save_official_lora`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from seesr.models.dape import DAPE, DAPEConfig
from seesr.models.lora import DEFAULT_ALPHA, DEFAULT_RANK, mark_only_lora_trainable
from seesr.pipeline.dape_lora import lora_pairs, read_official_lora
from seesr.pipeline.dape_weights import load_official_dape, resolve_dape_config

__all__ = ["build_student", "build_teacher"]


def build_teacher(
    ram_checkpoint: str | Path,
    *,
    tag_list: str | Path | Sequence[str],
    thresholds: str | Path | Sequence[float],
    arch: None | DAPEConfig | Mapping[str, Any] | str | Path = None,
) -> DAPE:
    """The DAPE-training teacher: plain RAM (no LoRA), eval mode, no gradients (spec §4.4)."""
    model = load_official_dape(ram_checkpoint, None, tag_list=tag_list, thresholds=thresholds, arch=arch)
    model.requires_grad_(False)
    return model.eval()


def build_student(
    ram_checkpoint: str | Path,
    dape_checkpoint: str | Path | None = None,
    *,
    tag_list: str | Path | Sequence[str],
    thresholds: str | Path | Sequence[float],
    arch: None | DAPEConfig | Mapping[str, Any] | str | Path = None,
    r: int = DEFAULT_RANK,
    alpha: float = DEFAULT_ALPHA,
    generator: torch.Generator | None = None,
    drop_path_rate: float | None = None,
    head_dropout: float | None = None,
) -> DAPE:
    """The DAPE-training student: RAM + unmerged trainable LoRA on the DAPE targets (spec §4.4).

    Fresh LoRA: ``lora_A`` kaiming-uniform from ``generator``, ``lora_B`` = 0. With ``dape_checkpoint`` its
    Swin/tagging-head LoRA tensors are installed unmerged instead (resume / fine-tune); the official student
    runs unmerged, so tag_encoder/text_decoder LoRA do not affect it and are ignored. Only ``lora_*`` require
    gradients. Returned in ``train()`` mode; ``drop_path_rate``/``head_dropout`` (official: 0.1 / 0.1, default
    here: the config's, i.e. 0) act only in train mode, drawing from :meth:`DAPE.set_generator`'s generator.
    """
    config = resolve_dape_config(arch)
    changes: dict[str, Any] = {}
    if drop_path_rate is not None:
        changes["drop_path_rate"] = drop_path_rate
    if head_dropout is not None:
        changes["head_dropout"] = head_dropout
    config = dataclasses.replace(config, **changes)
    model = load_official_dape(ram_checkpoint, None, tag_list=tag_list, thresholds=thresholds, arch=config)
    # load_official_dape assigned (possibly memory-mapped, read-only-shared) tensors; training wants owned copies
    with torch.no_grad():
        for p in model.parameters():
            p.data = p.data.clone()
    model.enable_lora(r, alpha, generator)
    if dape_checkpoint is not None:
        path = Path(dape_checkpoint)
        pairs = lora_pairs(read_official_lora(path), path)
        layers = model.lora_layers()
        for name, (a, b) in pairs.items():
            if name in layers:
                try:
                    layers[name].set_lora(a, b, alpha)
                except ValueError as err:
                    raise ValueError(f"DAPE checkpoint {path}: {name}: {err}") from err
            elif not name.startswith(("tag_encoder.", "text_decoder.")):
                raise ValueError(f"DAPE checkpoint {path}: LoRA for layers this model does not have: {name}")
        missing = sorted(n for n in layers if n not in pairs)
        if missing:
            raise ValueError(f"DAPE checkpoint {path}: no LoRA for {len(missing)} layers, e.g. {missing[:3]}")
    mark_only_lora_trainable(model)
    return model.train()
