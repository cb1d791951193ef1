"""`seesr ui` without a browser (issue 8): the controller, the Gradio handlers and the CLI, over a stub pipeline
with the SeeSRPipeline call contract, and once over the tiny official-format weights from the fixtures."""

from __future__ import annotations

import functools
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
gr = pytest.importorskip("gradio", reason="the `ui` extra (gradio) is not installed")

from seesr.cli import main  # noqa: E402
from seesr.config import SamplingConfig, TilingConfig  # noqa: E402
from seesr.errors import BadImageError  # noqa: E402
from seesr.ui.app import build_app  # noqa: E402
from seesr.ui.controller import (  # noqa: E402
    WEIGHTS_HELP,
    Cancelled,
    UIController,
    make_configs,
    parse_tags,
    preview_u8,
)
from tests.tiny_pipeline import official_parts  # noqa: E402


class StubPipeline:
    """Stands in for SeeSRPipeline: same call contract, bicubic instead of diffusion, records every call."""

    def __init__(self, tags=("cup", "coffee", "table"), delay: float = 0.0, fail: Exception | None = None):
        self.tags = list(tags)
        self.delay = delay
        self.fail = fail
        self.calls: list[dict] = []
        self.steps_done = 0
        self.active = 0
        self.max_active = 0
        self._lock = threading.Lock()

    def extract_tags(self, image: torch.Tensor) -> list[str]:
        assert image.ndim == 4 and image.shape[:2] == (1, 3) and image.dtype == torch.float32
        return list(self.tags)

    def __call__(self, image, sampling, tiling, tags=None, callback=None, show_progress=True):
        with self._lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            self.calls.append({"tags": tags, "sampling": sampling, "tiling": tiling})
            if self.fail is not None:
                raise self.fail
            n = sampling.num_inference_steps
            for i in range(n):
                time.sleep(self.delay)
                self.steps_done += 1
                if callback is not None:
                    callback(i + 1, n)
            h, w = image.shape[-2:]
            size = (round(h * sampling.upscale), round(w * sampling.upscale))
            out = F.interpolate(image, size=size, mode="bicubic", align_corners=False).clamp(0, 1)
            used = list(self.tags if tags is None else tags)
            prompt = ", ".join([*used, sampling.added_prompt])
            return SimpleNamespace(image=out, tags=used, prompt=prompt, settings={"steps": n, "stub": True})
        finally:
            with self._lock:
                self.active -= 1


COFFEE = "reference/lr/coffee_48x64.png"


@pytest.fixture
def coffee(tiny_weights_dir: Path) -> Path:
    return tiny_weights_dir / COFFEE


