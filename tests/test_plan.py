"""The plan before the run (issue 13): predictions, the budget ladder, refusals before loading, and the contract
that a run stays within the --max-memory it was given."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from seesr.config import SamplingConfig, TilingConfig
from seesr.run.footprint import SD2_FOOTPRINT, footprint_of
from seesr.run.plan import GIB, MIB, choose_plan, parse_size, plan_image
from seesr.run.sources import choose_weights
from tests.tiny_pipeline import official_parts


def _photo(path: Path, side: int) -> Path:
    rng = np.random.default_rng(side)
    a = np.kron(rng.integers(0, 256, (side // 16, side // 16, 3)), np.ones((16, 16, 1))).astype(np.uint8)
    Image.fromarray(a).save(path)
    return path


def _weights_argv(root: Path) -> list[str]:
    argv: list[str] = []
    for part, path in official_parts(root).items():
        argv += [f"--{part.replace('_', '-')}", str(path)]
    return argv


def test_parse_size():
    assert parse_size("6GB") == parse_size("6g") == parse_size("6GiB") == 6 * GIB
    assert parse_size("512MB") == 512 * MIB and parse_size("2.5G") == int(2.5 * GIB)
    for bad in ("lots", "6 parsecs", "10KB"):
        with pytest.raises(ValueError):
            parse_size(bad)


def test_budget_chooses_the_settings_and_refuses_what_cannot_fit():
    kw = dict(footprint=SD2_FOOTPRINT, device_type="cpu", dtype_bytes=4, baseline=300 * MIB, free_disk=0)
    sampling = SamplingConfig(num_inference_steps=1)
    roomy = choose_plan((2000, 1500), sampling, TilingConfig(), budget=200 * GIB, **kw)
    assert roomy.tiling.vae_mode == "exact" and roomy.fits and roomy.disk_bytes == 0
    tight = choose_plan((2000, 1500), sampling, TilingConfig(), budget=int(roomy.host_bytes * 0.6), **kw)
    # no disk for spill files: the exact statistics by recomputation
    assert tight.tiling.vae_mode == "bounded" and tight.tiling.vae_bounded_stats == "recompute"
    assert tight.host_bytes <= tight.budget_bytes < roomy.host_bytes
    # with the disk for them (and a fast one: NVMe), the exact mode's tiles wait in files instead: same memory
    # bound, far less time
    fast_disk = dict(kw, free_disk=1024 * GIB, disk_rate=2e9)
    spill = choose_plan((2000, 1500), sampling, TilingConfig(), budget=tight.budget_bytes, **fast_disk)
    assert spill.tiling.vae_mode == "bounded" and spill.tiling.vae_bounded_stats == "spill"
    assert spill.host_bytes <= spill.budget_bytes and spill.seconds < tight.seconds
    # the files hold about the states the exact mode would hold in memory (SD-2 decoder, 8000x6000 fp32: ~70 GiB)
    assert 40 * GIB < spill.disk_bytes < 120 * GIB
    assert "spill files" in spill.describe() and spill.as_record()["vae_bounded_stats"] == "spill"
    # the bounded VAE's activations do not grow with the image: 4x the pixels, only the arrays grow (x4)
    big = plan_image((4000, 3000), sampling, tight.tiling, budget=100 * GIB, **kw)
    exact_big = plan_image((4000, 3000), sampling, roomy.tiling, budget=100 * GIB, **kw)

    def activations(plan, size):  # the decode stage minus the input and the decoder's output (uint8 codes)
        pixels = (
            plan.processed[0] * plan.processed[1]
        )  # (AdaIN: the condition image is freed before decoding)
        return plan.stages["vae_decode"] - size[0] * size[1] * 24 - 3 * pixels

    huge = plan_image((8000, 6000), sampling, tight.tiling, budget=100 * GIB, **kw)
    # one full decoder tile alive, whatever the grid: 4x the pixels, the same activation bytes
    assert activations(huge, (8000, 6000)) == activations(big, (4000, 3000))
    assert activations(exact_big, (4000, 3000)) > 3 * activations(big, (4000, 3000))
    with pytest.raises(ValueError, match="over the memory budget of 8.00 GiB"):
        choose_plan((2000, 1500), sampling, TilingConfig(), budget=8 * GIB, **kw)  # fp32 weights alone ~9 GiB
    # with every memory knob pinned by the user nothing can shrink: refused instead of ignoring the flags
    with pytest.raises(ValueError, match="over the memory budget"):
        choose_plan(
            (2000, 1500),
            sampling,
            TilingConfig(),
            budget=int(roomy.host_bytes * 0.6),
            pinned=frozenset(
                {"vae_mode", "vae_decoder_tile_size", "vae_encoder_tile_size", "latent_tile_size"}
            ),
            **kw,
        )


def test_tile_batch_costs_memory_in_the_plan():
    kw = dict(footprint=SD2_FOOTPRINT, device_type="cuda", dtype_bytes=2, baseline=0, budget=80 * GIB)
    one = plan_image((1000, 1000), SamplingConfig(), TilingConfig(), **kw)
    four = plan_image((1000, 1000), SamplingConfig(), TilingConfig(tile_batch=4), **kw)
    assert one.latent_tiles == (8, 8) and four.stages["denoise"] > one.stages["denoise"]
    assert four.stages["vae_decode"] == one.stages["vae_decode"]


def test_footprint_reads_sizes_without_loading(fixtures_dir):
    fp = footprint_of(choose_weights(parts={k: str(v) for k, v in official_parts(fixtures_dir).items()}))
    assert fp.vae_channels == (32, 32, 32, 32) and fp.unet_width == 16
    assert 2_000_000 < fp.params < 3_000_000 and fp.dape_params > 1_000_000


def test_plan_prints_without_loading_and_refuses_an_impossible_budget(
    tmp_path, fixtures_dir, monkeypatch, capsys
):
    import seesr.cli.upscale as up
    from seesr.cli import main

    def no_loading(*args, **kwargs):
        raise AssertionError("the weights were loaded")

    monkeypatch.setattr(up, "_load_pipeline", no_loading)
    monkeypatch.setenv("SEESR_CACHE", str(tmp_path / "cache"))
    src = _photo(tmp_path / "p.png", 256)
    argv = ["upscale", str(src), "-o", str(tmp_path / "o"), *_weights_argv(fixtures_dir)]
    assert main([*argv, "--plan", "--steps", "2"]) == 0
    out = capsys.readouterr().out
    assert "processed 1024x1024; latent tiles 2x2 of 96; VAE exact" in out and "rough default" in out
    assert main([*argv, "--max-memory", "200MB"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "over the memory budget of 0.20 GiB" in err[0]
    assert not (tmp_path / "o" / "p.png").exists()


def test_a_long_fp32_cpu_run_mentions_bf16_only_where_the_cpu_has_it(
    tmp_path, fixtures_dir, monkeypatch, caplog, capsys
):
    """One INFO line before loading, when the plan is long, the precision was left to auto and the CPU has
    bf16 instructions; never with --dtype given, on a CPU without it, or for a short plan."""
    import logging

    import seesr.cli.upscale as up
    import seesr.pipeline.devices as devices
    import seesr.run.plan as plan_module
    from seesr.cli import main

    monkeypatch.setattr(up, "_load_pipeline", lambda *a, **k: pytest.fail("the weights were loaded"))
    monkeypatch.setenv("SEESR_CACHE", str(tmp_path / "cache"))
    src = _photo(tmp_path / "p.png", 64)
    argv = ["upscale", str(src), "-o", str(tmp_path / "o"), *_weights_argv(fixtures_dir), "--plan"]

    def hints(*extra: str, bf16: bool, threshold: float = 0.0) -> list[str]:
        monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: bf16)
        monkeypatch.setattr(plan_module, "BF16_HINT_SECONDS", threshold)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="seesr.cli.upscale"):
            assert main([*argv, *extra]) == 0
        capsys.readouterr()
        return [r.getMessage() for r in caplog.records if "--dtype bf16" in r.getMessage()]

    (line,) = hints(bf16=True)
    assert line.startswith("this run is planned at about ") and " in fp32; " in line
    assert hints("--dtype", "fp32", bf16=True) == [] and hints(bf16=False) == []
    assert hints(bf16=True, threshold=1e9) == [] and hints("--dtype", "bf16", bf16=True) == []


def test_bf16_instructions_are_read_from_the_cpu_flags_not_from_avx512(monkeypatch):
    """An AVX-512 CPU without BF16 (Skylake-X) emulates bf16: no hint there. oneDNN's own check says yes to it."""
    import torch

    from seesr.pipeline.devices import cpu_has_native_bf16

    avx512 = {"avx512_f": True, "avx512_bw": True, "avx512_vl": True, "avx512_dq": True}
    for extra, want in [({}, False), ({"avx512_bf16": True}, True), ({"amx_bf16": True}, True)]:
        flags = {"avx512_bf16": False, "amx_bf16": False, **avx512, **extra}
        monkeypatch.setattr(torch.cpu, "get_capabilities", lambda flags=flags: flags)
        assert cpu_has_native_bf16() is want


