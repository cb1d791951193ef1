"""Tests of seesr.cli.outputs: where ``seesr upscale`` writes each input of a batch."""

from __future__ import annotations

import os
from pathlib import Path

from seesr import io as sio
from seesr.cli.outputs import plan_outputs
from tests.test_io import _touch_png


def test_plan_outputs_collisions_and_inputs(tmp_path: Path) -> None:
    d = tmp_path / "in"
    a_jpg, a_png, b = _touch_png(d / "a.jpg"), _touch_png(d / "a.png"), _touch_png(d / "b.png")
    items = sio.list_inputs([d])
    plans = {p.input.path.name: p for p in plan_outputs(items, tmp_path / "out")}
    assert plans["a.jpg"].output.name == "a_jpg.png" and plans["a.png"].output.name == "a_png.png"
    assert plans["b.png"].sidecar.name == "b.json" and all(p.error is None for p in plans.values())
    # same order-independence when the list is reversed
    again = {p.input.path.name: p.output for p in plan_outputs(items[::-1], tmp_path / "out")}
    assert again == {k: v.output for k, v in plans.items()}
    # writing into the input folder: b.png -> b.png is the input, refused even with overwrite
    inplace = {p.input.path.name: p for p in plan_outputs(items, d, overwrite=True)}
    assert "is the input" in (inplace["b.png"].error or "")
    # a hard link in the output folder pointing at an input
    out = tmp_path / "o2"
    out.mkdir()
    os.link(b, out / "b.png")
    plan = {p.input.path.name: p for p in plan_outputs(items, out, overwrite=True)}
    assert "is the input" in (plan["b.png"].error or "")
    assert a_jpg.exists() and a_png.exists()


def test_plan_outputs_residual_collision_refused(tmp_path: Path) -> None:
    items = [sio.InputFile(_touch_png(tmp_path / "x" / "a.png"), Path("a.png"))]
    items.append(sio.InputFile(_touch_png(tmp_path / "y" / "A.png"), Path("A.png")))
    plans = plan_outputs(items, tmp_path / "out")
    assert all("would write the same output" in (p.error or "") for p in plans)
