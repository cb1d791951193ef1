"""Building the stage-2 models for training (spec §5; train_seesr.py model set-up, §9 item 13).

Two starts: from SD-2-base (``init_from=None``: the UNet gets fresh RCA modules and every other key from the SD-2
UNet, strictly; the ControlNet is copied from that UNet) or from a released/trained SeeSR folder (``unet/`` +
``controlnet/``, strict). Trainable = the whole ControlNet + the UNet modules named ``*image_attentions``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from seesr.models.controlnet import SeeSRControlNet
from seesr.models.loading import raise_on_bad_keys
from seesr.models.unet import RCA_KEY, SeeSRUNet

logger = logging.getLogger(__name__)


@dataclass
class SeeSRTrainModels:
    """Everything stage 2 runs: two trainable models, the frozen SD-2 parts and the frozen soft-prompt extractor."""

    unet: SeeSRUNet
    controlnet: SeeSRControlNet
    vae: Any
    text_encoder: Any
    tokenizer: Any
    noise_scheduler: Any
    soft_prompt: Any | None


def _require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise FileNotFoundError(f"{what} not found: {path}")
    return path


def unet_from_sd2(sd2_dir: str | Path, *, use_rca: bool = True) -> SeeSRUNet:
    """SD-2 UNet + freshly initialised RCA (default PyTorch init, spec §5), non-RCA weights loaded strictly.

    The official ``from_pretrained(..., use_image_cross_attention=True)`` needed ``low_cpu_mem_usage=False`` to
    work at all (spec §9 item 13); here the RCA modules are created by ``from_config`` from the global torch RNG
    (seed it first) and every other key must be present in the SD-2 file.

    Raises:
        FileNotFoundError / WeightsError: the folder, config or weights are missing or do not match.
    """
    from seesr.models.unet import _read_weights

    unet_dir = _require_dir(Path(sd2_dir) / "unet", "SD-2 UNet folder")
    config_path = unet_dir / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"SD-2 UNet config not found: {config_path}")
    config = json.loads(config_path.read_text())
    config["use_image_cross_attention"] = bool(use_rca)
    unet = SeeSRUNet.from_config(config)
    _, base = _read_weights(unet_dir)
    wanted = unet.state_dict()
    missing = [k for k in wanted if f".{RCA_KEY}." not in k and k not in base]
    unexpected = [k for k in base if k not in wanted or f".{RCA_KEY}." in k]
    raise_on_bad_keys(unet_dir, missing=missing, unexpected=unexpected)
    state = {k: base.get(k, v) for k, v in wanted.items()}
    unet.load_state_dict(state, strict=True)
    return unet


def load_trainable_pair(
    *, sd2_dir: str | Path, init_from: str | Path | None, use_rca: bool = True
) -> tuple[SeeSRUNet, SeeSRControlNet]:
    """The UNet and ControlNet training starts from (see the module docstring)."""
    if init_from is None:
        unet = unet_from_sd2(sd2_dir, use_rca=use_rca)
        controlnet = SeeSRControlNet.from_unet(unet, use_image_cross_attention=use_rca)
        return unet, controlnet
    root = _require_dir(Path(init_from), "SeeSR folder to fine-tune (init_from)")
    unet = SeeSRUNet.from_pretrained(root, subfolder="unet")
    controlnet = SeeSRControlNet.from_pretrained(root, subfolder="controlnet")
    for name, model in (("unet", unet), ("controlnet", controlnet)):
        has_rca = bool(model.config.get("use_image_cross_attention", False))
        if has_rca != bool(use_rca):
            raise ValueError(
                f"{root}/{name} has use_image_cross_attention={has_rca} but the config asks use_rca={use_rca}"
            )
    return unet, controlnet


def configure_trainable(
    unet: nn.Module, controlnet: nn.Module, trainable_modules: Sequence[str] = ("image_attentions",)
) -> list[tuple[str, nn.Parameter]]:
    """Freeze everything except the ControlNet and the UNet modules whose name ends with a ``trainable_modules``
    entry (spec §5).

    Returns:
        ``[("controlnet.<name>" | "unet.<name>", parameter)]`` of the trainable parameters, ControlNet first.
    """
    controlnet.requires_grad_(True)
    unet.requires_grad_(False)
    suffixes = tuple(trainable_modules)
    if suffixes:
        for name, module in unet.named_modules():
            if name.endswith(suffixes):
                module.requires_grad_(True)
    out = [(f"controlnet.{n}", p) for n, p in controlnet.named_parameters()]
    out += [(f"unet.{n}", p) for n, p in unet.named_parameters() if p.requires_grad]
    return out


def load_frozen_sd2(sd2_dir: str | Path) -> tuple[nn.Module, nn.Module, Any, Any]:
    """``(vae, text_encoder, tokenizer, noise_scheduler)`` of an SD-2 folder, frozen and in eval mode."""
    from diffusers import AutoencoderKL, DDPMScheduler
    from transformers import CLIPTextModel, CLIPTokenizer

    root = _require_dir(Path(sd2_dir), "SD-2 folder (pretrained_model)")
    for sub in ("vae", "text_encoder", "tokenizer", "scheduler"):
        _require_dir(root / sub, f"SD-2 {sub} folder")
    vae = AutoencoderKL.from_pretrained(root, subfolder="vae")
    text_encoder = CLIPTextModel.from_pretrained(root, subfolder="text_encoder")
    tokenizer = CLIPTokenizer.from_pretrained(root, subfolder="tokenizer")
    noise_scheduler = DDPMScheduler.from_pretrained(root, subfolder="scheduler")
    for m in (vae, text_encoder):
        m.requires_grad_(False)
        m.eval()
    return vae, text_encoder, tokenizer, noise_scheduler


def load_soft_prompt(ram_cfg: Any) -> nn.Module:
    """Frozen DAPE (``dape_checkpoint`` set) or plain RAM (``None``, paper Table 7 exp. 2), merged, eval."""
    from seesr.pipeline.dape_weights import load_official_dape

    model = load_official_dape(
        ram_cfg.ram_checkpoint,
        ram_cfg.dape_checkpoint,
        tag_list=ram_cfg.tag_list,
        thresholds=ram_cfg.thresholds,
        arch=ram_cfg.arch,
    )
    model.requires_grad_(False)
    return model.eval()


def count_parameters(params: Sequence[tuple[str, nn.Parameter]] | Sequence[nn.Parameter]) -> int:
    """Number of scalars in ``params`` (names ignored)."""
    return sum((p[1] if isinstance(p, tuple) else p).numel() for p in params)


def sd2_size_trainable_count(unet_config: dict[str, Any]) -> tuple[int, int]:
    """``(ControlNet params, UNet RCA params)`` of an SD-2-size model, built on the meta device (no memory)."""
    config = dict(unet_config, use_image_cross_attention=True)
    with torch.device("meta"):
        unet = SeeSRUNet.from_config(config)
        controlnet = SeeSRControlNet.from_unet(unet, load_weights_from_unet=False)
    params = configure_trainable(unet, controlnet)
    n_cn = count_parameters([p for n, p in params if n.startswith("controlnet.")])
    n_rca = count_parameters([p for n, p in params if n.startswith("unet.")])
    return n_cn, n_rca
