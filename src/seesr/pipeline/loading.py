"""Building a SeeSRPipeline from the released files or from one saved folder (issue 4 part 2).

Two folder layouts load with :func:`load_folder`:

* ``save_pretrained`` / ``seesr convert``: ``model_index.json``, ``vae/``, ``text_encoder/``, ``tokenizer/``,
  ``scheduler/``, ``unet/``, ``controlnet/``, ``dape/`` (DAPE as safetensors, LoRA merged), and for the turbo
  preset ``turbo-unet/`` + ``turbo-scheduler/``;
* ``seesr download``: ``sd2-base/``, ``seesr/seesr/{unet,controlnet}``, ``seesr/DAPE.pth``, ``ram/`` (+ ``sd-turbo/``).
  When a folder holds both (``seesr convert --keep-originals``), the converted one is loaded (faster).

No silent fallbacks (DESIGN §2.9): a missing DAPE is an error unless the caller asks for another ``tagger``,
and :func:`check_preset_weights` refuses the turbo preset on a pipeline without the sd-turbo UNet.
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
from seesr.pipeline.devices import resolve_device, resolve_dtype

logger = logging.getLogger(__name__)

#: what the pipeline tags with: DAPE (RAM + DAPE LoRA, the default), plain RAM, or nothing (tags given by the
#: caller or prompt_mode "none")
TAGGERS = ("dape", "ram", "none")
#: the UNet base a pipeline was loaded with, set by the loaders: "sd2" or "sd-turbo"
UNET_BASE_ATTR = "unet_base"


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


def _check_tagger(tagger: str) -> None:
    if tagger not in TAGGERS:
        raise ValueError(f"tagger must be one of {', '.join(TAGGERS)}; got {tagger!r}")


def check_preset_weights(preset: str, pipe: Any) -> None:
    """Refuse a preset the loaded weights cannot run (instead of quietly running something else).

    Raises:
        WeightsError: ``preset == "turbo"`` on a pipeline without the sd-turbo UNet, or another preset on a
            pipeline that carries it.
    """
    base = getattr(pipe, UNET_BASE_ATTR, "sd2")
    if preset == "turbo" and base != "sd-turbo":
        raise WeightsError(
            "preset turbo needs the sd-turbo UNet, which this pipeline was loaded without: run "
            "`seesr download --turbo` (or pass --turbo-unet DIR with an sd-turbo folder)"
        )
    if preset != "turbo" and base == "sd-turbo":
        raise WeightsError(
            f"this pipeline carries the sd-turbo UNet, made for preset turbo, not {preset!r}: load it without "
            "turbo or use --preset turbo"
        )


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
    tagger: str = "dape",
    device: str | torch.device | None = "cpu",
    dtype: torch.dtype | str | None = None,
    dape_dtype: torch.dtype | str | None = None,
):
    """SeeSRPipeline from the released parts, unchanged.

    Args:
        sd2: SD-2-base diffusers folder or hub id (only the files the loader reads are fetched; the community
            mirror is tried when stabilityai's repository is gone).
        seesr: the released ``seesr/`` folder (``unet/`` + ``controlnet/``), or hub id (``CSWRY/SeeSR``).
        ram: ``ram_swin_large_14m.pth`` (needed unless ``tagger="none"``).
        dape: ``DAPE.pth`` (LoRA); needed when ``tagger="dape"``, refused otherwise.
        tag_list, thresholds: RAM's tag list files; default: beside ``ram``.
        dape_arch: a non-default RAM architecture (``arch.json``; the test fixtures use a reduced Swin).
        turbo_unet: an sd-turbo folder (``unet/``, ``scheduler/``) or hub id: its UNet + SeeSR's RCA, its
            scheduler; the pipeline then reports ``unet_base == "sd-turbo"``.
        tagger: "dape" (default), "ram" (plain RAM, explicitly asked for), "none" (no tagger; the caller gives
            tags or uses prompt_mode "none").
        device: "cpu", "cuda", "mps", "auto".
        dtype: dtype of the SD parts (fp32 default; fp16/bf16 on GPUs). DAPE uses ``dape_dtype`` (fp32).

    Raises:
        WeightsError: a part is missing (e.g. DAPE with ``tagger="dape"``), or cannot be fetched.
        ValueError: ``tagger`` unknown, or ``dape`` given with a tagger that does not use it.
    """
    _check_tagger(tagger)
    if tagger != "none" and ram is None:
        raise WeightsError(
            f"tagger {tagger!r} needs the RAM checkpoint (ram=ram_swin_large_14m.pth); pass tagger='none' to "
            "load without a tagger"
        )
    if tagger == "dape" and dape is None:
        raise WeightsError(
            "no DAPE.pth given (dape=None): pass dape=DAPE.pth, or ask for plain RAM explicitly with "
            "tagger='ram' (CLI: --no-dape)"
        )
    if tagger != "dape" and dape is not None:
        raise ValueError(f"dape={dape} given with tagger={tagger!r}, which does not use it; drop one of them")
    dt, dev = resolve_dtype(dtype), resolve_device(device)
    sd2_dir = weights.resolve(sd2, what="SD-2 base", part="sd2-base")
    seesr_dir = weights.resolve(seesr, what="SeeSR weights", part="seesr")
    if (seesr_dir / "seesr" / "unet").is_dir():  # the hub repository nests the release in seesr/
        seesr_dir = seesr_dir / "seesr"
    parts = _sd2_parts(sd2_dir, dt)
    if turbo_unet is not None:
        turbo_dir = weights.resolve(turbo_unet, what="SD-Turbo base", part="sd-turbo")
        unet, provenance = SeeSRUNet.from_base_and_rca(turbo_dir / "unet", seesr_dir / "unet", torch_dtype=dt)
        logger.info("turbo UNet: %d keys from %s, RCA from %s", len(provenance), turbo_dir, seesr_dir)
        parts["scheduler"] = DDPMScheduler.from_pretrained(turbo_dir, subfolder="scheduler")
    else:
        unet = SeeSRUNet.from_pretrained(seesr_dir, subfolder="unet", torch_dtype=dt)
    controlnet = SeeSRControlNet.from_pretrained(seesr_dir, subfolder="controlnet", torch_dtype=dt)
    dape_model = None
    if tagger != "none":
        assert ram is not None
        ram_path = weights.resolve(ram, what="RAM checkpoint")
        if tag_list is None or thresholds is None:
            found = weights.find_tag_files(ram_path)
            tag_list, thresholds = tag_list or found[0], thresholds or found[1]
        dape_model = load_official_dape(
            ram_path, dape, tag_list=tag_list, thresholds=thresholds, arch=dape_arch
        )
        dape_model = dape_model.to(resolve_dtype(dape_dtype))
    pipe = cls(unet=unet, controlnet=controlnet, dape=dape_model, **parts)
    pipe.unet.eval(), pipe.controlnet.eval()
    setattr(pipe, UNET_BASE_ATTR, "sd-turbo" if turbo_unet is not None else "sd2")
    return pipe.to(dev)


def _load_downloaded(cls: type, root: Path, *, turbo: bool, tagger: str, **kw: Any):
    turbo_dir = root / "sd-turbo"
    if turbo and not (turbo_dir / "unet").is_dir():
        raise WeightsError(
            f"preset turbo needs {turbo_dir}/unet (run `seesr download {root} --turbo`, or pass --turbo-unet DIR)"
        )
    dape_path = root / "seesr" / "DAPE.pth"
    if tagger == "dape" and not dape_path.is_file():
        raise WeightsError(
            f"weights folder {root} has no seesr/DAPE.pth: run `seesr download {root}` to fetch it, or ask "
            "for plain RAM explicitly (tagger='ram', CLI: --no-dape)"
        )
    return load_official(
        cls,
        root / "sd2-base",
        root / "seesr",
        ram=root / "ram" / "ram_swin_large_14m.pth" if tagger != "none" else None,
        dape=dape_path if tagger == "dape" else None,
        turbo_unet=turbo_dir if turbo else None,
        tagger=tagger,
        **kw,
    )


def load_folder(
    cls: type,
    directory: str | Path,
    *,
    device: str | torch.device | None = "cpu",
    dtype: torch.dtype | str | None = None,
    dape_dtype: torch.dtype | str | None = None,
    turbo: bool = False,
    tagger: str = "dape",
    dape_arch: Any = None,
):
    """Load a converted/``save_pretrained`` folder or a ``seesr download`` folder (see the module docstring).

    Args:
        turbo: load the sd-turbo UNet + scheduler (preset turbo); an error when the folder has none.
        tagger: "dape" (default; an error when the folder has no DAPE), "ram" (plain RAM: needs the raw
            ``ram/ram_swin_large_14m.pth``), "none" (no tagger).
        dape_arch: a non-default RAM architecture for the raw checkpoint (see :func:`load_official`).

    Raises:
        WeightsError: the folder is neither layout, or a part the arguments ask for is missing.
    """
    _check_tagger(tagger)
    root = Path(directory).expanduser()
    if not root.is_dir():
        raise WeightsError(f"weights folder {root} does not exist (make one with `seesr download {root}`)")
    converted = (root / "model_index.json").is_file()
    downloaded = (root / "sd2-base").is_dir() and (root / "seesr").is_dir()
    kw: dict[str, Any] = {"device": device, "dtype": dtype, "dape_dtype": dape_dtype}
    if downloaded and (not converted or tagger == "ram"):
        return _load_downloaded(cls, root, turbo=turbo, tagger=tagger, dape_arch=dape_arch, **kw)
    if not converted:
        raise WeightsError(
            f"{root} is not a seesr weights folder: expected model_index.json (from save_pretrained or "
            "`seesr convert`) or sd2-base/ + seesr/ + ram/ (from `seesr download`)"
        )
    if tagger == "ram":
        raise WeightsError(
            f"plain RAM needs the raw ram/ram_swin_large_14m.pth, which {root} does not keep (converted folders "
            "hold DAPE merged); run `seesr download` into another folder for plain RAM"
        )
    if tagger == "dape" and not (root / "dape").is_dir():
        raise WeightsError(
            f"weights folder {root} has no dape/: convert a folder with DAPE (`seesr convert`), or load without "
            "a tagger explicitly (tagger='none')"
        )
    raw_turbo = root / "sd-turbo"
    if turbo and not (root / "turbo-unet").is_dir() and not (raw_turbo / "unet").is_dir():
        raise WeightsError(
            f"preset turbo needs the sd-turbo UNet, which {root} lacks: run `seesr download --turbo {root}` "
            "(or pass --turbo-unet DIR)"
        )
    if not turbo and not (root / "unet").is_dir():
        raise WeightsError(f"{root} holds only the turbo UNet (turbo-unet/); load it with turbo=True")
    dt, dev = resolve_dtype(dtype), resolve_device(device)
    parts = _sd2_parts(root, dt)
    base = "sd-turbo" if turbo else "sd2"
    if turbo and not (root / "turbo-unet").is_dir():  # downloaded after the conversion: RCA from unet/
        unet, _ = SeeSRUNet.from_base_and_rca(raw_turbo / "unet", root / "unet", torch_dtype=dt)
        parts["scheduler"] = DDPMScheduler.from_pretrained(raw_turbo, subfolder="scheduler")
    elif turbo:
        unet = SeeSRUNet.from_pretrained(root, subfolder="turbo-unet", torch_dtype=dt)
        parts["scheduler"] = DDPMScheduler.from_pretrained(root, subfolder="turbo-scheduler")
    else:
        unet = SeeSRUNet.from_pretrained(root, subfolder="unet", torch_dtype=dt)
    controlnet = SeeSRControlNet.from_pretrained(root, subfolder="controlnet", torch_dtype=dt)
    dape_model = load_dape(root / "dape").to(resolve_dtype(dape_dtype)) if tagger == "dape" else None
    pipe = cls(unet=unet, controlnet=controlnet, dape=dape_model, **parts)
    setattr(pipe, UNET_BASE_ATTR, base)
    return pipe.to(dev)


def save_folder(pipe: Any, directory: str | Path) -> None:
    """Write every component of ``pipe`` into ``directory`` (see the module docstring).

    A pipeline carrying the sd-turbo UNet writes it as ``turbo-unet/`` + ``turbo-scheduler/`` (so the folder
    loads with ``turbo=True``); its ``unet/`` + ``scheduler/`` must then come from an SD-2 pipeline.
    """
    root = Path(directory).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    turbo = getattr(pipe, UNET_BASE_ATTR, "sd2") == "sd-turbo"
    for name in ("vae", "text_encoder", "tokenizer", "scheduler", "unet", "controlnet"):
        sub = f"turbo-{name}" if turbo and name in ("unet", "scheduler") else name
        getattr(pipe, name).save_pretrained(root / sub)
    if pipe.dape is not None:
        save_dape(pipe.dape, root / "dape")
    pipe.save_config(root)
