"""The comparison logic of the real-weights checks, run on the tiny fixtures (so it cannot rot unseen)."""

from __future__ import annotations

import hashlib
import json
import subprocess

import pytest
import torch

from tests import real_weights_checks as rw


def test_git_blob_id_equals_git_hash_object(fixtures_dir):
    path = fixtures_dir / "ram-tiny" / "ram_tag_list.txt"
    want = subprocess.run(
        ["git", "hash-object", str(path)], capture_output=True, text=True, check=True
    ).stdout
    assert rw.git_blob_id(path.read_bytes()) == want.strip()
    # the same blob id the RAM and SeeSR repositories list for ram/data/ram_tag_list.txt at the pinned commits
    assert rw.git_blob_id(path.read_bytes()) == "49c840b71915f639fb79cd83ac4a3e313cfbc2b1"


def test_fetch_checked_refuses_other_bytes():
    data = b"\xff\xd8 a jpeg"
    urls = []
    blob = rw.git_blob_id(data)
    assert rw.fetch_checked("images/demo/x.jpg", blob, get=lambda u: urls.append(u) or data) == data
    assert urls == [
        f"https://raw.githubusercontent.com/xinyu1205/recognize-anything/{rw.RAM_COMMIT}/images/demo/x.jpg"
    ]
    with pytest.raises(ValueError, match="expected " + blob):
        rw.fetch_checked("images/demo/x.jpg", blob, get=lambda u: data + b"!")


def test_ram_input_matches_torchvision_transform(fixtures_dir):
    tv = pytest.importorskip("torchvision.transforms")
    from PIL import Image

    data = (fixtures_dir / "reference" / "lr" / "coffee_48x64.png").read_bytes()
    import io

    ref = tv.Compose(
        [
            tv.Resize((384, 384)),
            tv.ToTensor(),
            tv.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
        ]
    )(Image.open(io.BytesIO(data)).convert("RGB"))[None]
    assert torch.allclose(rw.ram_input(data), ref, atol=1e-6)


@pytest.fixture(scope="module")
def tiny_ram(fixtures_dir):
    from seesr import load_official_dape

    ram = fixtures_dir / "ram-tiny"
    return load_official_dape(
        ram / "ram_tiny.pth",
        None,
        tag_list=ram / "ram_tag_list.txt",
        thresholds=ram / "ram_tag_list_threshold.txt",
        arch=ram / "arch.json",
    )


def test_ram_tags_and_comparison_on_tiny_ram(tiny_ram, fixtures_dir):
    x = rw.ram_input((fixtures_dir / "reference" / "lr" / "astronaut_56x80.png").read_bytes())
    report = rw.ram_tags(tiny_ram, x)
    assert len(report.tags) >= 3
    assert all(report.scores[t] > report.thresholds[t] for t in report.tags)
    assert sum(report.scores[t] > report.thresholds[t] for t in report.scores) == len(report.tags)
    assert rw.compare_tags(report, report.tags) == (True, [])
    ok, lines = rw.compare_tags(report, report.tags[1:])  # one tag differs: allowed, and reported
    assert ok and len(lines) == 1 and lines[0].startswith(f"extra {report.tags[0]!r}: score")
    ok, lines = rw.compare_tags(report, [*report.tags[1:], "armchair"])  # two differ
    assert not ok and any("missing 'armchair'" in line and "threshold" in line for line in lines)


def test_param_count_on_tiny_release(fixtures_dir):
    from tests.tiny_pipeline import build_tiny_pipeline

    build = json.loads((fixtures_dir / "models_build.json").read_text())["seesr-tiny"]
    pipe = build_tiny_pipeline(fixtures_dir)
    assert rw.param_count(pipe.unet) == build["unet_params"]
    assert rw.param_count(pipe.controlnet) == build["controlnet_params"]


def test_upscale_quality_passes_good_and_fails_garbage(fixtures_dir):
    from PIL import Image

    data = (fixtures_dir / "reference" / "lr" / "astronaut_512x400.png").read_bytes()
    hr, lr = rw.downscale_x4(data)
    assert lr.size == (round(hr.size[0] / 4), round(hr.size[1] / 4))
    l1 = lambda a, b: float((a - b).abs().mean())  # noqa: E731 - stand-in for LPIPS (its weights need network)
    good = rw.upscale_quality(hr, lr, hr, l1)
    assert good.ok and good.lpips_sr < good.lpips_bicubic and good.psnr_y_sr > 40
    noise = Image.effect_noise(hr.size, 100).convert("RGB")
    bad = rw.upscale_quality(noise, lr, hr, l1)
    assert not bad.ok and "needs > 20" in bad.line()


def test_check_sidecar():
    manifest = {"format": 1, "parts": {"seesr": {"repo": "CSWRY/SeeSR", "revision": "abc"}}}
    assert rw.check_sidecar({"weights_manifest": manifest}, manifest) == []
    assert rw.check_sidecar({}, manifest) == ["sidecar has no 'weights_manifest' object"]
    other = {"parts": {"seesr": {"repo": "CSWRY/SeeSR", "revision": "def"}}}
    assert rw.check_sidecar({"weights_manifest": other}, manifest)[0].startswith("part seesr")
    conv = {
        **manifest,
        "converted": {"files": [{"path": "unet/x", "sha256": hashlib.sha256(b"").hexdigest()}]},
    }
    assert rw.check_sidecar({"weights_manifest": manifest}, conv) == [
        "sidecar does not cite the converted files the run loaded"
    ]
