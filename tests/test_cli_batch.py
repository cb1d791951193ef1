"""`seesr upscale --batch-size N`, `--compile` and `--channels-last` with the real tiny pipeline (issue 14).

Batched outputs are compared with the same run at ``--batch-size 1``: batching changes the order of CPU kernels,
so the 8-bit files may differ by one level where a value sits on a rounding edge, never more.
"""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

import seesr.cli.upscale as up
from seesr.cli import main
from seesr.cli.upscale_batch import make_batches
from tests.tiny_pipeline import build_tiny_pipeline

FLAGS = ["--steps", "2", "--process-size", "64", "--seed", "5"]


class CountingPipe:
    """The tiny pipeline, counting calls and images per call; ``fail_when`` raises for batches holding a marker."""

    def __init__(self, pipe: Any, fail_when: int | None = None) -> None:
        self.pipe, self.fail_when, self.calls = pipe, fail_when, []
        self.device, self.dtype, self.unet, self.controlnet, self.vae = (
            pipe.device,
            pipe.dtype,
            pipe.unet,
            pipe.controlnet,
            pipe.vae,
        )

    def __call__(self, image: Any, **kw: Any) -> Any:
        images = image if isinstance(image, list) else [image]
        self.calls.append(len(images))
        if self.fail_when is not None and any(
            round(float(x[0, 0, 0, 0]) * 255) == self.fail_when for x in images
        ):
            raise RuntimeError("boom")
        return self.pipe(image, **kw)


@pytest.fixture(scope="module")
def tiny(fixtures_dir: Path) -> Any:
    return build_tiny_pipeline(fixtures_dir)


