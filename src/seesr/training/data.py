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

from seesr.data.datasets import derive_seed

logger = logging.getLogger(__name__)


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
            g = torch.Generator().manual_seed(derive_seed(self.seed, epoch, 0x5EED))
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


def read_rgb(path: str | Path) -> torch.Tensor:
    """One image as contiguous (3, H, W) float32 in [0, 1] (through :func:`seesr.io.load_image`)."""
    from seesr.io import load_image

    return torch.from_numpy(np.ascontiguousarray(load_image(path).rgb)).permute(2, 0, 1).contiguous()


class PairedTrainingData(Dataset):
    """``make-pairs`` folders through :class:`seesr.data.datasets.PairedFolderDataset` (paired by stem, sorted):
    ``gt`` -> ``gt``, ``sr_bicubic`` -> ``cond``, ``tag`` text -> ``prompt`` (when ``with_tags``, else ``""``)."""

    def __init__(self, roots: Sequence[str | Path], *, with_tags: bool) -> None:
        from seesr.data.datasets import PairedFolderDataset

        keys = ("gt", "sr_bicubic", "tag") if with_tags else ("gt", "sr_bicubic")
        self.pairs = PairedFolderDataset(list(roots), keys=keys)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        index, sample_id = key
        item = self.pairs[index]
        gt, cond = item["gt"].contiguous(), item["sr_bicubic"].contiguous()
        if gt.shape != cond.shape:
            raise ValueError(
                f"pair {item['root']}/{item['name']}: gt {tuple(gt.shape)} vs sr_bicubic {tuple(cond.shape)}"
            )
        return {"sample_id": sample_id, "gt": gt, "cond": cond, "prompt": item.get("tag", "")}


class HQTrainingData(Dataset):
    """HQ-only folders through :class:`seesr.data.datasets.HQFolderDataset` (official GT side: ``mode="seesr"``
    filter + flip + reflect-pad + random crop, or ``mode="dape"`` LANCZOS resize), with the crop/flip drawn from a
    generator keyed by ``(seed, sample_id)``; the degradation runs later on the training device."""

    def __init__(
        self,
        roots: Sequence[str | Path],
        *,
        resolution: int,
        seed: int,
        mode: str = "seesr",
        min_pixels: int = 384 * 384,
        min_bytes: int = 100 * 1024,
    ) -> None:
        from seesr.data.datasets import HQFolderDataset

        self.images = HQFolderDataset(
            list(roots),
            mode=mode,
            crop_size=resolution,
            min_pixels=min_pixels,
            min_bytes=min_bytes,
            seed=seed,
        )
        self.seed = seed

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        index, sample_id = key
        g = torch.Generator().manual_seed(derive_seed(self.seed, sample_id, 0xC809))
        return {"sample_id": sample_id, "gt": self.images.load(index, g).contiguous(), "prompt": ""}


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


def build_dataset(data_cfg: Any, *, seed: int, stage: str = "seesr") -> PairedTrainingData | HQTrainingData:
    """The data set a :class:`~seesr.training.config.TrainDataConfig` describes for ``stage`` ``"seesr"`` (HQ: random
    crops; tags read when precomputed) or ``"dape"`` (HQ: resize to ``resolution``²; tags never read), as the
    official loaders."""
    if stage not in ("seesr", "dape"):
        raise ValueError(f"stage must be 'seesr' or 'dape', got {stage!r}")
    if data_cfg.paired_roots:
        with_tags = stage == "seesr" and data_cfg.tags == "precomputed"
        return PairedTrainingData(data_cfg.paired_roots, with_tags=with_tags)
    return HQTrainingData(
        data_cfg.hq_roots,
        resolution=data_cfg.resolution,
        seed=seed,
        mode=stage,
        min_pixels=data_cfg.hq_min_pixels,
        min_bytes=data_cfg.hq_min_bytes,
    )


def build_loader(
    data_cfg: Any, run: Any, accelerator: Any, *, start_step: int, stage: str = "seesr"
) -> tuple[torch.utils.data.DataLoader, Any]:
    """This process's data loader (batches addressed by step, so resuming at ``start_step`` is exact) and the
    online degradation module when training from HQ folders (else ``None``)."""
    dataset = build_dataset(data_cfg, seed=run.seed, stage=stage)
    sampler = StepBatchSampler(
        len(dataset),
        batch_size=run.train_batch_size,
        accumulation=run.gradient_accumulation_steps,
        rank=accelerator.process_index,
        world_size=accelerator.num_processes,
        seed=run.seed,
        shuffle=data_cfg.shuffle,
        start_step=start_step,
        max_steps=run.max_train_steps,
    )
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=sampler, collate_fn=collate, num_workers=data_cfg.num_workers
    )
    degradation = None
    if data_cfg.hq_roots:
        from seesr.data.realesrgan import RealESRGANDegradation

        degradation = RealESRGANDegradation()
    return loader, degradation


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
        torch.Generator(device=gt.device).manual_seed(derive_seed(seed, int(sid), 0xDE6))
        for sid in sample_ids.tolist()
    ]
    lr, gt_usm = degradation(gt, gens)
    cond = F.interpolate(lr, size=gt.shape[-2:], mode="bicubic", align_corners=False).clamp(0.0, 1.0)
    return gt_usm.clamp(0.0, 1.0), cond
