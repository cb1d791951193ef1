"""Synthetic test sets of the paper (§4.1 "Test Datasets" and §4.3 Table 6): DIV2K-Val and COCO-val.

* DIV2K-Val: 512x512 crops taken at seeded random positions from the DIV2K validation HR images (crop k
  comes from image ``k mod N`` of the sorted list), each degraded with the training degradation.
* COCO-val: every val2017 image resized to 512x512 (PIL bicubic, aspect ratio not kept, as "resize the
  original images to 512x512" in §4.3), then degraded; labels are the COCO instance categories present in
  the image, renamed to RAM tag names with :data:`COCO_TO_RAM`.

The degradation is passed in as a callable with the contract of
``seesr.data.realesrgan.RealESRGANDegradation``: ``degrade(gt, generator) -> (lr, gt_usm)`` with gt
(1,3,H,W) in [0,1], lr (1,3,H/4,W/4) in [0,1] and gt_usm the USM-sharpened GT the LR was made from (SeeSR's
training pairs sharpen the GT first, spec §6.1). This module does not import the data package; the CLI wires
the training degradation in. The saved GT is the unsharpened crop by default (``gt_target="crop"``: the
reference an SR output is compared with is the original image); ``gt_target="usm"`` saves ``gt_usm`` instead,
as SeeSR's make_paired_data does for training pairs. Image k is degraded with its own generator seeded
``seed + 1 + k`` (crop positions use ``seed``), so any image can be rebuilt alone. Outputs: ``gt/``,
``lr/`` (PNG, 8-bit), ``manifest.json`` (sources, crop boxes, seeds) and, for COCO, ``labels.json``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from seesr.io import IMAGE_EXTENSIONS, load_image, probe_image, read_rgb_u8

if TYPE_CHECKING:  # pragma: no cover
    import torch

logger = logging.getLogger(__name__)

DegradeFn = Callable[["torch.Tensor", "torch.Generator"], "tuple[torch.Tensor, torch.Tensor]"]

# COCO 2017 category name -> RAM tag name (RAM's 4585-tag list, spec §4.2). 69 of the 80 COCO names are
# RAM tags verbatim; the 11 others are renamed to the closest RAM tag (RAM has no "airplane", "suitcase",
# "refrigerator", ...). Written from the two public name lists; tests check every value is a RAM tag.
COCO_TO_RAM: dict[str, str] = {
    "person": "person", "bicycle": "bicycle", "car": "car", "motorcycle": "motorcycle",
    "airplane": "plane", "bus": "bus", "train": "train", "truck": "truck", "boat": "boat",
    "traffic light": "traffic light", "fire hydrant": "hydrant", "stop sign": "stop sign",
    "parking meter": "parking meter", "bench": "bench", "bird": "bird", "cat": "cat", "dog": "dog",
    "horse": "horse", "sheep": "sheep", "cow": "cow", "elephant": "elephant", "bear": "bear",
    "zebra": "zebra", "giraffe": "giraffe", "backpack": "backpack", "umbrella": "umbrella",
    "handbag": "handbag", "tie": "tie", "suitcase": "luggage", "frisbee": "frisbee", "skis": "ski",
    "snowboard": "snowboard", "sports ball": "sports ball", "kite": "kite", "baseball bat": "baseball bat",
    "baseball glove": "baseball glove", "skateboard": "skateboard", "surfboard": "surfboard",
    "tennis racket": "tennis racket", "bottle": "bottle", "wine glass": "wine glass", "cup": "cup",
    "fork": "fork", "knife": "knife", "spoon": "spoon", "bowl": "bowl", "banana": "banana",
    "apple": "apple", "sandwich": "sandwich", "orange": "orange", "broccoli": "broccoli",
    "carrot": "carrot", "hot dog": "hot dog", "pizza": "pizza", "donut": "donut", "cake": "cake",
    "chair": "chair", "couch": "couch", "potted plant": "houseplant", "bed": "bed",
    "dining table": "table", "toilet": "toilet bowl", "tv": "television", "laptop": "laptop",
    "mouse": "mouse", "remote": "remote", "keyboard": "keyboard", "cell phone": "phone",
    "microwave": "microwave", "oven": "oven", "toaster": "toaster", "sink": "sink",
    "refrigerator": "fridge", "book": "book", "clock": "clock", "vase": "vase", "scissors": "scissors",
    "teddy bear": "teddy", "hair drier": "hair drier", "toothbrush": "toothbrush",
}  # fmt: skip


def _to_tensor(arr: Any) -> torch.Tensor:
    """(H,W,3) uint8 or float [0,1] array -> (1,3,H,W) float32 in [0,1]."""
    import numpy as np
    import torch

    a = np.asarray(arr)
    x = torch.from_numpy(np.array(a)).permute(2, 0, 1).unsqueeze(0)
    return x.float().div(255.0) if a.dtype == np.uint8 else x.float()


def _save_png(x: torch.Tensor, path: Path) -> None:
    import torch
    from PIL import Image

    arr = (x[0].clamp(0, 1) * 255.0).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    Image.fromarray(arr).save(path)


def _degrade(degrade: DegradeFn, gt: torch.Tensor, generator: torch.Generator, gt_target: str, source: str):
    """Run the degradation; returns (lr, the GT to save)."""
    out = degrade(gt, generator)
    if not (isinstance(out, tuple) and len(out) == 2):
        raise ValueError(f"the degradation must return (lr, gt_usm), got {type(out).__name__} for {source}")
    lr, gt_usm = out
    if lr.ndim != 4 or lr.shape[:2] != gt.shape[:2] or gt_usm.shape != gt.shape:
        raise ValueError(
            f"degradation returned lr {tuple(lr.shape)}, gt_usm {tuple(gt_usm.shape)} for {source}; "
            f"expected (1,3,h,w) and {tuple(gt.shape)}"
        )
    return lr, (gt_usm if gt_target == "usm" else gt)


def _check_target(gt_target: str) -> None:
    if gt_target not in ("crop", "usm"):
        raise ValueError(f"gt_target must be 'crop' or 'usm', got {gt_target!r}")


def _hr_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise FileNotFoundError(f"HR image folder not found: {folder}")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise ValueError(f"no images in {folder}")
    return files


def build_div2k_val(
    hr_dir: str | Path,
    out_dir: str | Path,
    degrade: DegradeFn,
    num: int = 3000,
    crop: int = 512,
    seed: int = 0,
    device: str = "cpu",
    gt_target: str = "crop",
) -> dict[str, Any]:
    """Build DIV2K-Val: ``num`` seeded random ``crop``² crops of the HR images, degraded.

    Args:
        hr_dir: folder of HR images (DIV2K_valid_HR: 100 PNGs).
        out_dir: created; receives ``gt/``, ``lr/``, ``manifest.json``.
        degrade: ``(gt (1,3,crop,crop) in [0,1], generator) -> (lr (1,3,crop/4,crop/4) in [0,1], gt_usm)``.
        num: number of crops (the paper: 3000).
        crop: crop side in pixels (the paper: 512).
        seed: seeds crop positions (``seed``) and image k's degradation (``seed + 1 + k``).
        device: where the degradation runs (its generator lives there too).
        gt_target: ``"crop"`` saves the crop as GT, ``"usm"`` the sharpened GT returned by the degradation.

    Returns:
        The manifest written to ``manifest.json``.

    Raises:
        ValueError: an HR image smaller than the crop, or ``num``/``crop`` not positive.
    """
    import torch

    _check_target(gt_target)
    if num <= 0 or crop <= 0:
        raise ValueError(f"num and crop must be positive, got num={num}, crop={crop}")
    files = _hr_files(Path(hr_dir))
    out = Path(out_dir)
    (out / "gt").mkdir(parents=True, exist_ok=True)
    (out / "lr").mkdir(parents=True, exist_ok=True)
    sizes = []
    for f in files:
        size = probe_image(f).upright_size  # header only; the size load_image gives
        if min(size) < crop:
            raise ValueError(f"{f} is {size[0]}x{size[1]}, smaller than the {crop}x{crop} crop")
        sizes.append(size)
    pos_gen = torch.Generator().manual_seed(seed)
    entries = []
    width = max(4, len(str(num - 1)))
    for k in range(num):
        i = k % len(files)
        w, h = sizes[i]
        top = int(torch.randint(0, h - crop + 1, (1,), generator=pos_gen))
        left = int(torch.randint(0, w - crop + 1, (1,), generator=pos_gen))
        gt = _to_tensor(load_image(files[i]).rgb[top : top + crop, left : left + crop])
        gen = torch.Generator(device=device).manual_seed(seed + 1 + k)
        lr, gt_save = _degrade(degrade, gt.to(device), gen, gt_target, str(files[i]))
        name = f"{k:0{width}d}.png"
        _save_png(gt_save, out / "gt" / name)
        _save_png(lr, out / "lr" / name)
        entries.append(
            {"name": name, "source": files[i].name, "box": [left, top, crop, crop], "seed": seed + 1 + k}
        )
        if (k + 1) % 100 == 0:
            logger.info("DIV2K-Val: %d/%d crops", k + 1, num)
    manifest = {
        "set": "DIV2K-Val", "hr_dir": str(hr_dir), "num": num, "crop": crop, "seed": seed, "gt_target": gt_target,
        "images": entries,
    }  # fmt: skip
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    return manifest


def coco_labels(
    instances: Mapping[str, Any], mapping: Mapping[str, str] = COCO_TO_RAM
) -> dict[str, list[str]]:
    """Per-image RAM-tag labels from a COCO instances annotation dict.

    Args:
        instances: the parsed ``instances_val2017.json`` (``images``, ``annotations``, ``categories``).
        mapping: COCO category name -> RAM tag.

    Returns:
        file stem -> sorted RAM tags of the categories annotated in that image (empty list if none).

    Raises:
        ValueError: missing keys, or a category not in ``mapping``.
    """
    for key in ("images", "annotations", "categories"):
        if key not in instances:
            raise ValueError(f"COCO annotations lack the {key!r} key; expected an instances_*.json file")
    cat_names = {c["id"]: c["name"] for c in instances["categories"]}
    unknown = sorted(set(cat_names.values()) - set(mapping))
    if unknown:
        raise ValueError(f"COCO categories without a RAM tag in the mapping: {unknown}")
    by_id: dict[int, set[str]] = {im["id"]: set() for im in instances["images"]}
    for ann in instances["annotations"]:
        if ann["image_id"] in by_id:
            by_id[ann["image_id"]].add(mapping[cat_names[ann["category_id"]]])
    return {Path(im["file_name"]).stem: sorted(by_id[im["id"]]) for im in instances["images"]}


def build_coco_val(
    images_dir: str | Path,
    instances_json: str | Path,
    out_dir: str | Path,
    degrade: DegradeFn,
    size: int = 512,
    seed: int = 0,
    limit: int | None = None,
    device: str = "cpu",
    gt_target: str = "crop",
) -> dict[str, Any]:
    """Build the COCO-val tagging set of Table 6: resize to ``size``², degrade, write RAM-tag labels.

    Args:
        images_dir: COCO ``val2017/`` images.
        instances_json: ``instances_val2017.json``.
        out_dir: created; receives ``gt/``, ``lr/``, ``labels.json``, ``manifest.json``.
        degrade: as in :func:`build_div2k_val`.
        size: side after resizing (the paper: 512).
        seed: image k (in the annotation file's sorted-by-name order) is degraded with ``seed + 1 + k``.
        limit: only the first ``limit`` images (for a quick run); None = all.
        device: where the degradation runs.
        gt_target: ``"crop"`` saves the resized image as GT, ``"usm"`` the sharpened one.

    Returns:
        The manifest.

    Raises:
        FileNotFoundError: the JSON or an image listed in it is missing.
    """
    import torch
    from PIL import Image

    _check_target(gt_target)
    instances_json = Path(instances_json)
    if not instances_json.is_file():
        raise FileNotFoundError(f"COCO annotation file not found: {instances_json}")
    instances = json.loads(instances_json.read_text(encoding="utf-8"))
    labels = coco_labels(instances)
    files = {Path(im["file_name"]).stem: im["file_name"] for im in instances["images"]}
    stems = sorted(labels)[: limit if limit else None]
    out = Path(out_dir)
    (out / "gt").mkdir(parents=True, exist_ok=True)
    (out / "lr").mkdir(parents=True, exist_ok=True)
    for k, stem in enumerate(stems):
        src = Path(images_dir) / files[stem]
        if not src.is_file():
            raise FileNotFoundError(f"COCO image listed in {instances_json.name} not found: {src}")
        gt = _to_tensor(Image.fromarray(read_rgb_u8(src)).resize((size, size), Image.BICUBIC))
        gen = torch.Generator(device=device).manual_seed(seed + 1 + k)
        lr, gt_save = _degrade(degrade, gt.to(device), gen, gt_target, str(src))
        _save_png(gt_save, out / "gt" / f"{stem}.png")
        _save_png(lr, out / "lr" / f"{stem}.png")
        if (k + 1) % 100 == 0:
            logger.info("COCO-val: %d/%d images", k + 1, len(stems))
    kept = {s: labels[s] for s in stems}
    (out / "labels.json").write_text(json.dumps(kept, indent=1) + "\n", encoding="utf-8")
    manifest = {
        "set": "COCO-val", "images_dir": str(images_dir), "annotations": str(instances_json), "size": size,
        "seed": seed, "gt_target": gt_target, "num": len(stems), "classes": sorted(set(COCO_TO_RAM.values())),
    }  # fmt: skip
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    return manifest
