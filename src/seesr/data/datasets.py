"""Training datasets: paired folders made by ``seesr make-pairs`` and HQ-only folders (spec §4.4, §5, §6.1–6.2).

* :class:`PairedFolderDataset` reads ``gt/``, ``lr/``, ``sr_bicubic/`` and ``tag/`` under one or more roots and pairs
  the files **by name stem**, sorted — never by the order of independent ``glob`` calls, which is what the official
  ``PairedCaptionDataset`` / ``DAPEDataset`` rely on (spec §9 item 16). A file without its partner is an error that
  names it.
* :class:`HQFolderDataset` gives GT crops with the official GT-side processing: ``mode="seesr"`` as
  ``RealESRGANDataset`` (drop small images, hflip, reflect-pad, random 512² crop) and ``mode="dape"`` as
  ``SimpleDataset`` (LANCZOS resize to 512², no crop). Randomness comes from a generator derived from
  (seed, epoch, index), so item i is the same whoever asks for it and in whatever order.

Images are read through :mod:`seesr.io` (EXIF orientation applied, 16 bits kept, ICC to sRGB) and returned as
(3, H, W) float32 RGB tensors in [0, 1].
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from seesr.io import DEFAULT_MAX_OUTPUT_PIXELS, IMAGE_EXTENSIONS, probe_image, read_rgb_u8
from seesr.io import load_image as _read

logger = logging.getLogger(__name__)

__all__ = [
    "IMAGE_EXTENSIONS",
    "HQFolderDataset",
    "PairedFolderDataset",
    "derive_seed",
    "list_images",
    "load_image",
]

_MASK64 = (1 << 64) - 1
# Training images can be large (a GT folder of x4 outputs too): the output cap still keeps a bomb out.
_MAX_PIXELS = DEFAULT_MAX_OUTPUT_PIXELS


def derive_seed(*parts: int) -> int:
    """Mix integers into one 63-bit seed (splitmix64 finaliser per part): stable across runs and platforms."""
    x = 0x9E3779B97F4A7C15
    for p in parts:
        x = (x ^ (int(p) & _MASK64)) & _MASK64
        x = (x + 0x9E3779B97F4A7C15) & _MASK64
        x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
        x ^= x >> 31
    return x >> 1


def _as_paths(roots: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    if isinstance(roots, (str, os.PathLike)):
        roots = [roots]
    return [Path(r) for r in roots]


def list_images(
    roots: str | os.PathLike | Sequence[str | os.PathLike], recursive: bool = False
) -> list[Path]:
    """Image files (``IMAGE_EXTENSIONS``, case-insensitive) under each root, sorted per root, roots in order."""
    out: list[Path] = []
    for root in _as_paths(roots):
        if not root.is_dir():
            raise FileNotFoundError(f"image folder not found: {root}")
        it = root.rglob("*") if recursive else root.iterdir()
        out += sorted(p for p in it if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    return out


def load_image(path: str | os.PathLike) -> torch.Tensor:
    """Read an image file as (3, H, W) float32 RGB in [0, 1] (:func:`seesr.io.load_image`, alpha dropped)."""
    return torch.from_numpy(_read(path, max_pixels=_MAX_PIXELS).rgb).permute(2, 0, 1).contiguous()


class HQFolderDataset(torch.utils.data.Dataset):
    """HQ-only GT images with the official GT-side processing (spec §6.1, §6.2).

    Args:
        roots: one or more folders of images.
        mode: ``"seesr"`` (RealESRGANDataset: drop images with fewer than ``min_pixels`` pixels or smaller than
            ``min_bytes`` on disk, horizontal flip with p 0.5, reflect-pad bottom/right to at least ``crop_size``,
            random ``crop_size``² crop) or ``"dape"`` (SimpleDataset: PIL LANCZOS resize to ``crop_size``², aspect
            ratio not kept, no flip/crop/filter).
        crop_size: output side (512 officially).
        min_pixels, min_bytes: the "seesr" filter (384², 100 KiB officially). Unlike the official loader, which
            silently *replaces* such an image by a random other one at read time (so some images appear twice and
            the data depend on the RNG), small images are dropped from the list once, at construction, and the
            number dropped is logged (``self.dropped`` lists them).
        use_hflip: the "seesr" flip.
        recursive: also list sub-folders (default: False for "seesr", True for "dape", whose official loader also
            reads ``00*/`` sub-folders).
        seed: base seed of the per-item generators.

    ``ds[i]`` is a (3, crop_size, crop_size) float tensor in [0, 1], drawn with a generator seeded from
    (seed, epoch, i) — see :meth:`set_epoch`; ``ds.load(i, generator)`` uses a caller's generator instead.
    """

    def __init__(
        self,
        roots: str | os.PathLike | Sequence[str | os.PathLike],
        mode: str = "seesr",
        crop_size: int = 512,
        min_pixels: int = 384 * 384,
        min_bytes: int = 100 * 1024,
        use_hflip: bool = True,
        recursive: bool | None = None,
        seed: int = 0,
    ) -> None:
        if mode not in ("seesr", "dape"):
            raise ValueError(f"mode must be 'seesr' or 'dape', got {mode!r}")
        if crop_size < 8:
            raise ValueError(f"crop_size must be >= 8, got {crop_size}")
        self.mode, self.crop_size, self.use_hflip, self.seed = (
            mode,
            int(crop_size),
            bool(use_hflip),
            int(seed),
        )
        self.epoch = 0
        files = list_images(roots, recursive=(mode == "dape") if recursive is None else recursive)
        self.dropped: list[Path] = []
        if mode == "seesr":
            kept = []
            for f in files:
                info = probe_image(f, max_pixels=_MAX_PIXELS)  # header only: no pixel decoding
                if info.pixels < min_pixels or f.stat().st_size < min_bytes:
                    self.dropped.append(f)
                else:
                    kept.append(f)
            files = kept
            if self.dropped:
                logger.info(
                    "dropped %d image(s) under %d px or %d bytes (official filter), e.g. %s",
                    len(self.dropped),
                    min_pixels,
                    min_bytes,
                    self.dropped[0],
                )
        if not files:
            raise ValueError(
                f"no usable images in {[str(r) for r in _as_paths(roots)]} "
                f"(extensions {IMAGE_EXTENSIONS}; {len(self.dropped)} dropped as too small)"
            )
        self.files: list[Path] = files

    def __len__(self) -> int:
        return len(self.files)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose crops/flips ``__getitem__`` returns."""
        self.epoch = int(epoch)

    def generator_for(self, index: int) -> torch.Generator:
        """The CPU generator ``__getitem__`` uses for item ``index`` in the current epoch."""
        return torch.Generator().manual_seed(derive_seed(self.seed, self.epoch, index))

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.load(index, self.generator_for(index))

    def load(self, index: int, generator: torch.Generator) -> torch.Tensor:
        """Item ``index`` processed with random draws from ``generator`` (CPU). Returns (3, S, S) in [0, 1]."""
        path = self.files[index]
        s = self.crop_size
        if self.mode == "dape":  # the official SimpleDataset resizes the uint8 image with PIL
            img = Image.fromarray(read_rgb_u8(path, max_pixels=_MAX_PIXELS)).resize((s, s), Image.LANCZOS)
            return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float() / 255.0
        arr = _read(path, max_pixels=_MAX_PIXELS).rgb  # (H, W, 3) float32 in [0, 1]
        flip = torch.rand((), generator=generator).item() < 0.5
        if self.use_hflip and flip:
            arr = arr[:, ::-1]
        h, w = arr.shape[:2]
        if h < s or w < s:
            # bottom/right reflect_101 padding like cv2.copyMakeBorder(BORDER_REFLECT_101)
            arr = np.pad(arr, ((0, max(0, s - h)), (0, max(0, s - w)), (0, 0)), mode="reflect")
            h, w = arr.shape[:2]
        top = int(torch.randint(0, h - s + 1, (), generator=generator))
        left = int(torch.randint(0, w - s + 1, (), generator=generator))
        arr = arr[top : top + s, left : left + s]
        return torch.from_numpy(np.array(arr)).permute(2, 0, 1)


