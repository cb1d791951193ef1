"""Time and peak memory of one SeeSR image against output size: untiled, tiled (exact VAE), tiled (bounded VAE).

Each (config, size, mode) runs in a fresh subprocess so the peak memory is that run's own. ``tiny`` uses the
official-format fixtures (../shared/fixtures); ``sd2`` builds every component at full size with random weights
(timing and memory do not depend on the values). Modes: ``untiled`` turns every tiling stage off by making the
tiles larger than the image; ``tiled`` = ``exact`` is the default tiling (GroupNorm-synchronised tiled VAE);
``bounded`` (= ``spill``) / ``recompute`` / ``sampled`` use the bounded-memory VAE with the tiles waiting in files /
recomputed statistics / sampled statistics, ``--live-tiles`` tiles in memory and ``--decoder-tile`` /
``--encoder-tile`` (the same at every size, so the working set does not grow). Ratios are against
the first mode given. ``--stages`` also prints, per run, every stage's seconds, the process RSS after it and the
peak RSS so far (where the memory goes).

    python benchmarks/pipeline.py --config tiny --sizes 512 1024 2048 --steps 4
    python benchmarks/pipeline.py --config tiny --sizes 1024 2048 4096 8192 --steps 1 --modes exact bounded --stages
    python benchmarks/pipeline.py --config sd2 --sizes 512 1024 --steps 1 --device cuda --dtype fp16
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
FIXTURES = Path(os.environ.get("SEESR_FIXTURES", HERE.parent.parent / "shared" / "fixtures"))


def build_pipeline(config: str, device: str, dtype: str):
    import torch

    sys.path.insert(0, str(HERE))
    from _common import DTYPES, SD2_UNET

    from seesr.pipeline.pipeline import SeeSRPipeline

    ram = FIXTURES / "ram-tiny"
    if config == "tiny":
        return SeeSRPipeline.from_official(
            sd2=FIXTURES / "sd2-tiny", seesr=FIXTURES / "seesr-tiny", ram=ram / "ram_tiny.pth",
            dape=ram / "DAPE_tiny.pth", tag_list=ram / "ram_tag_list.txt",
            thresholds=ram / "ram_tag_list_threshold.txt", dape_arch=ram / "arch.json", device=device,
            dtype=dtype,
        )  # fmt: skip
    from diffusers import AutoencoderKL, DDPMScheduler
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from seesr.models.controlnet import SeeSRControlNet
    from seesr.models.dape import DAPE, DAPEConfig
    from seesr.models.unet import SeeSRUNet

    dt = DTYPES[dtype]
    vae = AutoencoderKL(
        block_out_channels=[128, 256, 512, 512], down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4, layers_per_block=2, latent_channels=4, sample_size=768,
    )  # fmt: skip
    text = CLIPTextModel(CLIPTextConfig(
        vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_hidden_layers=23, num_attention_heads=16,
        max_position_embeddings=77, hidden_act="gelu", projection_dim=512,
    ))  # fmt: skip
    unet = SeeSRUNet(**SD2_UNET, use_image_cross_attention=True)
    controlnet = SeeSRControlNet.from_unet(unet)
    tags = (ram / "ram_tag_list.txt").read_text().splitlines()
    thr = [float(x) for x in (ram / "ram_tag_list_threshold.txt").read_text().split()]
    dape = DAPE(DAPEConfig(), tags, thr).eval()
    pipe = SeeSRPipeline(
        vae=vae.to(dt), text_encoder=text.to(dt), tokenizer=CLIPTokenizer.from_pretrained(FIXTURES / "tokenizer"),
        scheduler=DDPMScheduler.from_pretrained(FIXTURES / "sd2-tiny", subfolder="scheduler"),
        unet=unet.to(dt).eval(), controlnet=controlnet.to(dt).eval(), dape=dape,
    )  # fmt: skip
    return pipe.to(torch.device(device))


def _rss_mb() -> float:
    """Current resident set size (MB) from /proc (0 where unavailable)."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError):
        return 0.0


