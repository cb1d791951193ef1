"""A plan before the run: processed size, tile grids, VAE mode, predicted peak memory and time (issue 13).

Nothing is loaded to make a plan: the model sizes come from the weights' config files and tensor headers
(:mod:`seesr.run.footprint`), the host baseline is this process's RSS before loading, and the activation
estimates are formulas over the architecture widths (``estimate_vae_peak_bytes`` for the VAE, a count of the
tensors alive in one ControlNet + UNet call for the denoiser). Time comes from what earlier runs on this machine
measured (:mod:`seesr.run.throughput`), or a rough default that the plan marks as such.

:func:`choose_plan` turns a memory budget into settings: it keeps the requested tiling when it fits and otherwise
walks a fixed ladder — bounded VAE, smaller VAE tiles, smaller latent tiles — so the same flags always give the
same settings (and bytes), whatever else runs on the machine. A budget that even the smallest settings exceed is
refused in one line before anything is loaded.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import re
from collections.abc import Iterator
from typing import Any

from seesr.config import SamplingConfig, TilingConfig

GIB = 1024**3
MIB = 1024**2
#: default budget: this share of the device's total memory (of total RAM on the CPU), never of what is free
DEFAULT_SHARE = {"cpu": 0.6, "mps": 0.5, "cuda": 0.9}
#: decoder/encoder tile sides (latent px / image px) and latent tiles tried, largest first
_DECODER_TILES = (224, 160, 128, 96, 64, 48, 32)
_ENCODER_TILES = (1024, 768, 512, 384, 256)
_LATENT_TILES = (96, 80, 64, 48, 32)
#: tensors alive in one ControlNet + UNet call, in units of (unet width x latent pixels x batch): skip
#: connections of both networks, ControlNet residuals, the working tensors and attention temporaries (SDPA).
UNET_LIVE_FACTOR = 14.0
#: host memory the loaded libraries and allocator add on top of the RSS before loading and the weights,
#: measured with the tiny weights on the CPU (docs/benchmarks.md: plan accuracy)
RUNTIME_OVERHEAD = 400 * MIB
#: the decoder output, in float32-RGB units of the processed size: its uint8 codes on the 8-bit chain (written
#: tile by tile: ``tiled_decode(finish=)``), float32 for inputs over 8 bits. After decoding only it and the result
#: (:data:`OUTPUT_ARRAYS`) are full size; colour fix, resize and writer work in bands of rows (issue 13 item 4,
#: docs/decisions.md "Bounded post-decode path")
DECODED_ARRAYS = {"codes": 0.25, "float": 1.0}
#: the result alone (the decoder output lives on the device when there is one), same units; none when the colour
#: fix overwrites the decoder's codes (AdaIN or none, 8-bit, no resize: ``finish_image(overwrite=True)``)
OUTPUT_ARRAYS = 0.5
#: the in-place fix's band temporaries: its statistics pass reads about 1 Mpx of codes as float32 (12 MiB) and
#: the 256-entry tables index a band's channel (8 bytes per pixel)
IN_PLACE_BAND_BYTES = 32 * MIB
#: the bands' temporaries: about 1 Mpx of rows (+ the wavelet's 62 halo rows), its dilated convolutions unfolded
#: 27 floats per pixel, and what glibc keeps of freed band buffers (measured: docs/benchmarks.md)
POSTPROCESS_BAND_BYTES = 450 * MIB
#: time of the bounded VAE over the exact one, measured on the fixture VAE (docs/decisions.md): "recompute"
#: encoder 10-14x, decoder 4-6x; "spill" while its files stay in the page cache (2048², 4 tiles in memory:
#: encoder 1.27x, decoder 1.14x) — what reaches the disk is added from the traffic (``_spill_io_seconds``)
BOUNDED_COST = {
    "recompute": {"encode": 12.0, "decode": 5.0},
    "spill": {"encode": 1.3, "decode": 1.2},
    "sampled": {"encode": 1.1, "decode": 1.3},
}
#: free disk the spill files need, over the estimate of the largest full-resolution state
SPILL_DISK_MARGIN = 1.2


def vae_time_factors(tiling: TilingConfig) -> tuple[float, float]:
    """(encoder, decoder) time of the configured tiled VAE over the exact mode's (1, 1 in the exact mode)."""
    if tiling.vae_mode != "bounded":
        return 1.0, 1.0
    cost = BOUNDED_COST[tiling.vae_bounded_stats]
    return cost["encode"], cost["decode"]


