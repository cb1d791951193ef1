"""Offline LR/HR training pairs (``seesr make-pairs``) with the Real-ESRGAN degradation (spec §6.1–6.2, §9 items 15–16).

Writes ``OUT/gt/NNNNNNN.png`` (the USM-sharpened 512² GT), ``OUT/lr/`` (128²), ``OUT/sr_bicubic/`` (LR bicubic x4,
unclamped then stored like ``cv2.imwrite(255·x)``: round half-to-even + saturate) and, with a tagger, ``OUT/tag/``
(``"tag1, tag2, ...,"`` as the official make_tags.py, but in the ``tag/`` folder the training loader reads — the
official script drops the path separator, spec §9 item 15). Names are 7-digit running indices from 1 over
epochs x images.

Determinism and resuming: pair n uses generators seeded from (seed, n) only, so the output does not depend on
the batch size, the device order of work or on interruptions; finished indices (all files present) are skipped.
Files are written to a temporary name and renamed, so a killed run never leaves a truncated PNG behind.
``OUT/make_pairs.json`` records the settings; resuming with different settings is refused.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

__all__ = ["Tagger", "make_pairs"]

Tagger = Callable[[Any], Sequence[str]]
"""Called with a (B, 3, H, W) float tensor of stored GT images in [0, 1]; returns one ", "-joined tag string each."""


def _write_png(path: Path, img: Any) -> None:
    """(3, H, W) float tensor -> 8-bit PNG like cv2.imwrite(255·x): round half-to-even, saturate."""
    import numpy as np
    import torch
    from PIL import Image

    arr = (img.detach().float().cpu() * 255.0).round().clamp(0, 255).to(torch.uint8)
    tmp = path.with_name(path.name + ".tmp")
    Image.fromarray(np.ascontiguousarray(arr.permute(1, 2, 0).numpy())).save(
        tmp, format="PNG", compress_level=1
    )
    os.replace(tmp, path)


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def make_pairs(
    gt_dirs: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    seed: int = 0,
    epochs: int = 1,
    mode: str = "seesr",
    device: str = "cpu",
    batch_size: int = 8,
    config: Any = None,
    tagger: Tagger | None = None,
    limit: int | None = None,
    progress: bool = True,
) -> dict[str, int]:
    """Generate training pairs (see the module docstring). Returns counts ``{"total", "made", "skipped"}``.

    Args:
        gt_dirs: folders of HQ images.
        out_dir: output root (created).
        seed: base seed; pair n (0-based) uses seeds derived from (seed, n).
        epochs: passes over the images (each pass draws new crops, flips and degradations).
        mode: "seesr" or "dape" GT processing (:class:`seesr.data.datasets.HQFolderDataset`).
        device: torch device of the degradation.
        batch_size: pairs per degradation call (does not change the output).
        config: ``DegradationConfig`` (default: SeeSR's set).
        tagger: optional callable, (B, 3, H, W) GT in [0, 1] -> B tag strings; enables ``tag/``.
        limit: make at most this many pairs in total (indices 0..limit-1).
        progress: show a tqdm bar.
    """
    import torch
    import torch.nn.functional as F
    from tqdm import tqdm

    from seesr.config import config_to_dict
    from seesr.data.datasets import HQFolderDataset, derive_seed
    from seesr.data.realesrgan import DegradationConfig, RealESRGANDegradation

    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    config = config or DegradationConfig()
    dev = torch.device(device)
    dataset = HQFolderDataset(gt_dirs, mode=mode, seed=seed)
    deg = RealESRGANDegradation(config)
    out = Path(out_dir)
    subdirs = ["gt", "lr", "sr_bicubic"] + (["tag"] if tagger is not None else [])
    for d in subdirs:
        (out / d).mkdir(parents=True, exist_ok=True)

    settings = {
        "seed": seed,
        "mode": mode,
        "images": [str(p) for p in dataset.files],
        "degradation": config_to_dict(config),
    }
    meta = out / "make_pairs.json"
    if meta.is_file():
        old = json.loads(meta.read_text())
        for key in ("seed", "mode", "images", "degradation"):
            if old.get(key) != settings[key]:
                raise ValueError(
                    f"{out} was made with a different {key} ({meta}); use a new output folder or the same settings to resume"
                )
    _write_text(meta, json.dumps(settings, indent=1))

    n_img = len(dataset)
    total = n_img * epochs if limit is None else min(n_img * epochs, max(0, int(limit)))

    def paths(n: int) -> dict[str, Path]:
        name = f"{n + 1:07d}"
        return {d: out / d / (f"{name}.txt" if d == "tag" else f"{name}.png") for d in subdirs}

    todo = [n for n in range(total) if not all(p.is_file() for p in paths(n).values())]
    skipped = total - len(todo)
    if skipped:
        logger.info("resuming: %d of %d pairs already present in %s", skipped, total, out)
    bar = tqdm(total=len(todo), disable=not progress, unit="pair", desc="make-pairs")
    with torch.inference_mode():
        for start in range(0, len(todo), batch_size):
            chunk = todo[start : start + batch_size]
            gts = []
            for n in chunk:
                # crop/flip of pair n: a generator of its own, so the epoch's crop differs per pass
                gts.append(dataset.load(n % n_img, torch.Generator().manual_seed(derive_seed(seed, 0, n))))
            gt = torch.stack(gts).to(dev)
            gens = [torch.Generator(device=dev).manual_seed(derive_seed(seed, 1, n)) for n in chunk]
            lr, gt_usm = deg(gt, gens)
            sr = F.interpolate(lr, size=gt.shape[-2:], mode="bicubic")
            tags = None
            if tagger is not None:
                # the official tags come from RAM on the stored (8-bit) GT PNGs
                tags = list(tagger((gt_usm * 255).round().clamp(0, 255) / 255))
                if len(tags) != len(chunk):
                    raise ValueError(f"tagger returned {len(tags)} tag strings for {len(chunk)} images")
            for i, n in enumerate(chunk):
                p = paths(n)
                _write_png(p["gt"], gt_usm[i])
                _write_png(p["lr"], lr[i])
                _write_png(p["sr_bicubic"], sr[i])
                if tags is not None:
                    _write_text(p["tag"], f"{tags[i]},")
            bar.update(len(chunk))
    bar.close()
    return {"total": total, "made": len(todo), "skipped": skipped}
