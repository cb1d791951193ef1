"""Training samples and their order (spec §4.4, §5, §6; DESIGN.md §6).

Order: :class:`StepBatchSampler` lays the data set out as one endless stream (a fresh permutation per epoch,
seeded by ``(seed, epoch)``); optimiser step ``s``, micro-step ``m`` of process ``r`` reads stream positions
``s*G + m*(b*W) + r*b + [0, b)`` (``b`` = per-device batch, ``W`` = processes, ``G`` = global batch). So the data
position of a run is just its step (exact resume), and the samples of a global batch do not depend on how many
processes share it. Every sample carries its stream position (``sample_id``), which keys its random draws.

Items (``dict``): ``sample_id`` (int), ``gt`` (3, H, W) float in [0, 1], ``cond`` (3, H, W) float in [0, 1] (the
``sr_bicubic`` image; absent for HQ data, which is degraded on the training device), ``prompt`` (str; ``""`` when
tags are computed online or not used).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Sampler

from seesr.training.steps import mix_seed

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


class StepBatchSampler(Sampler[list[tuple[int, int]]]):
    """Yields, for each (step, micro-step) from ``start_step``, this process's list of ``(index, sample_id)``.

    Args:
        num_samples: data-set size N.
        batch_size: per-device micro-batch b.
        accumulation: micro-steps per optimiser step.
        rank, world_size: this process and the number of processes W.
        seed: permutation seed (epoch e uses ``(seed, e)``).
        shuffle: permute each epoch (else the sorted order, as the official ``shuffle=False``).
        start_step, max_steps: optimiser-step range ``[start_step, max_steps)``.
    """

    def __init__(
        self,
        num_samples: int,
        *,
        batch_size: int,
        accumulation: int,
        rank: int,
        world_size: int,
        seed: int,
        shuffle: bool,
        start_step: int,
        max_steps: int,
    ) -> None:
        if num_samples < 1:
            raise ValueError("the training data set is empty")
        self.n, self.b, self.accum = num_samples, batch_size, accumulation
        self.rank, self.world = rank, world_size
        self.seed, self.shuffle = seed, shuffle
        self.start, self.stop = start_step, max_steps
        self._perm: tuple[int, torch.Tensor] | None = None

    @property
    def global_batch(self) -> int:
        return self.b * self.accum * self.world

    def _index(self, position: int) -> int:
        epoch, offset = divmod(position, self.n)
        if not self.shuffle:
            return offset
        if self._perm is None or self._perm[0] != epoch:
            g = torch.Generator().manual_seed(mix_seed(self.seed, epoch, 0x5EED))
            self._perm = (epoch, torch.randperm(self.n, generator=g))
        return int(self._perm[1][offset])

    def positions(self, step: int, micro: int) -> list[int]:
        """Stream positions read by this process at (step, micro)."""
        base = step * self.global_batch + micro * self.b * self.world + self.rank * self.b
        return list(range(base, base + self.b))

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for step in range(self.start, self.stop):
            for micro in range(self.accum):
                yield [(self._index(p), p) for p in self.positions(step, micro)]

    def __len__(self) -> int:
        return max(0, self.stop - self.start) * self.accum


def _to_tensor(rgb: np.ndarray) -> torch.Tensor:
    """(H, W, 3) float32 [0, 1] -> contiguous (3, H, W) (contiguous: resizes of channels-last views round
    differently)."""
    return torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).contiguous()


def read_rgb(path: str | Path) -> torch.Tensor:
    """One image as (3, H, W) float32 in [0, 1] (through :func:`seesr.io.load_image`)."""
    from seesr.io import load_image

    return _to_tensor(load_image(path).rgb)


def _list_images(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        raise FileNotFoundError(f"training folder not found: {folder}")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    out: dict[str, Path] = {}
    for p in files:
        if p.stem in out:
            raise ValueError(f"two images with the stem {p.stem!r} in {folder}: {out[p.stem].name}, {p.name}")
        out[p.stem] = p
    return out


class PairedTrainingData(Dataset):
    """``make-pairs`` folders: ``gt/``, ``sr_bicubic/`` and (when ``with_tags``) ``tag/<stem>.txt``, paired by
    file stem in sorted order (the official globs pair by directory order, spec §9 item 16).

    Raises:
        FileNotFoundError: a folder is missing, or a GT has no ``sr_bicubic``/``tag`` partner (named).
    """

    def __init__(self, roots: Sequence[str | Path], *, with_tags: bool) -> None:
        self.records: list[tuple[Path, Path, Path | None]] = []
        for root in map(Path, roots):
            gts = _list_images(root / "gt")
            conds = _list_images(root / "sr_bicubic")
            for stem, gt in gts.items():
                if stem not in conds:
                    raise FileNotFoundError(f"{gt} has no partner {root / 'sr_bicubic'}/{stem}.*")
                tag = root / "tag" / f"{stem}.txt"
                if with_tags and not tag.is_file():
                    raise FileNotFoundError(f"{gt} has no tag file {tag}")
                self.records.append((gt, conds[stem], tag if with_tags else None))
        if not self.records:
            raise ValueError(f"no training images in {[str(r) for r in roots]} (expected <root>/gt/*.png)")

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        index, sample_id = key
        gt_path, cond_path, tag_path = self.records[index]
        gt, cond = read_rgb(gt_path), read_rgb(cond_path)
        if gt.shape != cond.shape:
            raise ValueError(f"{gt_path} is {tuple(gt.shape)} but {cond_path} is {tuple(cond.shape)}")
        prompt = tag_path.read_text(encoding="utf-8") if tag_path is not None else ""
        return {"sample_id": sample_id, "gt": gt, "cond": cond, "prompt": prompt}


class HQTrainingData(Dataset):
    """HQ-only folders (spec §6.1 GT side): a random ``resolution``² crop (reflect-padded when smaller) and a
    horizontal flip with probability 0.5, drawn from a generator keyed by ``(seed, sample_id)``; the degradation
    runs later on the training device."""

    def __init__(self, roots: Sequence[str | Path], *, resolution: int, seed: int) -> None:
        self.files: list[Path] = []
        for root in map(Path, roots):
            self.files += list(_list_images(Path(root)).values())
        if not self.files:
            raise ValueError(f"no HQ images in {[str(r) for r in roots]}")
        self.resolution, self.seed = resolution, seed

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        index, sample_id = key
        img = read_rgb(self.files[index])
        s = self.resolution
        _, h, w = img.shape
        if h < s or w < s:
            pad_h, pad_w = max(0, s - h), max(0, s - w)
            img = F.pad(img[None], (0, pad_w, 0, pad_h), mode="reflect")[0]
            _, h, w = img.shape
        g = torch.Generator().manual_seed(mix_seed(self.seed, sample_id, 0xC809))
        top = int(torch.randint(0, h - s + 1, (1,), generator=g))
        left = int(torch.randint(0, w - s + 1, (1,), generator=g))
        crop = img[:, top : top + s, left : left + s]
        if float(torch.rand((1,), generator=g)) < 0.5:
            crop = crop.flip(-1)
        return {"sample_id": sample_id, "gt": crop.contiguous(), "prompt": ""}


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack tensors, keep prompts as a list and sample ids as an int64 tensor."""
    out: dict[str, Any] = {
        "sample_id": torch.tensor([it["sample_id"] for it in items], dtype=torch.int64),
        "gt": torch.stack([it["gt"] for it in items]),
        "prompt": [it["prompt"] for it in items],
    }
    if "cond" in items[0]:
        out["cond"] = torch.stack([it["cond"] for it in items])
    return out


