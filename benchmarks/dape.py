"""Benchmark: full-size DAPE (RAM Swin-L + DAPE LoRA) load time, peak memory and per-image time.

Writes random full-size weights in the OFFICIAL formats to a temporary folder (``ram.pth`` =
``{'model': state_dict}`` with the inference keys, the Swin ``relative_position_index`` buffers and the tied
``tag_encoder`` layers 0-1 — the untouched tag_encoder layers 2-11 / text_decoder are left out to save disk; the
loader never reads them — and ``DAPE.pth`` with all official LoRA keys), then measures in fresh child processes:

* load: ``load_official_dape`` wall time and peak RSS (plain RAM vs RAM + DAPE);
* per image (one 128×128 LR, batch 1): ``DAPE.forward`` (one Swin pass for tags + embeds) vs the official
  call pattern (``generate_tag`` + ``generate_image_embeds`` = two Swin passes), at 1 and 2 CPU threads, and on
  CUDA (fp32 / fp16) when available.

Usage: ``python benchmarks/dape.py [--repeats 3] [--keep DIR]``. Prints a table; ratios are vs the first row of
each block.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _peak_mb() -> float:
    # VmHWM is per address space; ru_maxrss would carry over the (large) parent's peak across fork+exec
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_official_files(folder: Path, seed: int = 0) -> dict[str, Path]:
    """Random full-size ``ram.pth`` / ``DAPE.pth`` / tag list / thresholds in the official formats."""
    import torch

    from seesr.models.dape import DAPE, DAPEConfig
    from seesr.models.swin import relative_position_index
    from seesr.pipeline.dape_lora import med_lora_shapes

    cfg = DAPEConfig()
    g = torch.Generator().manual_seed(seed)
    with torch.device("meta"):
        meta = DAPE(cfg, [f"tag{i}" for i in range(cfg.num_classes)], [0.7] * cfg.num_classes)
    sd: dict[str, torch.Tensor] = {}
    for k, v in meta.state_dict().items():
        sd[k] = torch.randn(v.shape, generator=g) * 0.02
        if k.endswith("LayerNorm.weight") or ".norm" in k and k.endswith("weight"):
            sd[k] += 1.0
        if k.endswith("relative_position_bias_table"):
            sd[k.replace("relative_position_bias_table", "relative_position_index")] = (
                relative_position_index(cfg.window_size)
            )
    for k in list(sd):  # tied copies under the tag_encoder name share storage, as in a real state_dict()
        if k.startswith("tagging_head.encoder.layer."):
            sd["tag_encoder" + k[len("tagging_head") :]] = sd[k]
    torch.save({"model": sd}, folder / "ram.pth")
    lora: dict[str, torch.Tensor] = {}
    r = 8
    for name, layer in meta.lora_layers().items():
        n_on = sum(layer.groups)
        block = layer.out_features // len(layer.groups)
        lora[f"{name}.lora_A"] = (
            torch.randn(r * n_on, layer.in_features, generator=g) / layer.in_features**0.5
        )
        lora[f"{name}.lora_B"] = torch.randn(block * n_on, r, generator=g) * 0.01
    for name, a_shape, b_shape in med_lora_shapes(cfg):
        lora[f"{name}.lora_A"] = torch.randn(a_shape, generator=g) * 0.01
        lora[f"{name}.lora_B"] = torch.zeros(b_shape)
    torch.save(lora, folder / "DAPE.pth")
    (folder / "tags.txt").write_text("\n".join(f"tag{i}" for i in range(cfg.num_classes)))
    (folder / "thr.txt").write_text("\n".join(["0.65"] * cfg.num_classes))
    return {
        k: folder / v
        for k, v in (("ram", "ram.pth"), ("dape", "DAPE.pth"), ("tags", "tags.txt"), ("thr", "thr.txt"))
    }


def child(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    from seesr.pipeline.dape_weights import load_official_dape

    files = json.loads(args.files)
    rss0 = _rss_mb()
    t0 = time.perf_counter()
    model = load_official_dape(
        files["ram"], files["dape"] if args.lora else None, tag_list=files["tags"], thresholds=files["thr"]
    )
    load_s = time.perf_counter() - t0
    device = torch.device(args.device)
    dtype = {"fp32": torch.float32, "fp16": torch.float16}[args.dtype]
    model = model.to(device=device, dtype=dtype)
    lr = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(1)).to(device)
    result = {"load_s": load_s, "rss_after_load_mb": _rss_mb() - rss0}

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def one_pass() -> None:
        model(lr)

    def official_pattern() -> None:
        x = model.preprocess(lr)
        model.tags_from_logits(model.tag_logits(x))
        model.image_embeds(x)

    with torch.inference_mode():
        for name, fn in (("one_pass_s", one_pass), ("official_two_pass_s", official_pattern)):
            if not args.time:
                break
            fn()  # warm-up (also pages in memory-mapped weights)
            sync()
            times = []
            for _ in range(args.repeats):
                t = time.perf_counter()
                fn()
                sync()
                times.append(time.perf_counter() - t)
            result[name] = statistics.median(times)
    result["peak_rss_mb"] = _peak_mb()
    if device.type == "cuda":
        result["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    print("RESULT " + json.dumps(result))


def run_child(files: dict[str, Path], **kw: object) -> dict:
    cmd = [sys.executable, __file__, "--child", "--files", json.dumps({k: str(v) for k, v in files.items()})]
    for k, v in kw.items():
        if isinstance(v, bool):
            if v:
                cmd.append(f"--{k}")
        else:
            cmd += [f"--{k}", str(v)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    for line in out.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    raise RuntimeError(f"child failed ({' '.join(cmd[2:4])}...):\n{out.stderr[-3000:]}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--keep", type=Path, help="write/reuse the random official files here")
    p.add_argument("--no-cpu", action="store_true", help="skip the CPU timings (e.g. on a GPU box)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--files", help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--lora", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--time", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--device", default="cpu", help=argparse.SUPPRESS)
    p.add_argument("--dtype", default="fp32", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args)
        return

    import torch

    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        t = time.perf_counter()
        if args.keep and (folder / "DAPE.pth").is_file():
            files = {
                k: folder / v
                for k, v in (
                    ("ram", "ram.pth"),
                    ("dape", "DAPE.pth"),
                    ("tags", "tags.txt"),
                    ("thr", "thr.txt"),
                )
            }
        else:
            files = write_official_files(folder)
        sizes = {k: os.path.getsize(v) / 2**20 for k, v in files.items() if k in ("ram", "dape")}
        print(
            f"official-format random weights: ram.pth {sizes['ram']:.0f} MiB, DAPE.pth {sizes['dape']:.1f} MiB "
            f"(written in {time.perf_counter() - t:.1f} s)"
        )

        print("\n| load (1 thread, fresh process) | wall s | ratio | RSS after load MiB | peak RSS MiB |")
        print("|---|---|---|---|---|")
        base = None
        for lora in (False, True):
            r = run_child(files, lora=lora, threads=1)
            base = base or r["load_s"]
            name = "RAM + DAPE (merge)" if lora else "plain RAM"
            print(
                f"| {name} | {r['load_s']:.2f} | {r['load_s'] / base:.2f} | {r['rss_after_load_mb']:.0f} "
                f"| {r['peak_rss_mb']:.0f} |"
            )

        print(
            f"\n| per image, 128x128 LR, batch 1 (median of {args.repeats}) | s/image | ratio | peak RSS MiB |"
        )
        print("|---|---|---|---|")
        rows: list[tuple[str, dict[str, object]]] = []
        if not args.no_cpu:
            for threads in (1, 2):
                rows.append((f"cpu fp32, {threads} thread(s)", dict(threads=threads)))
        if torch.cuda.is_available():
            rows.append(("cuda fp32", dict(device="cuda", threads=2)))
            rows.append(("cuda fp16", dict(device="cuda", dtype="fp16", threads=2)))
        base = None
        for name, kw in rows:
            r = run_child(files, lora=True, time=True, repeats=args.repeats, **kw)
            base = base or r["official_two_pass_s"]
            extra = f" (cuda peak {r['cuda_peak_mb']:.0f} MiB)" if "cuda_peak_mb" in r else ""
            print(
                f"| {name}: official pattern (2 Swin passes) | {r['official_two_pass_s']:.3f} | "
                f"{r['official_two_pass_s'] / base:.2f} | {r['peak_rss_mb']:.0f}{extra} |"
            )
            print(
                f"| {name}: DAPE.forward (1 Swin pass) | {r['one_pass_s']:.3f} | {r['one_pass_s'] / base:.2f} | |"
            )


if __name__ == "__main__":
    main()
