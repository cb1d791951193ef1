"""Throughput of the Real-ESRGAN degradation: seesr vs BasicSR's own functions at the same settings (spec §6.1).

Pairs/s for 512² GT -> 128² LR (kernel draws + USM (optional) + both stages + final step), on CPU at 1 and 2
threads and on CUDA when present. The BasicSR baseline is SeeSR's ``realesrgan_degradation`` procedure rebuilt from
BasicSR's functions (``USMSharp``, ``filter2D``, ``DiffJPEG``, ``random_add_*_noise_pt``, ``random_mixed_kernels``,
``circular_lowpass_kernel``) with make_paired_data's parameters, batch 1 (BasicSR's DiffJPEG path fails at batch >= 2
on current torch, fixtures README §15). BasicSR is optional (``pip install basicsr``; not a seesr dependency); it needs
``torchvision.transforms.functional_tensor``, which is aliased below.

    python benchmarks/degradation.py [--pairs 6] [--batch 8]

Each row interleaves the two implementations over rounds and reports the median seconds per pair.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from seesr.data.realesrgan import DegradationConfig, RealESRGANDegradation


def _import_basicsr():
    try:
        import torchvision.transforms._functional_tensor as ft

        sys.modules.setdefault("torchvision.transforms.functional_tensor", ft)
        from basicsr.data import degradations as bd
        from basicsr.utils import DiffJPEG, USMSharp
        from basicsr.utils.img_process_util import filter2D
    except Exception as err:  # noqa: BLE001 - any import problem means "no baseline"
        print(f"(BasicSR not importable: {err!r}; baseline skipped)")
        return None
    return bd, DiffJPEG, USMSharp, filter2D


def make_basicsr_baseline(cfg: DegradationConfig, device: torch.device):
    """A callable (gt (1,3,H,W)) -> lr doing what make_paired_data.py does per pair, with BasicSR's functions."""
    mods = _import_basicsr()
    if mods is None:
        return None
    bd, DiffJPEG, USMSharp, filter2D = mods
    jpeger = DiffJPEG(differentiable=False).to(device)
    usm = USMSharp().to(device)
    sizes = list(cfg.kernel_sizes)
    pulse = torch.zeros(21, 21)
    pulse[10, 10] = 1

    def kernel(second: bool):
        size = random.choice(sizes)
        if np.random.uniform() < (cfg.sinc_prob2 if second else cfg.sinc_prob):
            omega = np.random.uniform(math.pi / 3 if size < 13 else math.pi / 5, math.pi)
            k = bd.circular_lowpass_kernel(omega, size, pad_to=False)
        else:
            k = bd.random_mixed_kernels(
                list(cfg.kernel_list2 if second else cfg.kernel_list),
                list(cfg.kernel_prob2 if second else cfg.kernel_prob),
                size,
                cfg.blur_sigma2 if second else cfg.blur_sigma,
                cfg.blur_sigma2 if second else cfg.blur_sigma,
                [-math.pi, math.pi],
                cfg.betag_range2 if second else cfg.betag_range,
                cfg.betap_range2 if second else cfg.betap_range,
                noise_range=None,
            )
        p = (21 - size) // 2
        return torch.FloatTensor(np.pad(k, ((p, p), (p, p))))[None].to(device)

    def resize_draw(probs, rng):
        kind = random.choices(["up", "down", "keep"], probs)[0]
        s = random.uniform(1, rng[1]) if kind == "up" else random.uniform(rng[0], 1) if kind == "down" else 1
        return s, random.choice(["area", "bilinear", "bicubic"])

    def noise(x, p_gauss, sig, pois, gray):
        if random.random() < p_gauss:
            return bd.random_add_gaussian_noise_pt(
                x, sigma_range=sig, clip=True, rounds=False, gray_prob=gray
            )
        return bd.random_add_poisson_noise_pt(x, scale_range=pois, gray_prob=gray, clip=True, rounds=False)

    def jpeg(x, rng):
        q = x.new_zeros(x.size(0)).uniform_(*rng)
        return jpeger(torch.clamp(x, 0, 1), quality=q)

    def run(gt: torch.Tensor, use_usm: bool) -> torch.Tensor:
        k1, k2 = kernel(False), kernel(True)
        if np.random.uniform() < cfg.final_sinc_prob:
            size = random.choice(sizes)
            sinc = torch.FloatTensor(
                bd.circular_lowpass_kernel(np.random.uniform(math.pi / 3, math.pi), size, 21)
            )
            sinc = sinc[None].to(device)
        else:
            sinc = pulse[None].to(device)
        h, w = gt.shape[-2:]
        x = usm(gt) if use_usm else gt
        out = filter2D(x, k1)
        s, mode = resize_draw(cfg.resize_prob, cfg.resize_range)
        out = F.interpolate(out, scale_factor=s, mode=mode)
        out = noise(
            out, cfg.gaussian_noise_prob, cfg.noise_range, cfg.poisson_scale_range, cfg.gray_noise_prob
        )
        out = jpeg(out, cfg.jpeg_range)
        if random.random() < cfg.second_blur_prob:
            out = filter2D(out, k2)
        s, mode = resize_draw(cfg.resize_prob2, cfg.resize_range2)
        out = F.interpolate(out, size=(int(h / 4 * s), int(w / 4 * s)), mode=mode)
        out = noise(
            out, cfg.gaussian_noise_prob2, cfg.noise_range2, cfg.poisson_scale_range2, cfg.gray_noise_prob2
        )
        mode = random.choice(["area", "bilinear", "bicubic"])
        if random.random() < 0.5:
            out = filter2D(F.interpolate(out, size=(h // 4, w // 4), mode=mode), sinc)
            out = jpeg(out, cfg.jpeg_range2)
        else:
            out = jpeg(out, cfg.jpeg_range2)
            out = filter2D(F.interpolate(out, size=(h // 4, w // 4), mode=mode), sinc)
        return torch.clamp(out, 0, 1)

    return run


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench(device: torch.device, threads: int | None, pairs: int, batch: int, rounds: int) -> list[tuple]:
    if threads is not None:
        torch.set_num_threads(threads)
    cfg = DegradationConfig()
    rows = []
    base = make_basicsr_baseline(cfg, device)
    gt = torch.rand(max(batch, 1), 3, 512, 512, generator=torch.Generator().manual_seed(0)).to(device)
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    for use_usm in (True, False):
        deg = RealESRGANDegradation(DegradationConfig(use_usm=use_usm))
        g = torch.Generator(device=device).manual_seed(0)
        deg(gt[:1], g)  # warm-up (FFT plans, allocator)
        if base is not None:
            base(gt[:1], use_usm)
        t_ours1, t_ours_b, t_base = [], [], []
        for _ in range(rounds):
            _sync(device)
            t = time.perf_counter()
            for i in range(pairs):
                deg(gt[i % batch : i % batch + 1], g)
            _sync(device)
            t_ours1.append((time.perf_counter() - t) / pairs)
            t = time.perf_counter()
            n_b = max(1, pairs // batch)
            for _ in range(n_b):
                deg(gt, g)
            _sync(device)
            t_ours_b.append((time.perf_counter() - t) / (n_b * batch))
            if base is not None:
                t = time.perf_counter()
                for i in range(pairs):
                    base(gt[i % batch : i % batch + 1], use_usm)
                _sync(device)
                t_base.append((time.perf_counter() - t) / pairs)
        rows.append(
            (
                device.type,
                threads if device.type == "cpu" else "-",
                "on" if use_usm else "off",
                statistics.median(t_ours1),
                statistics.median(t_ours_b),
                statistics.median(t_base) if t_base else float("nan"),
            )
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=6, help="pairs per implementation per round")
    ap.add_argument("--batch", type=int, default=8, help="batch of the batched seesr row")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()
    rows = []
    with torch.inference_mode():
        for th in args.threads:
            rows += bench(torch.device("cpu"), th, args.pairs, args.batch, args.rounds)
        if torch.cuda.is_available():
            rows += bench(torch.device("cuda"), None, args.pairs * 4, args.batch, args.rounds)
    print(
        f"\n512² GT -> 128² LR, SeeSR make_paired_data parameters; median of {args.rounds} interleaved rounds"
    )
    hdr = (
        "device",
        "threads",
        "USM",
        "seesr b=1 pairs/s",
        f"seesr b={args.batch} pairs/s",
        "BasicSR pairs/s",
    )
    print("| " + " | ".join(hdr) + " | speed-up b=1 | speed-up batched |")
    print("|" + "---|" * (len(hdr) + 2))
    for dev, th, usm, t1, tb, tbase in rows:
        sp1 = tbase / t1 if tbase == tbase else float("nan")
        spb = tbase / tb if tbase == tbase else float("nan")
        print(
            f"| {dev} | {th} | {usm} | {1 / t1:.2f} | {1 / tb:.2f} | {1 / tbase:.2f} | {sp1:.1f}x | {spb:.1f}x |"
        )


if __name__ == "__main__":
    main()
