"""Tiled latent diffusion (spec §1.7, §9 items 8, 9) against reference/tiling.json and pipeline_B.json."""

from __future__ import annotations

import functools
import json

import pytest
import torch
import torch.nn.functional as F

from seesr.pipeline.tiling import TileBox, gaussian_weights, needs_tiling, tile_boxes, tiled_apply


@pytest.fixture(scope="module")
def tiling_ref(fixtures_dir):
    return json.loads((fixtures_dir / "reference" / "tiling.json").read_text())


@pytest.mark.parametrize("size", ["16", "32", "96"])
def test_faithful_gaussian_weights_bit_equal(tiling_ref, size):
    """Faithful weights = np.outer(y_probs, x_probs) of the official code, bit for bit in float64."""
    entry = tiling_ref["gaussian_weights"][size]
    t = int(size)
    w = gaussian_weights(t, t, faithful=True, dtype=torch.float64)
    expected = torch.outer(
        torch.tensor(entry["y_probs"], dtype=torch.float64),
        torch.tensor(entry["x_probs"], dtype=torch.float64),
    )
    assert w.dtype == torch.float64 and w.shape == (t, t)
    assert torch.equal(w, expected)
    if "weights_2d_official" in entry:
        assert torch.equal(w, torch.tensor(entry["weights_2d_official"], dtype=torch.float64))


def test_default_gaussian_weights_symmetric():
    w = gaussian_weights(16, 12, faithful=False, dtype=torch.float64)
    assert torch.equal(w, w.flip(0)) and torch.equal(w, w.flip(1))
    faithful = gaussian_weights(16, 16, faithful=True, dtype=torch.float64)
    assert not torch.equal(faithful, faithful.flip(0))  # official y centre T/2 is off by half a pixel


def test_tile_origins_match_official(tiling_ref):
    """Every latent size of tiling.json: tiling decision, effective tile and origins in loop order."""
    for case in tiling_ref["tile_origins"]:
        h, w = case["latent_hw"]
        tile, overlap = case["latent_tiled_size"], case["latent_tiled_overlap"]
        tiled = needs_tiling(h, w, tile, faithful=True)
        assert tiled == case["tiled"], case
        if not tiled:
            continue
        boxes = tile_boxes(h, w, tile, overlap, faithful=True)
        assert [[b.y0, b.x0] for b in boxes] == case["origins_yx_in_loop_order"], case
        t = case["effective_tile"]
        assert all(b.height == t and b.width == t for b in boxes)


def test_tile_origins_match_pipeline_b(fixtures_dir):
    info = json.loads((fixtures_dir / "reference" / "pipeline_B.json").read_text())
    boxes = tile_boxes(28, 40, 16, 4, faithful=True)
    for per_step in info["latent_tile_origins_yx_per_step"]:
        assert [[b.y0, b.x0] for b in boxes] == per_step


def test_default_rule_tiles_long_thin_latents():
    # 64x140 > 96 on one side: the official area rule does not tile (spec §9.9), the default does.
    assert not needs_tiling(64, 140, 96, faithful=True)
    assert needs_tiling(64, 140, 96, faithful=False)
    assert not needs_tiling(96, 96, 96, faithful=False)
    boxes = tile_boxes(64, 140, 96, 32, faithful=False)
    assert {(b.height, b.width) for b in boxes} == {(64, 96)}
    assert [b.x0 for b in boxes] == [0, 44]


@pytest.mark.parametrize(
    ("h", "w", "tile", "overlap"), [(100, 260, 96, 32), (37, 53, 16, 5), (128, 128, 96, 4)]
)
def test_default_boxes_cover_and_keep_overlap(h, w, tile, overlap):
    boxes = tile_boxes(h, w, tile, overlap, faithful=False)
    cover = torch.zeros(h, w, dtype=torch.int32)
    for b in boxes:
        assert 0 <= b.y0 < b.y1 <= h and 0 <= b.x0 < b.x1 <= w
        cover[b.y0 : b.y1, b.x0 : b.x1] += 1
    assert bool((cover >= 1).all())
    xs = sorted({(b.x0, b.x1) for b in boxes})
    for (_, a1), (b0, _) in zip(xs, xs[1:]):
        assert a1 - b0 >= overlap  # neighbouring tiles overlap by at least the requested amount