@pytest.fixture
def broken_png(tmp_path: Path, coffee: Path) -> Path:
    data = coffee.read_bytes()
    path = tmp_path / "broken.png"
    path.write_bytes(data[: len(data) // 2])
    return path


def _handler(app, name: str):
    for block_fn in app.fns.values():
        if getattr(block_fn.fn, "__name__", "") == name:
            return block_fn
    raise AssertionError(f"no handler {name!r} in the app")


REQ = SimpleNamespace(session_hash="test-session")


def _run_args(state, tags, **over):
    knobs = {
        "preset": "default",
        "steps": 3,
        "guidance": 5.5,
        "seed": 7,
        "scale": 4,
        "color_fix": "adain",
        "tile": 768,
        "prompt": "",
        "negative": "dotted, noise",
    }
    knobs.update(over)
    return (state, tags, *knobs.values())


# -- pure helpers ------------------------------------------------------------------------------------------------


def test_preview_is_a_bounded_thumbnail():
    big = np.random.default_rng(0).random((300, 2000, 3), dtype=np.float32)
    thumb = preview_u8(big, max_side=1024)
    assert thumb.shape == (154, 1024, 3) and thumb.dtype == np.uint8
    small = preview_u8(big[:10, :20])
    np.testing.assert_array_equal(small, np.clip(np.rint(big[:10, :20] * 255), 0, 255).astype(np.uint8))


def test_parse_tags_normalises_edits():
    assert parse_tags(" cup, coffee ,, cup ,  latte   art ") == ["cup", "coffee", "latte art"]
    assert parse_tags(["cup", "saucer, spoon", " "]) == ["cup", "saucer", "spoon"]
    assert parse_tags(None) == [] and parse_tags("") == []


def test_make_configs_maps_every_knob_and_preset():
    s, t = make_configs(
        preset="default",
        steps=7,
        guidance=3.0,
        seed=11,
        scale=2.5,
        color_fix="wavelet",
        tile_size=512,
        prompt="a cup",
        negative_prompt="blur",
    )
    assert (s.num_inference_steps, s.guidance_scale, s.seed, s.upscale) == (7, 3.0, 11, 2.5)
    assert (s.color_fix, s.prompt, s.negative_prompt, s.faithful) == ("wavelet", "a cup", "blur", False)
    assert t.latent_tile_size == 64 and t.latent_tile_overlap >= 64 // 4  # DESIGN.md §8: overlap >= 25 %
    f, ft = make_configs(preset="faithful", steps=50, guidance=5.5, seed=1, scale=4, color_fix="adain",
                         tile_size=768, prompt="", negative_prompt="")  # fmt: skip
    assert f.faithful is True and ft.latent_tile_overlap == 4  # the official overlap
    tb, tt = make_configs(preset="turbo", steps=2, guidance=1.0, seed=1, scale=4, color_fix="adain",
                          tile_size=768, prompt="", negative_prompt="")  # fmt: skip
    assert tb.timestep_spacing == "trailing" and tt.latent_tile_overlap == 32 and tb.guidance_scale == 1.0
    ho, _ = make_configs(preset="hard-only", steps=3, guidance=2.0, seed=1, scale=4, color_fix="adain",
                         tile_size=768, prompt="", negative_prompt="")  # fmt: skip
    assert ho.prompt_mode == "hard_only" and ho.num_inference_steps == 3  # knobs win over the preset
    nl, _ = make_configs(preset="no-lre", steps=3, guidance=2.0, seed=1, scale=4, color_fix="adain",
                         tile_size=768, prompt="", negative_prompt="")  # fmt: skip
    assert nl.start_point == "noise"
    with pytest.raises(ValueError, match="preset must be one of"):
        make_configs(preset="fast", steps=1, guidance=1, seed=1, scale=4, color_fix="adain", tile_size=768,
                     prompt="", negative_prompt="")  # fmt: skip
    with pytest.raises(ValueError, match="seed must be"):
        make_configs(preset="default", steps=1, guidance=1, seed=-3, scale=4, color_fix="adain", tile_size=768,
                     prompt="", negative_prompt="")  # fmt: skip
    with pytest.raises(ValueError, match="color_fix"):
        make_configs(preset="default", steps=1, guidance=1, seed=1, scale=4, color_fix="magic", tile_size=768,
                     prompt="", negative_prompt="")  # fmt: skip


# -- controller ------------------------------------------------------------------------------------------------


def test_run_writes_png_and_sidecar_with_progress(tmp_path, coffee):
    stub = StubPipeline()
    ctl = UIController(stub, output_dir=tmp_path)
    image = ctl.load(coffee)
    assert image.size == (64, 48) and image.preview.dtype == np.uint8 and image.preview.shape == (48, 64, 3)
    assert ctl.extract_tags(image) == ["cup", "coffee", "table"]
    seen: list[tuple[int, int]] = []
    sampling = SamplingConfig(num_inference_steps=3, seed=5)
    out = ctl.run(image, tags=["cup", "coffee", "table"], sampling=sampling, tiling=TilingConfig(), progress=lambda
                  s, t: seen.append((s, t)))  # fmt: skip
    assert seen == [(1, 3), (2, 3), (3, 3)]
    assert (
        stub.calls[0]["tags"] is None
    )  # unedited tags: the pipeline's own DAPE path, as the CLI without --tags
    assert out.after.shape == (192, 256, 3) and out.before.shape == out.after.shape
    assert out.after.dtype == np.uint8 and out.after.max() > 0  # not a black image
    from PIL import Image

    with Image.open(out.image_path) as im:
        assert im.size == (256, 192)
        np.testing.assert_array_equal(np.asarray(im.convert("RGB")), out.after)
    side = json.loads(out.sidecar_path.read_text())
    assert side["seed"] == 5 and side["tags"] == ["cup", "coffee", "table"] and side["tags_override"] is False
    assert side["sampling"]["num_inference_steps"] == 3 and side["output_size"] == [256, 192]
    assert side["settings"] == {"steps": 3, "stub": True} and side["input"] == "coffee_48x64.png"


def test_edited_tags_reach_the_pipeline(tmp_path, coffee):
    stub = StubPipeline()
    ctl = UIController(stub, output_dir=tmp_path)
    image = ctl.load(coffee)
    ctl.extract_tags(image)
    out = ctl.run(image, tags=["cup", "espresso"], sampling=SamplingConfig(num_inference_steps=1),
                  tiling=TilingConfig())  # fmt: skip
    assert stub.calls[-1]["tags"] == ["cup", "espresso"]
    side = json.loads(out.sidecar_path.read_text())
    assert side["tags"] == ["cup", "espresso"] and side["tags_override"] is True
    ctl.run(image, tags=[], sampling=SamplingConfig(num_inference_steps=1), tiling=TilingConfig())
    assert stub.calls[-1]["tags"] == []  # all tags removed: an empty tag list, not DAPE's


def test_ui_sidecar_reruns_with_seesr_upscale_from_json(tmp_path, coffee, monkeypatch):
    """The page's sidecar is the CLI's: `seesr upscale --from-json` repeats the same pipeline call."""
    import seesr.cli.upscale as upscale

    ui_stub, cli_stub = StubPipeline(), StubPipeline()
    ctl = UIController(ui_stub, output_dir=tmp_path / "ui")
    image = ctl.load(coffee)
    ctl.extract_tags(image)
    sampling, tiling = make_configs(preset="faithful", steps=4, guidance=3.5, seed=99, scale=2, color_fix="wavelet",
                                    tile_size=512, prompt="a cup", negative_prompt="blur")  # fmt: skip
    out = ctl.run(image, tags=["cup", "espresso"], sampling=sampling, tiling=tiling, preset="faithful")
    monkeypatch.setattr(upscale, "_load_pipeline", lambda args, run: cli_stub)
    argv = ["upscale", str(coffee), "-o", str(tmp_path / "cli"), "--from-json", str(out.sidecar_path)]
    assert main(argv) == 0
    (ui_call,), (cli_call,) = ui_stub.calls, cli_stub.calls
    assert cli_call["sampling"] == ui_call["sampling"] and cli_call["tiling"] == ui_call["tiling"]
    assert cli_call["tags"] == ui_call["tags"] == ["cup", "espresso"]
    (cli_png,) = (tmp_path / "cli").glob("*.png")
    from PIL import Image

    with Image.open(cli_png) as a, Image.open(out.image_path) as b:
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("mode", ["RGBA", "L"])
def test_alpha_and_grey_survive_the_page(tmp_path, mode):
    """bad_inputs.md rows 11-12: alpha is upscaled and re-attached, grey in gives grey out."""
    from PIL import Image

    rng = np.random.default_rng(1)
    arr = rng.integers(0, 256, size=(12, 16, len(mode)), dtype=np.uint8)
    src = tmp_path / f"in_{mode}.png"
    Image.fromarray(arr[..., 0] if mode == "L" else arr, mode=mode).save(src)
    ctl = UIController(StubPipeline(), output_dir=tmp_path / "out")
    image = ctl.load(src)
    out = ctl.run(
        image, tags=None, sampling=SamplingConfig(num_inference_steps=1, upscale=2), tiling=TilingConfig()
    )
    with Image.open(out.image_path) as im:
        assert im.mode == ("RGBA" if mode == "RGBA" else "L") and im.size == (32, 24)
        if mode == "RGBA":
            alpha = np.asarray(im)[..., 3].astype(np.float32)
            assert (
                abs(alpha.mean() - arr[..., 3].mean()) < 8
            )  # the source alpha, upscaled — not dropped/opaque
    side = json.loads(out.sidecar_path.read_text())
    assert side["alpha"] is (mode == "RGBA") and side["grey"] is (mode == "L")


def test_pixel_cap_is_checked_before_decoding(tmp_path, coffee):
    ctl = UIController(StubPipeline(), output_dir=tmp_path, max_input_pixels=1000)
    with pytest.raises(BadImageError, match="3,?072"):
        ctl.load(coffee)


def test_output_cap_refused_before_model_work(tmp_path, coffee):
    stub = StubPipeline()
    ctl = UIController(stub, output_dir=tmp_path, max_output_pixels=100_000)
    image = ctl.load(coffee)
    with pytest.raises(ValueError, match=r"512x384 = 196608 pixels, over the output cap of 100000"):
        ctl.run(image, tags=None, sampling=SamplingConfig(upscale=8), tiling=TilingConfig())
    assert stub.calls == []


def test_cancel_stops_at_the_next_step(tmp_path, coffee):
    stub = StubPipeline()
    ctl = UIController(stub, output_dir=tmp_path)
    image = ctl.load(coffee)

    def progress(step: int, total: int) -> None:
        if step == 2:
            assert ctl.cancel("s1") is True

    with pytest.raises(Cancelled):
        ctl.run(image, tags=None, sampling=SamplingConfig(num_inference_steps=10), tiling=TilingConfig(),
                progress=progress, session="s1")  # fmt: skip
    assert stub.steps_done == 3  # stopped in the callback after step 3, not after all 10
    assert ctl.cancel("s1") is False  # nothing running any more
    assert not list(tmp_path.rglob("*.png"))  # no result written


def test_cancel_reaches_the_next_job_of_the_session(tmp_path, coffee):
    """Gradio drops a cancelled event at once while its thread finishes the step; the session's next job must
    still be cancellable (the finishing job must not unregister it)."""
    stub = StubPipeline(delay=0.05)
    ctl = UIController(stub, output_dir=tmp_path)
    image = ctl.load(coffee)
    results: dict[str, BaseException | None] = {}
    sampling = SamplingConfig(num_inference_steps=200)

    def job(name: str) -> None:
        try:
            ctl.run(image, tags=None, sampling=sampling, tiling=TilingConfig(), session="s")
            results[name] = None
        except BaseException as err:
            results[name] = err

    first = threading.Thread(target=job, args=("A",))
    first.start()
    while stub.steps_done < 2:
        time.sleep(0.01)
    assert ctl.cancel("s")
    second = threading.Thread(target=job, args=("B",))
    second.start()
    time.sleep(0.2)  # B is registered and waits for the model while A stops
    first.join()
    assert ctl.cancel("s") is True  # B is still reachable
    second.join(timeout=30)
    assert isinstance(results["A"], Cancelled) and isinstance(results["B"], Cancelled)
    assert stub.steps_done < 50  # both stopped within a few of their 200 steps


def test_one_model_job_at_a_time(tmp_path, coffee):
    stub = StubPipeline(delay=0.02)
    ctl = UIController(stub, output_dir=tmp_path)
    image = ctl.load(coffee)
    errors: list[BaseException] = []

    def job(i: int) -> None:
        try:
            ctl.run(image, tags=None, sampling=SamplingConfig(num_inference_steps=4, seed=i), tiling=TilingConfig(),
                    session=f"s{i}")  # fmt: skip
        except BaseException as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=job, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(stub.calls) == 3
    assert stub.max_active == 1


# -- the Gradio app (handlers called directly, no server) ---------------------------------------------------------


def test_app_queue_is_one_job_at_a_time(tmp_path):
    app = build_app(StubPipeline(), output_dir=tmp_path)
    model_fns = [_handler(app, "on_file"), _handler(app, "on_run")]
    assert {f.concurrency_id for f in model_fns} == {"model"}
    assert all(f.concurrency_limit == 1 for f in model_fns)
    assert _handler(app, "on_cancel").queue is False  # Cancel must not wait behind the job it cancels
    run_id = next(i for i, f in app.fns.items() if f is _handler(app, "on_run"))
    assert any(run_id in (f.cancels or []) for f in app.fns.values())  # the button also cancels the event


def test_app_upload_tag_edit_and_rerun(tmp_path, coffee):
    stub = StubPipeline()
    app = build_app(
        stub, output_dir=tmp_path, sampling_defaults=SamplingConfig(process_size=128, added_prompt="8k")
    )
    on_file, on_run = _handler(app, "on_file").fn, _handler(app, "on_run").fn
    state, preview, tags_update, status, *_ = on_file(str(coffee), REQ)
    assert preview.shape == (48, 64, 3) and preview.dtype == np.uint8
    assert tags_update["value"] == ["cup", "coffee", "table"] and "DAPE found 3 tag(s)" in status
    slider, files, prompt, status = on_run(*_run_args(state, tags_update["value"]), REQ)
    before, after = slider
    assert after.shape == before.shape == (192, 256, 3) and "Done in" in status
    assert [Path(f).suffix for f in files] == [".png", ".json"] and all(Path(f).is_file() for f in files)
    assert prompt == "cup, coffee, table, 8k"
    used = stub.calls[-1]["sampling"]
    assert (used.process_size, used.num_inference_steps, used.seed, used.negative_prompt) == (
        128,
        3,
        7,
        "dotted, noise",
    )
    slider, files, prompt, status = on_run(*_run_args(state, ["cup", "espresso"], seed=9), REQ)
    assert stub.calls[-1]["tags"] == ["cup", "espresso"] and stub.calls[-1]["sampling"].seed == 9
    assert prompt.startswith("cup, espresso") and json.loads(Path(files[1]).read_text())["seed"] == 9


def test_app_broken_file_is_one_line_in_the_page(tmp_path, broken_png):
    app = build_app(StubPipeline(), output_dir=tmp_path)
    state, preview, tags_update, status, *cleared = _handler(app, "on_file").fn(str(broken_png), REQ)
    assert state is None and preview is None and tags_update["value"] == []
    assert status.startswith("**Error:**") and "truncated" in status and "broken.png" in status
    assert "Traceback" not in status and "\n" not in status
    assert cleared == [None, None, ""]  # the previous result is cleared, not left standing
    assert str(broken_png.parent) not in status  # the file's name, not the server's upload path


@pytest.mark.parametrize("content", [b"", b"<html>not an image</html>"])
def test_app_empty_and_non_image_files(tmp_path, content):
    path = tmp_path / "photo.jpg"
    path.write_bytes(content)
    app = build_app(StubPipeline(), output_dir=tmp_path / "out")
    state, preview, _, status, *_ = _handler(app, "on_file").fn(str(path), REQ)
    assert state is None and preview is None and status.startswith("**Error:**") and "photo.jpg" in status


def test_app_run_failure_shows_message_never_an_image(tmp_path, coffee):
    stub = StubPipeline(fail=RuntimeError("CUDA out of memory (simulated)"))
    app = build_app(stub, output_dir=tmp_path)
    state, _, tags_update, *_ = _handler(app, "on_file").fn(str(coffee), REQ)
    slider, files, prompt, status = _handler(app, "on_run").fn(*_run_args(state, tags_update["value"]), REQ)
    assert slider is None and files is None  # no black placeholder image
    assert "CUDA out of memory (simulated)" in status and "Traceback" not in status


def test_app_nan_output_is_refused(tmp_path, coffee):
    class NaNPipeline(StubPipeline):
        def __call__(self, image, **kw):
            res = super().__call__(image, **kw)
            res.image = torch.full_like(res.image, float("nan"))
            return res

    app = build_app(NaNPipeline(), output_dir=tmp_path)
    state, _, tags_update, *_ = _handler(app, "on_file").fn(str(coffee), REQ)
    slider, files, _, status = _handler(app, "on_run").fn(*_run_args(state, tags_update["value"]), REQ)
    assert slider is None and files is None and "non-finite" in status


def test_app_run_without_upload_and_bad_knob(tmp_path, coffee):
    app = build_app(StubPipeline(), output_dir=tmp_path)
    on_run = _handler(app, "on_run").fn
    assert "Upload an image first" in on_run(*_run_args(None, []), REQ)[3]
    state, _, tags_update, *_ = _handler(app, "on_file").fn(str(coffee), REQ)
    slider, _, _, status = on_run(*_run_args(state, tags_update["value"], tile=4), REQ)
    assert (
        slider is None and status == "**Error:** tile size must be a multiple of 8 and &gt;= 64 pixels, got 4"
    )


def test_weights_missing_page(tmp_path, coffee):
    app = build_app(None, load_error="No SeeSR weights were given. " + WEIGHTS_HELP, output_dir=tmp_path)
    ctl = app.seesr_controller
    assert ctl.ready is False
    config = app.get_config_file()
    texts = [c["props"].get("value") for c in config["components"] if c.get("type") == "markdown"]
    assert any(t and "No SeeSR weights were given" in t and "--weights DIR" in t for t in texts)
    run_btn = next(c for c in config["components"] if c["props"].get("elem_id") == "seesr-run")
    assert run_btn["props"]["interactive"] is False
    state, preview, _, status, *_ = _handler(app, "on_file").fn(str(coffee), REQ)
    assert preview is not None and "No SeeSR weights" in status  # the image is shown, the reason too
    assert "No SeeSR weights" in _handler(app, "on_run").fn(*_run_args(state, []), REQ)[3]


def test_factory_error_becomes_page_message(tmp_path, coffee):
    def factory():
        raise FileNotFoundError("/nowhere/unet/config.json not found")

    ctl = UIController(factory, output_dir=tmp_path)
    assert ctl.ready
    image = ctl.load(coffee)
    with pytest.raises(RuntimeError, match="Could not load the SeeSR weights: /nowhere/unet"):
        ctl.extract_tags(image)
    assert not ctl.ready and "--weights DIR" in ctl.load_error


# -- CLI -------------------------------------------------------------------------------------------------------


@pytest.fixture
def launches(monkeypatch):
    calls: list[dict] = []

    def fake_launch(self, **kw):
        calls.append({"app": self, **kw})
        return None, "http://127.0.0.1:0/", None

    monkeypatch.setattr(gr.Blocks, "launch", fake_launch)
    monkeypatch.delenv("SEESR_WEIGHTS", raising=False)
    return calls


def test_cli_binds_localhost_without_share_by_default(launches, tmp_path):
    assert main(["ui", "--output-dir", str(tmp_path)]) == 0
    (call,) = launches
    assert call["server_name"] == "127.0.0.1" and call["share"] is False and call["ssr_mode"] is False
    assert call["prevent_thread_lock"] is False  # `seesr ui` blocks until Ctrl-C
    ctl = call["app"].seesr_controller
    assert not ctl.ready and "weights missing in" in ctl.load_error


def test_cli_share_and_port_only_when_asked(launches, tmp_path):
    assert main(["ui", "--host", "0.0.0.0", "--port", "7999", "--share", "--output-dir", str(tmp_path)]) == 0
    assert launches[0]["server_name"] == "0.0.0.0" and launches[0]["server_port"] == 7999
    assert launches[0]["share"] is True


def test_cli_weight_problems_are_shown_in_the_page(launches, tmp_path, monkeypatch):
    assert main(["ui", "--weights", str(tmp_path / "missing"), "--output-dir", str(tmp_path)]) == 0
    assert "missing: folder not found" in launches[-1]["app"].seesr_controller.load_error
    assert main(["ui", "--sd2", "x", "--output-dir", str(tmp_path)]) == 0
    assert "official weights incomplete: also pass --seesr" in launches[-1]["app"].seesr_controller.load_error
    import seesr.cli.ui as cli_ui

    def broken_loader(args):
        raise ValueError(f"{args.seesr}/unet: unexpected key 'foo.weight'")

    monkeypatch.setattr(cli_ui, "load_pipeline", broken_loader)
    assert main(["ui", "--sd2", str(tmp_path / "sd2"), "--seesr", str(tmp_path / "seesr")]) == 0
    msg = launches[-1]["app"].seesr_controller.load_error
    assert msg.startswith("Could not load the SeeSR weights: ") and "seesr/unet: unexpected key" in msg
    # Conflicting flags are a command-line mistake: one line and exit 1, no page.
    n = len(launches)
    assert main(["ui", "--weights", str(tmp_path), "--sd2", "x"]) == 1 and len(launches) == n


def test_cli_turbo_opens_on_the_turbo_preset(launches, tmp_path, monkeypatch):
    import seesr.cli.ui as cli_ui

    loaded: list[dict] = []
    monkeypatch.setattr(cli_ui, "load_pipeline", lambda args: loaded.append(vars(args)) or StubPipeline())
    assert main(["ui", "--weights", str(tmp_path), "--turbo", "--output-dir", str(tmp_path)]) == 0
    assert loaded[0]["turbo"] is True and launches[-1]["app"].seesr_controller.ready
    config = launches[-1]["app"].get_config_file()
    props = {c["props"].get("elem_id"): c["props"] for c in config["components"]}
    assert props["seesr-preset"]["value"] == "turbo"
    assert props["seesr-steps"]["value"] == 2 and props["seesr-guidance"]["value"] == 1.0


def test_cli_examples_folder(launches, tmp_path, tiny_weights_dir):
    ex = tmp_path / "ex"
    ex.mkdir()
    shutil.copy(tiny_weights_dir / COFFEE, ex / "coffee.png")
    (ex / "notes.txt").write_text("not an example")
    assert main(["ui", "--examples", str(ex), "--output-dir", str(tmp_path)]) == 0
    assert main(["ui", "--examples", str(tmp_path / "nope")]) == 1  # one-line error, exit 1


def test_cli_serves_the_page_in_a_subprocess(tmp_path):
    """The real `seesr ui` launch path (no monkeypatch): the page is served on 127.0.0.1 and says weights are
    missing."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k != "SEESR_WEIGHTS"}
    env["GRADIO_ANALYTICS_ENABLED"] = "False"
    cmd = [sys.executable, "-m", "seesr", "ui", "--port", str(port), "--output-dir", str(tmp_path)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 90
        config = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/config", timeout=5) as resp:
                    config = json.loads(resp.read())
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.5)
        assert config is not None, f"seesr ui did not serve the page: {proc.poll()=}"
        texts = " ".join(
            str(c["props"].get("value")) for c in config["components"] if c.get("type") == "markdown"
        )
        assert "weights missing in" in texts
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert "Traceback" not in out, out


# -- the real pipeline with the tiny fixture weights ---------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def tiny_pipeline(tiny_weights_dir: Path):
    """The tiny official-format pipeline loaded the way `seesr ui --sd2 ... --dape-arch ...` loads it; built
    once per test session (shared with the browser test)."""
    import seesr.cli.ui as cli_ui
    from seesr.cli import build_parser

    argv = ["ui", "--device", "cpu", "--dtype", "fp32"]
    for part, path in official_parts(tiny_weights_dir).items():
        argv += [f"--{part.replace('_', '-')}", str(path)]
    return cli_ui.load_pipeline(build_parser().parse_args(argv))


def test_the_plan_line_mentions_bf16_for_a_long_fp32_cpu_run(tmp_path, tiny_weights_dir, monkeypatch):
    """The page's plan status carries the CLI's bf16 note (one run layer): only with auto precision, only where
    the CPU has hardware bf16, only for a long plan."""
    import seesr.pipeline.devices as devices
    import seesr.run.plan as plan_module

    pipe = tiny_pipeline(tiny_weights_dir)

    def status(*, bf16: bool, threshold: float, dtype: str = "auto") -> str:
        monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: bf16)
        monkeypatch.setattr(plan_module, "BF16_HINT_SECONDS", threshold)
        app = build_app(pipe, output_dir=tmp_path, dtype_requested=dtype)
        return _handler(app, "on_file").fn(str(tiny_weights_dir / COFFEE), REQ)[3]

    shown = status(bf16=True, threshold=0.0)
    assert "Plan: " in shown and "Note: this run is planned at about " in shown and "--dtype bf16" in shown
    assert "--dtype bf16" not in status(bf16=False, threshold=0.0)
    assert "--dtype bf16" not in status(bf16=True, threshold=1e9)
    assert "--dtype bf16" not in status(bf16=True, threshold=0.0, dtype="fp32")


def test_tiny_pipeline_through_the_ui(tmp_path, tiny_weights_dir):
    """The real SeeSRPipeline (tiny official-format weights) behind the page: DAPE tags shown, edited, used."""
    pipe = tiny_pipeline(tiny_weights_dir)
    # process_size 64 keeps the tiny UNet's latents small instead of enlarging the result to 512 px.
    app = build_app(pipe, output_dir=tmp_path, sampling_defaults=SamplingConfig(process_size=64))
    on_file, on_run = _handler(app, "on_file").fn, _handler(app, "on_run").fn
    state, _, tags_update, status, *_ = on_file(str(tiny_weights_dir / COFFEE), REQ)
    dape_tags = tags_update["value"]
    assert dape_tags and f"DAPE found {len(dape_tags)} tag(s)" in status
    edited = ["espresso", *dape_tags[1:]]
    slider, files, prompt, status = on_run(*_run_args(state, edited, steps=1, scale=2), REQ)
    assert slider is not None, status
    before, after = slider
    assert after.shape == before.shape == (96, 128, 3) and after.std() > 0
    assert prompt.startswith(", ".join(edited))
    side = json.loads(Path(files[1]).read_text())
    assert side["tags"] == edited and side["tags_override"] is True
    assert side["settings"]["sampling"]["seed"] == 7 and side["settings"]["sizes"]["target"] == [128, 96]