def _instrument(pipe, stages: dict) -> None:
    """Wrap the pipeline's stage methods to record seconds, RSS after and peak RSS so far per stage."""
    import resource

    import seesr.pipeline.pipeline as pl

    def wrap(owner, name: str, label: str) -> None:
        fn = getattr(owner, name)

        def run(*a, **k):
            t0 = time.perf_counter()
            out = fn(*a, **k)
            rec = stages.setdefault(label, {"sec": 0.0})
            rec["sec"] += time.perf_counter() - t0
            rec["rss_after_mb"] = _rss_mb()
            rec["peak_so_far_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            return out

        setattr(owner, name, run)

    wrap(pipe, "extract_prompt", "dape")
    wrap(pipe, "encode_prompt", "text")
    wrap(pipe, "encode_lr", "vae_encode")
    wrap(pipe, "_predict_noise", "denoise")
    wrap(pipe, "decode_latents", "vae_decode")
    wrap(pl.finishing, "finish_image", "color_fix_resize")


def single(args: argparse.Namespace) -> None:
    import resource

    import torch

    from seesr.config import SamplingConfig, TilingConfig
    from seesr.run.costs import current_rss_bytes

    baseline = current_rss_bytes()  # what the memory plan calls the RSS before loading
    torch.manual_seed(0)
    pipe = build_pipeline(args.config, args.device, args.dtype)
    stages: dict = {"load": {"sec": 0.0, "rss_after_mb": _rss_mb(), "peak_so_far_mb": 0.0}}
    _instrument(pipe, stages)
    lr = _photo(args.size // 4)
    if args.mode == "untiled":
        tiling = TilingConfig(latent_tile_size=10**6, latent_tile_overlap=0, vae_encoder_tile_size=10**7,
                              vae_decoder_tile_size=10**6)  # fmt: skip
    else:
        bounded = args.mode in ("bounded", "spill", "recompute", "sampled")
        stats = {"sampled": "sampled", "recompute": "recompute"}.get(args.mode, "spill")
        sizes = {}
        if bounded and args.decoder_tile:
            sizes["vae_decoder_tile_size"] = args.decoder_tile
        if bounded and args.encoder_tile:
            sizes["vae_encoder_tile_size"] = args.encoder_tile
        tiling = TilingConfig(vae_mode="bounded" if bounded else "exact", vae_bounded_stats=stats,
                              vae_live_tiles=args.live_tiles, **sizes)  # fmt: skip
    sampling = SamplingConfig(num_inference_steps=args.steps, process_size=64, seed=0)
    predicted = _predicted_mb(pipe, (args.size // 4, args.size // 4), sampling, tiling, args, baseline)
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    # the result in the bytes it is written in, as `seesr upscale` and the UI ask for (the API's default is float32)
    result = pipe(lr, sampling, tiling, show_progress=False, output_dtype=torch.uint8)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    sec = time.perf_counter() - t0
    if args.device.startswith("cuda"):
        mem = torch.cuda.max_memory_allocated() / 2**20
    else:
        mem = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    vae_sec = stages.get("vae_encode", {}).get("sec", 0.0) + stages.get("vae_decode", {}).get("sec", 0.0)
    print(json.dumps({"sec": sec, "mem_mb": mem, "out": list(result.image.shape[-2:]), "vae_sec": vae_sec,
                      "tiled": result.settings["latent_tiled"], "stages": stages, "pred_mb": predicted}))  # fmt: skip


def _photo(side: int):
    """(1, 3, side, side) smooth 8-bit stand-in for a photo (values k/255, like a decoded JPEG/PNG), so the run
    takes the pipeline's 8-bit chain as users' photos do; uniform noise in float would take the float chain."""
    import torch
    import torch.nn.functional as F

    small = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    smooth = F.interpolate(small, size=(side, side), mode="bicubic", align_corners=False).clamp(0, 1)
    return torch.round(smooth * 255) / 255


def _predicted_mb(pipe, lr_wh, sampling, tiling, args, baseline: int) -> float:
    """The memory plan's predicted peak (host on the CPU, device on CUDA) for this run, in MB."""
    from seesr.run.footprint import footprint_of_pipeline
    from seesr.run.plan import plan_image

    plan = plan_image(lr_wh, sampling, tiling, footprint=footprint_of_pipeline(pipe),
                      device_type=args.device.split(":")[0], dtype_bytes=2 if args.dtype != "fp32" else 4,
                      budget=2**50, baseline=baseline, free_disk=2**50)  # fmt: skip
    return (plan.host_bytes if args.device == "cpu" else plan.device_bytes) / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", choices=["tiny", "sd2"], default="tiny")
    ap.add_argument("--sizes", type=int, nargs="+", default=[512, 1024, 2048], help="output sides (px)")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "fp16", "bf16"])
    ap.add_argument("--modes", nargs="+", default=["untiled", "tiled"],
                    choices=["untiled", "tiled", "exact", "bounded", "spill", "recompute", "sampled"])  # fmt: skip
    ap.add_argument("--live-tiles", type=int, default=1, help="bounded modes: tiles in memory at once")
    ap.add_argument("--decoder-tile", type=int, default=64, help="bounded modes: decoder tile (latent px)")
    ap.add_argument("--encoder-tile", type=int, default=512, help="bounded modes: encoder tile (px)")
    ap.add_argument("--stages", action="store_true", help="print the per-stage seconds / RSS of every run")
    ap.add_argument("--size", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--mode", help=argparse.SUPPRESS)
    ap.add_argument("--timeout", type=int, default=3600)
    args = ap.parse_args()
    if args.size:
        single(args)
        return
    rows = []
    for size in args.sizes:
        for mode in args.modes:
            cmd = [sys.executable, __file__, "--config", args.config, "--size", str(size), "--mode", mode,
                   "--steps", str(args.steps), "--device", args.device, "--dtype", args.dtype,
                   "--live-tiles", str(args.live_tiles), "--decoder-tile", str(args.decoder_tile),
                   "--encoder-tile", str(args.encoder_tile)]  # fmt: skip
            try:
                out = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
                res = json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else None
            except subprocess.TimeoutExpired:
                res = None
            rows.append((size, mode, res))
            print(f"  {size}² {mode}: {res or 'failed/timeout'}", file=sys.stderr)
    first = args.modes[0]
    print(
        f"\nconfig={args.config} steps={args.steps} device={args.device} dtype={args.dtype} (LR = size/4, a smooth 8-bit image)"
    )
    print(f"| output | mode | s/image | peak MB | planned MB | plan error | VAE s | s vs {first} | MB vs {first} "
          f"| VAE s vs {first} |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    base = {s: r for s, m, r in rows if m == first and r}
    for size, mode, res in rows:
        if res is None:
            print(f"| {size}² | {mode} | — | — | — | — | — | | | |")
            continue
        b = base.get(size)
        ratios = [f"{res[k] / b[k]:.2f}" if b and b[k] else "—" for k in ("sec", "mem_mb", "vae_sec")]
        err = f"{100 * (res['pred_mb'] / res['mem_mb'] - 1):+.0f} %"
        print(f"| {size}² | {mode} | {res['sec']:.1f} | {res['mem_mb']:.0f} | {res['pred_mb']:.0f} | {err} "
              f"| {res['vae_sec']:.1f} | " + " | ".join(ratios) + " |")  # fmt: skip
    if args.stages:
        for size, mode, res in rows:
            if res is None:
                continue
            print(f"\n{size}² {mode}: | stage | s | RSS after MB | peak so far MB |")
            for name, st in res["stages"].items():
                print(f"| {name} | {st['sec']:.1f} | {st['rss_after_mb']:.0f} | {st['peak_so_far_mb']:.0f} |")


if __name__ == "__main__":
    main()
