"""Bounded-memory tiled VAE (issue 13 item 1): a fixed number of live tiles whatever the grid, exact output."""

from __future__ import annotations

import weakref

import pytest
import torch
from torch import nn

from seesr.config import SamplingConfig, TilingConfig
from seesr.pipeline.vae_bounded import LIVE_TILES, sample_tiles
from seesr.pipeline.vae_tiling import mode_kwargs, split_tiles, tiled_decode, tiled_encode
from tests.tiny_pipeline import build_tiny_pipeline, load_lr


@pytest.fixture(scope="module")
def vae(fixtures_dir):
    from diffusers import AutoencoderKL

    return AutoencoderKL.from_pretrained(fixtures_dir / "sd2-tiny", subfolder="vae").eval()


class LiveConvOutputs:
    """Independent of the executor's own counter: the most conv outputs alive at once (weak references).

    Every tile kept alive between GroupNorm barriers holds at least one conv output, so in the exact mode this
    grows with the number of tiles; in the bounded mode it must not.
    """

    def __init__(self, net: nn.Module) -> None:
        self.refs: list[weakref.ref] = []
        self.peak = 0
        self.handles = [
            m.register_forward_hook(self._hook) for m in net.modules() if isinstance(m, nn.Conv2d)
        ]

    def _hook(self, module: nn.Module, args: object, out: torch.Tensor) -> None:
        self.refs = [r for r in self.refs if r() is not None]
        self.refs.append(weakref.ref(out))
        self.peak = max(self.peak, len(self.refs))

    def close(self) -> None:
        for h in self.handles:
            h.remove()


def _live_peak(fn) -> tuple[int, int, torch.Tensor]:
    """(executor's live-tile peak, live conv outputs peak, output) of one call."""
    LIVE_TILES.reset()
    out = fn()
    return LIVE_TILES.peak, LIVE_TILES.tiles_run, out


def _micro_vae():
    """Random x2 VAE with few GroupNorms: keeps the many-tile recomputation below fast."""
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    return AutoencoderKL(
        block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        layers_per_block=1,
        norm_num_groups=4,
        latent_channels=4,
    ).eval()


def test_bounded_holds_a_fixed_number_of_tiles_whatever_the_grid():
    vae = _micro_vae()
    g = torch.Generator().manual_seed(0)
    peaks: dict[str, list[int]] = {"recompute": [], "sampled": []}
    conv_bounded: list[int] = []
    conv_exact: list[int] = []
    for hw, n_expected in (((12, 12), 4), ((16, 16), 9)):  # 2x2 and 3x3 tiles of 4 latent px (pad 2)
        z = torch.randn(1, 4, *hw, generator=g)
        n_tiles = len(split_tiles(*hw, 4, 2, is_decoder=True, scale=2))
        assert n_tiles == n_expected
        counter = LiveConvOutputs(vae.decoder)
        with torch.no_grad():
            exact = tiled_decode(vae.decoder, z, 4, pad=2)
        conv_exact.append(counter.peak)
        counter.peak = 0
        for method in ("recompute", "sampled"):
            peak, run, bounded = _live_peak(
                lambda z=z, m=method: tiled_decode(
                    vae.decoder, z, 4, pad=2, mode="bounded", stats_method=m, live_tiles=2
                )
            )
            peaks[method].append(peak)
            assert run >= n_tiles  # every tile went through the executor
            assert bounded.shape == exact.shape
            if method == "recompute":
                assert torch.equal(bounded, exact)  # the exact statistics: bit-identical output
        conv_bounded.append(counter.peak)
        counter.close()
    assert peaks == {"recompute": [1, 1], "sampled": [2, 2]}
    # the independent count: exact mode grows with the grid (4 -> 9 tiles), bounded mode does not
    assert conv_exact[1] >= conv_exact[0] + 5
    assert conv_bounded[1] == conv_bounded[0] < conv_exact[0]