def test_the_output_cap_is_the_plan_and_the_user_can_still_set_one(
    tmp_path, fixtures_dir, monkeypatch, capsys
):
    """No fixed output cap by default: a 4800x3600 input (a 276 Mpx output, over the old 16384² cap) is
    planned; what cannot fit the budget is refused by the plan; --max-output-pixels still caps when given."""
    import seesr.cli.upscale as up
    from seesr.cli import main

    monkeypatch.setattr(up, "_load_pipeline", lambda *a, **k: pytest.fail("the weights were loaded"))
    monkeypatch.setenv("SEESR_CACHE", str(tmp_path / "cache"))
    src = tmp_path / "big.png"
    Image.new("RGB", (4800, 3600), (120, 90, 60)).save(src)
    argv = ["upscale", str(src), "-o", str(tmp_path / "o"), *_weights_argv(fixtures_dir), "--plan"]
    assert main([*argv, "--max-memory", "2TB"]) == 0
    assert "processed 19200x14400" in capsys.readouterr().out
    assert main([*argv, "--max-memory", "2GB"]) == 1
    assert "over the memory budget of 2.00 GiB" in capsys.readouterr().err
    assert main([*argv, "--max-memory", "2TB", "--max-output-pixels", str(16384 * 16384)]) == 1
    assert "over the output cap of 268435456 (--max-output-pixels)" in capsys.readouterr().err


