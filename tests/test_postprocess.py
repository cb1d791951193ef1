"""The banded post-decode path (issue 13 item 4): same bytes as the whole-array ``postprocess``, bounded memory."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image

from seesr.pipeline import color_fix, sizing
from seesr.pipeline import postprocess as banded
from seesr.pipeline.pipeline import postprocess
from seesr.pipeline.resample_rows import RowResampler


def _inputs(h: int, w: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    decoded = torch.rand(1, 3, h, w, generator=g) * 2.2 - 1.1  # the decoder overshoots [-1, 1] a little
    lr_up = torch.rand(1, 3, h, w, generator=g) * 0.6 + 0.2
    return decoded, lr_up


@pytest.mark.parametrize("method", ["adain", "wavelet", "none"])
@pytest.mark.parametrize("quantize", [True, False])
@pytest.mark.parametrize("grow", [0, 3, -1])  # same size, a few pixels larger (the /8 floor undone), quarter
def test_bands_equal_the_whole_image(method, quantize, grow):
    h, w = 200, 168
    decoded, lr_up = _inputs(h, w)
    target = (w // 4, h // 4) if grow < 0 else (w + grow, h + grow)
    codes = torch.round(lr_up * 255).to(torch.uint8)
    reference = (codes.float() / 255) if quantize else lr_up
    _, whole = postprocess(decoded, reference, method, target, quantize=quantize)
    for rows in (7, 40):  # many bands, each needing halo rows from its neighbours
        out = banded.finish_image(
            decoded, codes if quantize else lr_up, method, target, quantize=quantize, rows=rows
        )
        assert out.shape == whole.shape and out.dtype == torch.float32
        if quantize:
            assert torch.equal(out, whole), (rows, (out - whole).abs().max())
        else:
            assert (out - whole).abs().max() <= 1e-6


@pytest.mark.parametrize("out_dtype", [torch.uint8, torch.uint16])
def test_integer_output_is_what_the_writer_makes_of_the_float_image(out_dtype):
    from seesr.io.writing import _quantise

    decoded, lr_up = _inputs(64, 48, seed=1)
    for quantize in (True, False):
        lr = sizing.as_unit_float(torch.round(lr_up * 255).to(torch.uint8)) if quantize else lr_up
        as_float = banded.finish_image(decoded, lr, "wavelet", (50, 67), quantize=quantize, rows=9)
        codes = banded.finish_image(
            decoded, lr, "wavelet", (50, 67), quantize=quantize, rows=9, out_dtype=out_dtype
        )
        bits = 8 if out_dtype == torch.uint8 else 16
        expected = _quantise(as_float[0].permute(1, 2, 0).numpy(), bits)
        assert codes.dtype == out_dtype and np.array_equal(codes[0].permute(1, 2, 0).numpy(), expected)


def test_row_resampler_matches_pillow_byte_for_byte():
    rng = np.random.default_rng(0)
    for (h, w), (oh, ow) in [((47, 61), (40, 56)), ((64, 64), (16, 16)), ((33, 45), (203, 300))]:
        u8 = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        f32 = rng.random((h, w, 3), dtype=np.float32)
        want_u8 = np.asarray(Image.fromarray(u8).resize((ow, oh), Image.BICUBIC))
        want_f32 = np.stack(
            [
                np.asarray(Image.fromarray(np.ascontiguousarray(f32[..., c])).resize((ow, oh)))
                for c in range(3)
            ],
            axis=-1,
        )
        rs = RowResampler((h, w), (oh, ow))
        got_u8, got_f32 = np.zeros_like(want_u8), np.zeros_like(want_f32)
        for y0 in range(0, oh, 5):
            y1 = min(oh, y0 + 5)
            r0, r1 = rs.source_rows(y0, y1)
            got_u8[y0:y1] = rs.band(u8[r0:r1], r0, y0, y1)
            got_f32[y0:y1] = rs.band(f32[r0:r1], r0, y0, y1)
        assert np.array_equal(got_u8, want_u8) and np.array_equal(got_f32, want_f32)


def test_wavelet_band_equals_the_whole_lowpass():
    x = torch.rand(1, 3, 90, 40, generator=torch.Generator().manual_seed(3))
    whole = color_fix.wavelet_lowpass(x)
    halo = color_fix.WAVELET_HALO
    assert halo == 31
    for r0, r1 in [(0, 10), (40, 50), (80, 90), (20, 70)]:
        a, b = max(0, r0 - halo), min(90, r1 + halo)
        band = color_fix.wavelet_lowpass_band(x[..., a:b, :], top=a == 0, bottom=b == 90)
        first = a if a == 0 else a + halo
        assert torch.equal(band[..., r0 - first : r1 - first, :], whole[..., r0:r1, :])


def test_uint8_stats_are_exact_and_band_independent():
    codes = torch.randint(
        0, 256, (1, 3, 70, 50), generator=torch.Generator().manual_seed(4), dtype=torch.uint8
    )
    whole = color_fix.uint8_stats(color_fix.uint8_histogram(codes))
    split = color_fix.uint8_stats(
        color_fix.uint8_histogram(codes[..., :13, :]) + color_fix.uint8_histogram(codes[..., 13:, :])
    )
    assert all(torch.equal(a, b) for a, b in zip(whole, split))
    x = (codes.double() / 255).reshape(3, -1)  # float64 reference: within float32 rounding
    assert torch.allclose(whole[0].reshape(3).double(), x.mean(dim=1), rtol=1e-7, atol=0)
    std = (x.var(dim=1) + color_fix.ADAIN_EPS).sqrt()
    assert torch.allclose(whole[1].reshape(3).double(), std, rtol=3e-7, atol=0)


def test_prepare_condition_holds_the_exact_codes():
    lr = torch.rand(1, 3, 30, 21, generator=torch.Generator().manual_seed(5))
    lr = torch.round(lr * 255) / 255
    for upscale, process_size in ((4, 512), (4, 64), (3.3, 64), (3.3, 8)):
        plan = sizing.plan_sizes((21, 30), upscale, process_size)
        codes = sizing.prepare_condition(lr, plan, quantize=True)
        assert codes.dtype == torch.uint8 and codes.is_contiguous()
        assert torch.equal(sizing.as_unit_float(codes), sizing.prepare_image(lr, plan, quantize=True))
        # large outputs are resized in bands of rows (each step, or only the last): the same bytes
        for banded_from in (0, 6500, 30000):
            in_bands = sizing.prepare_condition(lr, plan, quantize=True, banded_from=banded_from)
            assert in_bands.is_contiguous() and torch.equal(in_bands, codes), (
                upscale,
                process_size,
                banded_from,
            )


def test_bands_have_bounded_height(monkeypatch):
    """Every band of a tall image reads at most ``rows`` + resize taps + the wavelet halo source rows."""
    seen: list[int] = []
    real = banded._fixed_rows

    def spy(decoded, lr_up, method, r0, r1, **kw):
        seen.append(r1 - r0)
        return real(decoded, lr_up, method, r0, r1, **kw)

    monkeypatch.setattr(banded, "_fixed_rows", spy)
    decoded, lr_up = _inputs(400, 24)
    banded.finish_image(decoded, lr_up, "wavelet", (25, 403), quantize=False, rows=16)
    assert len(seen) == -(-403 // 16) and max(seen) <= 16 + 4


# peak RSS of one call at a moderate size, in a fresh interpreter (tracemalloc does not see tensors)
_RSS_SCRIPT = textwrap.dedent(
    """
    import sys, torch
    from seesr.pipeline.postprocess import finish_image
    from seesr.pipeline.pipeline import postprocess

    def status(key):
        for line in open("/proc/self/status"):
            if line.startswith(key):
                return int(line.split()[1]) * 1024

    h, w = 2048, 2048
    decoded = torch.rand(1, 3, h, w)
    codes = torch.randint(0, 256, (1, 3, h, w), dtype=torch.uint8)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak (VmHWM) to the current RSS
    before = status("VmRSS")
    if sys.argv[1] == "banded":
        finish_image(decoded, codes, sys.argv[2], (w + 4, h + 4), quantize=True, rows=64, out_dtype=torch.uint8)
    else:
        postprocess(decoded, codes, sys.argv[2], (w + 4, h + 4), quantize=True)
    print((status("VmHWM") - before) / (12 * h * w))
    """
)


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux /proc")
@pytest.mark.parametrize("method", ["adain", "wavelet"])
def test_banded_path_holds_one_uint8_image_beyond_its_inputs(method):
    """Peak memory above the inputs, in units of one float32 RGB image (4 Mpx: 48 MiB): the uint8 result is a
    quarter unit and a 64-row band's temporaries about one; the whole-array path holds several float32 copies."""

    # a fixed mmap threshold: glibc's sliding one keeps freed band buffers resident, which blurs the measurement
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}

    def extra(kind: str) -> float:
        argv = [sys.executable, "-c", _RSS_SCRIPT, kind, method]
        done = subprocess.run(argv, capture_output=True, text=True, check=True, env=env)
        return float(done.stdout.split()[-1])

    banded_extra, whole_extra = extra("banded"), extra("whole")
    # measured: banded 0.6 (adain) / 1.5 (wavelet: im2col of its dilated convolutions); whole 5.9 / 16.4
    assert banded_extra < 2.0 and whole_extra > 4.0, (banded_extra, whole_extra)


