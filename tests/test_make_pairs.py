"""`seesr make-pairs` (spec §6.1, §9 items 15–16): layout, sizes, determinism across batch sizes, resuming, tags."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from seesr.cli import main
from seesr.data.datasets import PairedFolderDataset
from seesr.data.make_pairs import make_pairs


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # many small per-sample ops: intra-op threads only contend on a shared 2-core machine
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture()
def gt_dir(tiny_weights_dir, tmp_path):
    d = tmp_path / "hq"
    d.mkdir()
    for name in ("astronaut", "camera"):
        shutil.copy(tiny_weights_dir / "degradation" / "gt" / f"{name}.png", d / f"{name}.png")
    return d


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _load(path):
    return np.asarray(Image.open(path).convert("RGB")).astype(np.float64)


def test_make_pairs_layout_sizes_and_batch_independence(gt_dir, tmp_path, capsys):
    out1, out2 = tmp_path / "o1", tmp_path / "o2"
    base = [
        "make-pairs",
        "--gt",
        str(gt_dir),
        "--seed",
        "3",
        "--epochs",
        "2",
        "--device",
        "cpu",
        "--no-progress",
    ]
    assert main([*base, "--out", str(out1), "--batch-size", "3"]) == 0
    assert "4 pair(s) written" in capsys.readouterr().out
    names = [f"{i:07d}.png" for i in range(1, 5)]
    for sub, side in (("gt", 512), ("lr", 128), ("sr_bicubic", 512)):
        assert sorted(p.name for p in (out1 / sub).iterdir()) == names
        assert Image.open(out1 / sub / names[0]).size == (side, side)
    assert not (out1 / "tag").exists()
    # sr_bicubic is the bicubic x4 of the float LR: within 2 levels of the bicubic of the stored 8-bit LR
    lr = torch.from_numpy(_load(out1 / "lr" / names[0])).permute(2, 0, 1)[None] / 255
    sr = F.interpolate(lr, size=(512, 512), mode="bicubic")[0].permute(1, 2, 0).numpy() * 255
    assert np.abs(sr.clip(0, 255) - _load(out1 / "sr_bicubic" / names[0])).max() <= 2
    # epoch 2 re-crops/re-degrades the same images: different pairs
    assert (out1 / "lr" / names[0]).read_bytes() != (out1 / "lr" / names[2]).read_bytes()
    # the output depends on (seed, index) only, not on the batch size
    assert main([*base, "--out", str(out2), "--batch-size", "1"]) == 0
    assert _files(out1) == _files(out2)
    # a pair dataset reads it back, sorted by name
    ds = PairedFolderDataset(out1, keys=("gt", "lr", "sr_bicubic"))
    assert len(ds) == 4 and ds[3]["name"] == "0000004" and ds[0]["lr"].shape == (3, 128, 128)


def test_make_pairs_resumes_and_refuses_other_settings(gt_dir, tmp_path, capsys):
    out = tmp_path / "o"
    args = ["make-pairs", "--gt", str(gt_dir), "--out", str(out), "--device", "cpu", "--no-progress"]
    assert main(args) == 0
    before = _files(out)
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*.png")}
    (out / "lr" / "0000002.png").unlink()
    capsys.readouterr()
    assert main(args) == 0
    assert "1 pair(s) written, 1 already present" in capsys.readouterr().out
    assert _files(out) == before  # the regenerated pair is byte-identical
    assert (out / "gt" / "0000001.png").stat().st_mtime_ns == mtimes[out / "gt" / "0000001.png"]
    assert not list(out.rglob("*.tmp"))
    assert main([*args, "--seed", "9"]) == 1
    assert "different seed" in capsys.readouterr().err


def test_make_pairs_tagger_callable_writes_tag_folder(gt_dir, tmp_path):
    seen = []

    def tagger(gt):
        seen.append(tuple(gt.shape))
        assert float(gt.min()) >= 0 and float(gt.max()) <= 1
        return [f"tag{i}, photo" for i in range(gt.shape[0])]

    out = tmp_path / "t"
    stats = make_pairs([gt_dir], out, seed=1, mode="dape", batch_size=2, tagger=tagger, progress=False)
    assert stats == {"total": 2, "made": 2, "skipped": 0, "failed": 0}
    assert seen == [(2, 3, 512, 512)]
    assert (out / "tag" / "0000002.txt").read_text() == "tag1, photo,"  # official "tags," format, in tag/
    ds = PairedFolderDataset(out, keys=("gt", "sr_bicubic", "tag"))
    assert ds[0]["tag"] == "tag0, photo,"


def test_make_pairs_cli_with_tiny_ram_tagger(gt_dir, tmp_path, tiny_weights_dir):
    ram = tiny_weights_dir / "ram-tiny"
    out = tmp_path / "r"
    args = [
        "make-pairs",
        "--gt",
        str(gt_dir),
        "--out",
        str(out),
        "--device",
        "cpu",
        "--no-progress",
        "--limit",
        "1",
    ]
    args += ["--tagger-ram", str(ram / "ram_tiny.pth"), "--tag-list", str(ram / "ram_tag_list.txt")]
    args += ["--thresholds", str(ram / "ram_tag_list_threshold.txt"), "--tagger-arch", str(ram / "arch.json")]
    assert main(args) == 0
    text = (out / "tag" / "0000001.txt").read_text()
    assert text.endswith(",") and not (out / "tag" / "0000002.txt").exists()


def test_make_pairs_cli_errors(tmp_path, capsys):
    assert main(["make-pairs", "--gt", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 1
    assert "nope" in capsys.readouterr().err
    (tmp_path / "bad.yaml").write_text("jpeg_rnage: [1, 2]\n")
    (tmp_path / "hq").mkdir()
    args = [
        "make-pairs",
        "--gt",
        str(tmp_path / "hq"),
        "--out",
        str(tmp_path / "o"),
        "--config",
        str(tmp_path / "bad.yaml"),
    ]
    assert main(args) == 1
    assert "jpeg_rnage" in capsys.readouterr().err
    assert (
        main(["make-pairs", "--gt", str(tmp_path / "hq"), "--out", str(tmp_path / "o"), "--tag-list", "x"])
        == 1
    )
    assert "--tagger-ram" in capsys.readouterr().err
