"""`seesr eval` and `seesr prepare-testset` run in-process on tiny folders."""

from __future__ import annotations

import csv
import json
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from seesr.cli import main
from seesr.metrics import fidelity, learned
from seesr.metrics.evaluate import load_rgb

REPO = Path(__file__).resolve().parents[1]


def _folders(tmp_path, names=("a", "b"), size=(24, 20), sr_suffix=""):
    rng = np.random.default_rng(5)
    sr, gt = tmp_path / "sr", tmp_path / "gt"
    sr.mkdir()
    gt.mkdir()
    for n in names:
        g = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
        s = np.clip(g.astype(int) + rng.integers(-12, 13, g.shape), 0, 255).astype(np.uint8)
        Image.fromarray(g).save(gt / f"{n}.png")
        Image.fromarray(s).save(sr / f"{n}{sr_suffix}.png")
    return sr, gt


@pytest.fixture
def offline(monkeypatch):
    def fail(spec, device):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(learned, "_create_pyiqa_metric", fail)


def test_eval_writes_csv_json_markdown(tmp_path, capsys):
    sr, gt = _folders(tmp_path)
    out = tmp_path / "out"
    rc = main(["eval", "--sr", str(sr), "--gt", str(gt), "--metrics", "psnr", "ssim", "--out", str(out),
               "--dataset", "Toy", "--name", "SeeSR"])  # fmt: skip
    assert rc == 0
    psnr = [fidelity.psnr_y(load_rgb(sr / f"{n}.png"), load_rgb(gt / f"{n}.png")).item() for n in "ab"]
    ssim = [fidelity.ssim_y(load_rgb(sr / f"{n}.png"), load_rgb(gt / f"{n}.png")).item() for n in "ab"]
    data = json.loads((out / "metrics.json").read_text())
    assert data["dataset"] == "Toy" and data["method"] == "SeeSR"
    assert data["aggregate"]["psnr"] == pytest.approx(sum(psnr) / 2, abs=1e-12)
    assert data["aggregate"]["ssim"] == pytest.approx(sum(ssim) / 2, abs=1e-12)
    assert data["per_image"]["b"]["psnr"] == pytest.approx(psnr[1], abs=1e-12)
    assert data["protocol"]["crop_border"] == 0 and data["failures"] == {}
    rows = list(csv.reader((out / "metrics.csv").open()))
    assert rows[0] == ["image", "psnr", "ssim"] and [r[0] for r in rows[1:]] == ["a", "b", "mean"]
    assert float(rows[1][1]) == pytest.approx(psnr[0], abs=1e-12)
    md = (out / "report.md").read_text()
    assert "| Datasets | Metrics | SeeSR |" in md
    assert f"| Toy | PSNR ↑ | {sum(psnr) / 2:.2f} |" in md
    assert f"|  | SSIM ↑ | {sum(ssim) / 2:.4f} |" in md
    assert "PSNR ↑" in capsys.readouterr().out


def test_eval_plot_when_matplotlib_is_installed(tmp_path):
    pytest.importorskip("matplotlib")
    sr, gt = _folders(tmp_path)
    out = tmp_path / "o"
    assert (
        main(["eval", "--sr", str(sr), "--gt", str(gt), "--metrics", "psnr", "--out", str(out), "--plot"])
        == 0
    )
    assert (out / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert Image.open(out / "plot.png").size[0] > 100


def test_eval_crop_border_flag(tmp_path):
    sr, gt = _folders(tmp_path)
    rc = main(
        [
            "eval",
            "--sr",
            str(sr),
            "--gt",
            str(gt),
            "--metrics",
            "psnr",
            "--crop-border",
            "3",
            "--out",
            str(tmp_path / "o"),
        ]
    )
    assert rc == 0
    data = json.loads((tmp_path / "o" / "metrics.json").read_text())
    want = fidelity.psnr_y(load_rgb(sr / "a.png"), load_rgb(gt / "a.png"), crop_border=3).item()
    assert data["per_image"]["a"]["psnr"] == pytest.approx(want, abs=1e-12)
    assert data["protocol"]["crop_border"] == 3


def test_eval_default_metrics_offline_exit_1_but_psnr_written(tmp_path, capsys, offline):
    sr, gt = _folders(tmp_path)
    rc = main(["eval", "--sr", str(sr), "--gt", str(gt), "--out", str(tmp_path / "o")])
    assert rc == 1
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("seesr eval: not computed:")]
    # one line per learned metric, each naming the metric
    labels = ["LPIPS", "DISTS", "FID", "NIQE", "MANIQA (koniq)", "MANIQA (pipal)", "MUSIQ", "CLIPIQA"]
    assert len(lines) == len(labels)
    for label, line in zip(labels, lines):
        assert line.startswith(f"seesr eval: not computed: {label}: pretrained weights unavailable")
    data = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert list(data["aggregate"]) == ["psnr", "ssim"]