def test_spill_is_bit_identical_with_one_tile_in_memory_and_cleans_up(tmp_path, monkeypatch):
    from seesr.pipeline import vae_spill

    monkeypatch.setenv("SEESR_SPILL_DIR", str(tmp_path / "spill"))
    made: list[vae_spill.TileSpill] = []
    original_enter = vae_spill.TileSpill.__enter__

    def record(self):
        made.append(self)
        return original_enter(self)

    monkeypatch.setattr(vae_spill.TileSpill, "__enter__", record)
    vae = _micro_vae()
    g = torch.Generator().manual_seed(0)
    conv_spill: list[int] = []
    for hw in ((12, 12), (16, 16)):  # 4 and 9 tiles
        z = torch.randn(1, 4, *hw, generator=g)
        with torch.no_grad():
            exact = tiled_decode(vae.decoder, z, 4, pad=2)
        counter = LiveConvOutputs(vae.decoder)
        with torch.no_grad():
            spilled = tiled_decode(
                vae.decoder, z, 4, pad=2, mode="bounded", stats_method="spill", live_tiles=1
            )
        counter.close()
        conv_spill.append(counter.peak)
        assert torch.equal(spilled, exact)
        spill = made[-1]
        # every tile went to disk and came back; the files held about one full-resolution state, then nothing
        assert spill.bytes_written > 0 and spill.bytes_on_disk == 0
        assert spill.peak_bytes < spill.bytes_written
        assert list((tmp_path / "spill").iterdir()) == []  # the folder is removed
    assert conv_spill[0] == conv_spill[1]  # whatever the grid: one tile's convolutions alive
    # tiles kept in memory between turns are not written: 3 of 9 kept -> less disk traffic, same output
    with torch.no_grad():
        kept = tiled_decode(vae.decoder, z, 4, pad=2, mode="bounded", stats_method="spill", live_tiles=4)
    assert torch.equal(kept, exact)
    assert 0 < made[-1].bytes_written < made[-2].bytes_written * 0.8
    x = torch.rand(1, 3, 40, 56, generator=g) * 2 - 1
    with torch.no_grad():
        assert torch.equal(
            tiled_encode(vae.encoder, x, 16, pad=4, mode="bounded", stats_method="spill"),
            tiled_encode(vae.encoder, x, 16, pad=4),
        )


def test_spill_errors_remove_the_folder(tmp_path, monkeypatch):
    from seesr.pipeline import vae_spill

    monkeypatch.setenv("SEESR_SPILL_DIR", str(tmp_path))
    vae = _micro_vae()

    def broken_take(self, index, device):
        raise OSError("disk gone")

    monkeypatch.setattr(vae_spill.TileSpill, "take", broken_take)
    with pytest.raises(OSError, match="disk gone"), torch.no_grad():
        tiled_decode(vae.decoder, torch.zeros(1, 4, 12, 12), 4, pad=2, mode="bounded", stats_method="spill")
    assert list(tmp_path.iterdir()) == []


def test_bounded_encoder_is_bit_identical_and_sampled_is_exact_on_small_grids(vae):
    g = torch.Generator().manual_seed(1)
    x = torch.rand(1, 3, 136, 200, generator=g) * 2 - 1
    with torch.no_grad():
        exact = tiled_encode(vae.encoder, x, 64)
    n_tiles = len(split_tiles(136, 200, 64, 32, is_decoder=False))
    assert n_tiles == 6
    assert torch.equal(tiled_encode(vae.encoder, x, 64, mode="bounded"), exact)  # "spill"
    assert torch.equal(tiled_encode(vae.encoder, x, 64, mode="bounded", stats_method="recompute"), exact)
    # a sample covering the whole grid is the exact algorithm
    sampled = tiled_encode(vae.encoder, x, 64, mode="bounded", stats_method="sampled", live_tiles=n_tiles)
    assert torch.equal(sampled, exact)
    # fewer sampled tiles: an estimate (same shape, finite, not identical on this random-weight VAE)
    rough = tiled_encode(vae.encoder, x, 64, mode="bounded", stats_method="sampled", live_tiles=2)
    assert rough.shape == exact.shape and bool(torch.isfinite(rough).all())
    assert not torch.equal(rough, exact)


