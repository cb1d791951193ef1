"""DAPE, the degradation-aware prompt extractor (paper §3.1): config, tagging head and model.

Reading and writing weight files is :mod:`seesr.pipeline.dape_weights`; training helpers are
:mod:`seesr.training.dape_models`.
"""

from seesr.models.dape.config import DAPEConfig, DAPEOutput, TaggingOptions
from seesr.models.dape.head import TaggingHead
from seesr.models.dape.model import (
    DAPE,
    IMAGENET_MEAN,
    IMAGENET_STD,
    check_tag_list,
    check_thresholds,
    imagenet_normalize,
)

__all__ = [
    "DAPE",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "DAPEConfig",
    "DAPEOutput",
    "TaggingHead",
    "TaggingOptions",
    "check_tag_list",
    "check_thresholds",
    "imagenet_normalize",
]