def test_eval_no_reference_mode_only_nr_metrics(tmp_path, monkeypatch):
    # RealLR200: no GT folder -> only NIQE, MANIQA x2, MUSIQ, CLIPIQA are attempted
    seen = []

    def loader(spec, device):
        seen.append(spec.name)
        return lambda x, y=None: x.mean(dim=(1, 2, 3))

    monkeypatch.setattr(learned, "_create_pyiqa_metric", loader)
    sr, _ = _folders(tmp_path)
    rc = main(["eval", "--sr", str(sr), "--out", str(tmp_path / "o"), "--dataset", "RealLR200"])
    assert rc == 0
    assert seen == ["niqe", "maniqa", "maniqa-pipal", "musiq", "clipiqa"]
    data = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert list(data["aggregate"]) == seen
    assert main(["eval", "--sr", str(sr), "--metrics", "lpips"]) == 1  # needs --gt


def test_eval_size_mismatch_names_both_files(tmp_path, capsys):
    sr, gt = _folders(tmp_path)
    Image.fromarray(np.zeros((24, 21, 3), np.uint8)).save(sr / "b.png")
    assert main(["eval", "--sr", str(sr), "--gt", str(gt), "--metrics", "psnr"]) == 1
    err = capsys.readouterr().err
    assert "size mismatch" in err and str(sr / "b.png") in err and str(gt / "b.png") in err
    assert "21x24" in err and "20x24" in err


def test_eval_missing_partner_is_an_error(tmp_path, capsys):
    sr, gt = _folders(tmp_path, names=("a", "b", "c"))
    (gt / "c.png").unlink()
    (sr / "a.png").unlink()
    assert main(["eval", "--sr", str(sr), "--gt", str(gt), "--metrics", "psnr"]) == 1
    err = capsys.readouterr().err
    assert "c.png" in err and "without a reference" in err
    assert "a.png" in err and "without an image" in err


def test_eval_strip_suffix_pairs_stems(tmp_path):
    sr, gt = _folders(tmp_path, sr_suffix="_out")
    assert main(["eval", "--sr", str(sr), "--gt", str(gt), "--metrics", "psnr"]) == 1
    rc = main(["eval", "--sr", str(sr), "--gt", str(gt), "--metrics", "psnr", "--strip-suffix", "_out",
               "--out", str(tmp_path / "o")])  # fmt: skip
    assert rc == 0
    assert set(json.loads((tmp_path / "o" / "metrics.json").read_text())["per_image"]) == {"a", "b"}


def test_eval_tagging_mode(tmp_path, capsys):
    labels = {"img1": ["cat", "dog"], "img2": ["dog"], "img3": ["car"]}
    preds = {
        "img1": {"tags": ["cat"], "scores": {"cat": 0.9, "dog": 0.4, "car": 0.2}},
        "img2": {"tags": ["dog", "car"], "scores": {"cat": 0.1, "dog": 0.7, "car": 0.6}},
        "img3": {"tags": ["car", "cat"], "scores": {"cat": 0.8, "dog": 0.5, "car": 0.6}},
    }
    (tmp_path / "labels.json").write_text(json.dumps(labels))
    (tmp_path / "pred.json").write_text(json.dumps(preds))
    rc = main(["eval", "--tags", str(tmp_path / "pred.json"), "--labels", str(tmp_path / "labels.json"),
               "--name", "DAPE", "--out", str(tmp_path / "o")])  # fmt: skip
    assert rc == 0
    # OP 3/5, OR 3/4, AP (1 + 5/6 + 1/2)/3 = 77.8 %
    assert "| DAPE | 0.6000 | 0.7500 | 77.8 |" in capsys.readouterr().out
    data = json.loads((tmp_path / "o" / "tagging.json").read_text())
    assert data["OP"] == pytest.approx(0.6) and data["OR"] == pytest.approx(0.75)
    # RAM's own string output "a, b" is accepted too (no scores -> no AP)
    (tmp_path / "pred2.json").write_text(json.dumps({"img1": "cat", "img2": "dog, car", "img3": "car, cat"}))
    assert (
        main(["eval", "--tags", str(tmp_path / "pred2.json"), "--labels", str(tmp_path / "labels.json")]) == 0
    )
    assert "| tagger | 0.6000 | 0.7500 | - |" in capsys.readouterr().out
    # labels as strings too; an unknown entry type is a clear error
    (tmp_path / "labels2.json").write_text(json.dumps({"img1": "cat, dog", "img2": "dog", "img3": ["car"]}))
    assert (
        main(["eval", "--tags", str(tmp_path / "pred2.json"), "--labels", str(tmp_path / "labels2.json")])
        == 0
    )
    assert "| tagger | 0.6000 | 0.7500 | - |" in capsys.readouterr().out
    (tmp_path / "bad.json").write_text(json.dumps({"img1": 3}))
    assert (
        main(["eval", "--tags", str(tmp_path / "bad.json"), "--labels", str(tmp_path / "labels.json")]) == 1
    )
    assert "entry 'img1' must be a list of tags" in capsys.readouterr().err