def test_sample_tiles_spreads_over_the_grid():
    tiles = split_tiles(16 * 8 + 22, 16 * 8 + 22, 16, 11, is_decoder=True)  # 8 x 8 grid
    assert len(tiles) == 64
    picked = sample_tiles(tiles, 4)
    assert len(picked) == 4
    rows = sorted({t.input_box.y0 for t in picked})
    cols = sorted({t.input_box.x0 for t in picked})
    assert len(rows) == 2 and len(cols) == 2  # a 2x2 pattern, not one row
    assert sample_tiles(tiles[:3], 4) == tiles[:3]
    assert len(sample_tiles(tiles, 9)) == 9
    with pytest.raises(ValueError, match="live_tiles"):
        sample_tiles(tiles, 0)


def test_config_fields_and_bad_mode(vae):
    cfg = TilingConfig(vae_mode="bounded", vae_bounded_stats="sampled", vae_live_tiles=3)
    assert mode_kwargs(cfg) == {"mode": "bounded", "stats_method": "sampled", "live_tiles": 3}
    assert TilingConfig().vae_mode == "exact"
    with pytest.raises(ValueError, match="vae_mode"):
        TilingConfig(vae_mode="fast")
    with pytest.raises(ValueError, match="vae_live_tiles"):
        TilingConfig(vae_live_tiles=0)
    with pytest.raises(ValueError, match="VAE tiling mode"):
        tiled_decode(vae.decoder, torch.zeros(1, 4, 40, 40), 8, mode="fast")


@pytest.mark.slow  # ~2 min on 2 cores: recomputation runs the encoder ~10x
def test_pipeline_bounded_mode_equals_exact(fixtures_dir):
    """The bounded (recompute) mode through the whole pipeline gives the exact mode's image bit for bit."""
    pipe = build_tiny_pipeline(fixtures_dir)
    lr = load_lr(fixtures_dir, "astronaut_56x80")
    sampling = SamplingConfig(num_inference_steps=1, process_size=208, seed=0)
    base = dict(
        latent_tile_size=16, latent_tile_overlap=4, vae_encoder_tile_size=128, vae_decoder_tile_size=8
    )
    exact = pipe(lr, sampling, TilingConfig(**base), show_progress=False)  # type: ignore[arg-type]
    LIVE_TILES.reset()
    bounded = pipe(lr, sampling, TilingConfig(**base, vae_mode="bounded"), show_progress=False)  # type: ignore[arg-type]
    assert LIVE_TILES.peak == 1 and LIVE_TILES.tiles_run > 0
    assert torch.equal(bounded.image, exact.image)
    assert bounded.settings["tiling"]["vae_mode"] == "bounded"


@pytest.mark.parametrize(
    ("mode", "stats"), [("exact", "spill"), ("bounded", "spill"), ("bounded", "recompute")]
)
def test_encoder_prepare_maps_each_tile_input(mode, stats, tmp_path, monkeypatch):
    """``prepare`` maps every tile's crop of the input when it first runs: uint8 codes in, the same result as
    encoding the whole float image (so the full-size float input need not exist)."""
    monkeypatch.setenv("SEESR_SPILL_DIR", str(tmp_path))
    vae = _micro_vae()
    codes = torch.randint(
        0, 256, (1, 3, 40, 56), generator=torch.Generator().manual_seed(4), dtype=torch.uint8
    )

    def to_network(c: torch.Tensor) -> torch.Tensor:
        return (c.to(torch.float32) / 255).mul(2).sub_(1)

    with torch.no_grad():
        whole = tiled_encode(vae.encoder, to_network(codes), 16, pad=4, mode=mode, stats_method=stats)
        mapped = tiled_encode(
            vae.encoder, codes, 16, pad=4, mode=mode, stats_method=stats, prepare=to_network
        )
        small = tiled_encode(vae.encoder, codes, 256, prepare=to_network)  # untiled path maps too
    assert torch.equal(mapped, whole)
    assert torch.equal(small, tiled_encode(vae.encoder, to_network(codes), 256))


