"""Shared helpers of the benchmark scripts: architecture configs, timing and peak memory."""

from __future__ import annotations

import resource
import time
from collections.abc import Callable

import torch

from seesr.models.unet import SD2_BASE_UNET_CONFIG

SD2_UNET = SD2_BASE_UNET_CONFIG
TINY_UNET = dict(
    sample_size=32,
    in_channels=4,
    out_channels=4,
    down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    block_out_channels=[16, 16, 32],
    layers_per_block=2,
    attention_head_dim=[1, 2, 4],
    cross_attention_dim=16,
    use_linear_projection=True,
    norm_num_groups=16,
)
CONFIGS = {"sd2": SD2_UNET, "tiny": TINY_UNET}
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (MB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(fn: Callable[[], object], device: torch.device, repeat: int) -> tuple[float, float]:
    """Median seconds per call over ``repeat`` calls (after one warm-up) and peak memory in MB.

    Peak memory is CUDA's max allocated on GPUs, the process's peak RSS on the CPU.
    """
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    times.sort()
    mem = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else peak_rss_mb()
    return times[len(times) // 2], mem


def _cpu_flash_flops(query_shape, key_shape, value_shape, *args, **kwargs) -> int:
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(query_shape, key_shape, value_shape)


def count_flops(fn: Callable[[], object]) -> tuple[int, dict[str, int]]:
    """FLOPs of one ``fn()`` call, in total and by aten op name (``torch.utils.flop_counter``).

    Matmuls, convolutions and SDPA; the CPU flash-attention op, which torch's table lacks, is counted with the
    same formula as the CUDA ones (2 matmuls: 4·B·H·Lq·Lk·D).
    """
    from torch.utils.flop_counter import FlopCounterMode

    cpu_flash = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    mapping = {cpu_flash: _cpu_flash_flops} if cpu_flash is not None else {}
    counter = FlopCounterMode(display=False, custom_mapping=mapping)
    with torch.no_grad(), counter:
        fn()
    by_op: dict[str, int] = {}
    for op, n in counter.get_flop_counts()["Global"].items():
        name = str(op).split(".")[1] if "." in str(op) else str(op)
        by_op[name] = by_op.get(name, 0) + n
    return counter.get_total_flops(), by_op


def flop_rate(fn: Callable[[], object], flop: float, device: torch.device, repeat: int = 5) -> float:
    """FLOP/s of ``fn`` doing ``flop`` operations: best of ``repeat`` calls after a warm-up (synchronised on CUDA)."""
    fn()
    best = float("inf")
    for _ in range(repeat):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return flop / best


def matmul_rate(device: torch.device, dtype: torch.dtype, n: int = 2048, repeat: int = 5) -> float:
    """Measured FLOP/s of an ``n x n x n`` matrix product in ``dtype``."""
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    return flop_rate(lambda: a @ b, 2 * n**3, device, repeat)
