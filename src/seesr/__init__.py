"""seesr: SeeSR (CVPR 2024) real-world x4 super-resolution.

Public names are resolved lazily (PEP 562) so that ``import seesr`` and ``seesr --help`` do not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY: dict[str, str] = {
    "SeeSRPipeline": "seesr.pipeline.pipeline",
    "SeeSRUNet": "seesr.models.unet",
    "SeeSRControlNet": "seesr.models.controlnet",
    "DAPE": "seesr.models.dape",
    "load_dape": "seesr.pipeline.dape_weights",
    "load_official_dape": "seesr.pipeline.dape_weights",
    "save_dape": "seesr.pipeline.dape_weights",
    "SamplingConfig": "seesr.config",
    "TilingConfig": "seesr.config",
    "ColorFixConfig": "seesr.config",
    "load_image": "seesr.io",
    "save_image": "seesr.io",
    # the run layer shared with the CLI and the web UI
    "upscale_image": "seesr.run.job",
    "OutputTarget": "seesr.run.job",
    "choose_plan": "seesr.run.plan",
    "footprint_of_pipeline": "seesr.run.footprint",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'seesr' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