@pytest.mark.parametrize(
    ("mode", "stats"), [("exact", "spill"), ("bounded", "spill"), ("bounded", "recompute")]
)
def test_decoder_finish_writes_each_tile_as_codes(mode, stats, tmp_path, monkeypatch):
    """``finish`` maps every finished tile before it is written: the uint8 codes of the pipeline output, equal to
    converting the whole float decoder output (so the full-size float output need not exist)."""
    from seesr.pipeline.postprocess import pipeline_codes

    monkeypatch.setenv("SEESR_SPILL_DIR", str(tmp_path))
    vae = _micro_vae()
    z = torch.randn(1, 4, 20, 28, generator=torch.Generator().manual_seed(5)) * 3  # overshoots [-1, 1]
    with torch.no_grad():
        whole = tiled_decode(vae.decoder, z, 8, pad=2, mode=mode, stats_method=stats)
        codes = tiled_decode(vae.decoder, z, 8, pad=2, mode=mode, stats_method=stats, finish=pipeline_codes)
        small = tiled_decode(vae.decoder, z, 64, finish=pipeline_codes)  # untiled path maps too
    assert codes.dtype == torch.uint8 and codes.shape == whole.shape
    assert int((codes == 0).sum()) > 0 and int((codes == 255).sum()) > 0  # both clamps exercised
    assert torch.equal(codes, pipeline_codes(whole))
    assert torch.equal(small, pipeline_codes(tiled_decode(vae.decoder, z, 64)))


def test_spill_writes_an_identity_residual_once(tmp_path):
    """At a ResNet's first GroupNorm the pending residual of an identity shortcut is the activation itself: it is
    written once (a quarter of the decoder's spill traffic) and read back as one tensor, as it was."""
    from seesr.pipeline.vae_spill import TileSpill

    h = torch.randn(1, 8, 6, 10).to(memory_format=torch.channels_last)
    with TileSpill(tmp_path) as spill:
        spill.put(0, h, h)
        once = spill.bytes_written
        spill.put(1, h, h.clone())
        assert once == h.numel() * 4 and spill.bytes_written == 3 * once
        a, ra = spill.take(0, "cpu")
        b, rb = spill.take(1, "cpu")
    assert ra is a and rb is not b
    for t in (a, b, rb):
        assert torch.equal(t, h) and t.stride() == h.stride()


@pytest.mark.parametrize(("channels", "layers"), [((8, 16), 1), ((8, 16, 16), 2)])
def test_spill_traffic_formula_counts_the_files(channels, layers, tmp_path, monkeypatch):
    """The planner's spill-traffic formula (``vae_memory.spill_barrier_bytes``, from the SD VAE layout alone)
    equals the bytes the executor writes with one tile in memory, and is within 3 % with three kept."""
    from diffusers import AutoencoderKL

    from seesr.pipeline import vae_spill
    from seesr.pipeline.vae_memory import spill_traffic_bytes

    monkeypatch.setenv("SEESR_SPILL_DIR", str(tmp_path))
    made: list[vae_spill.TileSpill] = []
    enter = vae_spill.TileSpill.__enter__
    monkeypatch.setattr(vae_spill.TileSpill, "__enter__", lambda self: made.append(self) or enter(self))
    torch.manual_seed(0)
    vae = AutoencoderKL(
        block_out_channels=channels,
        down_block_types=("DownEncoderBlock2D",) * len(channels),
        up_block_types=("UpDecoderBlock2D",) * len(channels),
        layers_per_block=layers,
        norm_num_groups=4,
        latent_channels=4,
    ).eval()
    kw = dict(block_out_channels=channels, layers_per_block=layers)
    for live, tolerance in ((1, 0.0), (3, 0.03)):
        with torch.no_grad():
            tiled_decode(vae.decoder, torch.randn(1, 4, 24, 40), 8, pad=2, mode="bounded", live_tiles=live)
            decoded = made[-1].bytes_written
            tiled_encode(vae.encoder, torch.randn(1, 3, 96, 136), 32, pad=8, mode="bounded", live_tiles=live)
            encoded = made[-1].bytes_written
        want_dec = spill_traffic_bytes(24, 40, 8, part="decoder", live_tiles=live, pad=2, **kw)
        want_enc = spill_traffic_bytes(96, 136, 32, part="encoder", live_tiles=live, pad=8, **kw)
        assert decoded > 0 and encoded > 0
        assert abs(want_dec / decoded - 1) <= tolerance and abs(want_enc / encoded - 1) <= tolerance
    assert spill_traffic_bytes(24, 40, 64, part="decoder", **kw) == 0  # one tile: nothing waits


