"""Colour fix (spec §1.9, §9 item 22) against the official outputs in reference/color_fix.safetensors."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from seesr.pipeline.color_fix import (
    adain_color_fix,
    adain_float,
    apply_color_fix,
    to_uint8,
    wavelet_color_fix,
    wavelet_float,
    wavelet_lowpass,
)


@pytest.fixture(scope="module")
def ref(fixtures_dir):
    return load_file(fixtures_dir / "reference" / "color_fix.safetensors")


def _to_float(u8: torch.Tensor) -> torch.Tensor:
    # ToTensor: HWC uint8 -> (1, 3, H, W) float32 / 255
    return u8.permute(2, 0, 1)[None].float() / 255


def _to_hwc(x: torch.Tensor) -> torch.Tensor:
    return x[0].permute(1, 2, 0)


@pytest.mark.parametrize("pair", ["pair0", "pair1"])
@pytest.mark.parametrize("method", ["adain", "wavelet"])
def test_float_matches_official(ref, pair, method):
    """Unclamped float colour transfer within 1e-6 of the official functions."""
    target, source = _to_float(ref[f"{pair}/target_u8"]), _to_float(ref[f"{pair}/source_u8"])
    fn = adain_float if method == "adain" else wavelet_float
    out = fn(target, source)
    expected = ref[f"{pair}/{method}_float"]
    assert out.shape == expected.shape
    assert (out - expected).abs().max().item() <= 1e-6


@pytest.mark.parametrize("pair", ["pair0", "pair1"])
@pytest.mark.parametrize("method", ["adain", "wavelet"])
def test_uint8_truncation_exact(ref, pair, method):
    """Clamp + ``mul(255).byte()`` truncation reproduces the official PIL outputs byte for byte."""
    target, source = _to_float(ref[f"{pair}/target_u8"]), _to_float(ref[f"{pair}/source_u8"])
    out = apply_color_fix(target, source, method)
    assert out.min() >= 0 and out.max() <= 1
    u8 = _to_hwc(to_uint8(out, rounding="truncate"))
    expected = ref[f"{pair}/{method}_u8"]
    assert u8.dtype == torch.uint8
    assert torch.equal(u8, expected), f"{(u8.int() - expected.int()).abs().max()} max uint8 difference"


def test_rounding_differs_from_truncation():
    x = torch.tensor([0.0, 0.5 / 255, 1.6 / 255, 254.7 / 255, 1.0, 1.2, -0.1])
    assert to_uint8(x, rounding="truncate").tolist() == [0, 0, 1, 254, 255, 255, 0]
    # round-half-to-even like numpy's ``.round()`` in the official postprocess
    assert to_uint8(x, rounding="round").tolist() == [0, 0, 2, 255, 255, 255, 0]


def test_none_is_identity_and_adain_matches_reference_stats():
    g = torch.Generator().manual_seed(0)
    image = torch.rand(2, 3, 20, 24, generator=g)
    reference = (torch.rand(2, 3, 20, 24, generator=g) * 0.3 + 0.4).clamp(0, 1)
    assert torch.equal(apply_color_fix(image, reference, "none"), image)
    out = adain_color_fix(image, reference)
    # Reference is well inside [0, 1], so the clamp barely acts: channel means follow the reference.
    assert torch.allclose(out.mean(dim=(2, 3)), reference.mean(dim=(2, 3)), atol=2e-3)
    # the wavelet fix keeps the low frequencies of the reference: a constant reference gives ~its value
    flat = torch.full_like(image, 0.5)
    low = wavelet_color_fix(flat, reference)
    assert (low.mean(dim=(2, 3)) - reference.mean(dim=(2, 3))).abs().max() < 0.05


def test_half_precision_input_keeps_dtype():
    g = torch.Generator().manual_seed(1)
    image = torch.rand(1, 3, 16, 16, generator=g)
    reference = torch.rand(1, 3, 16, 16, generator=g)
    out16 = adain_color_fix(image.half(), reference.half())
    assert out16.dtype == torch.float16
    assert (out16.float() - adain_color_fix(image, reference)).abs().max() < 2e-3


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"method": "sharpen"}, "adain"),
        ({"reference": torch.zeros(1, 3, 8, 9)}, "reference shape"),
        ({"image": torch.zeros(1, 4, 8, 8), "reference": torch.zeros(1, 4, 8, 8)}, r"\(B, 3, H, W\)"),
    ],
)
def test_bad_arguments_raise_value_error(kwargs, match):
    args = {"image": torch.zeros(1, 3, 8, 8), "reference": torch.zeros(1, 3, 8, 8), "method": "adain"}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        apply_color_fix(**args)


def test_to_uint8_bad_mode():
    with pytest.raises(ValueError, match="rounding"):
        to_uint8(torch.zeros(2), rounding="floor")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="floating"):
        to_uint8(torch.zeros(2, dtype=torch.uint8), rounding="round")


def test_wavelet_lowpass_keeps_constants_and_removes_fine_detail():
    flat = torch.full((1, 3, 40, 56), 0.3)
    assert torch.allclose(wavelet_lowpass(flat), flat, atol=1e-7)
    # a one-pixel checkerboard is fine detail: the coarse residual is ~its mean (replicated edges leave a trace)
    checker = (
        (torch.arange(40)[:, None] + torch.arange(56)[None, :]).remainder(2).float().expand(1, 3, 40, 56)
    )
    assert (wavelet_lowpass(checker) - 0.5).abs().max() < 0.02
    g = torch.Generator().manual_seed(2)
    image = torch.rand(1, 3, 40, 56, generator=g)
    # the image's own coarse residual gives the image back; a flat reference moves its mean to the reference's
    assert (wavelet_float(image, image) - image).abs().max() < 1e-6
    out = wavelet_float(image, flat)
    assert (out.mean(dim=(2, 3)) - 0.3).abs().max() < 0.02