@pytest.mark.parametrize(("side", "budget"), [(128, "1.4GB"), (256, "2.0GB")])
def test_a_run_stays_within_its_max_memory(tmp_path, fixtures_dir, side, budget):
    """Contract: the peak RSS of a real `seesr upscale` subprocess (tiny weights) stays within --max-memory, and
    the plan's prediction is within 25 % of it."""
    src = _photo(tmp_path / "p.png", side)
    env = {**os.environ, "SEESR_CACHE": str(tmp_path / "cache"), "PYTHONWARNINGS": "ignore"}
    argv = [
        sys.executable,
        "-m",
        "seesr",
        "-v",
        "upscale",
        str(src),
        "-o",
        str(tmp_path / "o"),
        "--steps",
        "1",
    ]
    argv += [*_weights_argv(fixtures_dir), "--max-memory", budget, "--device", "cpu"]
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    side_car = json.loads((tmp_path / "o" / "p.json").read_text())
    measured = side_car["memory"]["peak_host_rss_mib"] * MIB
    predicted = side_car["plan"]["predicted_peak_host_mib"] * MIB
    assert side_car["memory"]["peak_host_exact"] is True
    assert measured <= parse_size(budget), (measured / GIB, budget)
    assert abs(predicted - measured) <= 0.25 * measured, (predicted / GIB, measured / GIB)
    assert set(side_car["timings"]) >= {"dape", "text", "vae_encode", "denoise", "vae_decode", "write"}
    assert "denoise " in done.stderr and "peak RSS " in done.stderr  # `-v` prints the cost breakdown