def test_bad_overlap_raises():
    with pytest.raises(ValueError, match="overlap"):
        tile_boxes(64, 64, 16, 16, faithful=False)
    with pytest.raises(ValueError, match="positive"):
        needs_tiling(0, 5, 16, faithful=True)


def _crop(x: torch.Tensor, box: TileBox) -> torch.Tensor:
    return x[..., box.y0 : box.y1, box.x0 : box.x1]


@pytest.mark.parametrize("faithful", [True, False])
def test_linear_stub_tiled_equals_untiled(faithful):
    """A linear, position-independent denoiser stub gives the same stitched result as the untiled call."""
    g = torch.Generator().manual_seed(0)
    latents = torch.randn(2, 4, 28, 40, generator=g)
    cond = torch.rand(2, 3, 28 * 8, 40 * 8, generator=g)

    def stub(lat: torch.Tensor, img: torch.Tensor) -> torch.Tensor:
        # uses both the latent crop and the x8 condition crop, pointwise -> position independent
        return 2 * lat + 1 + F.avg_pool2d(img, 8).mean(dim=1, keepdim=True)

    def fn(box: TileBox) -> torch.Tensor:
        img = cond[..., 8 * box.y0 : 8 * box.y1, 8 * box.x0 : 8 * box.x1]
        return stub(_crop(latents, box), img)

    boxes = tile_boxes(28, 40, 16, 4, faithful=faithful)
    assert len(boxes) == 6
    weights = functools.partial(
        gaussian_weights, faithful=faithful, dtype=torch.float64 if faithful else torch.float32
    )
    out = tiled_apply(fn, tuple(latents.shape), boxes, weights, out_dtype=torch.float32, device="cpu")
    ref = stub(latents, cond)
    assert out.dtype == torch.float32
    assert (out - ref).abs().max().item() <= 1e-6


def test_faithful_accumulation_matches_official_float32_buffers():
    """Products in float64, accumulated into float32 buffers, then divided in float32 (official stitching)."""
    g = torch.Generator().manual_seed(3)
    lat = torch.randn(2, 4, 28, 40, generator=g)
    boxes = tile_boxes(28, 40, 16, 4, faithful=True)
    outs = {b: torch.tanh(_crop(lat, b) * (1 + i)) for i, b in enumerate(boxes)}
    weights = functools.partial(gaussian_weights, faithful=True, dtype=torch.float64)
    got = tiled_apply(
        outs.__getitem__, tuple(lat.shape), boxes, weights, out_dtype=torch.float32, device="cpu"
    )
    # the official loop, written out
    w = gaussian_weights(16, 16, faithful=True, dtype=torch.float64)[None, None].repeat(1, 4, 1, 1)
    noise_pred = torch.zeros(lat.shape)
    contributors = torch.zeros(lat.shape)
    for b in boxes:
        noise_pred[..., b.y0 : b.y1, b.x0 : b.x1] += outs[b] * w
        contributors[..., b.y0 : b.y1, b.x0 : b.x1] += w
    noise_pred /= contributors
    assert torch.equal(got, noise_pred)


def test_tiled_apply_rejects_wrong_shape_and_gaps():
    boxes = [TileBox(0, 8, 0, 8)]
    weights = functools.partial(gaussian_weights, faithful=False)
    with pytest.raises(ValueError, match="expected"):
        tiled_apply(
            lambda b: torch.zeros(1, 4, 8, 7),
            (1, 4, 8, 8),
            boxes,
            weights,
            out_dtype=torch.float32,
            device=None,
        )
    with pytest.raises(ValueError, match="cover"):
        tiled_apply(
            lambda b: torch.zeros(1, 4, 8, 8),
            (1, 4, 8, 12),
            boxes,
            weights,
            out_dtype=torch.float32,
            device=None,
        )


