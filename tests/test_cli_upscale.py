"""`seesr upscale` end to end with a stub pipeline: every row of spec/bad_inputs.md, batch behaviour, sidecars.

The stub replaces `seesr.cli.upscale._load_pipeline`: a bicubic resize by ``sampling.upscale`` plus noise drawn
from a generator seeded with ``sampling.seed`` (so a wrong per-image seed would show up as different bytes).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

import seesr.cli.upscale as up
from seesr.cli import main
from tests.test_io import ADOBE_GAMMA, ADOBE_RGB_D50, make_icc, png16_bytes, png_header_only, rand_u8


@dataclass
class StubResult:
    image: torch.Tensor
    tags: list[str]
    prompt: str
    settings: dict[str, Any]


@dataclass
class StubPipe:
    noise: float = 0.0
    fail_on: dict[str, BaseException] = field(default_factory=dict)
    calls: list[tuple[int, int]] = field(default_factory=list)
    device: str = "cpu"
    dtype: str = "torch.float32"

    def __call__(
        self, image, *, sampling, tiling, tags=None, callback=None, show_progress=True
    ) -> StubResult:
        assert image.dtype == torch.float32 and image.ndim == 4 and image.shape[1] == 3
        assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0
        h, w = image.shape[-2:]
        key = f"{h}x{w}"
        if key in self.fail_on:
            raise self.fail_on[key]
        self.calls.append((h, w))
        oh, ow = round(h * sampling.upscale), round(w * sampling.upscale)
        out = F.interpolate(image, size=(oh, ow), mode="bicubic", align_corners=False)
        if self.noise:
            g = torch.Generator().manual_seed(sampling.seed)
            out = out + self.noise * torch.randn(out.shape, generator=g)
        for i in range(sampling.num_inference_steps):
            if callback is not None:
                callback(i + 1, sampling.num_inference_steps)
        tags = list(tags) if tags is not None else ["stub"]
        prompt = f"{', '.join(tags)}, {sampling.prompt},{sampling.added_prompt}"
        return StubResult(
            out.clamp(0, 1), tags, prompt, {"num_inference_steps": sampling.num_inference_steps}
        )


@pytest.fixture
def stub(monkeypatch: pytest.MonkeyPatch) -> StubPipe:
    pipe = StubPipe()
    loads: list[int] = []

    def fake_load(args: Any, run: Any) -> StubPipe:
        loads.append(1)
        return pipe

    monkeypatch.setattr(up, "_load_pipeline", fake_load)
    monkeypatch.delenv("SEESR_WEIGHTS", raising=False)
    pipe.loads = loads  # type: ignore[attr-defined]
    return pipe


@dataclass
class Run:
    rc: int
    out: str
    err: str


@pytest.fixture
def cli(stub: StubPipe, capsys: pytest.CaptureFixture[str]) -> Callable[..., Run]:
    def call(*argv: Any) -> Run:
        rc = main(["upscale", *map(str, argv)])
        cap = capsys.readouterr()
        assert "Traceback" not in cap.err, cap.err
        return Run(rc, cap.out, cap.err)

    return call


def png(path: Path, a: np.ndarray | None = None, **kw: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rand_u8((6, 5, 3)) if a is None else a).save(path, **kw)
    return path


def u8(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def no_temp_files(root: Path) -> bool:
    return not [p for p in root.rglob("*") if p.name.endswith(".part")]


def failure_lines(err: str, path: Path) -> list[str]:
    return [line for line in err.splitlines() if line.startswith(f"{path}: ")]


def batch_with_bad(cli: Callable[..., Run], tmp_path: Path, bad: Path, *extra: Any) -> Run:
    """Run a batch of [bad, good]; the good one must still be written and the bad one named on one line."""
    good = png(tmp_path / "in" / "zz_good.png")
    out = tmp_path / "out"
    r = cli(bad, good, "-o", out, *extra)
    assert r.rc == 1, r
    assert (out / "zz_good.png").is_file()
    assert len(failure_lines(r.err, bad)) == 1, r.err
    assert "1 failed" in r.out
    return r


# ----------------------------------------------------------------------------------------------------------
# one function per row of spec/bad_inputs.md


def row01_empty(cli, tmp_path, stub):
    bad = tmp_path / "in" / "empty.png"
    bad.parent.mkdir()
    bad.write_bytes(b"")
    assert "empty file" in batch_with_bad(cli, tmp_path, bad).err


def row02_not_an_image(cli, tmp_path, stub):
    bad = tmp_path / "in" / "page.jpg"
    bad.parent.mkdir()
    bad.write_text("<!DOCTYPE html><html><body>404</body></html>")
    r = batch_with_bad(cli, tmp_path, bad)
    assert "not a recognised image (looks like HTML" in r.err


def row03_truncated(cli, tmp_path, stub):
    for fmt in ("JPEG", "PNG"):
        buf = io.BytesIO()
        Image.fromarray(rand_u8((32, 32, 3))).save(buf, fmt)
        bad = tmp_path / "in" / f"cut.{fmt.lower()}"
        bad.parent.mkdir(exist_ok=True)
        bad.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
        r = batch_with_bad(cli, tmp_path / fmt, bad)
        assert "truncated" in r.err and "--allow-truncated" in r.err
        r = cli(bad, "-o", tmp_path / f"ok{fmt}", "--allow-truncated")
        assert r.rc == 0 and "warning: truncated" in r.err
        out = tmp_path / f"ok{fmt}" / "cut.png"
        assert Image.open(out).size == (128, 128)


def row04_corrupt_but_decodable(cli, tmp_path, stub):
    buf = io.BytesIO()
    Image.fromarray(rand_u8((32, 32, 3))).save(buf, "JPEG")
    data = bytearray(buf.getvalue())
    for i in range(len(data) // 2, len(data) // 2 + 30, 3):
        data[i] ^= 0x5A
    src = tmp_path / "c.jpg"
    src.write_bytes(bytes(data))
    r = cli(src, "-o", tmp_path / "out")
    assert r.rc == 0 and u8(tmp_path / "out" / "c.png").shape == (128, 128, 3)


def row05_pixel_cap(cli, tmp_path, stub, monkeypatch):
    bad = png(tmp_path / "in" / "big.png", rand_u8((40, 50, 3)))
    r = batch_with_bad(cli, tmp_path, bad, "--max-pixels", 1999)
    assert "50x40 = 2000 pixels is over the input cap of 1999" in r.err
    # a header claiming 20000x20000 (over Pillow's own hard limit) is refused with its size, not a traceback
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_header_only(20000, 20000))
    r = cli(bomb, "-o", tmp_path / "o2")
    assert r.rc == 1 and "20000x20000 = 400000000 pixels is over the input cap" in r.err
    assert stub.loads == [1]  # the bomb-only run never loaded the model


def row06_output_cap(cli, tmp_path, stub):
    src = png(tmp_path / "in" / "a.png", rand_u8((200, 160, 3)))
    r = cli(src, "-o", tmp_path / "out", "--max-output-pixels", 511999)
    assert r.rc == 1 and "output would be 640x800 = 512000 pixels, over the output cap of 511999" in r.err
    assert stub.loads == [] and stub.calls == []  # refused before any model work
    assert cli(src, "-o", tmp_path / "out", "--max-output-pixels", 512000).rc == 0


def row07_tiny(cli, tmp_path, stub):
    sizes = {"one.png": (1, 1), "three.png": (3, 3), "line.png": (1, 40000)}
    for name, (h, w) in sizes.items():
        png(tmp_path / "in" / name, rand_u8((h, w, 3)))
    # 1x40000 would be enlarged to 512 x 20480000 px before SR (spec §1.3): refused, naming the sizes
    r = cli(tmp_path / "in", "-o", tmp_path / "out")
    assert r.rc == 1 and "1 failed" in r.out
    line = failure_lines(r.err, tmp_path / "in" / "line.png")
    assert len(line) == 1 and "40000x1 would be processed at 20480000x512" in line[0]
    assert stub.calls == [(1, 1), (3, 3)]
    for name in ("one.png", "three.png"):
        h, w = sizes[name]
        assert u8(tmp_path / "out" / name).shape == (4 * h, 4 * w, 3)
    # a smaller process size makes it fit: processed, with the exact x4 size
    r = cli(tmp_path / "in" / "line.png", "-o", tmp_path / "out", "--process-size", 8)
    assert r.rc == 0 and u8(tmp_path / "out" / "line.png").shape == (4, 160000, 3)


def row08_16bit(cli, tmp_path, stub):
    v = np.random.default_rng(8).integers(0, 65536, (5, 7, 3), dtype=np.uint16)
    src = tmp_path / "deep.png"
    src.write_bytes(png16_bytes(v))
    grey = tmp_path / "deepgrey.png"
    gv = np.arange(35, dtype=np.uint16).reshape(5, 7) * 1800  # mostly > 255: clipped by a naive convert
    Image.fromarray(gv).save(grey)
    r = cli(src, grey, "-o", tmp_path / "o16", "--bit-depth", 16, "--upscale", 1)
    assert r.rc == 0, r.err
    out = tmp_path / "o16"
    back = up_load(out / "deep.png")
    np.testing.assert_array_equal(np.round(back.rgb * 65535).astype(np.uint16), v)
    gback = up_load(out / "deepgrey.png")
    assert gback.is_grey and gback.bit_depth == 16
    np.testing.assert_array_equal(np.round(gback.rgb[..., 0] * 65535).astype(np.uint16), gv)
    side = json.loads((out / "deep.json").read_text())
    assert side["bit_depth"] == 16 and side["input_bit_depth"] == 16
    # default: 8-bit output, scaled (not clipped)
    assert cli(src, "-o", tmp_path / "o8", "--upscale", 1).rc == 0
    np.testing.assert_array_equal(
        u8(tmp_path / "o8" / "deep.png"), np.round(v / 65535 * 255).astype(np.uint8)
    )
    assert json.loads((tmp_path / "o8" / "deep.json").read_text())["bit_depth"] == 8


def up_load(p: Path):
    from seesr.io import load_image

    return load_image(p)


def row09_float_tiff(cli, tmp_path, stub):
    v = np.linspace(0, 1, 20, dtype=np.float32).reshape(4, 5)
    ok = tmp_path / "f.tif"
    Image.fromarray(v).save(ok)
    r = cli(ok, "-o", tmp_path / "out", "--upscale", 1)
    assert r.rc == 0
    got = u8(tmp_path / "out" / "f.png")
    assert got.ndim == 2 and np.array_equal(got, np.round(v * 255).astype(np.uint8))  # not black/white
    bad = tmp_path / "in" / "hdr.tif"
    bad.parent.mkdir()
    Image.fromarray(v * 10).save(bad)
    assert "expected [0, 1]" in batch_with_bad(cli, tmp_path, bad).err


def row10_cmyk(cli, tmp_path, stub):
    src = tmp_path / "c.jpg"
    Image.new("CMYK", (8, 8), (0, 255, 0, 0)).save(src, quality=100)  # magenta, Adobe-inverted by Pillow
    r = cli(src, "-o", tmp_path / "out")
    assert r.rc == 0
    assert np.abs(u8(tmp_path / "out" / "c.png")[16, 16].astype(int) - [255, 0, 255]).max() <= 3


def row11_grey(cli, tmp_path, stub):
    png(tmp_path / "in" / "g.png", rand_u8((6, 6)))
    Image.fromarray(rand_u8((6, 6)) > 127).save(tmp_path / "in" / "b.png")
    stub.noise = 0.05  # channels of the model output differ; the writer must still produce grey
    r = cli(tmp_path / "in", "-o", tmp_path / "out")
    assert r.rc == 0
    for name in ("g.png", "b.png"):
        assert Image.open(tmp_path / "out" / name).mode == "L"


def row12_alpha(cli, tmp_path, stub):
    rgba = np.dstack([rand_u8((4, 5, 3)), rand_u8((4, 5), 2)])
    png(tmp_path / "in" / "rgba.png", rgba)
    png(tmp_path / "in" / "la.png", np.dstack([rand_u8((4, 5)), rand_u8((4, 5), 3)]))
    pal = Image.new("P", (4, 5))
    pal.putpalette([10, 20, 30, 200, 100, 0] + [0] * 762)
    pal.putpixel((2, 2), 1)
    pal.save(tmp_path / "in" / "pal.png", transparency=1)
    r = cli(tmp_path / "in", "-o", tmp_path / "out", "--upscale", 1)
    assert r.rc == 0
    assert np.array_equal(u8(tmp_path / "out" / "rgba.png")[..., 3], rgba[..., 3])
    assert Image.open(tmp_path / "out" / "la.png").mode == "LA"
    pal_alpha = u8(tmp_path / "out" / "pal.png")[..., 3]
    assert pal_alpha[2, 2] == 0 and pal_alpha[0, 0] == 255
    # WebP keeps alpha too
    assert cli(tmp_path / "in" / "rgba.png", "-o", tmp_path / "w", "--format", "webp").rc == 0
    assert Image.open(tmp_path / "w" / "rgba.webp").mode == "RGBA"


def row13_exif(cli, tmp_path, stub):
    a = rand_u8((4, 7, 3))
    im = Image.fromarray(a)
    exif = im.getexif()
    exif[0x0112] = 6
    src = tmp_path / "rot.jpg"
    im.save(src, exif=exif, quality=100, subsampling=0)
    r = cli(src, "-o", tmp_path / "out", "--upscale", 1)
    assert r.rc == 0
    upright = np.asarray(ImageOps.exif_transpose(Image.open(src)))
    got = Image.open(tmp_path / "out" / "rot.png")
    assert got.size == (4, 7) and got.getexif().get(0x0112) in (None, 1)
    assert np.array_equal(np.asarray(got), upright)


def row14_multiframe(cli, tmp_path, stub):
    frames = [Image.new("RGB", (4, 4), c) for c in ((255, 0, 0), (0, 0, 255))]
    gif = tmp_path / "in" / "anim.gif"
    gif.parent.mkdir()
    frames[0].save(gif, save_all=True, append_images=frames[1:])
    assert "multi-frame GIF (2 frames) is not supported" in batch_with_bad(cli, tmp_path, gif).err
    tif = tmp_path / "pages.tif"
    frames[0].save(tif, save_all=True, append_images=frames[1:])
    r = cli(tif, "-o", tmp_path / "o2")
    assert r.rc == 1 and "multi-frame TIFF (2 frames)" in r.err


def row15_wide_gamut(cli, tmp_path, stub):
    src = tmp_path / "wide.png"
    icc = make_icc("Test wide gamut", ADOBE_RGB_D50, ADOBE_GAMMA)
    Image.fromarray(np.full((4, 4, 3), (128, 102, 77), np.uint8)).save(src, icc_profile=icc)
    r = cli(src, "-o", tmp_path / "out", "--upscale", 1)
    assert r.rc == 0 and "to sRGB" in r.err  # the conversion is stated
    got = u8(tmp_path / "out" / "wide.png")[1, 1].astype(int)
    assert np.abs(got - [138, 102, 73]).max() <= 2  # lcms result, checked against the matrix math in test_io
    assert "icc_profile" not in Image.open(tmp_path / "out" / "wide.png").info


def row16_lying_extension(cli, tmp_path, stub):
    src = tmp_path / "really_png.jpg"
    Image.fromarray(rand_u8((4, 4, 3))).save(src, "PNG")
    r = cli(src, "-o", tmp_path / "out", "--format", "webp")
    assert r.rc == 0
    assert Image.open(tmp_path / "out" / "really_png.webp").format == "WEBP"
    assert cli(src, "-o", tmp_path / "o2").rc == 0
    assert Image.open(tmp_path / "o2" / "really_png.png").format == "PNG"


def row17_output_is_input(cli, tmp_path, stub, monkeypatch):
    folder = tmp_path / "photos"
    src = png(folder / "a.png")
    before = src.read_bytes()
    r = cli(src, "-o", folder, "--overwrite")  # same file
    assert r.rc == 1 and "is the input" in r.err
    monkeypatch.chdir(folder)
    r = cli("a.png", "-o", "./", "--overwrite")  # ./
    assert r.rc == 1 and "is the input" in r.err
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.png").symlink_to(src)  # symlink to the input
    r = cli(src, "-o", out, "--overwrite")
    assert r.rc == 1 and "is the input" in r.err
    assert src.read_bytes() == before and stub.calls == []


def row18_output_exists(cli, tmp_path, stub):
    src = png(tmp_path / "a.png")
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.png").write_bytes(b"earlier result")
    r = cli(src, "-o", out)
    assert r.rc == 0 and "0 written, 1 skipped" in r.out
    assert (out / "a.png").read_bytes() == b"earlier result" and stub.calls == []
    before = src.read_bytes()
    r = cli(src, "-o", out, "--overwrite")
    assert r.rc == 0 and u8(out / "a.png").shape == (24, 20, 3)
    assert src.read_bytes() == before


def row19_killed_mid_write(cli, tmp_path, stub, monkeypatch):
    src = png(tmp_path / "a.png")
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.png").write_bytes(b"previous")
    real_save = Image.Image.save

    def dying_save(self, fp, *a, **kw):
        fp.write(b"\x89PNG half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", dying_save)
    r = cli(src, "-o", out, "--overwrite")
    monkeypatch.setattr(Image.Image, "save", real_save)
    assert r.rc == 1 and "No space left on device" in r.err
    assert (out / "a.png").read_bytes() == b"previous"
    assert sorted(p.name for p in out.iterdir()) == ["a.png"]  # no temp file, no sidecar


def row20_bad_output_options(cli, tmp_path, stub):
    src = png(tmp_path / "a.png")
    r = cli(src, "-o", tmp_path / "new" / "deeper")  # missing folder: created
    assert r.rc == 0 and (tmp_path / "new" / "deeper" / "a.png").is_file()
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = cli(src, "-o", blocker / "out")  # unwritable: a file where a folder is needed
    assert r.rc == 1 and "cannot be created or written" in r.err and len(r.err.strip().splitlines()) == 1
    r = cli(src, "-o", tmp_path / "o3", "--format", "xyz")
    assert r.rc == 1 and "unknown format 'xyz'" in r.err
    rgba = png(tmp_path / "in" / "t.png", np.dstack([rand_u8((4, 4, 3)), rand_u8((4, 4))]))
    r = cli(rgba, "-o", tmp_path / "o4", "--format", "jpg")
    assert r.rc == 1 and "alpha channel that JPEG cannot store" in r.err
    r = cli(src, "-o", tmp_path / "o5", "--format", "jpg", "--bit-depth", 16)
    assert r.rc == 1 and "8 bits per channel" in r.err
    assert stub.calls == [(6, 5)]  # only the first, valid run computed anything


def row21_folder(cli, tmp_path, stub):
    d = tmp_path / "in"
    for name in ("a.jpg", "a.png", "фото 1.png", "with space.png", "sub/x.png"):
        png(d / name, rand_u8((3, 3, 3)), format="PNG")
    (d / "README.txt").write_text("notes")
    (d / "notes.json").write_text("{}")
    (d / "sub" / "loop").symlink_to(d, target_is_directory=True)
    r = cli(d, "-o", tmp_path / "out")
    assert r.rc == 0, r.err
    made = sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*.png"))
    assert made == ["a_jpg.png", "a_png.png", "sub/x.png", "with space.png", "фото 1.png"]


def row22_interrupt_and_oom(cli, tmp_path, stub, monkeypatch):
    d = tmp_path / "in"
    png(d / "a.png", rand_u8((3, 3, 3)))
    png(d / "b.png", rand_u8((4, 4, 3)))
    png(d / "c.png", rand_u8((5, 5, 3)))
    stub.fail_on["4x4"] = KeyboardInterrupt()
    r = cli(d, "-o", tmp_path / "out")
    assert r.rc == 130 and "interrupted; 1 written" in r.err
    assert u8(tmp_path / "out" / "a.png").shape == (12, 12, 3)  # the finished output is complete
    assert not (tmp_path / "out" / "b.png").exists() and no_temp_files(tmp_path)
    stub.fail_on["4x4"] = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20 GiB")
    r = cli(d, "-o", tmp_path / "out")
    assert r.rc == 1 and "b.png: out of memory" in r.err and "1 written, 1 skipped (exist), 1 failed" in r.out
    assert u8(tmp_path / "out" / "c.png").shape == (20, 20, 3) and no_temp_files(tmp_path)


ROWS = {name: fn for name, fn in globals().items() if name.startswith("row") and callable(fn)}


@pytest.mark.parametrize("row", sorted(ROWS))
def test_bad_input_row(
    row: str, cli, tmp_path: Path, stub: StubPipe, monkeypatch: pytest.MonkeyPatch
) -> None:
    fn = ROWS[row]
    kwargs = {"monkeypatch": monkeypatch} if "monkeypatch" in fn.__code__.co_varnames else {}
    fn(cli, tmp_path, stub, **kwargs)
    assert no_temp_files(tmp_path)


def test_all_rows_covered() -> None:
    assert len(ROWS) == 22


# ----------------------------------------------------------------------------------------------------------
# batch, sidecar, weights


def test_folder_run_in_two_orders_is_byte_identical(cli, tmp_path: Path, stub: StubPipe) -> None:
    stub.noise = 0.1  # seeded noise: a seed that drifted with the order would change the bytes
    files = [png(tmp_path / "in" / f"{c}.png", rand_u8((5, 4, 3), seed=i)) for i, c in enumerate("dcab")]
    assert cli(*files, "-o", tmp_path / "o1").rc == 0
    assert cli(*files[::-1], "-o", tmp_path / "o2").rc == 0
    for f in files:
        name = f.with_suffix(".png").name
        assert (tmp_path / "o1" / name).read_bytes() == (tmp_path / "o2" / name).read_bytes()
        s1, s2 = (json.loads((tmp_path / o / f.with_suffix(".json").name).read_text()) for o in ("o1", "o2"))
        assert {k: v for k, v in s1.items() if k not in ("output", "timings", "memory")} == {
            k: v for k, v in s2.items() if k not in ("output", "timings", "memory")
        }


def test_sidecar_and_from_json_round_trip(cli, tmp_path: Path, stub: StubPipe) -> None:
    stub.noise = 0.1
    src = png(tmp_path / "a.png")
    r = cli(
        src, "-o", tmp_path / "o1", "--seed", 7, "--steps", 3, "--tags", "dog, grass", "--prompt", "sunny"
    )
    assert r.rc == 0
    side = json.loads((tmp_path / "o1" / "a.json").read_text())
    assert side["input"] == str(src) and side["seed"] == 7 and side["tags"] == ["dog", "grass"]
    assert side["sampling"]["num_inference_steps"] == 3 and side["sampling"]["prompt"] == "sunny"
    assert side["prompt"] == "dog, grass, sunny,clean, high-resolution, 8k"
    assert {"torch", "numpy", "pillow", "seesr"} <= set(side["versions"])
    r = cli("--from-json", tmp_path / "o1" / "a.json", "-o", tmp_path / "o2")
    assert r.rc == 0
    assert (tmp_path / "o1" / "a.png").read_bytes() == (tmp_path / "o2" / "a.png").read_bytes()
    side2 = json.loads((tmp_path / "o2" / "a.json").read_text())
    assert side2["sampling"] == side["sampling"] and side2["tags"] == side["tags"]
    # an explicit flag overrides the sidecar
    assert cli("--from-json", tmp_path / "o1" / "a.json", "-o", tmp_path / "o3", "--seed", 8).rc == 0
    assert (tmp_path / "o3" / "a.png").read_bytes() != (tmp_path / "o1" / "a.png").read_bytes()
    bad = tmp_path / "bad.json"
    bad.write_text('{"sampling": {"num_inference_step": 3}}')
    r = cli("--from-json", bad, "-o", tmp_path / "o4")
    assert r.rc == 1 and "unknown key(s) ['num_inference_step']" in r.err


def test_presets_and_sample_times(cli, tmp_path: Path, stub: StubPipe) -> None:
    src = png(tmp_path / "a.png")
    assert cli(src, "-o", tmp_path / "t", "--preset", "turbo", "--sample-times", 2).rc == 0
    s0 = json.loads((tmp_path / "t" / "a_s00.json").read_text())
    s1 = json.loads((tmp_path / "t" / "a_s01.json").read_text())
    assert s0["sampling"]["num_inference_steps"] == 2 and s0["sampling"]["guidance_scale"] == 1.0
    assert s0["sampling"]["timestep_spacing"] == "trailing" and (s0["seed"], s1["seed"]) == (42, 43)
    assert (
        cli(src, "-o", tmp_path / "f", "--preset", "faithful", "--steps", 4, "--color-fix", "nofix").rc == 0
    )
    f = json.loads((tmp_path / "f" / "a.json").read_text())
    assert f["sampling"]["faithful"] and f["sampling"]["num_inference_steps"] == 4
    assert f["sampling"]["color_fix"] == "none" and f["tiling"]["latent_tile_overlap"] == 4


def test_no_weights_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.delenv("SEESR_WEIGHTS", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # the default folder ~/.cache/seesr/weights is empty
    src = png(tmp_path / "a.png")
    assert main(["upscale", str(src), "-o", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    default = tmp_path / "home" / ".cache" / "seesr" / "weights"
    # offline (tests run with HF_HUB_OFFLINE=1): one line saying what would be downloaded and how to do it
    assert err.startswith(f"seesr upscale: error: weights missing in {default} (") and err.count("\n") == 1
    assert "downloads are off (HF_HUB_OFFLINE=1)" in err and "seesr download" in err
    argv = ["upscale", str(src), "-o", str(tmp_path / "out"), "--no-download"]
    assert main(argv) == 1 and "downloads are off (--no-download)" in capsys.readouterr().err
    assert main(["upscale", str(src), "-o", str(tmp_path / "out"), "--sd2", "x"]) == 1
    assert "official weights incomplete: also pass --seesr" in capsys.readouterr().err
    monkeypatch.setenv("SEESR_WEIGHTS", str(tmp_path / "nowhere"))
    assert main(["upscale", str(src), "-o", str(tmp_path / "out")]) == 1
    assert f"weights missing in {tmp_path / 'nowhere'}" in capsys.readouterr().err


def test_subprocess_smoke(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    env.pop("SEESR_WEIGHTS", None)
    helped = subprocess.run(
        [sys.executable, "-m", "seesr", "upscale", "--help"], capture_output=True, text=True
    )
    assert (
        helped.returncode == 0 and "--from-json" in helped.stdout and "--max-output-pixels" in helped.stdout
    )
    bad = tmp_path / "x.png"
    bad.write_bytes(b"")
    r = subprocess.run(
        [sys.executable, "-m", "seesr", "upscale", str(bad), "-o", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        env=env,
    )
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert f"{bad}: empty file (0 bytes)" in r.stderr and "0 written, 0 skipped (exist), 1 failed" in r.stdout


def test_device_mistakes_are_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.delenv("SEESR_WEIGHTS", raising=False)
    src = png(tmp_path / "a.png")
    for device, message in [("gpu", "--device gpu: unknown device"), ("mps:0", "MPS is not available")]:
        rc = main(
            ["upscale", str(src), "-o", str(tmp_path / "o"), "--weights", str(tmp_path), "--device", device]
        )
        err = capsys.readouterr().err
        assert rc == 1 and message in err and len(err.strip().splitlines()) == 1, err


SIGTERM_SCRIPT = """
import sys, time, torch
import seesr.cli.upscale as up
from seesr.cli import main

