"""seesr.metrics: PSNR/SSIM-Y by hand and against pyiqa, FID's Fréchet distance, tagging OP/OR/AP by hand,
the unavailable-weights path of every learned metric, COCO -> RAM table, test-set builders."""

from __future__ import annotations

import json
import math
import urllib.error

import numpy as np
import pytest
import torch
from PIL import Image

from seesr.metrics import fidelity, learned, tagging, testsets
from seesr.metrics.evaluate import evaluate_dirs
from seesr.metrics.registry import METRICS

LEARNED = [name for name, spec in METRICS.items() if spec.pyiqa_name is not None]
C1 = (0.01 * 255) ** 2


# ------------------------------------------------------------------------------------------ PSNR / SSIM


def test_rgb_to_y_bt601_values():
    # pure red, green, blue, black, white -> (16 + 65.481 R + 128.553 G + 24.966 B) / 255
    rgb = torch.tensor([[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 0], [1, 1, 1]], dtype=torch.float64)
    y = fidelity.rgb_to_y(rgb.T.reshape(1, 3, 1, 5))[0, 0, 0]
    expected = torch.tensor([81.481, 144.553, 40.966, 16.0, 235.0], dtype=torch.float64) / 255
    assert torch.allclose(y, expected, atol=1e-12)


def test_psnr_y_by_hand():
    # one white pixel on black, 4x4: Y differs by 219/255 at 1 of 16 pixels
    gt = torch.zeros(1, 3, 4, 4)
    sr = gt.clone()
    sr[0, :, 1, 2] = 1.0
    mse = (219 / 255) ** 2 / 16  # = 0.046098616
    assert fidelity.psnr_y(sr, gt).item() == pytest.approx(10 * math.log10(1 / (mse + 1e-8)), abs=1e-6)
    assert fidelity.psnr_y(sr, gt).item() == pytest.approx(13.363120, abs=1e-6)
    # identical images: 10 log10(1 / 1e-8) = 80 dB (pyiqa's eps), not inf
    assert fidelity.psnr_y(gt, gt).item() == pytest.approx(80.0, abs=1e-9)


def test_crop_border_removes_the_border_difference():
    gt = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    sr = gt.clone()
    sr[..., 0, :] = 1 - sr[..., 0, :]  # differ only on the top row
    assert fidelity.psnr_y(sr, gt).item() < 40
    assert fidelity.psnr_y(sr, gt, crop_border=1).item() == pytest.approx(80.0)
    with pytest.raises(ValueError, match="crop_border=4"):
        fidelity.psnr_y(sr, gt, crop_border=4)


def test_ssim_y_constant_images_by_hand():
    # flat images: sigma = 0 so the structure term is 1 and SSIM = (2ab + C1) / (a² + b² + C1) with a, b the
    # integer Y levels: gray 0 -> Y = 16, gray 85/255 -> Y = 16 + 219/3 = 89
    gt = torch.zeros(1, 3, 16, 16)
    sr = torch.full((1, 3, 16, 16), 85 / 255)
    expected = (2 * 16 * 89 + C1) / (16**2 + 89**2 + C1)  # = 0.348814...
    assert fidelity.ssim_y(sr, gt).item() == pytest.approx(expected, abs=1e-6)
    assert fidelity.ssim_y(gt, gt).item() == pytest.approx(1.0, abs=1e-12)


def test_ssim_y_rounds_y_to_integers():
    # a shift of 0.3 grey levels in Y rounds away: SSIM stays exactly 1 (PSNR does not)
    gt = torch.full((1, 3, 12, 12), 100 / 255)
    sr = gt + 0.3 / 219
    assert fidelity.ssim_y(sr, gt).item() == 1.0
    assert fidelity.psnr_y(sr, gt).item() < 80


def test_fidelity_rejects_bad_shapes():
    with pytest.raises(ValueError, match="same shape"):
        fidelity.psnr_y(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 9))
    with pytest.raises(ValueError, match="at least 11x11"):
        fidelity.ssim_y(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8))