def parse_size(text: str | int) -> int:
    """Bytes from "6GB", "6G", "6GiB", "512MB", "2.5g" or a plain integer (binary units: 1 GB = 2^30 bytes).

    Raises:
        ValueError: anything else, or a size under 1 MiB.
    """
    if isinstance(text, int):
        value = text
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmgt]?)(i?b)?\s*", str(text).lower())
        if not m:
            raise ValueError(f"memory size must look like 6GB, 512MB or 2.5G; got {text!r}")
        value = int(float(m.group(1)) * 1024 ** " kmgt".index(m.group(2) or " "))
    if value < MIB:
        raise ValueError(f"memory size must be at least 1 MB; got {text!r}")
    return value


def total_memory(device: Any) -> int:
    """Total memory of ``device`` in bytes: the GPU's for CUDA, the machine's RAM otherwise."""
    if getattr(device, "type", str(device)) == "cuda":
        import torch

        return int(torch.cuda.get_device_properties(device).total_memory)
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 16 * GIB


def default_budget(device: Any) -> int:
    """The default ``--max-memory``: a fixed share of the device's total memory (not of what is free)."""
    kind = getattr(device, "type", str(device))
    return int(DEFAULT_SHARE.get(kind, 0.6) * total_memory(device))


@dataclasses.dataclass(frozen=True)
class Plan:
    """The plan of one image.

    Attributes:
        input_size, processed: (width, height) of the input and of the processed image (pixels).
        latent_tiles: (rows, cols) of the latent tile grid; (1, 1) when untiled.
        tiling: the chosen :class:`TilingConfig`.
        vae_encoder_tiles, vae_decoder_tiles: tiles of the VAE stages (1 when untiled).
        host_bytes, device_bytes: predicted peaks (equal on the CPU).
        budget_bytes: the budget the plan was made for; ``fits`` whether the prediction is within it.
        seconds: predicted wall time of the pipeline call; ``seconds_basis`` says where the rates come from.
        stages: predicted peak bytes per stage (weights excluded), for ``--plan`` output and tests.
    """

    input_size: tuple[int, int]
    processed: tuple[int, int]
    latent_tiles: tuple[int, int]
    tiling: TilingConfig
    vae_encoder_tiles: int
    vae_decoder_tiles: int
    host_bytes: int
    device_bytes: int
    budget_bytes: int
    fits: bool
    seconds: float
    seconds_basis: str
    stages: dict[str, int]
    disk_bytes: int = 0
    spill_io_seconds: float = 0.0

    def as_record(self) -> dict[str, Any]:
        """The sidecar's ``plan`` field."""
        return {
            "processed": list(self.processed),
            "latent_tiles": list(self.latent_tiles),
            "vae_mode": self.tiling.vae_mode,
            "vae_bounded_stats": self.tiling.vae_bounded_stats if self.tiling.vae_mode == "bounded" else None,
            "vae_live_tiles": self.tiling.vae_live_tiles if self.tiling.vae_mode == "bounded" else None,
            "predicted_spill_disk_mib": round(self.disk_bytes / MIB, 1),
            "vae_encoder_tile_size": self.tiling.vae_encoder_tile_size,
            "vae_decoder_tile_size": self.tiling.vae_decoder_tile_size,
            "latent_tile_size": self.tiling.latent_tile_size,
            "tile_batch": self.tiling.tile_batch,
            "predicted_peak_host_mib": round(self.host_bytes / MIB, 1),
            "predicted_peak_device_mib": round(self.device_bytes / MIB, 1),
            "budget_mib": round(self.budget_bytes / MIB, 1),
            "predicted_seconds": round(self.seconds, 1),
            "predicted_spill_io_seconds": round(self.spill_io_seconds, 1),
            "seconds_basis": self.seconds_basis,
        }

    def describe(self) -> str:
        """One line for ``seesr upscale --plan``."""
        w, h = self.processed
        r, c = self.latent_tiles
        t = self.tiling
        vae = f"VAE {t.vae_mode}" + (f"/{t.vae_bounded_stats}" if t.vae_mode == "bounded" else "")
        if self.disk_bytes:
            vae += f" ({self.disk_bytes / GIB:.2f} GiB spill files"
            if self.spill_io_seconds:
                vae += f", about {format_duration(self.spill_io_seconds)} of disk writes beside the compute"
            vae += ")"
        return (
            f"{self.input_size[0]}x{self.input_size[1]} -> processed {w}x{h}; latent tiles {r}x{c} of "
            f"{t.latent_tile_size}{f' ({t.tile_batch} per call)' if t.tile_batch > 1 else ''}; {vae}, encoder tile {t.vae_encoder_tile_size} px ({self.vae_encoder_tiles}), "
            f"decoder tile {t.vae_decoder_tile_size} latent px ({self.vae_decoder_tiles}); peak host "
            f"{self.host_bytes / GIB:.2f} GiB, device {self.device_bytes / GIB:.2f} GiB "
            f"(budget {self.budget_bytes / GIB:.2f} GiB); about {format_duration(self.seconds)} ({self.seconds_basis})"
        )