class Slow:
    def __call__(self, image, *, sampling, tiling, tags=None, callback=None, show_progress=True):
        if image.shape[-1] == 4:  # the second image: wait to be killed
            print("busy", flush=True)
            time.sleep(60)
        return type("R", (), {"image": image.repeat_interleave(4, -1).repeat_interleave(4, -2),
                              "tags": [], "prompt": "", "settings": {}})()

up._load_pipeline = lambda args, run: Slow()
sys.exit(main(["upscale", sys.argv[1], "-o", sys.argv[2]]))
"""


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_sigterm_mid_batch_leaves_complete_outputs(tmp_path: Path) -> None:
    import signal

    png(tmp_path / "in" / "a.png", rand_u8((3, 3, 3)))
    png(tmp_path / "in" / "b.png", rand_u8((4, 4, 3)))
    proc = subprocess.Popen(
        [sys.executable, "-c", SIGTERM_SCRIPT, str(tmp_path / "in"), str(tmp_path / "out")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "busy"
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in err and "interrupted; 1 written" in err
    assert u8(tmp_path / "out" / "a.png").shape == (12, 12, 3)
    assert not (tmp_path / "out" / "b.png").exists() and no_temp_files(tmp_path)


@pytest.mark.slow
def test_real_tiny_pipeline_through_cli(tmp_path: Path, tiny_weights_dir: Path, capsys) -> None:
    """The CLI output equals a direct SeeSRPipeline call on the same file (tiny random weights)."""
    from seesr.config import SamplingConfig, TilingConfig
    from seesr.io import load_image
    from seesr.pipeline.pipeline import SeeSRPipeline

    ram = tiny_weights_dir / "ram-tiny"
    parts = {
        "sd2": tiny_weights_dir / "sd2-tiny",
        "seesr": tiny_weights_dir / "seesr-tiny",
        "ram": ram / "ram_tiny.pth",
        "dape": ram / "DAPE_tiny.pth",
        "dape_arch": ram / "arch.json",
    }
    src = tiny_weights_dir / "reference" / "lr" / "coffee_48x64.png"
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in parts.items()]
    rc = main(["upscale", str(src), "-o", str(tmp_path), "--steps", "2", "--process-size", "64", *flags])
    assert rc == 0, capsys.readouterr().err
    pipe = SeeSRPipeline.from_official(**parts, device="cpu", dtype=torch.float32)
    lr = torch.from_numpy(load_image(src).rgb).permute(2, 0, 1)[None]
    ref = pipe(lr, sampling=SamplingConfig(num_inference_steps=2, process_size=64), tiling=TilingConfig())
    want = np.round(ref.image[0].permute(1, 2, 0).numpy().clip(0, 1) * 255).astype(np.uint8)
    np.testing.assert_array_equal(u8(tmp_path / "coffee_48x64.png"), want)
    side = json.loads((tmp_path / "coffee_48x64.json").read_text())
    assert side["tags"] == ref.tags and side["prompt"] == ref.prompt


def test_scale_tiles_prompts_and_mpo(cli, tmp_path: Path, stub: StubPipe) -> None:
    src = png(tmp_path / "a.png", rand_u8((10, 7, 3)))
    r = cli(src, "-o", tmp_path / "o", "--scale", 2.5, "--tile-size", 512, "--save-prompts", "--prompt", "x")
    assert r.rc == 0 and u8(tmp_path / "o" / "a.png").shape == (25, 18, 3)  # round(10*2.5), round(7*2.5)
    side = json.loads((tmp_path / "o" / "a.json").read_text())
    assert side["tiling"]["latent_tile_size"] == 64 and side["sampling"]["upscale"] == 2.5
    assert (
        (tmp_path / "o" / "txt" / "a.txt").read_text()
        == side["prompt"]
        == "stub, x,clean, high-resolution, 8k"
    )
    assert cli(src, "-o", tmp_path / "bad", "--tile-size", 100).rc == 1
    # a camera MPO (primary image + preview) gives its first frame, with a warning
    mpo = tmp_path / "cam.mpo"
    frames = [Image.fromarray(np.full((8, 8, 3), c, np.uint8)) for c in ((200, 30, 30), (30, 30, 200))]
    frames[0].save(mpo, "MPO", save_all=True, append_images=frames[1:], quality=100)
    r = cli(mpo, "-o", tmp_path / "m", "--upscale", 1)
    assert r.rc == 0 and "using the primary image" in r.err
    assert abs(int(u8(tmp_path / "m" / "cam.png")[4, 4, 0]) - 200) <= 2


def test_foreign_import_warnings_are_quiet(tmp_path: Path) -> None:
    """bitsandbytes' import-time Hub-kernel warnings (it comes with pyiqa; seesr runs no 4-bit layer) are not
    shown to users of the CLI; our own loggers keep their level."""
    import logging

    assert main(["upscale", str(tmp_path / "missing.png"), "-o", str(tmp_path / "out")]) != 0
    for name in ("bitsandbytes", "kernels"):
        assert logging.getLogger(name).getEffectiveLevel() == logging.ERROR
        logging.getLogger(name).setLevel(logging.NOTSET)  # leave the process as it was
    assert logging.getLogger("seesr").level == logging.NOTSET  # ours are left alone