def _smooth(seed: int, size: tuple[int, int]) -> np.ndarray:
    rng = np.random.default_rng(seed)
    h, w = size
    return np.kron(rng.integers(0, 256, (h // 4, w // 4, 3)), np.ones((4, 4, 1))).astype(np.uint8)


def _inputs(folder: Path) -> list[Path]:
    folder.mkdir()
    paths = []
    for name, seed, size in (("a", 1, (16, 16)), ("b", 2, (16, 16)), ("c", 3, (12, 20)), ("d", 4, (16, 16))):
        paths.append(folder / f"{name}.png")
        Image.fromarray(_smooth(seed, size)).save(paths[-1])
    return paths


def _run(monkeypatch: pytest.MonkeyPatch, pipe: Any, *argv: Any) -> int:
    monkeypatch.setattr(up, "_load_pipeline", lambda args, run: pipe)
    return main(["upscale", *map(str, argv)])


def _u8(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path), dtype=np.int16)


def test_batch_size_groups_same_size_inputs_and_matches_one_by_one(tmp_path, tiny, monkeypatch, caplog):
    inputs = _inputs(tmp_path / "in")
    one = CountingPipe(tiny)
    assert _run(monkeypatch, one, *inputs, "-o", tmp_path / "one", *FLAGS) == 0
    two = CountingPipe(tiny)
    with caplog.at_level(logging.INFO, logger="seesr.cli.upscale_batch"):
        assert _run(monkeypatch, two, *inputs, "-o", tmp_path / "two", "--batch-size", 2, *FLAGS) == 0
    assert one.calls == [1, 1, 1, 1]
    assert two.calls == [2, 1, 1]  # a+b, then d (the rest of the 16x16 group), then c (12x20) alone
    assert "batch of 2 (16x16): a.png, b.png" in caplog.text
    sizes = {}
    for p in inputs:
        a, b = _u8(tmp_path / "one" / f"{p.stem}.png"), _u8(tmp_path / "two" / f"{p.stem}.png")
        assert a.shape == b.shape and int(np.abs(a - b).max()) <= 1, p.name
        side = json.loads((tmp_path / "two" / f"{p.stem}.json").read_text())
        assert side["seed"] == 5 and side["kernels"] == {"compiled_modules": 0, "channels_last": False}
        sizes[p.stem] = side["batch"]["size"]
        assert json.loads((tmp_path / "one" / f"{p.stem}.json").read_text())["batch"] == {
            "size": 1,
            "index": 0,
        }
    assert sizes == {"a": 2, "b": 2, "c": 1, "d": 1}
    side_b = json.loads((tmp_path / "two" / "b.json").read_text())
    assert side_b["batch"]["index"] == 1 and [Path(x).name for x in side_b["batch"]["inputs"]] == [
        "a.png",
        "b.png",
    ]


def test_samples_of_one_input_batch_with_their_own_seeds(tmp_path, tiny, monkeypatch):
    src = _inputs(tmp_path / "in")[0]
    one, two = CountingPipe(tiny), CountingPipe(tiny)
    assert _run(monkeypatch, one, src, "-o", tmp_path / "one", "--sample-times", 2, *FLAGS) == 0
    assert (
        _run(monkeypatch, two, src, "-o", tmp_path / "two", "--sample-times", 2, "--batch-size", 4, *FLAGS)
        == 0
    )
    assert (one.calls, two.calls) == ([1, 1], [2])
    for name in ("a_s00", "a_s01"):
        assert (
            int(np.abs(_u8(tmp_path / "one" / f"{name}.png") - _u8(tmp_path / "two" / f"{name}.png")).max())
            <= 1
        )
    s0, s1 = (_u8(tmp_path / "two" / f"a_s0{k}.png") for k in (0, 1))
    assert int(np.abs(s0 - s1).max()) > 1  # the seeds differ inside the batch
    assert [json.loads((tmp_path / "two" / f"a_s0{k}.json").read_text())["seed"] for k in (0, 1)] == [5, 6]


def test_a_failing_batch_reruns_alone_so_only_the_culprit_fails(tmp_path, tiny, monkeypatch, capsys):
    inputs = _inputs(tmp_path / "in")
    marker = int(np.asarray(Image.open(inputs[1]))[0, 0, 0])  # b's first red value
    pipe = CountingPipe(tiny, fail_when=marker)
    if int(np.asarray(Image.open(inputs[0]))[0, 0, 0]) == marker:  # pragma: no cover - seed-dependent
        pytest.skip("a and b share the marker value")
    rc = _run(monkeypatch, pipe, inputs[0], inputs[1], "-o", tmp_path / "o", "--batch-size", 2, *FLAGS)
    err = capsys.readouterr().err
    assert rc == 1 and pipe.calls == [2, 1, 1]
    assert (tmp_path / "o" / "a.png").is_file() and not (tmp_path / "o" / "b.png").exists()
    assert [line for line in err.splitlines() if line.startswith(str(inputs[1]))] == [
        f"{inputs[1]}: RuntimeError: boom"
    ]


def test_make_batches_shrinks_to_what_fits_and_keeps_order():
    class P:
        def __init__(self, size: tuple[int, int]) -> None:
            self.input_size, self.tiling = size, "t"

    jobs = [(f"i{k}", [(0, f"o{k}")], P((8, 8) if k != 2 else (4, 4))) for k in range(6)]
    fits = []

    def fit(plan: Any, n: int) -> tuple[int, Any]:
        fits.append(n)
        return min(n, 2), f"plan{min(n, 2)}"

    batches = make_batches(jobs, 8, fit)  # type: ignore[arg-type]
    assert [[u.item for u in units] for units, _ in batches] == [["i0", "i1"], ["i3", "i4"], ["i5"], ["i2"]]
    assert [plan for _, plan in batches] == ["plan2", "plan2", "plan1", "plan1"]
    assert [[u.item for u in units] for units, _ in make_batches(jobs, 1, fit)] == [
        [f"i{k}"] for k in range(6)
    ]  # type: ignore[arg-type]


def test_batch_counted_in_the_memory_plan():
    from seesr.config import SamplingConfig, TilingConfig
    from seesr.run.footprint import SD2_FOOTPRINT
    from seesr.run.plan import plan_image

    kw = dict(footprint=SD2_FOOTPRINT, device_type="cpu", dtype_bytes=4, budget=2**40, baseline=0)
    s, t = SamplingConfig(), TilingConfig()
    one = plan_image((256, 256), s, t, **kw)
    four = plan_image((256, 256), s, t, images=4, **kw)
    assert four.stages["denoise"] > 3.5 * one.stages["denoise"]  # activations scale with the images
    assert four.seconds == pytest.approx(4 * one.seconds)
    tight = one.host_bytes + (four.host_bytes - one.host_bytes) // 2
    assert plan_image((256, 256), s, t, images=4, **{**kw, "budget": tight}).fits is False


def test_fast_kernel_flags_refused_in_faithful_mode(tmp_path, capsys):
    src = _inputs(tmp_path / "in")[0]
    for flag in ("--compile", "--channels-last"):
        assert main(["upscale", str(src), "-o", str(tmp_path / "o"), "--faithful", flag]) != 0
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and flag in err[0] and "faithful" in err[0], err


def test_compile_and_channels_last_flags_are_applied_and_recorded(tmp_path, tiny, fixtures_dir, monkeypatch):
    """Wiring only (the ``aot_eager`` backend: no C++ build); the inductor check is the slow test below."""
    import seesr.pipeline.compile as comp

    src = _inputs(tmp_path / "in")[0]
    assert _run(monkeypatch, CountingPipe(tiny), src, "-o", tmp_path / "eager", *FLAGS) == 0
    fresh = build_tiny_pipeline(fixtures_dir)
    monkeypatch.setattr(comp, "compile_models", functools.partial(comp.compile_models, backend="aot_eager"))
    args = ("-o", tmp_path / "fast", "--compile", "--channels-last", *FLAGS)
    assert _run(monkeypatch, CountingPipe(fresh), src, *args) == 0
    side = json.loads((tmp_path / "fast" / "a.json").read_text())
    assert side["kernels"]["channels_last"] is True and side["kernels"]["compiled_modules"] > 10
    assert int(np.abs(_u8(tmp_path / "fast" / "a.png") - _u8(tmp_path / "eager" / "a.png")).max()) <= 1


@pytest.mark.slow
def test_inductor_compiled_pipeline_equals_eager(tiny, fixtures_dir):
    """torch.compile (inductor, regional) of the tiny UNet/ControlNet on this CPU: same image within 1e-4."""
    from seesr.config import SamplingConfig
    from seesr.pipeline.compile import compile_models
    from tests.tiny_pipeline import load_lr

    lr = load_lr(fixtures_dir, "coffee_48x64") * 0.999
    sampling = SamplingConfig(num_inference_steps=2, process_size=64, color_fix="none")
    eager = tiny(lr, sampling, show_progress=False).image
    compiled = build_tiny_pipeline(fixtures_dir)
    assert compile_models(compiled, regional=True) > 10
    with torch.no_grad():
        out = compiled(lr, sampling, show_progress=False).image
    assert float((out - eager).abs().max()) <= 1e-4