#: a CPU run planned longer than this in fp32, with the precision left to auto, mentions bf16 where the CPU has it
BF16_HINT_SECONDS = 600.0


def precision_hint(seconds: float, *, device_type: str, dtype_bytes: int, dtype_chosen: bool) -> str | None:
    """One line for a long fp32 CPU run on a CPU with hardware bf16 whose precision the user left to auto
    (CLI and web UI); None otherwise. The speed-up quoted is docs/benchmarks.md's (session 6, Zen 4)."""
    from seesr.pipeline.devices import cpu_has_native_bf16

    cpu_fp32 = device_type == "cpu" and dtype_bytes == 4
    if dtype_chosen or not cpu_fp32 or seconds < BF16_HINT_SECONDS or not cpu_has_native_bf16():
        return None
    return (
        f"this run is planned at about {format_duration(seconds)} in fp32; this CPU computes bf16 in hardware: "
        "--dtype bf16 ran an SD-2 step 1.7-1.9x faster on such a CPU (docs/benchmarks.md), pixels differ slightly"
    )


def format_duration(seconds: float) -> str:
    """Seconds as people read them: "45 s", "12.5 min", "3.1 h"."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


@dataclasses.dataclass(frozen=True)
class Rates:
    """Seconds per unit of work on one device/dtype/architecture.

    Attributes:
        denoise: seconds per (latent pixel x batch x step) of ControlNet + UNet.
        vae_encode, vae_decode: seconds per processed pixel (exact mode; bounded "recompute" costs more).
        fixed: seconds per image outside those (DAPE, text, colour fix, write).
        basis: "measured on this machine (N runs)" or "rough default".
    """

    denoise: float
    vae_encode: float
    vae_decode: float
    fixed: float
    basis: str


def rough_rates(device_type: str, unet_width: int) -> Rates:
    """Order-of-magnitude rates until a run on this machine has been recorded (see :mod:`seesr.run.throughput`).

    CPU numbers come from docs/benchmarks.md (2 cores, fp32): SD-2 size 22.4 s per CFG step at a 64x64 latent.
    """
    scale = (unet_width / 320) ** 2
    if device_type == "cuda":
        return Rates(2.0e-6 * scale + 2e-8, 5e-9, 1e-8, 0.5, "rough default")
    return Rates(2.7e-3 * scale + 2e-4, 4e-6, 8e-6, 3.0, "rough default")


def _grid(lh: int, lw: int, tiling: TilingConfig, faithful: bool) -> tuple[tuple[int, int], int]:
    """((rows, cols), pixels of one latent tile) of the latent tiling."""
    from seesr.pipeline import tiling as latent_tiling

    tile = tiling.latent_tile_size
    if not latent_tiling.needs_tiling(lh, lw, tile, faithful=faithful):
        return (1, 1), lh * lw
    boxes = latent_tiling.tile_boxes(lh, lw, tile, tiling.latent_tile_overlap, faithful=faithful)
    rows = len({b.y0 for b in boxes})
    cols = len({b.x0 for b in boxes})
    return (rows, cols), max(b.height * b.width for b in boxes)


def _vae_tiles(h: int, w: int, tile: int, *, decoder: bool, channels: tuple[int, ...]) -> int:
    from seesr.pipeline import vae_tiling

    needs = vae_tiling.decoder_needs_tiling if decoder else vae_tiling.encoder_needs_tiling
    if not needs(h, w, tile):
        return 1
    pad = vae_tiling.DECODER_PAD if decoder else vae_tiling.ENCODER_PAD
    scale = 2 ** (len(channels) - 1)
    return len(vae_tiling.split_tiles(h, w, tile, pad, is_decoder=decoder, scale=scale))


def plan_image(
    size: tuple[int, int],
    sampling: SamplingConfig,
    tiling: TilingConfig,
    *,
    footprint: Any,
    device_type: str,
    dtype_bytes: int,
    budget: int,
    baseline: int,
    rates: Rates | None = None,
    free_disk: int | None = None,
    high_bit_depth: bool = False,
    images: int = 1,
    disk_rate: float | None = None,
    writeback: int | None = None,
) -> Plan:
    """Predict the cost of one image with the given settings (see the module docstring for the model).

    Args:
        size: (width, height) of the input.
        footprint: :class:`seesr.run.footprint.Footprint` of the weights.
        device_type: "cpu", "cuda" or "mps".
        dtype_bytes: bytes per element of the SD parts (4 fp32, 2 fp16/bf16).
        budget: memory budget in bytes (of the device; of the host on the CPU).
        baseline: host bytes in use before the weights are loaded (this process's RSS now).
        rates: time rates; default :func:`rough_rates`.
        free_disk: free bytes where the bounded VAE's spill files go (default: measured there now); a plan
            whose spill files would not fit does not fit.
        high_bit_depth: the input has more than 8 bits per sample (its condition image is held as float32
            instead of uint8 codes).
        images: images of this size run together in one pipeline call (``--batch-size``): the denoise
            activations scale with them like ``tile_batch``, every image's input and condition image stay alive,
            and the finished outputs wait for the last one; ``seconds`` is for the whole call.
        disk_rate: write rate (bytes/s) of the spill disk (default: ``vae_spill.disk_write_rate``, measured
            once); writeback: bytes of fresh files the page cache holds before writing them (default:
            ``vae_spill.writeback_allowance``). With "spill" statistics, each GroupNorm's files beyond
            ``writeback`` are written at ``disk_rate`` (``Plan.spill_io_seconds``) while the next tiles
            compute: a VAE stage is predicted to take the longer of its compute and its disk writes.
    """
    from seesr.pipeline.sizing import plan_sizes
    from seesr.pipeline.vae_memory import estimate_vae_peak_bytes

    sp = plan_sizes(size, sampling.upscale, sampling.process_size, max_pixels=None)
    pw, ph = sp.processed
    lh, lw = ph // 8, pw // 8
    n_px, target_px = pw * ph, sp.target[0] * sp.target[1]
    grid, tile_px = _grid(lh, lw, tiling, sampling.faithful)
    batch = 2 if sampling.guidance_scale > 1.0 else 1
    tiles_per_call = min(tiling.tile_batch, grid[0] * grid[1])
    s = dtype_bytes
    channels = footprint.vae_channels
    bounded = tiling.vae_mode == "bounded"
    live = 1 if tiling.vae_bounded_stats == "recompute" else tiling.vae_live_tiles
    vae_kw = dict(block_out_channels=channels, mode=tiling.vae_mode, live_tiles=live, dtype_bytes=s)
    enc = estimate_vae_peak_bytes(ph, pw, tiling.vae_encoder_tile_size, part="encoder", **vae_kw)  # type: ignore[arg-type]
    codes = (
        sampling.faithful or not high_bit_depth
    )  # the pipeline's 8-bit chain: the decoder writes uint8 codes
    dec_out_bytes = 1 if codes else 4
    spill_order = bounded and tiling.vae_bounded_stats == "spill"
    dec = estimate_vae_peak_bytes(
        lh, lw, tiling.vae_decoder_tile_size, part="decoder", out_dtype_bytes=dec_out_bytes,
        spill_order=spill_order, **vae_kw,
    )  # type: ignore[arg-type]  # fmt: skip
    disk = 0
    if bounded and tiling.vae_bounded_stats == "spill":  # the states the exact mode would hold, in files
        exact_kw = dict(vae_kw, mode="exact")
        disk = max(
            estimate_vae_peak_bytes(ph, pw, tiling.vae_encoder_tile_size, part="encoder", **exact_kw),  # type: ignore[arg-type]
            estimate_vae_peak_bytes(lh, lw, tiling.vae_decoder_tile_size, part="decoder", **exact_kw),  # type: ignore[arg-type]
        )
    image_in = size[0] * size[1] * 3 * 4 * 2 * images  # decoded inputs + their tensor views/copies
    # the condition images, alive for the whole call: uint8 codes (float32 for inputs over 8 bits); every model
    # and band converts its own crop
    lr_up = (12 if high_bit_depth else 3) * n_px * images
    unet = int(UNET_LIVE_FACTOR * footprint.unet_width * tile_px * batch * tiles_per_call * images * s)
    # the ControlNet's condition embedding, cached per latent tile for the whole loop (denoise.cond_cache_bytes)
    cond_cache = footprint.unet_width * tile_px * grid[0] * grid[1] * s * images
    if sampling.num_inference_steps <= 1:  # one step: not cached (pipeline: cache_cond)
        cond_cache = footprint.unet_width * tile_px * tiles_per_call * s * images
    done = int(OUTPUT_ARRAYS * 12 * target_px) * (images - 1)  # finished results held until the batch returns
    # AdaIN needs only the condition image's statistics, "none" nothing of it: the pipeline frees it before
    # decoding; at the output size the 8-bit chain then colour-fixes the decoder's codes in place
    per_pixel_fix = sampling.color_fix in ("adain", "none")
    lr_up_after = 0 if per_pixel_fix else lr_up
    in_place = per_pixel_fix and codes and not high_bit_depth and sp.target == sp.processed
    result = 0 if in_place else int(OUTPUT_ARRAYS * 12 * target_px)
    # a band is about 1 Mpx of rows (pipeline.postprocess.BAND_PIXELS): an image smaller than that is one band
    band_bytes = IN_PLACE_BAND_BYTES if in_place else POSTPROCESS_BAND_BYTES
    band = min(band_bytes, band_bytes * max(n_px, target_px) // (1 << 20))
    stages = {
        "vae_encode": image_in + lr_up + enc,
        "denoise": image_in + lr_up + cond_cache + unet,
        "vae_decode": image_in + lr_up_after + dec + done,
        "color_fix_resize": image_in
        + lr_up_after
        + done
        + int(DECODED_ARRAYS["codes" if codes else "float"] * 12 * n_px)
        + result
        + band,
    }
    weights = footprint.weights_bytes(s)
    peak_act = max(stages.values())
    if device_type == "cpu":
        host = device = baseline + RUNTIME_OVERHEAD + weights + peak_act
    else:
        device = weights + peak_act
        # the condition image stays on the host; the result is filled there band by band, and the decoder's
        # uint8 codes are written there tile by tile
        host_codes = int(DECODED_ARRAYS["codes"] * 12 * n_px) if codes else 0
        post = lr_up_after + host_codes + result + band
        host = baseline + RUNTIME_OVERHEAD + image_in + post
    r = rates or rough_rates(device_type, footprint.unet_width)
    steps = sampling.num_inference_steps
    overlap_factor = grid[0] * grid[1] * tile_px / max(1, lh * lw)
    enc_factor, dec_factor = vae_time_factors(tiling)
    encode_s = r.vae_encode * n_px * enc_factor
    decode_s = r.vae_decode * n_px * dec_factor
    io_encode = io_decode = 0.0
    if bounded and tiling.vae_bounded_stats == "spill":
        io_encode, io_decode = _spill_io_seconds(
            (ph, pw), (lh, lw), tiling, channels, s, disk_rate=disk_rate, writeback=writeback
        )
    # the kernel writes the files back while the next tiles compute: a VAE stage takes the longer of the two
    seconds = images * (
        r.fixed
        + r.denoise * lh * lw * overlap_factor * batch * steps
        + max(encode_s, io_encode)
        + max(decode_s, io_decode)
    )
    io_seconds = images * (io_encode + io_decode)
    disk_ok = disk == 0 or disk * SPILL_DISK_MARGIN <= (free_disk if free_disk is not None else _free_disk())
    return Plan(
        input_size=(int(size[0]), int(size[1])),
        processed=(pw, ph),
        latent_tiles=grid,
        tiling=tiling,
        vae_encoder_tiles=_vae_tiles(ph, pw, tiling.vae_encoder_tile_size, decoder=False, channels=channels),
        vae_decoder_tiles=_vae_tiles(lh, lw, tiling.vae_decoder_tile_size, decoder=True, channels=channels),
        host_bytes=int(host),
        device_bytes=int(device),
        budget_bytes=int(budget),
        fits=(device if device_type != "cpu" else host) <= budget and disk_ok,
        seconds=float(seconds),
        seconds_basis=r.basis,
        stages={k: int(v) for k, v in stages.items()},
        disk_bytes=int(disk),
        spill_io_seconds=float(io_seconds),
    )


def _spill_io_seconds(
    image_hw: tuple[int, int],
    latent_hw: tuple[int, int],
    tiling: TilingConfig,
    channels: tuple[int, ...],
    dtype_bytes: int,
    *,
    disk_rate: float | None,
    writeback: int | None,
) -> tuple[float, float]:
    """(encoder, decoder) seconds the spill files of one image take to reach the disk: at each GroupNorm the
    bytes beyond what the page cache absorbs (``writeback``) go at ``disk_rate``."""
    from seesr.pipeline import vae_spill
    from seesr.pipeline.vae_memory import spill_barrier_bytes

    kw = dict(block_out_channels=channels, live_tiles=tiling.vae_live_tiles, dtype_bytes=dtype_bytes)
    allowance = vae_spill.writeback_allowance() if writeback is None else writeback
    parts = (
        spill_barrier_bytes(*image_hw, tiling.vae_encoder_tile_size, part="encoder", **kw),  # type: ignore[arg-type]
        spill_barrier_bytes(*latent_hw, tiling.vae_decoder_tile_size, part="decoder", **kw),  # type: ignore[arg-type]
    )
    beyond = [sum(max(0, b - allowance) for b in barriers) for barriers in parts]
    if not any(beyond):
        return 0.0, 0.0
    rate = vae_spill.disk_write_rate() if disk_rate is None else disk_rate
    return beyond[0] / rate, beyond[1] / rate


def _free_disk() -> int:
    from seesr.pipeline.vae_spill import free_disk_bytes

    return free_disk_bytes()


#: latent tiles per ControlNet/UNet call tried first on an accelerator when ``--tile-batch`` is not given: several
#: tiles per call fill a GPU better. Not on the CPU, where 4 or 12 tiles per call ran no faster than one
#: (docs/decisions.md, issue 14 session 5), nor in faithful mode (another batch composition changes the bytes).
ACCELERATOR_TILE_BATCHES = (4, 2)


def _with_tile_batches(
    tiling: TilingConfig, sampling: SamplingConfig, pinned: frozenset[str], device_type: str
) -> Iterator[TilingConfig]:
    """The requested settings with more tiles per call first (when chosen by the budget), then the ladder."""
    if (
        device_type != "cpu"
        and "tile_batch" not in pinned
        and not sampling.faithful
        and tiling.tile_batch == 1
    ):
        for n in ACCELERATOR_TILE_BATCHES:
            yield dataclasses.replace(tiling, tile_batch=n)
    yield from _ladder(tiling, pinned)


def _ladder(tiling: TilingConfig, pinned: frozenset[str]) -> Iterator[TilingConfig]:
    """Settings to try, fastest first: as requested, then bounded VAE, smaller VAE tiles, smaller latent tiles.

    Fields in ``pinned`` (set explicitly by the user) are never changed.
    """
    from seesr.run.settings import default_overlap

    yield tiling
    modes = [tiling.vae_mode] if "vae_mode" in pinned else ["bounded"]
    for mode in modes:
        # "spill" then "recompute" (no disk): both bit-identical to the exact mode ("sampled" is off by up to 40 %)
        # with "spill", fewer tiles kept in memory (more disk traffic) before the much slower "recompute"
        methods = [tiling.vae_bounded_stats] if "vae_bounded_stats" in pinned else ["spill", "recompute"]
        lives = (
            [tiling.vae_live_tiles]
            if "vae_live_tiles" in pinned
            else sorted({tiling.vae_live_tiles, 1})[::-1]
        )
        latents = (
            [tiling.latent_tile_size]
            if "latent_tile_size" in pinned
            else _shrinking(tiling.latent_tile_size, _LATENT_TILES)
        )
        for stats, live, latent in itertools.product(methods, lives, latents):
            if stats != "spill" and live != lives[0]:
                continue  # the live-tile count only matters to "spill" here
            overlap = (
                tiling.latent_tile_overlap
                if "latent_tile_overlap" in pinned or latent == tiling.latent_tile_size
                else default_overlap(latent)
            )
            decs = (
                [tiling.vae_decoder_tile_size]
                if "vae_decoder_tile_size" in pinned
                else _shrinking(tiling.vae_decoder_tile_size, _DECODER_TILES)
            )
            encs = (
                [tiling.vae_encoder_tile_size]
                if "vae_encoder_tile_size" in pinned
                else _shrinking(tiling.vae_encoder_tile_size, _ENCODER_TILES)
            )
            for dec, enc in zip(decs, encs + [encs[-1]] * (len(decs) - len(encs))):
                yield dataclasses.replace(
                    tiling,
                    vae_mode=mode,
                    vae_bounded_stats=stats,
                    vae_live_tiles=live,
                    latent_tile_size=latent,
                    latent_tile_overlap=min(overlap, latent - 1),
                    vae_decoder_tile_size=dec,
                    vae_encoder_tile_size=enc,
                )


def _shrinking(start: int, ladder: tuple[int, ...]) -> list[int]:
    return [start] + [v for v in ladder if v < start]


def choose_plan(
    size: tuple[int, int],
    sampling: SamplingConfig,
    tiling: TilingConfig,
    *,
    pinned: frozenset[str] = frozenset(),
    **kwargs: Any,
) -> Plan:
    """The first plan on the ladder that fits the budget (see :func:`plan_image` for ``kwargs``).

    A fitting bounded plan with "spill" statistics gives way to "recompute" (no disk, one tile in memory, the
    same tiles) when that fits too and is predicted faster: on a slow disk a huge image's spill traffic can
    outlast the recomputation.

    Raises:
        ValueError: even the smallest settings exceed the budget (one line with the smallest prediction).
    """
    smallest: Plan | None = None
    for candidate in _with_tile_batches(tiling, sampling, pinned, kwargs.get("device_type", "cpu")):
        plan = plan_image(size, sampling, candidate, **kwargs)
        if plan.fits:
            spilling = plan.tiling.vae_mode == "bounded" and plan.tiling.vae_bounded_stats == "spill"
            if spilling and plan.spill_io_seconds and "vae_bounded_stats" not in pinned:
                other = dataclasses.replace(plan.tiling, vae_bounded_stats="recompute")
                alternative = plan_image(size, sampling, other, **kwargs)
                if alternative.fits and alternative.seconds < plan.seconds:
                    return alternative
            return plan
        if smallest is None or plan.device_bytes < smallest.device_bytes:
            smallest = plan
    assert smallest is not None
    w, h = size
    need = smallest.device_bytes if kwargs.get("device_type") != "cpu" else smallest.host_bytes
    raise ValueError(
        f"{w}x{h} needs at least {need / GIB:.2f} GiB with the smallest settings (bounded VAE, "
        f"latent tile {smallest.tiling.latent_tile_size}), over the memory budget of "
        f"{smallest.budget_bytes / GIB:.2f} GiB; raise --max-memory, use --dtype fp16 on a GPU, or a smaller "
        "--upscale / image"
    )