@pytest.mark.parametrize("shape,crop", [((2, 3, 64, 48), 0), ((1, 3, 77, 131), 0), ((1, 3, 64, 64), 4)])
def test_psnr_ssim_equal_pyiqa(shape, crop):
    pyiqa = pytest.importorskip("pyiqa")
    g = torch.Generator().manual_seed(sum(shape) + crop)
    gt = torch.randint(0, 256, shape, generator=g).float() / 255
    sr = ((gt + 0.06 * torch.randn(shape, generator=g)).clamp(0, 1) * 255).round() / 255
    opts = {"test_y_channel": True, "color_space": "ycbcr", "crop_border": crop, "device": "cpu"}
    ref_psnr = pyiqa.create_metric("psnr", **opts)(sr, gt).flatten().double()
    ref_ssim = pyiqa.create_metric("ssim", **opts)(sr, gt).flatten().double()
    assert (fidelity.psnr_y(sr, gt, crop) - ref_psnr).abs().max().item() <= 1e-4
    assert (fidelity.ssim_y(sr, gt, crop) - ref_ssim).abs().max().item() <= 1e-6


# ------------------------------------------------------------------------------------------------ FID


def test_frechet_distance_1d_by_hand():
    # N(0, 1) vs N(3, 4): (0-3)² + 1 + 4 - 2 sqrt(1*4) = 10
    assert learned.frechet_distance(
        np.array([0.0]), np.array([[1.0]]), np.array([3.0]), np.array([[4.0]])
    ) == (pytest.approx(10.0, abs=1e-12))


def test_frechet_distance_diagonal_and_identity():
    mu1, mu2 = np.array([1.0, 2.0, 0.0]), np.array([0.0, 0.0, 0.0])
    v1, v2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 9.0])
    # ||mu1-mu2||² + sum (sqrt v1 - sqrt v2)² = 5 + (1 + 1 + 0)
    assert learned.frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(7.0, abs=1e-12)
    a = np.random.default_rng(0).normal(size=(5, 5))
    s = a @ a.T
    assert learned.frechet_distance(mu1[:1].repeat(5), s, mu1[:1].repeat(5), s) == pytest.approx(
        0.0, abs=1e-9
    )


def test_frechet_distance_full_covariances_match_sqrtm():
    scipy_linalg = pytest.importorskip("scipy.linalg")
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(6, 6)), rng.normal(size=(6, 6))
    s1, s2 = a @ a.T, b @ b.T  # non-commuting
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    covmean = scipy_linalg.sqrtm(s1 @ s2).real
    ref = float((mu1 - mu2) @ (mu1 - mu2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))
    assert learned.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(ref, rel=1e-9)


def test_frechet_distance_equals_pyiqa():
    pytest.importorskip("pyiqa")
    from pyiqa.archs.fid_arch import frechet_distance as pyiqa_frechet

    rng = np.random.default_rng(6)
    a, b = rng.normal(size=(8, 8)), rng.normal(size=(8, 8))
    mu1, mu2, s1, s2 = rng.normal(size=8), rng.normal(size=8), a @ a.T, b @ b.T
    assert learned.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(
        pyiqa_frechet(mu1, s1, mu2, s2), rel=1e-8
    )


def test_fid_extractor_wiring_with_a_stand_in_network(tmp_path, monkeypatch):
    # the real InceptionV3 needs weights; a stand-in network checks the clean-resize loader and the
    # features -> Gaussian -> Fréchet path: identical sets give 0, different sets > 0
    pytest.importorskip("pyiqa")

    class _Net:
        def __call__(self, x, resize, normalize):
            assert x.shape[1:] == (3, 299, 299) and x.min() >= -1 and x.max() <= 1
            return [torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3))], 1)[:, :, None, None]]

    class _Fid:
        net = type("N", (), {"model": _Net()})()

    monkeypatch.setattr(learned, "_create_pyiqa_metric", lambda spec, device: _Fid())
    sr, gt = _write_pair_folders(tmp_path, n=4)
    extract = learned.load_fid_extractor("cpu")
    files_sr, files_gt = sorted(sr.iterdir()), sorted(gt.iterdir())
    assert extract(files_sr).shape == (4, 6)
    assert learned.fid_files(files_gt, files_gt, extract) == pytest.approx(0.0, abs=1e-9)
    assert learned.fid_files(files_sr, files_gt, extract) > 0