def test_eval_combine_builds_table2(tmp_path, capsys):
    for method, value in (("A", 21.0), ("B", 22.5)):
        (tmp_path / f"{method}.json").write_text(
            json.dumps(
                {"dataset": "DIV2K-Val", "method": method, "aggregate": {"psnr": value, "fid": 30.0 + value}}
            )
        )
    rc = main(
        ["eval", "--combine", str(tmp_path / "A.json"), str(tmp_path / "B.json"), "--out", str(tmp_path)]
    )
    assert rc == 0
    md = (tmp_path / "table2.md").read_text()
    assert "| Datasets | Metrics | A | B |" in md
    assert "| DIV2K-Val | PSNR ↑ | 21.00 | 22.50 |" in md
    assert "|  | FID ↓ | 51.00 | 52.50 |" in md


def test_eval_needs_exactly_one_mode(capsys):
    assert main(["eval"]) == 1
    assert "exactly one of --sr, --tags, --combine" in capsys.readouterr().err


def _stand_in(device="cpu"):
    def degrade(gt, generator):  # the (lr, gt_usm) contract of RealESRGANDegradation
        lr = torch.nn.functional.avg_pool2d(gt, 4)
        return (lr + 0.05 * torch.randn(lr.shape, generator=generator, device=gt.device)).clamp(0, 1), gt

    return degrade


def _tiny_coco(tmp_path):
    images = tmp_path / "val2017"
    images.mkdir()
    rng = np.random.default_rng(9)
    for i in (1, 2):
        Image.fromarray(rng.integers(0, 256, (30, 44, 3), dtype=np.uint8)).save(images / f"{i:012d}.jpg")
    ann = {
        "images": [{"id": 1, "file_name": "000000000001.jpg"}, {"id": 2, "file_name": "000000000002.jpg"}],
        "categories": [{"id": 3, "name": "car"}, {"id": 62, "name": "tv"}],
        "annotations": [{"image_id": 2, "category_id": 62}, {"image_id": 2, "category_id": 3}],
    }
    (tmp_path / "instances.json").write_text(json.dumps(ann))
    return images, tmp_path / "instances.json"


def test_prepare_testset_cli_with_stand_in_degradation(tmp_path, monkeypatch):
    import seesr.cli.prepare_testset as prep

    monkeypatch.setattr(prep, "training_degradation", _stand_in)
    hr = tmp_path / "hr"
    hr.mkdir()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(
        hr / "0801.png"
    )
    assert (
        main(
            [
                "prepare-testset",
                "div2k",
                "--hr",
                str(hr),
                "--out",
                str(tmp_path / "d"),
                "--num",
                "2",
                "--crop",
                "16",
            ]
        )
        == 0
    )
    assert sorted(p.name for p in (tmp_path / "d" / "lr").iterdir()) == ["0000.png", "0001.png"]
    assert Image.open(tmp_path / "d" / "lr" / "0000.png").size == (4, 4)

    images, ann = _tiny_coco(tmp_path)
    rc = main(["prepare-testset", "coco", "--images", str(images), "--annotations", str(ann), "--out",
               str(tmp_path / "c"), "--size", "32"])  # fmt: skip
    assert rc == 0
    assert Image.open(tmp_path / "c" / "gt" / "000000000002.png").size == (32, 32)
    assert Image.open(tmp_path / "c" / "lr" / "000000000002.png").size == (8, 8)
    labels = json.loads((tmp_path / "c" / "labels.json").read_text())
    assert labels == {"000000000001": [], "000000000002": ["car", "television"]}


@pytest.mark.skipif(
    not (REPO / "src" / "seesr" / "data" / "realesrgan.py").is_file(),
    reason="seesr.data.realesrgan not written yet",
)
def test_prepare_testset_with_the_training_degradation(tmp_path):
    images, ann = _tiny_coco(tmp_path)
    argv = [
        "prepare-testset",
        "coco",
        "--images",
        str(images),
        "--annotations",
        str(ann),
        "--size",
        "64",
        "--seed",
        "3",
    ]
    assert main([*argv, "--out", str(tmp_path / "x")]) == 0
    assert main([*argv, "--out", str(tmp_path / "y")]) == 0
    for name in ("000000000001.png", "000000000002.png"):
        a = np.asarray(Image.open(tmp_path / "x" / "lr" / name))
        assert a.shape == (16, 16, 3)
        assert (a == np.asarray(Image.open(tmp_path / "y" / "lr" / name))).all()  # seeded: same bytes
