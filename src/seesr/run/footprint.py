"""How big the models of a weights choice are, read from config files and tensor headers (nothing loaded).

safetensors files start with a JSON header listing every tensor's dtype and shape; ``.pth``/``.bin`` files are
opened memory-mapped (``weights_only``) so only their pickled index is read. Optimizer state in the official RAM
checkpoint is not counted: the loaders never keep it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import struct
from collections.abc import Iterable
from pathlib import Path
from typing import Any

_ST_BYTES = {
    "F64": 8,
    "F32": 4,
    "F16": 2,
    "BF16": 2,
    "I64": 8,
    "I32": 4,
    "I16": 2,
    "I8": 1,
    "U8": 1,
    "BOOL": 1,
}
#: Swin-L RAM + DAPE parameters when no checkpoint can be read (spec: 212,117,045)
DAPE_DEFAULT_PARAMS = 212_117_045


@dataclasses.dataclass(frozen=True)
class Footprint:
    """Model sizes and the widths the activation estimates need.

    Attributes:
        params: parameters of the SD parts (UNet, ControlNet, VAE, text encoder).
        dape_params: parameters of RAM + DAPE (kept in fp32).
        vae_channels: the VAE's ``block_out_channels``.
        unet_width: the UNet's first ``block_out_channels`` entry (320 for SD-2).
        signature: a short hash of the architecture, the key of recorded throughput.
    """

    params: int
    dape_params: int
    vae_channels: tuple[int, ...]
    unet_width: int
    signature: str

    @classmethod
    def of(cls, params: int, dape_params: int, vae_channels: tuple[int, ...], unet_width: int) -> Footprint:
        """A footprint whose ``signature`` is derived from the architecture (params rounded to millions)."""
        sig = _signature([params // 1_000_000, vae_channels, unet_width])
        return cls(params, dape_params, vae_channels, unet_width, sig)

    def weights_bytes(self, dtype_bytes: int) -> int:
        """Bytes of all weights when the SD parts are held at ``dtype_bytes`` and DAPE in fp32."""
        return self.params * dtype_bytes + self.dape_params * 4


def _safetensors_params(path: Path) -> int:
    with path.open("rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    total = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        count = 1
        for d in info["shape"]:
            count *= int(d)
        total += count
    return total


def _pickle_params(path: Path) -> int:
    import torch

    obj = torch.load(path, map_location="meta", weights_only=True, mmap=True)
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]  # the official RAM checkpoint: {"model": ..., "optimizer": ...}
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        return 0
    return sum(int(v.numel()) for v in obj.values() if isinstance(v, torch.Tensor))


def file_params(path: Path) -> int:
    """Parameters stored in one weights file (safetensors header, or a memory-mapped pickle)."""
    if path.suffix == ".safetensors":
        return _safetensors_params(path)
    return _pickle_params(path)


def _folder_params(folder: Path) -> int:
    files = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))
    return sum(file_params(f) for f in files)


def _config(folder: Path) -> dict[str, Any]:
    try:
        return dict(json.loads((folder / "config.json").read_text()))
    except (OSError, ValueError):
        return {}


def _signature(parts: Iterable[Any]) -> str:
    return hashlib.sha256(json.dumps(list(parts), default=str).encode()).hexdigest()[:12]


def footprint_of(choice: Any) -> Footprint:
    """The :class:`Footprint` of a :class:`seesr.run.sources.WeightsChoice`, from files only.

    Raises:
        FileNotFoundError: a component folder the loader would need is missing.
    """
    if choice.kind == "folder":
        root = Path(choice.folder)
        if (root / "model_index.json").is_file():  # save_pretrained / converted layout
            sd, seesr, dape_files = root, root, sorted((root / "dape").glob("*.safetensors"))
        else:  # `seesr download` layout
            sd, seesr = root / "sd2-base", root / "seesr"
            dape_files = [p for p in (root / "ram" / "ram_swin_large_14m.pth",) if p.is_file()]
    else:
        sd, seesr = Path(choice.parts["sd2"]), Path(choice.parts["seesr"])
        dape_files = [Path(choice.parts["ram"])] if choice.parts.get("ram") else []
    for folder in (sd / "vae", sd / "text_encoder", seesr / "unet", seesr / "controlnet"):
        if not folder.is_dir():
            raise FileNotFoundError(f"cannot plan: {folder} not found")
    params = sum(
        _folder_params(f) for f in (sd / "vae", sd / "text_encoder", seesr / "unet", seesr / "controlnet")
    )
    dape_params = sum(file_params(f) for f in dape_files) if dape_files else DAPE_DEFAULT_PARAMS
    vae_cfg, unet_cfg = _config(sd / "vae"), _config(seesr / "unet")
    vae_channels = tuple(int(c) for c in vae_cfg.get("block_out_channels", (128, 256, 512, 512)))
    unet_width = int((unet_cfg.get("block_out_channels") or [320])[0])
    return Footprint.of(params, dape_params, vae_channels, unet_width)


def footprint_of_pipeline(pipe: Any) -> Footprint:
    """The :class:`Footprint` of a loaded pipeline (for the Python API and tests)."""

    def count(module: Any) -> int:
        return sum(int(p.numel()) for p in module.parameters()) if module is not None else 0

    params = sum(count(getattr(pipe, n, None)) for n in ("unet", "controlnet", "vae", "text_encoder"))
    dape_params = count(getattr(pipe, "dape", None))
    vae_channels = tuple(int(c) for c in pipe.vae.config.block_out_channels)
    unet_width = int(pipe.unet.config.block_out_channels[0])
    return Footprint.of(params, dape_params, vae_channels, unet_width)


#: the released SD-2 base + SeeSR sizes (spec), used by ``--plan`` when no weights folder can be read yet
SD2_FOOTPRINT = Footprint.of(
    1_126_760_324 + 489_031_440 + 83_653_863 + 340_387_840, DAPE_DEFAULT_PARAMS, (128, 256, 512, 512), 320
)
