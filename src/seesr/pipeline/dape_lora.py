"""The official ``DAPE.pth`` LoRA layout (loralib keys ``*.lora_A`` / ``*.lora_B``; spec §4.2, §9.19).

* :func:`read_official_lora` / :func:`lora_pairs`: read a ``DAPE.pth`` (weights-only) into ``{layer: (A, B)}``;
* :func:`merge_official_lora`: fold the deltas into a RAM state dict in loralib's ``eval()`` order;
* :func:`official_lora_state_dict` / :func:`save_official_lora`: a trained student's LoRA in the exact key layout
  and order of the released file (SeeSR's ``--ram_ft_path`` loads it).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path

import torch

from seesr.models.dape import DAPE, DAPEConfig
from seesr.models.lora import DEFAULT_ALPHA, DEFAULT_RANK, lora_state_dict, merge_delta_
from seesr.pipeline.dape_weights import torch_load_weights

logger = logging.getLogger(__name__)

__all__ = [
    "lora_pairs",
    "med_lora_shapes",
    "merge_official_lora",
    "official_lora_state_dict",
    "read_official_lora",
    "save_official_lora",
]

_QKV_GROUPS = (True, False, True)
_SWIN_QKV = re.compile(r"^visual_encoder\.layers\.\d+\.blocks\.\d+\.attn\.qkv$")
_HEAD_QK = re.compile(r"^tagging_head\.encoder\.layer\.(\d+)\.crossattention\.self\.(query|key)$")
_TIED_QK = re.compile(r"^tag_encoder\.encoder\.layer\.(\d+)\.crossattention\.self\.(query|key)$")


def read_official_lora(path: Path) -> dict[str, torch.Tensor]:
    """The ``{key: float32 tensor}`` of a ``DAPE.pth`` (weights-only load).

    Raises:
        FileNotFoundError: missing file.
        ValueError: not a checkpoint, or an entry that is not a ``*.lora_A`` / ``*.lora_B`` tensor.
    """
    sd = torch_load_weights(path, "DAPE checkpoint")
    if not isinstance(sd, Mapping) or not sd:
        raise ValueError(f"DAPE checkpoint {path}: expected a dict of lora_A/lora_B tensors")
    bad = [
        k for k, v in sd.items() if not isinstance(v, torch.Tensor) or not k.endswith((".lora_A", ".lora_B"))
    ]
    if bad:
        raise ValueError(
            f"DAPE checkpoint {path}: {len(bad)} entries are not LoRA tensors, e.g. {bad[:5]} "
            "(expected only '*.lora_A' / '*.lora_B' keys as in DAPE.pth)"
        )
    return {k: v.float() for k, v in sd.items()}


def lora_pairs(sd: Mapping[str, torch.Tensor], path: Path) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``{layer name: (lora_A, lora_B)}``; ``path`` only names the file in errors (one half missing)."""
    pairs: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for key in sd:
        layer = key.rsplit(".", 1)[0]
        if layer in pairs:
            continue
        a, b = sd.get(f"{layer}.lora_A"), sd.get(f"{layer}.lora_B")
        if a is None or b is None:
            raise ValueError(f"DAPE checkpoint {path}: {layer} has only one of lora_A / lora_B")
        pairs[layer] = (a, b)
    return pairs


def merge_official_lora(state: dict[str, torch.Tensor], path: Path, config: DAPEConfig) -> None:
    """Merge the DAPE deltas into ``state`` (official key names) in loralib's ``eval()`` order."""
    pairs = lora_pairs(read_official_lora(path), path)
    scale = DEFAULT_ALPHA / DEFAULT_RANK
    tied, own, unknown = [], [], []
    for layer, (_a, b) in pairs.items():
        if _SWIN_QKV.match(layer) or _HEAD_QK.match(layer):
            own.append(layer)
        elif (m := _TIED_QK.match(layer)) and int(m.group(1)) < config.head_layers:
            tied.append(layer)
        elif layer.startswith(("tag_encoder.", "text_decoder.")):
            if bool(b.any()):
                logger.warning(
                    "DAPE checkpoint %s: ignoring non-zero LoRA of %s (not used by SeeSR)", path, layer
                )
        else:
            unknown.append(layer)
    if unknown:
        raise ValueError(f"DAPE checkpoint {path}: LoRA for layers this model does not have: {unknown[:5]}")

    owned: set[str] = set()

    def merge(layer: str, target: str, groups: tuple[bool, ...]) -> None:
        a, b = pairs[layer]
        if target not in state:
            raise ValueError(f"DAPE checkpoint {path}: {layer} has no base weight {target}")
        if (
            target not in owned
        ):  # copy on first write: the mmap'd checkpoint stays untouched (and mostly unread)
            state[target] = state[target].clone()
            owned.add(target)
        w = state[target]
        r = b.shape[1] if b.ndim == 2 else 0
        if r != DEFAULT_RANK:
            raise ValueError(
                f"DAPE checkpoint {path}: {layer}.lora_B {tuple(b.shape)}: expected rank {DEFAULT_RANK}"
            )
        try:
            merge_delta_(w, a, b, groups, scale)
        except ValueError as err:
            raise ValueError(f"DAPE checkpoint {path}: {layer} vs {target} {tuple(w.shape)}: {err}") from err

    # loralib merges module by module in registration order: tag_encoder (tied to the head) before tagging_head
    for layer in tied:
        if bool(pairs[layer][1].any()):
            logger.info(
                "DAPE checkpoint %s: merging non-zero tied LoRA %s into the tagging head", path, layer
            )
            merge(layer, layer.replace("tag_encoder.", "tagging_head.", 1) + ".weight", (True,))
    for layer in own:
        merge(layer, f"{layer}.weight", _QKV_GROUPS if layer.endswith(".qkv") else (True,))


