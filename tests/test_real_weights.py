"""Checks on the officially released weights against ground truth no one here produced (issue 11 item 6).

Marker ``real_weights`` (deselected by default; run ``scripts/real_weights_check.sh``). They need
``SEESR_WEIGHTS`` pointing at a ``seesr download --keep-originals`` folder (plain RAM needs the raw RAM
checkpoint) and network for RAM's demo images and the LPIPS weights. Without ``SEESR_WEIGHTS`` they skip; with
it they run and fail loudly on anything missing, so they cannot rot into skips. The comparison logic lives in
``tests/real_weights_checks.py`` and is unit-tested on the tiny fixtures by ``test_real_weights_logic.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests import real_weights_checks as rw

pytestmark = pytest.mark.real_weights

WEIGHTS = os.environ.get("SEESR_WEIGHTS")


@pytest.fixture(scope="module")
def folder() -> Path:
    if not WEIGHTS:
        pytest.skip("set SEESR_WEIGHTS to a folder made by `seesr download --keep-originals` (needs network)")
    from seesr import weights

    root = Path(WEIGHTS).expanduser()
    missing = weights.missing_parts(root, ["sd2-base", "seesr", "ram", "ram-tags"])
    assert not missing, f"SEESR_WEIGHTS={root} lacks {missing}: run `seesr download --keep-originals {root}`"
    return root


@pytest.fixture(scope="module")
def release(folder):
    from seesr.pipeline.pipeline import SeeSRPipeline

    device = "cuda" if torch.cuda.is_available() else "cpu"
    return SeeSRPipeline.from_pretrained(folder, device=device)


def test_plain_ram_tags_demo1_as_ram_readme(folder):
    from seesr import load_official_dape, weights

    ckpt = folder / "ram" / "ram_swin_large_14m.pth"
    assert ckpt.is_file(), f"plain RAM needs {ckpt} (download with --keep-originals)"
    tag_list, thresholds = weights.find_tag_files(ckpt)
    model = load_official_dape(ckpt, None, tag_list=tag_list, thresholds=thresholds)
    report = rw.ram_tags(model, rw.ram_input(rw.fetch_checked(*rw.DEMO1)))
    ok, lines = rw.compare_tags(report, rw.README_DEMO1_TAGS)
    print(f"RAM demo1: {' | '.join(report.tags)}; differing: {lines or 'none'}")
    assert ok, f"more than one tag differs from RAM's README: {lines}"


def test_release_loads_strictly_with_official_counts(release):
    print(f"counts: UNet {rw.param_count(release.unet):,}, ControlNet {rw.param_count(release.controlnet):,}")
    assert rw.param_count(release.unet) == rw.UNET_PARAMS
    assert rw.param_count(release.controlnet) == rw.CONTROLNET_PARAMS
    assert release.unet.num_rca_modules == 16 and release.controlnet.num_rca_modules == 7
    assert release.dape is not None and release.dape.num_classes == 4585


def test_default_upscale_of_demo4_beats_bicubic_and_cites_manifest(folder, tmp_path):
    from PIL import Image

    from seesr import weights
    from seesr.metrics.learned import load_learned_metric, score_batch
    from seesr.metrics.registry import METRICS

    hr, lr = rw.downscale_x4(rw.fetch_checked(*rw.DEMO4))
    assert lr.size == (107, 160)
    lr.save(tmp_path / "demo4_x4.png")
    cmd = [sys.executable, "-m", "seesr", "upscale", str(tmp_path / "demo4_x4.png"), "-o", str(tmp_path / "out"),
           "--weights", str(folder)]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    assert done.returncode == 0, done.stderr[-2000:]
    sr = Image.open(tmp_path / "out" / "demo4_x4.png")
    lpips_model = load_learned_metric(METRICS["lpips"])
    report = rw.upscale_quality(sr, lr, hr, lambda a, b: score_batch(lpips_model, a, b)[0])
    print(f"demo4 x4: {report.line()}")
    assert report.ok, report.line()
    sidecar = json.loads((tmp_path / "out" / "demo4_x4.json").read_text())
    problems = rw.check_sidecar(sidecar, weights.read_manifest(folder) or {})
    assert not problems, problems
