"""The run layer (seesr.run): one settings rule, one input guard, one job writer for the CLI, the UI and the API."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from seesr.config import SamplingConfig, TilingConfig
from seesr.run.guard import check_size
from seesr.run.settings import default_overlap, latent_tile_from_pixels, resolve_configs
from tests.tiny_pipeline import build_tiny_pipeline, official_parts

# -- settings -------------------------------------------------------------------------------------------------


def test_default_overlap_rule():
    assert default_overlap(96) == TilingConfig().latent_tile_overlap == 32  # the default config is unchanged
    assert [default_overlap(t) for t in (8, 64, 128, 256)] == [2, 21, 32, 64]
    for tile in range(8, 400):
        ov = default_overlap(tile)
        assert tile // 4 <= ov < tile  # DESIGN.md §8: >= 25 % of the tile


def test_tile_pixels_and_overlap_agree_for_every_front_end():
    _, t = resolve_configs(tile_px=512)
    assert (t.latent_tile_size, t.latent_tile_overlap) == (64, 21)
    _, t = resolve_configs(tile_px=512, tiling={"latent_tile_overlap": 10})
    assert (t.latent_tile_size, t.latent_tile_overlap) == (64, 10)
    _, t = resolve_configs(preset="faithful", tile_px=512)
    assert t.latent_tile_overlap == 4  # the preset's official overlap survives a tile change
    with pytest.raises(ValueError, match="multiple of 8 and >= 64 pixels, got 500"):
        latent_tile_from_pixels(500)
    with pytest.raises(ValueError, match="preset must be one of"):
        resolve_configs(preset="fast")


def test_precedence_defaults_sidecar_preset_flags():
    side = {"sampling": {"num_inference_steps": 9, "seed": 3}, "tiling": {"latent_tile_size": 80}}
    s, t = resolve_configs(sidecar=side, preset="turbo", sampling={"seed": 5, "prompt": None})
    assert (s.num_inference_steps, s.seed, s.timestep_spacing) == (2, 5, "trailing")
    assert t.latent_tile_size == 80


# -- input guard ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(4, 8192), (8, 1200), (1, 40000)])
def test_thin_images_are_refused_from_the_header(size):
    w, h = size
    with pytest.raises(ValueError, match="are enlarged first"):
        check_size(w, h, SamplingConfig(), max_output_pixels=16384 * 16384 if w < 8 else 4096 * 4096)


def test_library_refuses_a_runaway_enlargement_before_model_work(fixtures_dir):
    pipe = build_tiny_pipeline(fixtures_dir)

    def no_model_work(*args, **kwargs):
        raise AssertionError("model work started")

    pipe.extract_prompt = no_model_work  # type: ignore[method-assign]
    pipe.encode_lr = no_model_work  # type: ignore[method-assign]
    start = time.perf_counter()
    with pytest.raises(ValueError, match="would be processed at .* over the cap"):
        pipe(torch.zeros(1, 3, 8192, 4), SamplingConfig(num_inference_steps=1))
    assert time.perf_counter() - start < 5.0  # refused from the sizes alone, not after an enlargement


def test_ui_refuses_a_thin_strip_before_model_work(tmp_path):
    from seesr.ui.controller import UIController

    class NeverCalled:
        def extract_tags(self, image):
            raise AssertionError("model work started")

        def __call__(self, *args, **kwargs):
            raise AssertionError("model work started")

    strip = tmp_path / "strip.png"
    Image.fromarray(np.full((1200, 8, 3), 128, np.uint8)).save(strip)
    ctl = UIController(NeverCalled(), output_dir=tmp_path / "out")
    image = ctl.load(strip)
    with pytest.raises(ValueError, match="1200 would be processed at"):
        ctl.run(image, tags=["x"], sampling=SamplingConfig(num_inference_steps=1), tiling=TilingConfig())


# -- CLI and UI: the same run ---------------------------------------------------------------------------------


def _without_volatile(sidecar: dict) -> dict:
    """Drop what legitimately differs between two runs of one image: paths, times and measured memory."""
    return {k: v for k, v in sidecar.items() if k not in ("input", "output", "timings", "memory", "plan")}


def test_cli_and_ui_write_identical_files_with_the_tiny_pipeline(tmp_path, fixtures_dir, monkeypatch):
    """The real tiny pipeline at a 512 px (64 latent) tile on an image that tiles: same bytes, same sidecar."""
    import seesr.cli.upscale as up
    from seesr.cli import main
    from seesr.ui.controller import UIController, make_configs

    pipe = build_tiny_pipeline(fixtures_dir)
    src = tmp_path / "photo.png"
    rng = np.random.default_rng(0)
    smooth = np.kron(rng.integers(0, 256, (10, 10, 3)), np.ones((16, 16, 1))).astype(np.uint8)
    Image.fromarray(smooth).save(src)  # 160x160 -> 640x640 processed -> 80x80 latent > one 64 tile

    monkeypatch.setattr(up, "_load_pipeline", lambda args, run: pipe)
    argv = [
        "upscale",
        str(src),
        "-o",
        str(tmp_path / "cli"),
        "--tile-size",
        "512",
        "--steps",
        "2",
        "--seed",
        "3",
    ]
    assert main(argv) == 0

    ctl = UIController(pipe, output_dir=tmp_path / "ui")
    image = ctl.load(src)
    defaults = SamplingConfig()
    sampling, tiling = make_configs(
        preset="default",
        steps=2,
        guidance=defaults.guidance_scale,
        seed=3,
        scale=defaults.upscale,
        color_fix=defaults.color_fix,
        tile_size=512,
        prompt=defaults.prompt,
        negative_prompt=defaults.negative_prompt,
    )
    out = ctl.run(image, tags=None, sampling=sampling, tiling=tiling)

    cli_png = tmp_path / "cli" / "photo.png"
    assert cli_png.read_bytes() == out.image_path.read_bytes()
    cli_side = json.loads((tmp_path / "cli" / "photo.json").read_text())
    ui_side = json.loads(out.sidecar_path.read_text())
    assert cli_side["settings"]["latent_tiled"] is True and cli_side["tiling"]["latent_tile_size"] == 64
    assert _without_volatile(cli_side) == _without_volatile(ui_side)
    settings_only = ("processed", "latent_tiles", "vae_mode", "latent_tile_size", "vae_decoder_tile_size")
    assert {k: cli_side["plan"][k] for k in settings_only} == {k: ui_side["plan"][k] for k in settings_only}
    page_plan = ctl.plan(image, sampling, tiling)  # what the page shows before Upscale
    assert page_plan is not None and "processed 640x640; latent tiles 2x2 of 64" in page_plan.describe()


def test_parts_flags_cover_the_official_parts(fixtures_dir):
    from seesr.run.sources import OFFICIAL_PARTS

    assert set(official_parts(fixtures_dir, turbo=True)) == set(OFFICIAL_PARTS)


def test_job_refuses_a_caller_field_that_would_replace_one_of_its_own(tmp_path):
    from seesr.io import load_image
    from seesr.run.job import OutputTarget, upscale_image

    class Bicubic:
        def __call__(self, image, *, sampling, tiling, tags=None, callback=None, show_progress=True):
            out = torch.nn.functional.interpolate(image, scale_factor=2, mode="bicubic").clamp(0, 1)
            return type("R", (), {"image": out, "tags": [], "prompt": "", "settings": {}})()

    src = tmp_path / "a.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(src)
    target = OutputTarget(image=tmp_path / "o" / "a.png", sidecar=tmp_path / "o" / "a.json")
    with pytest.raises(ValueError, match="'seed' is written by upscale_image"):
        upscale_image(
            Bicubic(),
            load_image(src),
            target,
            sampling=SamplingConfig(),
            tiling=TilingConfig(),
            extra={"seed": 1},
        )
    assert Path(target.image).is_file() and not Path(target.sidecar).exists()


# -- web UI footprint -----------------------------------------------------------------------------------------


class _Bicubic:
    """Stands in for SeeSRPipeline with its call contract (bicubic x upscale)."""

    def extract_tags(self, image):
        return ["x"]

    def __call__(self, image, *, sampling, tiling, tags=None, callback=None, show_progress=True):
        out = torch.nn.functional.interpolate(image, scale_factor=sampling.upscale, mode="bicubic")
        return type("R", (), {"image": out.clamp(0, 1), "tags": [], "prompt": "", "settings": {}})()


def test_ui_session_state_is_bounded_whatever_the_photo_size(tmp_path):
    from seesr.ui.controller import UIController

    big = tmp_path / "big.png"
    Image.fromarray(np.zeros((3000, 2000, 3), np.uint8)).save(big)
    ctl = UIController(_Bicubic(), output_dir=tmp_path / "out", max_side=512)
    image = ctl.load(big)
    held = sum(v.nbytes for v in vars(image).values() if isinstance(v, np.ndarray))
    assert image.size == (2000, 3000) and held <= 1024 * 1024 * 3  # the preview only, not 72 MB of float32
    out = ctl.run(image, tags=None, sampling=SamplingConfig(upscale=1.0), tiling=TilingConfig())
    assert max(out.after.shape[:2]) == 512 and out.before.shape == out.after.shape  # bounded slider arrays
    with Image.open(out.image_path) as im:
        assert im.size == (2000, 3000)  # the download is the full result


def test_ui_keeps_only_the_newest_result_folders_and_removes_its_temp_folder(tmp_path):
    import gc

    from seesr.ui.controller import UIController

    src = tmp_path / "a.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(src)
    ctl = UIController(_Bicubic(), output_dir=tmp_path / "out", keep_runs=2)
    image = ctl.load(src)
    outs = [ctl.run(image, tags=None, sampling=SamplingConfig(), tiling=TilingConfig()) for _ in range(4)]
    assert [o.image_path.is_file() for o in outs] == [False, False, True, True]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["run003", "run004"]

    temp = UIController(_Bicubic())
    folder = temp.output_dir
    temp.run(temp.load(src), tags=None, sampling=SamplingConfig(), tiling=TilingConfig())
    assert any(folder.rglob("*.png"))
    del temp
    gc.collect()
    assert not folder.exists()
