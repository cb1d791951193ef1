"""Every image read goes through seesr.io: the tagger, the training datasets, evaluation and the test-set
builders see the same pixels as ``seesr upscale`` (16 bits kept, EXIF orientation applied; issue 12)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from seesr import io as sio
from tests.test_io import png16_bytes, rand_u8


def _deep_png(path: Path, h: int = 24, w: int = 20, seed: int = 0) -> Path:
    """A 48-bit PNG whose low bytes matter (PIL alone keeps only the high byte)."""
    path.write_bytes(png16_bytes(np.random.default_rng(seed).integers(0, 65536, (h, w, 3), dtype=np.uint16)))
    return path


def _rotated_png(path: Path, stored: np.ndarray, orientation: int = 6) -> np.ndarray:
    """Write ``stored`` (H,W,3) uint8 with an EXIF orientation; returns the upright pixels a viewer shows."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(stored).save(path, exif=exif)
    with Image.open(path) as im:
        from PIL import ImageOps

        upright = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    assert upright.shape != stored.shape or orientation in (1, 2, 3, 4)
    return upright


def test_tag_sees_the_pixels_upscale_reads(tmp_path: Path) -> None:
    from seesr.cli.tag import _load_rgb

    p = _deep_png(tmp_path / "deep.png")
    want = torch.from_numpy(sio.load_image(p).rgb).permute(2, 0, 1)[None]
    got = _load_rgb(p)
    assert got.dtype == torch.float32 and got.shape == want.shape
    assert torch.equal(got, want)


def test_hq_dataset_honours_exif_orientation(tmp_path: Path) -> None:
    from seesr.data.datasets import HQFolderDataset, load_image

    root = tmp_path / "hq"
    root.mkdir()
    upright = _rotated_png(root / "a.png", rand_u8((64, 48, 3), seed=3))  # stored 48 wide, upright 64 wide
    want = torch.from_numpy(upright.copy()).permute(2, 0, 1).float() / 255.0
    assert torch.equal(load_image(root / "a.png"), want)
    ds = HQFolderDataset(root, mode="seesr", crop_size=48, min_pixels=0, min_bytes=0, use_hflip=False)
    crops = [ds.load(0, torch.Generator().manual_seed(k)) for k in range(8)]
    # every 48² crop of the upright 48x64 (h x w) image is a window of it, and the windows differ
    for c in crops:
        assert any(torch.equal(c, want[:, :, x : x + 48]) for x in range(0, 17))
    dape = HQFolderDataset(root, mode="dape", crop_size=32)[0]
    resized = np.asarray(Image.fromarray(upright).resize((32, 32), Image.LANCZOS))
    assert torch.equal(dape, torch.from_numpy(resized.copy()).permute(2, 0, 1).float() / 255.0)


def test_hq_dataset_keeps_16_bits(tmp_path: Path) -> None:
    from seesr.data.datasets import HQFolderDataset

    root = tmp_path / "hq"
    root.mkdir()
    p = _deep_png(root / "d.png", 32, 32)
    ds = HQFolderDataset(root, mode="seesr", crop_size=32, min_pixels=0, min_bytes=0, use_hflip=False)
    assert torch.equal(ds[0], torch.from_numpy(sio.load_image(p).rgb).permute(2, 0, 1))


def test_evaluation_reads_like_upscale(tmp_path: Path) -> None:
    from seesr.metrics.evaluate import load_rgb, match_pairs

    sr, gt = tmp_path / "sr", tmp_path / "gt"
    sr.mkdir()
    gt.mkdir()
    p = _deep_png(sr / "a.png", 40, 30)
    assert torch.equal(load_rgb(p)[0], torch.from_numpy(sio.load_image(p).rgb).permute(2, 0, 1))
    # a reference stored sideways with an EXIF orientation pairs with an upright result of the same view
    upright = _rotated_png(gt / "a.png", rand_u8((30, 40, 3), seed=1))
    assert upright.shape == (40, 30, 3)
    assert [k for k, *_ in match_pairs(sr, gt)] == ["a"]
    assert load_rgb(gt / "a.png").shape == load_rgb(p).shape


def test_div2k_val_crops_the_upright_image(tmp_path: Path) -> None:
    from seesr.metrics.testsets import build_div2k_val

    hr = tmp_path / "hr"
    hr.mkdir()
    upright = _rotated_png(hr / "0801.png", rand_u8((32, 48, 3), seed=5))  # upright 32 high, 48 wide

    def degrade(gt: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return gt[..., ::4, ::4], gt

    man = build_div2k_val(hr, tmp_path / "out", degrade, num=3, crop=32, seed=0)
    for entry in man["images"]:
        left, top, w, h = entry["box"]
        with Image.open(tmp_path / "out" / "gt" / entry["name"]) as im:
            got = np.asarray(im)
        assert np.array_equal(got, upright[top : top + h, left : left + w])


@pytest.mark.parametrize("orientation", [6, 8])
def test_coco_val_resizes_the_upright_image(tmp_path: Path, orientation: int) -> None:
    import json

    from seesr.metrics.testsets import build_coco_val

    images = tmp_path / "val2017"
    images.mkdir()
    upright = _rotated_png(images / "000000000001.png", rand_u8((24, 40, 3), seed=7), orientation)
    ann = {
        "images": [{"id": 1, "file_name": "000000000001.png"}],
        "annotations": [{"image_id": 1, "category_id": 1}],
        "categories": [{"id": 1, "name": "person"}],
    }
    (tmp_path / "inst.json").write_text(json.dumps(ann))
    build_coco_val(
        images, tmp_path / "inst.json", tmp_path / "out", lambda gt, g: (gt[..., ::4, ::4], gt), size=16
    )
    with Image.open(tmp_path / "out" / "gt" / "000000000001.png") as im:
        got = np.asarray(im)
    assert np.array_equal(got, np.asarray(Image.fromarray(upright).resize((16, 16), Image.BICUBIC)))
