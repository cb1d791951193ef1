"""Disk size and pipeline load time: the raw released files vs the `seesr convert` folder, at SD-2 size.

The weights are random but full-size and in the official formats: diffusers safetensors folders for the SD-2
parts and the SeeSR UNet/ControlNet, ``torch.save({'model', 'optimizer', ...})`` for RAM (Adam moments for
every tensor, as RAM's training scripts save; the released file is ~5.6 GB of which ~3.7 GB optimizer state)
and the flat LoRA dict of ``DAPE.pth``. Each load runs in a fresh process; "cold" drops the page cache first
(``/proc/sys/vm/drop_caches``, needs root), "warm" runs right after another load of the same folder.

    flock /tmp/seesr-heavy.lock python benchmarks/convert.py --dir /tmp/seesr-convert-bench
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
FIXTURES = HERE.parent.parent / "shared" / "fixtures"


def _peak_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _du(paths: list[Path]) -> int:
    return sum(f.stat().st_size for p in paths if p.exists() for f in p.rglob("*") if f.is_file())


def build_raw(root: Path) -> None:
    """A `seesr download`-layout folder with random full-size weights (one component in memory at a time)."""
    import torch
    from diffusers import AutoencoderKL
    from transformers import CLIPTextConfig, CLIPTextModel

    sys.path.insert(0, str(HERE))
    from _common import SD2_UNET
    from dape import write_official_files

    from seesr.models.controlnet import SeeSRControlNet
    from seesr.models.unet import SeeSRUNet

    torch.manual_seed(0)
    sd2 = root / "sd2-base"
    AutoencoderKL(
        block_out_channels=[128, 256, 512, 512], down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4, layers_per_block=2, latent_channels=4, sample_size=768,
    ).save_pretrained(sd2 / "vae")  # fmt: skip
    CLIPTextModel(CLIPTextConfig(
        vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_hidden_layers=23, num_attention_heads=16,
        max_position_embeddings=77, hidden_act="gelu", projection_dim=512,
    )).save_pretrained(sd2 / "text_encoder")  # fmt: skip
    shutil.copytree(FIXTURES / "sd2-tiny" / "tokenizer", sd2 / "tokenizer")
    shutil.copytree(FIXTURES / "sd2-tiny" / "scheduler", sd2 / "scheduler")
    unet = SeeSRUNet(**SD2_UNET, use_image_cross_attention=True)
    unet.save_pretrained(root / "seesr" / "seesr" / "unet")
    SeeSRControlNet.from_unet(unet).save_pretrained(root / "seesr" / "seesr" / "controlnet")
    del unet
    tmp = root / "tmp"
    tmp.mkdir()
    files = write_official_files(tmp)
    (root / "ram").mkdir()
    model = torch.load(files["ram"], map_location="cpu", weights_only=True, mmap=True)["model"]
    state = {i: {"step": torch.tensor(1.0), "exp_avg": torch.zeros_like(v), "exp_avg_sq": torch.zeros_like(v)}
             for i, v in enumerate(model.values()) if v.is_floating_point()}  # fmt: skip
    optimizer = {"state": state, "param_groups": [{"lr": 1e-4, "params": list(state)}]}
    torch.save({"model": model, "optimizer": optimizer, "epoch": 0}, root / "ram" / "ram_swin_large_14m.pth")
    del model, state, optimizer
    shutil.move(files["dape"], root / "seesr" / "DAPE.pth")
    for name in ("ram_tag_list.txt", "ram_tag_list_threshold.txt"):
        shutil.copyfile(FIXTURES / "ram-tiny" / name, root / "ram" / name)
    shutil.rmtree(tmp)
    parts = {
        name: {"source": "benchmark", "files": [
            {"path": f.relative_to(root).as_posix(), "size": f.stat().st_size, "sha256": "random"}
            for f in sorted((root / name).rglob("*")) if f.is_file() and (name != "ram" or f.suffix == ".pth")
        ]} for name in ("sd2-base", "seesr", "ram")
    }  # fmt: skip
    parts["ram-tags"] = {"source": "benchmark", "files": [
        {"path": f"ram/{n}", "size": (root / "ram" / n).stat().st_size, "sha256": "fixture"}
        for n in ("ram_tag_list.txt", "ram_tag_list_threshold.txt")
    ]}  # fmt: skip
    (root / "manifest.json").write_text(json.dumps({"format": 1, "parts": parts}, indent=1))


def child_load(folder: Path) -> None:
    from seesr.pipeline.pipeline import SeeSRPipeline

    t0 = time.perf_counter()
    pipe = SeeSRPipeline.from_pretrained(folder, device="cpu")
    sec = time.perf_counter() - t0
    assert pipe.dape is not None
    print(json.dumps({"sec": sec, "peak_mb": _peak_mb()}))


def child_convert(src: Path, dst: Path, dtype: str) -> None:
    from seesr.pipeline.convert import convert_folder

    report = convert_folder(src, dst, dtype=dtype, keep_originals=True)
    print(json.dumps({"sec": report.seconds, "peak_mb": _peak_mb(), "before": report.bytes_before,
                      "after": report.bytes_after}))  # fmt: skip


def _child(*args: str) -> dict:
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"child {args} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _drop_caches() -> bool:
    try:
        subprocess.run(["sync"], check=True)
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/seesr-convert-bench"))
    ap.add_argument("--fp16", action="store_true", help="also convert with --dtype fp16 (size and time only)")
    ap.add_argument("--keep", action="store_true", help="keep the folders afterwards")
    ap.add_argument("--child", choices=["build", "load", "convert"], help=argparse.SUPPRESS)
    ap.add_argument("args", nargs="*", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child == "build":
        build_raw(Path(a.args[0]))
        print("{}")
        return
    if a.child == "load":
        child_load(Path(a.args[0]))
        return
    if a.child == "convert":
        child_convert(Path(a.args[0]), Path(a.args[1]), a.args[2])
        return
    raw, conv = a.dir / "raw", a.dir / "converted"
    shutil.rmtree(a.dir, ignore_errors=True)
    raw.mkdir(parents=True)
    t0 = time.perf_counter()
    _child("--child", "build", str(raw))
    print(f"built random official-format files in {time.perf_counter() - t0:.0f} s", flush=True)
    rows = [("raw download", _du([raw / p for p in ("sd2-base", "seesr", "ram")]), None)]
    c = _child("--child", "convert", str(raw), str(conv), "fp32")
    rows.append(("converted fp32", c["after"], c))
    if a.fp16:
        c16 = _child("--child", "convert", str(raw), str(a.dir / "converted16"), "fp16")
        rows.append(("converted fp16", c16["after"], c16))
    print("\n| folder | disk GB | ratio | convert s | convert peak RSS GB |\n|---|---|---|---|---|")
    for name, size, info in rows:
        extra = f"{info['sec']:.0f} | {info['peak_mb'] / 1024:.1f}" if info else "- | -"
        print(f"| {name} | {size / 1e9:.2f} | {size / rows[0][1]:.2f} | {extra} |")
    cold_ok = _drop_caches()
    loads = {}
    for name, folder in (("raw download", raw), ("converted fp32", conv)):
        for mode in ("cold", "warm"):
            if mode == "cold":
                _drop_caches()
            loads[(name, mode)] = _child("--child", "load", str(folder))
            print(f"  {name} {mode}: {loads[(name, mode)]}", flush=True)
    print(
        f"\ncold = page cache dropped before the load: {'yes' if cold_ok else 'NO (not root): fresh process only'}"
    )
    print(
        "| folder | cold load s | warm load s | warm ratio vs raw | load peak RSS GB (warm) |\n|---|---|---|---|---|"
    )
    base = loads[("raw download", "warm")]["sec"]
    for name in ("raw download", "converted fp32"):
        cold, warm = loads[(name, "cold")], loads[(name, "warm")]
        print(
            f"| {name} | {cold['sec']:.1f} | {warm['sec']:.1f} | {warm['sec'] / base:.2f} | {warm['peak_mb'] / 1024:.1f} |"
        )
    if not a.keep:
        shutil.rmtree(a.dir, ignore_errors=True)


if __name__ == "__main__":
    main()
