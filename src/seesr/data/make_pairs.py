"""Offline LR/HR training pairs (``seesr make-pairs``) with the Real-ESRGAN degradation (spec §6.1–6.2, §9 items 15–16).

Writes ``OUT/gt/NNNNNNN.png`` (the USM-sharpened 512² GT), ``OUT/lr/`` (128²), ``OUT/sr_bicubic/`` (LR bicubic x4,
unclamped then stored like ``cv2.imwrite(255·x)``: round half-to-even + saturate) and, with a tagger, ``OUT/tag/``
(``"tag1, tag2, ...,"`` as the official make_tags.py, but in the ``tag/`` folder the training loader reads — the
official script drops the path separator, spec §9 item 15). Names are 7-digit running indices from 1 over
epochs x images.

Determinism and resuming: pair n uses generators seeded from (seed, n) only, so the output does not depend on
the batch size, the device order of work or on interruptions; finished indices (all files present) are skipped.
Files are written to a temporary name and renamed, so a killed run never leaves a truncated PNG behind.
``OUT/make_pairs.json`` records the settings; resuming with different settings is refused. An image that cannot
be read fails its pairs alone (logged, counted in ``failed``); the others are still made.

The work is split in two for data-parallel runs (``seesr make-pairs`` under torchrun): :func:`plan_pairs` lists
the images and the missing pairs once (rank 0), :func:`write_pairs` makes any subset of them (each rank its share);
since a pair's draws depend only on (seed, n), the files are the same whichever process makes them.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

__all__ = ["PairsPlan", "Tagger", "make_pairs", "plan_pairs", "write_pairs"]

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


@dataclasses.dataclass
class PairsPlan:
    """What :func:`write_pairs` needs: the listed images, the output layout and the pairs still to make.

    Attributes:
        dataset: the :class:`~seesr.data.datasets.HQFolderDataset` (files listed and filtered once).
        out: the output root; ``subdirs`` its folders (``gt``, ``lr``, ``sr_bicubic`` and maybe ``tag``).
        seed, config: the base seed and the ``DegradationConfig``.
        total: pairs of the run (epochs x images, or ``limit``).
        todo: indices of the pairs not yet complete, increasing.
        costs: per ``todo`` entry, pixels read plus pixels degraded (to balance processes).
    """

    dataset: Any
    out: Path
    subdirs: list[str]
    seed: int
    config: Any
    total: int
    todo: list[int]
    costs: list[int]

    @property
    def skipped(self) -> int:
        return self.total - len(self.todo)

    def paths(self, n: int) -> dict[str, Path]:
        """The files of pair ``n`` (0-based), named by its 7-digit running number from 1."""
        name = f"{n + 1:07d}"
        return {d: self.out / d / (f"{name}.txt" if d == "tag" else f"{name}.png") for d in self.subdirs}


def plan_pairs(
    gt_dirs: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    seed: int = 0,
    epochs: int = 1,
    mode: str = "seesr",
    config: Any = None,
    tags: bool = False,
    limit: int | None = None,
) -> PairsPlan:
    """List the images, create the output folders, check or write ``make_pairs.json`` and find the missing pairs.

    Args: as :func:`make_pairs`; ``tags`` says whether a ``tag/`` folder is made.

    Raises:
        ValueError: ``epochs < 1``, or ``out_dir`` made with other settings.
    """
    from seesr.config import config_to_dict
    from seesr.data.datasets import HQFolderDataset
    from seesr.data.realesrgan import DegradationConfig
    from seesr.io import DEFAULT_MAX_OUTPUT_PIXELS, probe_image

    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    config = config or DegradationConfig()
    dataset = HQFolderDataset(gt_dirs, mode=mode, seed=seed)
    out = Path(out_dir)
    subdirs = ["gt", "lr", "sr_bicubic"] + (["tag"] if tags else [])
    for d in subdirs:
        (out / d).mkdir(parents=True, exist_ok=True)
        for stale in (out / d).glob("*.tmp"):  # left by a killed run (the finished files were renamed)
            stale.unlink(missing_ok=True)

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
    plan = PairsPlan(dataset, out, subdirs, seed, config, total, [], [])
    plan.todo = [n for n in range(total) if not all(p.is_file() for p in plan.paths(n).values())]
    if plan.skipped:
        logger.info("resuming: %d of %d pairs already present in %s", plan.skipped, total, out)
    read: dict[int, int] = {}
    degraded = dataset.crop_size**2
    for n in plan.todo:
        i = n % n_img
        if i not in read:
            try:  # headers only; an unreadable file costs little (it fails at once)
                read[i] = probe_image(dataset.files[i], max_pixels=DEFAULT_MAX_OUTPUT_PIXELS).pixels
            except (OSError, ValueError):
                read[i] = 0
        plan.costs.append(read[i] + degraded)
    return plan


def write_pairs(
    plan: PairsPlan,
    indices: Sequence[int] | None = None,
    *,
    device: str = "cpu",
    batch_size: int = 8,
    tagger: Tagger | None = None,
    progress: bool = True,
) -> dict[str, int]:
    """Make the pairs ``indices`` of ``plan`` (default: all of ``plan.todo``). Returns ``{"made", "failed"}``.

    A pair whose GT image cannot be read is logged and counted in ``failed``; the others are still made.

    Raises:
        ValueError: ``batch_size < 1``; ``tagger`` given or missing against the plan's ``tag/`` folder.
    """
    import torch
    import torch.nn.functional as F
    from tqdm import tqdm

    from seesr.data.datasets import derive_seed
    from seesr.data.realesrgan import RealESRGANDegradation

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if (tagger is not None) != ("tag" in plan.subdirs):
        raise ValueError("a tagger must be given exactly when the plan makes tag/ files")
    todo = list(plan.todo if indices is None else indices)
    dataset, seed, n_img = plan.dataset, plan.seed, len(plan.dataset)
    dev = torch.device(device)
    deg = RealESRGANDegradation(plan.config)
    made = failed = 0
    bar = tqdm(total=len(todo), disable=not progress, unit="pair", desc="make-pairs")
    with torch.inference_mode():
        for start in range(0, len(todo), batch_size):
            chunk, gts = [], []
            for n in todo[start : start + batch_size]:
                # crop/flip of pair n: a generator of its own, so the epoch's crop differs per pass
                try:
                    gts.append(
                        dataset.load(n % n_img, torch.Generator().manual_seed(derive_seed(seed, 0, n)))
                    )
                except Exception as err:  # one unreadable image fails its pairs alone
                    logger.error("pair %07d not made: %s", n + 1, err)  # err names the file
                    failed += 1
                    continue
                chunk.append(n)
            bar.update(len(todo[start : start + batch_size]) - len(chunk))
            if not chunk:
                continue
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
                p = plan.paths(n)
                _write_png(p["gt"], gt_usm[i])
                _write_png(p["lr"], lr[i])
                _write_png(p["sr_bicubic"], sr[i])
                if tags is not None:
                    _write_text(p["tag"], f"{tags[i]},")
            made += len(chunk)
            bar.update(len(chunk))
    bar.close()
    return {"made": made, "failed": failed}


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
    """Generate training pairs (see the module docstring). Returns ``{"total", "made", "skipped", "failed"}``.

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
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    plan = plan_pairs(
        gt_dirs,
        out_dir,
        seed=seed,
        epochs=epochs,
        mode=mode,
        config=config,
        tags=tagger is not None,
        limit=limit,
    )
    done = write_pairs(plan, device=device, batch_size=batch_size, tagger=tagger, progress=progress)
    return {"total": plan.total, "made": done["made"], "skipped": plan.skipped, "failed": done["failed"]}
