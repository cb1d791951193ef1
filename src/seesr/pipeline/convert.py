"""`seesr convert`: turn a downloaded weights folder into the project's own fast-loading layout (issue 11).

The downloaded files are what the authors released: a 5.6 GB RAM pickle of which ~3.7 GB is optimizer
state, DAPE as a separate LoRA file merged at every load, SD-2 parts as diffusers folders. Converting loads
them once through the normal loader (so every strictness check applies) and writes the ``save_pretrained``
layout: safetensors only, DAPE merged, only the tensors the pipeline reads, optionally fp16 — which later runs
memory-map instead of unpickling. The manifest records what was written and where it came from.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from seesr import weights
from seesr.errors import WeightsError
from seesr.weights import manifest as mf
from seesr.weights.remote import sha256_file

logger = logging.getLogger(__name__)

#: sub-folders a conversion writes (``turbo-*`` only when the source has sd-turbo)
CONVERTED_DIRS = (
    "vae",
    "text_encoder",
    "tokenizer",
    "scheduler",
    "unet",
    "controlnet",
    "dape",
    "turbo-unet",
    "turbo-scheduler",
)
RAW_DIRS = ("sd2-base", "seesr", "ram", "sd-turbo")


@dataclass(frozen=True)
class ConvertReport:
    """Sizes in bytes before/after and the seconds the conversion took."""

    source: Path
    target: Path
    bytes_before: int
    bytes_after: int
    seconds: float
    turbo: bool
    originals_kept: bool

    def summary(self) -> str:
        kept = "raw files kept" if self.originals_kept else "raw files removed"
        return (
            f"converted {self.source} -> {self.target}: {self.bytes_before / 1e9:.2f} GB -> "
            f"{self.bytes_after / 1e9:.2f} GB in {self.seconds:.0f} s ({kept})"
        )


def _size(paths: list[Path]) -> int:
    return sum(
        f.stat().st_size
        for p in paths
        if p.exists()
        for f in ([p] if p.is_file() else p.rglob("*"))
        if f.is_file()
    )


def convert_folder(
    source: str | Path,
    target: str | Path,
    *,
    dtype: torch.dtype | str | None = None,
    keep_originals: bool = False,
    dape_arch: Any = None,
) -> ConvertReport:
    """Convert the weights folder ``source`` into ``target`` (may be the same folder).

    Args:
        source: a ``seesr download`` folder (or an already converted one, e.g. to change dtype).
        target: where the converted layout goes; created.
        dtype: dtype of the SD parts ("fp16", "bf16"; default fp32). DAPE stays fp32, as it runs.
        keep_originals: when ``source == target``, keep the raw downloaded files (default: delete them once the
            converted folder is written and recorded). A different ``source`` is never touched.
        dape_arch: a non-default RAM architecture (the tiny test fixtures).

    Raises:
        WeightsError: ``source`` is not a complete weights folder (its DAPE is required).
    """
    from seesr.pipeline.loading import load_folder, save_folder
    from seesr.pipeline.pipeline import SeeSRPipeline

    src, dst = Path(source).expanduser().resolve(), Path(target).expanduser().resolve()
    started = time.perf_counter()
    same = src == dst
    raw_paths = [src / d for d in RAW_DIRS]
    before = _size(raw_paths) if (src / "sd2-base").is_dir() else _size([src / d for d in CONVERTED_DIRS])
    has_turbo = (src / "sd-turbo" / "unet").is_dir() or (src / "turbo-unet").is_dir()
    pipe = load_folder(SeeSRPipeline, src, dtype=dtype, tagger="dape", dape_arch=dape_arch)
    dst.mkdir(parents=True, exist_ok=True)
    tmp = dst / ".convert-tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    save_folder(pipe, tmp)
    del pipe
    if has_turbo:
        turbo = load_folder(SeeSRPipeline, src, dtype=dtype, tagger="none", turbo=True)
        turbo.unet.save_pretrained(tmp / "turbo-unet")
        turbo.scheduler.save_pretrained(tmp / "turbo-scheduler")
        del turbo
    for name in [*CONVERTED_DIRS, "model_index.json"]:
        if (tmp / name).exists():
            old = dst / name
            if old.is_dir():
                shutil.rmtree(old)
            (tmp / name).replace(old)
    shutil.rmtree(tmp, ignore_errors=True)
    files = sorted(
        f for d in CONVERTED_DIRS if (dst / d).is_dir() for f in (dst / d).rglob("*") if f.is_file()
    ) + [dst / "model_index.json"]
    record: dict[str, Any] = mf.read_manifest(dst) or mf.empty_manifest()
    if not same:
        record["parts"] = {**(mf.read_manifest(src) or mf.empty_manifest())["parts"], **record["parts"]}
    record["converted"] = {
        "dtype": str(dtype or "fp32"),
        "turbo": has_turbo,
        "files": [
            {"path": f.relative_to(dst).as_posix(), "size": f.stat().st_size, "sha256": sha256_file(f)}
            for f in files
        ],
    }
    mf.write_manifest(dst, record)
    if same and not keep_originals:
        for p in raw_paths:
            shutil.rmtree(p, ignore_errors=True)
    after = sum(f["size"] for f in record["converted"]["files"])
    report = ConvertReport(
        src, dst, before, after, time.perf_counter() - started, has_turbo, keep_originals or not same
    )
    logger.info("%s", report.summary())
    if not weights.is_converted(dst, turbo=has_turbo):
        raise WeightsError(f"conversion into {dst} did not complete (files missing after writing)")
    return report


def prepare_weights(
    folder: str | Path,
    *,
    turbo: bool = False,
    allow_download: bool = True,
    convert: bool = True,
    dape_arch: Any = None,
) -> Path:
    """First-run set-up of a weights folder: :func:`seesr.weights.ensure_weights` (download what is missing),
    then, once, :func:`convert_folder` in place (raw files removed). An sd-turbo part fetched after the
    conversion stays raw; the loader combines it with the converted UNet's RCA weights.

    Raises:
        WeightsError: see :func:`seesr.weights.ensure_weights` and :func:`convert_folder`.
    """
    root = weights.ensure_weights(folder, turbo=turbo, allow_download=allow_download)
    if convert and weights.read_manifest(root) is not None and not weights.is_converted(root):
        logger.info("converting %s once into the fast-loading layout", root)
        convert_folder(root, root, dape_arch=dape_arch)
    return root
