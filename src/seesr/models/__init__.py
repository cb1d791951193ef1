"""Model definitions: SeeSR UNet/ControlNet with RCA, DAPE. Knows nothing about files, data or CLIs."""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "SeeSRUNet": "seesr.models.unet",
    "SeeSRControlNet": "seesr.models.controlnet",
    "DAPE": "seesr.models.dape",
}
__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'seesr.models' has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)