def test_real_pyiqa_call_path_needs_no_weights_for_psnr_and_entropy():
    # load_learned_metric + score_batch through pyiqa.create_metric itself, with metrics that need no weights
    pytest.importorskip("pyiqa")
    from seesr.metrics.registry import MetricSpec

    g = torch.Generator().manual_seed(8)
    gt = torch.rand(2, 3, 32, 40, generator=g)
    sr = (gt + 0.05 * torch.randn(gt.shape, generator=g)).clamp(0, 1)
    spec = MetricSpec("p", "P", "fr", False, "psnr", {"test_y_channel": True, "color_space": "ycbcr"})
    got = learned.score_batch(learned.load_learned_metric(spec, "cpu"), sr, gt)
    assert got == pytest.approx(fidelity.psnr_y(sr, gt).tolist(), abs=1e-4)
    nr = learned.score_batch(
        learned.load_learned_metric(MetricSpec("e", "E", "nr", False, "entropy"), "cpu"), sr
    )
    assert len(nr) == 2 and all(0 < v <= 8 for v in nr)


def test_fid_files_on_toy_gaussian_features(tmp_path):
    # features drawn from N(0, I) and N(1, 4I) in 2-D: FID -> 2*1 + 2*(1 - 2)² = 4 as N grows
    rng = np.random.default_rng(2)
    feats = {"a": rng.normal(size=(20000, 2)), "b": 1 + 2 * rng.normal(size=(20000, 2))}
    fid = learned.fid_files(["a"], ["b"], lambda files: feats[files[0]])
    assert fid == pytest.approx(4.0, abs=0.1)
    with pytest.raises(ValueError, match="at least 2"):
        learned.gaussian_stats(np.zeros((1, 3)))


# -------------------------------------------------------------------------------------------- tagging


GT = {"img1": ["cat", "dog"], "img2": ["dog"], "img3": ["car"]}
PRED = {"img1": ["cat", "tree"], "img2": ["dog", "car"], "img3": ["car", "cat"]}
SCORES = {
    "img1": {"cat": 0.9, "dog": 0.4, "car": 0.2},
    "img2": {"cat": 0.1, "dog": 0.7, "car": 0.6},
    "img3": {"cat": 0.8, "dog": 0.5, "car": 0.6},
}


def test_tagging_op_or_ap_by_hand():
    r = tagging.tagging_metrics(PRED, GT, classes=["cat", "dog", "car"], scores=SCORES)
    # N^p = 2+1+2 = 5, N^t = 1+1+1 = 3, N^g = 1+2+1 = 4 ("tree" is outside the vocabulary)
    assert r.op == pytest.approx(3 / 5)
    assert r.or_ == pytest.approx(3 / 4)
    assert r.per_class["cat"]["precision"] == pytest.approx(1 / 2) and r.per_class["cat"]["recall"] == 1.0
    assert r.per_class["dog"]["precision"] == 1.0 and r.per_class["dog"]["recall"] == pytest.approx(1 / 2)
    # AP: cat ranks img1(+) first -> 1; dog: img2(+) P=1, img3(-), img1(+) P=2/3 -> 5/6;
    # car: img2(-) and img3(+) tie at 0.6 -> one threshold with P=1/2, R=1 -> 1/2
    assert r.per_class["cat"]["ap"] == pytest.approx(1.0)
    assert r.per_class["dog"]["ap"] == pytest.approx(5 / 6)
    assert r.per_class["car"]["ap"] == pytest.approx(1 / 2)
    assert r.map == pytest.approx((1 + 5 / 6 + 1 / 2) / 3)
    assert r.n_images == 3


def test_tagging_vocabulary_and_errors():
    # a class with no ground truth adds false positives to OP but is left out of mAP
    r = tagging.tagging_metrics(PRED, GT, classes=["cat", "dog", "car", "tree"], scores=SCORES)
    assert r.op == pytest.approx(3 / 6) and r.or_ == pytest.approx(3 / 4)
    assert r.map == pytest.approx((1 + 5 / 6 + 1 / 2) / 3)
    assert math.isnan(tagging.tagging_metrics(PRED, GT).map)  # no scores -> no AP
    with pytest.raises(ValueError, match="img3"):
        tagging.tagging_metrics({"img1": [], "img2": []}, GT)


def test_average_precision_tie_order_does_not_matter():
    a = tagging.average_precision([0.5, 0.5, 0.2], [True, False, True])
    b = tagging.average_precision([0.5, 0.5, 0.2], [False, True, True])
    # threshold 0.5: P=1/2 R=1/2; threshold 0.2: P=2/3 R=1 -> 1/4 + 1/3
    assert a == b == pytest.approx(0.25 + 1 / 3)