def test_job_writes_the_same_pixels_from_codes_as_from_floats(tmp_path, fixtures_dir):
    """upscale_image asks the pipeline for the written codes (no full-size float copy); the files hold the same
    pixels as when the pipeline returns floats (a wrapper without ``output_dtype``), 8/16-bit, grey, alpha."""
    from seesr.config import SamplingConfig, TilingConfig
    from seesr.io import load_image, save_image
    from seesr.run.job import OutputTarget, upscale_image
    from tests.tiny_pipeline import build_tiny_pipeline

    pipe = build_tiny_pipeline(fixtures_dir)

    class FloatOnly:  # the call contract of a pipeline that predates output_dtype
        def __call__(self, image, *, sampling, tiling, tags=None, callback=None, show_progress=True):
            return pipe(image, sampling=sampling, tiling=tiling, tags=tags, show_progress=show_progress)

    rng = np.random.default_rng(6)
    rgb = rng.random((20, 28, 3), dtype=np.float32)
    grey = np.repeat(rgb[..., :1], 3, axis=2)
    alpha = rng.random((20, 28), dtype=np.float32)
    sources = {
        "rgb8.png": (rgb, None, 8),
        "grey8.png": (grey, None, 8),
        "rgba8.png": (rgb, alpha, 8),
        "rgb16.png": (rgb, None, 16),
        "grey16.png": (grey, None, 16),
    }
    sampling = SamplingConfig(num_inference_steps=1, process_size=64, color_fix="wavelet")
    for name, (pixels, a, bits) in sources.items():
        save_image(tmp_path / name, pixels, alpha=a, bit_depth=bits)
        image = load_image(tmp_path / name)
        for out_bits in (8, 16):
            written = []
            for which, runner in (("codes", pipe), ("floats", FloatOnly())):
                target = OutputTarget(
                    image=tmp_path / which / f"{out_bits}_{name}",
                    sidecar=tmp_path / which / f"{out_bits}_{name}.json",
                    bit_depth=out_bits,
                )
                job = upscale_image(
                    runner, image, target, sampling=sampling, tiling=TilingConfig(), tags=["x"]
                )
                written.append((load_image(target.image), job.sr.dtype))
            (codes, codes_dtype), (floats, floats_dtype) = written
            assert floats_dtype == np.float32
            if not (name.startswith("grey") and bits == 16):
                assert codes_dtype == (np.uint8 if out_bits == 8 else np.uint16), (name, out_bits)
            assert np.array_equal(codes.rgb, floats.rgb), (name, out_bits)
            assert (codes.alpha is None) == (a is None)
            if a is not None:
                assert np.array_equal(codes.alpha, floats.alpha)