def build_dataset(data_cfg: Any, *, seed: int) -> Dataset:
    """The data set a :class:`~seesr.training.config.TrainDataConfig` describes."""
    if data_cfg.paired_roots:
        return PairedTrainingData(data_cfg.paired_roots, with_tags=data_cfg.tags == "precomputed")
    return HQTrainingData(data_cfg.hq_roots, resolution=data_cfg.resolution, seed=seed)


def degrade_online(
    gt: torch.Tensor, sample_ids: torch.Tensor, seed: int, degradation: Any
) -> tuple[torch.Tensor, torch.Tensor]:
    """Make (gt_usm, sr_bicubic) on ``gt``'s device with one degradation generator per sample keyed by
    ``(seed, sample_id)`` (spec §6.1: the LR is bicubic-upsampled back to the GT size; clamped to [0, 1] as the
    saved PNGs are).

    Args:
        gt: (B, 3, H, W) in [0, 1].
        sample_ids: (B,) stream positions.
        degradation: a ``seesr.data.realesrgan.RealESRGANDegradation``.

    Returns:
        ``(gt_usm (B,3,H,W), cond (B,3,H,W))`` in [0, 1].
    """
    gens = [
        torch.Generator(device=gt.device).manual_seed(mix_seed(seed, int(sid), 0xDE6))
        for sid in sample_ids.tolist()
    ]
    lr, gt_usm = degradation(gt, gens)
    cond = F.interpolate(lr, size=gt.shape[-2:], mode="bicubic", align_corners=False).clamp(0.0, 1.0)
    return gt_usm.clamp(0.0, 1.0), cond