# ---------------------------------------------------------------------------------------------------------------
# Seam metric: a context-dependent (non-linear, zero-padded convolution) stub on a smooth input.


def _seam_mask(length: int, spans: set[tuple[int, int]]) -> torch.Tensor:
    """True for neighbour pairs (i, i+1) inside an overlap or across a tile border along one axis."""
    cover = [frozenset(s for s in spans if s[0] <= i < s[1]) for i in range(length)]
    return torch.tensor([cover[i] != cover[i + 1] or len(cover[i]) > 1 for i in range(length - 1)])


def seam_ratio(out: torch.Tensor, boxes: list[TileBox]) -> float:
    """Max |jump| between neighbouring pixels in overlap/border zones / max |jump| where a single tile rules."""
    dx = (out[..., :, 1:] - out[..., :, :-1]).abs().amax(dim=(0, 1, 2))  # jump between columns c and c+1
    dy = (out[..., 1:, :] - out[..., :-1, :]).abs().amax(dim=(0, 1, 3))
    seam_x = _seam_mask(out.shape[-1], {(b.x0, b.x1) for b in boxes})
    seam_y = _seam_mask(out.shape[-2], {(b.y0, b.y1) for b in boxes})
    seam = max(dx[seam_x].max().item(), dy[seam_y].max().item())
    inside = max(dx[~seam_x].max().item(), dy[~seam_y].max().item())
    return seam / inside


def smooth_latent(h: int = 60, w: int = 84) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    base = torch.sin(3 * xx + 1) * torch.cos(2 * yy) + 0.5 * xx * yy
    return torch.stack([base, base * 0.5 + 0.1, -base, base**2])[None]


def conv_stub(lat: torch.Tensor) -> torch.Tensor:
    """5x5 box filter with zero padding + tanh: local context and wrong values near tile edges, like a CNN."""
    kernel = torch.full((lat.shape[1], 1, 5, 5), 1 / 25, dtype=lat.dtype)
    return torch.tanh(2 * F.conv2d(lat, kernel, padding=2, groups=lat.shape[1]))


@pytest.mark.parametrize(
    ("faithful", "overlap", "max_diff"),
    [(True, 4, 0.07), (False, 4, 0.035), (False, 8, 1e-3)],
)
def test_seam_metric_gaussian_blending(faithful, overlap, max_diff):
    """Seam ratio on a smooth 60x84 latent, tile 24, with ``conv_stub``.

    Measured (ratio = max jump in overlap/border zones / max jump elsewhere): untiled 0.518; Gaussian-blended
    0.555 at overlap 4 (faithful and default) and 0.518 at overlap 8 (seam-free); a hard last-writer stitch of
    the same tiles 2.10. max|tiled - untiled|: faithful/4 0.062, default/4 0.030 (symmetric weights halve it),
    default/8 4.0e-4.
    """
    lat = smooth_latent()
    boxes = tile_boxes(60, 84, 24, overlap, faithful=faithful)
    weights = functools.partial(
        gaussian_weights, faithful=faithful, dtype=torch.float64 if faithful else torch.float32
    )
    out = tiled_apply(
        lambda b: conv_stub(_crop(lat, b)),
        tuple(lat.shape),
        boxes,
        weights,
        out_dtype=torch.float32,
        device="cpu",
    )
    untiled = conv_stub(lat)
    hard = torch.zeros_like(lat)
    for b in boxes:
        hard[..., b.y0 : b.y1, b.x0 : b.x1] = conv_stub(_crop(lat, b))
    base = seam_ratio(untiled, boxes)
    assert seam_ratio(hard, boxes) > 3 * base  # the metric sees a real seam
    assert seam_ratio(out, boxes) < 1.1 * base
    assert (out - untiled).abs().max().item() < max_diff
