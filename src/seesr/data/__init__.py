"""seesr.data: training-pair degradation, datasets and offline pairs (``seesr.data.make_pairs``; spec §5, §6).

Public names are imported lazily so that ``import seesr.data`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "DegradationConfig": "seesr.data.realesrgan",
    "RealESRGANDegradation": "seesr.data.realesrgan",
    "load_degradation_config": "seesr.data.realesrgan",
    "HQFolderDataset": "seesr.data.datasets",
    "PairedFolderDataset": "seesr.data.datasets",
    "derive_seed": "seesr.data.datasets",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'seesr.data' has no attribute {name!r}")
