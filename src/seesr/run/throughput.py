"""Throughput measured by earlier runs on this machine, the basis of the plan's time prediction.

After each image the run layer divides each stage's seconds by its amount of work (latent pixels x batch x
steps for the denoiser, processed pixels for the VAE) and keeps a running mean per (device, dtype, architecture)
in a small JSON file (``~/.cache/seesr/throughput.json``). A plan on the same machine then predicts from what was
measured instead of a rough default.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from seesr.run.plan import Plan, Rates, rough_rates, vae_time_factors


def cache_file(env: Mapping[str, str] | None = None) -> Path:
    """``$SEESR_CACHE/throughput.json``, else ``~/.cache/seesr/throughput.json``."""
    env = os.environ if env is None else env
    root = Path(env["SEESR_CACHE"]) if env.get("SEESR_CACHE") else Path.home() / ".cache" / "seesr"
    return root / "throughput.json"


def key(device: Any, dtype: Any, signature: str) -> str:
    """The record key: device name (GPU model on CUDA), dtype and architecture signature."""
    name = str(device)
    if getattr(device, "type", None) == "cuda":
        import torch

        name = torch.cuda.get_device_name(device)
    return f"{name}|{str(dtype).removeprefix('torch.')}|{signature}"


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def load_rates(path: Path, record_key: str, device_type: str, unet_width: int) -> Rates:
    """Recorded rates for ``record_key``, else :func:`seesr.run.plan.rough_rates`."""
    entry = _read(path).get(record_key)
    if not isinstance(entry, dict) or not entry.get("runs"):
        return rough_rates(device_type, unet_width)
    return Rates(
        denoise=float(entry["denoise"]),
        vae_encode=float(entry["vae_encode"]),
        vae_decode=float(entry["vae_decode"]),
        fixed=float(entry["fixed"]),
        basis=f"measured by {int(entry['runs'])} earlier run(s) here",
    )


def record_run(
    path: Path, record_key: str, plan: Plan, timings: Mapping[str, float], *, steps: int, batch: int
) -> None:
    """Fold one image's stage timings into the running means of ``record_key`` (best effort: never raises)."""
    try:
        pw, ph = plan.processed
        lh, lw = ph // 8, pw // 8
        rows, cols = plan.latent_tiles
        tile_work = lh * lw if (rows, cols) == (1, 1) else rows * cols * plan.tiling.latent_tile_size**2
        enc_factor, dec_factor = vae_time_factors(plan.tiling)
        sample = {
            "denoise": timings["denoise"] / max(1, tile_work * batch * steps),
            "vae_encode": timings.get("vae_encode", 0.0) / max(1, pw * ph) / enc_factor,
            "vae_decode": timings["vae_decode"] / max(1, pw * ph) / dec_factor,
            "fixed": sum(timings.get(k, 0.0) for k in ("dape", "text", "color_fix_resize", "write")),
        }
        data = _read(path)
        found = data.get(record_key)
        entry: dict[str, Any] = dict(found) if isinstance(found, dict) else {}
        runs = int(entry.get("runs", 0))
        weight = 1.0 / (runs + 1) if runs < 9 else 0.1  # running mean, then an exponential one
        for name, value in sample.items():
            old = float(entry.get(name, value))
            entry[name] = old + weight * (value - old)
        entry["runs"] = runs + 1
        data[record_key] = entry
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, path)
    except (KeyError, OSError, TypeError, ValueError):
        return