class PairedFolderDataset(torch.utils.data.Dataset):
    """Pairs written by ``seesr make-pairs``: ``<root>/{gt,lr,sr_bicubic}/<stem>.png`` and ``<root>/tag/<stem>.txt``.

    Args:
        roots: one or more pair folders.
        keys: sub-folders to read; "gt", "lr", "sr_bicubic" (images) and "tag" (text). Every key must have a file
            for every stem of every other key, else ``FileNotFoundError`` names the lonely file.

    Items are sorted by (root, stem). ``ds[i]`` is a dict with ``"name"`` (stem), ``"root"`` and one entry per key:
    (3, H, W) float tensors in [0, 1] for image keys, the file text (surrounding whitespace stripped) for "tag".
    """

    IMAGE_KEYS = ("gt", "lr", "sr_bicubic")

    def __init__(
        self,
        roots: str | os.PathLike | Sequence[str | os.PathLike],
        keys: Sequence[str] = ("gt", "sr_bicubic"),
    ) -> None:
        keys = tuple(keys)
        bad = [k for k in keys if k not in (*self.IMAGE_KEYS, "tag")]
        if bad or not keys:
            raise ValueError(f"keys must be a non-empty subset of gt, lr, sr_bicubic, tag; got {list(keys)}")
        self.keys = keys
        self.items: list[tuple[Path, str, dict[str, Path]]] = []
        for root in _as_paths(roots):
            per_key: dict[str, dict[str, Path]] = {}
            for key in keys:
                folder = root / key
                if not folder.is_dir():
                    raise FileNotFoundError(
                        f"pair folder not found: {folder} (expected sub-folders {list(keys)})"
                    )
                exts = (".txt",) if key == "tag" else IMAGE_EXTENSIONS
                stems: dict[str, Path] = {}
                for p in sorted(folder.iterdir()):
                    if not p.is_file() or p.suffix.lower() not in exts:
                        continue
                    if p.stem in stems:
                        raise ValueError(
                            f"two files with the stem {p.stem!r} in {folder}: {stems[p.stem].name}, {p.name}"
                        )
                    stems[p.stem] = p
                per_key[key] = stems
            all_stems = set().union(*(set(s) for s in per_key.values()))
            for key in keys:
                missing = sorted(all_stems - set(per_key[key]))
                if missing:
                    owner = next(k for k in keys if missing[0] in per_key[k])
                    raise FileNotFoundError(
                        f"{per_key[owner][missing[0]]} has no partner in {root / key} "
                        f"({len(missing)} file(s) unpaired there)"
                    )
            for stem in sorted(all_stems):
                self.items.append((root, stem, {k: per_key[k][stem] for k in keys}))
        if not self.items:
            raise ValueError(f"no pairs found in {[str(r) for r in _as_paths(roots)]}")

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        root, stem, paths = self.items[index]
        item: dict = {"name": stem, "root": str(root)}
        for key, path in paths.items():
            item[key] = path.read_text(encoding="utf-8").strip() if key == "tag" else load_image(path)
        return item