def test_spill_time_counts_the_disk_writes_and_a_slow_disk_prefers_recomputation():
    """The spill files beyond what the page cache absorbs are written at the disk's rate: that time is in the
    plan; when it makes "spill" slower than recomputing the statistics, the planner recomputes instead."""
    from seesr.pipeline.vae_memory import spill_barrier_bytes

    kw = dict(footprint=SD2_FOOTPRINT, device_type="cpu", dtype_bytes=4, baseline=300 * MIB, free_disk=2**50)
    sampling = SamplingConfig(num_inference_steps=1)
    spill = TilingConfig(vae_mode="bounded", vae_bounded_stats="spill", vae_decoder_tile_size=64)
    size = (2000, 1500)

    def io(rate, writeback):
        plan = plan_image(size, sampling, spill, budget=2**50, disk_rate=rate, writeback=writeback, **kw)
        return plan.spill_io_seconds, plan

    fast, plan = io(1e9, 0)
    assert fast > 0 and io(5e8, 0)[0] == pytest.approx(2 * fast)
    assert io(1e9, 2**50)[0] == 0  # everything fits the page cache: nothing reaches the disk
    barriers = spill_barrier_bytes(
        6000, 8000, spill.vae_encoder_tile_size, part="encoder", block_out_channels=(128, 256, 512, 512)
    ) + spill_barrier_bytes(750, 1000, 64, part="decoder", block_out_channels=(128, 256, 512, 512))
    assert fast == pytest.approx(sum(barriers) / 1e9)
    assert plan.as_record()["predicted_spill_io_seconds"] == round(fast, 1)
    assert "of disk writes" in plan.describe()
    # the same budget, a fast then a very slow disk: spill, then recomputation (no disk at all)
    budget = plan.host_bytes
    pinned = frozenset({"vae_decoder_tile_size"})
    quick = choose_plan(size, sampling, spill, budget=budget, pinned=pinned, disk_rate=1e9, writeback=0, **kw)
    slow = choose_plan(size, sampling, spill, budget=budget, pinned=pinned, disk_rate=1e5, writeback=0, **kw)
    assert quick.tiling.vae_bounded_stats == "spill" and quick.spill_io_seconds > 0
    assert slow.tiling.vae_bounded_stats == "recompute" and slow.spill_io_seconds == 0
    assert (
        slow.seconds
        < plan_image(size, sampling, spill, budget=budget, disk_rate=1e5, writeback=0, **kw).seconds
    )
    # the user's choice stays
    kept = choose_plan(
        size,
        sampling,
        spill,
        budget=budget,
        pinned=pinned | {"vae_bounded_stats"},
        disk_rate=1e5,
        writeback=0,
        **kw,
    )
    assert kept.tiling.vae_bounded_stats == "spill"


def test_spill_disk_rate_comes_from_the_environment(monkeypatch):
    from seesr.pipeline import vae_spill

    monkeypatch.delenv("SEESR_SPILL_DISK_MBPS", raising=False)
    assert vae_spill.disk_write_rate() == vae_spill.DEFAULT_DISK_RATE
    monkeypatch.setenv("SEESR_SPILL_DISK_MBPS", "800")
    assert vae_spill.disk_write_rate() == 800e6
    monkeypatch.setenv("SEESR_SPILL_DISK_MBPS", "fast")
    with pytest.raises(ValueError, match="SEESR_SPILL_DISK_MBPS"):
        vae_spill.disk_write_rate()