def test_average_precision_equals_sklearn():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(4)
    for _ in range(5):
        relevant = rng.random(40) < 0.3
        relevant[0] = True
        scores = np.round(rng.random(40), 1)  # rounded: many ties
        assert tagging.average_precision(scores.tolist(), relevant.tolist()) == pytest.approx(
            metrics.average_precision_score(relevant, scores), abs=1e-12
        )


# -------------------------------------------------------------------- learned metrics: unavailable path


def _write_pair_folders(tmp_path, n=2, size=(24, 20)):
    rng = np.random.default_rng(0)
    for d in ("sr", "gt"):
        (tmp_path / d).mkdir()
    for i in range(n):
        g = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
        s = np.clip(g.astype(int) + rng.integers(-9, 10, g.shape), 0, 255).astype(np.uint8)
        Image.fromarray(g).save(tmp_path / "gt" / f"im{i}.png")
        Image.fromarray(s).save(tmp_path / "sr" / f"im{i}.png")
    return tmp_path / "sr", tmp_path / "gt"


def _offline(spec, device):
    raise urllib.error.URLError("[Errno -2] Name or service not known")


@pytest.mark.parametrize("name", LEARNED)
def test_unavailable_weights_fail_alone(name, tmp_path, monkeypatch):
    monkeypatch.setattr(learned, "_create_pyiqa_metric", _offline)
    sr, gt = _write_pair_folders(tmp_path)
    res = evaluate_dirs(sr, gt, metrics=[name, "psnr", "ssim"])
    msg = res.failures[name]
    spec = METRICS[name]
    assert "\n" not in msg
    assert msg.startswith(f"{spec.label}: pretrained weights unavailable")
    assert "URLError" in msg
    # names where the weights come from: the specific file (e.g. ckpt_koniq10k.pt) and a host
    first_source = spec.weights.split(" from ")[0]
    assert first_source in msg and (" from " in msg)
    assert set(res.aggregate) == {"psnr", "ssim"} and res.aggregate["psnr"] > 20
    assert name not in res.per_image["im0"]


def test_missing_pyiqa_is_one_line(tmp_path, monkeypatch):
    def no_pyiqa(spec, device):
        raise ModuleNotFoundError("No module named 'pyiqa'", name="pyiqa")

    monkeypatch.setattr(learned, "_create_pyiqa_metric", no_pyiqa)
    sr, _ = _write_pair_folders(tmp_path)
    res = evaluate_dirs(sr, None, metrics=["musiq"])
    assert (
        res.failures["musiq"]
        == "MUSIQ: pyiqa is not installed; install the evaluation extra: pip install 'seesr[eval]'"
    )


class _FakeMetric:
    """Stands in for a loaded pyiqa model: the mean of the image (NR) or of |sr - gt| (FR)."""

    def __call__(self, sr, gt=None):
        x = sr if gt is None else (sr - gt).abs()
        return x.mean(dim=(1, 2, 3), keepdim=False).unsqueeze(1)


def test_other_learned_metrics_still_run(tmp_path, monkeypatch):
    def loader(spec, device):
        if spec.name == "maniqa":
            raise OSError("ckpt_koniq10k.pt: not in cache")
        return _FakeMetric()

    monkeypatch.setattr(learned, "_create_pyiqa_metric", loader)
    sr, gt = _write_pair_folders(tmp_path)
    res = evaluate_dirs(sr, gt, metrics=["lpips", "maniqa", "maniqa-pipal"])
    assert list(res.failures) == ["maniqa"]
    assert "MANIQA (koniq)" in res.failures["maniqa"] and "OSError" in res.failures["maniqa"]
    # the fake values: mean over images of mean(sr) / mean(|sr-gt|)
    from seesr.metrics.evaluate import load_rgb

    srs = [load_rgb(sr / f"im{i}.png") for i in range(2)]
    gts = [load_rgb(gt / f"im{i}.png") for i in range(2)]
    assert res.aggregate["maniqa-pipal"] == pytest.approx(sum(float(s.mean()) for s in srs) / 2, rel=1e-6)
    assert res.aggregate["lpips"] == pytest.approx(
        sum(float((s - g).abs().mean()) for s, g in zip(srs, gts)) / 2, rel=1e-6
    )


