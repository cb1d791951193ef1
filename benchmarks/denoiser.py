"""One CFG denoiser step (ControlNet + UNet, batch 2) of SeeSR vs the same models without RCA.

Random weights (timing does not depend on values). Prints a table: seconds per step, peak memory, and the ratio
to the no-RCA baseline built in the same run.

A step is timed as the pipeline runs it: through ``seesr.pipeline.denoise.GuidedDenoiser`` (per-tile condition
embedding computed once, then reused at every step) when that module exists; with an older seesr on PYTHONPATH
(e.g. ``PYTHONPATH=/work/main/src``) the models are called directly as the old pipeline did, so the two can be
compared back to back.

``--compile`` adds a row for the same SeeSR models after ``seesr.pipeline.compile.compile_models`` (regional
inductor compile; the first call's seconds, compile included, are printed apart). ``--roofline`` counts one SeeSR
step's FLOPs (``torch.utils.flop_counter``: matmuls, convolutions, SDPA) and measures the device's fp32 (bf16 on
CUDA) matmul and 3x3-convolution rates, to print the achieved rate and the shortest step those rates allow.

    python benchmarks/denoiser.py --config sd2 --latent 64 --dtype fp32 --device cpu --repeat 1
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import CONFIGS, DTYPES, count_flops, flop_rate, matmul_rate, timed  # noqa: E402

import seesr  # noqa: E402
from seesr.models.controlnet import SeeSRControlNet  # noqa: E402
from seesr.models.unet import SeeSRUNet  # noqa: E402


def build(config: dict, rca: bool, device: torch.device, dtype: torch.dtype):
    unet = SeeSRUNet(**config, use_image_cross_attention=rca)
    controlnet = SeeSRControlNet.from_unet(unet)
    return unet.to(device, dtype).eval(), controlnet.to(device, dtype).eval()


def step_fn(unet, controlnet, latent: int, device, dtype, text_dim: int, *, channels_last: bool = False):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, latent, latent, generator=g).to(device, dtype)
    text = torch.randn(2, 77, text_dim, generator=g).to(device, dtype)
    soft = torch.randn(2, 145, 512, generator=g).to(device, dtype)
    cond = torch.rand(2, 3, 8 * latent, 8 * latent, generator=g).to(device, dtype)
    t = torch.tensor(500, device=device)
    rca = unet.num_rca_modules > 0
    kw = {"image_encoder_hidden_states": soft} if rca else {}
    if channels_last:
        x, cond = x.to(memory_format=torch.channels_last), cond.to(memory_format=torch.channels_last)
    try:
        from seesr.config import SamplingConfig, TilingConfig
        from seesr.pipeline.denoise import GuidedDenoiser
    except ImportError:  # an older seesr: the models called directly, as its pipeline did
        GuidedDenoiser = None  # noqa: N806

    if GuidedDenoiser is not None and rca:
        from diffusers import DDPMScheduler

        sched = DDPMScheduler()
        denoiser = GuidedDenoiser(
            unet, controlnet, cond[:1], text, soft[:1], SamplingConfig(), TilingConfig(), (latent, latent)
        )

        @torch.no_grad()
        def run_cached():
            return denoiser(x[:1], t, sched)

        return run_cached

    @torch.no_grad()
    def run():
        down, mid = controlnet(x, t, text, cond, return_dict=False, **kw)
        return unet(x, t, text, down_block_additional_residuals=down, mid_block_additional_residual=mid, **kw)

    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", choices=sorted(CONFIGS), default="sd2")
    ap.add_argument("--latent", type=int, default=64, help="latent side (x8 = pixels)")
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--channels-last", action="store_true", help="models and inputs in channels_last")
    ap.add_argument("--rca-only", action="store_true", help="skip the no-RCA baseline (half the time)")
    ap.add_argument(
        "--profile", action="store_true", help="then profile one more step: the top ops by self time"
    )
    ap.add_argument(
        "--compile", action="store_true", help="add a row: the SeeSR models after regional compile"
    )
    ap.add_argument(
        "--roofline", action="store_true", help="FLOPs of a step vs the measured matmul/conv rates"
    )
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    config = CONFIGS[args.config]
    rows = []
    for rca in (True,) if args.rca_only else (False, True):
        unet, controlnet = build(config, rca, device, dtype)
        if args.channels_last:
            unet, controlnet = (m.to(memory_format=torch.channels_last) for m in (unet, controlnet))
        params = sum(p.numel() for p in unet.parameters()) + sum(p.numel() for p in controlnet.parameters())
        sec, mem = timed(
            step_fn(
                unet,
                controlnet,
                args.latent,
                device,
                dtype,
                config["cross_attention_dim"],
                channels_last=args.channels_last,
            ),
            device,
            args.repeat,
        )
        rows.append(("SeeSR (RCA)" if rca else "no RCA (baseline)", params, sec, mem))
        if args.profile:
            _profile(step_fn(unet, controlnet, args.latent, device, dtype, config["cross_attention_dim"]))
        if rca and args.roofline:
            run = step_fn(unet, controlnet, args.latent, device, dtype, config["cross_attention_dim"])
            _roofline(run, sec, device, dtype)
        if rca and args.compile:
            from seesr.pipeline.compile import compile_models

            compile_models(SimpleNamespace(unet=unet, controlnet=controlnet))
            run = step_fn(unet, controlnet, args.latent, device, dtype, config["cross_attention_dim"])
            t0 = time.perf_counter()
            run()
            print(f"compiled: first step (compile included) {time.perf_counter() - t0:.1f} s")
            sec_c, mem_c = timed(run, device, args.repeat)
            rows.append(("SeeSR compiled", params, sec_c, mem_c))
        del unet, controlnet
    base = rows[0][2]
    print(
        f"\nconfig={args.config} latent={args.latent}x{args.latent} ({8 * args.latent} px) dtype={args.dtype} "
        f"device={args.device} threads={torch.get_num_threads()} batch=2 (CFG) "
        f"channels_last={args.channels_last} seesr={Path(seesr.__file__).parent}"
    )
    print(f"{'model':<20}{'params (M)':>12}{'s/step':>10}{'peak MB':>10}{'x baseline':>12}")
    for name, params, sec, mem in rows:
        print(f"{name:<20}{params / 1e6:>12.1f}{sec:>10.3f}{mem:>10.0f}{sec / base:>12.2f}")


def _roofline(run, step_seconds: float, device: torch.device, dtype: torch.dtype) -> None:
    """One step's counted FLOPs against the device's measured matmul and convolution rates."""
    flops, by_op = count_flops(run)
    n = 2048
    mm = matmul_rate(device, dtype, n)
    conv = torch.nn.Conv2d(320, 320, 3, padding=1).to(device, dtype)
    img = torch.randn(2, 320, 64, 64, device=device, dtype=dtype)
    with torch.no_grad():
        cv = flop_rate(lambda: conv(img), 2 * 2 * 64 * 64 * 320 * 320 * 9, device)
    best = max(mm, cv)
    shares = ", ".join(f"{k} {v / flops:.0%}" for k, v in sorted(by_op.items(), key=lambda kv: -kv[1]))
    print(f"\nroofline: {flops / 1e9:.1f} GFLOP per step ({shares})")
    print(f"  measured: matmul {n}^3 {mm / 1e9:.0f} GFLOP/s, conv 3x3 320ch 64^2 {cv / 1e9:.0f} GFLOP/s")
    print(
        f"  this step: {step_seconds:.2f} s = {flops / step_seconds / 1e9:.0f} GFLOP/s "
        f"({flops / step_seconds / best:.0%} of the faster rate); every FLOP at that rate: {flops / best:.2f} s "
        f"({flops / best / step_seconds:.2f}x this step)"
    )


def _profile(run) -> None:
    """Where one step's time goes: the ops with the most self time (``torch.profiler``, CPU and CUDA)."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with profile(activities=activities) as prof:
        run()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


if __name__ == "__main__":
    main()
