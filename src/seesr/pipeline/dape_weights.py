"""DAPE weight files: the released RAM / DAPE ``.pth`` files and our safetensors folder (spec §4.1, §4.2).

* :func:`load_official_dape`: ``ram_swin_large_14m.pth`` (+ optional ``DAPE.pth`` LoRA, merged) + the tag list and
  threshold text files → :class:`~seesr.models.dape.DAPE`, exactly as SeeSR's ``ram(...)`` + ``.eval()``;
* :func:`save_dape` / :func:`load_dape`: our folder (``config.json``, ``model.safetensors`` with LoRA merged,
  ``tag_list.txt``, ``tag_thresholds.txt``).

Every ``torch.load`` here is weights-only. The official LoRA key layout lives in :mod:`seesr.pipeline.dape_lora`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from seesr.models.dape import DAPE, DAPEConfig, TaggingOptions, check_tag_list, check_thresholds

logger = logging.getLogger(__name__)

__all__ = [
    "load_dape",
    "load_official_dape",
    "read_tag_list",
    "read_thresholds",
    "resolve_dape_config",
    "save_dape",
    "torch_load_weights",
]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
TAG_LIST_NAME = "tag_list.txt"
THRESHOLDS_NAME = "tag_thresholds.txt"


def resolve_dape_config(arch: None | DAPEConfig | Mapping[str, Any] | str | Path) -> DAPEConfig:
    """The architecture: ``None`` = full-size RAM Swin-L; a config, a dict or an ``arch.json`` path.

    Raises:
        FileNotFoundError / ValueError: a missing or malformed file, an unknown key.
    """
    if arch is None:
        return DAPEConfig()
    if isinstance(arch, DAPEConfig):
        return arch
    if isinstance(arch, (str, Path)):
        path = Path(arch)
        if not path.is_file():
            raise FileNotFoundError(f"DAPE architecture file not found: {path}")
        try:
            arch = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(arch, Mapping):
        raise ValueError(f"arch must be None, a DAPEConfig, a dict or a JSON path, got {type(arch).__name__}")
    return DAPEConfig.from_dict(arch)


def torch_load_weights(path: Path, what: str) -> Any:
    """``torch.load(path, weights_only=True)`` on CPU, memory-mapped when the format allows.

    Raises:
        FileNotFoundError: ``path`` is missing.
        ValueError: not a readable weights-only checkpoint (``what`` names the file's role).
    """
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as err:
            if "mmap" not in str(err):
                raise
            # legacy (non-zip) torch.save format cannot be memory-mapped
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling errors come in many types; report them uniformly
        raise ValueError(f"{what} {path} is not a readable PyTorch checkpoint: {err}") from err


def read_tag_list(tag_list: str | Path | Sequence[str], num_classes: int) -> list[str]:
    """Tag names from a text file (one per line, as ``ram_tag_list.txt``) or a sequence; ``num_classes`` of them.

    Raises:
        FileNotFoundError: the file is missing.
        ValueError: the wrong number of names.
    """
    if not isinstance(tag_list, (str, Path)):
        return check_tag_list(tag_list, num_classes)
    path = Path(tag_list)
    if not path.is_file():
        raise FileNotFoundError(f"tag list not found: {path}")
    return check_tag_list(path.read_text(encoding="utf-8").splitlines(), num_classes, str(path))


def read_thresholds(
    thresholds: str | Path | Sequence[float] | torch.Tensor, num_classes: int
) -> torch.Tensor:
    """Per-class thresholds ``(num_classes,)`` float32 from a text file (one number per line; blank lines
    skipped) or from values.

    Raises:
        FileNotFoundError: the file is missing.
        ValueError: a line is not a number, the wrong count, or a NaN.
    """
    if not isinstance(thresholds, (str, Path)):
        return check_thresholds(thresholds, num_classes)
    path = Path(thresholds)
    if not path.is_file():
        raise FileNotFoundError(f"tag threshold file not found: {path}")
    values: list[float] = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
        if not line.strip():
            continue
        try:
            values.append(float(line.strip()))
        except ValueError as err:
            raise ValueError(f"{path}: line {i + 1} {line!r} is not a number") from err
    return check_thresholds(values, num_classes, str(path))


def _format_float32(v: float) -> str:
    import numpy as np

    return np.format_float_positional(np.float32(v), unique=True, trim="-")


def load_official_dape(
    ram_checkpoint: str | Path,
    dape_checkpoint: str | Path | None = None,
    tag_list: str | Path | Sequence[str] | None = None,
    thresholds: str | Path | Sequence[float] | None = None,
    arch: None | DAPEConfig | Mapping[str, Any] | str | Path = None,
    tagging: TaggingOptions | None = None,
) -> DAPE:
    """Load the released RAM checkpoint (+ optional DAPE LoRA) exactly as SeeSR's ``ram(...)`` + ``.eval()``.

    * ``ram_checkpoint``: ``torch.load(...)['model']`` (other entries such as optimizer state ignored);
      keys with ``vision_multi`` renamed to ``tagging_head``; ``relative_position_index``/``attn_mask``
      buffers and the ``tag_encoder``/``text_decoder`` weights (not needed; their tied layers 0-1 hold the
      same tensors as the tagging head) skipped; every other key must match (name and shape).
    * ``dape_checkpoint``: the flat ``lora_*`` dict of ``DAPE.pth``. Deltas ``(B@A)/8`` are merged into the
      Swin qkv q/v rows and the tagging-head query/key weights. Non-zero ``tag_encoder`` layer 0-1
      cross-attention query/key deltas reach the tagging head through the tied weights in the official code,
      so they are merged too, first: ``W ← (W + ΔE) + ΔH`` (spec §9.19). Other tag_encoder/text_decoder LoRA
      tensors are off the tagging/embedding path and ignored.

    Args:
        ram_checkpoint: path of ``ram_swin_large_14m.pth`` (or a file of that format).
        dape_checkpoint: path of ``DAPE.pth``; ``None`` = plain RAM.
        tag_list: path of ``ram_tag_list.txt`` or the list of names (``num_classes`` entries).
        thresholds: path of ``ram_tag_list_threshold.txt`` or the values.
        arch: ``None`` = the real Swin-L RAM; a :class:`DAPEConfig`, a dict or a path of an ``arch.json``.
        tagging: default tagging options.

    Raises:
        FileNotFoundError: a file is missing.
        ValueError: a file is not a checkpoint, a key is missing/unknown or has the wrong shape, or the tag
            list / thresholds have the wrong length.
    """
    if tag_list is None or thresholds is None:
        raise ValueError(
            "load_official_dape needs tag_list and thresholds (ram_tag_list.txt / _threshold.txt)"
        )
    config = resolve_dape_config(arch)
    tags = read_tag_list(tag_list, config.num_classes)
    thr = read_thresholds(thresholds, config.num_classes)
    ram_path = Path(ram_checkpoint)
    ckpt = torch_load_weights(ram_path, "RAM checkpoint")
    if not isinstance(ckpt, Mapping) or not isinstance(ckpt.get("model"), Mapping):
        keys = list(ckpt)[:5] if isinstance(ckpt, Mapping) else type(ckpt).__name__
        raise ValueError(f"RAM checkpoint {ram_path} has no 'model' state dict (found {keys})")
    model = DAPE.empty(config, tags, thr)
    expected = set(model.state_dict())
    state: dict[str, torch.Tensor] = {}
    unexpected: list[str] = []
    for key, value in ckpt["model"].items():
        name = key.replace("vision_multi", "tagging_head")
        if name.endswith(("relative_position_index", "attn_mask")) or name.startswith(
            ("tag_encoder.", "text_decoder.")
        ):
            continue
        if name in expected and isinstance(value, torch.Tensor):
            state[name] = value.float() if value.is_floating_point() else value
        else:
            unexpected.append(key)
    if unexpected:
        raise ValueError(
            f"RAM checkpoint {ram_path}: {len(unexpected)} unexpected keys {unexpected[:5]} "
            f"(expected a RAM Swin state dict; LoRA files go to dape_checkpoint)"
        )
    _check_tied_copies(ckpt["model"], state, ram_path)
    if dape_checkpoint is not None:
        # imported here: dape_lora itself imports torch_load_weights from this module
        from seesr.pipeline.dape_lora import merge_official_lora

        merge_official_lora(state, Path(dape_checkpoint), config)
    model.assign_state(state, f"RAM checkpoint {ram_path}")
    model.tagging = tagging or TaggingOptions()
    logger.info(
        "loaded DAPE from %s%s (%d parameters)",
        ram_path,
        f" + {dape_checkpoint}" if dape_checkpoint else "",
        sum(p.numel() for p in model.parameters()),
    )
    return model


def save_dape(model: DAPE, directory: str | Path) -> None:
    """Write ``config.json``, ``model.safetensors`` (LoRA merged), ``tag_list.txt``, ``tag_thresholds.txt``."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    sd = {k: v.contiguous() for k, v in model.merged_state_dict().items()}
    save_file(sd, str(out / WEIGHTS_NAME), metadata={"format": "pt", "seesr": "dape"})
    cfg = {"_class": "DAPE", "format_version": 1, "arch": model.config.to_dict()}
    (out / CONFIG_NAME).write_text(json.dumps(cfg, indent=1) + "\n", encoding="utf-8")
    (out / TAG_LIST_NAME).write_text("\n".join(model.tag_list), encoding="utf-8")
    (out / THRESHOLDS_NAME).write_text(
        "\n".join(_format_float32(v) for v in model.class_threshold.tolist()), encoding="utf-8"
    )


def load_dape(directory: str | Path, tagging: TaggingOptions | None = None) -> DAPE:
    """Load a folder written by :func:`save_dape`.

    Raises:
        FileNotFoundError: the folder or one of its four files is missing.
        ValueError: the files do not match each other.
    """
    d = Path(directory)
    for name in (CONFIG_NAME, WEIGHTS_NAME, TAG_LIST_NAME, THRESHOLDS_NAME):
        if not (d / name).is_file():
            raise FileNotFoundError(f"DAPE folder {d} lacks {name} (expected a folder written by save_dape)")
    try:
        cfg = json.loads((d / CONFIG_NAME).read_text(encoding="utf-8"))
        config = DAPEConfig.from_dict(cfg["arch"])
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"{d / CONFIG_NAME}: not a DAPE config ({err})") from err
    tags = read_tag_list(d / TAG_LIST_NAME, config.num_classes)
    thr = read_thresholds(d / THRESHOLDS_NAME, config.num_classes)
    model = DAPE.empty(config, tags, thr)
    model.assign_state(load_file(str(d / WEIGHTS_NAME)), f"DAPE weights {d / WEIGHTS_NAME}")
    model.tagging = tagging or TaggingOptions()
    return model


def _check_tied_copies(ckpt: Mapping[str, Any], state: Mapping[str, torch.Tensor], path: Path) -> None:
    """Warn when the checkpoint's tag_encoder copies of the tied tagging-head layers hold other values.

    In the official model both names are one tensor; loading copies the tag_encoder entry first and the
    tagging_head entry last, so the tagging_head values win — which is what we use. A mismatch means the file was
    not written from a tied model, so it is worth a warning (not an error: the official code accepts it).
    """
    differing = []
    for key, value in ckpt.items():
        if not key.startswith("tag_encoder.encoder.layer."):
            continue
        twin = "tagging_head." + key[len("tag_encoder.") :]
        mine = state.get(twin)
        if mine is None or not isinstance(value, torch.Tensor) or value.shape != mine.shape:
            continue
        if not torch.equal(value.to(mine.dtype), mine):
            differing.append(key)
    if differing:
        logger.warning(
            "RAM checkpoint %s: %d tag_encoder tensors differ from their tied tagging_head twins (e.g. %s); "
            "using the tagging_head values, as the official loader does",
            path,
            len(differing),
            differing[0],
        )