def test_metric_failing_on_an_image_fails_alone(tmp_path):
    # 8x8 images: SSIM's 11x11 window does not fit -> SSIM is reported as failed, PSNR still computed
    sr, gt = _write_pair_folders(tmp_path, size=(8, 8))
    res = evaluate_dirs(sr, gt, metrics=["psnr", "ssim"])
    assert res.failures["ssim"].startswith(
        "SSIM: failed on im0.png: ValueError: SSIM needs images of at least 11x11"
    )
    assert list(res.aggregate) == ["psnr"] and set(res.per_image["im1"]) == {"psnr"}


# ----------------------------------------------------------------------------- COCO -> RAM, test sets


def test_coco_to_ram_table_names_ram_tags(fixtures_dir):
    ram_tags = set((fixtures_dir / "ram-tiny" / "ram_tag_list.txt").read_text(encoding="utf-8").splitlines())
    assert len(testsets.COCO_TO_RAM) == 80
    assert len(set(testsets.COCO_TO_RAM.values())) == 80  # no two COCO classes merge
    assert not [v for v in testsets.COCO_TO_RAM.values() if v not in ram_tags]


def test_coco_labels_from_instances():
    instances = {
        "images": [{"id": 1, "file_name": "000000000001.jpg"}, {"id": 2, "file_name": "000000000002.jpg"}],
        "categories": [
            {"id": 5, "name": "airplane"},
            {"id": 1, "name": "person"},
            {"id": 70, "name": "toilet"},
        ],
        "annotations": [
            {"image_id": 1, "category_id": 5},
            {"image_id": 1, "category_id": 1},
            {"image_id": 1, "category_id": 1},
        ],
    }
    assert testsets.coco_labels(instances) == {"000000000001": ["person", "plane"], "000000000002": []}
    with pytest.raises(ValueError, match="unicorn"):
        testsets.coco_labels({**instances, "categories": [{"id": 9, "name": "unicorn"}]})


def _stand_in_degrade(gt, generator):
    """Stand-in with the contract of RealESRGANDegradation: (lr = x4 area downsample + seeded noise, gt_usm)."""
    lr = torch.nn.functional.avg_pool2d(gt, 4)
    noise = torch.randn(lr.shape, generator=generator, device=gt.device)
    return (lr + 0.05 * noise).clamp(0, 1), (gt * 1.1).clamp(0, 1)


def test_build_div2k_val_is_seeded(tmp_path):
    hr = tmp_path / "hr"
    hr.mkdir()
    rng = np.random.default_rng(3)
    for i, size in enumerate([(40, 56), (48, 48)]):
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(hr / f"{i:04d}.png")
    m1 = testsets.build_div2k_val(hr, tmp_path / "a", _stand_in_degrade, num=3, crop=32, seed=7)
    m2 = testsets.build_div2k_val(hr, tmp_path / "b", _stand_in_degrade, num=3, crop=32, seed=7)
    assert [e["source"] for e in m1["images"]] == ["0000.png", "0001.png", "0000.png"]
    assert m1["images"] == m2["images"]
    for e in m1["images"]:
        left, top, w, h = e["box"]
        assert w == h == 32 and 0 <= top <= 40 - 32 and 0 <= left <= 56 - 32
        a = np.asarray(Image.open(tmp_path / "a" / "lr" / e["name"]))
        assert a.shape == (8, 8, 3)
        assert (a == np.asarray(Image.open(tmp_path / "b" / "lr" / e["name"]))).all()
    # the GT crop is the source pixels at the recorded box
    e = m1["images"][1]
    src = np.asarray(Image.open(hr / e["source"]))
    crop = src[e["box"][1] : e["box"][1] + 32, e["box"][0] : e["box"][0] + 32]
    assert (np.asarray(Image.open(tmp_path / "a" / "gt" / e["name"])) == crop).all()
    assert json.loads((tmp_path / "a" / "manifest.json").read_text())["seed"] == 7
    # gt_target="usm" saves the sharpened GT returned by the degradation instead of the crop
    m3 = testsets.build_div2k_val(
        hr, tmp_path / "u", _stand_in_degrade, num=2, crop=32, seed=7, gt_target="usm"
    )
    usm = np.asarray(Image.open(tmp_path / "u" / "gt" / e["name"])).astype(int)
    assert m3["gt_target"] == "usm" and not (usm == crop).all()
    assert np.abs(usm - np.clip(np.round(crop / 255 * 1.1 * 255), 0, 255)).max() <= 1
    with pytest.raises(ValueError, match="smaller than the 64x64 crop"):
        testsets.build_div2k_val(hr, tmp_path / "c", _stand_in_degrade, num=1, crop=64)