def test_spill_waiting_follows_the_executor(tmp_path, monkeypatch):
    """The memory plan's count of tiles waiting in memory (``vae_memory.spill_waiting``) is what the spilling
    executor does: per pass it parks all but the last ``live - 1`` tiles it visits, and the next pass (reversed)
    runs the kept ones first — so at most ``live - 2`` wait while one runs."""
    from seesr.pipeline import vae_spill, vae_tiling
    from seesr.pipeline.vae_memory import estimate_vae_peak_bytes, spill_waiting

    monkeypatch.setenv("SEESR_SPILL_DIR", str(tmp_path))
    events: list[tuple[str, int]] = []
    put, take, var_mean = vae_spill.TileSpill.put, vae_spill.TileSpill.take, vae_tiling.group_var_mean
    monkeypatch.setattr(
        vae_spill.TileSpill, "put", lambda self, t, h, r: events.append(("put", t)) or put(self, t, h, r)
    )
    monkeypatch.setattr(
        vae_spill.TileSpill, "take", lambda self, t, d: events.append(("take", t)) or take(self, t, d)
    )
    monkeypatch.setattr(
        vae_tiling, "group_var_mean", lambda h, g: events.append(("turn", -1)) or var_mean(h, g)
    )
    vae, z, live = _micro_vae(), torch.randn(1, 4, 16, 16), 4
    n = len(split_tiles(16, 16, 4, 2, is_decoder=True, scale=2))
    with torch.no_grad():
        tiled_decode(vae.decoder, z, 4, pad=2, mode="bounded", stats_method="spill", live_tiles=live)
    # a turn is [take] -> its GroupNorm statistics -> [put]; the last pass finishes the tiles (no statistics)
    n_passes = sum(kind == "turn" for kind, _ in events) // n + 1
    puts: list[list[int]] = [[] for _ in range(n_passes)]
    takes: list[list[int]] = [[] for _ in range(n_passes)]
    done = 0
    for kind, t in events:
        if kind == "turn":
            done += 1
        else:
            (takes[done // n] if kind == "take" else puts[(done - 1) // n]).append(t)
    assert n == 9 and done % n == 0 and n_passes >= 3
    for p in range(n_passes):
        order = list(range(n)) if p % 2 == 0 else list(reversed(range(n)))
        if p < n_passes - 1:
            assert puts[p] == order[: n - (live - 1)]  # the last live - 1 of the pass stay in memory
        parked = puts[p - 1] if p else []
        assert takes[p] == [t for t in order if t in parked]  # parked ones come back in visiting order
    model = spill_waiting(n, live - 1)
    assert max(len(w) for _, w in model) == live - 2 and [t for t, _ in model] == [
        *range(n),
        *reversed(range(n)),
    ]
    kw = dict(part="decoder", block_out_channels=(32,) * 4, mode="bounded", pad=11)
    one, two, four = (
        estimate_vae_peak_bytes(256, 256, 96, live_tiles=k, spill_order=True, **kw) for k in (1, 2, 4)
    )
    assert one == two < four < estimate_vae_peak_bytes(256, 256, 96, live_tiles=4, **kw)
