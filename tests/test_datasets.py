"""Training datasets (spec §5, §6.1–6.2, §9 item 16): HQ folders with the official GT-side processing and paired
folders matched by file name."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from seesr.data.datasets import HQFolderDataset, PairedFolderDataset, derive_seed, load_image


def _noise_png(path, h, w, seed=0):
    """Random pixels: incompressible, so the PNG is large (about 3·h·w bytes)."""
    arr = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    Image.fromarray(arr).save(path)
    return arr


def _find_window(big: np.ndarray, crop: np.ndarray) -> bool:
    sh, sw = crop.shape[:2]
    for top in range(big.shape[0] - sh + 1):
        for left in range(big.shape[1] - sw + 1):
            if np.array_equal(big[top : top + sh, left : left + sw], crop):
                return True
    return False


def test_derive_seed_is_stable_and_spreads():
    assert derive_seed(0, 0, 0) == derive_seed(0, 0, 0)
    seeds = {derive_seed(1, e, i) for e in range(3) for i in range(50)}
    assert len(seeds) == 150
    assert all(0 <= s < 2**63 for s in seeds)
    assert derive_seed(1, 2) != derive_seed(2, 1)


def test_hq_seesr_filter_flip_and_crop(tmp_path):
    big = _noise_png(tmp_path / "b_big.png", 520, 530)
    _noise_png(tmp_path / "a_small.png", 300, 300)  # 90 000 px < 384²
    Image.new("RGB", (400, 400), (10, 20, 30)).save(tmp_path / "c_flat.png")  # 400² but a few hundred bytes
    (tmp_path / "notes.txt").write_text("not an image")
    ds = HQFolderDataset(tmp_path, mode="seesr", seed=5)
    assert [p.name for p in ds.files] == ["b_big.png"]
    assert sorted(p.name for p in ds.dropped) == ["a_small.png", "c_flat.png"]
    item = ds[0]
    assert item.shape == (3, 512, 512) and item.dtype == torch.float32
    assert torch.equal(item, ds[0])  # same (seed, epoch, index) -> same crop
    crops = []
    flips = 0
    for epoch in range(8):
        ds.set_epoch(epoch)
        crop = (ds[0] * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        plain, flipped = _find_window(big, crop), _find_window(big[:, ::-1], crop)
        assert plain or flipped  # a true 512² window of the (possibly flipped) image
        flips += int(flipped and not plain)
        crops.append(crop)
    assert 0 < flips < 8
    assert len({c.tobytes() for c in crops}) > 1


def test_hq_seesr_reflect_pads_small_side(tmp_path):
    arr = _noise_png(tmp_path / "wide.png", 400, 600)
    ds = HQFolderDataset(tmp_path, mode="seesr", use_hflip=False)
    out = (ds[0] * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    # rows 400.. are the reflect_101 mirror of rows ..398 (cv2.BORDER_REFLECT_101 at the bottom)
    assert np.array_equal(out[400], out[398]) and np.array_equal(out[511], out[287])
    assert _find_window(arr, out[:400])


def test_hq_dape_lanczos_resize_no_filter(tmp_path):
    _noise_png(tmp_path / "tiny.png", 200, 300)
    sub = tmp_path / "0001"
    sub.mkdir()
    _noise_png(sub / "x.jpg", 64, 64, seed=1)
    ds = HQFolderDataset(tmp_path, mode="dape")
    assert sorted(p.name for p in ds.files) == ["tiny.png", "x.jpg"]  # sub-folders are read in dape mode
    item = ds[ds.files.index(tmp_path / "tiny.png")]
    ref = np.asarray(Image.open(tmp_path / "tiny.png").convert("RGB").resize((512, 512), Image.LANCZOS))
    assert torch.equal(item, torch.from_numpy(ref.copy()).permute(2, 0, 1).float() / 255)


def test_hq_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing"):
        HQFolderDataset(tmp_path / "missing")
    with pytest.raises(ValueError, match="no usable images"):
        HQFolderDataset(tmp_path)
    with pytest.raises(ValueError, match="mode"):
        HQFolderDataset(tmp_path, mode="other")


def _make_pairs_dir(root, stems, with_tags=True):
    for d in ("gt", "lr", "sr_bicubic", "tag"):
        (root / d).mkdir(parents=True, exist_ok=True)
    for i, stem in enumerate(stems):
        _noise_png(root / "gt" / f"{stem}.png", 16, 16, seed=i)
        _noise_png(root / "lr" / f"{stem}.png", 4, 4, seed=100 + i)
        _noise_png(root / "sr_bicubic" / f"{stem}.png", 16, 16, seed=200 + i)
        if with_tags:
            (root / "tag" / f"{stem}.txt").write_text(f"cat, tag{stem},\n")


def test_paired_folder_sorted_by_stem_and_complete(tmp_path):
    _make_pairs_dir(tmp_path / "a", ["0000003", "0000001", "0000002"])
    _make_pairs_dir(tmp_path / "b", ["x"])
    ds = PairedFolderDataset([tmp_path / "a", tmp_path / "b"], keys=("gt", "lr", "sr_bicubic", "tag"))
    assert [ds[i]["name"] for i in range(len(ds))] == ["0000001", "0000002", "0000003", "x"]
    item = ds[1]
    assert torch.equal(item["gt"], load_image(tmp_path / "a" / "gt" / "0000002.png"))
    assert item["lr"].shape == (3, 4, 4) and item["tag"] == "cat, tag0000002,"
    assert set(PairedFolderDataset(tmp_path / "a")[0]) == {"name", "root", "gt", "sr_bicubic"}


def test_paired_folder_missing_partner_names_the_file(tmp_path):
    _make_pairs_dir(tmp_path, ["0000001", "0000002"])
    (tmp_path / "sr_bicubic" / "0000002.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"gt[/\\]0000002\.png has no partner in .*sr_bicubic"):
        PairedFolderDataset(tmp_path, keys=("gt", "sr_bicubic"))
    assert len(PairedFolderDataset(tmp_path, keys=("gt", "lr"))) == 2
    _noise_png(tmp_path / "lr" / "0000009.png", 4, 4)
    with pytest.raises(FileNotFoundError, match=r"lr[/\\]0000009\.png has no partner in .*gt"):
        PairedFolderDataset(tmp_path, keys=("gt", "lr"))
    with pytest.raises(FileNotFoundError, match="pair folder not found"):
        PairedFolderDataset(tmp_path / "nope")
    with pytest.raises(ValueError, match="keys"):
        PairedFolderDataset(tmp_path, keys=("gt", "hr"))