def med_lora_shapes(config: DAPEConfig) -> list[tuple[str, tuple[int, int], tuple[int, int]]]:
    """(layer name, lora_A shape, lora_B shape) of the official tag_encoder / text_decoder LoRA, in order."""
    h, r = config.med_hidden, DEFAULT_RANK
    out = []
    for prefix, cross_in in (
        ("tag_encoder.encoder.layer", config.embed_width),
        ("text_decoder.bert.encoder.layer", config.med_decoder_encoder_width),
    ):
        for i in range(config.med_layers):
            for kind, kin in (("attention", h), ("crossattention", cross_in)):
                for proj in ("query", "key"):
                    in_f = kin if (kind == "crossattention" and proj == "key") else h
                    out.append((f"{prefix}.{i}.{kind}.self.{proj}", (r, in_f), (h, r)))
    return out


def official_lora_state_dict(
    model: DAPE, template: str | Path | Mapping[str, torch.Tensor] | None = None
) -> dict[str, torch.Tensor]:
    """The model's LoRA tensors in the exact key layout and order of the official ``DAPE.pth``.

    Order: Swin qkv (by stage/block), then the tag_encoder and text_decoder LoRA keys (not built here), then the
    tagging head. The tag_encoder/text_decoder tensors are taken from ``template`` (e.g. the ``DAPE.pth`` training
    started from) when given, else written as zeros — their ``lora_B`` is zero in the official training too (no
    gradient reaches them), so the merged model is the same; note zeros are not loralib's kaiming ``lora_A``.

    Args:
        model: a student with LoRA enabled (unmerged).
        template: optional official LoRA file or dict for the tag_encoder/text_decoder entries.

    Returns:
        ``{key: float32 CPU tensor}``.

    Raises:
        ValueError: if LoRA is not enabled on every target, or the template lacks a key / has a wrong shape.
    """
    ours = lora_state_dict(model)
    layers = model.lora_layers()
    not_enabled = sorted(n for n, layer in layers.items() if not layer.lora_enabled)
    if not_enabled:
        raise ValueError(
            f"LoRA is not enabled (or already merged) on {len(not_enabled)} layers: {not_enabled[:3]}"
        )
    tmpl: Mapping[str, torch.Tensor] = {}
    if template is not None:
        tmpl = read_official_lora(Path(template)) if isinstance(template, (str, Path)) else template
    out: dict[str, torch.Tensor] = {}
    for k, v in ours.items():
        if k.startswith("visual_encoder."):
            out[k] = v.float().cpu().clone()
    for layer, a_shape, b_shape in med_lora_shapes(model.config):
        for suffix, shape in ((".lora_A", a_shape), (".lora_B", b_shape)):
            key = layer + suffix
            if template is None:
                out[key] = torch.zeros(shape)
                continue
            if key not in tmpl:
                raise ValueError(f"LoRA template lacks {key}")
            if tuple(tmpl[key].shape) != shape:
                raise ValueError(f"LoRA template {key} has shape {tuple(tmpl[key].shape)}, expected {shape}")
            out[key] = tmpl[key].float().cpu().clone()
    for k, v in ours.items():
        if k.startswith("tagging_head."):
            out[k] = v.float().cpu().clone()
    return out


def save_official_lora(
    path: str | Path, model: DAPE, template: str | Path | Mapping[str, torch.Tensor] | None = None
) -> None:
    """``torch.save`` :func:`official_lora_state_dict` to ``path`` (loadable by SeeSR's ``--ram_ft_path``)."""
    torch.save(official_lora_state_dict(model, template), Path(path))