def test_a_disk_bound_spill_run_records_the_rate_the_planner_then_uses(tmp_path, monkeypatch):
    """A spill whose files outgrew the page cache's allowance measured the disk: its traffic over its wall time
    is remembered beside the files and becomes the planner's disk rate; runs the cache absorbed, and failed runs,
    record nothing."""
    import torch

    from seesr.pipeline import vae_spill

    monkeypatch.delenv("SEESR_SPILL_DISK_MBPS", raising=False)
    h = torch.randn(1, 8, 32, 32)
    monkeypatch.setattr(vae_spill, "writeback_allowance", lambda: 10**9)  # everything absorbed
    with vae_spill.TileSpill(tmp_path) as spill:
        spill.put(0, h, None)
    assert vae_spill.disk_write_rate(tmp_path) == vae_spill.DEFAULT_DISK_RATE
    monkeypatch.setattr(vae_spill, "writeback_allowance", lambda: 100)  # a tiny cache: disk-bound
    with pytest.raises(RuntimeError), vae_spill.TileSpill(tmp_path) as spill:
        spill.put(0, h, None)
        raise RuntimeError("a tile failed")
    assert vae_spill.disk_write_rate(tmp_path) == vae_spill.DEFAULT_DISK_RATE
    with vae_spill.TileSpill(tmp_path) as spill:
        spill.put(0, h, None)
        spill.put(1, h, None)
    record = json.loads((tmp_path / "disk_rate.json").read_text())
    assert record["bytes"] == 2 * h.numel() * 4
    assert vae_spill.disk_write_rate(tmp_path) == record["bytes_per_second"] > 0


def test_tile_batch_is_chosen_from_the_budget_on_accelerators_only():
    """Without --tile-batch a GPU plan runs 4 tiles per call when they fit, 2 when only those fit, else the
    ladder's one; the CPU (no measured gain), faithful mode (bytes) and a typed --tile-batch keep what was asked."""
    kw = dict(footprint=SD2_FOOTPRINT, dtype_bytes=2, baseline=300 * MIB, free_disk=0)
    sampling = SamplingConfig(num_inference_steps=1)
    size = (1000, 750)  # 4000x3000: many latent tiles
    bounded = TilingConfig(  # small VAE tiles: the denoise stage is the peak
        vae_mode="bounded", vae_bounded_stats="recompute", vae_decoder_tile_size=16, vae_encoder_tile_size=128
    )
    roomy = choose_plan(size, sampling, bounded, budget=200 * GIB, device_type="cuda", **kw)
    assert roomy.tiling.tile_batch == 4
    one = plan_image(size, sampling, bounded, budget=200 * GIB, device_type="cuda", **kw)
    two = plan_image(
        size, sampling, dataclasses.replace(bounded, tile_batch=2), budget=200 * GIB, device_type="cuda", **kw
    )
    assert one.device_bytes < two.device_bytes < roomy.device_bytes
    assert (
        choose_plan(
            size, sampling, bounded, budget=two.device_bytes, device_type="cuda", **kw
        ).tiling.tile_batch
        == 2
    )
    assert (
        choose_plan(
            size, sampling, bounded, budget=one.device_bytes, device_type="cuda", **kw
        ).tiling.tile_batch
        == 1
    )
    cpu = choose_plan(size, sampling, bounded, budget=200 * GIB, device_type="cpu", **kw)
    assert cpu.tiling.tile_batch == 1
    faithful = SamplingConfig(num_inference_steps=1, faithful=True)
    assert (
        choose_plan(size, faithful, bounded, budget=200 * GIB, device_type="cuda", **kw).tiling.tile_batch
        == 1
    )
    typed = choose_plan(
        size,
        sampling,
        bounded,
        budget=200 * GIB,
        device_type="cuda",
        pinned=frozenset({"tile_batch"}),
        **kw,
    )
    assert typed.tiling.tile_batch == 1
