"""One prepared throughput suite for a GPU (issue 14): SD-2-size random weights, offline, < 5 min on one H100.

Each row is printed and appended (JSON lines) to ``--out`` as soon as it is measured, so a run cut short still
reports. Rows, per dtype (fp16, bf16):

* ``step``      per-step ms of ControlNet+UNet+RCA (CFG batch 2, 512² = latent 64) vs the stock diffusers
                ControlNet+UNet without RCA, same size, same run; peak device memory;
* ``flops``     FLOPs of one SeeSR step counted by ``torch.utils.flop_counter.FlopCounterMode`` (matmuls and
                convolutions; attention through SDPA counted too) -> achieved TFLOP/s vs the measured matmul peak;
* ``e2e``       a 512² output at 50 steps end to end through ``SeeSRPipeline.__call__`` (VAE encode, denoise,
                decode, colour fix; DAPE excluded: the soft prompt is given), eager and compiled (fp16 only);
* ``tiled``     2048² output (latent 256, tiles of 96, overlap 32): one step's time x 50;
* ``batch8``    images/s for a batch of 8 at 512², 50 steps, through ``__call__``.

Run with ``benchmarks/gpu_suite.sh`` (installs wheels beside it without touching torch). ``--tiny --device cpu``
runs the same code on tiny random models in a minute, to check that it works.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import CONFIGS, DTYPES, count_flops, matmul_rate  # noqa: E402

SD2_VAE = dict(
    block_out_channels=[128, 256, 512, 512],
    down_block_types=["DownEncoderBlock2D"] * 4,
    up_block_types=["UpDecoderBlock2D"] * 4,
    layers_per_block=2,
    latent_channels=4,
    norm_num_groups=32,
    sample_size=768,
)
TINY_VAE = {**SD2_VAE, "block_out_channels": [32, 32, 32, 32]}
SD2_TEXT = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=23, num_attention_heads=16)
TINY_TEXT = dict(hidden_size=16, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)


class Rows:
    """Prints each row and appends it to a JSON-lines file at once."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def __call__(self, **row: Any) -> None:
        row = {"time": time.strftime("%H:%M:%S"), **row}
        line = json.dumps(row)
        print(line, flush=True)
        with self.path.open("a") as f:
            f.write(line + "\n")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(fn: Callable[[], Any], device: torch.device, repeat: int) -> tuple[float, float]:
    """Median seconds over ``repeat`` calls after one warm-up, and peak device MB (0 on the CPU)."""
    fn()
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else 0.0
    return sorted(times)[len(times) // 2], peak


def matmul_peak(device: torch.device, n: int) -> float:
    """Measured bf16 (fp32 on the CPU) matmul TFLOP/s for an n x n x n product (best of 10)."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    return matmul_rate(device, dtype, n, repeat=10) / 1e12


def _tokenizer(folder: Path):
    """A byte-level CLIP tokenizer with no merges (no vocabulary files exist offline; speed does not care)."""
    from transformers import CLIPTokenizer

    # byte-level BPE alphabet: printable Latin-1 bytes stand for themselves, the rest map above U+0100
    keep = [*range(33, 127), *range(161, 173), *range(174, 256)]
    extra = [b for b in range(256) if b not in keep]
    chars = [chr(b) for b in keep] + [chr(256 + i) for i in range(len(extra))]
    vocab = {c: i for i, c in enumerate(chars + [c + "</w>" for c in chars])}
    vocab.update({"<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1})
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(
        str(folder / "vocab.json"), str(folder / "merges.txt"), pad_token="!", model_max_length=77
    )


def build_pipeline(tiny: bool, device: torch.device, dtype: torch.dtype, tmp: Path):
    from diffusers import AutoencoderKL, DDPMScheduler
    from transformers import CLIPTextConfig, CLIPTextModel

    from seesr.models.controlnet import SeeSRControlNet
    from seesr.models.unet import SeeSRUNet
    from seesr.pipeline.pipeline import SeeSRPipeline

    cfg = CONFIGS["tiny" if tiny else "sd2"]
    unet = SeeSRUNet(**cfg, use_image_cross_attention=True)
    controlnet = SeeSRControlNet.from_unet(unet)
    text = CLIPTextModel(CLIPTextConfig(**(TINY_TEXT if tiny else SD2_TEXT), vocab_size=49408))
    pipe = SeeSRPipeline(
        vae=AutoencoderKL(**(TINY_VAE if tiny else SD2_VAE)),
        text_encoder=text,
        tokenizer=_tokenizer(tmp),
        scheduler=DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012),
        unet=unet,
        controlnet=controlnet,
        dape=None,
    )
    return pipe.to(device, dtype)


def stock_models(tiny: bool, device: torch.device, dtype: torch.dtype):
    from diffusers import ControlNetModel, UNet2DConditionModel

    unet = UNet2DConditionModel(**CONFIGS["tiny" if tiny else "sd2"])
    return unet.to(device, dtype).eval(), ControlNetModel.from_unet(unet).to(device, dtype).eval()


def step_inputs(latent: int, text_dim: int, device, dtype, batch: int = 1):
    g = torch.Generator().manual_seed(0)
    return dict(
        x=torch.randn(batch, 4, latent, latent, generator=g).to(device, dtype),
        text=torch.randn(2 * batch, 77, text_dim, generator=g).to(device, dtype),
        soft=torch.randn(batch, 145, 512, generator=g).to(device, dtype),
        cond=torch.rand(batch, 3, 8 * latent, 8 * latent, generator=g).to(device, dtype),
    )


def run_suite(args: argparse.Namespace, rows: Rows) -> None:
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    rows(row="env", device=name, torch=torch.__version__, tiny=args.tiny, threads=torch.get_num_threads())
    peak = matmul_peak(device, 256 if args.tiny else 8192)
    rows(row="matmul_peak", tflops=round(peak, 4), dtype="bf16" if device.type == "cuda" else "fp32")
    latent, steps = (16, 2) if args.tiny else (64, 50)
    big_latent = 64 if args.tiny else 256
    text_dim = CONFIGS["tiny" if args.tiny else "sd2"]["cross_attention_dim"]
    for dname in args.dtypes.split(","):
        run_dtype(args, rows, dname, peak, latent, steps, big_latent, text_dim)
        if device.type == "cuda":
            torch.cuda.empty_cache()


def run_dtype(
    args, rows: Rows, dname: str, peak: float, latent: int, steps: int, big_latent: int, text_dim: int
):
    """Every row of one dtype (models built once)."""
    from diffusers import DDPMScheduler

    from seesr.config import SamplingConfig, TilingConfig
    from seesr.pipeline.denoise import GuidedDenoiser

    device = torch.device(args.device)
    sched = DDPMScheduler()
    t = torch.tensor(500, device=device)
    dtype = DTYPES[dname]
    with tempfile.TemporaryDirectory() as tmp:
        pipe = build_pipeline(args.tiny, device, dtype, Path(tmp))
    inp = step_inputs(latent, text_dim, device, dtype)

    def denoiser_for(inp, lat, tiling=None):
        return GuidedDenoiser(
            pipe.unet,
            pipe.controlnet,
            inp["cond"],
            inp["text"],
            inp["soft"],
            SamplingConfig(),
            tiling or TilingConfig(),
            (lat, lat),
        )

    den = denoiser_for(inp, latent)
    with torch.no_grad():
        sec, mem = measure(lambda: den(inp["x"], t, sched), device, args.repeat)
    s_unet, s_cn = stock_models(args.tiny, device, dtype)
    x2, cond2 = torch.cat([inp["x"]] * 2), torch.cat([inp["cond"]] * 2)

    @torch.no_grad()
    def stock_step():
        down, mid = s_cn(x2, t, inp["text"], cond2, return_dict=False)
        return s_unet(
            x2, t, inp["text"], down_block_additional_residuals=down, mid_block_additional_residual=mid
        )

    sec0, mem0 = measure(stock_step, device, args.repeat)
    rows(
        row="step",
        dtype=dname,
        px=8 * latent,
        seesr_ms=round(sec * 1e3, 2),
        stock_ms=round(sec0 * 1e3, 2),
        rca_overhead=round(sec / sec0, 3),
        seesr_peak_mb=round(mem),
        stock_peak_mb=round(mem0),
    )
    flops, _ = count_flops(lambda: den(inp["x"], t, sched))
    rows(
        row="flops",
        dtype=dname,
        gflop_per_step=round(flops / 1e9, 1),
        tflops=round(flops / sec / 1e12, 2),
        fraction_of_matmul_peak=round(flops / sec / 1e12 / peak, 3),
        counter="torch.utils.flop_counter",
    )

    lr = torch.rand(1, 3, 2 * latent, 2 * latent, generator=torch.Generator().manual_seed(1)) * 0.99
    sampling = SamplingConfig(num_inference_steps=steps, process_size=8 * latent)
    kw = dict(tags=[], image_embeds=inp["soft"][:1].float(), show_progress=False)

    def e2e():
        return pipe(lr, sampling, **kw)

    sec, mem = measure(e2e, device, 1)
    rows(
        row="e2e",
        dtype=dname,
        px=8 * latent,
        steps=steps,
        compiled=False,
        s_per_image=round(sec, 3),
        peak_mb=round(mem),
        note="DAPE excluded (soft prompt given)",
    )

    big = step_inputs(big_latent, text_dim, device, dtype)
    tiling = TilingConfig(
        latent_tile_size=latent + latent // 2, latent_tile_overlap=latent // 2, tile_batch=args.tile_batch
    )
    den_big = denoiser_for(big, big_latent, tiling)
    with torch.no_grad():
        sec, mem = measure(lambda: den_big(big["x"], t, sched), device, 1)
    rows(
        row="tiled",
        dtype=dname,
        px=8 * big_latent,
        tiles=len(den_big.boxes or [1]),
        tile_batch=args.tile_batch,
        step_s=round(sec, 3),
        x50_s=round(50 * sec, 2),
        peak_mb=round(mem),
    )

    batch = [lr] * 8
    sec, mem = measure(
        lambda: pipe(batch, sampling, **{**kw, "image_embeds": inp["soft"][:1].float().repeat(8, 1, 1)}),
        device,
        1,
    )
    rows(
        row="batch8",
        dtype=dname,
        px=8 * latent,
        steps=steps,
        images_per_s=round(8 / sec, 3),
        peak_mb=round(mem),
    )

    if args.compile and dname == args.dtypes.split(",")[0]:
        from seesr.pipeline.compile import compile_models

        t0 = time.perf_counter()
        compile_models(pipe, regional=args.regional, backend=args.backend)
        e2e()
        sync(device)
        rows(
            row="compile",
            dtype=dname,
            regional=args.regional,
            backend=args.backend,
            first_call_s=round(time.perf_counter() - t0, 1),
        )
        sec, mem = measure(e2e, device, 1)
        rows(
            row="e2e",
            dtype=dname,
            px=8 * latent,
            steps=steps,
            compiled=True,
            s_per_image=round(sec, 3),
            peak_mb=round(mem),
            note="DAPE excluded (soft prompt given)",
        )
    if device.type == "cuda":
        torch.cuda.empty_cache()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--tiny", action="store_true", help="tiny random models (a check that the suite runs)")
    ap.add_argument("--dtypes", default="fp16,bf16")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--tile-batch", type=int, default=4)
    ap.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--regional", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--backend", default="inductor")
    ap.add_argument("--out", type=Path, default=Path("gpu_suite_results.jsonl"))
    args = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = True
    run_suite(args, Rows(args.out))


if __name__ == "__main__":
    main()