@pytest.mark.parametrize("method", ["adain", "wavelet", "none"])
def test_finishing_the_decoder_codes_equals_finishing_the_float_output(method):
    """On the 8-bit chain the decoder hands over its output's uint8 codes (``pipeline_codes``, a quarter of the
    float bytes): the finished image is the same, bytes and float values alike."""
    decoded, lr_up = _inputs(96, 80, seed=3)
    lr = torch.round(lr_up * 255).to(torch.uint8)
    codes = banded.pipeline_codes(decoded)
    assert codes.dtype == torch.uint8
    for target in ((80, 96), (123, 147)):
        for out_dtype in (torch.float32, torch.uint8):
            want = banded.finish_image(
                decoded, lr, method, target, quantize=True, rows=11, out_dtype=out_dtype
            )
            got = banded.finish_image(codes, lr, method, target, quantize=True, rows=11, out_dtype=out_dtype)
            assert torch.equal(got, want), (method, target, out_dtype)
    with pytest.raises(ValueError, match="8-bit chain"):
        banded.finish_image(codes, lr_up, method, (80, 96), quantize=False)


@pytest.mark.parametrize("method", ["adain", "none"])
def test_per_pixel_fixes_overwrite_the_decoder_codes(method):
    """At the output size a per-pixel fix (AdaIN's table, none) writes the result over the decoder's codes when
    allowed: the same bytes as the banded path, in the same memory (no second full-size array). AdaIN may get
    the condition image's statistics instead of the image (the pipeline frees it before decoding)."""
    decoded, lr_up = _inputs(96, 80, seed=5)
    lr = torch.round(lr_up * 255).to(torch.uint8)
    codes = banded.pipeline_codes(decoded).contiguous(memory_format=torch.channels_last)
    want = banded.finish_image(codes, lr, method, (80, 96), quantize=True, rows=11, out_dtype=torch.uint8)
    reference = (
        banded.reference_stats(lr, quantize=True, target_wh=(80, 96), rows=11) if method == "adain" else None
    )
    mine = codes.clone(memory_format=torch.channels_last)
    got = banded.finish_image(
        mine, reference, method, (80, 96), quantize=True, rows=11, out_dtype=torch.uint8, overwrite=True
    )
    assert torch.equal(got, want)
    assert got.data_ptr() == mine.data_ptr()
    if method == "adain":
        assert not torch.equal(mine, codes)  # it was overwritten: the fix changes codes
    # a resize, a float result or a contiguous (C, H, W) array: a new result, the input left alone
    for target, out_dtype, src in (
        ((81, 97), torch.uint8, codes.clone(memory_format=torch.channels_last)),
        ((80, 96), torch.float32, codes.clone(memory_format=torch.channels_last)),
        ((80, 96), torch.uint8, codes.contiguous()),
    ):
        before = src.clone()
        out = banded.finish_image(
            src, reference, method, target, quantize=True, rows=11, out_dtype=out_dtype, overwrite=True
        )
        expected = banded.finish_image(codes, lr, method, target, quantize=True, rows=11, out_dtype=out_dtype)
        assert torch.equal(out, expected) and torch.equal(src, before) and out.data_ptr() != src.data_ptr()


def test_reference_statistics_replace_the_condition_image_for_adain_only():
    """On the float chain too the statistics give the same result; the fixes that read the image refuse them,
    and a fix that needs a reference refuses none, in one line."""
    decoded, lr_up = _inputs(64, 48, seed=6)
    stats = banded.reference_stats(lr_up, quantize=False, target_wh=(50, 70))
    want = banded.finish_image(decoded, lr_up, "adain", (50, 70), quantize=False)
    assert torch.equal(banded.finish_image(decoded, stats, "adain", (50, 70), quantize=False), want)
    with pytest.raises(ValueError, match="condition image itself"):
        banded.finish_image(decoded, stats, "wavelet", (50, 70), quantize=False)
    with pytest.raises(ValueError, match="needs the condition image"):
        banded.finish_image(decoded, None, "adain", (50, 70), quantize=False)
